"""What every job is handed (``ctx``), typed: the worker's shared state, set up at start-up, plus the job's own."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    import asyncio
    from wsgiref.simple_server import WSGIServer

    import httpx
    from redis.asyncio import Redis

    from agentq.analyses import Analysis
    from agentq.protocol.keys import Keys
    from agentq.settings import Settings
    from agentq.sources import Source
    from worker.engine.admission import Admission
    from worker.job.cancel import CancelRegistry
    from worker.job.progress import ProgressPublisher
    from worker.job.resilience import ResilientFetch
    from worker.pool.executor import InferencePool


class WorkerStats(TypedDict):
    """Counters for the heartbeat record."""

    started_at: str
    jobs_done: int
    jobs_in_flight: int


class WorkerContext(TypedDict, total=False):
    """One per worker, copied per job with the job's own keys added (``worker.engine.runner``)."""

    redis: Redis
    """The worker's connection pool."""
    job_id: str
    """This job's id (per job)."""
    job_try: int
    """1 on the first run, then one more for each run that counted as a try (per job)."""
    enqueue_time: datetime
    """When the producer enqueued the job, UTC (per job)."""
    score: int
    """The job's queue score when it was claimed (per job)."""
    cancelled: bool
    """A caller asked to cancel the job before this run began (per job; read with the claim)."""
    settings: Settings
    """The settings this worker was started with."""
    sources: Mapping[str, Source]
    """The sources this worker serves (``AGENTQ_ENABLED_SOURCES``), by name."""
    analyses: Mapping[str, Analysis]
    """The analyses this worker runs (``AGENTQ_ENABLED_ANALYSES``), by name; each passed its start-up check."""
    pool: InferencePool
    """This worker's inference pool; its insides are replaced if it breaks."""
    worker_id: str
    """``host:pid:random``, unique per worker process."""
    http: httpx.AsyncClient
    """The one pooled HTTP client every HTTP source of every job shares; closed at shutdown."""
    keys: Keys
    """Every Redis key name of this worker's queue and prefix."""
    stats: WorkerStats
    """Counters the heartbeat reports."""
    heartbeat: asyncio.Task[None]
    """The task that keeps this worker's heartbeat key alive."""
    queue_depth_task: asyncio.Task[None]
    """The task that refreshes the queue-depth gauge (``worker.ops.metrics``)."""
    metrics_server: WSGIServer
    """The /metrics endpoint, when ``metrics_port`` is set."""
    metrics_port: int
    """The port /metrics actually listens on (reported in the heartbeat)."""
    progress: ProgressPublisher
    """This job start's progress publisher (per job; set when the fan-out starts)."""
    cancels: CancelRegistry
    """The jobs this worker runs, each with the event that cancels it (``worker.job.cancel``)."""
    cancel_listener: asyncio.Task[None]
    """The task that follows the cancel channel."""
    policy: ResilientFetch
    """The fetch policy every job of this worker uses (source policies: ``worker.job.resilience``)."""
    admission: Admission | None
    """This worker's admission of jobs by deadline (``worker.admission``); None when ``admission`` is off."""


def new_worker_id() -> str:
    """A unique, readable id for this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
