"""A finished job's listing entry, written in the transaction that stores its result.

The producer writes each job's summary hash and the recent-jobs index when it enqueues the job
(``producer.jobs`` describes both). Here the worker adds the job's ``final`` figures to that hash
(``HSETNX``: the first stored result's figures win, as the result itself does), moves the hash's
expiry to the result's, and indexes the job under its final status, trimming that index, all
inside ``worker.arqfork``'s result transaction: no extra round trip.
"""

from __future__ import annotations

import json
import logging
import time
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


def add_final(tr: Any, settings: Settings, job_id: str, result_data: bytes) -> None:
    """Queue on the transaction ``tr`` the commands that file the finished job (see the module's docstring)."""
    keys = Keys(settings.key_prefix)
    final = final_of(job_id, result_data)
    summary, index = keys.summary(job_id), keys.jobs_by_status(final["status"])
    tr.hsetnx(summary, "final", json.dumps(final))
    tr.pexpire(summary, settings.result_ttl_s * 1000)
    tr.zadd(index, {job_id: final["finished_ms"]})
    tr.zremrangebyrank(index, 0, -1 - settings.jobs_index_size)
