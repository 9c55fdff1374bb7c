"""Unit tests of ``worker.arqfork.AgentQWorker`` and ``worker.leases`` on fakeredis, faults injected:
ending a job, the poll loop's outage handling, stopping, leases, failure reasons, closing.

Each override is driven directly (arq's ``main`` is never run); where it helps, arq's own method
runs beside it on the same fake Redis to show the behaviour the override changes. The pickup (the
claim, the doorbell) is in ``test_pickup.py``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis.exceptions
from arq.connections import ArqRedis
from arq.jobs import DeserializationError, serialize_result
from arq.worker import JobExecutionFailed, Worker
from redis.commands.core import AsyncScript

from agentq import wire
from agentq.contract import SourceOutcome, dumps, loads
from agentq.keys import Keys
from producer.client import parse_events
from tests.arqfork.conftest import QUEUE, MakeWorker, in_progress, queue_jobs
from worker import leases
from worker.arqfork import AgentQWorker, Next, explain_failure
from worker.progress import ProgressPublisher


def records_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    """The log records one module wrote."""
    return [r for r in caplog.records if r.name == logger]


# ------------------------------------------------------------------------------ finish_job, finish_failed_job
async def job_in_flight(redis: ArqRedis, job_id: str) -> None:
    """Every mark arq keeps of a running job: record, tries, lease, queue entry."""
    await redis.set(wire.JOB_PREFIX + job_id, b"{}")
    await redis.set(wire.RETRY_PREFIX + job_id, 1)
    await redis.set(in_progress(job_id), b"1", px=60_000)
    await redis.zadd(QUEUE, {job_id: 1})


async def assert_finished(redis: ArqRedis, job_id: str) -> None:
    """The job's record, tries and queue entry are gone."""
    assert await redis.exists(wire.JOB_PREFIX + job_id, wire.RETRY_PREFIX + job_id) == 0
    assert await redis.zscore(QUEUE, job_id) is None


