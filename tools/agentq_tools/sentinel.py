"""A Redis primary, its replicas and three sentinels as real processes on loopback ports.

    with SentinelCluster(tmp_path, replication_delay_ms=2.5) as cluster:
        settings = {"AGENTQ_REDIS_SENTINELS": json.dumps(cluster.sentinels), ...}
        cluster.kill_primary()

The first primary is reachable only through a delaying proxy (``agentq_tools.delayproxy``) on its
public port: its replicas, the sentinels and the clients all reach it ``replication_delay_ms``
away each way, as a primary in another zone. (The proxy cannot sit on the replication link
alone: Sentinel sees a replica following an address that is not the primary's and points it
straight at the primary.) :meth:`kill_primary` kills the primary and its proxy together, as
losing the primary's host loses what its network had not delivered yet. The sentinels notice
after ``down_after_ms``, agree (quorum 2), and promote a replica, which everyone reaches directly.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from agentq_tools.embedded import find_redis_server, free_port
from agentq_tools.processes import DIE_WITH_US

MASTER = "agentq"


class SentinelCluster:
    """See the module docstring; every process is stopped by :meth:`stop` (or the ``with`` block)."""

    def __init__(
        self, base: Path, *, replicas: int = 1, replication_delay_ms: float = 0.0, down_after_ms: int = 1000
    ) -> None:
        self.base = base
        self.delay_ms = replication_delay_ms
        self.down_after_ms = down_after_ms
        self.primary_port = free_port()  # the public address: the proxy
        self.hidden_port = free_port()  # where the primary's redis-server really listens
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
        self.procs[name] = subprocess.Popen([*DIE_WITH_US, *argv], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _server(self, name: str, port: int, *extra: str) -> None:
        data = self.base / name
        data.mkdir(exist_ok=True)
        argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
        self._start(name, [*argv, "--save", "", "--appendonly", "no", *extra])

    def start(self) -> SentinelCluster:
        self._start_primary()
        for i, replica in enumerate(self.replica_ports):
            self._server(f"replica-{i}", replica, "--replicaof", "127.0.0.1", str(self.primary_port))
        for i, port in enumerate(self.sentinel_ports):
            conf = self.base / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.base}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\nsentinel parallel-syncs {MASTER} 1\n"
            )
            self._start(f"sentinel-{i}", [find_redis_server(), str(conf), "--sentinel"])
        self.wait_ready()
        return self

    def _start_primary(self) -> None:
        self._server("primary", self.hidden_port)
        _wait_ping(self.hidden_port)
        argv = [sys.executable, "-m", "agentq_tools.delayproxy", "--listen", f"127.0.0.1:{self.primary_port}"]
        self._start("proxy", [*argv, "--to", f"127.0.0.1:{self.hidden_port}", "--delay-ms", str(self.delay_ms)])
        self._wait_port(self.primary_port)

    def _wait_port(self, port: int, timeout: float = 10) -> None:
        give_up = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.05)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until every sentinel knows the other two and every replica, and every replica is in sync."""
        give_up = time.monotonic() + timeout
        while True:
            try:
                states = []
                for port in self.sentinel_ports:
                    with _sentinel(port) as sentinel:
                        states.append(sentinel.sentinel_master(MASTER))
                synced = True
                for port in self.replica_ports:
                    with redis.Redis(port=port) as replica:
                        synced &= replica.info("replication").get("master_link_status") == "up"
                wanted = len(self.replica_ports)
                if synced and all(s["num-other-sentinels"] == 2 and s["num-slaves"] == wanted for s in states):
                    return
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError("sentinels not ready: see the logs in " + str(self.base))
            time.sleep(0.2)

    def primary(self) -> int:
        """The port of the primary the sentinels name now."""
        with _sentinel(self.sentinel_ports[0]) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(MASTER)[1])

    def kill_primary(self) -> float:
        """SIGKILL the primary and its proxy at once; the monotonic time of the kill."""
        names = ["primary", "proxy"]
        for name in names:
            self.procs[name].kill()
        killed = time.monotonic()
        for name in names:
            self.procs[name].wait()
        return killed

    def restart_old_primary(self) -> None:
        """Start the old primary again (empty: no persistence here); the sentinels make it a replica."""
        self._start_primary()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def __enter__(self) -> SentinelCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sentinel(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


def _wait_ping(port: int, timeout: float = 10) -> None:
    client = redis.Redis(port=port)
    give_up = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.05)
    finally:
        client.close()
