"""A sharded queue end to end (``AGENTQ_QUEUE_SHARDS=3``), on a real redis-server with real workers: jobs
spread over the shards by their question, joined, followed, cancelled and listed across shards; idle
workers that cost each shard little and wake for a ring on any of them; workers of a subset of shards."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from subprocess import Popen

import pytest
import redis

from agentq.protocol import acl
from agentq.protocol.keys import shard_of
from agentq.settings import Settings
from producer.client import Client
from tests.helpers import eventually, progress_reached, questions_per_shard
from tests.test_doorbell import blocked_on_the_bell, commands_since_reset

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]
SHARDS = 3
SOURCES = ["weather", "news"]


@pytest.fixture
def settings_env(redis_url: str) -> dict[str, str]:
    """The shared fixtures' settings (``tests/conftest.py``), with a queue of three shards."""
    return {
        "AGENTQ_REDIS_URL": redis_url,
        "AGENTQ_TIME_SCALE": "0.02",
        "AGENTQ_HEALTH_CHECK_INTERVAL_S": "1",
        "AGENTQ_POOL_SIZE": "2",
        "AGENTQ_QUEUE_SHARDS": str(SHARDS),
    }


async def test_jobs_spread_over_the_shards_and_are_joined_followed_cancelled_and_listed(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """Nine questions, three of each shard, answered; an identical question joins its job on its shard; a
    job's progress is followed and a running job on a shard past 0 is cancelled; the listings, the depth
    and the workers' view span every shard."""
    # knowledge_base takes 4 s (200 x 0.02), for the job that is cancelled while it runs
    start_worker_processes(2, AGENTQ_SOURCE_LATENCY_S='{"knowledge_base": 200}', AGENTQ_SOURCE_RETRIES="0")
    placed = questions_per_shard(client, 3, sources=SOURCES)
    submitted = {shard: [await client.submit_request(r) for r in requests] for shard, requests in placed.items()}
    for shard, jobs in submitted.items():
        assert {shard_of(e.job_id) for e in jobs} == {shard} and not any(e.deduplicated for e in jobs)
    first = submitted[1][0].job_id
    joined = await client.submit_request(placed[1][0])
    assert (joined.job_id, joined.deduplicated) == (first, True)
    events = await progress_reached(client, first, "done", count=2)
    assert {e.source for e in events if e.event == "done"} == set(SOURCES)
    ids = [e.job_id for jobs in submitted.values() for e in jobs]
    results = await asyncio.gather(*(client.result(j, timeout=60) for j in ids))
    assert [r.status for r in results] == ["ok"] * 9
    assert {await client.status(j) for j in ids} == {"complete"}

    # the result of each job sits on its shard's tag
    with redis.Redis.from_url(client.settings.redis_url) as r:
        for job_id in ids:
            assert r.exists(client.keys.shard(shard_of(job_id)).result(job_id))

    listed = await client.jobs(limit=50)
    assert sorted(j.job_id for j in listed) == sorted(ids)
    assert [j.enqueued_at for j in listed] == sorted((j.enqueued_at for j in listed), reverse=True)
    assert [j.job_id for j in await client.jobs(limit=4, offset=2)] == [j.job_id for j in listed[2:6]]
    assert len(await client.jobs(status="ok", limit=50)) == 9

    # a slow job on shard 2, cancelled while it runs
    slow = (await client.submit_request(questions_per_shard(client, 4, sources=["knowledge_base"])[2][3])).job_id
    assert shard_of(slow) == 2
    await progress_reached(client, slow, "fetch_start")
    assert await client.cancel(slow) == "cancelling"
    assert (await client.result(slow, timeout=30)).status == "cancelled"
    [cancelled] = await client.jobs(status="cancelled")
    assert cancelled.job_id == slow

    depth = await client.queue_depth()
    assert sum(depth.queued.values()) == sum(depth.running.values()) == 0
    assert [w.get("shards") for w in await client.workers()] == [[0, 1, 2], [0, 1, 2]]


async def test_idle_workers_cost_each_shard_little_and_a_ring_on_any_shard_wakes_one(
    client: Client, redis_url: str, start_worker_processes: StartWorkers
) -> None:
    """Two idle workers watching three shards send fewer than 2 commands a second for each shard; a job on each
    shard starts well within a second of its enqueue (a ring, not the 5 s fallback poll)."""
    start_worker_processes(2, AGENTQ_HEALTH_CHECK_INTERVAL_S="10")
    await blocked_on_the_bell(redis_url, 2)  # one BZPOPMIN each, on the three bells at once
    with redis.Redis.from_url(redis_url) as r:
        r.config_resetstat()
    await asyncio.sleep(6.0)
    per_shard_per_s = commands_since_reset(redis_url) / 6.0 / 2 / SHARDS
    woke = []
    for shard, [request] in questions_per_shard(client, 1, sources=["weather"]).items():
        t0 = time.time()
        result = await client.ask(request, timeout=30)
        assert shard_of(result.job_id) == shard and result.status == "ok" and result.timing is not None
        woke.append(result.timing.started_at.timestamp() - t0)
    print(f"figure: idle, {per_shard_per_s:.2f} commands/s per worker per shard; started {woke} s after enqueue")
    assert per_shard_per_s < 2.0, per_shard_per_s
    assert max(woke) < 1.0, woke


async def test_workers_of_a_subset_of_shards_answer_only_theirs(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """A worker of shard 0 and a worker of shards 1 and 2: each job is answered by the worker of its shard."""
    [zero] = start_worker_processes(1, AGENTQ_WORKER_SHARDS="0")
    start_worker_processes(1, AGENTQ_WORKER_SHARDS="1,2")

    async def both_listed() -> bool:
        return len(await client.workers()) == 2

    await eventually(both_listed)
    owner = {w["pid"]: w for w in await client.workers()}
    assert owner[zero.pid]["shards"] == [0]
    placed = questions_per_shard(client, 2, sources=["weather"])
    ids = [(await client.submit_request(r)).job_id for requests in placed.values() for r in requests]
    results = await asyncio.gather(*(client.result(j, timeout=60) for j in ids))
    served = Counter((shard_of(r.job_id) == 0, r.worker_id == owner[zero.pid]["id"]) for r in results)
    assert served == Counter({(True, True): 2, (False, False): 4}), served


async def test_the_redis_users_of_a_sharded_queue_do_their_work_on_every_shard(
    client: Client, redis_url: str, start_worker_processes: StartWorkers
) -> None:
    """The producer's and the worker's Redis users (``producer acl``'s rules for 3 shards) enqueue, run,
    list and cancel on every shard; the producer still may not forge a result on any shard."""
    keys = client.keys
    users = {role: f"{role}-sharded" for role in ("producer", "worker")}
    with redis.Redis.from_url(redis_url) as admin:
        for role, name in users.items():
            admin.execute_command("ACL", "SETUSER", name, "on", ">pw", *acl.rules(role, keys))  # type: ignore[arg-type]
    try:
        as_user = {role: redis_url.replace("redis://", f"redis://{name}:pw@") for role, name in users.items()}
        start_worker_processes(1, AGENTQ_REDIS_URL=as_user["worker"])
        async with Client(Settings(redis_url=as_user["producer"])) as producer:  # the rest from the environment
            placed = questions_per_shard(producer, 1, sources=["weather"])
            results = [await producer.ask(requests[0], timeout=30) for requests in placed.values()]
            assert [(shard_of(r.job_id), r.status) for r in results] == [(0, "ok"), (1, "ok"), (2, "ok")]
            assert len(await producer.jobs(limit=10)) == 3
            deferred = await producer.submit("Later?", sources=["weather"], not_before=time.time() + 600)
            assert await producer.cancel(deferred.job_id) == "cancelled"
            with redis.Redis.from_url(as_user["producer"]) as raw:
                for job in results:
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        raw.set(keys.result(job.job_id), "{}")
    finally:
        with redis.Redis.from_url(redis_url) as admin:
            for name in users.values():
                admin.execute_command("ACL", "DELUSER", name)
