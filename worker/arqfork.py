"""Every use of arq's internals, in one place: :class:`AgentQWorker`, arq's ``Worker`` with the
delivery guarantees arq leaves out.

arq 0.28.0 is pinned (pyproject.toml). Each override below changes arq's behaviour in one way;
``PINNED`` holds a digest of the source of every arq function overridden here or mirrored by
``agentq.wire``, and ``tests/arqfork/test_guard.py`` fails, naming the function, as soon as an
installed arq's source differs. Upgrading arq is then a deliberate act: read the new source,
adapt the override, update the digest.

==============================  ============================================  ======================================
arq internal                    what changes here                             why
==============================  ============================================  ======================================
``in_progress_timeout_s``       ``lease_s`` instead of the longest job        a dead worker's job runs again within
                                timeout + 10 s, renewed every third of it     one lease; a live long job is never
                                for each running job (``worker.leases``)      taken from its worker
``Worker.main``                 connects with ``agentq.connection``'s pool;   TLS, timeouts, retries on OSError;
                                runs the lease renewer beside arq's loop      the leases need a task of their own
``Worker.on_stop``              notes that a stop was asked for, from both    see ``_poll_iteration``; with a grace
                                of arq's signal handlers                      period arq never set our flag before
``Worker._poll_iteration``      a Redis outage shorter than                   arq exits on the first connection
                                ``redis_outage_s`` is waited out; a stop      error; a cancel landing inside a
                                request ends the loop even if its             Redis call can come out as an OSError
                                cancellation was swallowed                    and the loop would poll on for ever
``Worker.start_jobs``           one id at a time; skips ids this worker       a lapsed lease frees a running job,
                                already runs; gives back the slot arq takes   and a second task of one id breaks
                                when Redis fails mid-pickup; a connection     arq's books; arq leaks the slot;
                                lost inside its WATCH is an outage            redis-py calls that a WatchError
``Worker.finish_job``,          arq's transactions with ``SET NX`` on the     at-least-once delivery, exactly-once
``Worker.finish_failed_job``    result; a failure reason a caller can act on; results: the first complete one wins;
                                ``WAIT`` for replicas if the settings ask      a result read survives a failover
                                the job's listing entry (``worker.listing``)  listings cost no extra round trip
``Worker.close``                a Redis that is down (or a job that ended in   a worker stopped during an outage
                                an error) no longer skips ``on_shutdown``     must still stop its pool and client
``Worker.run_job``              its error texts are matched by                "max N retries exceeded", "job
                                :func:`explain_failure`                       expired", ``DeserializationError``
``ArqRedis.enqueue_job``,       mirrored, never called, by ``agentq.wire``    the producer may not import arq (its
``serialize_job``,              and the producer's enqueue transaction        ``__init__`` loads the worker); a job
``serialize_result``,                                                         and its dedup marker are written in
``deserialize_result``,                                                       one transaction
``Job.status``, constants
==============================  ============================================  ======================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from signal import Signals
from typing import Any

from arq.connections import ArqRedis
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from agentq import wire
from agentq.connection import open_redis, wait_for_replicas
from agentq.contract import dumps, loads
from agentq.errors import REDIS_DOWN
from agentq.keys import Keys
from agentq.settings import Settings
from worker import listing
from worker.leases import OutageBudget, renew_leases_forever

log = logging.getLogger(__name__)

#: The arq release the overrides were written against (pyproject.toml pins it).
PINNED_VERSION = "0.28.0"
#: sha256 of ``inspect.getsource`` of every arq function this module overrides or ``agentq.wire``
#: mirrors, for arq 0.28.0. ``tests/arqfork/test_guard.py`` compares them with the installed arq.
PINNED: dict[str, str] = {
    "arq.worker.Worker.__init__": "edfb0cd7e05e77cf83392f7733ae03f3554c69f12df39da8833d2c5218d77f41",
    "arq.worker.Worker.main": "45ca1591c9717466eec76e17fa958f84acf6085103d692a84ee25d9904e7f8fc",
    "arq.worker.Worker._poll_iteration": "f8d39d823a0a59f27a45f1c0e80bee44e16219d5072235fbc81866402298322f",
    "arq.worker.Worker.start_jobs": "b45797cfa40bed7fe6e9b8b8100c5f5b4144fe85112155c4e355df6ed8521f5f",
    "arq.worker.Worker.run_job": "589a19059ff84ee777552dc9fa5ff76b17d6d0d7f99716d2720a2ed07ccb9607",
    "arq.worker.Worker.finish_job": "903f09c92830d3fd8044e19cc409074d9b62143218f73c3101a1ef5f724b22ce",
    "arq.worker.Worker.finish_failed_job": "3e16087f318a7acfbe79189a682d732fc43a3fce1917689e96990cb14d30bee2",
    "arq.worker.Worker.close": "5bcc9cb35668082910200a680f052cc5d36a8ce3b3c04a95ef32c14ebd7daaa1",
    "arq.worker.Worker.handle_sig": "985ff7ba01aa8f04269a46c0d1be4e86ccf1d67ef5cab3a1154a9633e7360981",
    "arq.worker.Worker.handle_sig_wait_for_completion": "8f161d86834cc74ee2293cf004c5456c4c01614d651e6daa03f5d7d81863435f",  # noqa: E501
    "arq.worker.Worker._wait_for_tasks_to_complete": "c186389a00b11500e8644c6d050e4249488985639e6a01e40d77015400fccde8",
    "arq.connections.ArqRedis.enqueue_job": "7da8706a747c117172047b3ae7405bd450ead0c09b5043c65325661b580b1ce1",
    "arq.jobs.serialize_job": "1fc854cc50e16e5c87d1844690acf67aed89338ee28f456f61ecf504c96d99cd",
    "arq.jobs.serialize_result": "709b9d4709d5aa083f098619ca24c5b7b6159841a9902ec38ac8dc0ea411b942",
    "arq.jobs.deserialize_result": "500bdf28141b60f8fbd141d1b53772bc8e5fa59610d9319314c2b9c55499b13d",
    "arq.jobs.Job.status": "b7b8d9da80a12c10194947c18990770dcf85e3e79bde2f28f53efbfd4ad59bcb",
    "arq.constants": "ee9c72492437fc8fd8846a64b583c0798f9c69a529f4d8242e117bfccc2d2043",
}


async def create_arq_redis(s: Settings, *, connect_retries: int | None = None) -> ArqRedis:
    """The worker's pool: ``agentq.connection``'s recipe, as arq's ``ArqRedis``, JSON both ways."""
    return await open_redis(
        s,
        connect_retries=s.redis_connect_retries if connect_retries is None else connect_retries,
        redis_class=ArqRedis,
        job_serializer=dumps,
        job_deserializer=loads,
        default_queue_name=s.queue_name,
    )


