"""Unit tests of the pickup on fakeredis: the claim script, release, starting claimed jobs, the
doorbell wait, and what the poll loop waits for after a pickup.

arq's own ``start_jobs`` runs beside ours where it shows what the claim replaces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import fakeredis
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from agentq import wire
from agentq.errors import REDIS_DOWN
from agentq.keys import Keys
from tests.arqfork.conftest import QUEUE, MakeWorker, free_slots, in_progress, queue_jobs, worker_settings
from worker.arqfork import Next
from worker.claim import Claimer
from worker.doorbell import Doorbell

BELL = Keys("agentq").bell(QUEUE)


def now_ms() -> float:
    return time.time() * 1000


@pytest.fixture
def claimer(arq_pool: ArqRedis) -> Claimer:
    """The claim and release scripts on the fake Redis, with a 3 s lease."""
    return Claimer(arq_pool, QUEUE, BELL, lease_s=3.0, abort=False)


# ------------------------------------------------------------------------------ the claim script
async def test_a_claim_takes_the_lowest_scores_first_with_lease_record_and_try(
    claimer: Claimer, arq_pool: ArqRedis
) -> None:
    """Due jobs are taken lowest score first (priorities hold); each gets a lease, a lease score, a try of 1,
    and its record; what it had no room for rings the bell for the next worker."""
    await arq_pool.zadd(QUEUE, {"low": now_ms() - 10, "high": now_ms() - 5000, "normal": now_ms() - 1000})
    await arq_pool.set(wire.JOB_PREFIX + "high", b"record of high")
    claim = await claimer.claim(2)

    assert [(j.job_id, j.record, j.job_try) for j in claim.jobs] == [
        ("high", b"record of high", 1),
        ("normal", None, 1),
    ]
    assert claim.more and await arq_pool.zrange(BELL, 0, -1) == [b"ring"]
    for job in claim.jobs:
        assert 2000 < await arq_pool.pttl(in_progress(job.job_id)) <= 3000
        assert now_ms() + 2000 < await arq_pool.zscore(QUEUE, job.job_id) <= now_ms() + 3000  # the lease score
        assert await arq_pool.get(wire.RETRY_PREFIX + job.job_id) == b"1"
    assert await arq_pool.zscore(QUEUE, "low") < now_ms()  # untouched


async def test_a_claim_skips_jobs_running_elsewhere_and_says_when_the_next_comes_due(
    claimer: Claimer, arq_pool: ArqRedis
) -> None:
    """A due job whose in-progress key exists is another worker's; a job not due yet ends the read and
    its score says when to look again; nothing rings."""
    await arq_pool.zadd(QUEUE, {"theirs": now_ms() - 100, "later": now_ms() + 60_000})
    await arq_pool.set(in_progress("theirs"), b"1", px=60_000)
    claim = await claimer.claim(4)

    assert (claim.jobs, claim.running_elsewhere, claim.more) == ([], 1, False)
    assert claim.next_due_ms == pytest.approx(now_ms() + 60_000, abs=2000)
    assert await arq_pool.pttl(in_progress("theirs")) > 50_000
    assert not await arq_pool.exists(BELL)


async def test_a_second_claim_of_a_job_counts_its_try_and_sees_it_running(claimer: Claimer, arq_pool: ArqRedis) -> None:
    """A job claimed again after its lease lapsed has try 2; while its lease holds it is not due at all."""
    await queue_jobs(arq_pool, "a")
    (first,) = (await claimer.claim(1)).jobs
    assert (await claimer.claim(1)).jobs == []  # its lease score is in the future: not due
    await arq_pool.delete(in_progress("a"))
    await arq_pool.zadd(QUEUE, {"a": now_ms() - 1})  # its lease ran out (the worker died)
    (second,) = (await claimer.claim(1)).jobs
    assert (first.job_try, second.job_try) == (1, 2)
    assert 88_000 < await arq_pool.ttl(wire.RETRY_PREFIX + "a") <= 88_400


async def test_release_gives_back_the_lease_the_score_and_the_try(claimer: Claimer, arq_pool: ArqRedis) -> None:
    """A released job is due again at its old score, has no lease, its try uncounted, and the bell rings."""
    await queue_jobs(arq_pool, "a")
    score = await arq_pool.zscore(QUEUE, "a")
    claim = await claimer.claim(1)
    await claimer.release(claim.jobs)

    assert await arq_pool.zscore(QUEUE, "a") == score
    assert not await arq_pool.exists(in_progress("a"), wire.RETRY_PREFIX + "a")
    assert await arq_pool.zrange(BELL, 0, -1) == [b"ring"]
    assert [j.job_try for j in (await claimer.claim(1)).jobs] == [1]


# ------------------------------------------------------------------------------ starting claimed jobs
async def test_a_pickup_fills_the_free_slots_and_keeps_arqs_books(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """With room for 2 of 3 due jobs, two tasks start, arq's counter and semaphore say so, and the loop
    waits for a slot next."""
    w = make_worker(max_jobs=2, admission=False)
    await queue_jobs(arq_pool, "a", "b", "c")
    _, after = await w._pickup()
    assert (sorted(w.tasks), w.job_counter, free_slots(w.sem), after) == (["a", "b"], 2, 1, Next.SLOT)
    _, after = await w._pickup()
    assert after is Next.SLOT and sorted(w.tasks) == ["a", "b"]  # no room: Redis not even asked


async def test_a_failed_claim_raises_and_takes_no_slot(
    make_worker: MakeWorker, arq_pool: ArqRedis, fake_server: fakeredis.FakeServer
) -> None:
    """Redis failing during the claim propagates (for the outage handling) and no slot is taken."""
    w = make_worker(max_jobs=2)
    await queue_jobs(arq_pool, "a")
    fake_server.connected = False
    with pytest.raises(REDIS_DOWN):
        await w._pickup()
    assert (w.job_counter, free_slots(w.sem), w.tasks) == (0, 3, {})


async def test_arq_alone_keeps_the_slot_of_a_failed_pickup(
    make_arq_worker: Callable[..., Worker], arq_pool: ArqRedis, fake_server: fakeredis.FakeServer
) -> None:
    """arq's own start_jobs takes the slot before talking to Redis and leaks it when Redis fails: the claim
    takes slots only for jobs it has."""
    w = make_arq_worker(max_jobs=2)
    await queue_jobs(arq_pool, "a")
    fake_server.connected = False
    with pytest.raises(REDIS_DOWN):
        await w.start_jobs([b"a"])
    assert (w.job_counter, free_slots(w.sem), w.tasks) == (1, 2, {})


async def test_an_id_this_worker_still_runs_gets_no_second_task(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """A job whose lease lapsed is claimed again by the worker that still runs it: no second task, no
    second slot."""
    w = make_worker(max_jobs=3, admission=False)
    await queue_jobs(arq_pool, "a")
    await w._pickup()
    first = w.tasks["a"]
    await arq_pool.delete(in_progress("a"))
    await arq_pool.zadd(QUEUE, {"a": now_ms() - 1})  # to Redis, the job is free again

    await w._pickup()
    assert w.tasks["a"] is first and w.job_counter == 1
    assert await arq_pool.exists(in_progress("a"))  # the new lease is this worker's


async def test_arq_alone_starts_a_second_task_for_an_id_it_runs(
    make_arq_worker: Callable[..., Worker], arq_pool: ArqRedis
) -> None:
    """arq's own start_jobs runs the id again and overwrites its task: the books the pickup protects."""
    w = make_arq_worker(max_jobs=3)
    await queue_jobs(arq_pool, "a")
    await w.start_jobs([b"a"])
    first = w.tasks["a"]
    await arq_pool.delete(in_progress("a"))

    await w.start_jobs([b"a"])
    assert w.tasks["a"] is not first
    assert w.job_counter == 2
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_a_started_job_holds_a_lease_not_arqs_job_timeout(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """The in-progress key of a job just taken lives lease_s, not arq's job timeout + 10 s."""
    w = make_worker(lease_s=3.0)
    await queue_jobs(arq_pool, "a")
    await w._pickup()
    assert 2000 < await arq_pool.pttl(in_progress("a")) <= 3000


async def test_a_refused_job_goes_back_to_the_queue_with_those_behind_it(
    make_worker: MakeWorker, arq_pool: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When admission refuses a claimed job, it and every job claimed after it are released, in order;
    the next pickup asks Redis nothing until admission says the refused shape fits."""
    w = make_worker(max_jobs=4)
    assert w.admission is not None
    await queue_jobs(arq_pool, "a", "b", "c")
    for job_id in "abc":
        await arq_pool.set(wire.JOB_PREFIX + job_id, b'{"t":null,"f":"answer_question","a":[{"question":"q"}],"k":{}}')
    verdicts = iter([True, False])
    monkeypatch.setattr(w.admission, "fits", lambda shape: next(verdicts, False))
    _, after = await w._pickup()

    assert after is Next.CAPACITY and sorted(w.tasks) == ["a"] and w.admission.refused == 2
    for job_id in "bc":
        assert not await arq_pool.exists(in_progress(job_id))
        assert await arq_pool.zscore(QUEUE, job_id) < now_ms()
    claims: list[int] = []
    monkeypatch.setattr(w.claimer, "claim", lambda want: claims.append(want))
    assert (await w._pickup())[1] is Next.CAPACITY and claims == []


# ------------------------------------------------------------------------------ waiting
async def test_the_doorbell_wakes_a_waiter_at_once_and_times_out_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ring (one member however many rings) wakes one wait at once; with none, the wait ends at its timeout."""
    fake = fakeredis.FakeAsyncRedis()
    monkeypatch.setattr("worker.doorbell.redis_client", lambda settings: fake)
    bell = Doorbell(worker_settings(), BELL)
    t0 = time.monotonic()
    assert not await bell.wait(0.2)
    assert 0.15 < time.monotonic() - t0 < 2.0
    for _ in range(3):
        await fake.zadd(BELL, {"ring": 1})
    t0 = time.monotonic()
    assert await bell.wait(5.0) and time.monotonic() - t0 < 1.0
    assert not await fake.exists(BELL) and bell.rings == 1


def test_a_doorbell_wait_stays_below_the_socket_timeout() -> None:
    """However long the poll delay, a wait ends a second before the socket would give up on it."""
    assert Doorbell(worker_settings(redis_socket_timeout_s=4.0), BELL).longest_s == 3.0


async def test_an_idle_worker_waits_on_the_bell_until_the_next_job_comes_due(
    make_worker: MakeWorker, arq_pool: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing due: the wait is on the doorbell, for the poll delay at most, less if a job comes due sooner."""
    w = make_worker(poll_delay_s=5.0)
    waits: list[float] = []

    async def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    monkeypatch.setattr(w.doorbell, "wait", wait)
    w._last_health_check = time.time()  # arq's health key was just written
    claim, after = await w._pickup()
    await w._wait(after, claim)
    await arq_pool.zadd(QUEUE, {"deferred": now_ms() + 1500})
    claim, after = await w._pickup()
    await w._wait(after, claim)

    assert after is Next.BELL
    assert waits[0] == pytest.approx(5.0, abs=0.1) and waits[1] == pytest.approx(1.5, abs=0.3)


async def test_a_full_worker_waits_for_a_slot_not_for_redis(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """With every slot taken the loop waits on the worker's own event, which a job's end sets."""
    w = make_worker(max_jobs=1, admission=False)
    await queue_jobs(arq_pool, "a")
    await w._pickup()
    w._last_health_check = time.time()
    waiting = asyncio.create_task(w._wait(Next.SLOT, None))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    w.tasks["a"].cancel()
    await asyncio.wait_for(waiting, 1.0)
