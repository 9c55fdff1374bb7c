"""Prometheus metrics of one worker process, and the HTTP endpoint that serves them.

Every worker process counts into the default ``prometheus_client`` registry (one worker per
process, so no labels per worker: Prometheus adds ``instance``). The endpoint is off unless
``metrics_port`` is set. In a container every worker has its own network namespace, so the image
uses a fixed port (9100); several workers on one host (``make workers``) take ``metrics_port=0``,
a free port each, which the worker logs and publishes in its heartbeat record (``metrics_port``).

Metrics:

- ``agentq_jobs_total{status}``: finished jobs by final status (ok, partial, failed).
- ``agentq_job_duration_seconds{status}``: wall time of a job, start to result.
- ``agentq_source_fetch_seconds{source}``: fetch latency of each source, whatever its outcome.
- ``agentq_source_failures_total{source,reason}``: fetches that failed (error, timeout, deadline).
- ``agentq_pool_queue_depth``: inference tasks waiting for a free pool worker.
- ``agentq_pool_size``: the inference pool's size.
- ``agentq_jobs_in_flight``: jobs this worker runs right now.
- ``agentq_queue_depth``: jobs in every tenant's queue (ZCARD: queued, deferred and running), read from
  Redis every ``queue_depth_interval_s``; every worker reports the same number, take ``max()``.
- ``agentq_redis_round_trips_total``: requests this worker process has sent to Redis (a command, a
  pipeline, a script: one each; ``agentq.roundtrips``).
- ``agentq_jobs_refused_total``: claimed jobs admission gave back to the queue, as they would have
  missed their deadline here (``worker.admission``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from agentq.errors import REDIS_DOWN
from agentq.protocol.queue import Queue
from agentq.roundtrips import round_trips

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from agentq.contract import JobResult
    from worker.engine.context import WorkerContext

log = logging.getLogger(__name__)

# Buckets around the reference workload: sources take 1.5-3 s, a query 5-15 s at time_scale 1.
_FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)

JOBS = Counter("agentq_jobs", "Finished jobs by final status.", ["status"])
JOB_DURATION = Histogram(
    "agentq_job_duration_seconds", "Wall time of a job, start to result.", ["status"], buckets=_JOB_BUCKETS
)
FETCH_SECONDS = Histogram(
    "agentq_source_fetch_seconds", "Fetch latency per source, any outcome.", ["source"], buckets=_FETCH_BUCKETS
)
FETCH_FAILURES = Counter("agentq_source_failures", "Failed fetches per source and reason.", ["source", "reason"])
POOL_QUEUE_DEPTH = Gauge("agentq_pool_queue_depth", "Inference tasks waiting for a free pool worker.")
POOL_SIZE = Gauge("agentq_pool_size", "Workers in the inference pool.")
JOBS_IN_FLIGHT = Gauge("agentq_jobs_in_flight", "Jobs this worker is running.")
QUEUE_DEPTH = Gauge("agentq_queue_depth", "Jobs in the arq queue (queued, deferred and running).")


class _ProcessCounters(Collector):
    """Counters kept outside prometheus_client, read when scraped."""

    refused: Callable[[], int] = staticmethod(lambda: 0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "agentq_redis_round_trips", "Requests this worker process has sent to Redis.", value=round_trips()
        )
        yield CounterMetricFamily(
            "agentq_jobs_refused", "Claimed jobs given back to the queue by admission.", value=self.refused()
        )


PROCESS_COUNTERS = _ProcessCounters()
REGISTRY.register(PROCESS_COUNTERS)


def pool_backlog(executor: cf.Executor) -> int:
    """Inference tasks submitted to ``executor`` that no pool worker has started yet.

    The standard library exposes no public count, so this reads the executors' own bookkeeping:
    thread and interpreter pools keep a work queue of not-yet-started items; a process pool keeps
    every submitted, unfinished item, of which at most ``max_workers`` can be running.
    """
    queue = getattr(executor, "_work_queue", None)
    if queue is not None and hasattr(queue, "qsize"):
        return int(queue.qsize())
    pending = getattr(executor, "_pending_work_items", None)
    if pending is not None:
        return max(0, len(pending) - int(getattr(executor, "_max_workers", 0)))
    return 0


def observe_job(result: JobResult, seconds: float) -> None:
    """Count one finished job and each of its sources' fetches."""
    JOBS.labels(result.status).inc()
    JOB_DURATION.labels(result.status).observe(seconds)
    for outcome in result.sources:
        if outcome.fetch_s is not None:
            FETCH_SECONDS.labels(outcome.name).observe(outcome.fetch_s)
        # A source whose fetch succeeded (it has data) but whose inference failed is not a fetch failure.
        if outcome.status != "ok" and outcome.data is None:
            FETCH_FAILURES.labels(outcome.name, outcome.status).inc()


def serve(port: int, host: str) -> tuple[WSGIServer, int]:
    """Start the /metrics endpoint in a daemon thread; return the server and its actual port."""
    server, _thread = start_http_server(port, addr=host)
    return server, int(server.server_port)


async def refresh_queue_depth_forever(ctx: WorkerContext) -> None:
    """Keep ``agentq_queue_depth`` current; a failed read (Redis down) is logged, not fatal."""
    s = ctx["settings"]
    while True:
        try:
            total, _, _ = await Queue(ctx["redis"], ctx["keys"]).counts()
            QUEUE_DEPTH.set(total)
        except REDIS_DOWN as exc:  # one line, no traceback: Redis is down, not us
            log.warning("queue depth read failed: %s", exc)
        except Exception:
            log.exception("queue depth read failed")
        await asyncio.sleep(s.queue_depth_interval_s)


def start(ctx: WorkerContext) -> None:
    """Wire the gauges to this worker, start the queue-depth refresher and, if set, the endpoint."""
    s = ctx["settings"]
    POOL_QUEUE_DEPTH.set_function(lambda: pool_backlog(ctx["pool"].executor))
    POOL_SIZE.set_function(lambda: ctx["pool"].info.size)
    admission = ctx.get("admission")
    if admission is not None:
        PROCESS_COUNTERS.refused = lambda: admission.refused
    JOBS_IN_FLIGHT.set_function(lambda: ctx["stats"]["jobs_in_flight"])
    ctx["queue_depth_task"] = asyncio.create_task(refresh_queue_depth_forever(ctx))
    if s.metrics_port is None:
        return
    server, port = serve(s.metrics_port, s.metrics_host)
    ctx["metrics_server"], ctx["metrics_port"] = server, port
    log.info("metrics on http://%s:%d/metrics", s.metrics_host, port)


async def stop(ctx: WorkerContext) -> None:
    """Stop the refresher and the endpoint."""
    task = ctx.get("queue_depth_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    server = ctx.get("metrics_server")
    if server is not None:
        # shutdown() waits for serve_forever to return: run it off the event loop.
        await asyncio.to_thread(_close, server)


def _close(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()
