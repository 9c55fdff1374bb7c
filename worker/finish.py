"""Ending a job: one Lua script stores the outcome, clears arq's marks, ends the progress log and
wakes whoever waits.

arq ends a job with a transaction, and then our features each made their own calls: the done
notification, the progress log's last events and its ``job_done`` entry (after a look at whether
the result was stored), the deduplication marker (a script of its own). Here all of it is one
script, one round trip, in an order no crash can break:

- ``finish``: the result is stored with ``SET NX``, so the first complete result of a job run twice
  is kept (arq's own ``finish_job`` overwrites it); the job's record, try counter and in-progress
  key go and it leaves the queue, as in arq;
- ``requeue`` (the run ended without a result: a stop, a ``Retry``): the lease goes, the job gets its
  queue score back (its place in line, or the later time a ``Retry`` asked for) and the doorbell
  rings so an idle worker takes it;
- the events the job's progress publisher had not written yet, and the last one (``job_done`` if a
  result is stored, else ``requeued``), go into the progress log as one entry, whose expiry is
  pushed back;
- only the run whose result was stored deletes the dedup marker: while the job was unfinished the
  marker could name no other job, so no compare is needed, and a duplicate run that ends later
  leaves alone the marker of whatever job has the question now;
- the run whose result was stored files the job's listing entry (``worker.listing``);
- the done channel gets the stored result itself, so a waiting client needs no second read (or
  ``1`` when an earlier run's result was kept).

Jobs that end in the same turn of the event loop (a burst of short jobs ends many at once) share
one round trip: their scripts go to Redis in one pipeline.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import NoScriptError

from agentq import wire
from agentq.keys import Keys
from worker.listing import Filing

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Entries kept per progress log: a job writes a handful.
STREAM_MAXLEN = 1000

# KEYS: [1] queue, [2] in-progress, [3] retry, [4] job, [5] result, [6] abort set, [7] progress log,
#       [8] dedup marker or '', [9] bell, [10] listing summary or '', [11] listing status index or ''
# ARGV: [1] job id, [2] 'finish' or 'requeue', [3] result record or '', [4] result px or '' (forever),
#       [5] keep the in-progress key this many ms, or '' (delete it), [6] requeue score,
#       [7] pending events (JSON objects joined by ','), [8] job_done event, [9] requeued event,
#       [10] progress ttl s, [11] done channel, [12] '1' if arq's abort requests are honoured, [13] now ms,
#       [14] listing's final figures (JSON), [15] summary px, [16] finished ms, [17] index size
# Returns 1 if this run's result was stored, else 0.
_SCRIPT = f"""
local stored, done = 0, false
if ARGV[2] == 'finish' then
  if ARGV[3] ~= '' then
    local ok
    if ARGV[4] == '' then ok = redis.call('SET', KEYS[5], ARGV[3], 'NX')
    else ok = redis.call('SET', KEYS[5], ARGV[3], 'NX', 'PX', ARGV[4]) end
    if ok then stored = 1 end
    done = true
  else
    done = redis.call('EXISTS', KEYS[5]) == 1
  end
  if ARGV[5] == '' then redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  else redis.call('PEXPIRE', KEYS[2], ARGV[5]); redis.call('DEL', KEYS[3], KEYS[4]) end
  if ARGV[12] == '1' then redis.call('ZREM', KEYS[6], ARGV[1]) end
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  if ARGV[5] == '' then redis.call('DEL', KEYS[2]) else redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
  redis.call('ZADD', KEYS[1], 'XX', ARGV[6], ARGV[1])
  redis.call('ZADD', KEYS[9], ARGV[13], 'ring')
  done = redis.call('EXISTS', KEYS[5]) == 1
