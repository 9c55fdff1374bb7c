"""Unit tests of ``worker.arqfork.AgentQWorker`` and ``worker.leases`` on fakeredis, faults injected.

Each override is driven directly (arq's ``main`` is never run); where it helps, arq's own method
runs beside it on the same fake Redis to show the behaviour the override changes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis.asyncio.client
import redis.exceptions
from arq.connections import ArqRedis
from arq.jobs import DeserializationError, serialize_result
from arq.worker import JobExecutionFailed, Worker

from agentq import wire
from agentq.contract import dumps, loads
from agentq.errors import REDIS_DOWN
from tests.arqfork.conftest import QUEUE, MakeWorker, free_slots, in_progress, queue_jobs
from worker import leases
from worker.arqfork import explain_failure


def records_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    """The log records one module wrote."""
    return [r for r in caplog.records if r.name == logger]


class Outage:
    """Takes the fake Redis away, in one of two ways, and brings it back."""

    def __init__(self, kind: str, server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind, self.server, self.down = kind, server, False
        real_execute = redis.asyncio.client.Pipeline.execute

        async def execute(pipe: redis.asyncio.client.Pipeline, raise_on_error: bool = True) -> Any:
            if self.down and self.kind == "refused-at-exec":
                raise ConnectionRefusedError(111, "Connection refused")
            return await real_execute(pipe, raise_on_error)

        real_immediate = redis.asyncio.client.Pipeline.immediate_execute_command

        async def immediate(pipe: redis.asyncio.client.Pipeline, *args: Any, **options: Any) -> Any:
            if self.down and self.kind == "lost-while-watching" and pipe.watching:
                # What redis-py does when a WATCHed connection breaks: its own clean-up turns the
                # connection error into a WatchError raised while handling it.
                try:
                    raise redis.exceptions.ConnectionError("Error while reading from redis:6379 : (104, reset)")
                except redis.exceptions.ConnectionError as error:
                    await pipe._disconnect_reset_raise(pipe.connection, error)  # type: ignore[arg-type]
            return await real_immediate(pipe, *args, **options)

        monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", execute)
        monkeypatch.setattr(redis.asyncio.client.Pipeline, "immediate_execute_command", immediate)

    def begin(self) -> None:
        self.down = True
        self.server.connected = self.kind != "unreachable"

    def end(self) -> None:
        self.down = False
        self.server.connected = True


@pytest.fixture(params=["unreachable", "refused-at-exec"])
def outage(
    request: pytest.FixtureRequest, fake_server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> Outage:
    """Redis fails mid-pickup: unreachable from the WATCH on, or refusing the EXEC that takes the job."""
    return Outage(request.param, fake_server, monkeypatch)


# ------------------------------------------------------------------------------ start_jobs
async def test_a_failed_pickup_gives_back_the_slot_and_raises(
    make_worker: MakeWorker, arq_pool: ArqRedis, outage: Outage
) -> None:
    """Redis failing inside start_jobs propagates, and the semaphore slot and job_counter arq took are given back."""
    w = make_worker(max_jobs=2)
    await queue_jobs(arq_pool, "a")
    outage.begin()
    with pytest.raises(REDIS_DOWN):
        await w.start_jobs([b"a"])
    assert (w.job_counter, free_slots(w.sem), w.tasks) == (0, 3, {})


async def test_arq_alone_keeps_the_slot_of_a_failed_pickup(
    make_arq_worker: Callable[..., Worker], arq_pool: ArqRedis, outage: Outage
) -> None:
    """arq's own start_jobs leaks the slot when Redis fails mid-pickup: the bug the override repairs."""
    w = make_arq_worker(max_jobs=2)
    await queue_jobs(arq_pool, "a")
    outage.begin()
    with pytest.raises(REDIS_DOWN):
        await w.start_jobs([b"a"])
    assert (w.job_counter, free_slots(w.sem), w.tasks) == (1, 2, {})


