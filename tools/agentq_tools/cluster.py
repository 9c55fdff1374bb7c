"""A Redis Cluster on loopback ports: 3 primaries and 3 replicas of ``redis-server``, for the tests.

    with LocalCluster(tmp_path) as cluster:
        env = {"AGENTQ_REDIS_CLUSTER": cluster.startup_nodes, "AGENTQ_REDIS_URL": cluster.url, ...}
        cluster.kill(cluster.primary_of(key))

Each server runs with ``--cluster-enabled yes`` and its own data directory; ``redis-cli --cluster
create`` then splits the 16,384 slots over the primaries and gives each a replica, as an operator
would. The servers die with the process that started them, even if it is SIGKILLed.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
from redis.crc import key_slot

from agentq_tools.embedded import find_redis_server
from agentq_tools.processes import DIE_WITH_US


@dataclass
class Node:
    """One server of the cluster."""

    port: int
    data: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as c:
            return cast(dict[str, Any], c.info(section))


def cluster_port() -> int:
    """A free loopback port ``P`` whose cluster bus port, ``P + 10000``, is free too (so ``P`` <= 55535)."""
    while True:
        port = random.randint(20000, 55535)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class LocalCluster:
    """See the module docstring. :meth:`stop` (or the end of the ``with`` block) stops every server."""

    def __init__(self, base: Path, *, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        self.base, self.node_timeout_ms = base, node_timeout_ms
        ports: list[int] = []
        while len(ports) < primaries * 2:  # no node's port may be another's bus port (port + 10000)
            port = cluster_port()
            if not {port, port + 10000, port - 10000} & set(ports):
                ports.append(port)
        self.nodes = [Node(port, base / f"node-{port}") for port in ports]
        for node in self.nodes:
            node.data.mkdir(parents=True)

    @property
    def startup_nodes(self) -> str:
        """``AGENTQ_REDIS_CLUSTER``: every node, comma-separated."""
        return ",".join(node.address for node in self.nodes)

    @property
    def url(self) -> str:
        """An ``AGENTQ_REDIS_URL`` for the cluster's clients (no password: only its scheme is read)."""
        return f"redis://{self.nodes[0].address}/0"

    def _start(self, node: Node) -> None:
        argv = [find_redis_server(), "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.data)]
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--save", ""]
        argv += ["--cluster-node-timeout", str(self.node_timeout_ms), "--appendonly", "yes"]
        argv += ["--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        log = open(node.data / "server.log", "ab")  # noqa: SIM115  (closed with the process)
        node.process = subprocess.Popen([*DIE_WITH_US, *argv], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start the servers, join them into one cluster and wait until every slot is served."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found: 'apt-get install redis-server' (it brings redis-tools)")
        for node in self.nodes:
            self._start(node)
        give_up = time.monotonic() + timeout
        for node in self.nodes:
            self._until(give_up, lambda n=node: n.client().ping(), f"{node.address} never answered PING")
        create = [cli, "--cluster", "create", *(n.address for n in self.nodes), "--cluster-replicas", "1"]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=timeout)
        self.wait_until_served(timeout)
        return self

    def wait_until_served(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok`` and every replica's link to its primary is up."""
        give_up = time.monotonic() + timeout

        def served() -> bool:
            for node in self.running():
                with node.client() as c:
                    if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                        return False
                    replication = c.info("replication")
                    if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                        return False
            return True

        self._until(give_up, served, "the cluster did not come to cluster_state:ok")

    @staticmethod
    def _until(give_up: float, check: object, message: str) -> None:
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError(message)
            time.sleep(0.05)

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def primaries(self) -> list[Node]:
        """The running nodes that are primaries now."""
        return [n for n in self.running() if n.info("replication")["role"] == "master"]

    def primary_of(self, key: str) -> Node:
        """The running primary that serves ``key``'s slot now."""
        return self.primary_of_slot(key_slot(key.encode()))

    def primary_of_slot(self, slot: int) -> Node:
        """The running primary that serves ``slot`` now."""
        with self.primaries()[0].client() as c:
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(f"no primary serves slot {slot}")

    def migrate_slot(self, slot: int, to: Node, *, pause_s: float = 0.0) -> int:
        """Move ``slot`` to the primary ``to`` while clients use it, as ``redis-cli --cluster reshard``
        does: mark it importing and migrating, ``MIGRATE`` its keys one at a time (``pause_s`` after
        each: clients meanwhile get ``ASK`` for a key already moved and ``TRYAGAIN`` for a call whose
        keys are split), then give the slot to ``to`` on every primary. Returns the keys moved."""
        source = self.primary_of_slot(slot)
        with source.client() as src, to.client() as dst:
            src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            moved = 0
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause_s)
            for node in [to, source, *(n for n in self.primaries() if n not in (to, source))]:
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return moved

    def restart(self, node: Node, timeout: float = 30.0) -> None:
        """Start ``node``'s server again on its port and data: it rejoins the cluster from its
        ``nodes.conf`` (a primary that was failed over comes back as a replica). Waits until it is served."""
        self.kill(node)
        self._start(node)
        self.wait_until_served(timeout)

    def kill(self, node: Node) -> None:
        """SIGKILL ``node``'s server, as a crash would."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(5)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
