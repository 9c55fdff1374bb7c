"""Cancelling a running job: the worker's side (the producer's is ``producer.jobs``).

A producer cancels a job that is still queued by itself, atomically, and it never starts. For a
job already running it sets the job's cancel field (``<id>:c`` in the queue's ``jobs`` hash) and
publishes the id on the queue's cancel channel (``lua/cancel.lua``). Every worker listens on that
channel with one connection (:func:`listen_forever`); the one running the job (whichever host it
is on) sets the job's event, and so:

- every fetch still under way is cancelled at once (its source ends ``cancelled``);
- an inference under way cannot be interrupted (nothing running in a pool can be): the job stops
  waiting for it, the core stays busy until it returns, and its output is discarded;
- the job returns at once a result whose status is ``cancelled``, holding what had finished.

A worker that missed the message (its subscription was down, or the job was taken in between)
still sees the field: the claim reads it with the job, and the listener reads those of every
running job each time it (re)subscribes. The run whose result is stored removes it. The fan-out
itself is untouched: its fetch policy and its pool are wrapped (:meth:`CancelScope.policy`,
:meth:`CancelScope.pool`) so they raise instead of waiting once the job is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from agentq.contract import QuestionRequest, SourceOutcome
from agentq.errors import REDIS_DOWN
from agentq.protocol.queue import Queue
from worker.job.fanout import FetchPolicy, SourceSkipped
from worker.pool.executor import InferencePool

if TYPE_CHECKING:
    from agentq.sources import Source, SourceContext
    from worker.engine.context import WorkerContext

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What an inference abandoned by a cancellation reads as in its source's outcome.
DISCARDED = "cancelled during inference; its output was discarded"


class JobCancelled(Exception):
    """The job was cancelled while this step was under way."""


class Cancellation:
    """One job's cancel, set once: the tasks awaiting work under it (:func:`_race`) are cancelled at once."""

    __slots__ = ("_set", "_waiting")

    def __init__(self) -> None:
        self._set = False
        self._waiting: set[asyncio.Task[object]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            for task in list(self._waiting):
                task.cancel()


class CancelRegistry:
    """The jobs this worker process runs, each with the cancellation that stops it."""

    def __init__(self) -> None:
        self._events: dict[str, Cancellation] = {}

    def register(self, job_id: str) -> Cancellation:
        return self._events.setdefault(job_id, Cancellation())

    def unregister(self, job_id: str) -> None:
        self._events.pop(job_id, None)

    def cancel(self, job_id: str) -> bool:
        """Cancel ``job_id`` if this worker runs it; True if it does."""
        event = self._events.get(job_id)
        if event is None:
            return False
        if not event.is_set():
            log.info("job %s: cancel requested", job_id)
            event.set()
        return True

    def running(self) -> list[str]:
        return list(self._events)


async def _race(work: Awaitable[T], cancellation: Cancellation, cancelled: Callable[[], Exception]) -> T:
    """``await work``, unless the job is cancelled first: then ``work`` is cancelled and ``cancelled()`` raised.

    No task is started for it: the task awaiting ``work`` is cancelled itself, so ``work`` unwinds where it
    is (a fetch closes its connection; a pool's future is abandoned) and the cancel is turned into
    ``cancelled()`` here. A cancel from outside (the worker stopping) goes through untouched.
    """
    if cancellation.is_set():
        if asyncio.iscoroutine(work):
            work.close()
        raise cancelled()
    task = asyncio.current_task()
    assert task is not None
    cancellation._waiting.add(task)
    try:
        return await work
    except asyncio.CancelledError:
        if cancellation.is_set() and task.uncancel() == 0:  # ours alone: no other cancel is pending
            raise cancelled() from None
        raise
    finally:
        cancellation._waiting.discard(task)


class _CancellableFetch:
    """A fetch policy that gives up, and ends its source ``cancelled``, the moment the job is cancelled."""

    def __init__(self, inner: FetchPolicy, event: Cancellation) -> None:
        self.inner, self.event = inner, event

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str:
        return await _race(
            self.inner.fetch(source, request, ctx, outcome, deadline),
            self.event,
            lambda: SourceSkipped("cancelled", "cancelled during fetch"),
        )


class _CancellablePool(InferencePool):
    """The worker's pool, seen by one job: stops waiting for an inference once the job is cancelled."""

    def __init__(self, inner: InferencePool, event: Cancellation) -> None:
        super().__init__(inner.executor, inner.info)
        self.inner, self.event = inner, event

    async def run(self, fn: Callable[..., T], *args: object, label: tuple[str, str] | None = None) -> T:
        return await _race(self.inner.run(fn, *args, label=label), self.event, lambda: JobCancelled(DISCARDED))


class CancelScope:
    """One job's cancellation: whether it was asked for, and the wrappers that obey it."""

    def __init__(self, event: Cancellation) -> None:
        self.event = event

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def policy(self, inner: FetchPolicy) -> FetchPolicy:
        return _CancellableFetch(inner, self.event)

    def pool(self, inner: InferencePool) -> InferencePool:
        return _CancellablePool(inner, self.event)

    def settle(self, outcomes: Sequence[SourceOutcome]) -> None:
        """Mark the sources whose inference was abandoned ``cancelled`` (the fan-out saw an error)."""
        for o in outcomes:
            if o.status == "error" and o.error is not None and DISCARDED in o.error:
                o.status, o.error = "cancelled", DISCARDED


@contextlib.contextmanager
def scope(ctx: WorkerContext) -> Iterator[CancelScope]:
    """Register the job for cancel messages; a cancel asked for before the run began came with the claim."""
    job_id, registry = ctx["job_id"], ctx["cancels"]
    event = registry.register(job_id)
    if ctx.get("cancelled"):
        event.set()
    try:
        yield CancelScope(event)
    finally:
        registry.unregister(job_id)


async def _recheck(ctx: WorkerContext) -> None:
    """Cancel every running job whose cancel field is set (messages sent while we were not listening)."""
    registry = ctx["cancels"]
    running = registry.running()
    if not running:
        return
    asked = await Queue(ctx["redis"], ctx["keys"]).cancel_requested(running)
    for job_id, yes in zip(running, asked, strict=True):
        if yes:
            registry.cancel(job_id)


async def listen_forever(ctx: WorkerContext) -> None:
    """Follow the cancel channel until cancelled, resubscribing after any failure."""
    channel, registry = ctx["keys"].cancel_channel, ctx["cancels"]
    delay = 0.05
    while True:
        pubsub = ctx["redis"].pubsub()
        try:
            await pubsub.subscribe(channel)
            await _recheck(ctx)
            delay = 0.05
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and isinstance(message.get("data"), bytes):
                    registry.cancel(message["data"].decode(errors="replace"))
        except REDIS_DOWN as exc:
            log.warning("cancel channel lost (%s); resubscribing in %.2fs", exc, delay)
        except Exception:
            log.exception("cancel channel failed; resubscribing in %.2fs", delay)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)
