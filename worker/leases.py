"""Heartbeated job leases, and how long a worker rides through a Redis outage.

arq marks a running job with ``arq:in-progress:<id>`` and sets it to expire after the longest job
timeout + 10 s: a job whose worker was SIGKILLed waits that long before anyone runs it again, and
a job that runs longer than that is started a second time. A *lease* fixes both: the key lives
``lease_s`` (a few seconds) and the worker renews it every third of that for every job it is
still running, so a dead worker's jobs come back within one lease while a live worker's long jobs
are never taken from it. The job's queue score moves with its lease (the *lease score*, see
``worker.claim``): a running job is never due, and a dead worker's job comes due when its lease ends.

arq itself offers none of this, hence the hand-written pieces here; ``worker.arqfork`` wires them
into arq's worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from agentq import wire
from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from arq.connections import ArqRedis

log = logging.getLogger(__name__)

# KEYS: [1] the queue. ARGV: [1] lease ms, [2] now ms, then the job ids.
# A key that is gone (the job just finished, or went back to the queue) is left gone, and so is the
# score: a job put back in the queue keeps the score its requeue gave it.
_RENEW = f"""
local lease = tonumber(ARGV[1])
for i = 3, #ARGV do
  if redis.call('PEXPIRE', '{wire.IN_PROGRESS_PREFIX}' .. ARGV[i], lease) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[2]) + lease, ARGV[i])
  end
end
return 1
"""


async def renew_leases_forever(
    redis: ArqRedis, queue: str, running: Callable[[], Iterable[str]], lease_s: float
) -> None:
    """Every ``lease_s / 3``, push back the lease (in-progress key and queue score) of every running job.

    A renewal that fails (Redis unreachable, or any other error) is logged and tried again at the
    next tick: the lease has two more ticks before it runs out. Only cancellation stops the loop.
    """
    lease_ms = max(1, round(lease_s * 1000))
    renew = redis.register_script(_RENEW)
    while True:
        await asyncio.sleep(lease_s / 3)
        job_ids = list(running())
        if not job_ids:
            continue
        try:
            args: list[Any] = [lease_ms, round(time.time() * 1000), *job_ids]
            await renew(keys=[queue], args=args)
        except REDIS_DOWN as exc:
            log.warning("could not renew the leases of %d jobs: %s", len(job_ids), exc)
        except Exception:  # e.g. READONLY after a failover: never let the renewer die quietly
            log.exception("could not renew the leases of %d jobs; trying again next tick", len(job_ids))


class OutageBudget:
    """How long the worker keeps going while Redis is unreachable before it gives up."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> float:
        """Note a failure; return how long to wait before the next attempt, or re-raise past the budget."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("Redis unreachable (%s); retrying for up to %gs", exc, self.budget_s)
        elif now - self.down_since > self.budget_s:
            log.error("Redis unreachable for %.1fs; giving up", now - self.down_since)
            raise exc
        return min(1.0, 0.05 * 2.0 ** min(10, int(now - self.down_since)))

    def succeeded(self) -> None:
        """Note that Redis answered again."""
        if self.down_since is not None:
            log.warning("Redis reachable again after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
