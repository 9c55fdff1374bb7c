"""Live progress: each source's fan-out events, appended to the job's progress log in Redis.

The log is a capped Redis stream, ``<prefix>:{<queue>}:progress:<job id>``, expiring
``progress_ttl_s`` after its last write. Each entry's ``e`` field holds the events written together, as a JSON list of
:class:`ProgressEvent` (``producer.client.parse_events`` also reads a single event). A stream rather
than pub/sub because one ``XREAD BLOCK`` from id 0 replays what happened and then waits for what
comes next: a watcher who arrives late (or reconnects) misses nothing, and there is no window
between reading the history and subscribing in which an event could fall through.

The fan-out calls :meth:`ProgressPublisher.on_event` synchronously; it only notes the event. Every
``WRITE_DELAY_S`` the worker's one :class:`ProgressWriter` writes what all its jobs noted since, in
one round trip (a pipeline, one entry per job), from a task of its own, so a slow or unreachable
Redis delays progress, never the answer. When the job ends, :meth:`ProgressPublisher.tail` hands
whatever is unwritten to the finish script (``lua/finish.lua``), which writes it with the last
event (``job_done``, or ``requeued`` when the run ended without a result) in the same step that
stores the result. A job that is over before its first write logs nothing at all: its watchers
are woken by the result itself (``producer.client.Client.progress`` tells them what happened from
it). Events are turned into JSON only when they are written. Lost progress is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from agentq.connection import connections_of
from agentq.contract import ProgressEvent, ProgressKind, SourceOutcome
from agentq.errors import REDIS_DOWN
from agentq.protocol.keys import Keys
from worker.job.timing import overall_status

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from worker.job.fanout import FanOutEvent

log = logging.getLogger(__name__)

#: Events that arrive this soon after a first unwritten one are written with it, in one round trip.
WRITE_DELAY_S = 0.05
#: Entries kept per progress log: a job writes a handful (the finish script caps it alike).
STREAM_MAXLEN = 1000
#: How long ``tail`` waits for a write under way to end before it gives up on it.
FLUSH_TIMEOUT_S = 2.0

#: The outcome fields every event carries in its own fields (or that are too big to send).
_NOT_DETAIL = frozenset(
    {
        "name",
        "status",
        "error",
        "data",
        "inference",
        *(f"{stage}_{part}" for stage in ("fetch", "inference") for part in ("start_s", "end_s", "s")),
        "inference_submit_s",
        "inference_cpu_s",
    }
)


@dataclass(frozen=True)
class Tail:
    """The end of a job's progress log: what is still unwritten, the two possible last events."""

    pending: list[str]
    """Events (JSON objects) not written yet, in order."""
    job_done: str
    requeued: str
    logged: bool
    """The job wrote its log before: the tail goes there too. If not, nothing is written at all."""


class ProgressPublisher:
    """One job start's progress: turns fan-out events into log entries without blocking."""

    def __init__(self, redis: Redis, keys: Keys, job_id: str, ttl_s: int) -> None:
        self.redis, self.job_id, self.ttl_s = redis, job_id, ttl_s
        self.key = keys.progress(job_id)
        self.t0 = time.monotonic()
        self.outcomes: dict[str, SourceOutcome] = {}
        # Not written yet: (kind, the source's fields as they were then, t), turned into events when written.
        self._pending: list[tuple[ProgressKind, dict[str, Any] | None, float]] = []
        self._writer = ProgressWriter.of(redis)
        self._in_flight: asyncio.Future[None] | None = None  # a write of this job's events talking to Redis
        self._expiry_set = False
        self._ended = False

    def event(self, kind: ProgressKind, fields: dict[str, Any] | None = None, t: float | None = None) -> ProgressEvent:
        """A :class:`ProgressEvent` for this job; a source's state from ``fields`` (its outcome's fields).

        Built without validation (``model_construct``): every value comes from a validated outcome.
        """
        t = self.elapsed() if t is None else t
        if fields is None:
            statuses = list(self.outcomes.values())
            status = overall_status(statuses) if statuses else None
            # Every field given: a missing one would make pydantic inspect its default factory each time.
            return ProgressEvent.model_construct(
                job_id=self.job_id, event=kind, t=t, source=None, status=status, error=None, detail={}
            )
        detail = {
            name: value
            for name, value in fields.items()
            if name not in _NOT_DETAIL and isinstance(value, str | int | float | bool)
        }
        return ProgressEvent.model_construct(
            job_id=self.job_id,
            event=kind,
            t=t,
            source=fields["name"],
            # An unfinished outcome's status reads "deadline" (what it becomes if time runs out):
            # send a status only once it means something, on "done" or a failed fetch.
            status=fields["status"] if kind == "done" or fields["error"] else None,
            error=fields["error"],
            detail=detail,
        )

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def on_event(self, kind: FanOutEvent, outcome: SourceOutcome) -> None:
        """The fan-out's hook: note the event for the next write; never blocks, never raises on Redis trouble.

        Only a copy of the outcome's fields is taken now (the outcome changes as the source goes on); the
        event itself is built if it is ever written: a job over before the first write builds none.
        """
        self.outcomes[outcome.name] = outcome
        self._pending.append((kind, dict(outcome.__dict__), self.elapsed()))
        self._schedule()

    def _schedule(self) -> None:
        if not self._ended:
            self._writer.add(self)

    def _take(self) -> tuple[list[str], int | None]:
        """The writer takes this job's unwritten events (and whether to set the log's expiry)."""
        batch, self._pending = [_json(self.event(*e)) for e in self._pending], []
        ttl = None if self._expiry_set else self.ttl_s
        # Every write after the first leaves the expiry be: the job's last write sets it again.
        self._expiry_set = True
        return batch, ttl

    async def tail(self) -> Tail:
        """Stop writing; return what is unwritten, and the last events, for the finish script.

        A write of this job's events already talking to Redis is awaited (up to ``FLUSH_TIMEOUT_S``)
        so the log stays in order; events still waiting for the next write are handed over.
        """
        self._ended = True
        self._writer.discard(self)
        if self._in_flight is not None:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT_S):
                    await asyncio.shield(self._in_flight)
            except TimeoutError:
                log.warning("job %s: progress not written within %gs; dropped", self.job_id, FLUSH_TIMEOUT_S)
        if not self._expiry_set:  # nothing logged: nothing to end
            return Tail(pending=[], job_done="", requeued="", logged=False)
        last = self.event("job_done")
        return Tail(
            pending=[_json(self.event(*e)) for e in self._pending],
            job_done=_json(last),
            requeued=_json(last.model_copy(update={"event": "requeued"})),
            logged=True,
        )


