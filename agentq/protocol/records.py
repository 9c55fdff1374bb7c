"""The job and result records, as arq 0.28 writes them: one codec for every reader.

The producer writes job records and the worker result records; admission, listings, cancel and
the client read them, all through this module. The format is arq's, with JSON for pickle:

- a job: ``{"t": try or null, "f": function, "a": args, "k": kwargs, "et": enqueue epoch ms}``;
- a result: ``{"t": try, "f", "a", "k", "et", "s": success, "r": result, "st": start ms,
  "ft": finish ms, "q": queue, "id": job id}``.

Records are JSON (``agentq.contract.dumps``), never pickle, on both sides: whoever can write to
Redis cannot make a worker run code. ``tests/protocol/test_records.py`` checks this codec against
arq's own ``serialize_job`` and ``deserialize_result``, whose sources it pins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentq.contract import dumps, loads

JobState = Literal["queued", "deferred", "in_progress", "complete", "not_found"]

#: The arq release whose format and function registry this project follows (pyproject.toml pins it).
ARQ_VERSION = "0.28.0"
#: sha256 of ``inspect.getsource`` of everything of arq this project mirrors (the records, here) or
#: uses (the function registry, ``worker.engine``), for arq 0.28.0. ``tests/protocol/test_records.py``
#: compares them with the installed arq: an upgrade that changes one fails there, by name.
ARQ_PINNED: dict[str, str] = {
    "arq.jobs.serialize_job": "1fc854cc50e16e5c87d1844690acf67aed89338ee28f456f61ecf504c96d99cd",
    "arq.jobs.serialize_result": "709b9d4709d5aa083f098619ca24c5b7b6159841a9902ec38ac8dc0ea411b942",
    "arq.jobs.deserialize_result": "500bdf28141b60f8fbd141d1b53772bc8e5fa59610d9319314c2b9c55499b13d",
    "arq.worker.func": "f44ddaf9b8a2bdbb75ce751afc51bc7f603e014adfc5f763f13e760d24f3e08f",
    "arq.worker.Function": "98fad4a733bbb7d9aa55073392236842bfaaf999a8a3aa17353732ce7c227bcb",
}


class RecordError(ValueError):
    """A record in Redis is not in arq's format (or not JSON)."""


def encode_job(function: str, args: tuple[Any, ...], kwargs: dict[str, Any], enqueue_ms: int) -> bytes:
    """A job record, exactly as ``arq.jobs.serialize_job`` writes it with our JSON serializer."""
    return dumps({"t": None, "f": function, "a": args, "k": kwargs, "et": enqueue_ms})


class RawJSON(bytes):
    """A value already in JSON (a pydantic model's own serialisation), put into a record as it is."""


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
    (the producer stores one itself when it cancels a job that never started).

    A :class:`RawJSON` result goes in as it is, last: no dict of it is built and encoded again.
    """
    record = {
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
    if isinstance(result, RawJSON):
        del record["r"]
        return dumps(record)[:-1] + b',"r":' + bytes(result) + b"}"
    return dumps(record)


@dataclass(frozen=True)
class JobRecord:
    """A job as its producer wrote it (under its id in the queue's jobs hash)."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enqueue_ms: int


def decode_job(raw: bytes | str) -> JobRecord:
    """Read a job record; raise :class:`RecordError` if it is not one."""
    try:
        d = loads(raw)
        return JobRecord(function=d["f"], args=tuple(d["a"]), kwargs=dict(d["k"]), enqueue_ms=int(d["et"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise RecordError(f"not an arq job record: {exc}") from exc


@dataclass(frozen=True)
class ResultRecord:
    """A job's outcome as its worker stored it."""

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
    """Read a result record; raise :class:`RecordError` if it is not one."""
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
        raise RecordError(f"not an arq result record: {exc}") from exc


def job_state(has_result: bool, in_progress: bool, score: float | None, now_ms: float) -> JobState:
    """A job's state from its three marks: a result, a lease holder, a queue score (in that order)."""
    if has_result:
        return "complete"
    if in_progress:
        return "in_progress"
    if score is not None:
        return "deferred" if score > now_ms else "queued"
    return "not_found"
