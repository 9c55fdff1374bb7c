"""Taking jobs off the queue: one Lua script reads the head of the queue and claims the due jobs.

arq polls with ``ZRANGEBYSCORE``, then takes each id with a ``WATCH``/``MULTI`` transaction of its
own (four round trips), then reads the job and counts the try in another transaction. The claim
script does all of it in one round trip, atomically, for as many jobs as the worker has room for:

- the head of the queue is read by rank, lowest score first (so priorities hold), with scores;
- a due job is claimed with ``SET NX PX`` on arq's in-progress key, the lease (``worker.leases``);
  a key already there means another worker runs it, and the job is left alone;
- a claimed job's queue score becomes the moment its lease runs out (the *lease score*, renewed
  with the lease), so the jobs that are running are never "due" and a poll sees only claimable
  work; if the worker dies, its job comes due exactly when its lease lapses;
- the try is counted on arq's retry key and the record read, as arq's ``run_job`` does;
- if due jobs are left that this worker has no room for, the doorbell is rung again, so the next
  idle worker wakes and takes them (a burst wakes the workers one after another, not all at once);
- the first score that is not due yet says when to look again without being rung.

Keys of the claimed jobs are built inside the script (arq's key names, ``agentq.wire``): fine on a
single Redis or behind Sentinel, as arq itself is, not on Redis Cluster.

:func:`release` gives back jobs the worker claimed but will not start (``worker.admission`` said
they would miss their deadline here): lease gone, score and try count restored, bell rung.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentq import wire

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: arq keeps its try counter this long after the latest start (``arq.worker``: 88400 s).
RETRY_KEY_TTL_S = 88_400
#: How many queue entries beyond those it wants the claim looks at (due jobs running elsewhere
#: under an older worker's lease are skipped, not counted).
LOOK_BEYOND = 16

# KEYS: [1] queue, [2] bell. ARGV: [1] now ms, [2] jobs wanted, [3] lease ms, [4] entries to read,
# [5] '1' to take arq's abort requests with the job.
# Returns {more, next due score or '', running elsewhere, read all due, then per job: id, score,
# record or '', try, aborted}.
_CLAIM = f"""
local now, want, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local head = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
local out = {{0, '', 0, 0}}
local taken, stopped = 0, false
for i = 1, #head, 2 do
  local id, score = head[i], head[i + 1]
  if tonumber(score) > now then out[2] = score; stopped = true; break end
  if taken >= want then out[1] = 1; stopped = true; break end
  if redis.call('SET', '{wire.IN_PROGRESS_PREFIX}' .. id, '1', 'NX', 'PX', lease) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, id)
    local retry = '{wire.RETRY_PREFIX}' .. id
    local try = 1
    if not redis.call('SET', retry, '1', 'NX', 'EX', {RETRY_KEY_TTL_S}) then
      try = redis.call('INCR', retry)
      redis.call('EXPIRE', retry, {RETRY_KEY_TTL_S})
    end
    local aborted = 0
    if ARGV[5] == '1' then aborted = redis.call('ZREM', '{wire.ABORT_SET}', id) end
    local record = redis.call('GET', '{wire.JOB_PREFIX}' .. id) or ''
    for _, v in ipairs({{id, score, record, try, aborted}}) do out[#out + 1] = v end
    taken = taken + 1
  else
    out[3] = out[3] + 1
  end
end
if not stopped and #head == 2 * tonumber(ARGV[4]) then out[4] = 1 end
if out[1] == 1 then redis.call('ZADD', KEYS[2], now, 'ring') end
return out
"""

# KEYS: [1] queue, [2] bell. ARGV: [1] now ms, then per job: id, score to restore.
_RELEASE = f"""
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  redis.call('DEL', '{wire.IN_PROGRESS_PREFIX}' .. id)
  redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 1], id)
  if redis.call('DECR', '{wire.RETRY_PREFIX}' .. id) <= 0 then redis.call('DEL', '{wire.RETRY_PREFIX}' .. id) end
end
redis.call('ZADD', KEYS[2], ARGV[1], 'ring')
return 1
"""


@dataclass(frozen=True)
class ClaimedJob:
    """One job the claim took: its queue score before the claim, its record (None if it had gone), its try."""

    job_id: str
    score: int
    record: bytes | None
    job_try: int
    aborted: bool


@dataclass(frozen=True)
class Claim:
    """What one claim found at the head of the queue."""

    jobs: list[ClaimedJob]
    more: bool
    """Due jobs were left because the worker had no more room (the bell was rung for them)."""
    next_due_ms: float | None
    """The score of the first job not due yet (a deferred job, or a running one's lease end)."""
    running_elsewhere: int
    """Due jobs skipped because another worker holds their in-progress key."""
    read_all: bool
    """Every entry read was due: there may be more due jobs beyond them."""


class Claimer:
    """The claim and release scripts, registered on the worker's connection pool."""

    def __init__(self, redis: Redis, queue: str, bell: str, *, lease_s: float, abort: bool) -> None:
        self.queue, self.bell, self.abort = queue, bell, abort
        self.lease_ms = max(1, round(lease_s * 1000))
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, want: int) -> Claim:
        """Claim up to ``want`` due jobs from the head of the queue."""
        now_ms = round(time.time() * 1000)
        args = [now_ms, want, self.lease_ms, want + LOOK_BEYOND, "1" if self.abort else "0"]
        reply = await self._claim(keys=[self.queue, self.bell], args=args)
        more, next_due, elsewhere, read_all = reply[:4]
        jobs = [
            ClaimedJob(
                job_id=_text(reply[i]),
                score=int(float(reply[i + 1])),
                record=bytes(reply[i + 2]) or None,
                job_try=int(reply[i + 3]),
                aborted=bool(reply[i + 4]),
            )
            for i in range(4, len(reply), 5)
        ]
        return Claim(jobs, bool(more), float(next_due) if next_due else None, int(elsewhere), bool(read_all))

    async def release(self, jobs: list[ClaimedJob]) -> None:
        """Give back claimed jobs that will not start here, and ring the bell for another worker."""
        if not jobs:
            return
        args: list[str | int] = [round(time.time() * 1000)]
        for job in jobs:
            args += [job.job_id, job.score]
        await self._release(keys=[self.queue, self.bell], args=args)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
