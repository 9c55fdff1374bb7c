"""Our settings turned into arq's worker, in one place: every ``Worker`` argument written out."""

from __future__ import annotations

from typing import Any

from arq.worker import func

from agentq.contract import JOB_FUNCTION, dumps, loads
from agentq.keys import Keys
from agentq.settings import Settings
from worker import job, lifecycle
from worker.arqfork import AgentQWorker
from worker.context import WorkerContext, new_worker_id


def worker_options(s: Settings, **overrides: Any) -> dict[str, Any]:
    """Every argument of ``arq.worker.Worker``, written out, derived from our settings."""
    ctx: WorkerContext = {"settings": s, "worker_id": new_worker_id(), "keys": Keys(s.key_prefix)}
    options: dict[str, Any] = {
        # arq types ctx as a plain dict; ours is a TypedDict of the same keys.
        "functions": [func(job.answer_question, name=JOB_FUNCTION)],  # type: ignore[arg-type]
        "queue_name": s.queue_name,
        "redis_settings": None,  # AgentQWorker.main connects with agentq.connection's recipe instead
        "on_startup": lifecycle.startup,
        "on_shutdown": lifecycle.shutdown,
        "on_job_start": lifecycle.job_started,
        "after_job_end": lifecycle.job_ended,
        "ctx": ctx,
        # JSON both ways: a payload in Redis can never become code in the worker.
        "job_serializer": dumps,
        "job_deserializer": loads,
        # Above the longest deadline a request may ask, so arq never kills a job that is still
        # inside its own deadline. (The in-progress key is a renewed lease instead: AgentQWorker.)
        "job_timeout": s.job_timeout_s,
        "max_jobs": s.max_jobs,
        "max_tries": s.max_tries,
        "keep_result": s.result_ttl_s,
        # No pause between iterations of arq's loop: AgentQWorker._poll_iteration waits itself, on
        # the doorbell or for a free slot, never longer than s.poll_delay_s.
        "poll_delay": 0,
        "job_completion_wait": s.shutdown_grace_s,
        "health_check_interval": s.health_check_interval_s,
        "health_check_key": Keys.health(s.queue_name),
        "handle_signals": True,
        "log_results": False,
    }
    options.update(overrides)
    return options


def create_worker(s: Settings, **overrides: Any) -> AgentQWorker:
    """A worker configured from ``s`` (``overrides`` for tests: ``burst=True`` ...)."""
    return AgentQWorker(s, **worker_options(s, **overrides))
