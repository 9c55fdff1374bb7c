"""deploy/cluster's compose variant for real: six Redis nodes as one Redis Cluster, three workers, and the
primary of the queue's slot SIGKILLed.

It runs after tests/deploy/test_compose.py in the same session and compose project: it takes the
project down and brings it up again as the variant. The nodes send clients to their addresses on the
compose network, which this host reaches: the test's client is a cluster client as the services' are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio
from redis.crc import key_slot

from agentq.connection import Cluster
from agentq.contract import JobResult
from agentq.errors import RedisUnavailable, WaitTimeout
from agentq.settings import Settings
from producer.client import Client
from tests.deploy.stack import ROOT, Stack, address
from tests.deploy.test_compose import SHORT, figure, host_of, results

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

CLUSTER_FILE = ROOT / "deploy" / "cluster" / "docker-compose.cluster.yml"
NODES = tuple(f"redis-{i}" for i in range(1, 7))


@dataclass
class Node:
    """One line of ``CLUSTER NODES``."""

    id: str
    name: str  # the hostname it announces: its compose service
    flags: set[str]
    primary_id: str  # "-" for a primary
    slots: list[tuple[int, int]]

    def serves(self, slot: int) -> bool:
        return "master" in self.flags and "fail" not in self.flags and any(lo <= slot <= hi for lo, hi in self.slots)


def parse_nodes(text: str) -> list[Node]:
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        ranges = [r.partition("-") for r in fields[8:] if not r.startswith("[")]  # "[...]": a slot on the move
        nodes.append(
            Node(
                id=fields[0],
                name=fields[1].partition(",")[2],
                flags=set(fields[2].split(",")),
                primary_id=fields[3],
                slots=[(int(lo), int(hi or lo)) for lo, _, hi in ranges],
            )
        )
    return nodes


class Admin:
    """redis-cli's work, as admin, from this host: one connection per node, at its container's address."""

    def __init__(self, stack: Stack, addresses: dict[str, str]) -> None:
        self.stack, self.addresses = stack, addresses
        self.clients: dict[str, redis.asyncio.Redis] = {}

    def __call__(self, node: str) -> redis.asyncio.Redis:
        if node not in self.clients:
            self.clients[node] = redis.asyncio.Redis(
                host=self.addresses[node],
                username="admin",
                password=self.stack.passwords["admin"],
                decode_responses=True,
                socket_timeout=5,
                socket_connect_timeout=2,
            )
        return self.clients[node]

    async def forget(self, node: str) -> None:
        """Drop the node's connection (its container restarted, perhaps at another address)."""
        if node in self.clients:
            await self.clients.pop(node).aclose()

    async def nodes(self, asking: str) -> list[Node]:
        return parse_nodes(await self(asking).execute_command("CLUSTER", "NODES"))  # type: ignore[no-untyped-call]

    async def state_ok(self, node: str) -> bool:
        return "cluster_state:ok" in await self(node).execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        for node in list(self.clients):
            await self.forget(node)


async def node_addresses(stack: Stack) -> dict[str, str]:
    """Each node's service name -> its container's address now."""
    return {node: address(c) for node in NODES for c in await stack.containers(node)}


@contextlib.asynccontextmanager
async def cluster_client(stack: Stack, addresses: dict[str, str]) -> AsyncIterator[Client]:
    """A producer client of the cluster on this host, as the producer user."""
    settings = Settings(
        _env_file=None,
        redis_url=f"redis://producer:{stack.passwords['producer']}@unused:6379/0",
        redis_cluster=[f"{a}:6379" for a in addresses.values()],
    )
    async with Client(settings) as client:
        assert isinstance(client.redis, Cluster)
        yield client


