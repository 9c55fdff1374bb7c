"""A finished job's listing figures (``agentq.summary``), filed by the script that stores its result.

Read from the result as the job returned it (a JSON dict), not from a re-parsed result model: this
runs once per job, on the worker's hot path.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agentq.contract import JobResult
from agentq.summary import figures

if TYPE_CHECKING:
    from agentq.protocol.queue import ClaimedJob
    from agentq.protocol.records import JobRecord


def final(job: ClaimedJob, record: JobRecord, value: Any, success: bool, finished_ms: int) -> tuple[str, str]:
    """The job's final status and its listing figures (JSON), from what its run returned or raised."""
    request = record.args[0] if record.args and isinstance(record.args[0], dict) else {}
    failure = None
    if isinstance(value, JobResult):
        value = _figures_of(value)
    if not success:
        failure = str(value)
    elif not isinstance(value, dict):
        failure = f"the job returned {type(value).__name__}, not a result"
    status, out = figures(
        value if failure is None else None,
        failure=failure,
        question=str(request.get("question", "")),
        priority=job.priority,
        enqueued_ms=record.enqueue_ms,
        retry_of=job.retry_of,
        finished_ms=finished_ms,
    )
    return status, json.dumps(out, separators=(",", ":"))


def _figures_of(result: JobResult) -> dict[str, Any]:
    """The parts of a result the figures read, as its JSON would hold them (without dumping all of it)."""
    timing = result.timing
    return {
        "status": result.status,
        "timing": {"total_s": timing.total_s, "queue_wait_s": timing.queue_wait_s} if timing else None,
        "worker_id": result.worker_id,
        "errors": result.errors,
        "sources": [
            {
                "name": o.name,
                "status": o.status,
                "fetch_s": o.fetch_s,
                "inference_start_s": o.inference_start_s,
                "inference_submit_s": o.inference_submit_s,
                "inference_s": o.inference_s,
            }
            for o in result.sources
        ],
    }