#: What one tick writes for one job: its publisher, its events, the expiry to set (None: leave it).
Written = tuple["ProgressPublisher", list[str], int | None]


class ProgressWriter:
    """Writes the noted events of every job of one worker, ``WRITE_DELAY_S`` after the first, in one
    pipeline: one round trip per tick for the whole worker, not one per job. One per connection pool,
    found by :meth:`of` (the publishers are built per job)."""

    _by_pool: ClassVar[weakref.WeakKeyDictionary[object, ProgressWriter]] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._dirty: dict[str, ProgressPublisher] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, redis: Redis) -> ProgressWriter:
        """The writer of ``redis``'s connection pool."""
        writer = cls._by_pool.get(connections_of(redis))
        if writer is None:
            writer = cls._by_pool[connections_of(redis)] = cls()
        return writer

    def add(self, publisher: ProgressPublisher) -> None:
        """``publisher`` has events to write: at the next tick."""
        self._dirty[publisher.job_id] = publisher
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WRITE_DELAY_S, self._tick)

    def discard(self, publisher: ProgressPublisher) -> None:
        """``publisher``'s job has ended: its unwritten events go with its result instead."""
        self._dirty.pop(publisher.job_id, None)

    def _tick(self) -> None:
        self._timer = None
        batch: list[Written] = [(p, *p._take()) for p in self._dirty.values() if p._pending]
        self._dirty.clear()
        if not batch:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for publisher, _, _ in batch:
            publisher._in_flight = done
        task = asyncio.create_task(self._write(batch, done), name="agentq-progress")
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, batch: list[Written], done: asyncio.Future[None]) -> None:
        try:
            await append_many(batch[0][0].redis, [(p.key, events, ttl) for p, events, ttl in batch])
        finally:
            for publisher, _, _ in batch:
                if publisher._in_flight is done:
                    publisher._in_flight = None
            done.set_result(None)


def bare_tail(job_id: str) -> Tail:
    """The tail of a run that never reached the fan-out (no publisher): nothing was logged."""
    return Tail(pending=[], job_done="", requeued="", logged=False)


def _json(event: ProgressEvent) -> str:
    return event.model_dump_json(exclude_none=True)


async def append(redis: Redis, key: str, events: list[str], ttl_s: int | None) -> None:
    """Append events (JSON objects) to a progress log as one entry and, with ``ttl_s``, set its
    expiry; log, never raise, on failure."""
    await append_many(redis, [(key, events, ttl_s)])


async def append_many(redis: Redis, logs: list[tuple[str, list[str], int | None]]) -> None:
    """:func:`append` for several progress logs, in one round trip."""
    logs = [(key, events, ttl) for key, events, ttl in logs if events]
    if not logs:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for key, events, ttl_s in logs:
                pipe.xadd(key, {"e": f"[{','.join(events)}]"}, maxlen=STREAM_MAXLEN, approximate=True)
                if ttl_s is not None:
                    pipe.expire(key, ttl_s)
            await pipe.execute()
    except REDIS_DOWN as exc:
        log.warning("progress of %d jobs lost (%d events): %s", len(logs), sum(len(e) for _, e, _ in logs), exc)
    except Exception:
        log.exception("progress of %d jobs lost", len(logs))
