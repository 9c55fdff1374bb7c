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

**Shards.** Each shard of a sharded queue has its own bell (``AGENTQ_QUEUE_SHARDS``), and a worker
waits on the bells of the shards it serves at once. On one Redis that is still one ``BZPOPMIN``,
given every bell: it names the bell that rang. On a Redis Cluster the bells lie on different slots,
which no command may span, so each is waited on by a ``BZPOPMIN`` of its own, side by side. The
first ring ends the wait; the others stay blocked for the rest of their timeout, rather than be
cancelled: a cancelled ``BZPOPMIN`` may have taken a ring already, and it would be lost with it.
The next wait goes on with them. A ring one of them takes while the worker is not waiting (it runs
jobs) is given back to its bell at once, for an idle worker to hear.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agentq.connection import is_cluster, redis_client
from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.settings import Settings

#: How far below the socket timeout a wait must end, so an answer always arrives before it.
SOCKET_MARGIN_S = 1.0
#: Redis takes a blocking timeout to the millisecond: shorter waits are not worth a round trip.
MIN_WAIT_S = 0.001


class Doorbell:
    """A dedicated connection for waiting on the bells of the shards a worker serves."""

    def __init__(self, settings: Settings, bells: Mapping[int, str], redis: Redis | None = None) -> None:
        """``bells``: each shard's bell key; ``redis``: a client to wait with, closed by its owner
        (default: a connection of its own)."""
        self.bells = dict(bells)
        self._shard_of = {key: shard for shard, key in self.bells.items()}
        self.longest_s = max(MIN_WAIT_S, settings.redis_socket_timeout_s - SOCKET_MARGIN_S)
        self._redis: Redis | None = redis
        self._own = redis is None
        self._settings = settings
        self._pending: dict[tuple[str, ...], asyncio.Task[int | None]] = {}
        self._waiting = False
        self.rings = 0  # rings heard (wake-ups before the timeout), for the tests and the logs

    async def wait(self, seconds: float) -> list[int]:
        """Block until a bell rings or ``seconds`` pass; the shards whose bell rang (none: the time ran
        out). Raises ``REDIS_DOWN`` errors."""
        if self._redis is None:
            self._redis = redis_client(self._settings)
        redis = self._redis
        keys = list(self.bells.values())
        groups = [(key,) for key in keys] if is_cluster(redis) and len(keys) > 1 else [tuple(keys)]
        end = time.monotonic() + min(max(seconds, MIN_WAIT_S), self.longest_s)
        self._waiting = True
        try:
            while True:
                left = end - time.monotonic()
                for group in groups:
                    if group not in self._pending and left >= MIN_WAIT_S:
                        self._pending[group] = asyncio.ensure_future(self._pop(redis, group, left))
                if not self._pending:
                    return []
                # A wait whose reply is still on its way at the end is collected by the next call.
                await asyncio.wait(self._pending.values(), timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
                rang = [shard for shard in self._collect() if shard is not None]
                if rang:
                    self.rings += len(rang)
                    return rang
                if time.monotonic() >= end:
                    return []
        finally:
            self._waiting = False

    async def _pop(self, redis: Redis, group: tuple[str, ...], seconds: float) -> int | None:
        """One ``BZPOPMIN`` on ``group``'s bells: the shard whose bell rang, or None."""
        timeout = round(min(max(seconds, MIN_WAIT_S), self.longest_s), 3)
        popped = await redis.bzpopmin(list(group), timeout=timeout)
        if popped is None:
            return None
        key = popped[0].decode() if isinstance(popped[0], bytes) else str(popped[0])
        shard = self._shard_of[key]
        if not self._waiting:  # heard while this worker runs jobs: give the ring back for an idle one
            await redis.zadd(key, {popped[1]: popped[2]})
            return None
        return shard

    def _collect(self) -> list[int | None]:
        """The results of the waits that have ended (they are waited on again when asked); their errors
        raised."""
        done = [group for group, task in self._pending.items() if task.done()]
        return [self._pending.pop(group).result() for group in done]

    async def aclose(self) -> None:
        """Close the connection, after cancelling the waits still blocked."""
        pending, self._pending = list(self._pending.values()), {}
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, *REDIS_DOWN):
                await task
        if self._redis is not None and self._own:
            await self._redis.aclose()
            self._redis = None
