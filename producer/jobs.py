"""Cancelling jobs and listing them: the producer's side, in Redis terms.

**Cancel.** One Lua script decides atomically, so a job is never both started and cancelled:

- a result is stored: ``finished``, nothing to do;
- a worker holds the job (``arq:in-progress:<id>``): set the job's cancel marker and publish its id
  on the cancel channel, which every worker follows (``worker.cancel``): ``cancelling``;
- the job is in the queue: take it out, delete its record, store a ``cancelled`` result (``SET NX``:
  first result wins, as everywhere) and wake its waiters: ``cancelled``. The script also touches
  the in-progress key, so a worker between reading the queue and claiming the job loses its claim
  (its ``WATCH`` fails) and the job never starts.

**Listings.** Every job has a small summary hash, ``<prefix>:jobinfo:<id>``, written with the job
in the producer's enqueue transaction (question, priority, enqueue time) and completed by the worker
in the transaction that stores its result (``final``: status, timings, per-source figures; ``HSETNX``,
so the first result's figures win). Two kinds of capped sorted sets index them: every recent job by
enqueue time, and recent finished jobs by final status. Each write trims its index to
``jobs_index_size`` in the same round trip; a summary expires with its job (its result's TTL once
finished), and an index entry whose summary has gone is skipped and dropped when read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from agentq import wire
from agentq.contract import JobResult, JobStatus
from agentq.keys import Keys
from agentq.settings import Settings
from agentq.summary import final_summary

CancelState = Literal["cancelled", "cancelling", "finished", "not_found"]
#: Final statuses, each with an index of its own.
FINAL_STATUSES: tuple[JobStatus, ...] = ("ok", "partial", "failed", "cancelled")

# KEYS: job, result, in-progress, queue, cancel marker, summary, cancelled index
# ARGV: job id, result record, result ttl ms, marker ttl ms, cancel channel, done channel, final json,
#       now ms, index size
_CANCEL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[4])
  redis.call('PUBLISH', ARGV[5], ARGV[1])
  return 'cancelling'
end
if redis.call('ZREM', KEYS[4], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[3], 'cancelled')
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3], 'NX')
  if redis.call('EXISTS', KEYS[6]) == 1 then
    redis.call('HSETNX', KEYS[6], 'final', ARGV[7])
    redis.call('PEXPIRE', KEYS[6], ARGV[3])
  end
  redis.call('ZADD', KEYS[7], ARGV[8], ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -1 - tonumber(ARGV[9]))
  redis.call('PUBLISH', ARGV[6], '1')
  return 'cancelled'
end
return 'not_found'
"""


async def cancel(redis: Redis, settings: Settings, job_id: str) -> CancelState:
    """Cancel ``job_id`` (see the module's docstring); ``not_found`` for an unknown id."""
    keys = Keys(settings.key_prefix)
    now_ms = round(time.time() * 1000)
    raw = await redis.get(Keys.job(job_id))
    question, function, args, kwargs, enqueue_ms = "", "", (), {}, now_ms
    if raw is not None:
        try:
            record = wire.decode_job(raw)
            function, args, kwargs, enqueue_ms = record.function, record.args, record.kwargs, record.enqueue_ms
            if args and isinstance(args[0], dict):
                question = str(args[0].get("question", ""))[:2000]
        except wire.WireError:
            pass
    result = JobResult(job_id=job_id, question=question, status="cancelled", errors=["cancelled while queued"])
    record_bytes = wire.encode_result(
        job_id,
        function,
        args,
        kwargs,
        job_try=None,
        enqueue_ms=enqueue_ms,
        success=True,
        result=result.model_dump(mode="json"),
        start_ms=now_ms,
        finish_ms=now_ms,
        queue_name=settings.queue_name,
    )
    script = redis.register_script(_CANCEL)
    state = await script(
        keys=[
            Keys.job(job_id),
            Keys.result(job_id),
            Keys.in_progress(job_id),
            settings.queue_name,
            keys.cancel(job_id),
            keys.summary(job_id),
            keys.jobs_by_status("cancelled"),
        ],
        args=[
            job_id,
            record_bytes,
            settings.result_ttl_s * 1000,
            wire.JOB_EXPIRY_MS,
            keys.cancel_channel,
            keys.done_channel(job_id),
            json.dumps(final_summary(result, now_ms)),
            now_ms,
            settings.jobs_index_size,
        ],
    )
    decoded = state.decode() if isinstance(state, bytes) else str(state)
    return decoded if decoded in ("cancelled", "cancelling", "finished") else "not_found"  # type: ignore[return-value]


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


def summary_fields(question: str, priority: str, enqueued_ms: int, retry_of: str | None) -> dict[str, str]:
    """The fields the producer writes with a new job."""
    fields = {"question": question[:200], "priority": priority, "enqueued_ms": str(enqueued_ms)}
    if retry_of:
        fields["retry_of"] = retry_of
    return fields


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


async def list_jobs(
    redis: Redis, settings: Settings, *, status: str | None = None, limit: int = 20
) -> list[JobSummary]:
    """The most recent jobs (newest first), or the most recent finished with ``status``."""
    keys = Keys(settings.key_prefix)
    index = keys.jobs_index if status in (None, "all") else keys.jobs_by_status(str(status))
    # Read a little more than asked: entries whose summary expired, or whose status moved on, drop out.
    ids = [i.decode() for i in await redis.zrevrange(index, 0, max(0, limit * 2 + 10))]
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(keys.summary(job_id))
            pipe.exists(Keys.result(job_id))
            pipe.exists(Keys.in_progress(job_id))
            pipe.zscore(settings.queue_name, job_id)
        replies = await pipe.execute()
    now_ms = time.time() * 1000
    found, gone = [], []
    for n, job_id in enumerate(ids):
        raw, has_result, running, score = replies[4 * n : 4 * n + 4]
        fields = _decode(raw)
        if not fields:
            gone.append(job_id)
            continue
        final = json.loads(fields["final"]) if "final" in fields else {}
        state = final.get("status") or wire.job_state(bool(has_result), bool(running), score, now_ms)
        if state == "complete":  # arq stored the result itself (a job it could not run)
            state = "failed"
        if status not in (None, "all") and state != status:
            continue
        found.append(
            JobSummary(
                job_id=job_id,
                question=fields.get("question", ""),
                status=str(state),
                priority=fields.get("priority", "normal"),
                enqueued_at=int(fields.get("enqueued_ms", "0")) / 1000,
                finished_at=final["finished_ms"] / 1000 if final.get("finished_ms") else None,
                total_s=final.get("total_s"),
                worker_id=final.get("worker_id"),
                error=final.get("error"),
                retry_of=fields.get("retry_of"),
                sources=final.get("sources", {}),
            )
        )
        if len(found) >= limit:
            break
    if gone:
        await redis.zrem(index, *gone)
    return found