class AgentQWorker(Worker):
    """arq's worker with leases, outage riding, a stop that always ends, and first-result-wins writes."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(**options)
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        # start_jobs sets the in-progress key to this: one lease, renewed while the job runs.
        self.in_progress_timeout_s = settings.lease_s
        self.outage = OutageBudget(settings.redis_outage_s)
        self.stopping = False
        self.results_discarded = 0
        # arq calls on_stop right after it cancels the main task, from both of its signal handlers
        # (with and without a grace period): remember that a stop was asked for.
        self.on_stop = self._stop_requested

    def _stop_requested(self, signum: Signals) -> None:
        self.stopping = True

    async def close(self) -> None:
        """arq's close, but the shut-down (the pool, the HTTP client, the heartbeat) always runs.

        arq awaits the job tasks and deletes its health key first, so a job that ended in an
        error or a Redis that is down made it skip ``on_shutdown``: the inference pool and the HTTP
        client were never stopped, and the worker exited with an error instead of 0.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        for outcome in await asyncio.gather(*self.tasks.values(), return_exceptions=True):
            if isinstance(outcome, Exception):
                log.warning("a job ended in an error during shut-down: %r", outcome)
        try:
            await self.pool.delete(self.health_check_key)
        except REDIS_DOWN as exc:
            log.warning("shutting down without Redis (%s): the health-check key is left to expire", exc)
        try:
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
        finally:
            await self.pool.aclose(close_connection_pool=True)
            self._pool = None

    async def main(self) -> None:
        """Connect with our own pool, keep the leases of running jobs, then run arq's loop."""
        if self._pool is None:
            self._pool = await create_arq_redis(self.settings)
        renewer = asyncio.create_task(renew_leases_forever(self._pool, self._running, self.settings.lease_s))
        try:
            await super().main()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    def _running(self) -> list[str]:
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    async def _poll_iteration(self) -> None:
        """arq's poll, but a Redis outage shorter than ``redis_outage_s`` is waited out, not fatal.

        A stop request ends the loop even if its cancellation was swallowed on the way: a cancel
        that lands inside a Redis call can come out as a ``TimeoutError`` (an ``OSError``), which
        looks like an outage here, and the worker would otherwise poll on and never exit.
        """
        if self.stopping:
            log.warning("stop requested but the poll loop is still running (its cancellation was lost); stopping")
            raise asyncio.CancelledError
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            await asyncio.sleep(self.outage.failed(exc))
        else:
            self.outage.succeeded()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, one id at a time, skipping jobs this worker already runs, never leaking a slot.

        A job whose lease lapsed (an outage, a stalled loop) is free for any worker, this one included;
        arq keys its tasks by job id, so running the same id twice in one worker corrupts its books.
        """
        for job_id in job_ids:
            if job_id.decode() in self._running():
                continue
            before = self.tasks.get(job_id.decode())  # a finished run of this id arq has not reaped yet
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                self._give_back_slot(job_id, before)
                raise
            except WatchError as exc:
                # redis-py reports a connection lost while a key is WATCHed as a WatchError (the
                # connection error is its context), and arq expects WatchError only from EXEC: one
                # lost during its reads before MULTI escapes, and a Redis restart at that moment
                # ended the worker. It is an outage like any other here.
                if not isinstance(exc.__context__, REDIS_DOWN):
                    raise
                self._give_back_slot(job_id, before)
                raise RedisConnectionError(f"connection lost while picking up job {job_id.decode()}") from exc
            if not self.allow_pick_jobs or self.job_counter >= self.max_jobs:
                return

    def _give_back_slot(self, job_id: bytes, before: asyncio.Task[Any] | None) -> None:
        """Return the slot arq took for a pickup that failed before the job started.

        arq takes the slot (semaphore and counter) before talking to Redis and only gives it back
        on a WATCH conflict; without this each outage would cost one slot for good. No new task
        under this id means the pickup failed before the job started.
        """
        if self.tasks.get(job_id.decode()) is before:
            self.job_counter -= 1
            self.sem.release()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's finish_job with ``SET NX``: a job run twice keeps the result stored first."""
        async with self.pool.pipeline(transaction=True) as tr:
            in_progress_key = wire.IN_PROGRESS_PREFIX + job_id
            delete_keys = []
            if keep_in_progress is None:
                delete_keys.append(in_progress_key)
            else:
                tr.pexpire(in_progress_key, round(keep_in_progress * 1000))
            wrote_at = None
            if finish:
                if result_data:
                    wrote_at = len(tr.command_stack)
                    px = _ms(result_timeout_s, keep_result_forever)
                    tr.set(wire.RESULT_PREFIX + job_id, result_data, px=px, nx=True)
                    listing.add_final(tr, self.settings, job_id, result_data)
                delete_keys += [wire.RETRY_PREFIX + job_id, wire.JOB_PREFIX + job_id]
                tr.zrem(wire.ABORT_SET, job_id)
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            replies = await tr.execute()
        if wrote_at is not None and not replies[wrote_at]:
            self.results_discarded += 1
            log.warning("job %s already had a result (an earlier try finished first); this one is discarded", job_id)
        elif finish:
            await self._replicated(job_id)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's finish_failed_job with ``SET NX`` and a reason a caller can act on."""
        result_data = explain_failure(result_data, self.max_tries)
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(wire.RETRY_PREFIX + job_id, wire.IN_PROGRESS_PREFIX + job_id, wire.JOB_PREFIX + job_id)
            tr.zrem(wire.ABORT_SET, job_id)
            tr.zrem(self.queue_name, job_id)
            if result_data is not None and (self.keep_result_forever or self.keep_result_s > 0):
                px = _ms(self.keep_result_s, self.keep_result_forever)
                tr.set(wire.RESULT_PREFIX + job_id, result_data, px=px, nx=True)
                listing.add_final(tr, self.settings, job_id, result_data)
            await tr.execute()
        await self._replicated(job_id)

    async def _replicated(self, job_id: str) -> None:
        """With ``redis_wait_replicas``, wait until that many replicas hold the result just written.

        Without it a failover can take back a result a caller has already read (the job, still
        queued on the new primary, then runs again and may answer differently). Too few replicas in
        time is logged, not raised: the result is on the primary, and the job is not lost either way.
        """
        try:
            acked = await wait_for_replicas(self.pool, self.settings, self.keys.replication_fence)
        except REDIS_DOWN as exc:
            log.warning("job %s: could not wait for replicas to hold its result: %s", job_id, exc)
            return
        if acked is not None and acked < self.settings.redis_wait_replicas:
            log.warning(
                "job %s: result confirmed by %d of %d replicas within %gs",
                job_id,
                acked,
                self.settings.redis_wait_replicas,
                self.settings.redis_wait_timeout_s,
            )