async def until(check: object, what: str, timeout: float) -> float:
    """Seconds until ``await check()`` is true (errors count as not yet); fails after ``timeout``."""
    start = time.monotonic()
    last: object = None
    while True:
        try:
            if await check():  # type: ignore[operator]
                return time.monotonic() - start
        except (redis.exceptions.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not after {timeout:g} s (last error: {last!r})")
        await asyncio.sleep(0.2)


async def answered(client: Client, count: int, question: str) -> dict[str, JobResult]:
    """``count`` jobs enqueued, and their results (all ok or partial)."""
    job_ids = [await client.enqueue(f"{question} {i}", sources=SHORT, dedup=False) for i in range(count)]
    done = await results(client, job_ids, timeout=180)
    assert all(r.status in ("ok", "partial") for r in done.values())
    return done


def per_worker(done: dict[str, JobResult]) -> dict[str, int]:
    """How many of these jobs each worker container answered."""
    counts: dict[str, int] = {}
    for result in done.values():
        counts[host_of(result)] = counts.get(host_of(result), 0) + 1
    return counts


async def test_cluster_variant_survives_the_queues_primary_sigkilled(stack: Stack) -> None:
    """deploy/cluster's variant: three workers answer; SIGKILL the primary of the queue's slot; its replica
    is promoted and the workers answer new jobs, none restarted; the old primary comes back as a replica."""
    await stack.switch_to(CLUSTER_FILE)
    start = time.monotonic()
    await stack.compose("up", "-d", "--scale", "worker=3", timeout=900)
    await stack.wait_health("worker", 3, timeout=180)
    up_s = time.monotonic() - start
    addresses = await node_addresses(stack)
    admin = Admin(stack, addresses)
    try:
        async with cluster_client(stack, addresses) as client:
            answered_before = await answered(client, 30, "before the kill")
            before = per_worker(answered_before)
            workers = {c["Id"]: c["RestartCount"] for c in await stack.containers("worker")}

            # The primary of the queue's slot ({default}), and its replica.
            slot = key_slot(client.keys.queue.encode())
            nodes = await admin.nodes("redis-1")
            (primary,) = [n for n in nodes if n.serves(slot)]
            (replica,) = [n for n in nodes if n.primary_id == primary.id]
            # Everything answered so far is on the replica too (replication is asynchronous).
            offset = int((await admin(primary.name).info("replication"))["master_repl_offset"])

            async def synced() -> bool:
                return int((await admin(replica.name).info("replication"))["slave_repl_offset"]) >= offset

            await until(synced, f"{replica.name} synced with {primary.name}", timeout=30)

            (victim,) = await stack.containers(primary.name)
            await stack.docker("kill", victim["Id"])  # SIGKILL; the restart policy leaves a killed container down
            killed = time.monotonic()

            async def promoted() -> bool:
                return bool((await admin(replica.name).info("replication"))["role"] == "master")

            promotion = asyncio.create_task(until(promoted, f"{replica.name} promoted", timeout=90))
            # Meanwhile one job at a time, as a user would retry, until one is answered: the window without
            # service, and when an enqueue is first acknowledged again.
            acknowledged, refused, acknowledged_s = [], 0, 0.0
            while True:
                assert time.monotonic() - killed < 120, f"no job answered 120 s after the kill ({refused} refused)"
                try:
                    job_id = await client.enqueue("during the failover?", sources=SHORT, dedup=False)
                except RedisUnavailable:
                    refused += 1
                    await asyncio.sleep(0.1)
                    continue
                acknowledged.append(job_id)
                acknowledged_s = acknowledged_s or time.monotonic() - killed
                try:
                    await client.result(job_id, timeout=30)
                    break
                except (WaitTimeout, RedisUnavailable):
                    continue
            without_service_s = time.monotonic() - killed
            promoted_s = await promotion
            during = await results(client, acknowledged, timeout=120)

            after = per_worker(await answered(client, 30, "after the failover"))
            restarts = sum(c["RestartCount"] - workers[c["Id"]] for c in await stack.containers("worker"))

            async def three_live_workers() -> bool:  # each still heartbeats (its key may have been on the lost primary)
                return len(await client.workers()) == 3

            await until(three_live_workers, "3 live workers after the failover", timeout=30)
            kept = [await client.fetch_result(j) for j in answered_before]

            # The old primary, started again, rejoins as its successor's replica.
            await stack.docker("start", victim["Id"])
            restarted = time.monotonic()
            await admin.forget(primary.name)
            addresses.update(await node_addresses(stack))

            async def rejoined() -> bool:
                info = await admin(primary.name).info("replication")
                return bool(info["role"] == "slave" and info.get("master_link_status") == "up")

            await until(rejoined, f"{primary.name} back as a replica", timeout=120)
            for node in NODES:
                await until(lambda n=node: admin.state_ok(n), f"{node}: cluster_state:ok", timeout=60)
            rejoined_s = time.monotonic() - restarted
            again = await answered(client, 15, "after the old primary's return")
            restarts_after = (
                sum(c["RestartCount"] - workers[c["Id"]] for c in await stack.containers("worker")) - restarts
            )
    finally:
        await admin.aclose()

    figure("Cluster compose variant up", f"6 nodes joined, 3 workers healthy {up_s:.1f} s after up -d")
    figure(
        "Cluster compose variant, primary of the queue's slot SIGKILLed",
        f"{replica.name} promoted {promoted_s:.1f} s after the kill of {primary.name} (cluster-node-timeout 5 s), "
        f"an enqueue acknowledged again {acknowledged_s:.1f} s and a job answered {without_service_s:.1f} s after "
        f"it ({refused} enqueues refused meanwhile); "
        f"answered: {sum(before.values())} before (per worker {sorted(before.values())}), "
        f"{len(during)}/{len(acknowledged)} acknowledged during, {sum(after.values())} after "
        f"(per worker {sorted(after.values())}); {sum(r is not None for r in kept)}/{len(kept)} earlier results "
        f"kept; worker restarts {restarts}",
    )
    figure(
        "Cluster compose variant, old primary started again",
        f"a replica again, cluster_state:ok on all 6, {rejoined_s:.1f} s after its start; "
        f"{len(again)} jobs answered; worker restarts meanwhile {restarts_after}",
    )
    assert len(during) == len(acknowledged)
    assert sum(after.values()) == 30
    assert all(r is not None for r in kept), "results lost in the failover"
    assert restarts == 0, "a worker restarted instead of riding through the failover"
    assert restarts_after == 0, "a worker restarted when the old primary came back"
