"""The product on a real Redis Cluster: 3 primaries and 3 replicas on loopback ports, real workers.

The workers, the client and its waits speak to the cluster only through ``AGENTQ_REDIS_CLUSTER``:
every queue key is in the queue's slot, on one primary; the heartbeats and the source policies'
keys are spread over the others.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest
import redis
from redis.crc import key_slot

from agentq.contract import QuestionRequest, SourceOutcome
from agentq.errors import NotReplicated, RedisUnavailable
from agentq.protocol.keys import Keys
from agentq.settings import Settings
from agentq_tools.cluster import LocalCluster
from agentq_tools.processes import worker_command
from producer.client import Client
from tests.helpers import progress_reached

pytestmark = [pytest.mark.cluster]
StartWorkers = Callable[..., list[Popen[bytes]]]
SOURCES = ["weather", "news", "knowledge_base"]
KEYS = Keys("agentq")


def cluster_keys(cluster: LocalCluster) -> dict[int, list[bytes]]:
    """Every key of the cluster, by the port of the primary that holds it."""
    found = {}
    for node in cluster.primaries():
        with node.client() as c:
            found[node.port] = list(c.scan_iter(count=1000))
    return found


async def test_a_question_is_answered_queued_joined_listed_and_followed_on_a_cluster(
    cluster: LocalCluster, client: Client, start_worker_processes: StartWorkers
) -> None:
    """Enqueue, wait, dedup, progress, listings and the workers' view, all through the cluster; the
    queue's keys sit on the primary of its slot, the heartbeats on the primaries of theirs."""
    start_worker_processes(2)
    request = QuestionRequest(question="Will it rain in Paris tomorrow?", sources=SOURCES)
    first, joined = await asyncio.gather(client.submit_request(request), client.submit_request(request))
    assert first.job_id == joined.job_id  # one job: one of the calls joined the other's
    assert {first.deduplicated, joined.deduplicated} == {True, False}
    events = await progress_reached(client, first.job_id, "done", count=3)
    assert {e.source for e in events if e.event == "done"} == set(SOURCES)
    result = await client.result(first.job_id, timeout=30)
    assert (result.status, [s.status for s in result.sources]) == ("ok", ["ok"] * 3)
    assert result.timing is not None and result.timing.total_s > 0 and result.worker_id is not None

    answered = await client.ask(client.validate("Is it sunny in Rome?", sources=["weather"]), timeout=30)
    assert answered.status == "ok"
    listed = [j.job_id for j in await client.jobs()]
    assert listed == [answered.job_id, first.job_id]
    assert await client.status(first.job_id) == "complete"
    assert len(await client.workers()) == 2

    held = cluster_keys(cluster)
    queue_primary = cluster.primary_of(KEYS.queue).port
    ours = [k for k in held[queue_primary] if k.startswith(KEYS.tag.encode())]
    assert KEYS.result(first.job_id).encode() in ours and KEYS.index.encode() in ours
    assert all(
        not k.startswith(KEYS.tag.encode()) for port, keys in held.items() if port != queue_primary for k in keys
    )
    heartbeats = {port for port, keys in held.items() for k in keys if k.startswith(b"agentq:worker:")}
    counts = [len(keys) for keys in held.values()]
    print(f"figure: queue keys on :{queue_primary}; heartbeats on {sorted(heartbeats)}; keys per primary {counts}")


