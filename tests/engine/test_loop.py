"""The worker's loop on fakeredis: what a pass takes and what it waits for, Redis outages, stopping
with and without a grace period, closing, and the lease renewer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis.exceptions

from agentq.protocol.keys import Field, field
from tests.engine.conftest import KEYS, FakeClock, FakeSleep, MakeWorker, queue_jobs
from worker.engine import leases
from worker.engine import loop as loop_module
from worker.engine.admission import Shape
from worker.engine.loop import Next, Worker


async def settle() -> None:
    """Let started job tasks run up to their first real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------ a pass
async def test_a_pickup_fills_the_free_slots_and_waits_for_one(make_worker: MakeWorker, fake: Any) -> None:
    """Room for two of three due jobs: two start under this worker's lease, the third waits for a free slot."""
    w = await make_worker(max_jobs=2, admission=False)
    await queue_jobs(fake, "a", "b", "c")
    claim, after = await w._pickup()
    assert claim is not None and sorted(w.tasks) == ["a", "b"] and claim.more and after is Next.SLOT
    assert await fake.hget(KEYS.jobs, field("a", Field.HOLDER)) == b"w1"
    assert (await w._pickup()) == (None, Next.SLOT)  # full: Redis is not asked


async def test_an_idle_worker_with_nothing_due_waits_on_the_bell_until_the_next_job_comes_due(
    make_worker: MakeWorker, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing due: the wait is the doorbell's, no longer than until the first deferred job comes due."""
    w = await make_worker(poll_delay_s=5.0)
    due_in = time.time() * 1000 + 2000
    await queue_jobs(fake, "later", score=due_in)
    waits: list[float] = []

    async def wait(seconds: float) -> list[int]:
        waits.append(seconds)
        return []

    monkeypatch.setattr(w.doorbell, "wait", wait)
    await w._pass()
    assert w.tasks == {} and len(waits) == 1 and 1.0 < waits[0] <= 2.0


async def test_a_refused_job_goes_back_to_the_queue_with_those_behind_it(make_worker: MakeWorker, fake: Any) -> None:
    """Admission says no to the second job: it and the third go back where they were, unleased; the first runs."""
    w = await make_worker()
    assert w.admission is not None
    verdicts = iter([True, False])
    w.admission.fits = lambda shape: next(verdicts, True)  # type: ignore[method-assign]
    w.admission.idle = lambda: False  # type: ignore[method-assign]
    await queue_jobs(fake, "a", score=1)
    await queue_jobs(fake, "b", score=2)
    await queue_jobs(fake, "c", score=3)
    _, after = await w._pickup()
    assert sorted(w.tasks) == ["a"] and after is Next.CAPACITY and w.admission.refused == 2
    assert [await fake.zscore(KEYS.queue, j) for j in "bc"] == [2.0, 3.0]
    assert await fake.hget(KEYS.jobs, field("b", Field.HOLDER)) is None
    assert isinstance(w._refused, Shape)


async def test_while_a_job_runs_alone_nothing_else_is_claimed(make_worker: MakeWorker, fake: Any) -> None:
    """A suspect (its last run died in company) runs alone: the worker claims nothing until it ends."""
    w = await make_worker(admission=False)
    await queue_jobs(fake, "suspect", score=1)
    await queue_jobs(fake, "next", score=2)
    await fake.hset(KEYS.jobs, field("suspect", Field.SUSPECT), "1")
    _, after = await w._pickup()
    assert list(w.tasks) == ["suspect"] and w.alone == "suspect" and after is Next.SLOT
    assert await w._pickup() == (None, Next.SLOT)
    w.tasks["suspect"].cancel()
    await asyncio.gather(*w.tasks.values(), return_exceptions=True)
    await settle()
    assert w.alone is None


async def test_a_worker_that_lost_redis_within_the_lease_spares_lapsed_leases_then_judges_them(
    make_worker: MakeWorker, fake: Any, clock: FakeClock, sleeps: FakeSleep
) -> None:
    """After an outage of its own, the worker cannot tell a dead holder from one cut off like itself: for a
    lease it pushes other workers' lapsed leases back; after that a lapsed lease is a death again."""
    w = await make_worker(admission=False, lease_s=3.0)
    await queue_jobs(fake, "theirs", score=1)
    await fake.hset(KEYS.jobs, field("theirs", Field.HOLDER), "w9")
    pickup = w._pickup
    scripted_pickups(w, [redis.exceptions.ConnectionError("down")])
    await w._pass()  # Redis fails this worker at clock.now
    w._pickup = pickup  # type: ignore[method-assign]
    claim, _ = await w._pickup()
    assert claim is not None and claim.spared == 1 and not w.tasks
    assert await fake.hget(KEYS.jobs, field("theirs", Field.HOLDER)) == b"w9"
    await fake.zadd(KEYS.queue, {"theirs": 1})  # w9 never renewed it
    clock.now += 3.0
    claim, _ = await w._pickup()
    assert claim is not None and claim.spared == 0 and list(w.tasks) == ["theirs"] and w.alone == "theirs"


async def test_a_job_held_here_but_never_started_starts_when_its_lease_lapses(
    make_worker: MakeWorker, fake: Any
) -> None:
    """The claim ran in Redis but its reply was lost (the connection broke; the retried claim found the job
    leased): the worker holds a job it does not run. When the lease lapses its own claim hands it back
    marked held, and the worker starts it; a held job it does run is not started twice."""
    w = await make_worker(admission=False)
    await queue_jobs(fake, "lost", "running")
    await w.queue.claim(w.worker_id, want=2, lease_ms=60_000, idle=True)  # a claim whose reply never came
    w.tasks["running"] = asyncio.create_task(asyncio.Event().wait())  # this one it does run
    await fake.zadd(KEYS.queue, {"lost": 1, "running": 2})  # both leases lapse
    claim, _ = await w._pickup()
    assert claim is not None and sorted(j.job_id for j in claim.jobs if j.held) == ["lost", "running"]
    assert set(w.tasks) == {"lost", "running"} and await fake.hget(KEYS.jobs, field("lost", Field.RUNS)) == b"1"
    for task in w.tasks.values():
        task.cancel()
    await asyncio.gather(*w.tasks.values(), return_exceptions=True)


# ------------------------------------------------------------------------------ outages
DOWN_ERRORS = [
    redis.exceptions.ConnectionError("Error 111 connecting"),
    ConnectionRefusedError(111, "Connection refused"),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
    TimeoutError(),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> FakeSleep:
    fake = FakeSleep()
    monkeypatch.setattr(loop_module.asyncio, "sleep", fake)
    return fake


def scripted_pickups(w: Worker, outcomes: list[BaseException | None]) -> None:
    """Each pass's pickup takes the next outcome: raise it, or (None) find nothing and go round at once."""

    async def pickup() -> tuple[None, Next]:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return None, Next.MORE

    w._pickup = pickup  # type: ignore[method-assign]


@pytest.mark.parametrize("error", DOWN_ERRORS, ids=lambda e: f"{type(e).__module__}.{type(e).__name__}")
async def test_a_pass_waits_out_an_outage_with_a_growing_backoff_then_gives_up(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, error: Exception
) -> None:
    """A pass that cannot reach Redis waits 0.05 s, doubling each second up to 1 s, until redis_outage_s."""
    w = await make_worker(redis_outage_s=10.0)
    start = clock.now
    for elapsed in [0, 1, 2, 3, 4, 5, 10]:
        clock.now = start + elapsed
        scripted_pickups(w, [error])
        await w._pass()
    assert sleeps.delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    clock.now = start + 10.5
    scripted_pickups(w, [error])
    with pytest.raises(type(error)) as raised:
        await w._pass()
    assert raised.value is error


async def test_a_pass_that_hangs_ends_the_worker_once_the_budget_is_spent(make_worker: MakeWorker) -> None:
    """An attempt that never answers (a name lookup that hangs, redis-py retrying inside one call) fails when
    the budget is spent, counted from its start: the worker gives up at the budget, not an attempt later."""
    w = await make_worker(redis_outage_s=0.3, poll_delay_s=0.1)

    async def hang() -> tuple[None, Next]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    w._pickup = hang  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await w._pass()
    assert 0.3 <= time.monotonic() - started < 2.0


async def test_a_pass_that_reaches_redis_restarts_the_outage_budget(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep
) -> None:
    """After a pass that reaches Redis, the next outage gets the whole budget and the shortest back-off again."""
    w = await make_worker(redis_outage_s=10.0)
    start, down = clock.now, redis.exceptions.ConnectionError("down")
    for elapsed, outcome in [(0, down), (8, down), (9, None), (20, down), (29, down)]:
        clock.now = start + elapsed
        scripted_pickups(w, [outcome])
        await w._pass()
    assert sleeps.delays == [0.05, 1.0, 0.05, 1.0]


async def test_any_other_error_in_a_pass_goes_through_at_once(make_worker: MakeWorker, sleeps: FakeSleep) -> None:
    """An error that is not Redis being unreachable (a bad reply) is not an outage: no wait, no budget."""
    w = await make_worker()
    scripted_pickups(w, [redis.exceptions.ResponseError("WRONGTYPE")])
    with pytest.raises(redis.exceptions.ResponseError):
        await w._pass()
    assert (sleeps.delays, w.outage.down_since) == ([], None)


# ------------------------------------------------------------------------------ stopping
async def test_a_stop_without_grace_puts_running_jobs_back_in_line_with_their_tries(
    make_worker: MakeWorker, fake: Any
) -> None:
    """The running job is cancelled and requeued where it was, its try given back; the loop claims no more."""
    w = await make_worker(shutdown_grace_s=0)
    await queue_jobs(fake, "a", score=42)
    await w._pickup()
    await settle()
    w.stop()
    await asyncio.gather(*w.tasks.values(), return_exceptions=True)
    assert await fake.zscore(KEYS.queue, "a") == 42 and await fake.hget(KEYS.jobs, field("a", Field.TRIES)) == b"0"
    assert w.runner.requeued == 1 and await w._pickup() == (None, Next.SLOT)


async def test_a_stop_during_the_claim_gives_the_claimed_jobs_back_at_once(make_worker: MakeWorker, fake: Any) -> None:
    """SIGTERM while the claim is on its way: what it took goes back in line now, its try given back."""
    w = await make_worker(shutdown_grace_s=30)
    await queue_jobs(fake, "a", score=42)
    claim = w.queue.claim

    async def claim_then_stop(*args: Any, **kwargs: Any) -> Any:
        taken = await claim(*args, **kwargs)
        w.stop()  # the signal came while the reply was on its way
        return taken

    w.queue.claim = claim_then_stop  # type: ignore[method-assign]
    _, after = await w._pickup()
    assert after is Next.SLOT and not w.tasks  # nothing started
    assert await fake.zscore(KEYS.queue, "a") == 42 and await fake.hget(KEYS.jobs, field("a", Field.TRIES)) == b"0"
    assert await fake.hget(KEYS.jobs, field("a", Field.HOLDER)) is None and w.runner.requeued == 1


async def test_a_job_cancelled_by_a_stop_before_its_task_began_goes_back_in_line(
    make_worker: MakeWorker, fake: Any
) -> None:
    """A stop between a job's start and its task's first step: the runner never sees it; close gives it back."""
    w = await make_worker(shutdown_grace_s=0)
    await queue_jobs(fake, "a", score=42)
    await w._pickup()
    (task,) = w.tasks.values()
    w.stop()  # before the task's first step: it ends cancelled without running a line of the runner
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and "a" not in w.runner.begun
    await w.close()
    assert await fake.zscore(KEYS.queue, "a") == 42 and await fake.hget(KEYS.jobs, field("a", Field.TRIES)) == b"0"
    assert await fake.hget(KEYS.jobs, field("a", Field.HOLDER)) is None and w.runner.requeued == 1


async def test_a_stop_lets_a_run_that_is_storing_its_result_end_stored_and_counted(
    make_worker: MakeWorker, fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop without grace does not cancel a run whose result is on its way to Redis: it ends with its line."""

    async def job(ctx: dict[str, Any], *args: Any) -> dict[str, Any]:
        return {"status": "ok"}

    w = await make_worker(job=job, shutdown_grace_s=0)
    gate, real = asyncio.Event(), w.runner.finisher

    async def slow_finisher(ending: Any) -> bool:
        await gate.wait()
        return await real(ending)

    w.runner.finisher = slow_finisher  # type: ignore[assignment]
    await queue_jobs(fake, "a")
    await w._pickup()
    for _ in range(100):
        if w.runner.storing:
            break
        await asyncio.sleep(0)
    assert w.runner.storing == {"a"}
    caplog.set_level(logging.INFO, logger="worker")
    w.stop()
    gate.set()
    await asyncio.gather(*w.tasks.values())  # not cancelled: raises if it was
    assert await fake.exists(KEYS.result("a")) and (w.runner.done, w.runner.requeued) == (1, 0)
    assert any(r.getMessage().startswith("job a ok in ") for r in caplog.records)


async def test_a_stop_with_grace_lets_the_job_finish_and_a_second_stop_cuts_it_short(
    make_worker: MakeWorker, fake: Any
) -> None:
    """Within the grace period a job that ends stores its result; a second signal cancels what still runs."""
    release = asyncio.Event()

    async def job(ctx: dict[str, Any], *args: Any) -> dict[str, Any]:
        if ctx["job_id"] == "quick":
            await release.wait()
        else:
            await asyncio.Event().wait()
        return {"status": "ok"}

    w = await make_worker(job=job, shutdown_grace_s=30, admission=False)
    await queue_jobs(fake, "quick", "slow")
    await w._pickup()
    await settle()
    w.stop()
    release.set()
    await asyncio.gather(w.tasks["quick"], return_exceptions=True)
    assert await fake.exists(KEYS.result("quick")) and "slow" in w.tasks
    w.stop()  # again: no more grace
    await asyncio.gather(*w.tasks.values(), return_exceptions=True)
    assert not await fake.exists(KEYS.result("slow")) and w.runner.requeued == 1


async def test_close_runs_the_shutdown_even_with_redis_down(make_worker: MakeWorker, fake_server: Any) -> None:
    """A worker stopped while Redis is unreachable still shuts its parts down (its pool, its client)."""
    w = await make_worker()
    shut: list[bool] = []

    async def on_shutdown(ctx: Any) -> None:
        shut.append(True)

    w.on_shutdown = on_shutdown
    fake_server.connected = False
    await w.close()
    assert shut == [True]


# ------------------------------------------------------------------------------ leases
async def test_the_renewer_pushes_back_every_running_lease_every_third_of_it(
    make_worker: MakeWorker, fake: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each lease/3 the queue score of every job this worker holds moves to the lease's end; a job another
    worker took over is left alone and logged."""
    w = await make_worker(admission=False)
    await queue_jobs(fake, "a", "b")
    await w._pickup()
    await fake.hset(KEYS.jobs, field("b", Field.HOLDER), "w2")
    b_score = await fake.zscore(KEYS.queue, "b")
    sleeps = FakeSleep()
    sleeps.limit = 1
    monkeypatch.setattr(leases.asyncio, "sleep", sleeps)
    before = time.time() * 1000
    with caplog.at_level(logging.WARNING), pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(w.queue, "w1", lambda: ["a", "b"], 3.0)
    assert sleeps.delays == [1.0, 1.0]
    assert before + 3000 - 1 <= await fake.zscore(KEYS.queue, "a") <= time.time() * 1000 + 3000
    assert await fake.zscore(KEYS.queue, "b") == b_score
    assert any("job b: its lease lapsed" in r.getMessage() for r in caplog.records)


async def test_the_renewer_keeps_renewing_after_errors_and_leaves_redis_alone_while_idle(
    make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed renewal (Redis down, or any other error) is logged, told, and retried next tick; no job, no call."""
    w = await make_worker()
    calls: list[list[str]] = []
    faults: list[Exception] = [redis.exceptions.ConnectionError("down"), redis.exceptions.ResponseError("OOM")]

    async def renew(worker_id: str, job_ids: list[str], *, lease_ms: int) -> list[str]:
        calls.append(list(job_ids))
        if faults:
            raise faults.pop(0)
        return []

    monkeypatch.setattr(w.queue, "renew", renew)
    sleeps = FakeSleep()
    sleeps.limit = 5
    monkeypatch.setattr(leases.asyncio, "sleep", sleeps)
    running = [["a"], ["a"], ["a"], [], []]
    told: list[bool] = []
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(
            w.queue, "w1", lambda: running.pop(0) if running else [], 3.0, on_failure=lambda: told.append(True)
        )
    assert calls == [["a"], ["a"], ["a"]] and told == [True, True]
