"""What arq hands every job (``ctx``), typed: the worker's shared state, set up at start-up."""

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
    from arq.connections import ArqRedis

    from agentq.analyses import Analysis
    from agentq.keys import Keys
    from agentq.settings import Settings
    from agentq.sources import Source
    from worker.admission import Admission
    from worker.cancel import CancelRegistry
    from worker.executor import InferencePool
    from worker.progress import ProgressPublisher
    from worker.resilience import ResilientFetch


class WorkerStats(TypedDict):
    """Counters for the heartbeat record."""

    started_at: str
    jobs_done: int
    jobs_in_flight: int


class WorkerContext(TypedDict, total=False):
    """arq's ``ctx``: one per worker, copied per job with the job's own keys added."""

    redis: ArqRedis
    """The worker's connection pool (set by arq)."""
    job_id: str
    """This job's id (set by arq per job)."""
    job_try: int
    """1 on the first start, incremented on every re-run (set by arq per job)."""
    enqueue_time: datetime
    """When the producer enqueued the job, UTC (set by arq per job)."""
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
    progress: ProgressPublisher
    """This job start's progress publisher (per job; set when the fan-out starts)."""
    cancels: CancelRegistry
    """The jobs this worker runs, each with the event that cancels it (``worker.cancel``)."""
    cancel_listener: asyncio.Task[None]
    """The task that follows the cancel channel."""
    cancel_requested: bool
    """Set (per job) once the job was cancelled, so its marker is removed when it ends."""
    policy: ResilientFetch
    """The fetch policy every job of this worker uses (source policies: ``worker.resilience``)."""
    admission: Admission | None
    """This worker's admission of jobs by deadline (``worker.admission``); None when ``admission`` is off."""


def new_worker_id() -> str:
    """A unique, readable id for this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