async def test_a_running_job_is_cancelled_through_the_clusters_pub_sub(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """The cancel message reaches the worker's subscription on whichever node it sits, and the waiter
    gets the cancelled result through its own."""
    start_worker_processes(1, AGENTQ_SOURCE_LATENCY_S='{"knowledge_base": 500}', AGENTQ_SOURCE_RETRIES="0")
    job_id = await client.enqueue("Will it rain in Paris tomorrow?", sources=SOURCES)
    await progress_reached(client, job_id, "done", count=2)  # weather and news answered; knowledge_base runs
    asked = time.monotonic()
    assert await client.cancel(job_id) == "cancelling"
    result = await client.result(job_id, timeout=30)
    took = time.monotonic() - asked
    statuses = {s.name: s.status for s in result.sources}
    assert (result.status, statuses["knowledge_base"], statuses["weather"]) == ("cancelled", "cancelled", "ok")
    assert took < 5.0  # knowledge_base would take 10 s
    queued = await client.enqueue("Is it sunny in Rome?", sources=["weather"], not_before=time.time() + 60)
    assert await client.cancel(queued) == "cancelled"
    assert [j.job_id for j in await client.jobs(status="cancelled")] == [queued, job_id]
    print(f"figure: cancel to result {took:.2f}s")


async def test_the_source_policies_share_their_state_across_the_cluster(
    cluster: LocalCluster, client: Client, start_worker_processes: StartWorkers
) -> None:
    """The cache, the circuit breaker and the rate limits work from keys outside the queue's slot."""
    start_worker_processes(
        2,
        AGENTQ_SOURCE_LATENCY_S='{"news": 100}',
        AGENTQ_SOURCE_RETRIES="0",
        AGENTQ_BREAKER_FAILURES="2",
        AGENTQ_BREAKER_COOLDOWN_S="60",
        AGENTQ_RATE_LIMITS='{"knowledge_base": 2}',
    )

    async def ask(question: str, *sources: str, deadline_s: float = 10.0) -> dict[str, SourceOutcome]:
        request = QuestionRequest(question=question, sources=sources, source_timeout_s=0.3, deadline_s=deadline_s)
        result = await client.result(await client.enqueue_request(request), timeout=60)
        return {o.name: o for o in result.sources}

    first = await ask("Will it rain in Paris?", "weather", "news")
    await ask("Is it sunny in Rome?", "news")
    again = await ask("  will it RAIN in paris? ", "weather", "news")
    assert (first["weather"].cache, again["weather"].cache, again["weather"].attempts) == ("miss", "hit", 0)
    assert (again["news"].status, again["news"].circuit) == ("circuit_open", "open")
    with redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port) as c:
        assert c.hget(KEYS.breaker("news"), "state") == b"open"
    cached = [k for keys in cluster_keys(cluster).values() for k in keys if k.startswith(b"agentq:cache:weather:")]
    assert len(cached) == 1

    limited = await asyncio.gather(*(ask(f"tide {i}", "knowledge_base", deadline_s=20.0) for i in range(6)))
    waits = [o["knowledge_base"].rate_limit_wait_s for o in limited]
    assert all(o["knowledge_base"].status == "ok" for o in limited)
    assert sum(w >= 0.3 for w in waits) >= 2, waits  # 6 calls at 2/s: the later ones waited their turn
    print(f"figure: rate-limit waits {sorted(round(w, 2) for w in waits)}")


