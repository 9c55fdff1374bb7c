"""Deadline-aware admission: the cost model, the pool simulation and the decision; end to end, a
burst on one worker that admission keeps within its deadlines and a fixed max_jobs does not."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from subprocess import Popen

import pytest

from agentq.contract import JobResult, SourceOutcome
from agentq.protocol.records import JobRecord, RecordError
from agentq.settings import Settings
from agentq.sources import REFERENCE_SOURCES
from producer.client import Client
from worker.engine.admission import Admission, Estimate, Shape
from worker.pool.executor import InferencePool, PoolTask

StartWorkers = Callable[..., list[Popen[bytes]]]
REFERENCE = Shape(REFERENCE_SOURCES, "bag_of_words", 2.0)
FETCH_S = {"weather": 0.4, "news": 0.3, "knowledge_base": 0.6}


class FakePool:
    """Stands in for an ``InferencePool``: its size and its unfinished tasks."""

    def __init__(self, size: int) -> None:
        self.info = type("Info", (), {"size": size})()
        self.tasks: list[PoolTask] = []
        self.on_task_done: Callable[[], None] | None = None


def exactly(seconds: float) -> Estimate:
    """A duration measured so often that it has no spread left."""
    estimate = Estimate(seconds)
    estimate.var = 0.0
    return estimate


def taught(pool_size: int = 2, inference_s: float = 0.4, margin: float = 0.1) -> Admission:
    """An admission that knows the reference sources exactly: FETCH_S, and ``inference_s`` each."""
    admission = Admission(Settings(_env_file=None, admission_margin=margin))  # type: ignore[call-arg]
    admission.attach(FakePool(pool_size))  # type: ignore[arg-type]
    for name, fetch in FETCH_S.items():
        admission.costs.fetch[name] = exactly(fetch)
        admission.costs.inference[("bag_of_words", name)] = exactly(inference_s)
    return admission


def test_the_cost_model_learns_from_good_fetches_and_every_inference() -> None:
    """A failed fetch teaches nothing about a good one's time; durations are planned at their running mean
    plus one standard deviation."""
    admission = Admission(Settings(_env_file=None))  # type: ignore[call-arg]
    admission.costs.observe("bag_of_words", SourceOutcome(name="news", data="t", fetch_s=0.3, inference_s=0.4))
    admission.costs.observe("bag_of_words", SourceOutcome(name="news", status="error", fetch_s=0.001))
    assert admission.costs.fetch_s("news") == pytest.approx(0.3 * 1.25)  # measured once: a 25 % spread assumed
    admission.costs.observe("bag_of_words", SourceOutcome(name="news", data="t", fetch_s=0.3, inference_s=0.8))
    mean, var = 0.4 * 0.7 + 0.8 * 0.3, 0.7 * ((0.25 * 0.4) ** 2 + 0.3 * 0.4**2)
    assert admission.costs.inference_s("bag_of_words", "news") == pytest.approx(mean + var**0.5)
    assert admission.costs.inference_s("other_analysis", "news") is not None  # another analysis: the source's
    assert admission.costs.inference_s("bag_of_words", "unknown") is None


def test_an_idle_worker_admits_anything_a_busy_one_nothing_it_cannot_cost() -> None:
    """Running nothing, any job goes (else one too big for any worker would wait for ever); busy, a job
    with a source never measured does not."""
    admission = Admission(Settings(_env_file=None))  # type: ignore[call-arg]
    admission.attach(FakePool(2))  # type: ignore[arg-type]
    assert admission.fits(Shape(("never_seen",), "bag_of_words", 0.001))
    admission.admitted("running", REFERENCE)
    assert not admission.fits(Shape(("never_seen",), "bag_of_words", 30.0))


def test_jobs_are_admitted_while_the_pool_can_keep_every_deadline() -> None:
    """Pool of 2, inference 0.4 s, fetches 0.3-0.6 s, deadline 2 s less 10 %: two reference jobs end at
    ~1.5 s together, a third would push them to ~2.1 s."""
    admission = taught()
    assert admission.fits(REFERENCE)
    admission.admitted("one", REFERENCE)
    assert admission.fits(REFERENCE)
    admission.admitted("two", REFERENCE)
    assert not admission.fits(REFERENCE)
    assert admission.fits(Shape(REFERENCE_SOURCES, "bag_of_words", 5.0)) is False  # it would delay one and two
    admission.ended("one")
    assert admission.fits(REFERENCE)


def test_a_short_job_far_from_its_deadline_is_admitted_without_a_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """When even the bound "latest ready + all work / pool size + longest task" meets every deadline, no
    simulation runs; near a deadline the simulation decides."""
    admission = taught()
    for i in range(8):
        admission.admitted(f"long-deadline {i}", Shape(REFERENCE_SOURCES, "bag_of_words", 30.0))

    def no_simulation(*args: object) -> None:
        raise AssertionError("simulated")

    monkeypatch.setattr(admission, "_finish_times", no_simulation)
    assert admission.fits(Shape(("news",), "bag_of_words", 30.0))
    with pytest.raises(AssertionError, match="simulated"):
        admission.fits(REFERENCE)  # 2 s: the bound says nothing, the simulation must


def test_work_already_in_the_pool_counts_even_when_its_job_has_gone() -> None:
    """Inference abandoned by a job's deadline still holds its pool worker: a job that would wait for it
    past its own deadline is refused."""
    admission = taught()
    pool = admission.pool
    assert pool is not None
    now = time.monotonic()
    admission.costs.inference[("bag_of_words", "slow")] = exactly(1.9)
    pool.tasks += [PoolTask(("gone", "slow"), now, now), PoolTask(("gone", "slow"), now, now)]
    admission.admitted("gone-but-not-forgotten", Shape(("news",), "bag_of_words", 30.0))
    admission.ended("gone-but-not-forgotten")  # its job ended; its pool tasks have not
    assert not admission.idle() and not admission.fits(REFERENCE)
    assert admission.fits(Shape(REFERENCE_SOURCES, "bag_of_words", 4.0))


def test_a_source_that_reaches_the_pool_or_fails_is_no_longer_to_come() -> None:
    """The fan-out's events move a source out of the job's plan: into the pool, or out for good."""
    admission = taught()
    admission.admitted("j", REFERENCE)
    admission.on_event("j", "bag_of_words", "inference_start", SourceOutcome(name="news"))
    admission.on_event("j", "bag_of_words", "fetch_end", SourceOutcome(name="weather", error="boom"))
    admission.on_event("j", "bag_of_words", "fetch_end", SourceOutcome(name="knowledge_base"))
    assert admission.plans["j"].to_come == {"knowledge_base"}


def test_jobs_that_take_longer_than_simulated_teach_a_slowdown_that_stretches_every_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that really took twice its simulated time raises the slowdown; estimates stretch with it
    and fewer jobs fit. A job whose source failed teaches nothing."""
    admission = taught()
    clock = [1000.0]
    monkeypatch.setattr("worker.engine.admission.time.monotonic", lambda: clock[0])
    assert admission.fits(REFERENCE)
    admission.admitted("one", REFERENCE)
    assert admission.fits(REFERENCE)
    admission.admitted("two", REFERENCE)
    predicted = admission.plans["one"].predicted_end
    assert predicted is not None and predicted > 1000.0
    for job_id in ("one", "two"):
        admission.plans[job_id].to_come.clear()
    clock[0] = 1000.0 + 2 * (predicted - 1000.0)
    admission.ended("one")
    assert admission.slowdown == pytest.approx(0.7 + 0.3 * 2.0)
    admission.plans["two"].clean = False
    admission.ended("two")
    assert admission.slowdown == pytest.approx(1.3)
    admission.admitted("three", REFERENCE)
    assert not admission.fits(REFERENCE)  # two at once fitted at a slowdown of 1, not at 1.3


