"""Cancelling jobs and listing them: the producer's side.

**Cancel.** One script decides atomically (``lua/cancel.lua``), so a job is never both started
and cancelled: a job with a result is ``finished``; a job a worker holds gets its cancel field set
and its id published to the workers (``worker.job.cancel``): ``cancelling``; a queued job leaves the
queue with a ``cancelled`` result stored and its waiters woken: ``cancelled``. A Redis user that may
not write results (the producer's, ``agentq.protocol.acl``) marks a queued job instead, at the head
of its queue (score 0), and the next worker to take it stores that result.

**Listings.** Every job enters the queue's recent-jobs index when it is enqueued (capped at
``jobs_index_size``). A finished job's listing figures (``agentq.summary``) are filed by the step
that stores its result, and expire with it, and jobs that end ``failed``,
``partial`` or ``cancelled`` enter an index of their status too (an ``ok`` job is found through
the recent index). An unfinished job is described from its record and state in the ``jobs`` hash.
An index entry whose job has left every trace is skipped and dropped when read.

**Tenants** (``agentq.tenants``). Each tenant but the default has indexes of its own, written in the
same steps; the default tenant's jobs are read from the indexes of all, skipping other tenants' ids
(so jobs from before tenants existed are listed as they were). Each tenant has a queue of its own
(``lua/claim.lua``: fair share); listings of the queue itself (queued, running, deferred, the depth,
a purge) read one tenant's queue, or every tenant's merged by score.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from dataclasses import field as field_
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import NoPermissionError

from agentq import tenants
from agentq.contract import JOB_FUNCTION, JobResult, JobStatus
from agentq.protocol import records
from agentq.protocol.keys import INDEXED_STATUSES, Field, field
from agentq.protocol.queue import PRIORITY_RANK, CancelState, Queue, now_ms
from agentq.summary import figures

if TYPE_CHECKING:
    from agentq.settings import Settings

log = logging.getLogger(__name__)
#: Final statuses, as listings filter them.
FINAL_STATUSES: tuple[JobStatus, ...] = ("ok", "partial", "failed", "cancelled")
Unfinished = Literal["queued", "deferred", "in_progress"]
#: Entries read from Redis per round trip when a whole queue is read.
CHUNK = 1000


async def cancel(queue: Queue, settings: Settings, job_id: str, *, queued_only: bool = False) -> CancelState:
    """Cancel ``job_id`` (see the module's docstring); ``not_found`` for an unknown id.

    ``queued_only``: a job a worker holds is left to run (``running``), not told to stop.
    """
    if not queue.writes_results:  # a worker stores the result: no record to read, none to build
        return await queue.cancel(job_id, queued_only=queued_only)
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
        queued_only=queued_only,
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


async def list_jobs(
    queue: Queue, *, status: str | None = None, limit: int = 20, offset: int = 0, tenant: str | None = None
) -> list[JobSummary]:
    """The most recent jobs (newest first), or the most recent finished with ``status``; ``offset`` of them
    skipped; only ``tenant``'s, if one is named."""
    limit += offset
    k, redis = queue.keys, queue.redis
    by_status = str(status) if status in INDEXED_STATUSES else None
    mixed = tenant == tenants.DEFAULT  # the default tenant's jobs are among every tenant's
    wanted = None if status in (None, "all") else str(status)
    # Read more than asked: entries whose job has gone, or (through the recent index) of another status, drop out.
    # A listing of "ok" reads the whole recent index, and the default tenant's reads every tenant's ids first.
    enough = limit * 2 + 10 if wanted is None or by_status else None
    depth = enough if enough is not None and not mixed else -1
    indexes = [
        (s.tenant_index(tenant, by_status) if tenant else "") or (s.by_status(by_status) if by_status else s.index)
        for s in k.every_shard
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for index in indexes:
            pipe.zrevrange(index, 0, depth, withscores=True)
        pages = await pipe.execute()
    # Each shard's index, newest first: merged by score (each index is in that order already).
    merged = sorted(
        ((score, i.decode(), index) for index, page in zip(indexes, pages, strict=True) for i, score in page),
        reverse=True,
    )
    ids = [j for _, j, _ in merged]
    index_of = {j: index for _, j, index in merged}
    if mixed:
        ids = [j for j in ids if tenants.of(j) == tenant]
    ids = ids[:enough]
    if not ids:
        return []
    by_queue: dict[str, list[str]] = {}
    for j in ids:
        by_queue.setdefault(k.job_queue(j), []).append(j)
    by_shard = k.by_shard(ids, str)
    async with redis.pipeline(transaction=False) as pipe:
        for j in ids:  # GETs, not MGET: a cluster pipeline refuses MGET
            pipe.get(k.final(j))
        for shard, members in by_shard:
            pipe.hmget(shard.jobs, [f for j in members for f in (j, *(field(j, name) for name in _LISTED))])
        for queue_key, members in by_queue.items():
            pipe.zmscore(queue_key, members)
        replies = await pipe.execute()
    finals = replies[: len(ids)]
    per_shard, per_queue = replies[len(ids) : len(ids) + len(by_shard)], replies[len(ids) + len(by_shard) :]
    state_of = {
        j: got[4 * n : 4 * n + 4]
        for (_, members), got in zip(by_shard, per_shard, strict=True)
        for n, j in enumerate(members)
    }
    score_of = {
        j: sc
        for members, got in zip(by_queue.values(), per_queue, strict=True)
        for j, sc in zip(members, got, strict=True)
    }
    scores = [score_of[j] for j in ids]
    now = time.time() * 1000
    found, gone = [], []
    for n, job_id in enumerate(ids):
        record, holder, priority, retry_of = state_of[job_id]
        if finals[n] is not None:
            try:
                summary = _finished(job_id, figures_of(finals[n]))
            except (TypeError, ValueError, AttributeError) as exc:  # figures a listing cannot read: not a 500
                log.warning("leaving job %s out of a listing: its figures do not read (%s)", job_id, exc)
                continue
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
    for index in {index_of[j] for j in gone}:
        # The producer's Redis user may not write the finished-job indexes: the workers trim those.
        with contextlib.suppress(NoPermissionError):
            await redis.zrem(index, *(j for j in gone if index_of[j] == index))
    return found[offset:]


#: The state fields a listing reads of each job, after its record.
_LISTED = (Field.HOLDER, Field.PRIORITY, Field.RETRY_OF)


# ------------------------------------------------------------------------------------------ the queue
@dataclass(frozen=True)
class Entry:
    """One job in the queue, as a snapshot saw it."""

    job_id: str
    score: float
    state: Unfinished
    priority: str
    enqueued_ms: float
    """From the score: its enqueue time, the priority's head start taken off again."""
    tenant: str = tenants.DEFAULT


async def snapshot(queue: Queue, settings: Settings, tenant: str | None = None) -> list[Entry]:
    """Every job in the queue (only ``tenant``'s, if one is named), in queue order (next to start first;
    several tenants' queues merged by score), with its state and priority.

    Read in chunks of :data:`CHUNK` (a queue of any length costs Redis no long command); a job that
    ends between two reads is simply not there.
    """
    k, redis = queue.keys, queue.redis
    now = time.time() * 1000
    step_ms = round(settings.priority_step_s * 1000)
    found: list[Entry] = []
    if tenant is not None:
        queues = [(shard, shard.queue_of(tenant)) for shard in k.every_shard]
    else:
        queues = await queue.queues()
    for shard, queue_key in queues:
        start = 0
        while True:
            page = await redis.zrange(queue_key, start, start + CHUNK - 1, withscores=True)
            entries = [(member.decode(), score) for member, score in page]
            fields = [f for j, _ in entries for f in (field(j, Field.HOLDER), field(j, Field.PRIORITY))]
            state = await redis.hmget(shard.jobs, fields) if fields else []  # type: ignore[misc]
            for n, (job_id, score) in enumerate(entries):
                holder, raw_priority = state[2 * n], state[2 * n + 1]
                priority = raw_priority.decode() if raw_priority else "normal"
                unfinished: Unfinished = records.job_state(False, holder is not None, score, now)  # type: ignore[assignment]
                enqueued = score + PRIORITY_RANK.get(priority, 1) * step_ms
                found.append(Entry(job_id, score, unfinished, priority, enqueued, tenants.of(job_id)))
            if len(page) < CHUNK:
                break
            start += CHUNK
    return sorted(found, key=lambda e: e.score) if len(queues) > 1 else found


@dataclass(frozen=True)
class QueueDepth:
    """How many jobs of a queue wait, run and are deferred, by priority, and how long the oldest has waited."""

    queue: str
    queued: dict[str, int]
    running: dict[str, int]
    deferred: dict[str, int]
    oldest_queued_s: float | None
    """How long the job queued longest has waited since it was enqueued (None: nothing is queued)."""
    tenants: dict[str, dict[str, float]] = field_(default_factory=dict)
    """Per tenant with jobs in the queue: ``queued``, ``running``, ``deferred``, and ``share``, its part
    of the jobs running now (0 to 1)."""

    @classmethod
    def of(cls, name: str, entries: list[Entry], *, tenant: str | None = None) -> QueueDepth:
        """The depth of ``entries`` (the whole queue): all of it, or only ``tenant``'s, with that tenant's
        share of what runs."""
        per_tenant: dict[str, dict[str, float]] = {}
        for e in entries:
            row = per_tenant.setdefault(e.tenant, {"queued": 0, "running": 0, "deferred": 0, "share": 0.0})
            row["running" if e.state == "in_progress" else e.state] += 1
        running = sum(row["running"] for row in per_tenant.values())
        for row in per_tenant.values():
            row["share"] = round(row["running"] / running, 4) if running else 0.0
        if tenant is not None:
            entries = [e for e in entries if e.tenant == tenant]
            per_tenant = {tenant: per_tenant[tenant]} if tenant in per_tenant else {}
        counts: dict[str, dict[str, int]] = {
            s: dict.fromkeys(PRIORITY_RANK, 0) for s in ("queued", "in_progress", "deferred")
        }
        for e in entries:
            by_priority = counts[e.state]
            by_priority[e.priority] = by_priority.get(e.priority, 0) + 1
        # A score of 0 is a job cancelled while it waited, waiting for a worker to store its result.
        waiting = [e.enqueued_ms for e in entries if e.state == "queued" and e.score > 0]
        oldest = max(0.0, time.time() - min(waiting) / 1000) if waiting else None
        return cls(name, counts["queued"], counts["in_progress"], counts["deferred"], oldest, per_tenant)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "queued": self.queued,
            "running": self.running,
            "deferred": self.deferred,
            "oldest_queued_s": self.oldest_queued_s,
            "tenants": self.tenants,
        }


async def list_waiting(
    queue: Queue, settings: Settings, *, status: Unfinished, limit: int, offset: int = 0, tenant: str | None = None
) -> list[JobSummary]:
    """Unfinished jobs of one state (only ``tenant``'s, if one is named), in queue order (the next to start
    first), ``limit`` from ``offset``."""
    page = [e for e in await snapshot(queue, settings, tenant) if e.state == status][offset : offset + limit]
    if not page:
        return []
    state_of: dict[str, list[bytes | None]] = {}
    for shard, ids in queue.keys.by_shard([e.job_id for e in page], str):
        fields = [f for j in ids for f in (j, field(j, Field.PRIORITY), field(j, Field.RETRY_OF))]
        got = await queue.redis.hmget(shard.jobs, fields)  # type: ignore[misc]
        state_of.update((j, got[3 * n : 3 * n + 3]) for n, j in enumerate(ids))
    found = []
    for entry in page:
        record, priority, retry_of = state_of[entry.job_id]
        if record is not None:
            found.append(_unfinished(entry.job_id, record, entry.state, priority, retry_of))
    return found


async def purge(queue: Queue, settings: Settings, tenant: str | None = None) -> tuple[list[str], int]:
    """Cancel every job that waits (queued or deferred; only ``tenant``'s, if one is named); running jobs
    are left alone.

    Each job is cancelled by the cancel script, only if it still waits at that moment (a job a
    worker has just taken runs on). Returns the ids cancelled and how many were left because a
    worker took them or they finished meanwhile.
    """
    waiting = [e.job_id for e in await snapshot(queue, settings, tenant) if e.state != "in_progress"]
    cancelled, left = [], 0
    for start in range(0, len(waiting), 100):  # 100 at a time over the pool's connections
        chunk = waiting[start : start + 100]
        states = await asyncio.gather(*(cancel(queue, settings, j, queued_only=True) for j in chunk))
        for job_id, state in zip(chunk, states, strict=True):
            if state == "cancelled":
                cancelled.append(job_id)
            else:
                left += 1
    return cancelled, left
