"""The job: validate the request, fan out, aggregate.

The job never raises. Whatever it is given (a bad request, a payload of the wrong shape, a
source or a pool that breaks), it returns a :class:`JobResult` whose status says what happened,
so every caller gets an answer and the worker keeps serving.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from agentq import tracing
from agentq.contract import JobResult, QuestionRequest, SourceOutcome, Timing, parse_request
from agentq.errors import InvalidRequest
from agentq.sources import SourceContext, default_sources
from worker.engine.context import WorkerContext
from worker.engine.lifecycle import replace_pool_if_broken
from worker.job import cancel, progress, traced
from worker.job.fanout import EventHook, FanOut, FanOutEvent
from worker.job.resilience import ResilientFetch
from worker.job.timing import critical_path, fetch_wall, overall_status, ranked_answer, sequential_estimate, stages_of
from worker.ops import metrics

log = logging.getLogger(__name__)


async def answer_question(ctx: WorkerContext, *args: Any, **kwargs: Any) -> JobResult:
    """The job: validate the request, fan out, aggregate. Returns the result (stored as its JSON).

    A ``trace`` keyword is the producer's trace context: the job's span joins that trace (``worker.job.traced``).
    """
    carrier = traced.carrier_of(kwargs.pop("trace", None))
    attributes = {"agentq.job_id": ctx["job_id"], "agentq.job_try": ctx.get("job_try", 1)}
    with tracing.span("job", carrier=carrier, attributes=attributes) as span:
        result = await _run(ctx, *args, **kwargs)
        if span is not None:
            span.set_attribute("agentq.status", result.status)
        return result


async def _run(ctx: WorkerContext, *args: Any, **kwargs: Any) -> JobResult:
    started_at, t0 = datetime.now(UTC), time.monotonic()
    job_id = ctx["job_id"]
    try:
        result = await _answer(ctx, started_at, *args, **kwargs)
    except InvalidRequest as exc:
        log.warning("job %s: invalid request: %s", job_id, exc)
        result = _failed(ctx, started_at, args, f"invalid request: {exc}")
    except Exception as exc:  # the job must return a result whatever happens
        log.exception("job %s crashed", job_id)
        result = _failed(ctx, started_at, args, f"internal error: {type(exc).__name__}: {exc}")
    await replace_pool_if_broken(ctx)
    seconds = time.monotonic() - t0
    metrics.observe_job(result, seconds)
    return result


async def _answer(ctx: WorkerContext, started_at: datetime, *args: Any, **kwargs: Any) -> JobResult:
    s = ctx["settings"]
    if len(args) != 1 or kwargs:
        raise InvalidRequest("the job takes exactly one argument, the request object")
    sources, analyses = ctx["sources"], ctx["analyses"]
    request = parse_request(
        args[0],
        known_sources=sources,
        known_analyses=analyses,
        max_question_chars=s.max_question_chars,
        max_source_timeout_s=s.max_source_timeout_s,
        max_deadline_s=s.max_deadline_s,
    )
    pool = ctx["pool"]
    analysis = analyses[request.analysis or s.default_analysis]
    names = request.sources or default_sources(s, sources)
    # A request's timeout overrides every source's own (capped like a request's), which overrides the setting.
    own = {n: min(t, s.max_source_timeout_s) for n in names if (t := sources[n].timeout_s) is not None}
    timeouts = {n: request.source_timeout_s or own.get(n) or s.source_timeout_s for n in names}
    with cancel.scope(ctx) as cancelled:  # worker.job.cancel: the job stops at once if cancelled
        if cancelled.cancelled:
            return _cancelled_before_start(ctx, request)
        fan_out = FanOut(
            traced.pool(cancelled.pool(pool)),
            sources,
            analysis=analysis,
            params=analysis.params_for(s),
            policy=traced.policy(cancelled.policy(ctx.get("policy") or ResilientFetch(s, ctx["redis"], ctx["keys"]))),
            on_event=_on_event(ctx, request, analysis.name),
            max_text_chars=s.max_source_bytes,
        )
        outcomes, total_s = await fan_out.run(
            request,
            SourceContext(s, ctx["job_id"], ctx.get("job_try", 1), http=ctx.get("http")),
            source_names=names,
            source_timeout_s=timeouts,
            deadline_s=request.deadline_s or s.deadline_s,
        )
        cancelled.settle(outcomes)
    stages = stages_of(outcomes)
    sequential = sequential_estimate(stages)
    queued_at = ctx.get("enqueue_time")
    timing = Timing(
        queued_at=queued_at,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        queue_wait_s=(started_at - queued_at).total_seconds() if queued_at else None,
        total_s=total_s,
        fetch_wall_s=fetch_wall(outcomes),
        inference_cpu_s=sum(o.inference_cpu_s or 0.0 for o in outcomes),
        critical_path_s=critical_path(stages, pool.info.size),
        sequential_estimate_s=sequential,
        speedup=sequential / total_s if total_s > 0 else 0.0,
    )
    return JobResult(
        job_id=ctx["job_id"],
        question=request.question,
        status="cancelled" if cancelled.cancelled else overall_status(outcomes),
        answer=ranked_answer(outcomes),
        sources=outcomes,
        errors=[f"{o.name}: {o.status}: {o.error}" for o in outcomes if o.status != "ok"],
        timing=timing,
        executor=pool.info,
        worker_id=ctx["worker_id"],
        job_try=ctx.get("job_try"),
    )


def _on_event(ctx: WorkerContext, request: QuestionRequest, analysis: str) -> EventHook:
    """The fan-out's events go to the progress log and to admission (its plan and cost model)."""
    publish, admission, job_id = _publisher(ctx, request).on_event, ctx.get("admission"), ctx["job_id"]
    if admission is None:
        return publish

    def on_event(kind: FanOutEvent, outcome: SourceOutcome) -> None:
        publish(kind, outcome)
        admission.on_event(job_id, analysis, kind, outcome)

    return on_event


def _publisher(ctx: WorkerContext, request: QuestionRequest) -> progress.ProgressPublisher:
    """This run's progress publisher, kept in ``ctx`` for the end of the run (``worker.engine.runner``)."""
    ctx["progress"] = progress.ProgressPublisher(
        ctx["redis"], ctx["keys"], ctx["job_id"], ctx["settings"].progress_ttl_s
    )
    return ctx["progress"]


def _cancelled_before_start(ctx: WorkerContext, request: QuestionRequest) -> JobResult:
    pool = ctx["pool"]
    return JobResult(
        job_id=ctx["job_id"],
        question=request.question,
        status="cancelled",
        errors=["cancelled before it started"],
        executor=pool.info,
        worker_id=ctx["worker_id"],
        job_try=ctx.get("job_try"),
    )


def _failed(ctx: WorkerContext, started_at: datetime, args: tuple[Any, ...], reason: str) -> JobResult:
    question = args[0].get("question") if len(args) == 1 and isinstance(args[0], dict) else None
    pool = ctx.get("pool")
    return JobResult(
        job_id=ctx["job_id"],
        question=question[:200] if isinstance(question, str) else "",
        status="failed",
        errors=[reason],
        executor=pool.info if pool else None,
        worker_id=ctx.get("worker_id"),
        job_try=ctx.get("job_try"),
    )
