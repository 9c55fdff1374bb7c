"""One queue's protocol on one Redis client: every script, with typed arguments and answers.

The producer enqueues and cancels, the worker claims, renews, releases and finishes; each is one
script (``lua/``), one round trip, atomic. What each script does and why is written at the top of
its file; this module only turns Python values into ``KEYS`` and ``ARGV`` and replies into
dataclasses. Reads that need no script (a job's state, listings) are here too, so that nothing
outside this package knows how a job is laid out in Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from agentq import tenants
from agentq.connection import is_cluster
from agentq.errors import REDIS_DOWN, QuotaExceeded
from agentq.protocol import scripts
from agentq.protocol.keys import INDEXED_STATUSES, Field, Keys
from agentq.protocol.records import JobState, job_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: How many ``priority_step_s`` a job's queue score is moved ahead of its enqueue time.
PRIORITY_RANK: dict[str, int] = {"high": 2, "normal": 1, "low": 0}
CancelState = Literal["cancelled", "cancelling", "finished", "running", "not_found"]
log = logging.getLogger(__name__)

#: How many queue entries beyond those it wants a claim looks at (leases of its own it renews on
#: the way are not counted).
LOOK_BEYOND = 16
#: An idle worker that knows no tenant reads the tenants unasked at least this often (``Queue.claim``).
TENANTS_REFRESH_S = 30.0
#: The enqueue trims the recent-jobs index once in this many enqueues (per client).
TRIM_EVERY = 16


def now_ms() -> int:
    return round(time.time() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _quota(value: int | None) -> int | str:
    """A quota as the enqueue script takes it: ``''`` for none."""
    return "" if value is None else value


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: the job id, and whether it joined an identical job already in flight."""

    job_id: str
    deduplicated: bool


@dataclass(frozen=True)
class ClaimedJob:
    """One job a claim took."""

    job_id: str
    score: int
    """Its queue score before the claim: where a requeue puts it back."""
    record: bytes | None
    """Its job record; None if it had gone (the worker fails the job)."""
    job_try: int
    """Which run this is: 1 for the first, then one more per start (what the result reports)."""
    tries: int
    """Runs that count against ``max_tries``, this one included (a run that died in company does not)."""
    cancelled: bool
    """A caller asked to cancel it (while a worker that has since died ran it)."""
    alone: bool
    """A run in isolation: the job's last run died in company, so this worker runs nothing else meanwhile."""
    marker: str | None = None
    """The dedup marker field of the job's request, if it has one (the run whose result is stored deletes it)."""
    priority: str = "normal"
    retry_of: str | None = None
    held: bool = False
    """This worker held its lease already (renewed by the claim): it runs the job still, or lost the reply
    to the claim that took it and never started it."""


@dataclass(frozen=True)
class Claim:
    """What one claim found at the head of the queue."""

    jobs: list[ClaimedJob]
    more: bool
    """Due jobs were left because the worker had no more room (the bell was rung for them)."""
    next_due_ms: float | None
    """The score of the first job not due yet (a deferred job, or a running one's lease end)."""
    renewed: int
    """Due jobs whose lapsed lease this worker still held: it runs them still, their leases were renewed."""
    read_all: bool
    """Every entry read was due: there may be more due jobs beyond them."""
    held_back: bool
    """A job that must run alone is next in line and this worker is busy: it takes nothing until it is idle."""
    spared: int = 0
    """Other workers' lapsed leases pushed back one lease, not taken: this worker had just lost Redis itself."""
    learnt: bool = False
    """Tenants this worker did not know have jobs (their queues were not read): claim again at once."""


@dataclass
class Ending:
    """What the finish script needs to end one run of a job."""

    job_id: str
    mode: Literal["finish", "requeue"]
    result: bytes = b""
    """The result record (``finish``)."""
    result_px: int | None = None
    """How long the result is kept, ms (None: for ever)."""
    requeue_score: float = 0.0
    give_back: bool = True
    """On ``requeue``, the try does not count (a stop is not the job's doing)."""
    pending: Sequence[str] = ()
    """Progress events not written yet (JSON objects)."""
    job_done: str = ""
    requeued: str = ""
    logged: bool = False
    """The job wrote its progress log before: the tail goes there too (else nothing is logged)."""
    marker: str | None = None
    """The dedup marker field of the job's request."""
    final: str = ""
    """The listing figures (JSON) to file if this run's result is stored."""
    status: str = ""
    finished_ms: int = 0