def test_the_shape_of_a_job_comes_from_its_record_with_the_workers_defaults() -> None:
    """Sources, analysis and deadline as the job will use them; a record that is not a job has no shape."""
    admission = Admission(Settings(_env_file=None, deadline_s=12.0))  # type: ignore[call-arg]
    record = JobRecord("answer_question", ({"question": "q", "sources": ["news"]},), {}, 1)
    assert admission.shape_of(record, {}) == Shape(("news",), "bag_of_words", 12.0)
    record = JobRecord("answer_question", ({"question": "q", "deadline_s": 3, "analysis": "other"},), {}, 1)
    assert admission.shape_of(record, {}) == Shape((), "other", 3.0)
    assert admission.shape_of(RecordError("not json"), {}) is None and admission.shape_of(None, {}) is None
    assert admission.shape_of(JobRecord("answer_question", ("not a dict",), {}, 1), {}) is None


async def test_the_pool_knows_when_its_tasks_started_and_ended() -> None:
    """Tasks start in submission order, a pool worker at a time; each end starts the oldest waiting one
    and calls on_task_done."""
    from worker.pool.executor import create_pool

    pool: InferencePool = create_pool("thread", 1)
    ended: list[int] = []
    pool.on_task_done = lambda: ended.append(len(pool.tasks))
    running, release = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        release.wait(30)

    try:
        first = asyncio.ensure_future(pool.run(hold, label=("a", "news")))
        second = asyncio.ensure_future(pool.run(time.sleep, 0.01, label=("b", "news")))
        await asyncio.to_thread(running.wait, 30)  # the first holds the pool's one worker
        assert [t.started is not None for t in pool.tasks] == [True, False]
        release.set()
        await first
        await asyncio.sleep(0)
        assert len(pool.tasks) <= 1 and all(t.started is not None for t in pool.tasks)
        await second
        await asyncio.sleep(0.01)
    finally:
        pool.shutdown()
    assert pool.tasks == [] and ended == [1, 0]


