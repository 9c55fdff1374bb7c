"""Our settings turned into a worker: the job function in arq's registry, the context, the hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from arq.worker import func

from agentq.contract import JOB_FUNCTION
from worker.engine import lifecycle
from worker.engine.context import WorkerContext, new_worker_id
from worker.engine.loop import Worker
from worker.job import answer as job

if TYPE_CHECKING:
    from agentq.settings import Settings


def create_worker(s: Settings, *, burst: bool = False) -> Worker:
    """A worker configured from ``s``: the one job function, registered the way arq registers functions."""
    ctx: WorkerContext = {"settings": s, "worker_id": new_worker_id(), "keys": s.keys}
    # arq types a job's ctx as a plain dict; ours is a TypedDict of the same keys.
    functions = [func(job.answer_question, name=JOB_FUNCTION, timeout=s.job_timeout_s)]  # type: ignore[arg-type]
    return Worker(s, functions, ctx, on_startup=lifecycle.startup, on_shutdown=lifecycle.shutdown, burst=burst)
