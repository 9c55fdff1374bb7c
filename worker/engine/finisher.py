"""Ending runs: the finish script (``lua/finish.lua``) for every job that ends, batched and retried.

Jobs that end in the same turn of the event loop (a burst of short jobs ends many at once) share
one round trip: their scripts go to Redis in one pipeline. A batch that cannot reach Redis is sent
again with back-off for as long as the worker rides out outages (``redis_outage_s``): the finish
is idempotent (``SET NX``; a requeue checks the lease), so a batch that reached Redis but whose
answer was lost does no harm when sent twice. Past that the run's outcome is given up, logged,
and the job comes due again when its lease lapses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from agentq.connection import is_cluster, wait_for_replicas
from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from agentq.protocol.queue import Ending, Queue
    from agentq.settings import Settings

log = logging.getLogger(__name__)


class Finisher:
    """``await finisher(ending)``: True if that run's result is the one stored."""

    def __init__(self, queue: Queue, worker_id: str, settings: Settings) -> None:
        self.queue, self.worker_id, self.settings = queue, worker_id, settings
        self._batch: list[tuple[Ending, asyncio.Future[bool]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, ending: Ending) -> bool:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bool] = loop.create_future()
        self._batch.append((ending, reply))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return await reply

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._send(batch), name="agentq-finish")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Ending, asyncio.Future[bool]]]) -> None:
        try:
            try:
                replies = await self._finish(batch)
            except REDIS_DOWN:  # retried only now: building a retrying loop costs more than a short job's finish
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(REDIS_DOWN),
                    stop=stop_after_delay(self.settings.redis_outage_s),
                    wait=wait_exponential(multiplier=0.05, max=1.0),
                    reraise=True,
                ):
                    with attempt:
                        replies = await self._finish(batch)
        except BaseException as exc:  # every run of the batch hears of it
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, reply), outcome in zip(batch, replies, strict=True):
            if reply.done():
                continue
            if isinstance(outcome, BaseException):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)

    async def _finish(self, batch: list[tuple[Ending, asyncio.Future[bool]]]) -> list[bool | BaseException]:
        s = self.settings
        endings = [ending for ending, _ in batch]
        replies = await self.queue.finish(
            self.worker_id, endings, progress_ttl_s=s.progress_ttl_s, index_size=s.jobs_index_size
        )
        stored = [e.job_id for e, r in zip(endings, replies, strict=True) if r is True]
        if s.redis_wait_replicas and stored:
            await self._replicated(stored)
        return replies

    async def _replicated(self, stored: list[str]) -> None:
        """With ``redis_wait_replicas``, wait until that many replicas hold the results just written.

        Without it a failover can take back a result a caller has already read (the job, still
        queued on the new primary, then runs again and may answer differently). Too few replicas in
        time is logged, not raised: the results are on the primary, and no job is lost either way.
        """
        s = self.settings
        keys = self.queue.keys
        # On one Redis one WAIT covers every write made before it; on a Cluster, one per shard written,
        # behind its fence, on its primary.
        shards = keys.by_shard(stored, str) if is_cluster(self.queue.redis) else [(keys, stored)]
        try:
            confirmed = [await wait_for_replicas(self.queue.redis, s, k.fence) for k, _ in shards]
        except REDIS_DOWN as exc:
            log.warning("could not wait for replicas to hold %d results: %s", len(stored), exc)
            return
        acked = min((n for n in confirmed if n is not None), default=None)  # None: nothing was asked
        if acked is not None and acked < s.redis_wait_replicas:
            log.warning(
                "results confirmed by %d of %d replicas within %gs",
                acked,
                s.redis_wait_replicas,
                s.redis_wait_timeout_s,
            )
