"""Heartbeated job leases, and how long a worker rides through a Redis outage.

arq marks a running job with ``arq:in-progress:<id>`` and sets it to expire after the longest job
timeout + 10 s: a job whose worker was SIGKILLed waits that long before anyone runs it again, and
a job that runs longer than that is started a second time. A *lease* fixes both: the key lives
``lease_s`` (a few seconds) and the worker renews it every third of that for every job it is
still running, so a dead worker's jobs come back within one lease while a live worker's long jobs
are never taken from it.

arq itself offers none of this, hence the hand-written pieces here; ``worker.arqfork`` wires them
into arq's worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from agentq import wire
from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from arq.connections import ArqRedis

log = logging.getLogger(__name__)


async def renew_leases_forever(redis: ArqRedis, running: Callable[[], Iterable[str]], lease_s: float) -> None:
    """Every ``lease_s / 3``, push back the expiry of the in-progress key of every running job.

    A renewal that fails (Redis unreachable, or any other error) is logged and tried again at the
    next tick: the lease has two more ticks before it runs out. Only cancellation stops the loop.
    """
    lease_ms = max(1, round(lease_s * 1000))
    while True:
        await asyncio.sleep(lease_s / 3)
        job_ids = list(running())
        if not job_ids:
            continue
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    # PEXPIRE on a key that is gone (the job just finished) does nothing.
                    pipe.pexpire(wire.IN_PROGRESS_PREFIX + job_id, lease_ms)
                await pipe.execute()
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
