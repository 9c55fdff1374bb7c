"""The worker's loop: take what there is room for, run it, end it, stop cleanly.

One asyncio task runs the loop; each job runs in a task of its own (``worker.engine.runner``);
a few helpers run beside them (lease renewals, the heartbeat, the cancel listener, progress
writes). One pass of the loop:

1. **claim** (``lua/claim.lua``): as many due jobs as ``max_jobs`` leaves room for, one round trip,
   each under a lease this worker holds;
2. **admit** (``worker.engine.admission``): in queue order, each job only if it can meet its
   deadline here; the rest go back (``lua/release.lua``), nothing overtakes a refused job;
3. **start** each admitted job's task;
4. **wait** for a reason to look again, never longer than ``poll_delay_s``: the doorbell when there
   was nothing to take (``worker.engine.doorbell``), a job of its own ending when it was full, room
   on the pool when admission said no, nothing when the claim left due jobs behind it.

**Shards** (``AGENTQ_QUEUE_SHARDS``). A worker serves every shard of the queue, or those of
``AGENTQ_WORKER_SHARDS``, in turn: a pass claims from the shards that may hold due jobs (their bell
rang, their last claim left due jobs, their next job has come due, or the fallback poll is due),
starting after the shard it last took from, and goes on to the next while it has room. So while
every shard has a backlog each gets its turn, and a shard with nothing due costs nothing but its
share of the idle wait (``worker.engine.doorbell``).

A job that must run alone (its last run died in company: ``lua/claim.lua``) is claimed only when
nothing runs here, and nothing else is claimed until it ends. For a lease after Redis failed this
worker, its claims spare other workers' lapsed leases instead of judging them deaths
(``worker.engine.leases``).

**Stopping.** SIGINT or SIGTERM stops the claims. With ``shutdown_grace_s`` the running jobs get
that long to finish; whatever still runs then (or at once, without a grace period, or on a second
signal) is cancelled and put back in line with its try given back (``lua/finish.lua``). A run
already storing its result is let end, as Redis may hold it finished; a second signal cancels it
too. Then the worker's parts are shut down and the process exits 0.

**Redis outages.** A pass that cannot reach Redis is retried with back-off for up to
``redis_outage_s`` (``worker.engine.leases.OutageBudget``); past that the error ends the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from arq.worker import Function

from agentq.connection import open_redis
from agentq.errors import REDIS_DOWN
from agentq.protocol.queue import Claim, ClaimedJob, Queue
from agentq.protocol.records import JobRecord, RecordError, decode_job
from worker.engine import scheduler
from worker.engine.admission import Admission, Shape
from worker.engine.doorbell import Doorbell
from worker.engine.finisher import Finisher
from worker.engine.leases import OutageBudget, renew_leases_forever
from worker.engine.runner import Runner

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.settings import Settings
    from worker.engine.context import WorkerContext

log = logging.getLogger("worker")

Hook = Callable[["WorkerContext"], Awaitable[None]]


class Next(enum.Enum):
    """What the loop waits for after a pass."""

    MORE = "claim again at once"
    SLOT = "a job of this worker to end"
    CAPACITY = "room on the pool for the refused job"
    BELL = "the doorbell, or the next due job"


class Worker:
    """Takes jobs from one queue and runs them; :meth:`run` until stopped."""

    def __init__(
        self,
        settings: Settings,
        functions: Sequence[Function],
        ctx: WorkerContext,
        *,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        burst: bool = False,
        redis: Redis | None = None,
    ) -> None:
        self.settings, self.ctx, self.burst = settings, ctx, burst
        self.functions: Mapping[str, Function] = {f.name: f for f in functions}
        self.on_startup, self.on_shutdown = on_startup, on_shutdown
        self.worker_id: str = ctx["worker_id"]
        self.keys = ctx["keys"]
        self.redis: Redis | None = redis
        self.shards: list[int] = settings.served_shards
        # A connection of its own, unless one is given.
        self.doorbell = Doorbell(settings, {i: self.keys.shard(i).bell for i in self.shards}, redis)
        self.admission = Admission(settings) if settings.admission else None
        ctx["admission"] = self.admission
        self.outage = OutageBudget(settings.redis_outage_s)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        """The running jobs' tasks, by job id."""
        self.alone: str | None = None
        """The job running in isolation, if one does: nothing else is claimed meanwhile."""
        self.stopping = False
        self._nudge = asyncio.Event()  # a job or a pool task ended, or a stop was asked for
        self._waiting: asyncio.Task[Any] | None = None
        self._unasked = False  # the last wait was the bell's, and it ran out unrung (Queue.claim: unasked)
        self._look_at: dict[int, float] = dict.fromkeys(self.shards, 0.0)
        """Per shard, when (epoch ms) to claim from it next: 0 at once (its bell rang, its last claim left due
        jobs), its next job's due time, or ``inf``: not before its bell rings (or the fallback poll)."""
        self._turn = 0  # where in ``shards`` the next pass starts
        self._rang: set[int] = set()  # the shards whose bell the last wait heard
        self._refused: Shape | None = None  # the shape of the job admission last gave back
        self._grace: asyncio.Task[None] | None = None
        self._queue: Queue | None = None
        self._runner: Runner | None = None
        self._unstarted: list[ClaimedJob] = []  # cancelled by a stop before their task began
        if self.admission is not None:
            self.admission.on_change = self._nudge.set

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "the worker has not started"
        return self._queue

    @property
    def runner(self) -> Runner:
        assert self._runner is not None, "the worker has not started"
        return self._runner

    # ------------------------------------------------------------------ life
    def run(self) -> None:
        """Run until stopped (SIGINT, SIGTERM), then shut down; the process's main call."""
        asyncio.run(self.main())

    async def main(self) -> None:
        """Connect, start the worker's parts, loop until stopped, then shut everything down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig)
        try:
            await self.start()
            await self.serve()
        finally:
            await self.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def start(self) -> None:
        """Connect to Redis and start the worker's parts (``on_startup``)."""
        s = self.settings
        if self.redis is None:
            self.redis = await open_redis(s, connect_retries=s.redis_connect_retries)
        self.ctx["redis"] = self.redis
        self._queue = Queue(self.redis, self.keys, weights=s.tenant_weights)
        finisher = Finisher(self._queue, self.worker_id, s)
        self._runner = Runner(self.ctx, self.functions, finisher, s)
        if self.on_startup is not None:
            await self.on_startup(self.ctx)
        await scheduler.declare(self._queue, s)

    async def serve(self) -> None:
        """The loop, with the lease renewer beside it; returns once stopped and every job has ended."""
        helpers = [] if self.burst else [asyncio.create_task(scheduler.tick_forever(self.queue, self.settings))]
        renewer = asyncio.create_task(
            renew_leases_forever(
                self.queue, self.worker_id, self._running, self.settings.lease_s, on_failure=self.outage.noticed
            ),
            name="leases",
        )
        try:
            while not self.stopping:
                if await self._pass() and self.burst and not self.tasks and not await self.redis_zcard():
                    log.info("burst: the queue is empty; stopping")
                    break
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        finally:
            for helper in (renewer, *helpers):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    async def redis_zcard(self) -> int:
        """Jobs in every tenant's queue (queued, deferred and running)."""
        total, _, _ = await self.queue.counts()
        return total

    def stop(self, sig: signal.Signals | None = None) -> None:
        """Stop claiming; give running jobs ``shutdown_grace_s`` to end, then cancel them (put back in line).

        A second call cancels them at once.
        """
        name = sig.name if sig is not None else "request"
        if self.stopping:
            log.info("shutdown on %s again: cancelling %d running jobs now", name, len(self.tasks))
            self._cancel_jobs(force=True)
            return
        self.stopping = True
        grace = self.settings.shutdown_grace_s
        log.info(
            "shutdown on %s: %d jobs done, %d failed, %d put back; %d running%s",
            name,
            self.runner.done if self._runner else 0,
            self.runner.failed if self._runner else 0,
            self.runner.requeued if self._runner else 0,
            len(self.tasks),
            f", given {grace:g}s to finish" if self.tasks and grace > 0 else "",
        )
        if self._waiting is not None:
            self._waiting.cancel()
        self._nudge.set()
        if self.tasks and grace > 0:
            self._grace = asyncio.create_task(self._cancel_after(grace), name="grace")
        else:
            self._cancel_jobs()

    async def _cancel_after(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self.tasks:
            log.info("grace period over: cancelling %d running jobs (they go back in line)", len(self.tasks))
            self._cancel_jobs()

    def _cancel_jobs(self, force: bool = False) -> None:
        """Cancel the running jobs but those storing their result (they end within a round trip), or all."""
        storing = self.runner.storing if self._runner is not None and not force else set()
        for job_id, task in self.tasks.items():
            if job_id not in storing:
                task.cancel()

    async def close(self) -> None:
        """Shut the worker's parts down (``on_shutdown``), whatever state Redis is in, and disconnect."""
        if self._grace is not None:
            self._grace.cancel()
        if self.tasks:
            self._cancel_jobs(force=True)
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self._give_back(self._unstarted)
        await self.doorbell.aclose()
        try:
            if self.on_shutdown is not None and self._runner is not None:
                await self.on_shutdown(self.ctx)
        finally:
            if self.redis is not None:
                await self.redis.aclose()
                self.redis = None
        if self._runner is not None:
            r = self._runner
            log.info("stopped: %d jobs done, %d failed, %d put back", r.done, r.failed, r.requeued)

    async def _give_back(self, jobs: list[ClaimedJob]) -> None:
        """Put claimed jobs that never started here back in line now, rather than when their lease lapses
        (a stop that came while their claim was on its way, or before their task began)."""
        if not jobs:
            return
        try:
            await self.queue.release(self.worker_id, jobs)
        except REDIS_DOWN as exc:
            log.warning("%d claimed jobs not given back (%s): they come due when their lease lapses", len(jobs), exc)
        else:
            self.runner.requeued += len(jobs)
        jobs.clear()

    def _running(self) -> list[str]:
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    # ------------------------------------------------------------------ the loop
    async def _pass(self) -> bool:
        """One pass: take what there is room for, then wait for a reason to look again.

        Returns True if the pass found nothing to do (for ``burst``). A Redis outage shorter than
        ``redis_outage_s`` is waited out.
        """
        started = self.outage.clock()
        try:
            self._nudge.clear()
            # No pass outlasts the outage budget left (its wait at most poll_delay_s more): an
            # attempt that hangs in a name lookup or in redis-py's retries fails in time.
            async with asyncio.timeout(self.outage.allowance() + self.settings.poll_delay_s):
                claim, after = await self._pickup()
                await self._wait(after)
        except REDIS_DOWN as exc:
            await asyncio.sleep(self.outage.failed(exc, since=started))
            return False
        self.outage.succeeded()
        return after is Next.BELL and (claim is None or not claim.jobs)

    async def _pickup(self) -> tuple[Claim | None, Next]:
        """Claim as many due jobs as there is room for, shard after shard, admit them in queue order,
        start them; the last claim made, and what to wait for."""
        if self.stopping or self.settings.max_jobs <= len(self.tasks) or self.alone is not None:
            return None, Next.SLOT
        admission = self.admission
        if admission is not None and self._refused is not None and not admission.fits(self._refused):
            return None, Next.CAPACITY  # nothing has changed enough: no need to ask Redis
        now = time.time() * 1000
        order = self.shards[self._turn :] + self.shards[: self._turn]
        if len(order) > 1:  # one shard is always looked at, as an unsharded queue always was
            order = [shard for shard in order if self._look_at[shard] <= now]
        claim, after = None, Next.BELL
        for shard in order:
            if self.settings.max_jobs <= len(self.tasks) or self.alone is not None:
                return claim, Next.SLOT  # the shards left are looked at once there is room
            self._turn = (self.shards.index(shard) + 1) % len(self.shards)
            claim, then = await self._pickup_from(shard)
            if then in (Next.SLOT, Next.CAPACITY):
                return claim, then
            self._look_at[shard] = 0.0 if then is Next.MORE else (claim.next_due_ms or math.inf)
            if then is Next.MORE:
                after = Next.MORE
        if self.settings.max_jobs <= len(self.tasks):
            return claim, Next.SLOT  # full: a ring it heard now would be one an idle worker missed
        return claim, after

    async def _pickup_from(self, shard: int) -> tuple[Claim, Next]:
        """Claim as many due jobs of ``shard`` as there is room for, admit them in queue order, start them."""
        room = self.settings.max_jobs - len(self.tasks)
        admission = self.admission
        lease_s = self.settings.lease_s
        claim = await self.queue.claim(
            self.worker_id,
            want=room,
            lease_ms=max(1, round(lease_s * 1000)),
            idle=not self.tasks,
            unsure=self.outage.within(lease_s),  # just cut off itself: a lapsed lease may be no death
            unasked=self._unasked and shard not in self._rang,
            shard=shard,
        )
        if claim.spared:
            log.info(
                "spared %d lapsed leases of other workers: Redis was lost here too, within the lease", claim.spared
            )
        if self.stopping:  # stopped while the claim was on its way: nothing more starts here
            await self._give_back([job for job in claim.jobs if job.job_id not in self.tasks])
            return claim, Next.SLOT
        refused: list[ClaimedJob] = []
        self._refused = None
        for job in claim.jobs:
            if job.held:
                if job.job_id in self.tasks:
                    continue  # it runs here still: the claim renewed its lease
                log.warning(
                    "job %s: held here but never started (the reply to its claim was lost); starting it", job.job_id
                )
            record = _decode(job)
            shape = admission.shape_of(record, self.ctx.get("sources", {})) if admission is not None else None
            if refused or not self._admit(job, shape):
                refused.append(job)  # in queue order: nothing overtakes a refused job here
                self._refused = self._refused or shape
                continue
            self._start(job, record)
        if refused:
            assert admission is not None
            admission.refused += len(refused)
            self._look_at[shard] = 0.0  # they wait there still
            await self.queue.release(self.worker_id, refused)
            return claim, Next.CAPACITY
        if claim.learnt and self.alone is None and len(self.tasks) < self.settings.max_jobs:
            return claim, Next.MORE  # tenants it had not read: their queues may hold due jobs
        if claim.more or claim.held_back or self.alone is not None:
            self._look_at[shard] = 0.0 if claim.more or claim.held_back else self._look_at[shard]
            return claim, Next.SLOT
        if claim.read_all and (claim.jobs or claim.spared):
            return claim, Next.MORE
        return claim, Next.BELL

    def _admit(self, job: ClaimedJob, shape: Shape | None) -> bool:
        """Admission's verdict (a job it cannot read, one cancelled or one that must run alone always
        goes through: the first two end at once, the last is only claimed by an idle worker)."""
        if self.admission is None:
            return True
        if shape is not None and not job.cancelled and not job.alone and not self.admission.fits(shape):
            return False
        self.admission.admitted(job.job_id, shape)
        return True

    def _start(self, job: ClaimedJob, record: JobRecord | RecordError | None) -> None:
        """Start a claimed job's task."""
        if job.alone:
            self.alone = job.job_id
        task = asyncio.create_task(self.runner.run(job, record), name=f"job {job.job_id}")
        task.add_done_callback(lambda t: self._job_done(job, t))
        self.tasks[job.job_id] = task

    def _job_done(self, job: ClaimedJob, task: asyncio.Task[None]) -> None:
        job_id = job.job_id
        if job_id in self.runner.begun:
            self.runner.begun.discard(job_id)
        elif task.cancelled():  # cancelled before its first step: the runner never saw it to put it back
            self._unstarted.append(job)
        self.tasks.pop(job_id, None)
        if self.alone == job_id:
            self.alone = None
        if self.admission is not None:
            self.admission.ended(job_id)
        self._nudge.set()

    async def _wait(self, after: Next) -> None:
        """Wait for a reason to look at the queue again, never longer than ``poll_delay_s``."""
        self._unasked, self._rang = False, set()
        if after is Next.MORE or self.stopping:
            return
        poll = longest = self.settings.poll_delay_s
        if after is Next.BELL:  # no longer than until a shard's next job comes due
            longest = min(longest, max(0.0, min(self._look_at.values()) / 1000 - time.time()))
        wait: Awaitable[Any] = self.doorbell.wait(longest) if after is Next.BELL else self._nudged(longest)
        self._waiting = asyncio.ensure_future(wait)
        try:
            rang = await self._waiting
            if after is Next.BELL:
                self._rang = set(rang)
                self._unasked = not rang  # the bell's wait ran out: no one rang
                for shard in rang:
                    self._look_at[shard] = 0.0
                if not rang and longest >= poll:  # the fallback poll: every shard is looked at, unasked
                    self._look_at = dict.fromkeys(self.shards, 0.0)
        except asyncio.CancelledError:
            if not self.stopping:  # the loop itself is being cancelled, not just its wait
                raise
        finally:
            self._waiting = None

    async def _nudged(self, longest: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(longest):
                await self._nudge.wait()


def _decode(job: ClaimedJob) -> JobRecord | RecordError | None:
    """The job's record, read once for admission and the run (None: it had gone; the error: unreadable)."""
    if job.record is None:
        return None
    try:
        return decode_job(job.record)
    except RecordError as exc:
        return exc
