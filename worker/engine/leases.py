"""Job leases, renewed while the job runs, and how long a worker rides through a Redis outage.

A claimed job's queue score is the end of its lease (``lua/claim.lua``): a running job is never
due, and a dead worker's job comes due when its lease lapses, within ``lease_s`` (a few seconds),
instead of after arq's longest job timeout + 10 s. The worker holding the lease pushes it back
every third of ``lease_s`` for every job it still runs (``lua/renew.lua``), so a live worker's
long job is never taken from it.

A lapsed lease is a death only to a worker that can tell: one that lost Redis itself within the
last lease (the renewer's failures count too) was cut off like everyone else may have been, so
its claims spare other workers' lapsed leases instead of taking their jobs (``lua/claim.lua``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from agentq.protocol.queue import Queue

log = logging.getLogger(__name__)


async def renew_leases_forever(
    queue: Queue,
    worker_id: str,
    running: Callable[[], Iterable[str]],
    lease_s: float,
    on_failure: Callable[[], None] = lambda: None,
) -> None:
    """Every ``lease_s / 3``, push back the lease (its queue score) of every job this worker runs.

    A renewal that fails (Redis unreachable, or any other error) is logged and tried again at the
    next tick: the lease has two more ticks before it runs out (``on_failure`` is told). A lease found held by another
    worker (it lapsed, and that worker took the job) is logged: the job runs on here too, and the
    first result stored wins. Only cancellation stops the loop.
    """
    lease_ms = max(1, round(lease_s * 1000))
    while True:
        await asyncio.sleep(lease_s / 3)
        job_ids = list(running())
        if not job_ids:
            continue
        try:
            lost = await queue.renew(worker_id, job_ids, lease_ms=lease_ms)
        except REDIS_DOWN as exc:
            log.warning("could not renew the leases of %d jobs: %s", len(job_ids), exc)
            on_failure()
            continue
        except Exception:  # e.g. READONLY after a failover: never let the renewer die quietly
            log.exception("could not renew the leases of %d jobs; trying again next tick", len(job_ids))
            on_failure()
            continue
        for job_id in lost:
            log.warning("job %s: its lease lapsed and another worker took it; the first result stored wins", job_id)


class OutageBudget:
    """How long the worker keeps going while Redis is unreachable before it gives up."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.down_since: float | None = None
        self.last_failure: float | None = None
        """When Redis last failed this worker (monotonic), in the loop or elsewhere."""

    def clock(self) -> float:
        """Now, on the clock the budget is kept by."""
        return time.monotonic()

    def allowance(self) -> float:
        """How long an attempt may take before it counts as failed: the budget left (all of it, while up)."""
        if self.down_since is None:
            return self.budget_s
        return max(0.1, self.budget_s - (time.monotonic() - self.down_since))

    def failed(self, exc: BaseException, since: float | None = None) -> float:
        """Note a failure of an attempt begun at ``since`` (:meth:`clock`; default now); return how long to
        wait before the next attempt, or re-raise once Redis has been unreachable past the budget.

        The outage counts from the start of the first failed attempt: one attempt can take long (a
        name that no longer resolves, redis-py's own retries), and the budget is the outage's, not
        the time since the first error surfaced (that made a 30 s budget end a worker at ~64 s).
        """
        now = self.last_failure = time.monotonic()
        if self.down_since is None:
            self.down_since = now if since is None else min(since, now)
            log.warning("Redis unreachable (%s); retrying for up to %gs", exc, self.budget_s)
        if now - self.down_since > self.budget_s:
            log.error("Redis unreachable for %.1fs; giving up", now - self.down_since)
            raise exc
        return min(1.0, 0.05 * 2.0 ** min(10, int(now - self.down_since)))

    def noticed(self) -> None:
        """Note a failure seen beside the loop (a lease renewal): it spends none of the budget."""
        self.last_failure = time.monotonic()

    def within(self, seconds: float) -> bool:
        """Whether Redis failed this worker within the last ``seconds``."""
        return self.last_failure is not None and time.monotonic() - self.last_failure < seconds

    def succeeded(self) -> None:
        """Note that Redis answered again."""
        if self.down_since is not None:
            log.warning("Redis reachable again after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
