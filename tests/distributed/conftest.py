"""The distributed suite's fixtures: hosts as network namespaces, Redis behind a delaying proxy.

Needs root (``ip netns``). Every namespace, link and process made here is removed at the end,
also when a test fails; namespaces left by a run that died are swept at the start.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from agentq.protocol.keys import STATE_FIELDS, Keys
from agentq_tools.embedded import find_redis_server
from agentq_tools.netlab import NetLab, sweep
from agentq_tools.processes import worker_command

REDIS_PORT, PROXY_PORT = 6379, 6380


@dataclass
class Cluster:
    """One Redis host (redis-server and the delaying proxy), two worker hosts, one producer host."""

    lab: NetLab
    dir: Path
    proxy: subprocess.Popen[bytes]
    control_url: str  # a Unix socket: the test's own way in, outside the lab's network
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def url(self, via_proxy: bool = True) -> str:
        """Redis as the other hosts reach it: through the proxy (the delayed path) or directly."""
        return f"redis://{self.lab.address('redis')}:{PROXY_PORT if via_proxy else REDIS_PORT}/0"

    def control(self) -> redis.Redis:
        return redis.Redis.from_url(self.control_url)

    def set_one_way_delay(self, ms: float) -> None:
        (self.dir / "delay-ms").write_text(f"{ms}")
        os.kill(self.proxy.pid, signal.SIGHUP)

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
        return {**base, "AGENTQ_HEALTH_CHECK_INTERVAL_S": "1", **extra}

    def start_workers(self, **settings: str) -> None:
        """One worker on each worker host with these settings, on an empty Redis; wait until both heartbeat.

        Emptied first: the source policies keep state in Redis (latency samples for adaptive
        timeouts), and one phase's zero-latency samples would time out the next phase's sources.
        """
        self.stop_workers()
        with self.control() as control:
            control.flushall()
        env = self.env(AGENTQ_REDIS_URL=self.url(), **settings)
        for host in ("w1", "w2"):
            self.logs[host] = self.dir / f"{host}-{time.monotonic_ns()}.log"
            with open(self.logs[host], "wb") as log:
                self.workers[host] = self.lab.popen(  # DEBUG: each job's start is in the log
                    host, [*worker_command(), "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
        pattern = Keys("agentq").workers_pattern
        client = self.control()
        give_up = time.monotonic() + 120
        try:
            while True:
                beats = [json.loads(v) for k in client.scan_iter(match=pattern) if (v := client.get(k))]
                if {p.pid for p in self.workers.values()} <= {b["pid"] for b in beats}:
                    return
                dead = {h: p.returncode for h, p in self.workers.items() if p.poll() is not None}
                if dead or time.monotonic() > give_up:
                    raise RuntimeError(f"workers not ready (exited: {dead}): {self.log_tails()}")
                time.sleep(0.1)
        finally:
            client.close()

    def log(self, host: str) -> str:
        return self.logs[host].read_text(errors="replace")

    def what_became_of(self, text: str) -> str:
        """For each job id in ``text``: its state fields and queue score in Redis, and every worker log
        line that names it; then the logs' last lines (a failure explains itself)."""
        keys = Keys("agentq")
        lines = []
        with self.control() as control:
            for job_id in dict.fromkeys(re.findall(r"\b[0-9a-f]{32}\b", text)):
                state = control.hmget(keys.jobs, [f"{job_id}:{f}" for f in STATE_FIELDS])
                score = control.zscore(keys.queue, job_id)
                lines.append(f"{job_id}: {dict(zip(STATE_FIELDS, state, strict=True))}, queue score {score}")
                lines += [f"  {h}: {line}" for h in self.logs for line in self.log(h).splitlines() if job_id in line]
        return "\n".join(lines) + "\n" + self.log_tails()

    def log_tails(self) -> str:
        return "\n".join(f"--- {h}\n{self.log(h)[-2000:]}" for h in self.logs)

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()

    def probe(self, pings: int, jobs: int = 0, kind: str = "zero") -> dict[str, object]:
        """Run the probe on the producer host (through the proxy); its JSON report."""
        argv = [
            sys.executable,
            "-m",
            "agentq_tools.netprobe",
            "--pings",
            str(pings),
            "--jobs",
            str(jobs),
            "--kind",
            kind,
        ]
        done = self.lab.run("producer", argv, env=self.env(AGENTQ_REDIS_URL=self.url()), timeout=900)
        assert done.returncode == 0, f"{done.stderr[-3000:]}\n{self.what_became_of(done.stderr)}"
        return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The four hosts with Redis and the proxy running; torn down, namespaces and all, at the end."""
    if os.geteuid() != 0:
        pytest.fail("the distributed suite needs root (ip netns)")
    swept = sweep()
    if swept:
        print(f"\nremoved namespaces of earlier runs: {', '.join(swept)}")
    tmp = tmp_path_factory.mktemp("hosts")
    lab = NetLab(("redis", "w1", "w2", "producer")).create()
    procs: list[subprocess.Popen[bytes]] = []
    cluster = None
    try:
        sock = tmp / "redis.sock"
        server = [find_redis_server(), "--port", str(REDIS_PORT), "--bind", "127.0.0.1", lab.address("redis")]
        server += ["--unixsocket", str(sock), "--unixsocketperm", "700", "--save", "", "--appendonly", "no"]
        server += ["--protected-mode", "no", "--dir", str(tmp)]
        procs.append(lab.popen("redis", server, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        (tmp / "delay-ms").write_text("0")
        proxy_argv = [
            sys.executable,
            "-m",
            "agentq_tools.delayproxy",
            "--listen",
            f"{lab.address('redis')}:{PROXY_PORT}",
        ]
        proxy_argv += ["--to", f"127.0.0.1:{REDIS_PORT}", "--delay-file", str(tmp / "delay-ms")]
        with open(tmp / "proxy.log", "wb") as log:
            proxy = lab.popen("redis", proxy_argv, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proxy)
        cluster = Cluster(lab, tmp, proxy, f"unix://{sock}?db=0")
        for _ in range(200):
            try:
                cluster.control().ping()
                if "delaying" in (tmp / "proxy.log").read_text():
                    break
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                pass
            assert proxy.poll() is None, (tmp / "proxy.log").read_text()
            time.sleep(0.05)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop_workers()
        for proc in procs:
            proc.kill()
            proc.wait()
        lab.destroy()
