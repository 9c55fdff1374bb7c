"""The worker's loop on a sharded queue, on fakeredis: shards taken in turn, only the shards that may hold
due jobs asked, a ring heard for its shard, the fallback poll asking every shard, a subset served."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from agentq.protocol.queue import Claim, Queue, now_ms
from agentq.protocol.records import encode_job
from tests.engine.conftest import MakeWorker
from worker.engine.loop import Next, Worker

SHARDS = 3


async def queue_on(w: Worker, shard: int, count: int, *, tenant: str = "default") -> list[str]:
    """``count`` jobs due a second ago on ``shard``, with records as the producer writes them."""
    queue = Queue(w.redis, w.keys)  # type: ignore[arg-type]
    ids = []
    for _ in range(count):
        job_id = w.keys.new_job_id(tenant, shard=shard)
        at = now_ms() - 1000
        record = encode_job("job", ({"question": job_id},), {}, at)
        await queue.enqueue(job_id, record, score=at, marker=None, index_score=at, index_size=100)
        ids.append(job_id)
    return ids


def claims_of(w: Worker) -> list[int]:
    """Record the shard of every claim the worker makes from now on."""
    asked: list[int] = []
    claim = w.queue.claim

    async def counted(*args: Any, shard: int = 0, **kwargs: Any) -> Claim:
        asked.append(shard)
        return await claim(*args, shard=shard, **kwargs)

    w.queue.claim = counted  # type: ignore[method-assign]
    return asked


async def end_all(w: Worker) -> None:
    for task in list(w.tasks.values()):
        task.cancel()
    await asyncio.gather(*w.tasks.values(), return_exceptions=True)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_shards_with_backlogs_are_taken_in_turn(make_worker: MakeWorker) -> None:
    """Two jobs on each of three shards and room for one at a time: the starts go 0, 1, 2, 0, 1, 2."""
    w = await make_worker(max_jobs=1, admission=False, queue_shards=SHARDS)
    placed = {shard: await queue_on(w, shard, 2) for shard in range(SHARDS)}
    started = []
    for _ in range(2 * SHARDS):
        claim, after = await w._pickup()
        assert claim is not None and after is Next.SLOT and len(w.tasks) == 1
        started.append(next(s for s, ids in placed.items() if next(iter(w.tasks)) in ids))
        await end_all(w)
    assert started == [0, 1, 2, 0, 1, 2]


async def test_an_idle_worker_asks_only_the_shard_whose_bell_rang(
    make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every shard was found empty, a pass asks Redis nothing until a bell rings; then only that shard."""
    w = await make_worker(admission=False, queue_shards=SHARDS, poll_delay_s=5.0)
    asked = claims_of(w)
    first, then = await w._pickup(), await w._pickup()
    assert first[1] is then[1] is Next.BELL and then[0] is None and asked == [0, 1, 2]  # the first pass asks each
    job = (await queue_on(w, 2, 1))[0]
    waits: list[float] = []

    async def rang(seconds: float) -> list[int]:
        waits.append(seconds)
        return [2]

    monkeypatch.setattr(w.doorbell, "wait", rang)
    await w._wait(Next.BELL)
    await w._pickup()
    assert asked == [0, 1, 2, 2] and list(w.tasks) == [job] and waits == [5.0]


async def test_the_fallback_poll_asks_every_shard_unasked(
    make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bell's wait of the whole poll delay that no ring ended: every shard is asked, as work that rang no bell."""
    w = await make_worker(admission=False, queue_shards=SHARDS, poll_delay_s=5.0)
    await w._pickup()
    asked = claims_of(w)

    async def silent(seconds: float) -> list[int]:
        return []

    monkeypatch.setattr(w.doorbell, "wait", silent)
    await w._wait(Next.BELL)
    assert w._unasked
    await w._pickup()
    assert sorted(asked) == [0, 1, 2]


async def test_a_worker_serves_only_its_shards(make_worker: MakeWorker) -> None:
    """``worker_shards=[1]``: jobs on shards 0 and 2 are left for other workers; its bell is shard 1's only."""
    w = await make_worker(admission=False, queue_shards=SHARDS, worker_shards=[1], max_jobs=10)
    on_one = await queue_on(w, 1, 2)
    await queue_on(w, 0, 2)
    await queue_on(w, 2, 2)
    asked = claims_of(w)
    await w._pickup()
    assert asked == [1] and sorted(w.tasks) == sorted(on_one)
    assert list(w.doorbell.bells) == [1]


async def test_tenants_share_a_sharded_queue_fairly(make_worker: MakeWorker) -> None:
    """Two tenants, 12 jobs each spread over the shards, room for 2: of the first 12 starts, each gets 6 (one
    tenant's backlog on a shard does not cost the other its turn on the others)."""
    w = await make_worker(admission=False, queue_shards=SHARDS, max_jobs=2)
    for shard in range(SHARDS):
        await queue_on(w, shard, 4, tenant="acme")
        await queue_on(w, shard, 4, tenant="beta")
    started: Counter[str] = Counter()
    while sum(started.values()) < 12:
        await w._pickup()
        started.update(job_id.partition("_")[0] for job_id in w.tasks)
        await end_all(w)
    assert started == Counter(acme=6, beta=6)
