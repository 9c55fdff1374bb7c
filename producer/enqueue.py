"""Putting a job on the queue: one Lua script, one round trip, one atomic step.

The script does what arq's ``enqueue_job`` does (the job record under arq's job key, its id in the
queue at its score, arq's expiry) plus what arq does not: the deduplication marker, checked and
written in the same step, and a ring of the queue's doorbell (``Keys.bell``), which wakes one idle
worker blocked on it (``worker.doorbell``) instead of leaving the job to the next poll.

With a marker, the script first reads it. If it names a job that is still unfinished (arq's
order: a result means complete, else an in-progress key or a queue score means unfinished), the
caller joins that job, and a higher priority moves a still-queued job up (``ZADD XX LT``); it is
never moved down. Otherwise a new job is written and the marker names it, and with it the job's
listing entry (its summary hash, expiring with the job) and its place in the recent-jobs index,
trimmed to its size (``producer.jobs`` reads both). A script runs
atomically, so two producers asking the same question at once make one job between them, with no
optimistic retry loop.

Keys are passed as ``KEYS`` except those of the job a marker names, which are only known inside
the script: fine on a single Redis or behind Sentinel, as arq itself is; not on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentq import wire

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS: [1] the new job's key, [2] the queue, [3] the bell, [4] the marker ('' = no dedup),
#       [5] the new job's summary hash, [6] the recent-jobs index
# ARGV: [1] new job id, [2] job record, [3] job expiry ms, [4] score, [5] now ms, [6] marker expiry ms,
#       [7] index score (fractional ms: ties keep their order), [8] index size,
#       [9...] the summary's fields and values, in pairs
# Returns {job id, 1 if it joined an unfinished job else 0}.
_SCRIPT = f"""
local marker = KEYS[4]
local score, now = tonumber(ARGV[4]), tonumber(ARGV[5])
if marker ~= '' then
  local current = redis.call('GET', marker)
  if current then
    if redis.call('EXISTS', '{wire.RESULT_PREFIX}' .. current) == 0 then
      local running = redis.call('EXISTS', '{wire.IN_PROGRESS_PREFIX}' .. current) == 1
      local queued = redis.call('ZSCORE', KEYS[2], current)
      if running or queued then
        if not running and tonumber(queued) <= now + 1 then  -- queued, not deferred (1 ms: rounding)
          redis.call('ZADD', KEYS[2], 'XX', 'LT', score, current)
        end
        return {{current, 1}}
      end
    end
  end
end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[2], score, ARGV[1])
if marker ~= '' then redis.call('PSETEX', marker, ARGV[6], ARGV[1]) end
redis.call('HSET', KEYS[5], unpack(ARGV, 9))
redis.call('PEXPIRE', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - tonumber(ARGV[8]))
redis.call('ZADD', KEYS[3], now, 'ring')
return {{ARGV[1], 0}}
"""


@dataclass(frozen=True)
class Enqueued:
    """What ``submit`` did: the job id, and whether it joined an identical job already in flight."""

    job_id: str
    deduplicated: bool


class Enqueuer:
    """The enqueue script registered on one client (redis-py loads it once, then calls it by digest)."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_SCRIPT)

    async def __call__(
        self,
        *,
        job_id: str,
        record: bytes,
        queue: str,
        bell: str,
        score: float,
        now_ms: int,
        marker: str | None,
        summary: str,
        summary_fields: dict[str, str],
        index: str,
        index_score: float,
        index_size: int,
    ) -> Enqueued:
        """Write job ``job_id`` and its listing entry (or join the unfinished one ``marker`` names)
        and ring the bell."""
        keys = [wire.JOB_PREFIX + job_id, queue, bell, marker or "", summary, index]
        args: list[str | bytes | int] = [job_id, record, wire.JOB_EXPIRY_MS, repr(score), now_ms, wire.JOB_EXPIRY_MS]
        args += [repr(index_score), index_size]
        args += [item for pair in summary_fields.items() for item in pair]
        found, joined = await self._script(keys=keys, args=args)
        return Enqueued(found.decode() if isinstance(found, bytes) else str(found), bool(joined))
