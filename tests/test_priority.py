"""Priorities: high jobs are taken before queued normal ones, low ones after, and timings stay true."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from subprocess import Popen

import pytest

from agentq.contract import Priority, loads
from agentq.errors import InvalidRequest
from producer.client import Client

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]


async def test_scores_order_priorities_without_deferring_or_shortening_expiry(client: Client) -> None:
    """high < normal < low in the queue, all due now (status queued, not deferred); each job keeps
    its true enqueue time and its priority; a bad priority is refused."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = {p: await client.enqueue(f"a {p} question", priority=p) for p in ("low", "normal", "high")}
    after = datetime.now(UTC) + timedelta(seconds=1)
    queue = client.keys.queue
    scores = {p: await client.redis.zscore(queue, job_id) for p, job_id in ids.items()}
    step_ms = client.settings.priority_step_s * 1000
    assert scores["high"] < scores["normal"] < scores["low"] <= time.time() * 1000
    assert scores["normal"] - scores["high"] == pytest.approx(step_ms, abs=1000)
    for job_id in ids.values():
        assert await client.status(job_id) == "queued"
        record = loads(await client.redis.hget(client.keys.jobs, job_id))
        enqueued = datetime.fromtimestamp(record["et"] / 1000, UTC)
        assert before <= enqueued <= after
    assert [(await client.jobs(limit=3))[i].priority for i in range(3)] == ["high", "normal", "low"]
    with pytest.raises(InvalidRequest, match="priority"):
        await client.enqueue("urgent?", priority="urgent")  # type: ignore[arg-type]


async def test_a_high_duplicate_moves_the_queued_job_up_never_down(client: Client) -> None:
    """Asking a queued normal question again at high priority joins it and moves it ahead;
    asking it again at low priority leaves it where it is."""
    job_id = await client.enqueue("Will it rain?")
    normal_score = await client.redis.zscore(client.keys.queue, job_id)
    joined = await client.submit("Will it rain?", priority="high")
    high_score = await client.redis.zscore(client.keys.queue, job_id)
    assert joined.deduplicated and joined.job_id == job_id
    assert high_score <= normal_score - client.settings.priority_step_s * 1000 + 1000
    assert (await client.submit("will it rain?", priority="low")).job_id == job_id
    assert await client.redis.zscore(client.keys.queue, job_id) == high_score


async def test_high_starts_before_queued_normals_and_low_after(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """One busy worker (max_jobs=1): a low, two normals, then a high are queued behind a slow job;
    the worker takes them high, normal, normal, low. queue_wait_s still measures from the real enqueue."""
    # knowledge_base answers in 0.8 s (40 x 0.02): the blocker keeps the only slot busy meanwhile.
    start_worker_processes(1, AGENTQ_MAX_JOBS="1", AGENTQ_SOURCE_LATENCY_S='{"knowledge_base": 40}')
    blocker = await client.enqueue("slow blocker", sources=["knowledge_base"])
    async for _ in client.progress(blocker, timeout=30):
        break  # its first event: the worker is busy with it now
    order: list[tuple[str, Priority]] = [
        ("low", "low"),
        ("normal 1", "normal"),
        ("normal 2", "normal"),
        ("high", "high"),
    ]
    ids = {name: await client.enqueue(f"{name} question", sources=["weather"], priority=p) for name, p in order}
    assert await client.status(blocker) == "in_progress", "the blocker finished before all were queued"

    results = {name: await client.result(job_id, timeout=60) for name, job_id in ids.items()}
    started = {name: r.timing.started_at for name, r in results.items() if r.timing}
    assert sorted(started, key=started.__getitem__) == ["high", "normal 1", "normal 2", "low"], started
    high = results["high"].timing
    assert high is not None and high.queued_at is not None and high.queue_wait_s is not None
    low = results["low"].timing
    assert low is not None and low.queued_at is not None and low.queued_at < high.queued_at
    assert high.queue_wait_s == pytest.approx((high.started_at - high.queued_at).total_seconds(), abs=1e-3)
    assert 0 < high.queue_wait_s < 30


async def test_high_overtakes_a_backlog_the_worker_has_already_read(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """A high job enqueued while the busy worker works through normals it polled earlier still starts
    next: the worker re-reads the queue whenever a slot frees (plain arq works through the ids it
    read, up to 100, first)."""
    start_worker_processes(1, AGENTQ_MAX_JOBS="1", AGENTQ_SOURCE_LATENCY_S='{"news": 40}')  # 0.8 s each
    ids = {f"normal {i}": await client.enqueue(f"normal {i}", sources=["news"]) for i in range(3)}
    async for _ in client.progress(ids["normal 0"], timeout=30):
        break  # normal 0 runs; 1 and 2 have been seen by the worker's poll
    ids["high"] = await client.enqueue("high", sources=["weather"], priority="high")
    assert await client.status(ids["normal 1"]) == "queued", "normal 0 and 1 ran before high was queued"

    results = {name: await client.result(job_id, timeout=60) for name, job_id in ids.items()}
    started = {name: r.timing.started_at for name, r in results.items() if r.timing}
    assert sorted(started, key=started.__getitem__) == ["normal 0", "high", "normal 1", "normal 2"], started


async def test_first_come_first_served_within_a_priority_even_in_one_millisecond(client: Client) -> None:
    """Jobs enqueued back to back (many within one millisecond) sit in the queue in enqueue order."""
    ids = [await client.enqueue(f"question {i}", dedup=False) for i in range(30)]
    assert await client.redis.zrange(client.keys.queue, 0, -1) == [i.encode() for i in ids]