async def test_a_connection_lost_inside_the_pickups_watch_is_an_outage(
    make_worker: MakeWorker, arq_pool: ArqRedis, fake_server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection lost between WATCH and MULTI (redis-py: WatchError) is a Redis outage, the slot given back."""
    w = make_worker(max_jobs=2)
    await queue_jobs(arq_pool, "a")
    Outage("lost-while-watching", fake_server, monkeypatch).begin()
    with pytest.raises(REDIS_DOWN):
        await w.start_jobs([b"a"])
    assert (w.job_counter, free_slots(w.sem), w.tasks) == (0, 3, {})


async def test_arq_alone_lets_a_watch_lost_to_the_connection_escape(
    make_arq_worker: Callable[..., Worker],
    arq_pool: ArqRedis,
    fake_server: fakeredis.FakeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """arq's start_jobs lets that WatchError out of its poll loop: the worker exited on a Redis restart."""
    w = make_arq_worker(max_jobs=2)
    await queue_jobs(arq_pool, "a")
    Outage("lost-while-watching", fake_server, monkeypatch).begin()
    with pytest.raises(redis.exceptions.WatchError):
        await w.start_jobs([b"a"])


async def test_after_many_failed_pickups_the_worker_still_fills_max_jobs(
    make_worker: MakeWorker, make_arq_worker: Callable[..., Worker], arq_pool: ArqRedis, outage: Outage
) -> None:
    """Ten failed pickups later our worker starts max_jobs jobs; arq's, after max_jobs of them, starts none."""
    ours, arqs = make_worker(max_jobs=3), make_arq_worker(max_jobs=3)
    await queue_jobs(arq_pool, "a", "b", "c", "d", "e")
    outage.begin()
    for _ in range(10):
        with pytest.raises(REDIS_DOWN):
            await ours.start_jobs([b"a"])
    for _ in range(3):
        with pytest.raises(REDIS_DOWN):
            await arqs.start_jobs([b"a"])
    outage.end()

    await arqs.start_jobs([b"a", b"b", b"c", b"d", b"e"])
    assert arqs.tasks == {}
    await ours.start_jobs([b"a", b"b", b"c", b"d", b"e"])
    assert (sorted(ours.tasks), ours.job_counter) == (["a", "b", "c"], 3)


async def failed_at_finish(job_id: str, score: int) -> None:
    """Stands in for ``run_job``: the job ran, but storing its outcome met a Redis outage."""
    raise redis.exceptions.ConnectionError("Connection reset by peer")


async def test_a_failed_pickup_of_an_id_whose_last_run_ended_unreaped_gives_back_the_slot(
    make_worker: MakeWorker, arq_pool: ArqRedis, outage: Outage
) -> None:
    """A failed re-pickup of a job whose last run ended (its finish met the outage) unreaped frees the slot."""
    w = make_worker(max_jobs=2)
    w.run_job = failed_at_finish  # type: ignore[method-assign]
    await queue_jobs(arq_pool, "a")
    await w.start_jobs([b"a"])
    await asyncio.gather(w.tasks["a"], return_exceptions=True)
    await arq_pool.delete(in_progress("a"))  # its lease ran out
    assert (w.job_counter, free_slots(w.sem)) == (0, 3)

    outage.begin()
    with pytest.raises(REDIS_DOWN):
        await w.start_jobs([b"a"])
    assert (w.job_counter, free_slots(w.sem)) == (0, 3)


async def test_an_id_this_worker_still_runs_gets_no_second_task(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """start_jobs skips an id whose task is still running here, even when its lease has lapsed in Redis."""
    w = make_worker(max_jobs=3)
    await queue_jobs(arq_pool, "a", "b")
    await w.start_jobs([b"a"])
    first = w.tasks["a"]
    await arq_pool.delete(in_progress("a"))  # the lease lapsed: to Redis, the job is free again

    await w.start_jobs([b"a", b"b"])
    assert w.tasks["a"] is first
    assert (sorted(w.tasks), w.job_counter) == (["a", "b"], 2)


async def test_arq_alone_starts_a_second_task_for_an_id_it_runs(
    make_arq_worker: Callable[..., Worker], arq_pool: ArqRedis
) -> None:
    """arq's own start_jobs runs the id again and overwrites its task: the books the override protects."""
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
    await w.start_jobs([b"a"])
    assert 2000 < await arq_pool.pttl(in_progress("a")) <= 3000


# ------------------------------------------------------------------------------ finish_job, finish_failed_job
async def job_in_flight(redis: ArqRedis, job_id: str) -> None:
    """Every mark arq keeps of a running job: record, tries, lease, queue entry, abort request."""
    await redis.set(wire.JOB_PREFIX + job_id, b"{}")
    await redis.set(wire.RETRY_PREFIX + job_id, 1)
    await redis.set(in_progress(job_id), b"1", px=60_000)
    await redis.zadd(QUEUE, {job_id: 1})
    await redis.zadd(wire.ABORT_SET, {job_id: 1})


async def assert_finished(redis: ArqRedis, job_id: str) -> None:
    """The job's record, tries, queue entry and abort request are gone."""
    assert await redis.exists(wire.JOB_PREFIX + job_id, wire.RETRY_PREFIX + job_id) == 0
    assert await redis.zscore(QUEUE, job_id) is None
    assert await redis.zscore(wire.ABORT_SET, job_id) is None


@pytest.mark.parametrize("keep_in_progress", [None, 5.0], ids=["job", "cron-job"])
async def test_finish_job_keeps_the_result_stored_first(
    make_worker: MakeWorker, arq_pool: ArqRedis, caplog: pytest.LogCaptureFixture, keep_in_progress: float | None
) -> None:
    """A second complete result is discarded (SET NX), counted and logged; the job's keys are cleared as arq does."""
    w = make_worker()
    await job_in_flight(arq_pool, "a")
    await arq_pool.set(wire.RESULT_PREFIX + "a", b"first")

    with caplog.at_level(logging.WARNING, logger="worker.arqfork"):
        await w.finish_job("a", True, b"second", 60, False, None, keep_in_progress)

    assert await arq_pool.get(wire.RESULT_PREFIX + "a") == b"first"
    assert w.results_discarded == 1
    assert "already had a result" in caplog.text
    await assert_finished(arq_pool, "a")
    lease_ms = await arq_pool.pttl(in_progress("a"))
    if keep_in_progress is None:
        assert lease_ms == -2  # gone
    else:
        assert 0 < lease_ms <= 5000  # kept a while, as arq keeps a cron job's


@pytest.mark.parametrize(("forever", "ttl_ms"), [(False, 60_000), (True, -1)])
async def test_finish_job_stores_a_first_result(
    make_worker: MakeWorker, arq_pool: ArqRedis, caplog: pytest.LogCaptureFixture, forever: bool, ttl_ms: int
) -> None:
    """The first complete result is stored with arq's expiry (none when kept forever), and nothing is discarded."""
    w = make_worker()
    await job_in_flight(arq_pool, "a")
    await w.finish_job("a", True, b"first", 60, forever, None, None)

    assert await arq_pool.get(wire.RESULT_PREFIX + "a") == b"first"
    assert ttl_ms - 1000 < await arq_pool.pttl(wire.RESULT_PREFIX + "a") <= ttl_ms
    assert (w.results_discarded, records_of(caplog, "worker.arqfork")) == (0, [])
    assert not await arq_pool.exists(in_progress("a"))
    await assert_finished(arq_pool, "a")


async def test_arq_alone_overwrites_a_stored_result(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """arq's own finish_job replaces the stored result: the last run wins, not the first."""
    w = make_worker()
    await job_in_flight(arq_pool, "a")
    await arq_pool.set(wire.RESULT_PREFIX + "a", b"first")
    await Worker.finish_job(w, "a", True, b"second", 60, False, None, None)
    assert await arq_pool.get(wire.RESULT_PREFIX + "a") == b"second"


async def test_finish_job_of_a_retried_job_requeues_it_later(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """A job to run again keeps its record, loses its lease, moves back in the queue and gets no result."""
    w = make_worker()
    await job_in_flight(arq_pool, "a")
    await w.finish_job("a", False, None, 60, False, 5000, None)

    assert await arq_pool.zscore(QUEUE, "a") == 5001
    assert await arq_pool.exists(wire.JOB_PREFIX + "a")
    assert not await arq_pool.exists(in_progress("a"), wire.RESULT_PREFIX + "a")
    assert w.results_discarded == 0


def arq_failure(exc: BaseException, job_id: str = "a") -> bytes:
    """The result record arq's run_job writes for a job it could not run, with our JSON codec."""
    data = serialize_result("answer_question", (), {}, 4, 1, False, exc, 2, 3, "ref", QUEUE, job_id, serializer=dumps)
    assert data is not None
    return data


async def test_finish_failed_job_never_overwrites_a_stored_result(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """A failure after a complete result keeps the result, and still clears the job's keys and lease."""
    w = make_worker()
    await job_in_flight(arq_pool, "a")
    await arq_pool.set(wire.RESULT_PREFIX + "a", b"first")
    await w.finish_failed_job("a", arq_failure(JobExecutionFailed("max 3 retries exceeded")))

    assert await arq_pool.get(wire.RESULT_PREFIX + "a") == b"first"
    assert not await arq_pool.exists(in_progress("a"))
    await assert_finished(arq_pool, "a")


async def test_finish_failed_job_stores_the_explained_reason(make_worker: MakeWorker, arq_pool: ArqRedis) -> None:
    """A failure with no result yet is stored, for keep_result, with the reason explain_failure gives."""
    w = make_worker(max_tries=3, result_ttl_s=600)
    await job_in_flight(arq_pool, "a")
    await w.finish_failed_job("a", arq_failure(JobExecutionFailed("max 3 retries exceeded")))

    stored = loads(await arq_pool.get(wire.RESULT_PREFIX + "a"))
    assert stored["r"]["message"].startswith("gave up after 3 tries")
    assert 599_000 < await arq_pool.pttl(wire.RESULT_PREFIX + "a") <= 600_000
    await assert_finished(arq_pool, "a")


# ------------------------------------------------------------------------------ _poll_iteration
class FakeClock:
    """Stands in for the ``time`` module in ``worker.leases``: ``monotonic()`` is what the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The outage budget's clock, moved by hand."""
    fake = FakeClock()
    monkeypatch.setattr(leases, "time", fake)
    return fake


class FakeSleep:
    """Stands in for ``asyncio.sleep``: records each delay asked for and returns at once; the call after
    ``limit`` of them is cancelled (the only way the lease renewer stops)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.limit = float("inf")

    async def __call__(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        if len(self.delays) > self.limit:
            raise asyncio.CancelledError
        return result


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> FakeSleep:
    """``asyncio.sleep`` for the code under test: no waiting, every delay recorded."""
    fake = FakeSleep()
    monkeypatch.setattr(asyncio, "sleep", fake)
    return fake


@pytest.fixture
def arq_polls(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Scripts arq's own _poll_iteration: each call takes the next item, raising it unless it is None."""
    script: list[BaseException | None] = []

    async def poll(self: Worker) -> None:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(Worker, "_poll_iteration", poll)
    return script


DOWN_ERRORS = [
    redis.exceptions.ConnectionError("Error 111 connecting"),
    ConnectionRefusedError(111, "Connection refused"),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
    TimeoutError(),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
]


@pytest.mark.parametrize("error", DOWN_ERRORS, ids=lambda e: f"{type(e).__module__}.{type(e).__name__}")
async def test_poll_waits_out_an_outage_with_a_growing_backoff_then_gives_up(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, arq_polls: list[Any], error: Exception
) -> None:
    """A REDIS_DOWN poll is swallowed and waited on, 0.05 s doubling each second up to 1 s, until redis_outage_s."""
    w = make_worker(redis_outage_s=10.0)
    start = clock.now
    for elapsed in [0, 1, 2, 3, 4, 5, 10]:
        clock.now = start + elapsed
        arq_polls.append(error)
        await w._poll_iteration()
    assert sleeps.delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]

    clock.now = start + 10.5
    arq_polls.append(error)
    with pytest.raises(type(error)) as raised:
        await w._poll_iteration()
    assert raised.value is error


async def test_a_successful_poll_restarts_the_outage_budget(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, arq_polls: list[Any]
) -> None:
    """After a poll that reaches Redis, the next outage gets the whole budget and the shortest back-off again."""
    w = make_worker(redis_outage_s=10.0)
    start, down = clock.now, redis.exceptions.ConnectionError("down")
    for elapsed, outcome in [(0, down), (8, down), (9, None), (20, down), (29, down)]:
        clock.now = start + elapsed
        arq_polls.append(outcome)
        await w._poll_iteration()
    assert sleeps.delays == [0.05, 1.0, 0.05, 1.0]

    clock.now = start + 30.5
    arq_polls.append(down)
    with pytest.raises(redis.exceptions.ConnectionError):
        await w._poll_iteration()


async def test_poll_lets_any_other_error_through_at_once(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, arq_polls: list[Any]
) -> None:
    """An error that is not Redis being unreachable (here a bad reply) is not an outage: no wait, no budget."""
    w = make_worker()
    arq_polls.append(redis.exceptions.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.exceptions.ResponseError):
        await w._poll_iteration()
    assert (sleeps.delays, w.outage.down_since) == ([], None)


# ------------------------------------------------------------------------------ stop
@pytest.mark.parametrize("grace", [False, True], ids=["handle_sig", "handle_sig_wait_for_completion"])
async def test_after_a_stop_request_the_poll_loop_ends_without_polling(
    make_worker: MakeWorker, arq_pool: ArqRedis, arq_polls: list[Any], grace: bool
) -> None:
    """Both of arq's signal handlers end in on_stop, after which _poll_iteration raises CancelledError unpolled."""
    w = make_worker(options={"job_completion_wait": 0.001})
    await queue_jobs(arq_pool, "a")
    await w.start_jobs([b"a"])
    running = w.tasks["a"]

    if grace:
        before = asyncio.all_tasks()
        w.handle_sig_wait_for_completion(signal.SIGTERM)
        assert not w.allow_pick_jobs
        (waiter,) = asyncio.all_tasks() - before
        await waiter  # arq's _wait_for_tasks_to_complete: the grace period runs out, then on_stop
    else:
        w.handle_sig(signal.SIGTERM)

    assert w.stopping
    await asyncio.gather(running, return_exceptions=True)
    assert running.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await w._poll_iteration()  # arq_polls is empty: a poll would fail with IndexError


# ------------------------------------------------------------------------------ leases
class PipelineFaults:
    """Pipeline executions, counted, each failing with the next scripted fault (None: it runs)."""

    def __init__(self) -> None:
        self.script: list[Exception | None] = []
        self.executions = 0


@pytest.fixture
def pipeline_faults(monkeypatch: pytest.MonkeyPatch) -> PipelineFaults:
    """Faults injected into every Redis pipeline's EXEC."""
    faults = PipelineFaults()
    real_execute = redis.asyncio.client.Pipeline.execute

    async def execute(pipe: redis.asyncio.client.Pipeline, raise_on_error: bool = True) -> Any:
        faults.executions += 1
        fault = faults.script.pop(0) if faults.script else None
        if fault is not None:
            raise fault
        return await real_execute(pipe, raise_on_error)

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", execute)
    return faults


async def test_the_renewer_pushes_back_every_running_lease_every_third_of_it(
    arq_pool: ArqRedis, sleeps: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    """Each lease/3 the in-progress key of every running job is set to expire in lease_s; a gone key stays gone."""
    await arq_pool.set(in_progress("a"), b"1", px=60_000)
    await arq_pool.set(in_progress("b"), b"1", px=100)
    sleeps.limit = 2
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(arq_pool, lambda: ["a", "b", "gone"], 3.0)

    assert sleeps.delays == [1.0, 1.0, 1.0]
    for job_id in "ab":
        assert 2000 < await arq_pool.pttl(in_progress(job_id)) <= 3000
    assert not await arq_pool.exists(in_progress("gone"))
    assert records_of(caplog, "worker.leases") == []


async def test_the_renewer_keeps_renewing_after_redis_and_other_errors(
    arq_pool: ArqRedis, sleeps: FakeSleep, pipeline_faults: PipelineFaults, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that fails (Redis down, or any other error) is logged and the next tick renews again."""
    await arq_pool.set(in_progress("a"), b"1", px=60_000)
    pipeline_faults.script += [redis.exceptions.ConnectionError("down"), redis.exceptions.ResponseError("OOM")]
    sleeps.limit = 3
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(arq_pool, lambda: ["a"], 3.0)

    assert pipeline_faults.executions == 3
    assert 2000 < await arq_pool.pttl(in_progress("a")) <= 3000
    logged = [(r.levelname, r.exc_info is not None) for r in records_of(caplog, "worker.leases")]
    assert logged == [("WARNING", False), ("ERROR", True)]


async def test_the_renewer_leaves_redis_alone_while_nothing_runs(
    arq_pool: ArqRedis, sleeps: FakeSleep, pipeline_faults: PipelineFaults
) -> None:
    """With no running job, ticks go by and nothing is sent to Redis."""
    sleeps.limit = 3
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(arq_pool, lambda: [], 3.0)
    assert (len(sleeps.delays), pipeline_faults.executions) == (4, 0)


# ------------------------------------------------------------------------------ explain_failure
@pytest.mark.parametrize(
    ("exc", "reworded"),
    [
        (JobExecutionFailed("max 3 retries exceeded"), "gave up after 5 tries: each try ended without a result"),
        (DeserializationError("unable to deserialize job"), "the job stored in Redis is not a JSON job"),
        (JobExecutionFailed("job expired"), "the job's payload had gone from Redis"),
    ],
)
def test_explain_failure_rewords_arqs_reasons(exc: Exception, reworded: str) -> None:
    """arq's three reasons for not running a job become a message a caller can act on; the rest is kept."""
    data = arq_failure(exc)
    explained = explain_failure(data, max_tries=5)
    assert explained is not None
    before, after = loads(data), loads(explained)
    assert after["r"]["error"] == type(exc).__name__
    assert after["r"]["message"].startswith(reworded)
    assert {k: v for k, v in after.items() if k != "r"} == {k: v for k, v in before.items() if k != "r"}


@pytest.mark.parametrize(
    "data",
    [
        arq_failure(ValueError("boom")),
        arq_failure(JobExecutionFailed("function 'nope' not found")),
        dumps({"s": True, "r": {"answer": "42"}}),
        b"\x80\x04not json",
        b"[1, 2]",
        b'{"r": "a string"}',
        b"null",
    ],
    ids=["other-error", "other-arq-reason", "success", "pickle", "list", "odd-reason", "null"],
)
def test_explain_failure_leaves_anything_else_as_it_is(data: bytes) -> None:
    """Any other result, and bytes that are not an arq result in JSON, are returned unchanged."""
    assert explain_failure(data, max_tries=5) is data


def test_explain_failure_of_no_result_is_none() -> None:
    """No result (arq could not serialize one) stays no result."""
    assert explain_failure(None, max_tries=5) is None


# --------------------------------------------------------------------------------------------------
# close: the shut-down always runs
# --------------------------------------------------------------------------------------------------
async def test_close_runs_the_shutdown_even_with_redis_down_and_a_failed_job(
    make_worker: MakeWorker, arq_pool: ArqRedis, fake_server: fakeredis.FakeServer
) -> None:
    """Redis down and a job task that ended in an error: close() still calls on_shutdown and returns."""
    shut_down: list[bool] = []

    async def on_shutdown(ctx: object) -> None:
        shut_down.append(True)

    w = make_worker()
    w.on_shutdown = on_shutdown
    w.run_job = failed_at_finish  # type: ignore[method-assign]
    await queue_jobs(arq_pool, "a")
    await w.start_jobs([b"a"])
    fake_server.connected = False
    await w.close()
    assert shut_down == [True] and w._pool is None


async def test_arq_alone_skips_the_shutdown_when_redis_is_down(
    make_arq_worker: Callable[..., Worker], fake_server: fakeredis.FakeServer
) -> None:
    """What the override changes: arq's own close() raises at its health-key delete and never shuts down."""
    shut_down: list[bool] = []

    async def on_shutdown(ctx: object) -> None:
        shut_down.append(True)

    w = make_arq_worker()
    w.on_shutdown = on_shutdown
    fake_server.connected = False
    with pytest.raises(redis.exceptions.ConnectionError):
        await w.close()
    assert shut_down == []
