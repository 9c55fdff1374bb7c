"""The worker's parts: started before the first claim, shut down after the last job.

Start-up imports and checks the plugins (``worker.ops.plugins``: a failure stops the worker with exit
2), opens the HTTP client, starts the inference pool, runs every enabled analysis once in it,
starts the heartbeat and the metrics; shut-down stops them in reverse and waits for the pool's
processes or interpreters.
The pool tells admission (``worker.engine.admission``) each time a worker of it is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from agentq import tracing
from worker.engine.context import WorkerContext
from worker.job import cancel
from worker.job.resilience import ResilientFetch
from worker.job.sources.http import create_client
from worker.ops import health, metrics, plugins
from worker.pool.executor import create_pool

log = logging.getLogger(__name__)


async def startup(ctx: WorkerContext) -> None:
    """Before the first claim: load and check the plugins, open the HTTP client, start and check the pool.

    Raises :class:`~agentq.errors.StartupError` (the worker exits 2) for a plugin that does not load
    or whose analysis cannot run in this pool, and for a bad choice of sources or analyses: those
    stop the worker here, never fail its jobs later.
    """
    s = ctx["settings"]
    tracing.setup(s, "agentq-worker")  # only with AGENTQ_OTLP_ENDPOINT
    chosen = plugins.load(s)
    ctx["sources"], ctx["analyses"] = chosen.sources, chosen.analyses
    ctx["http"] = create_client(s, ctx["worker_id"])
    ctx["pool"] = await asyncio.to_thread(create_pool, s.executor, s.pool_size)
    await plugins.check_analyses(ctx["pool"], ctx["analyses"], s)
    if (admission := ctx.get("admission")) is not None:
        admission.attach(ctx["pool"])
    # One fetch policy for every job: it holds no per-query state, and building it per job (its
    # scripts, its rate limiter) cost more than a short job's own work.
    ctx["policy"] = ResilientFetch(s, ctx["redis"], ctx["keys"])
    info = ctx["pool"].info
    ctx["stats"] = {"started_at": datetime.now(UTC).isoformat(), "jobs_done": 0, "jobs_in_flight": 0}
    metrics.start(ctx)  # before the first beat, which reports the metrics port
    ctx["heartbeat"] = asyncio.create_task(health.heartbeat_forever(ctx))
    ctx["cancels"] = cancel.CancelRegistry()
    ctx["cancel_listener"] = asyncio.create_task(cancel.listen_forever(ctx), name="cancel-listener")
    health.write_id_file(ctx)
    log.info(
        "worker %s ready: queue %s, up to %d jobs at once; %s pool of %d (%s); sources %s; analyses %s (default %s)",
        ctx["worker_id"],
        s.queue_name,
        s.max_jobs,
        info.kind,
        info.size,
        info.reason,
        ", ".join(ctx["sources"]),
        ", ".join(ctx["analyses"]),
        s.default_analysis,
    )


async def shutdown(ctx: WorkerContext) -> None:
    """After the last job: stop heartbeating, close the HTTP client, stop the pool and wait for its workers."""
    if "heartbeat" in ctx:
        await health.stop(ctx, ctx["heartbeat"])
    if "cancel_listener" in ctx:
        ctx["cancel_listener"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ctx["cancel_listener"]
    await metrics.stop(ctx)
    if "http" in ctx:
        await ctx["http"].aclose()
    pool = ctx.get("pool")
    if pool is not None:
        await asyncio.to_thread(pool.shutdown)
    await asyncio.to_thread(tracing.shutdown)  # sends the spans still batched


async def replace_pool_if_broken(ctx: WorkerContext) -> None:
    """A pool whose process died is unusable for good: start a fresh one for the next job."""
    pool = ctx.get("pool")
    if pool is None or not pool.broken:
        return
    s = ctx["settings"]
    log.error("inference pool broken; starting a new one")
    broken = pool.executor
    fresh = await asyncio.to_thread(create_pool, s.executor, s.pool_size)
    await fresh.warm(a.module for a in ctx["analyses"].values())
    if pool.executor is not broken:  # a concurrent job replaced it meanwhile
        await asyncio.to_thread(fresh.shutdown)
        return
    # Each job is handed a copy of the worker's ctx: replace the pool's insides, not ctx["pool"],
    # so the next jobs (and shutdown) see the new pool.
    pool.executor, pool.info, pool.broken = fresh.executor, fresh.info, False
    await asyncio.to_thread(broken.shutdown, wait=False, cancel_futures=True)
