"""Running one claimed job: its function from arq's registry, under its timeout, to one finish.

A run always ends in the finish script (``worker.engine.finisher``), whatever happens:

- the job's function returns: its value is the result (``success``);
- it raises, or runs past its timeout: the exception is the result (``success`` false), as arq
  stores it, and the job is failed, not retried (our job function never raises: it returns a
  failed :class:`~agentq.contract.JobResult` instead);
- it is cancelled because the worker stops: the run ends without a result and the job goes back
  in line, its try given back;
- it cannot start: its record has gone or is not a job in arq's format, its function is not
  registered here, or it has used up its tries: a result says so and the job is failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agentq.protocol.queue import Ending, now_ms
from agentq.protocol.records import JobRecord, RawJSON, RecordError, encode_result
from worker.job import listing, progress
from worker.ops.logs import current_job_id

if TYPE_CHECKING:
    from arq.worker import Function

    from agentq.protocol.queue import ClaimedJob
    from agentq.settings import Settings
    from worker.engine.context import WorkerContext
    from worker.engine.finisher import Finisher

log = logging.getLogger("worker")


class JobNotRun(Exception):
    """Why a claimed job was failed without running (stored as its result, as arq stores exceptions)."""


class Runner:
    """Runs claimed jobs for one worker; counts how they ended."""

    def __init__(
        self, ctx: WorkerContext, functions: Mapping[str, Function], finisher: Finisher, settings: Settings
    ) -> None:
        self.ctx, self.functions, self.finisher, self.settings = ctx, functions, finisher, settings
        self.done = self.failed = self.requeued = self.discarded = 0
        #: Jobs whose result is on its way to Redis: a stop lets them end (a round trip) rather than
        #: cancel a run that Redis may already hold as finished.
        self.storing: set[str] = set()
        #: Jobs whose run has begun (the loop puts back those a stop cancelled before they began).
        self.begun: set[str] = set()

    async def run(self, job: ClaimedJob, record: JobRecord | RecordError | None) -> None:
        """Run ``job`` to its end (a stored result, or back in line)."""
        self.begun.add(job.job_id)
        start_ms = now_ms()
        if record is None:
            return await self._not_run(job, None, "the job's record had gone from Redis when a worker took it")
        if isinstance(record, RecordError):
            reason = f"the job stored in Redis is not a JSON job in arq's format ({record}); it was not run"
            return await self._not_run(job, None, reason)
        function = self.functions.get(record.function)
        if function is None:
            return await self._not_run(job, record, f"function {record.function!r} is not registered on this worker")
        max_tries = function.max_tries or self.settings.max_tries
        if job.tries > max_tries:
            reason = (
                f"gave up after {max_tries} tries: each ended without a result because the worker running it "
                "died (crash, out of memory, SIGKILL) while it ran alone there - the job itself is the likely cause"
            )
            return await self._not_run(job, record, reason)

        ctx: dict[str, Any] = {
            **self.ctx,
            "job_id": job.job_id,
            "job_try": job.job_try,
            "enqueue_time": datetime.fromtimestamp(record.enqueue_ms / 1000, UTC),
            "score": job.score,
            "cancelled": job.cancelled,
        }
        stats = self.ctx.get("stats")
        if stats is not None:
            stats["jobs_in_flight"] += 1
        token = current_job_id.set(job.job_id)
        timeout_s = function.timeout_s or self.settings.job_timeout_s
        extra = f" try {job.job_try}" if job.job_try > 1 else ""
        if job.alone:
            extra += " alone (its last run died in company)"
        # One line per job at INFO, when its result is stored (_finish); its start is DEBUG.
        log.debug("→ %s:%s waited %.3fs%s", job.job_id, record.function, (start_ms - record.enqueue_ms) / 1000, extra)
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    value: Any = await function.coroutine(ctx, *record.args, **record.kwargs)
                success = True
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # handled: the run ends without a result, the job goes back in line
                await self._requeue(job, ctx)
                return
            except TimeoutError:
                value, success = JobNotRun(f"the job ran past its timeout of {timeout_s:g}s"), False
                log.error("job %s ran past its timeout of %gs", job.job_id, timeout_s)
            except Exception as exc:
                value, success = exc, False
                log.exception("job %s failed: %s: %s", job.job_id, type(exc).__name__, exc)
            await self._finish(job, record, ctx, value, success, start_ms)
        finally:
            current_job_id.reset(token)
            if stats is not None:
                stats["jobs_in_flight"] -= 1
                stats["jobs_done"] += 1

    async def _finish(
        self, job: ClaimedJob, record: JobRecord, ctx: dict[str, Any], value: Any, success: bool, start_ms: int
    ) -> None:
        finished_ms = now_ms()
        keep_ms = self.settings.result_ttl_s * 1000
        status, final = listing.final(job, record, value, success, finished_ms)
        if isinstance(value, BaseModel):  # stored as its own JSON, encoded once (a JobResult: our job)
            value = RawJSON(value.model_dump_json().encode())
        result = encode_result(
            job.job_id,
            record.function,
            record.args,
            record.kwargs,
            job_try=job.job_try,
            enqueue_ms=record.enqueue_ms,
            success=success,
            result=value,
            start_ms=start_ms,
            finish_ms=finished_ms,
            queue_name=self.settings.queue_name,
        )
        tail = await _tail(ctx)
        ending = Ending(
            job.job_id,
            "finish",
            result=result,
            result_px=keep_ms,
            pending=tail.pending,
            job_done=tail.job_done,
            requeued=tail.requeued,
            logged=tail.logged,
            marker=job.marker,
            final=final,
            status=status,
            finished_ms=finished_ms,
        )
        self.storing.add(job.job_id)
        try:
            stored = await self.finisher(ending)
        except Exception as exc:
            log.error(
                "job %s: its result could not be stored (%s); it runs again when its lease lapses", job.job_id, exc
            )
            return
        finally:
            self.storing.discard(job.job_id)
        if success and status != "failed":
            self.done += 1
        else:
            self.failed += 1
        line = "job %s %s in %.3fs (try %s)"  # the job's one INFO line, once its result is stored (or dropped)
        ran_s = (finished_ms - start_ms) / 1000
        if stored:
            log.info(line, job.job_id, status, ran_s, job.job_try)
        else:
            self.discarded += 1
            log.warning(
                line + ", but it already had a result (an earlier run finished first): this one is discarded",
                *(job.job_id, status, ran_s, job.job_try),
            )

    async def _requeue(self, job: ClaimedJob, ctx: dict[str, Any]) -> None:
        tail = await _tail(ctx)
        ending = Ending(
            job.job_id,
            "requeue",
            requeue_score=job.score,
            pending=tail.pending,
            job_done=tail.job_done,
            requeued=tail.requeued,
            logged=tail.logged,
        )
        try:
            await asyncio.shield(self.finisher(ending))
        except Exception as exc:
            log.warning(
                "job %s: could not put it back in line (%s); it comes due when its lease lapses", job.job_id, exc
            )
            return
        self.requeued += 1
        log.info("↻ %s stopped; put back in line", job.job_id)

    async def _not_run(self, job: ClaimedJob, record: JobRecord | None, reason: str) -> None:
        log.warning("job %s not run: %s", job.job_id, reason)
        now = now_ms()
        fake = record or JobRecord("<unknown>", (), {}, now)
        await self._finish(job, fake, {"job_id": job.job_id}, JobNotRun(reason), False, now)


async def _tail(ctx: Mapping[str, Any]) -> progress.Tail:
    """The end of the run's progress log (its publisher, if the job reached the fan-out)."""
    publisher = ctx.get("progress")
    if publisher is None:
        return progress.bare_tail(str(ctx.get("job_id", "")))
    tail: progress.Tail = await publisher.tail()
    return tail
