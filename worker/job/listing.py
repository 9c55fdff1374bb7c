"""A finished job's listing figures (``agentq.summary``), filed by the script that stores its result.

Read from the result as the job returned it (a JSON dict), not from a re-parsed result model: this
runs once per job, on the worker's hot path.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agentq.summary import figures

if TYPE_CHECKING:
    from agentq.protocol.queue import ClaimedJob
    from agentq.protocol.records import JobRecord


def final(job: ClaimedJob, record: JobRecord, value: Any, success: bool, finished_ms: int) -> tuple[str, str]:
    """The job's final status and its listing figures (JSON), from what its run returned or raised."""
    request = record.args[0] if record.args and isinstance(record.args[0], dict) else {}
    failure = None
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
