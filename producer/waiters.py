"""Waking callers when their job is done: one pub/sub connection per client, shared by every wait.

The worker publishes on the job's done channel once the outcome is stored (``worker.finish``); the
message is the stored result record itself when this worker's result is the one kept, else ``1``.
A wait subscribes the channel on the client's one pub/sub connection, so a thousand waits cost a
thousand ``SUBSCRIBE`` and no new connection each (with TLS, no handshake each). Channels whose
wait ended are unsubscribed in batches, one ``UNSUBSCRIBE`` for many. One reader task hands each
message to the waits on its channel. A message can be missed (the connection dropped and came
back): callers look at Redis themselves now and then, as ``Client.result`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

#: Channels whose waits ended are unsubscribed once this many have piled up (or at close).
UNSUBSCRIBE_BATCH = 64
#: Longest wait for Redis to confirm a subscription before the caller goes on regardless.
CONFIRM_TIMEOUT_S = 1.0


class Waiters:
    """The waits of one client; ``async with waiters.watch(channel) as box`` then ``await box.get(timeout)``."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._boxes: dict[bytes, list[asyncio.Queue[bytes]]] = {}
        self._ended: set[bytes] = set()
        self._confirmed: dict[bytes, asyncio.Event] = {}

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[Mailbox]:
        """Subscribe ``channel`` (if no other wait has) for the duration of the block."""
        key = channel.encode()
        box: asyncio.Queue[bytes] = asyncio.Queue()
        boxes = self._boxes.setdefault(key, [])
        boxes.append(box)
        try:
            if len(boxes) == 1 and key not in self._ended:
                await self._subscribe(key)
            self._ended.discard(key)
            yield Mailbox(box)
        finally:
            boxes.remove(box)
            if not boxes:
                del self._boxes[key]
                self._ended.add(key)
                if len(self._ended) >= UNSUBSCRIBE_BATCH:
                    await self._unsubscribe_ended()

    async def _subscribe(self, key: bytes) -> None:
        """Subscribe and wait for Redis to confirm: a message published after that reaches us.

        Without the wait, a caller's next look at Redis (on another connection) could be served
        before the subscription, and a result stored in between would be announced to nobody.
        """
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        confirmed = self._confirmed[key] = asyncio.Event()
        try:
            await self._pubsub.subscribe(key)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(self._pubsub), name="agentq-done-reader")
            with contextlib.suppress(TimeoutError):  # the caller's own rechecks cover a slow confirmation
                async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                    await confirmed.wait()
        finally:
            self._confirmed.pop(key, None)

    async def _unsubscribe_ended(self) -> None:
        ended, self._ended = list(self._ended), set()
        if not self._boxes and ended:
            # One channel stays subscribed. With none, redis-py's next SUBSCRIBE first checks the
            # connection's health with a PING whose reply it reads itself, while the reader task reads
            # the same connection: "read() called while another coroutine is already waiting".
            self._ended.add(ended.pop())
        if self._pubsub is not None and ended:
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.unsubscribe(*ended)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            try:
                message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
            except REDIS_DOWN as exc:  # redis-py reconnects and subscribes again on the next read
                log.debug("done notifications interrupted: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if message is None:
                continue
            if message.get("type") == "subscribe":
                if (event := self._confirmed.get(message["channel"])) is not None:
                    event.set()
                continue
            if message.get("type") != "message":
                continue
            for box in self._boxes.get(message["channel"], ()):
                box.put_nowait(message["data"])

    async def aclose(self) -> None:
        """Stop reading and close the pub/sub connection."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        self._pubsub, self._reader = None, None


class Mailbox:
    """What one wait receives: the done messages of its channel."""

    def __init__(self, box: asyncio.Queue[bytes]) -> None:
        self._box = box

    async def get(self, timeout: float) -> bytes | None:
        """The next message, or None after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                return await self._box.get()
        except TimeoutError:
            return None
