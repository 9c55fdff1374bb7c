"""Live progress: each source's fan-out events, appended to the job's progress log in Redis.

The log is a capped Redis stream, ``<prefix>:progress:<job id>``, expiring ``progress_ttl_s`` after
its last write. Each entry's ``e`` field holds the events written together, as a JSON list of
:class:`ProgressEvent` (``producer.client.parse_events`` also reads a single event). A stream rather
than pub/sub because one ``XREAD BLOCK`` from id 0 replays what happened and then waits for what
comes next: a watcher who arrives late (or reconnects) misses nothing, and there is no window
between reading the history and subscribing in which an event could fall through.

The fan-out calls :meth:`ProgressPublisher.on_event` synchronously; it only notes the event. What
arrives within ``WRITE_DELAY_S`` of a first unwritten event is written together, in one round trip,
by a task of its own, so a slow or unreachable Redis delays progress, never the answer, and a job
that is over sooner writes nothing here at all: when the job ends, :meth:`ProgressPublisher.tail`
hands whatever is unwritten to the finish script (``worker.finish``), which writes it with the
last event (``job_done``, or ``requeued`` when the run ended without a result) in the same step
that stores the result. Lost progress is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from agentq.contract import ProgressEvent, ProgressKind, SourceOutcome
from agentq.errors import REDIS_DOWN
from agentq.keys import Keys
from worker.finish import STREAM_MAXLEN, Tail
from worker.timing import overall_status

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from worker.fanout import FanOutEvent

log = logging.getLogger(__name__)

#: Events that arrive this soon after a first unwritten one are written with it, in one round trip.
WRITE_DELAY_S = 0.05
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


class ProgressPublisher:
    """One job start's progress: turns fan-out events into log entries without blocking."""

    def __init__(self, redis: ArqRedis, keys: Keys, job_id: str, ttl_s: int, fingerprint: str | None) -> None:
        self.redis, self.job_id, self.ttl_s, self.fingerprint = redis, job_id, ttl_s, fingerprint
        self.key = keys.progress(job_id)
        self.inflight_key = keys.inflight(fingerprint) if fingerprint else None
        self.t0 = time.monotonic()
        self.outcomes: dict[str, SourceOutcome] = {}
        self._pending: list[str] = []  # events as JSON, not written yet
        self._timer: asyncio.TimerHandle | None = None  # the next write, WRITE_DELAY_S after its first event
        self._writer: asyncio.Task[None] | None = None  # a write talking to Redis
        self._expiry_set = False
        self._ended = False

    def event(self, kind: ProgressKind, outcome: SourceOutcome | None = None) -> ProgressEvent:
        """A :class:`ProgressEvent` for this job now; a source's state from ``outcome``.

        Built without validation (``model_construct``): every value comes from a validated outcome,
        and this runs several times per source of every job.
        """
        if outcome is None:
            statuses = list(self.outcomes.values())
            status = overall_status(statuses) if statuses else None
            # Every field given: a missing one would make pydantic inspect its default factory each time.
            return ProgressEvent.model_construct(
                job_id=self.job_id, event=kind, t=self.elapsed(), source=None, status=status, error=None, detail={}
            )
        detail = {
            name: value
            for name, value in outcome.__dict__.items()
            if name not in _NOT_DETAIL and isinstance(value, str | int | float | bool)
        }
        return ProgressEvent.model_construct(
            job_id=self.job_id,
            event=kind,
            t=self.elapsed(),
            source=outcome.name,
            # An unfinished outcome's status reads "deadline" (what it becomes if time runs out):
            # send a status only once it means something, on "done" or a failed fetch.
            status=outcome.status if kind == "done" or outcome.error else None,
            error=outcome.error,
            detail=detail,
        )

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def on_event(self, kind: FanOutEvent, outcome: SourceOutcome) -> None:
        """The fan-out's hook: note the event for the next write; never blocks, never raises on Redis trouble."""
        self.outcomes[outcome.name] = outcome
        self._pending.append(self.event(kind, outcome).model_dump_json(exclude_none=True))
        self._schedule()

    def _schedule(self) -> None:
        # A timer, not a task: a job that ends sooner (most short ones) costs no task at all.
        if self._timer is None and self._writer is None and not self._ended:
            self._timer = asyncio.get_running_loop().call_later(WRITE_DELAY_S, self._write_now)

    def _write_now(self) -> None:
        self._timer = None
        self._writer = asyncio.create_task(self._write(), name=f"progress-{self.job_id}")

    async def _write(self) -> None:
        batch, self._pending = self._pending, []
        await append(self.redis, self.key, batch, None if self._expiry_set else self.ttl_s)
        # Every write after the first leaves the expiry be: the job's last write sets it again.
        self._expiry_set = True
        self._writer = None
        if self._pending:
            self._schedule()

    async def tail(self) -> Tail:
        """Stop writing; return what is unwritten, and the last events, for the finish script.

        A write already talking to Redis is awaited (up to ``FLUSH_TIMEOUT_S``) so the log stays in
        order; one still waiting for more events is called off and its events are handed over.
        """
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer = self._writer
        if writer is not None:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT_S):
                    await asyncio.shield(writer)
            except TimeoutError:
                log.warning("job %s: progress not written within %gs; dropped", self.job_id, FLUSH_TIMEOUT_S)
                writer.cancel()
        last = self.event("job_done")
        return Tail(
            pending=self._pending,
            job_done=last.model_dump_json(exclude_none=True),
            requeued=last.model_copy(update={"event": "requeued"}).model_dump_json(exclude_none=True),
            marker=self.inflight_key,
        )


def bare_tail(job_id: str) -> Tail:
    """The tail of a run that never reached the fan-out (no publisher): only the last event."""

    def last(kind: ProgressKind) -> str:
        return ProgressEvent(job_id=job_id, event=kind, t=0.0, detail={}).model_dump_json(exclude_none=True)

    return Tail(pending=[], job_done=last("job_done"), requeued=last("requeued"), marker=None)


async def append(redis: ArqRedis, key: str, events: list[str], ttl_s: int | None) -> None:
    """Append events (JSON objects) to a progress log as one entry and, with ``ttl_s``, set its
    expiry; log, never raise, on failure."""
    if not events:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"e": f"[{','.join(events)}]"}, maxlen=STREAM_MAXLEN, approximate=True)
            if ttl_s is not None:
                pipe.expire(key, ttl_s)
            await pipe.execute()
    except REDIS_DOWN as exc:
        log.warning("progress of %s lost (%d events): %s", key, len(events), exc)
    except Exception:
        log.exception("progress of %s lost (%d events)", key, len(events))