def most_at_once(results: list[JobResult]) -> int:
    """The most jobs that ran at the same moment, from their start and end times."""
    edges = sorted(
        (moment, step)
        for r in results
        if r.timing is not None
        for moment, step in ((r.timing.started_at, 1), (r.timing.finished_at, -1))
    )
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


#: Jobs each worker runs alone first: the cost model's first samples, and the deadline's base.
TEACHING_RUNS = 4
#: The burst's deadline, in times a job's time alone: about a third of the burst fits at once.
DEADLINE_FACTOR = 2.5


@pytest.mark.e2e
@pytest.mark.interpreter
@pytest.mark.slow
async def test_a_burst_waits_in_the_queue_instead_of_starting_all_at_once(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """12 reference jobs at once on a worker with room for all 12 (max_jobs 12, pool of 2), each with a
    deadline of 2.5 times its time alone. Without admission all 12 start together and their 36
    inferences queue for 2 cores; with admission the rest of the burst waits in the queue while as many
    run as can meet the deadline (4 to 6 here), and at least as many end ok as without it.

    The worker first runs TEACHING_RUNS jobs one after another, and the deadline comes from their
    median: the same inference took 0.12 to 0.22 s from one fresh pool to the next, and a deadline
    from one such sample (four times it, as this test once had) let 8 or, now and then, 11 of the
    12 fit, against a bound of 10."""
    scale = {"AGENTQ_TIME_SCALE": "0.1", "AGENTQ_INFERENCE_UNITS": json.dumps(1500), "AGENTQ_MAX_JOBS": "12"}
    outcomes: dict[bool, list[JobResult]] = {}
    figures: list[str] = []
    for admission in (False, True):
        (worker,) = start_worker_processes(1, AGENTQ_ADMISSION=json.dumps(admission), **scale)
        alone = []
        for i in range(TEACHING_RUNS):
            taught = await client.ask(
                client.validate(f"teach me {admission} {i}", sources=list(REFERENCE_SOURCES)), timeout=60
            )
            assert taught.status == "ok" and taught.timing is not None
            alone.append(taught.timing.total_s)
        deadline = round(DEADLINE_FACTOR * statistics.median(alone), 2)
        burst = [
            client.validate(f"burst {admission} {i}", sources=list(REFERENCE_SOURCES), deadline_s=deadline)
            for i in range(12)
        ]
        outcomes[admission] = list(await asyncio.gather(*(client.ask(r, timeout=180) for r in burst)))
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)  # the event loop keeps serving the client meanwhile
        statuses = sorted(r.status for r in outcomes[admission])
        figures.append(
            f"admission {admission}: deadline {deadline} s, at most {most_at_once(outcomes[admission])} at once, "
            f"{statuses.count('ok')} ok of 12"
        )
    print("\nfigure: burst of 12 on one worker: " + "; ".join(figures))

    assert most_at_once(outcomes[False]) >= 11
    # Admission costs no goodput. How much it gains depends on the cores being free (at least 8 ok of
    # 12 on a quiet machine; 6, then 4, while two other suites shared the 2 cores), so a floor on it
    # belongs to the benchmark (`make bench`, section 8), not to a test.
    ok = {admission: sum(r.status == "ok" for r in results) for admission, results in outcomes.items()}
    assert ok[True] >= ok[False], ok
    # 4 to 6 fit in the deadline at once, not 12. More may start only when the pool ran faster than
    # in the teaching runs (a fresh process pool's first inferences are the slow ones): then every
    # job meets its deadline. Two CI runs on 3.11 saw 9 at once with 12 ok of 12.
    at_once = most_at_once(outcomes[True])
    assert at_once <= 8 or ok[True] == 12, (at_once, ok)
