"""The arq job and its worker's life cycle: pool start-up and shut-down, result notification.

The job never raises. Whatever it is given (a bad request, a payload of the wrong shape, a
source or a pool that breaks), it returns a :class:`JobResult` whose status says what happened,
so every caller gets an answer and the worker keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from worker import health, metrics, progress
from worker.contract import JobResult, Keys, Timing, parse_request
from worker.errors import InvalidRequest
from worker.executor import InferencePool, create_pool
from worker.fanout import FanOut
from worker.logs import current_job_id
from worker.resilience import ResilientFetch
from worker.sources import SourceContext, default_sources, source_names
from worker.sources.http import create_client
from worker.timing import critical_path, fetch_wall, overall_status, ranked_answer, sequential_estimate, stages_of

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import httpx
    from arq.connections import ArqRedis

    from worker.settings import Settings

log = logging.getLogger(__name__)


class WorkerContext(TypedDict, total=False):
    """What arq hands every job (``ctx``), typed."""

    redis: ArqRedis
    """arq's connection pool (set by arq)."""
    job_id: str
    """This job's id (set by arq per job)."""
    job_try: int
    """1 on the first start, incremented on every re-run (set by arq per job)."""
    enqueue_time: datetime
    """When the producer enqueued the job, UTC (set by arq per job)."""
    settings: Settings
    """The settings this worker was started with."""
    pool: InferencePool
    """This worker's inference pool; replaced if it breaks."""
    worker_id: str
    """``host:pid:random``, unique per worker process."""
    http: httpx.AsyncClient
    """The one pooled HTTP client every HTTP source of every job shares; closed at shutdown."""
    keys: Keys
    """Our Redis key names."""
    stats: WorkerStats
    """Counters the heartbeat reports."""
    heartbeat: asyncio.Task[None]
    """The task that keeps this worker's heartbeat key alive."""
    queue_depth_task: asyncio.Task[None]
    """The task that refreshes the queue-depth gauge (``worker.metrics``)."""
    metrics_server: WSGIServer
    """The /metrics endpoint, when ``metrics_port`` is set."""
    metrics_port: int
    """The port /metrics actually listens on (reported in the heartbeat)."""
    progress: progress.ProgressPublisher
    """This job start's progress publisher (per job; set when the fan-out starts)."""


class WorkerStats(TypedDict):
    """Counters for the heartbeat record."""

    started_at: str
    jobs_done: int
    jobs_in_flight: int


def new_worker_id() -> str:
    """A unique, readable id for this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def startup(ctx: WorkerContext) -> None:
    """arq ``on_startup``: open the HTTP client, start and warm the inference pool."""
    s = ctx["settings"]
    default_sources(s)  # a bad AGENTQ_DEFAULT_SOURCES stops the worker here, not every job
    ctx["http"] = create_client(s, ctx["worker_id"])
    ctx["pool"] = await asyncio.to_thread(create_pool, s.executor, s.pool_size)
    info = ctx["pool"].info
    ctx["stats"] = {"started_at": datetime.now(UTC).isoformat(), "jobs_done": 0, "jobs_in_flight": 0}
    metrics.start(ctx)  # before the first beat, which reports the metrics port
    ctx["heartbeat"] = asyncio.create_task(health.heartbeat_forever(ctx))
    health.write_id_file(ctx)
    log.info("worker %s ready: %s pool of %d (%s)", ctx["worker_id"], info.kind, info.size, info.reason)


async def shutdown(ctx: WorkerContext) -> None:
    """arq ``on_shutdown``: stop heartbeating, close the HTTP client, stop the pool and wait for its workers."""
    if "heartbeat" in ctx:
        await health.stop(ctx, ctx["heartbeat"])
    await metrics.stop(ctx)
    if "http" in ctx:
        await ctx["http"].aclose()
    pool = ctx.get("pool")
    if pool is not None:
        await asyncio.to_thread(pool.shutdown)


async def job_started(ctx: WorkerContext) -> None:
    """arq ``on_job_start``: count the job as in flight; tag this job's log lines with its id."""
    current_job_id.set(ctx["job_id"])
    ctx["stats"]["jobs_in_flight"] += 1


async def notify_done(ctx: WorkerContext) -> None:
    """arq ``after_job_end`` (the result is stored by now): wake whoever waits for it."""
    ctx["stats"]["jobs_in_flight"] -= 1
    ctx["stats"]["jobs_done"] += 1
    try:
        await ctx["redis"].publish(ctx["keys"].done_channel(ctx["job_id"]), b"1")
    except Exception:  # waiters still find the result on their 1 s recheck
        log.warning("could not publish job %s done", ctx["job_id"], exc_info=True)
    finally:
        await progress.finish(ctx)  # the progress log's last entry; the dedup marker goes


async def answer_question(ctx: WorkerContext, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The job: validate the request, fan out, aggregate. Returns the result as a JSON dict."""
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
    await _replace_pool_if_broken(ctx)
    seconds = time.monotonic() - t0
    metrics.observe_job(result, seconds)
    log.info("job %s %s in %.3fs (try %s)", job_id, result.status, seconds, ctx.get("job_try"))
    return result.model_dump(mode="json")


async def _answer(ctx: WorkerContext, started_at: datetime, *args: Any, **kwargs: Any) -> JobResult:
    s = ctx["settings"]
    if len(args) != 1 or kwargs:
        raise InvalidRequest("the job takes exactly one argument, the request object")
    request = parse_request(
        args[0],
        known_sources=source_names(),
        max_question_chars=s.max_question_chars,
        max_source_timeout_s=s.max_source_timeout_s,
        max_deadline_s=s.max_deadline_s,
    )
    pool = ctx["pool"]
    fan_out = FanOut(
        pool,
        inference_units=max(1, round(s.inference_units * s.time_scale)),
        policy=ResilientFetch(s, ctx["redis"], ctx["keys"]),
        on_event=progress.start(ctx, request).on_event,
        max_text_chars=s.max_source_bytes,
    )
    outcomes, total_s = await fan_out.run(
        request,
        SourceContext(s, ctx["job_id"], ctx.get("job_try", 1), http=ctx.get("http")),
        source_names=request.sources or default_sources(s),
        source_timeout_s=request.source_timeout_s or s.source_timeout_s,
        deadline_s=request.deadline_s or s.deadline_s,
    )
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
        status=overall_status(outcomes),
        answer=ranked_answer(outcomes),
        sources=outcomes,
        errors=[f"{o.name}: {o.status}: {o.error}" for o in outcomes if o.status != "ok"],
        timing=timing,
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


async def _replace_pool_if_broken(ctx: WorkerContext) -> None:
    """A pool whose process died is unusable for good: start a fresh one for the next job."""
    pool = ctx.get("pool")
    if pool is None or not pool.broken:
        return
    s = ctx["settings"]
    log.error("inference pool broken; starting a new one")
    broken = pool.executor
    fresh = await asyncio.to_thread(create_pool, s.executor, s.pool_size)
    if pool.executor is not broken:  # a concurrent job replaced it meanwhile
        await asyncio.to_thread(fresh.shutdown)
        return
    # arq hands each job a copy of the worker's ctx: replace the pool's insides, not ctx["pool"],
    # so the next jobs (and shutdown) see the new pool.
    pool.executor, pool.info, pool.broken = fresh.executor, fresh.info, False
    await asyncio.to_thread(broken.shutdown, wait=False, cancel_futures=True)
