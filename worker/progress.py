"""Live progress: each source's fan-out events, appended to the job's progress log in Redis.

The log is a capped Redis stream, ``<prefix>:progress:<job id>``, one :class:`ProgressEvent` as
JSON per entry, expiring ``progress_ttl_s`` after its last event. A stream rather than pub/sub
because one ``XREAD BLOCK`` from id 0 replays what happened and then waits for what comes next:
a watcher who arrives late (or reconnects) misses nothing, and there is no window between reading
the history and subscribing in which an event could fall through.

The fan-out calls :meth:`ProgressPublisher.on_event` synchronously; it only puts the event on an
``asyncio.Queue``. One task per job drains the queue in batches (one pipelined round trip each),
so a slow or unreachable Redis delays progress, never the answer. Lost progress is logged, not
fatal. The job starts a publisher per start (``worker.job``); after the result is stored,
:func:`finish` (``worker.lifecycle``) appends ``job_done`` (or ``requeued`` when the
start ended without a result and arq will run the job again) and clears the job's deduplication
marker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from agentq.contract import ProgressEvent, ProgressKind, SourceOutcome
from agentq.errors import REDIS_DOWN
from agentq.keys import Keys
from worker.timing import overall_status

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from worker.fanout import FanOutEvent

log = logging.getLogger(__name__)

#: Entries kept per job: a job writes 4 per source and 1 per start, far fewer than this.
STREAM_MAXLEN = 1000
#: How long ``finish`` waits for the last events to be written before it gives up on them.
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
#: Deletes the dedup marker only if it still names this job (Redis 7 has no conditional DEL).
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ProgressPublisher:
    """One job start's progress: turns fan-out events into log entries without blocking."""

    def __init__(self, redis: ArqRedis, keys: Keys, job_id: str, ttl_s: int, fingerprint: str | None) -> None:
        self.redis, self.job_id, self.ttl_s, self.fingerprint = redis, job_id, ttl_s, fingerprint
        self.key = keys.progress(job_id)
        self.inflight_key = keys.inflight(fingerprint) if fingerprint else None
        self.t0 = time.monotonic()
        self.outcomes: dict[str, SourceOutcome] = {}
        self._queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain(), name=f"progress-{job_id}")

    def event(self, kind: ProgressKind, outcome: SourceOutcome | None = None) -> ProgressEvent:
        """A :class:`ProgressEvent` for this job now; a source's state from ``outcome``."""
        if outcome is None:
            statuses = list(self.outcomes.values())
            status = overall_status(statuses) if statuses else None
            return ProgressEvent(job_id=self.job_id, event=kind, t=self.elapsed(), status=status)
        detail = {
            name: value
            for name, value in outcome
            if name not in _NOT_DETAIL and isinstance(value, str | int | float | bool)
        }
        return ProgressEvent(
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
        """The fan-out's hook: queue the event; never blocks, never raises on Redis trouble."""
        self.outcomes[outcome.name] = outcome
        self._queue.put_nowait(self.event(kind, outcome))

    async def close(self) -> None:
        """Write whatever is still queued (up to ``FLUSH_TIMEOUT_S``), then stop the drain task."""
        self._queue.put_nowait(None)
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await asyncio.shield(self._task)
        except TimeoutError:
            log.warning("job %s: progress not flushed within %gs; dropped", self.job_id, FLUSH_TIMEOUT_S)
            self._task.cancel()

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            events = [e for e in batch if e is not None]
            if events:
                await append(self.redis, self.key, events, self.ttl_s)
            if len(events) < len(batch):
                return


async def append(redis: ArqRedis, key: str, events: list[ProgressEvent], ttl_s: int) -> None:
    """Append events to a progress log and push its expiry back; log, never raise, on failure."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for e in events:
                pipe.xadd(key, {"e": e.model_dump_json(exclude_none=True)}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(key, ttl_s)
            await pipe.execute()
    except REDIS_DOWN as exc:
        log.warning("progress of %s lost (%d events): %s", key, len(events), exc)
    except Exception:
        log.exception("progress of %s lost (%d events)", key, len(events))


async def finish(publisher: ProgressPublisher) -> None:
    """After the job (its result stored, or not when arq will re-run it): the last entry, then
    the dedup marker goes. Runs for every start, also those that never reached the fan-out."""
    await publisher.close()
    redis, job_id = publisher.redis, publisher.job_id
    try:
        done = bool(await redis.exists(Keys.result(job_id)))
    except REDIS_DOWN as exc:
        log.warning("job %s: cannot tell whether its result is stored: %s", job_id, exc)
        return
    except Exception:
        log.exception("job %s: cannot tell whether its result is stored", job_id)
        return
    await append(redis, publisher.key, [publisher.event("job_done" if done else "requeued")], publisher.ttl_s)
    if done and publisher.inflight_key:
        try:
            delete_if_equal = redis.register_script(_DELETE_IF_EQUAL)
            await delete_if_equal(keys=[publisher.inflight_key], args=[job_id])
        except REDIS_DOWN as exc:  # harmless: a join checks the marked job's real state
            log.warning("job %s: dedup marker left behind: %s", job_id, exc)
        except Exception:
            log.exception("job %s: dedup marker left behind", job_id)
