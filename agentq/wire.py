"""arq's Redis format, written and read without importing arq.

Importing anything from arq imports ``arq.worker`` (its ``__init__`` does), so the producer
speaks arq's format itself and loads no worker runtime. This module is the whole of that format,
as arq 0.28.0 (the pinned version) writes and reads it:

=====================  ===================================================================
``<queue>``            a sorted set of job ids, scored by the epoch ms at which each may start
``arq:job:<id>``       the job: ``{"t": try or null, "f": function, "a": args, "k": kwargs,
                       "et": enqueue epoch ms}``, expiring ``JOB_EXPIRY_MS`` after its score
``arq:in-progress:<id>``  exists while a worker runs the job (here: a renewed lease)
``arq:retry:<id>``     how many times the job has started
``arq:result:<id>``    the outcome: ``{"t", "f", "a", "k", "et", "s": success, "r": result,
                       "st": start ms, "ft": finish ms, "q": queue, "id": job id}``
=====================  ===================================================================

Records are JSON (``agentq.contract.dumps``), never pickle, on both sides. ``tests/arqfork/``
checks this module against arq's own ``serialize_job``, ``deserialize_result`` and
``Job.status`` and pins the source of every arq function it mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentq.contract import dumps, loads

JOB_PREFIX = "arq:job:"
IN_PROGRESS_PREFIX = "arq:in-progress:"
RESULT_PREFIX = "arq:result:"
RETRY_PREFIX = "arq:retry:"
#: arq's sorted set of job ids asked to abort.
ABORT_SET = "arq:abort"
#: How long a job's record outlives its score (arq's ``expires_extra_ms``): a job still queued
#: after this is failed by the worker that finally takes it, without running.
JOB_EXPIRY_MS = 86_400_000

JobState = Literal["queued", "deferred", "in_progress", "complete", "not_found"]


class WireError(ValueError):
    """A record in Redis is not in arq's format (or not JSON)."""


def encode_job(function: str, args: tuple[Any, ...], kwargs: dict[str, Any], enqueue_ms: int) -> bytes:
    """A job record, exactly as ``arq.jobs.serialize_job`` writes it with our JSON serializer."""
    return dumps({"t": None, "f": function, "a": args, "k": kwargs, "et": enqueue_ms})


def encode_result(
    job_id: str,
    function: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    job_try: int | None,
    enqueue_ms: int,
    success: bool,
    result: Any,
    start_ms: int,
    finish_ms: int,
    queue_name: str,
) -> bytes:
    """A result record, exactly as ``arq.jobs.serialize_result`` writes it with our JSON serializer
    (the producer stores one itself when it cancels a job that never started)."""
    return dumps(
        {
            "t": job_try,
            "f": function,
            "a": args,
            "k": kwargs,
            "et": enqueue_ms,
            "s": success,
            "r": result,
            "st": start_ms,
            "ft": finish_ms,
            "q": queue_name,
            "id": job_id,
        }
    )


@dataclass(frozen=True)
class JobRecord:
    """What a producer stored under ``arq:job:<id>``."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enqueue_ms: int


def decode_job(raw: bytes | str) -> JobRecord:
    """Read a job record; raise :class:`WireError` if it is not one."""
    try:
        d = loads(raw)
        return JobRecord(function=d["f"], args=tuple(d["a"]), kwargs=dict(d["k"]), enqueue_ms=int(d["et"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise WireError(f"not an arq job record: {exc}") from exc


@dataclass(frozen=True)
class ResultRecord:
    """What a worker stored under ``arq:result:<id>``."""

    job_try: int | None
    function: str
    args: tuple[Any, ...]
    success: bool
    result: Any
    enqueue_ms: int
    start_ms: int
    finish_ms: int
    job_id: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)


def decode_result(raw: bytes | str) -> ResultRecord:
    """Read a result record; raise :class:`WireError` if it is not one."""
    try:
        d = loads(raw)
        return ResultRecord(
            job_try=d["t"],
            function=d["f"],
            args=tuple(d["a"]),
            success=bool(d["s"]),
            result=d["r"],
            enqueue_ms=int(d["et"]),
            start_ms=int(d["st"]),
            finish_ms=int(d["ft"]),
            job_id=d.get("id"),
            kwargs=dict(d.get("k") or {}),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise WireError(f"not an arq result record: {exc}") from exc


def job_state(has_result: bool, in_progress: bool, score: float | None, now_ms: float) -> JobState:
    """A job's state from its three marks, in arq's order of precedence (``Job.status``)."""
    if has_result:
        return "complete"
    if in_progress:
        return "in_progress"
    if score:
        return "deferred" if score > now_ms else "queued"
    return "not_found"
