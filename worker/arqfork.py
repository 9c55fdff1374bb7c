"""Every use of arq's internals, in one place: :class:`AgentQWorker`, arq's ``Worker`` with the
delivery guarantees arq leaves out and a pickup that costs Redis nothing while idle.

arq 0.28.0 is pinned (pyproject.toml). Each override below changes arq's behaviour in one way;
``PINNED`` holds a digest of the source of every arq function overridden here or mirrored by
``agentq.wire`` or this module, and ``tests/arqfork/test_guard.py`` fails, naming the function, as
soon as an installed arq's source differs. Upgrading arq is then a deliberate act: read the new
source, adapt the override, update the digest.

==============================  ============================================  ======================================
arq internal                    what changes here                             why
==============================  ============================================  ======================================
``in_progress_timeout_s``       ``lease_s`` instead of the longest job        a dead worker's job runs again within
                                timeout + 10 s, renewed every third of it     one lease; a live long job is never
                                with the job's queue score (``worker.leases``) taken from its worker
``Worker.main``                 connects with ``agentq.connection``'s pool;   TLS, timeouts, retries on OSError;
                                runs the lease renewer beside arq's loop;     the leases need a task of their own;
                                arq's ``poll`` helper is given no delay       the waiting is ``_poll_iteration``'s
``Worker._poll_iteration``,     one claim script (``worker.claim``) instead   arq sends ~100 commands a second per
``Worker.start_jobs``,          of ``ZRANGEBYSCORE`` and a transaction per    idle worker and four round trips per
``Worker.record_health``        job; admission (``worker.admission``); then   job taken; a job that cannot meet its
(timing only), ``poll``         a wait: on the doorbell (``worker.doorbell``) deadline here must stay queued; the
                                when idle, on a freed slot or pool worker     waits end before arq's health key
                                when full; a Redis outage shorter than        expires; arq exits on the first
                                ``redis_outage_s`` is waited out; a stop      connection error, and a cancel inside
                                request ends the loop even if its             a Redis call can come out as an
                                cancellation was swallowed                    OSError (the loop would poll for ever)
``Worker.run_job``              arq's, minus its first transaction: the       one round trip less per job; a
                                record, the try and the abort request come    progress log ends in the same step
                                with the claim; the progress publisher        as the result; its error texts are
                                goes to ``finish_job``; no "←" log line (the   matched by :func:`explain_failure`
                                job logs its own end)
``Worker.on_stop``              notes that a stop was asked for, from both    see ``_poll_iteration``; with a grace
                                of arq's signal handlers                      period arq never set our flag before
``Worker.finish_job``,          one script (``worker.finish``): ``SET NX``    at-least-once delivery, exactly-once
``Worker.finish_failed_job``    on the result, arq's clean-up, a requeued     results: the first complete one
                                job's score restored, the progress tail,      wins; one round trip instead of five;
                                the dedup marker, the done message and the    a requeued job must be due again;
                                listing entry (``worker.listing``); a         listings cost no extra round trip;
                                failure reason a caller can act on; ``WAIT``  a result read survives a failover
                                for replicas if the settings ask
``Worker.close``                a Redis that is down (or a job that ended in  a worker stopped during an outage
                                an error) no longer skips ``on_shutdown``;    must still stop its pool and client
                                the doorbell's connection is closed
``ArqRedis.enqueue_job``,       mirrored, never called, by ``agentq.wire``    the producer may not import arq (its
``serialize_job``,              and the producer's enqueue script             ``__init__`` loads the worker); a job
``serialize_result``,                                                         and its dedup marker are written in
``deserialize_result``,                                                       one atomic step
``Job.status``, constants
==============================  ============================================  ======================================
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from signal import Signals
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import SerializationError, deserialize_job_raw, serialize_result
from arq.utils import args_to_string, ms_to_datetime, timestamp_ms
from arq.worker import JobExecutionFailed, Retry, RetryJob, Worker

from agentq import wire
from agentq.connection import open_redis, wait_for_replicas
from agentq.contract import dumps, loads
from agentq.errors import REDIS_DOWN
from agentq.settings import Settings
from worker import listing, progress
from worker.admission import Admission, Shape
from worker.claim import RETRY_KEY_TTL_S, Claim, ClaimedJob, Claimer
from worker.doorbell import Doorbell
from worker.finish import Finisher
from worker.leases import OutageBudget, renew_leases_forever

log = logging.getLogger(__name__)
arq_log = logging.getLogger("arq.worker")  # run_job's lines, as arq writes them (the tests read them)

#: The arq release the overrides were written against (pyproject.toml pins it).
PINNED_VERSION = "0.28.0"
#: sha256 of ``inspect.getsource`` of every arq function this module overrides or mirrors, or
#: ``agentq.wire`` mirrors, for arq 0.28.0. ``tests/arqfork/test_guard.py`` compares them with the
#: installed arq.
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
    "arq.worker.Worker.record_health": "108f4b8686c9402d52162af9db7e738df0627c6baf939cbb114ac298ac1c5d4f",
    "arq.worker.Worker._release_sem_dec_counter_on_complete": "0ed101482e942c33a64ccbe19eb3c4d29da9497258b1ffb1380da300da9bc481",  # noqa: E501
    "arq.utils.poll": "d8cc8542a1ab2bc3d3951428c0c21f6ec1fc42ea7bd88748232541ed98781a56",
    "arq.connections.ArqRedis.enqueue_job": "7da8706a747c117172047b3ae7405bd450ead0c09b5043c65325661b580b1ce1",
    "arq.jobs.serialize_job": "1fc854cc50e16e5c87d1844690acf67aed89338ee28f456f61ecf504c96d99cd",
    "arq.jobs.serialize_result": "709b9d4709d5aa083f098619ca24c5b7b6159841a9902ec38ac8dc0ea411b942",
    "arq.jobs.deserialize_result": "500bdf28141b60f8fbd141d1b53772bc8e5fa59610d9319314c2b9c55499b13d",
    "arq.jobs.Job.status": "b7b8d9da80a12c10194947c18990770dcf85e3e79bde2f28f53efbfd4ad59bcb",
    "arq.constants": "ee9c72492437fc8fd8846a64b583c0798f9c69a529f4d8242e117bfccc2d2043",
}

#: After a claim that skipped due jobs running under another (older) worker's lease, look again this soon.
ELSEWHERE_RECHECK_S = 1.0


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


class Next(enum.Enum):
    """What the poll loop waits for after a pickup."""

    MORE = "claim again at once"
    SLOT = "a job of this worker to end"
    CAPACITY = "room on the pool for the refused job"
    BELL = "the doorbell, or the next due job"


class AgentQWorker(Worker):
    """arq's worker with leases, a doorbell, admission, outage riding, a stop that always ends, and
    first-result-wins writes."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(**options)
        self.settings = settings
        # A claim sets the in-progress key to this: one lease, renewed while the job runs.
        self.in_progress_timeout_s = settings.lease_s
        self.outage = OutageBudget(settings.redis_outage_s)
        self.stopping = False
        self.results_discarded = 0
        # arq calls on_stop right after it cancels the main task, from both of its signal handlers
        # (with and without a grace period): remember that a stop was asked for.
        self.on_stop = self._stop_requested
        keys = self.ctx["keys"]
        self.doorbell = Doorbell(settings, keys.bell(self.queue_name))
        self.admission = Admission(settings) if settings.admission else None
        self.ctx["admission"] = self.admission
        self._nudge = asyncio.Event()  # a slot or a pool worker came free, or a stop was asked for
        if self.admission is not None:
            self.admission.on_change = self._nudge.set
        self._claimed: dict[str, ClaimedJob] = {}  # claimed, not yet read by run_job
        self._scores: dict[str, int] = {}  # each running job's queue score before its claim
        self._publishers: dict[str, progress.ProgressPublisher | None] = {}  # handed from run_job to finish_job
        self._refused: Shape | None = None  # the shape of the job admission last gave back
        self._claimer: Claimer | None = None
        self._finisher: Finisher | None = None

    def _stop_requested(self, signum: Signals) -> None:
        self.stopping = True
        self._nudge.set()

    @property
    def claimer(self) -> Claimer:
        if self._claimer is None:
            self._claimer = Claimer(
                self.pool,
                self.queue_name,
                self.ctx["keys"].bell(self.queue_name),
                lease_s=self.settings.lease_s,
                abort=self.allow_abort_jobs,
            )
        return self._claimer

    @property
    def finisher(self) -> Finisher:
        if self._finisher is None:
            self._finisher = Finisher(
                self.pool,
                self.ctx["keys"],
                self.queue_name,
                progress_ttl_s=self.settings.progress_ttl_s,
                abort=self.allow_abort_jobs,
            )
        return self._finisher

    async def close(self) -> None:
        """arq's close, but the shut-down (the pool, the HTTP client, the heartbeat) always runs.

        arq awaits the job tasks and deletes its health key first, so a job that ended in an
        error or a Redis that is down made it skip ``on_shutdown``: the inference pool and the HTTP
        client were never stopped, and the worker exited with an error instead of 0.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        await self.doorbell.aclose()
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
        renewer = asyncio.create_task(
            renew_leases_forever(self._pool, self.queue_name, self._running, self.settings.lease_s)
        )
        try:
            await super().main()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    def _running(self) -> list[str]:
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    # ------------------------------------------------------------------ the poll loop
    async def _poll_iteration(self) -> None:
        """Take what work there is room for, then wait for a reason to look again.

        A Redis outage shorter than ``redis_outage_s`` is waited out, not fatal. A stop request
        ends the loop even if its cancellation was swallowed on the way: a cancel that lands inside
        a Redis call can come out as a ``TimeoutError`` (an ``OSError``), which looks like an
        outage here, and the worker would otherwise poll on and never exit.
        """
        if self.stopping:
            log.warning("stop requested but the poll loop is still running (its cancellation was lost); stopping")
            raise asyncio.CancelledError
        try:
            self._nudge.clear()
            claim, after = await self._pickup()
            if self.allow_abort_jobs:
                await self._cancel_aborted_jobs()
            for job_id, t in list(self.tasks.items()):
                if t.done():
                    del self.tasks[job_id]
                    t.result()  # as arq: an error in run_job surfaces here
            await self.heart_beat()
            await self._wait(after, claim)
        except REDIS_DOWN as exc:
            await asyncio.sleep(self.outage.failed(exc))
        else:
            self.outage.succeeded()

    async def _pickup(self) -> tuple[Claim | None, Next]:
        """Claim as many due jobs as there is room for, admit them in queue order, start them."""
        room = self.max_jobs - self.job_counter
        if not self.allow_pick_jobs or room <= 0:
            return None, Next.SLOT
        admission = self.admission
        if admission is not None and self._refused is not None and not admission.fits(self._refused):
            return None, Next.CAPACITY  # nothing has changed enough: no need to ask Redis
        claim = await self.claimer.claim(room)
        refused: list[ClaimedJob] = []
        self._refused = None
        for job in claim.jobs:
            shape = admission.shape_of(job.record, self.ctx.get("sources", {})) if admission is not None else None
            if refused or not self._admit(job, shape):
                refused.append(job)  # in queue order: nothing overtakes a refused job here
                self._refused = self._refused or shape
                continue
            await self._start(job)
        if refused:
            assert admission is not None
            admission.refused += len(refused)
            await self.claimer.release(refused)
            return claim, Next.CAPACITY
        if claim.more:
            return claim, Next.SLOT
        if claim.jobs and claim.read_all:
            return claim, Next.MORE
        return claim, Next.BELL

    def _admit(self, job: ClaimedJob, shape: Shape | None) -> bool:
        """Admission's verdict (a job it cannot read, or one to abort, always goes through: it ends at once)."""
        if self.admission is None:
            return True
        if shape is not None and not job.aborted and not self.admission.fits(shape):
            return False
        self.admission.admitted(job.job_id, shape)
        return True

    async def _start(self, job: ClaimedJob) -> None:
        """Start a claimed job's task, keeping arq's books (its slot semaphore and counter)."""
        if job.job_id in self._running():
            # Its lease had lapsed and this worker claimed it again: it already runs here, and arq
            # keys its tasks by id, so a second task would corrupt its books. The new lease is ours.
            if self.admission is not None:
                self.admission.ended(job.job_id)
            return
        await self.sem.acquire()  # arq's slot: free, as the claim took no more jobs than there is room for
        self.job_counter += 1
        self._claimed[job.job_id] = job
        self._scores[job.job_id] = job.score
        task = self.loop.create_task(self.run_job(job.job_id, job.score))
        task.add_done_callback(lambda _: self._job_done(job.job_id))
        self.tasks[job.job_id] = task

    def _job_done(self, job_id: str) -> None:
        self._release_sem_dec_counter_on_complete()
        self._claimed.pop(job_id, None)
        self._scores.pop(job_id, None)
        self._publishers.pop(job_id, None)
        if self.admission is not None:
            self.admission.ended(job_id)
        self._nudge.set()

    async def _wait(self, after: Next, claim: Claim | None) -> None:
        """Wait for a reason to look at the queue again, never longer than ``poll_delay_s``."""
        if after is Next.MORE:
            return
        longest = min(self.settings.poll_delay_s, self._until_health_record())
        if after is Next.BELL and claim is not None:
            if claim.running_elsewhere:
                longest = min(longest, ELSEWHERE_RECHECK_S)
            if claim.next_due_ms is not None:
                longest = min(longest, max(0.0, claim.next_due_ms / 1000 - time.time()))
            await self.doorbell.wait(longest)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(longest):
                await self._nudge.wait()

    def _until_health_record(self) -> float:
        """Seconds until arq's ``record_health`` writes its key again (it skips calls before then)."""
        return max(0.0, self._last_health_check + self.health_check_interval - time.time())

    # ------------------------------------------------------------------ running a job
    async def run_job(self, job_id: str, score: int) -> None:
        """arq's ``run_job`` for a job the claim took: its record, try and abort request come with
        the claim instead of arq's first transaction. The rest is arq's, line for line, except that
        the job's progress publisher is handed to ``finish_job``.
        """
        claimed = self._claimed.pop(job_id, None) or await self._read_job(job_id, score)
        start_ms = timestamp_ms()
        v, job_try, abort_job = claimed.record, claimed.job_try, claimed.aborted
        function_name, enqueue_time_ms = "<unknown>", 0
        args: tuple[Any, ...] = ()
        kwargs: dict[Any, Any] = {}

        async def job_failed(exc: BaseException) -> None:
            self.jobs_failed += 1
            result_data_ = serialize_result(
                function=function_name,
                args=args,
                kwargs=kwargs,
                job_try=job_try,
                enqueue_time_ms=enqueue_time_ms,
                success=False,
                result=exc,
                start_ms=start_ms,
                finished_ms=timestamp_ms(),
                ref=f"{job_id}:{function_name}",
                serializer=self.job_serializer,
                queue_name=self.queue_name,
                job_id=job_id,
            )
            await asyncio.shield(self.finish_failed_job(job_id, result_data_))

        if not v:
            arq_log.warning("job %s expired", job_id)
            return await job_failed(JobExecutionFailed("job expired"))
        try:
            function_name, args, kwargs, enqueue_job_try, enqueue_time_ms = deserialize_job_raw(
                v, deserializer=self.job_deserializer
            )
        except SerializationError as e:
            arq_log.exception("deserializing job %s failed", job_id)
            return await job_failed(e)
        if abort_job:
            t = (timestamp_ms() - enqueue_time_ms) / 1000
            arq_log.info("%6.2fs ⊘ %s:%s aborted before start", t, job_id, function_name)
            return await job_failed(asyncio.CancelledError())
        try:
            function = self.functions[function_name]
        except KeyError:
            arq_log.warning("job %s, function %r not found", job_id, function_name)
            return await job_failed(JobExecutionFailed(f"function {function_name!r} not found"))
        ref = f"{job_id}:{function_name}"  # no cron jobs here: every job keeps arq's per-job ref
        if enqueue_job_try and enqueue_job_try > job_try:
            job_try = enqueue_job_try
            await self.pool.setex(wire.RETRY_PREFIX + job_id, RETRY_KEY_TTL_S, str(job_try))
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            t = (timestamp_ms() - enqueue_time_ms) / 1000
            arq_log.warning("%6.2fs ! %s max retries %d exceeded", t, ref, max_tries)
            self.jobs_failed += 1
            result_data = serialize_result(
                function_name,
                args,
                kwargs,
                job_try,
                enqueue_time_ms,
                False,
                JobExecutionFailed(f"max {max_tries} retries exceeded"),
                start_ms,
                timestamp_ms(),
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )
            return await asyncio.shield(self.finish_failed_job(job_id, result_data))

        result: Any = _NO_RESULT
        exc_extra = None
        finish = False
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        incr_score: int | None = None
        job_ctx = {
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_time_ms),
            "score": score,
        }
        ctx = {**self.ctx, **job_ctx}
        if self.on_job_start:
            await self.on_job_start(ctx)
        start_ms = timestamp_ms()
        success = False
        try:
            s = args_to_string(args, kwargs)
            extra = f" try={job_try}" if job_try > 1 else ""
            if (start_ms - score) > 1200:
                extra += f" delayed={(start_ms - score) / 1000:0.2f}s"
            arq_log.info("%6.2fs → %s(%s)%s", (start_ms - enqueue_time_ms) / 1000, ref, s, extra)
            self.job_tasks[job_id] = task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
            try:
                result = await asyncio.wait_for(task, timeout_s)
            except (Exception, asyncio.CancelledError) as e:
                exc_extra = getattr(e, "extra", None)
                if callable(exc_extra):
                    exc_extra = exc_extra()
                raise
            finally:
                del self.job_tasks[job_id]
        except (Exception, asyncio.CancelledError) as e:
            finished_ms = timestamp_ms()
            t = (finished_ms - start_ms) / 1000
            if self.retry_jobs and isinstance(e, Retry):
                incr_score = e.defer_score
                arq_log.info("%6.2fs ↻ %s retrying job in %0.2fs", t, ref, (e.defer_score or 0) / 1000)
                if e.defer_score:
                    incr_score = e.defer_score + (timestamp_ms() - score)
                self.jobs_retried += 1
            elif job_id in self.aborting_tasks and isinstance(e, asyncio.CancelledError):
                arq_log.info("%6.2fs ⊘ %s aborted", t, ref)
                result = e
                finish = True
                self.aborting_tasks.remove(job_id)
                self.jobs_failed += 1
            elif self.retry_jobs and isinstance(e, asyncio.CancelledError | RetryJob):
                arq_log.info("%6.2fs ↻ %s cancelled, will be run again", t, ref)
                self.jobs_retried += 1
            else:
                arq_log.exception(
                    "%6.2fs ! %s failed, %s: %s", t, ref, e.__class__.__name__, e, extra={"extra": exc_extra}
                )
                result = e
                finish = True
                self.jobs_failed += 1
        else:
            success = True
            finished_ms = timestamp_ms()
            # arq logs "← <ref> ● <result>" here; the job logs its own end (worker.job), once is enough.
            finish = True
            self.jobs_complete += 1

        keep_result_forever = (
            self.keep_result_forever if function.keep_result_forever is None else function.keep_result_forever
        )
        result_timeout_s = self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        result_data = None
        if result is not _NO_RESULT and (keep_result_forever or result_timeout_s > 0):
            result_data = serialize_result(
                function_name,
                args,
                kwargs,
                job_try,
                enqueue_time_ms,
                success,
                result,
                start_ms,
                finished_ms,
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )
        if self.on_job_end:
            await self.on_job_end(ctx)
        self._publishers[job_id] = ctx.get("progress")
        await asyncio.shield(
            self.finish_job(job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, None)
        )
        if self.after_job_end:
            await self.after_job_end(ctx)

    async def _read_job(self, job_id: str, score: int) -> ClaimedJob:
        """What arq's first transaction reads, for a ``run_job`` the claim did not prepare (tests)."""
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.get(wire.JOB_PREFIX + job_id)
            pipe.incr(wire.RETRY_PREFIX + job_id)
            pipe.expire(wire.RETRY_PREFIX + job_id, RETRY_KEY_TTL_S)
            record, job_try, _ = await pipe.execute()
        return ClaimedJob(job_id, score, record, int(job_try), False)

    # ------------------------------------------------------------------ ending a job
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
        """arq's finish_job as one script (``worker.finish``): ``SET NX`` on the result, arq's clean-up,
        a requeued job's score given back, the progress log's tail, the dedup marker, the done message."""
        publisher = self._publishers.pop(job_id, None)
        tail = await publisher.tail() if publisher is not None else progress.bare_tail(job_id)
        score = self._scores.get(job_id, timestamp_ms())
        stored = await self.finisher(
            job_id,
            "finish" if finish else "requeue",
            tail,
            result=result_data if finish else None,
            result_px=_ms(result_timeout_s, keep_result_forever),
            keep_in_progress_ms=None if keep_in_progress is None else round(keep_in_progress * 1000),
            requeue_score=score + (incr_score or 0),
            filing=listing.filing(self.settings, job_id, result_data) if finish and result_data else None,
        )
        if finish and result_data and not stored:
            self.results_discarded += 1
            log.warning("job %s already had a result (an earlier try finished first); this one is discarded", job_id)
        elif stored:
            await self._replicated(job_id)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's finish_failed_job as the same script, with ``SET NX`` and a reason a caller can act on."""
        result_data = explain_failure(result_data, self.max_tries)
        keep = self.keep_result_forever or self.keep_result_s > 0
        stored = await self.finisher(
            job_id,
            "finish",
            progress.bare_tail(job_id),
            result=result_data if keep else None,
            result_px=_ms(self.keep_result_s, self.keep_result_forever),
            filing=listing.filing(self.settings, job_id, result_data) if keep and result_data else None,
        )
        if stored:
            await self._replicated(job_id)

    async def _replicated(self, job_id: str) -> None:
        """With ``redis_wait_replicas``, wait until that many replicas hold the result just written.

        Without it a failover can take back a result a caller has already read (the job, still
        queued on the new primary, then runs again and may answer differently). Too few replicas in
        time is logged, not raised: the result is on the primary, and the job is not lost either way.
        """
        try:
            acked = await wait_for_replicas(self.pool, self.settings, self.ctx["keys"].replication_fence)
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


_NO_RESULT = object()


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
