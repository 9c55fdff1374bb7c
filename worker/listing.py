"""A finished job's listing entry, filed by the script that stores its result.

The producer writes each job's summary hash and the recent-jobs index when it enqueues the job
(``producer.jobs`` describes both). When a run's result is the one stored, the finish script
(``worker.finish``) adds the job's ``final`` figures to that hash (``HSETNX``), moves the hash's
expiry to the result's, and indexes the job under its final status, trimming that index: no
extra round trip. :func:`filing` computes what the script writes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import pydantic

from agentq.contract import JobResult, loads
from agentq.keys import Keys
from agentq.settings import Settings
from agentq.summary import final_summary

log = logging.getLogger(__name__)


def final_of(job_id: str, result_data: bytes) -> dict[str, Any]:
    """The ``final`` summary of an arq result record (our JSON), whatever it holds."""
    now_ms = round(time.time() * 1000)
    try:
        record = loads(result_data)
        if record.get("s") and isinstance(record.get("r"), dict):
            return final_summary(JobResult.model_validate(record["r"]), int(record.get("ft") or now_ms))
        reason = record.get("r")
        if isinstance(reason, dict) and "message" in reason:
            reason = reason["message"]
        error = f"job failed before it could answer: {reason}"
    except (ValueError, TypeError, AttributeError, pydantic.ValidationError) as exc:
        error = f"stored result is unreadable: {exc}"
    return {"status": "failed", "finished_ms": now_ms, "error": error[:200], "sources": {}}


@dataclass(frozen=True)
class Filing:
    """What the finish script writes to file a finished job."""

    summary_key: str
    index_key: str
    """The index of jobs finished with this status."""
    final: str
    """The ``final`` figures, as JSON."""
    finished_ms: int
    summary_px: int
    index_size: int


def filing(settings: Settings, job_id: str, result_data: bytes) -> Filing:
    """How to file ``job_id`` once ``result_data`` (an arq result record) is stored for it."""
    keys = Keys(settings.key_prefix)
    final = final_of(job_id, result_data)
    return Filing(
        summary_key=keys.summary(job_id),
        index_key=keys.jobs_by_status(final["status"]),
        final=json.dumps(final),
        finished_ms=int(final["finished_ms"]),
        summary_px=settings.result_ttl_s * 1000,
        index_size=settings.jobs_index_size,
    )