end
local last = ARGV[9]
if done then last = ARGV[8] end
local entry = '[' .. last .. ']'
if ARGV[7] ~= '' then entry = '[' .. ARGV[7] .. ',' .. last .. ']' end
redis.call('XADD', KEYS[7], 'MAXLEN', '~', {STREAM_MAXLEN}, '*', 'e', entry)
redis.call('EXPIRE', KEYS[7], ARGV[10])
if stored == 1 and KEYS[8] ~= '' then redis.call('DEL', KEYS[8]) end
if stored == 1 and KEYS[10] ~= '' then
  redis.call('HSETNX', KEYS[10], 'final', ARGV[14])
  redis.call('PEXPIRE', KEYS[10], ARGV[15])
  redis.call('ZADD', KEYS[11], ARGV[16], ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[11], 0, -1 - tonumber(ARGV[17]))
end
if ARGV[2] == 'finish' then
  if stored == 1 then redis.call('PUBLISH', ARGV[11], ARGV[3]) else redis.call('PUBLISH', ARGV[11], '1') end
end
return stored
"""


@dataclass(frozen=True)
class Tail:
    """The end of a job's progress log: what is still unwritten, the two possible last events, the marker."""

    pending: list[str]
    """Events (JSON objects) not written yet, in order."""
    job_done: str
    requeued: str
    marker: str | None
    """The dedup marker of the job's request, if it has one."""


class Finisher:
    """The finish script, registered on the worker's connection pool; calls in one loop turn are batched."""

    def __init__(self, redis: Redis, keys: Keys, queue: str, *, progress_ttl_s: int, abort: bool) -> None:
        self.keys, self.queue, self.progress_ttl_s, self.abort = keys, queue, progress_ttl_s, abort
        self.redis = redis
        self._script = redis.register_script(_SCRIPT)
        self._batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        job_id: str,
        mode: Literal["finish", "requeue"],
        tail: Tail,
        *,
        result: bytes | None = None,
        result_px: int | None = None,
        keep_in_progress_ms: int | None = None,
        requeue_score: float = 0,
        filing: Filing | None = None,
    ) -> bool:
        """End one run of ``job_id``; True if its result is the one stored."""
        keys = [
            self.queue,
            wire.IN_PROGRESS_PREFIX + job_id,
            wire.RETRY_PREFIX + job_id,
            wire.JOB_PREFIX + job_id,
            wire.RESULT_PREFIX + job_id,
            wire.ABORT_SET,
            self.keys.progress(job_id),
            tail.marker or "",
            self.keys.bell(self.queue),
            filing.summary_key if filing else "",
            filing.index_key if filing else "",
        ]
        args: list[str | bytes | int] = [
            job_id,
            mode,
            result or b"",
            "" if result_px is None else result_px,
            "" if keep_in_progress_ms is None else keep_in_progress_ms,
            repr(float(requeue_score)),
            ",".join(tail.pending),
            tail.job_done,
            tail.requeued,
            self.progress_ttl_s,
            self.keys.done_channel(job_id),
            "1" if self.abort else "0",
            round(time.time() * 1000),
            *((filing.final, filing.summary_px, filing.finished_ms, filing.index_size) if filing else ("", 0, 0, 0)),
        ]
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._batch.append((keys, args, reply))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return bool(await reply)

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._send(batch), name="agentq-finish")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._run([(keys, args) for keys, args, _ in batch])
        except BaseException as exc:  # every run of the batch hears of it (REDIS_DOWN: an outage)
            for _, _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, _, reply), outcome in zip(batch, replies, strict=True):
            if reply.done():
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)

    async def _run(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        if len(calls) == 1:  # redis-py's script call loads the script itself if Redis lost it
            keys, args = calls[0]
            return [await self._script(keys=keys, args=args)]
        replies = await self._pipelined(calls)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:  # a restarted Redis forgot the script (nothing ran for those): load it, send them again
            await self.redis.script_load(_SCRIPT)
            for i, reply in zip(lost, await self._pipelined([calls[i] for i in lost]), strict=True):
                replies[i] = reply
        return replies

    async def _pipelined(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
