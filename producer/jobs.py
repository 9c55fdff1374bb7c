"""Cancelling jobs and listing them: the producer's side.

**Cancel.** One script decides atomically (``lua/cancel.lua``), so a job is never both started
and cancelled: a job with a result is ``finished``; a job a worker holds gets its cancel field set
and its id published to the workers (``worker.job.cancel``): ``cancelling``; a queued job leaves the
queue with a ``cancelled`` result stored and its waiters woken: ``cancelled``.

**Listings.** Every job enters the queue's recent-jobs index when it is enqueued (capped at
``jobs_index_size``). A finished job's listing figures (``agentq.summary``) are filed by the step
that stores its result, and expire with it, and jobs that end ``failed``,
``partial`` or ``cancelled`` enter an index of their status too (an ``ok`` job is found through
the recent index). An unfinished job is described from its record and state in the ``jobs`` hash.
An index entry whose job has left every trace is skipped and dropped when read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from agentq.contract import JOB_FUNCTION, JobResult, JobStatus
from agentq.protocol import records
from agentq.protocol.keys import INDEXED_STATUSES, Field, field
from agentq.protocol.queue import CancelState, Queue, now_ms
from agentq.summary import figures

if TYPE_CHECKING:
    from agentq.settings import Settings

#: Final statuses, as listings filter them.
FINAL_STATUSES: tuple[JobStatus, ...] = ("ok", "partial", "failed", "cancelled")
Unfinished = Literal["queued", "deferred", "in_progress"]


async def cancel(queue: Queue, settings: Settings, job_id: str) -> CancelState:
    """Cancel ``job_id`` (see the module's docstring); ``not_found`` for an unknown id."""
    now = now_ms()
    raw = await queue.record(job_id)
    question, args, kwargs, enqueue_ms = "", (), {}, now
    if raw is not None:
        try:
            record = records.decode_job(raw)
            args, kwargs, enqueue_ms = record.args, record.kwargs, record.enqueue_ms
            if args and isinstance(args[0], dict):
                question = str(args[0].get("question", ""))[:2000]
        except records.RecordError:
            pass
    result = JobResult(job_id=job_id, question=question, status="cancelled", errors=["cancelled while queued"])
    dumped = result.model_dump(mode="json")
    _, final = figures(dumped, question=question, priority="", enqueued_ms=enqueue_ms, retry_of=None, finished_ms=now)
    record_bytes = records.encode_result(
        job_id,
        JOB_FUNCTION,
        args,
        kwargs,
        job_try=None,
        enqueue_ms=enqueue_ms,
        success=True,
        result=dumped,
        start_ms=now,
        finish_ms=now,
        queue_name=settings.queue_name,
    )
    return await queue.cancel(
        job_id,
        result=record_bytes,
        result_px=settings.result_ttl_s * 1000,
        final=json.dumps(final, separators=(",", ":")),
        index_size=settings.jobs_index_size,
    )


@dataclass(frozen=True)
class JobSummary:
    """One line of a job listing."""

    job_id: str
    question: str
    status: str
    """queued, deferred, in_progress, or the final status."""
    priority: str
    enqueued_at: float
    """Epoch seconds."""
    finished_at: float | None
    total_s: float | None
    worker_id: str | None
    error: str | None
    retry_of: str | None
    sources: dict[str, list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def figures_of(raw: bytes | str | None) -> dict[str, Any]:
    """A finished job's listing figures as filed (``{}`` if there are none, or they are unreadable)."""
    if raw is None:
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _finished(job_id: str, f: dict[str, Any]) -> JobSummary:
    return JobSummary(
        job_id=job_id,
        question=str(f.get("question", "")),
        status=str(f.get("status", "failed")),
        priority=str(f.get("priority") or "normal"),
        enqueued_at=int(f.get("enqueued_ms") or 0) / 1000,
        finished_at=f["finished_ms"] / 1000 if f.get("finished_ms") else None,
        total_s=f.get("total_s"),
        worker_id=f.get("worker_id"),
        error=f.get("error"),
        retry_of=f.get("retry_of"),
        sources=f.get("sources") or {},
    )


def _unfinished(
    job_id: str, record: bytes, state: Unfinished, priority: bytes | None, retry_of: bytes | None
) -> JobSummary:
    question, enqueued_ms = "", 0
    try:
        decoded = records.decode_job(record)
        enqueued_ms = decoded.enqueue_ms
        if decoded.args and isinstance(decoded.args[0], dict):
            question = str(decoded.args[0].get("question", ""))[:200]
    except records.RecordError:
        pass
    return JobSummary(
        job_id=job_id,
        question=question,
        status=state,
        priority=priority.decode() if priority else "normal",
        enqueued_at=enqueued_ms / 1000,
        finished_at=None,
        total_s=None,
        worker_id=None,
        error=None,
        retry_of=retry_of.decode() if retry_of else None,
        sources={},
    )


async def list_jobs(queue: Queue, *, status: str | None = None, limit: int = 20) -> list[JobSummary]:
    """The most recent jobs (newest first), or the most recent finished with ``status``."""
    k, redis = queue.keys, queue.redis
    index = k.by_status(str(status)) if status in INDEXED_STATUSES else k.index
    wanted = None if status in (None, "all") else str(status)
    # Read more than asked: entries whose job has gone, or (through the recent index) of another status, drop out.
    depth = max(0, limit * 2 + 10) if wanted is None or status in INDEXED_STATUSES else -1
    ids = [i.decode() for i in await redis.zrevrange(index, 0, depth)]
    if not ids:
        return []
    fields = [f for j in ids for f in (j, field(j, Field.HOLDER), field(j, Field.PRIORITY), field(j, Field.RETRY_OF))]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.mget([k.final(j) for j in ids])
        pipe.hmget(k.jobs, fields)
        pipe.zmscore(k.queue, ids)
        finals, state, scores = await pipe.execute()
    now = time.time() * 1000
    found, gone = [], []
    for n, job_id in enumerate(ids):
        record, holder, priority, retry_of = state[4 * n : 4 * n + 4]
        if finals[n] is not None:
            summary = _finished(job_id, figures_of(finals[n]))
        elif record is not None and scores[n] is not None:
            unfinished = records.job_state(False, holder is not None, scores[n], now)
            summary = _unfinished(job_id, record, unfinished, priority, retry_of)  # type: ignore[arg-type]
        else:
            gone.append(job_id)
            continue
        if wanted is not None and summary.status != wanted:
            continue
        found.append(summary)
        if len(found) >= limit:
            break
    if gone:
        await redis.zrem(index, *gone)
    return found