def progress_events(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[str]:
    """The event kinds of a progress log, entry after entry."""
    return [e.event for _, fields in entries for e in parse_events(fields)]


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
    """A job to run again keeps its record, loses its lease, gets its queue score back (plus a Retry's
    deferral), rings the bell, logs "requeued" and gets no result."""
    w = make_worker()
    await job_in_flight(arq_pool, "a")
    await arq_pool.zadd(QUEUE, {"a": 9_999_999_999_999})  # its lease score
    w._scores["a"] = 1  # its score before the claim
    await w.finish_job("a", False, None, 60, False, 5000, None)

    assert await arq_pool.zscore(QUEUE, "a") == 5001
    assert await arq_pool.exists(wire.JOB_PREFIX + "a")
    assert not await arq_pool.exists(in_progress("a"), wire.RESULT_PREFIX + "a")
    assert await arq_pool.zrange(Keys("agentq").bell(QUEUE), 0, -1) == [b"ring"]
    assert progress_events(await arq_pool.xrange(Keys("agentq").progress("a"))) == ["requeued"]
    assert w.results_discarded == 0


@pytest.mark.parametrize("first", [True, False], ids=["stored", "discarded"])
async def test_finish_job_ends_the_progress_log_clears_the_marker_and_publishes_in_one_step(
    make_worker: MakeWorker, arq_pool: ArqRedis, first: bool
) -> None:
    """The events not yet written and job_done go into the log as one entry; only the run whose result is
    kept deletes the dedup marker and publishes the result itself (else "1")."""
    keys = Keys("agentq")
    w = make_worker(progress_ttl_s=60)
    await job_in_flight(arq_pool, "a")
    if not first:
        await arq_pool.set(wire.RESULT_PREFIX + "a", b"earlier")
    await arq_pool.set(keys.inflight("f" * 64), b"a")
    publisher = ProgressPublisher(arq_pool, keys, "a", 60, "f" * 64)
    for kind in ("fetch_start", "fetch_end", "inference_start", "done"):
        publisher.on_event(kind, SourceOutcome(name="weather", timeout_s=1.0))
    pubsub = arq_pool.pubsub()
    await pubsub.subscribe(keys.done_channel("a"))
    w._publishers["a"] = publisher
    await w.finish_job("a", True, b"this run", 60, False, None, None)

    ((_, fields),) = await arq_pool.xrange(keys.progress("a"))  # one entry: one round trip
    assert progress_events([(b"", fields)]) == ["fetch_start", "fetch_end", "inference_start", "done", "job_done"]
    assert 0 < await arq_pool.ttl(keys.progress("a")) <= 60
    assert (await arq_pool.exists(keys.inflight("f" * 64))) == (not first)
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
    message = message or await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
    assert message is not None and message["data"] == (b"this run" if first else b"1")
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_finish_job_clears_an_abort_request_when_aborts_are_honoured(
    make_worker: MakeWorker, arq_pool: ArqRedis
) -> None:
    """With arq's aborts on (allow_abort_jobs), a finished job's abort request goes too, as in arq."""
    w = make_worker(options={"allow_abort_jobs": True})
    await job_in_flight(arq_pool, "a")
    await arq_pool.zadd(wire.ABORT_SET, {"a": 1})
    await w.finish_job("a", True, b"done", 60, False, None, None)
    assert await arq_pool.zscore(wire.ABORT_SET, "a") is None
    await assert_finished(arq_pool, "a")


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


REAL_PICKUP = AgentQWorker._pickup


@pytest.fixture
def pickups(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Scripts the worker's pickup: each call takes the next item, raising it unless it is None
    (then the loop goes round again at once)."""
    script: list[BaseException | None] = []

    async def pickup(self: AgentQWorker) -> tuple[None, Next]:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome
        return None, Next.MORE

    monkeypatch.setattr(AgentQWorker, "_pickup", pickup)
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
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, pickups: list[Any], error: Exception
) -> None:
    """A REDIS_DOWN poll is swallowed and waited on, 0.05 s doubling each second up to 1 s, until redis_outage_s."""
    w = make_worker(redis_outage_s=10.0)
    start = clock.now
    for elapsed in [0, 1, 2, 3, 4, 5, 10]:
        clock.now = start + elapsed
        pickups.append(error)
        await w._poll_iteration()
    assert sleeps.delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]

    clock.now = start + 10.5
    pickups.append(error)
    with pytest.raises(type(error)) as raised:
        await w._poll_iteration()
    assert raised.value is error


async def test_a_successful_poll_restarts_the_outage_budget(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, pickups: list[Any]
) -> None:
    """After a poll that reaches Redis, the next outage gets the whole budget and the shortest back-off again."""
    w = make_worker(redis_outage_s=10.0)
    start, down = clock.now, redis.exceptions.ConnectionError("down")
    for elapsed, outcome in [(0, down), (8, down), (9, None), (20, down), (29, down)]:
        clock.now = start + elapsed
        pickups.append(outcome)
        await w._poll_iteration()
    assert sleeps.delays == [0.05, 1.0, 0.05, 1.0]

    clock.now = start + 30.5
    pickups.append(down)
    with pytest.raises(redis.exceptions.ConnectionError):
        await w._poll_iteration()


async def test_poll_lets_any_other_error_through_at_once(
    make_worker: MakeWorker, clock: FakeClock, sleeps: FakeSleep, pickups: list[Any]
) -> None:
    """An error that is not Redis being unreachable (here a bad reply) is not an outage: no wait, no budget."""
    w = make_worker()
    pickups.append(redis.exceptions.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.exceptions.ResponseError):
        await w._poll_iteration()
    assert (sleeps.delays, w.outage.down_since) == ([], None)


# ------------------------------------------------------------------------------ stop
@pytest.mark.parametrize("grace", [False, True], ids=["handle_sig", "handle_sig_wait_for_completion"])
async def test_after_a_stop_request_the_poll_loop_ends_without_polling(
    make_worker: MakeWorker, arq_pool: ArqRedis, pickups: list[Any], grace: bool
) -> None:
    """Both of arq's signal handlers end in on_stop, after which _poll_iteration raises CancelledError unpolled."""
    w = make_worker(options={"job_completion_wait": 0.001})
    await queue_jobs(arq_pool, "a")
    await REAL_PICKUP(w)  # the fixture scripts the loop's pickup
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
        await w._poll_iteration()  # pickups is empty: a pickup would fail with IndexError


# ------------------------------------------------------------------------------ leases
class ScriptFaults:
    """Script calls, counted, each failing with the next scripted fault (None: it runs)."""

    def __init__(self) -> None:
        self.script: list[Exception | None] = []
        self.calls = 0


@pytest.fixture
def script_faults(monkeypatch: pytest.MonkeyPatch) -> ScriptFaults:
    """Faults injected into every Lua script call."""
    faults = ScriptFaults()
    real_call = AsyncScript.__call__

    async def call(script: AsyncScript, *args: Any, **kwargs: Any) -> Any:
        faults.calls += 1
        fault = faults.script.pop(0) if faults.script else None
        if fault is not None:
            raise fault
        return await real_call(script, *args, **kwargs)

    monkeypatch.setattr(AsyncScript, "__call__", call)
    return faults


async def test_the_renewer_pushes_back_every_running_lease_every_third_of_it(
    arq_pool: ArqRedis, sleeps: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    """Each lease/3 the in-progress key and the queue score of every running job are set to the lease's end;
    a gone key stays gone and its job's score is left alone."""
    await arq_pool.set(in_progress("a"), b"1", px=60_000)
    await arq_pool.set(in_progress("b"), b"1", px=1500)
    await arq_pool.zadd(QUEUE, {"a": 1, "b": 1, "gone": 1})
    sleeps.limit = 2
    before_ms = time.time() * 1000
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(arq_pool, QUEUE, lambda: ["a", "b", "gone"], 3.0)

    assert sleeps.delays == [1.0, 1.0, 1.0]
    now_ms = time.time() * 1000
    for job_id in "ab":
        # Renewed at some instant between before_ms and now_ms, to that instant + the lease (3 s):
        # bounds that hold however slowly a loaded machine runs the test.
        assert 0 < await arq_pool.pttl(in_progress(job_id)) <= 3000
        assert before_ms + 3000 - 1 <= await arq_pool.zscore(QUEUE, job_id) <= now_ms + 3000
    assert not await arq_pool.exists(in_progress("gone"))
    assert await arq_pool.zscore(QUEUE, "gone") == 1
    assert records_of(caplog, "worker.leases") == []


async def test_the_renewer_keeps_renewing_after_redis_and_other_errors(
    arq_pool: ArqRedis, sleeps: FakeSleep, script_faults: ScriptFaults, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that fails (Redis down, or any other error) is logged and the next tick renews again."""
    await arq_pool.set(in_progress("a"), b"1", px=60_000)
    script_faults.script += [redis.exceptions.ConnectionError("down"), redis.exceptions.ResponseError("OOM")]
    sleeps.limit = 3
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(arq_pool, QUEUE, lambda: ["a"], 3.0)

    assert script_faults.calls == 3
    assert 2000 < await arq_pool.pttl(in_progress("a")) <= 3000
    logged = [(r.levelname, r.exc_info is not None) for r in records_of(caplog, "worker.leases")]
    assert logged == [("WARNING", False), ("ERROR", True)]


async def test_the_renewer_leaves_redis_alone_while_nothing_runs(
    arq_pool: ArqRedis, sleeps: FakeSleep, script_faults: ScriptFaults
) -> None:
    """With no running job, ticks go by and nothing is sent to Redis."""
    sleeps.limit = 3
    with pytest.raises(asyncio.CancelledError):
        await leases.renew_leases_forever(arq_pool, QUEUE, lambda: [], 3.0)
    assert (len(sleeps.delays), script_faults.calls) == (4, 0)


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
async def failed_at_finish(job_id: str, score: int) -> None:
    """Stands in for ``run_job``: the job ran, but storing its outcome met a Redis outage."""
    raise redis.exceptions.ConnectionError("Connection reset by peer")


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
    await w._pickup()
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
