"""The queue's doorbell: an idle worker blocks on Redis until there is work, instead of polling.

arq polls the queue every ``poll_delay`` (10 ms here before): about a hundred commands a second
per idle worker, before any job arrives. Now enqueueing rings a bell (``Keys.bell``: a sorted set
with one member, so a thousand rings are still one) and an idle worker waits on it with
``BZPOPMIN`` on a connection of its own. One ring wakes one worker (Redis serves blocked clients
first come, first served), so there is no thundering herd; the worker that finds more due jobs
than it can take rings again for the next one (``lua/claim.lua``).

The wait has a timeout: the fallback poll (``poll_delay_s``) for work that rang no bell (a job
written by plain arq, a ring lost with a Redis restart), or sooner when the queue says a job comes
due then (a deferred job, a dead worker's lease running out). It stays below the socket timeout,
so a Redis that stopped answering is still noticed, and it rides outages like every other call:
the connection comes from ``agentq.connection`` and its errors are the worker's outage handling's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentq.connection import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.settings import Settings

#: How far below the socket timeout a wait must end, so an answer always arrives before it.
SOCKET_MARGIN_S = 1.0
#: Redis takes a blocking timeout to the millisecond: shorter waits are not worth a round trip.
MIN_WAIT_S = 0.001


class Doorbell:
    """A dedicated connection for waiting on one queue's bell."""

    def __init__(self, settings: Settings, key: str, redis: Redis | None = None) -> None:
        """``redis``: a client to wait with, closed by its owner (default: a connection of its own)."""
        self.key = key
        self.longest_s = max(MIN_WAIT_S, settings.redis_socket_timeout_s - SOCKET_MARGIN_S)
        self._redis: Redis | None = redis
        self._own = redis is None
        self._settings = settings
        self.rings = 0  # rings heard (wake-ups before the timeout), for the tests and the logs

    async def wait(self, seconds: float) -> bool:
        """Block until the bell rings (True) or ``seconds`` pass (False); raises ``REDIS_DOWN`` errors."""
        if self._redis is None:
            self._redis = redis_client(self._settings)
        timeout = round(min(max(seconds, MIN_WAIT_S), self.longest_s), 3)
        rang = await self._redis.bzpopmin(self.key, timeout=timeout)
        if rang is not None:
            self.rings += 1
        return rang is not None

    async def aclose(self) -> None:
        """Close the connection (a wait in progress has been cancelled by then)."""
        if self._redis is not None and self._own:
            await self._redis.aclose()
            self._redis = None
