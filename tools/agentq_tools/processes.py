"""Worker processes started with the documented ``worker`` command, waited for, and stopped."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import redis

from agentq.settings import get_settings

#: Prefix of a server's command line: it is killed when the thread that started it ends, even by
#: SIGKILL (no ``finally`` runs then), so no server outlives an interrupted test run. setpriv
#: execs the server itself.
DIE_WITH_US = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


def worker_command() -> list[str]:
    """The documented way to start a worker, from the same environment as this Python."""
    script = Path(sys.executable).with_name("worker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker"]


def start_workers(
    count: int, env: dict[str, str], log_dir: Path, first: int = 0, args: Sequence[str] = ()
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` worker processes with ``env`` (and the worker's ``args``); each logs to
    ``log_dir/worker-<n>.log``, from ``first``.

    Each runs in a session of its own, so its pool processes can be signalled with it.
    """
    procs = []
    for i in range(first, first + count):
        log = open(log_dir / f"worker-{i}.log", "wb")  # noqa: SIM115  (closed with the process)
        procs.append(
            subprocess.Popen(
                [*worker_command(), *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        log.close()
    return procs


def stop_process(process: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
    """SIGTERM ``process`` if it still runs, then SIGKILL it after ``grace_s``; reap it either way."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every worker, wait for it to shut its pool down, SIGKILL stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    give_up = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for_heartbeats(
    url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 120.0, *, cluster: str = ""
) -> None:
    """Block until every process in ``procs`` has written its heartbeat (its pool is warm).

    ``cluster``: the workers' ``AGENTQ_REDIS_CLUSTER``, if they use a Redis Cluster.
    """
    pids = {p.pid for p in procs}
    pattern = get_settings().keys.workers_pattern
    client: redis.Redis | redis.RedisCluster
    if cluster:
        host, port = cluster.split(",")[0].rsplit(":", 1)
        client = redis.RedisCluster(host=host, port=int(port))  # it finds the other nodes from this one
    else:
        client = redis.Redis.from_url(url)
    give_up = time.monotonic() + timeout
    try:
        while True:
            values = [cast(bytes | None, client.get(k)) for k in client.scan_iter(match=pattern)]
            if pids <= {json.loads(v)["pid"] for v in values if v}:
                return
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with code {dead[0].returncode} before it was ready")
            if time.monotonic() > give_up:
                raise RuntimeError(f"workers not ready after {timeout:g}s")
            time.sleep(0.05)
    finally:
        client.close()