def test_the_health_check_speaks_to_the_cluster(
    cluster_env: dict[str, str], start_worker_processes: StartWorkers, tmp_path: Path
) -> None:
    """``worker --check`` (the probe of compose and Kubernetes) finds the worker's heartbeat in the cluster."""
    id_file = str(tmp_path / "worker.id")
    start_worker_processes(1, AGENTQ_WORKER_ID_FILE=id_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    env |= cluster_env | {"AGENTQ_WORKER_ID_FILE": id_file}
    checked = subprocess.run([*worker_command(), "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_primary_killed_under_load_loses_no_acknowledged_job(
    cluster: LocalCluster, cluster_env: dict[str, str], start_worker_processes: StartWorkers
) -> None:
    """The queue's primary is SIGKILLed while jobs are enqueued (WAIT 1) and run. Its replica is promoted
    and the workers and the client carry on through redis-py's cluster client. The new primary has no
    replica until the old one comes back as its replica (as an orchestrator restarts it): until then each
    enqueue is refused as not replicated (it may still run), after it they are acknowledged again. Every
    job whose enqueue was acknowledged is answered, and a cancel still reaches the workers' subscriptions;
    the window without acknowledged enqueues is printed."""
    waiting = {"AGENTQ_REDIS_WAIT_REPLICAS": "1", "AGENTQ_REDIS_WAIT_TIMEOUT_S": "1"}
    workers = start_worker_processes(2, AGENTQ_SOURCE_LATENCY_S='{"news": 500}', **waiting)
    settings = {k.removeprefix("AGENTQ_").lower(): v for k, v in (cluster_env | waiting).items()}
    victim = cluster.primary_of(KEYS.queue)
    acked: list[str] = []
    refused: dict[str, int] = {}
    killed_at = back_at = 0.0
    async with Client(Settings(_env_file=None, **settings)) as client:  # type: ignore[arg-type]
        try:
            for i in range(1000):
                if i == 40:
                    cluster.kill(victim)
                    killed_at = time.monotonic()
                try:
                    acked.append(await client.enqueue(f"Will it rain on day {i}?", sources=["weather"], dedup=False))
                    if killed_at and not back_at:
                        back_at = time.monotonic()
                except RedisUnavailable as exc:
                    refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
                    if (
                        isinstance(exc, NotReplicated)
                        and victim.process is not None
                        and victim.process.poll() is not None
                    ):
                        await asyncio.to_thread(cluster.restart, victim)  # the promoted primary wrote it
                if len(acked) >= 80:
                    break
                await asyncio.sleep(0.02)
            results = [await client.result(job_id, timeout=60) for job_id in acked]
            # The workers' cancel subscriptions and the client's waits moved off the dead node too.
            slow = await client.enqueue("Is the news out?", sources=["news"])
            await progress_reached(client, slow, "fetch_start")
            assert await client.cancel(slow) == "cancelling"
            assert (await client.result(slow, timeout=5)).status == "cancelled"  # news would take 10 s
        finally:
            if victim.process is None or victim.process.poll() is not None:
                cluster.restart(victim)  # the next tests want 3 primaries with a replica each
    assert len(acked) >= 80 and back_at, f"{len(acked)} enqueues acknowledged; refused: {refused}"
    assert [r.status for r in results] == ["ok"] * len(acked)  # 0 lost
    assert all(p.poll() is None for p in workers)  # no worker died of it
    promoted = cluster.primary_of(KEYS.queue)
    assert promoted.port != victim.port
    rerun = sum(r.job_try > 1 for r in results)  # a run cut by the kill runs again; one result is kept
    # A promoted replica has no script cache: each script reached it first as EVAL, with its text
    as_text = int(promoted.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))
    print(
        f"figure: primary :{victim.port} SIGKILLed after 40 enqueues, :{promoted.port} promoted; {len(acked)} "
        f"acknowledged, 0 lost, {rerun} run again; refused meanwhile {refused}; acknowledged again "
        f"{back_at - killed_at:.1f}s after the kill; scripts sent as text to the promoted primary: {as_text}"
    )


async def test_the_queues_slot_moves_to_another_primary_while_jobs_run(
    cluster: LocalCluster, client: Client, start_worker_processes: StartWorkers
) -> None:
    """The queue's slot is migrated key by key (``MIGRATE``, as a reshard does) while jobs are enqueued and
    run: redis-py follows ``ASK`` and ``MOVED``; a script whose keys are split between the two primaries
    meets ``TRYAGAIN`` until the last of them has moved, and is refused (an enqueue: exit 5) or retried (a
    worker's call) as in an outage. Every acknowledged job is answered, none twice, and the slot ends on
    its new primary."""
    workers = start_worker_processes(2)
    slot = key_slot(KEYS.queue.encode())
    source = cluster.primary_of(KEYS.queue)
    target = next(n for n in cluster.primaries() if n.port != source.port)
    acked: list[str] = []
    refused: Counter[str] = Counter()

    async def enqueue(i: int) -> None:
        try:
            acked.append(await client.enqueue(f"Will it rain on day {i}?", sources=["weather"], dedup=False))
        except RedisUnavailable as exc:
            refused[type(exc.__cause__ or exc).__name__] += 1

    try:
        for i in range(20):
            await enqueue(i)
        for job_id in acked:  # their results, listing figures and progress logs are keys of the slot too
            await client.result(job_id, timeout=30)
        started = time.monotonic()
        migrating = asyncio.ensure_future(asyncio.to_thread(cluster.migrate_slot, slot, target, pause_s=0.05))
        before, calls = len(acked), 0
        try:
            while not migrating.done():
                await enqueue(len(acked) + sum(refused.values()))
                calls += 1
                await asyncio.sleep(0.01)
        finally:
            moved, took = await migrating, time.monotonic() - started
        during = len(acked) - before
        assert calls >= 3, f"only {calls} enqueues while {moved} keys moved in {took:.1f}s: the test did not overlap"
        for i in range(20):
            await enqueue(1000 + i)
        results = [await client.result(job_id, timeout=60) for job_id in acked]
        assert cluster.primary_of(KEYS.queue).port == target.port and moved >= 40  # 20 results, figures, logs
        assert [r.status for r in results] == ["ok"] * len(acked)  # 0 lost
        assert [r.job_try for r in results] == [1] * len(acked)  # 0 run twice
        assert all(p.poll() is None for p in workers)
        print(
            f"figure: slot {slot} moved :{source.port} -> :{target.port}, {moved} keys in {took:.1f}s; "
            f"{len(acked)} acknowledged ({during} of {calls} during the move), 0 lost, 0 run twice;"
            f" refused {dict(refused)}"
        )
    finally:  # the slot goes back: the next tests want the slots where the cluster's creation put them
        if cluster.primary_of(KEYS.queue).port != source.port:
            await asyncio.to_thread(cluster.migrate_slot, slot, source)