def _ms(seconds: float | None, forever: bool) -> int | None:
    return None if forever or seconds is None else round(seconds * 1000)


def explain_failure(result_data: bytes | None, max_tries: int) -> bytes | None:
    """Reword the reason in a result arq stores for a job it could not run, so callers see why.

    ``result_data`` is arq's result record as our JSON codec wrote it; its ``r`` field holds the
    exception as ``{"error": name, "message": text}`` (see ``agentq.contract``). The texts matched
    are those of arq's ``Worker.run_job`` (pinned above).
    """
    if result_data is None:
        return None
    try:
        record: dict[str, Any] = loads(result_data)
        reason = record["r"]
        error, message = reason["error"], reason["message"]
    except (ValueError, TypeError, KeyError):
        return result_data
    if error == "JobExecutionFailed" and "retries exceeded" in message:
        message = (
            f"gave up after {max_tries} tries: each try ended without a result because the worker running it "
            "died (crash, out of memory, SIGKILL) or lost Redis - the job may be crashing its workers"
        )
    elif error == "DeserializationError":
        message = "the job stored in Redis is not a JSON job in arq's format (unable to deserialize it); it was not run"
    elif error == "JobExecutionFailed" and message == "job expired":
        message = "the job's payload had gone from Redis (expired or deleted) when a worker took it"
    else:
        return result_data
    record["r"] = {"error": error, "message": message}
    return dumps(record)
