"""Deadline-aware admission: a worker takes a job only if it can finish it within its deadline.

A fixed ``max_jobs`` is wrong both ways: four reference jobs on a pool of two all miss a tight
deadline together, while one at a time leaves the cores idle during every fetch. Instead, before a
claimed job starts, the worker simulates its own near future:

- its pool (``worker.pool.executor``): the tasks running (since when), those waiting, first in first out;
- its running jobs: each source whose inference is still to come, due when its fetch should end;
- the candidate: each of its sources, fetched from now, then inferred.

Durations come from this worker's own measurements (:class:`CostModel`): of each source's fetch time
and of each (analysis, source) inference's wall time in the pool, an exponentially weighted mean
plus one standard deviation (when other work shares the cores, the same inference can take twice as
long from one minute to the next). What the model leaves out (the event loop starved of CPU by the
pool, other processes on the same cores, the job's own overhead) is learnt too: each job that ends
compares the time it really took from the worker's last simulation of it with the time that
simulation gave it, and a running mean of that ratio (the *slowdown*) stretches every estimate; a
job still running past its simulated end counts at once. The job is admitted if it finishes within
``deadline × (1 - admission_margin)`` and no running job is pushed past its own; else it goes back
to the queue (``lua/release.lua``), where another worker or this one later takes it and where
the queue's length shows the backlog to autoscalers. A worker running nothing admits any job (else a
job too big for any worker would wait for ever), and with no measurement yet for a source it admits
only when idle: the first job teaches it the costs.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from agentq.protocol.records import JobRecord, RecordError
from agentq.sources import default_sources

if TYPE_CHECKING:
    from agentq.contract import SourceOutcome
    from agentq.settings import Settings
    from agentq.sources import Source
    from worker.job.fanout import FanOutEvent
    from worker.pool.executor import InferencePool

log = logging.getLogger(__name__)
K = TypeVar("K")

#: Weight of the newest measurement in the running means.
ALPHA = 0.3
#: A running task past its expected end is taken to need this much longer.
OVERDUE_S = 0.01
#: The standard deviation a duration measured once is assumed to have, as a share of it.
PRIOR_SD = 0.25
#: Bounds of the learnt slowdown (real job time / simulated job time).
SLOWDOWN_RANGE = (0.8, 3.0)
#: A simulation that left a job less than this to run says too little about the model to learn from.
SHORTEST_LESSON_S = 0.05


@dataclass(frozen=True)
class Shape:
    """What admission needs to know of a job: its sources, its analysis, its deadline."""

    sources: tuple[str, ...]
    analysis: str
    deadline_s: float


@dataclass
class Plan:
    """A running job: when it started, which of its sources have yet to reach the pool, and when the
    latest simulation said it would end."""

    shape: Shape
    t0: float
    to_come: set[str] = field(default_factory=set)
    predicted_at: float = 0.0
    predicted_end: float | None = None
    clean: bool = True
    """No source failed: its real time says how good the simulation was."""


class Estimate:
    """An exponentially weighted mean and variance of one duration."""

    __slots__ = ("mean", "var")

    def __init__(self, first: float) -> None:
        # Until more samples say otherwise, one is taken to be PRIOR_SD of its mean off either way.
        self.mean, self.var = first, (PRIOR_SD * first) ** 2

    def add(self, x: float) -> None:
        delta = x - self.mean
        self.mean += ALPHA * delta
        self.var = (1 - ALPHA) * (self.var + ALPHA * delta * delta)

    @property
    def value(self) -> float:
        """The duration to plan with: the mean plus one standard deviation."""
        return self.mean + math.sqrt(self.var)


class CostModel:
    """Fetch time per source and inference wall time per (analysis, source), as :class:`Estimate` s."""

    def __init__(self) -> None:
        self.fetch: dict[str, Estimate] = {}
        self.inference: dict[tuple[str, str], Estimate] = {}

    def observe(self, analysis: str, outcome: SourceOutcome) -> None:
        """Learn from a source's finished outcome (a failed fetch says nothing of a good one's time)."""
        if outcome.fetch_s is not None and outcome.data is not None:
            _add(self.fetch, outcome.name, outcome.fetch_s)
        if outcome.inference_s is not None:
            _add(self.inference, (analysis, outcome.name), outcome.inference_s)

    def fetch_s(self, source: str) -> float | None:
        """The fetch time to plan with, or None when it was never measured."""
        found = self.fetch.get(source)
        return None if found is None else found.value

    def inference_s(self, analysis: str | None, source: str) -> float | None:
        """The inference wall time to plan with, or None when it was never measured."""
        if analysis is not None and (analysis, source) in self.inference:
            return self.inference[(analysis, source)].value
        known = [e.value for (_, s), e in self.inference.items() if s == source]
        return max(known) if known else None


def _add(estimates: dict[K, Estimate], key: K, x: float) -> None:
    if key in estimates:
        estimates[key].add(x)
    else:
        estimates[key] = Estimate(x)


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (1 - ALPHA) * old + ALPHA * new


def _lateness(plan: Plan, now: float) -> float | None:
    """How much longer the job has taken since its last simulation than that simulation said."""
    if plan.predicted_end is None or plan.predicted_end - plan.predicted_at < SHORTEST_LESSON_S:
        return None
    return (now - plan.predicted_at) / (plan.predicted_end - plan.predicted_at)


class Admission:
    """This worker's running jobs, its pool, and the decision to take one more."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.margin = settings.admission_margin
        self.costs = CostModel()
        self.plans: dict[str, Plan] = {}
        self.pool: InferencePool | None = None
        self.refused = 0
        self.slowdown = 1.0
        self._predicted: dict[str, float] = {}  # the ends of the last simulation that admitted a job
        self.on_change: Callable[[], None] | None = None
        """Called when room may have come free: a pool task or a job ended (the worker's poll loop waits on it)."""

    def attach(self, pool: InferencePool) -> None:
        """Watch ``pool`` (the worker's, once started): each task that ends may make room."""
        self.pool = pool
        pool.on_task_done = self._changed

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ the jobs' lives
    def admitted(self, job_id: str, shape: Shape | None) -> None:
        """A job starts now (``shape`` None: unknown, it will fail fast)."""
        now = time.monotonic()
        if shape is not None:
            self.plans[job_id] = Plan(shape, now, set(shape.sources))
        for other, end in self._predicted.items():
            plan = self.plans.get(job_id if other == "candidate" else other)
            if plan is not None:
                plan.predicted_at, plan.predicted_end = now, end
        self._predicted = {}

    def on_event(self, job_id: str, analysis: str, kind: FanOutEvent, outcome: SourceOutcome) -> None:
        """The fan-out's events: a source reaches the pool, fails its fetch, or is done."""
        plan = self.plans.get(job_id)
        reached = kind in ("inference_start", "done") or (kind == "fetch_end" and outcome.error)
        if reached and plan is not None:
            plan.to_come.discard(outcome.name)
        if plan is not None and outcome.error:
            plan.clean = False
        if kind == "done":
            self.costs.observe(analysis, outcome)

    def ended(self, job_id: str) -> None:
        """The job's run is over (finished, failed or cancelled): learn how far off its simulation was."""
        plan = self.plans.pop(job_id, None)
        if plan is None or plan.predicted_end is None or not plan.clean or plan.to_come:
            return
        ratio = _lateness(plan, time.monotonic())
        if ratio is not None:
            self.slowdown = _mean(self.slowdown, min(max(ratio, SLOWDOWN_RANGE[0]), SLOWDOWN_RANGE[1]))

    # ------------------------------------------------------------------ the decision
    def shape_of(self, record: JobRecord | RecordError | None, sources: Mapping[str, Source]) -> Shape | None:
        """The shape of a job from its record; None if it cannot be read (it will fail fast)."""
        if not isinstance(record, JobRecord) or not record.args or not isinstance(record.args[0], dict):
            return None
        request: dict[str, Any] = record.args[0]
        s = self.settings
        try:
            names = request.get("sources") or default_sources(s, sources)
            analysis = request.get("analysis") or s.default_analysis
            deadline = float(request.get("deadline_s") or s.deadline_s)
            return Shape(tuple(str(n) for n in names), str(analysis), deadline)
        except Exception:  # anything odd is the job's own validation's business
            return None

    def idle(self) -> bool:
        """Nothing runs here: no job, no pool task (an abandoned inference still holds a core)."""
        return not self.plans and not (self.pool and self.pool.tasks)

    def fits(self, shape: Shape) -> bool:
        """Would a job of ``shape``, started now, end within its deadline, keeping every running job in its own?"""
        now = time.monotonic()
        if self.idle():
            self._predicted = self._finish_times(now, shape) or {}
            return True
        keep, k = 1.0 - self.margin, self._slowdown(now)
        if self._surely_fits(now, shape, keep, k):
            return True
        with_it = self._finish_times(now, shape)
        if with_it is None:
            return False  # a cost never measured: only an idle worker takes such a job
        without = self._finish_times(now, None)
        if without is None:
            return False
        if (with_it["candidate"] - now) * k > shape.deadline_s * keep:
            return False
        for job_id, plan in self.plans.items():
            allowed = max(plan.t0 + plan.shape.deadline_s * keep, now + (without.get(job_id, now) - now) * k)
            if now + (with_it.get(job_id, now) - now) * k > allowed + 1e-6:
                return False
        self._predicted = with_it
        return True

    def _surely_fits(self, now: float, shape: Shape, keep: float, k: float) -> bool:
        """A cheap sufficient test, before the simulation: every task this pool has and will have, the
        candidate's included, ends by ``latest ready + total work / pool size + longest task`` (a greedy
        schedule never idles a pool worker while a task waits). If even that meets every deadline, the
        job fits; else the simulation decides. Short jobs far from their deadlines never need more."""
        pool = self.pool
        size = pool.info.size if pool is not None else 1
        latest_ready, total, longest = 0.0, 0.0, 0.0
        durations: list[float] = []
        for task in pool.tasks if pool is not None else ():
            job_id, source = task.label or ("", "")
            plan = self.plans.get(job_id)
            duration = self.costs.inference_s(plan.shape.analysis if plan else None, source)
            if duration is None:
                return False
            durations.append(duration)
        for plan_shape, t0, to_come in [(p.shape, p.t0, p.to_come) for p in self.plans.values()] + [
            (shape, now, set(shape.sources))
        ]:
            for source in to_come:
                fetch = self.costs.fetch_s(source)
                duration = self.costs.inference_s(plan_shape.analysis, source)
                if fetch is None or duration is None:
                    return False
                latest_ready = max(latest_ready, t0 + fetch - now)
                durations.append(duration)
        if durations:
            total, longest = sum(durations), max(durations)
        bound = (latest_ready + total / size + longest) * k
        if bound > shape.deadline_s * keep:
            return False
        return all(now + bound <= plan.t0 + plan.shape.deadline_s * keep for plan in self.plans.values())

    def _slowdown(self, now: float) -> float:
        """The learnt slowdown, or more if a running job is already later than that."""
        k = self.slowdown
        for plan in self.plans.values():
            if plan.clean and plan.predicted_end is not None and now > plan.predicted_end:
                k = max(k, _lateness(plan, now) or k)
        return min(k, SLOWDOWN_RANGE[1])

    def _finish_times(self, now: float, candidate: Shape | None) -> dict[str, float] | None:
        """Each job's estimated end (``candidate`` under that name) on this pool, or None if a cost is unknown."""
        pool = self.pool
        size = pool.info.size if pool is not None else 1
        ends: dict[str, float] = {job_id: now for job_id in self.plans}
        slots: list[float] = []
        waiting: list[tuple[float, int, str, float]] = []  # (ready, order, job, duration)
        for task in pool.tasks if pool is not None else ():
            job_id, source = task.label or ("", "")
            plan = self.plans.get(job_id)
            duration = self.costs.inference_s(plan.shape.analysis if plan else None, source)
            if duration is None:
                return None
            if task.started is not None:
                end = max(now + OVERDUE_S, task.started + duration)
                slots.append(end)
                if job_id in ends:
                    ends[job_id] = max(ends[job_id], end)
            else:
                waiting.append((now, len(waiting), job_id, duration))
        jobs = [(job_id, plan.shape, plan.t0, plan.to_come) for job_id, plan in self.plans.items()]
        if candidate is not None:
            jobs.append(("candidate", candidate, now, set(candidate.sources)))
            ends["candidate"] = now
        for job_id, shape, t0, to_come in jobs:
            for source in to_come:
                fetch = self.costs.fetch_s(source)
                duration = self.costs.inference_s(shape.analysis, source)
                if fetch is None or duration is None:
                    return None
                waiting.append((max(now, t0 + fetch), len(waiting), job_id, duration))
        slots += [now] * max(0, size - len(slots))
        heapq.heapify(slots)
        for ready, _, job_id, duration in sorted(waiting):
            end = max(ready, heapq.heappop(slots)) + duration
            heapq.heappush(slots, end)
            if job_id in ends:
                ends[job_id] = max(ends[job_id], end)
        return ends