class Queue:
    """The scripts of one queue, registered on ``redis`` (each is loaded once, then called by digest).

    A sharded queue (``Keys.shards``) is served by the same calls: each call about a job goes to the
    job's shard (its id names it: ``agentq.protocol.keys.shard_of``), a call about several jobs goes
    to each of their shards, a claim to the shard it names, and the counts read every shard.
    """

    def __init__(self, redis: Redis, keys: Keys, *, weights: dict[str, float] | None = None) -> None:
        self.redis, self.keys = redis, keys
        self._scripts: dict[scripts.ScriptName, scripts.Script] = {}
        self._enqueued = 0
        self.weights = dict(weights or {})
        """Each tenant's fair-share weight (1 if not named)."""
        self.served_on: dict[int, list[str]] = {}
        """Per shard, the tenants besides the default whose queues a claim reads, as its last claim found them."""
        self._tenants_read_at: dict[int, float] = {}
        self.writes_results = True
        """False once this Redis user was refused write on a result (a cancel then leaves it to a worker)."""

    @property
    def served(self) -> list[str]:
        """The tenants a claim of shard 0 reads (the only shard of an unsharded queue)."""
        return self.served_on.get(0, [])

    @served.setter
    def served(self, tenants_: list[str]) -> None:
        self.served_on[0] = tenants_

    def weight(self, tenant: str) -> float:
        return float(self.weights.get(tenant, 1.0))

    def script(self, name: scripts.ScriptName) -> scripts.Script:
        found = self._scripts.get(name)
        if found is None:
            found = self._scripts[name] = scripts.register(self.redis, name)
        return found

    # ------------------------------------------------------------------ the producer's side
    async def enqueue(
        self,
        job_id: str,
        record: bytes,
        *,
        score: float,
        marker: str | None,
        index_score: float,
        index_size: int,
        priority: str = "normal",
        retry_of: str | None = None,
        now: int | None = None,
        in_flight: int | None = None,
        per_minute: int | None = None,
    ) -> Enqueued:
        """Write job ``job_id`` (or join the unfinished one ``marker`` names) and ring the bell.

        ``in_flight`` and ``per_minute``: the tenant's quota; a new job past it raises ``QuotaExceeded``
        and writes nothing.
        """
        self._enqueued += 1
        trim = "1" if self._enqueued % TRIM_EVERY == 0 else "0"
        tenant = tenants.of(job_id)
        k = self.keys.of(job_id)
        now = now or now_ms()
        quota = (in_flight, per_minute)  # as configured, for the messages
        frees_in = None  # sharded: when the other shards' part of the per-minute quota frees (ms)
        if (in_flight or per_minute) and self.keys.shards > 1:
            in_flight, per_minute, frees_in = await self._quota_left(k, tenant, now, in_flight, per_minute)
        args: list[Any] = [job_id, record, repr(score), now, marker or "", repr(index_score)]
        args += [index_size, trim, priority, retry_of or "", tenant, _quota(in_flight), _quota(per_minute)]
        window = k.enqueue_times(tenant) if per_minute is not None else ""
        reply = await self.script("enqueue")(keys=self._given([*self._enqueue_keys(k, tenant), window]), args=args)
        refused = int(reply[1])
        if refused in (3, 4):
            what = f"{quota[0]} jobs in flight" if refused == 3 else f"{quota[1]} jobs a minute"
            after_ms = min(int(reply[2]), frees_in) if refused == 4 and frees_in else int(reply[2])
            raise QuotaExceeded(
                f"tenant {tenant!r} is at its quota of {what}: nothing was queued; ask again later",
                retry_after_s=after_ms / 1000,
            )
        return Enqueued(_text(reply[0]), bool(refused))

    async def _quota_left(
        self, k: Keys, tenant: str, now: int, in_flight: int | None, per_minute: int | None
    ) -> tuple[int | None, int | None, int | None]:
        """A tenant's quotas less what its jobs on the other shards use, for the enqueue on shard ``k``
        to enforce on its own; and when the other shards' oldest enqueue of the last minute leaves it.

        One pipelined read of every other shard, then the script: two enqueues of one tenant at the
        same moment on two shards may each see the other's shard before its job, and both pass.
        """
        others = [o for o in self.keys.every_shard if o.shard_index != k.shard_index]
        async with self.redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.zcard(other.queue_of(tenant))
                pipe.zrangebyscore(other.enqueue_times(tenant), now - 60_000, "+inf", start=0, num=1, withscores=True)
                pipe.zcount(other.enqueue_times(tenant), now - 60_000, "+inf")
            found = await pipe.execute()
        flying, oldest, recent = sum(found[0::3]), [e for got in found[1::3] for e in got], sum(found[2::3])
        left_in_flight = None if in_flight is None else max(0, in_flight - flying)
        left_per_minute = None if per_minute is None else max(0, per_minute - recent)
        frees_in = max(1, round(min(s for _, s in oldest) + 60_000 - now)) if oldest else None
        return left_in_flight, left_per_minute, frees_in

    async def enqueue_tick(
        self,
        job_id: str,
        record: bytes,
        *,
        schedule: str,
        tick_ms: int,
        next_tick_ms: int,
        index_ms: int,
        score: float,
        index_size: int,
        priority: str,
    ) -> bool:
        """Write ``schedule``'s job and move its tick to ``next_tick_ms``, if its tick is still ``tick_ms``
        (no other worker took it); whether this call wrote it. The job's index score is ``index_ms``, the
        tick it answers."""
        k = self.keys.of(job_id)  # shard 0, where the ticks are (``Keys.new_job_id(shard=0)``)
        now = now_ms()
        tenant = tenants.of(job_id)
        args: list[Any] = [job_id, record, repr(score), now, "", index_ms, index_size, "0", priority, "", tenant]
        args += ["", "", schedule, tick_ms, next_tick_ms]  # a schedule's ticks are the operator's: no quota
        keys = self._given([*self._enqueue_keys(k, tenant), "", self.keys.ticks])
        reply = await self.script("enqueue")(keys=keys, args=args)
        return int(reply[1]) != 2

    @staticmethod
    def _given(keys: list[str]) -> list[str]:
        """``keys`` with each unused one (``''``) replaced by the first, the job's queue (``given()`` in
        ``lua/``): on a Redis Cluster every key of a script must lie in the queue's slot, and ``''``
        does not. The queue is a key every caller's Redis user may write, and it exists whenever the
        queue holds jobs: a slot being migrated splits fewer calls than a key that never exists would."""
        return [key or keys[0] for key in keys]

    @staticmethod
    def _enqueue_keys(k: Keys, tenant: str) -> list[str]:
        served = k.tenants if tenant != tenants.DEFAULT else ""  # the default tenant's queue is always served
        return [k.queue_of(tenant), k.jobs, k.index, k.bell, k.tenant_index(tenant), served]

    async def cancel(
        self,
        job_id: str,
        *,
        result: bytes | None = None,
        result_px: int = 0,
        final: str = "",
        index_size: int = 0,
        queued_only: bool = False,
    ) -> CancelState:
        """Cancel ``job_id`` (``lua/cancel.lua``); ``not_found`` for an unknown id.

        With ``result`` (its expiry, listing figures, and the size of the cancelled index), a job that
        waits leaves the queue with that result stored. Without one, or once this connection's Redis
        user was refused write on results (``NOPERM``: the producer's user, ``agentq.protocol.acl``),
        it is marked and comes due at once, and the next worker to take it stores its result.
        ``queued_only``: a job a worker holds is left alone (``running``) instead of told to stop.
        """
        k = self.keys.of(job_id)
        keys: list[str] = [k.job_queue(job_id), k.jobs, k.bell]
        args: list[Any] = [job_id, k.cancel_channel, now_ms(), "1" if queued_only else "0"]
        reply = None
        if result is not None and self.writes_results:
            stored = [k.result(job_id), k.final(job_id), k.by_status("cancelled")]
            try:
                reply = await self.script("cancel")(
                    keys=self._given([*keys, *stored, k.tenant_index(tenants.of(job_id), "cancelled")]),
                    args=[*args, result, result_px, k.done_channel(job_id), final, index_size],
                )
            except NoPermissionError:  # refused before the script ran: nothing was written
                if self.writes_results:  # once, though a purge's cancels run side by side
                    log.info("this Redis user may not write results: a worker stores each cancelled job's result")
                self.writes_results = False
        if reply is None:
            reply = await self.script("cancel")(keys=keys, args=args)
        state = _text(reply)
        if state == "gone":  # finished, or never was: its result tells
            return "finished" if await self.redis.exists(k.result(job_id)) else "not_found"
        known = ("cancelled", "cancelling", "running")
        return state if state in known else "not_found"  # type: ignore[return-value]

    async def record(self, job_id: str) -> bytes | None:
        """The job record of an unfinished job (None once it has finished, or if there is none)."""
        raw: bytes | None = await self.redis.hget(self.keys.of(job_id).jobs, job_id)  # type: ignore[misc]
        return raw

    async def state(self, job_id: str) -> JobState:
        """Where the job is now, from one read of its place in line, its lease and its result.

        One transaction on a single Redis. A Redis Cluster client has none: there the three are read
        in one round trip in the order a job moves forward (queued, held, finished; one script each),
        so a job that finishes between two reads is seen finished, never lost between. One that goes
        back in line between them (a requeue) may be seen ``deferred`` for that moment.
        """
        k = self.keys.of(job_id)
        async with self.redis.pipeline(transaction=not is_cluster(self.redis)) as pipe:
            pipe.zscore(k.job_queue(job_id), job_id)
            pipe.hexists(k.jobs, f"{job_id}:{Field.HOLDER}")
            pipe.exists(k.result(job_id))
            score, held, has_result = await pipe.execute()
        return job_state(bool(has_result), bool(held), score, time.time() * 1000)

    async def queues(self) -> list[tuple[Keys, str]]:
        """Every tenant's queue that may hold jobs, on every shard: the default tenant's, and those of the
        tenants served; each with its shard's keys."""
        shards = self.keys.every_shard
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in shards:
                pipe.zrange(k.tenants, 0, -1)
            names = await pipe.execute()
        queues = []
        for k, found in zip(shards, names, strict=True):
            others = {_text(n) for n in found} - {"~", tenants.DEFAULT}
            queues += [(k, k.queue), *((k, k.queue_of(t)) for t in sorted(others))]
        return queues

    async def counts(self) -> tuple[int, int, int]:
        """Jobs in the queues (queued, deferred and running), those deferred or running (score in the future)."""
        queues = await self.queues()
        later_than = f"({time.time() * 1000}"
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, queue in queues:
                pipe.zcard(queue)
                pipe.zcount(queue, later_than, "+inf")
            found = await pipe.execute()
        total, later = sum(found[0::2]), sum(found[1::2])
        return int(total), int(later), int(total) - int(later)

    # ------------------------------------------------------------------ the worker's side
    async def claim(
        self,
        worker_id: str,
        *,
        want: int,
        lease_ms: int,
        idle: bool,
        unsure: bool = False,
        unasked: bool = False,
        shard: int = 0,
    ) -> Claim:
        """Claim up to ``want`` due jobs from the heads of the tenants' queues of ``shard`` (``lua/claim.lua``).

        ``unsure``: this worker lost Redis itself within the last lease, so another worker's lapsed
        lease may be that outage rather than a death: it is spared (pushed back), not taken.
        ``unasked``: an idle worker's look at the queue that no ring asked for; knowing no tenant, it
        leaves the tenants unread, unless it has not read them for :data:`TENANTS_REFRESH_S` (a new
        tenant's enqueue rings the bell, and a busy worker reads them at every claim).
        """
        k = self.keys.shard(shard)
        served_before = self.served_on.get(shard, [])
        args: list[Any] = [now_ms(), want, lease_ms, want + LOOK_BEYOND, worker_id, "1" if idle else "0"]
        fresh = time.monotonic() - self._tenants_read_at.get(shard, -TENANTS_REFRESH_S) < TENANTS_REFRESH_S
        read_tenants = not (unasked and idle and fresh)
        args += ["1" if unsure else "0", repr(self.weight(tenants.DEFAULT)), "1" if read_tenants else "0"]
        if read_tenants or served_before:
            self._tenants_read_at[shard] = time.monotonic()
        for tenant in served_before:
            args += [tenant, repr(self.weight(tenant))]
        keys = [k.queue, k.jobs, k.bell, k.tenants, *(k.queue_of(t) for t in served_before)]
        reply = await self.script("claim")(keys=keys, args=args)
        more, next_due, renewed, read_all, held_back, spared, now_served = reply[:7]
        new_tenants = False  # a tenant this claim could not read: claim again at once, with it
        if _text(now_served):
            served = [t for t in _text(now_served).split(",") if t]
            new_tenants = bool(set(served) - set(served_before))
            self.served_on[shard] = served
        jobs = [
            ClaimedJob(
                job_id=_text(reply[i]),
                score=int(float(reply[i + 1])),
                record=bytes(reply[i + 2]) or None,
                job_try=int(reply[i + 3]),
                tries=int(reply[i + 4]),
                cancelled=bool(reply[i + 5]),
                alone=_text(reply[i + 6]) == "1",
                marker=_text(reply[i + 7]) or None,
                priority=_text(reply[i + 8]) or "normal",
                retry_of=_text(reply[i + 9]) or None,
                held=_text(reply[i + 10]) == "1",
            )
            for i in range(7, len(reply), 11)
        ]
        due = float(next_due) if next_due else None
        return Claim(
            jobs, bool(more), due, int(renewed), bool(read_all), bool(held_back), int(spared), learnt=new_tenants
        )

    async def release(self, worker_id: str, jobs: Sequence[ClaimedJob]) -> None:
        """Give back claimed jobs that will not start here, and ring the bell for another worker."""
        for k, on_shard in self.keys.by_shard(jobs, lambda job: job.job_id):
            args: list[Any] = [now_ms(), worker_id]
            for job in on_shard:
                args += [job.job_id, job.score]
            keys = [k.jobs, k.bell, *(k.job_queue(job.job_id) for job in on_shard)]
            await self.script("release")(keys=keys, args=args)

    async def renew(self, worker_id: str, job_ids: Sequence[str], *, lease_ms: int) -> list[str]:
        """Push back the leases of ``job_ids``; the ids whose lease this worker no longer holds."""
        lost: list[str] = []
        for k, on_shard in self.keys.by_shard(job_ids, str):
            keys = [k.jobs, *(k.job_queue(j) for j in on_shard)]
            replies = await self.script("renew")(keys=keys, args=[lease_ms, now_ms(), worker_id, *on_shard])
            lost += [_text(v) for v in replies]
        return lost

    def _finish_call(
        self, worker_id: str, e: Ending, *, progress_ttl_s: int, index_size: int
    ) -> tuple[list[str], list[Any]]:
        k = self.keys.of(e.job_id)
        indexed = bool(e.final) and e.status in INDEXED_STATUSES
        index = k.by_status(e.status) if indexed else ""
        own = k.tenant_index(tenants.of(e.job_id), e.status) if indexed else ""
        progress = k.progress(e.job_id) if e.logged else ""
        keys = [k.job_queue(e.job_id), k.jobs, k.result(e.job_id), progress, k.bell, k.final(e.job_id), index, own]
        keys = self._given(keys)
        args: list[Any] = [
            e.job_id,
            e.mode,
            e.result,
            "" if e.result_px is None else e.result_px,
            worker_id,
            repr(float(e.requeue_score)),
            "1" if e.give_back else "0",
            ",".join(e.pending),
            e.job_done,
            e.requeued,
            progress_ttl_s,
            k.done_channel(e.job_id),
            now_ms(),
            e.marker or "",
            e.final,
            e.finished_ms,
            index_size,
        ]
        return keys, args

    async def finish(
        self, worker_id: str, endings: Sequence[Ending], *, progress_ttl_s: int, index_size: int
    ) -> list[bool | BaseException]:
        """End runs (``lua/finish.lua``) in one round trip; per run, True if its result is the one stored
        (or the error its script met)."""
        calls = [self._finish_call(worker_id, e, progress_ttl_s=progress_ttl_s, index_size=index_size) for e in endings]
        script = self.script("finish")
        if len(calls) == 1:  # a Redis that lost the script gets its text (scripts.Script)
            keys, args = calls[0]
            return [bool(await script(keys=keys, args=args))]
        replies = await self._pipelined(script.sha, calls)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        for i in lost:  # a Redis without the script (nothing ran for those): each again, with its text
            keys, args = calls[i]
            try:
                replies[i] = await script.text_call(keys=keys, args=args)
            except ResponseError as exc:  # as a pipeline's reply: this run's error, not the batch's
                replies[i] = exc
        return [r if isinstance(r, BaseException) else bool(r) for r in replies]

    async def _pipelined(self, sha: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:  # execute_command: a cluster pipeline refuses evalsha() by name
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        # A plain pipeline raises a lost connection; a cluster pipeline returns it (or a redirect given up
        # on) among the replies. Either way the caller retries the whole batch as in an outage: each
        # finish stores its result only once.
        down = next((r for r in replies if isinstance(r, REDIS_DOWN)), None)
        if down is not None:
            raise down
        return replies

    async def cancel_requested(self, job_ids: Sequence[str]) -> list[bool]:
        """Which of these jobs a caller asked to cancel (for a worker that missed the message)."""
        asked: dict[str, bool] = {}
        for k, on_shard in self.keys.by_shard(job_ids, str):
            marks = await self.redis.hmget(k.jobs, [f"{j}:{Field.CANCEL}" for j in on_shard])  # type: ignore[misc]
            asked.update((j, bool(m)) for j, m in zip(on_shard, marks, strict=True))
        return [asked[j] for j in job_ids]
