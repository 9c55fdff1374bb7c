"""The Python client: enqueue a question, ask a job's status, get or wait for its result.

    async with Client() as client:
        job_id = await client.enqueue("Will it rain in Paris tomorrow?")
        result = await client.result(job_id, timeout=30)

Requests are validated here, against the same contract the worker uses, before anything reaches
Redis. Source and analysis names are checked against the installed plugins' entry points and
``AGENTQ_HTTP_SOURCES``, read without importing any plugin. The plugins of ``AGENTQ_PLUGIN_MODULES``
cannot be known without importing them, and a producer never imports plugin code (it may pull in
anything, and the producer need not have it installed): when that setting is set, names are left
to the worker, which fails a request naming what it does not serve, with the reason.

The client speaks the queue protocol (``agentq.protocol``: arq's record format, our scripts) and
imports nothing of arq or of the worker: enqueueing a question loads no worker runtime.

Waiting does not poll every half second as arq's ``Job.result`` does: the worker publishes
on a per-job channel once the result is stored, with the stored result itself as the message,
and the client subscribes that channel on its one pub/sub connection (``producer.waiters``); it
looks at Redis itself when it starts waiting and once a second, in case a message was missed.
:meth:`Client.ask` subscribes before it enqueues, so it need not look first. ``progress`` follows
the job's progress log (``worker.job.progress``) from its first event to ``job_done``; a job over
before it logged anything is told from its result.

**Enqueueing** is one Lua script (``lua/enqueue.lua``): the job record, its queue entry, the
deduplication marker, its place in the recent-jobs index and a ring of the queue's doorbell,
which wakes an idle worker at once.

**Deduplication.** A question identical to one still queued or running (same
``request_fingerprint``) gets that job's id instead of a new job. The script reads the marker
(``m:<sha256>`` in the queue's jobs hash), checks that the job it names is still in the queue, and
either joins it or writes the new job together with its marker; it runs atomically, so of two
producers enqueueing at once the second joins the first one's job. However long the job waits it
is joined; the run that stores the job's result deletes the marker.

**Priorities.** The queue is a sorted set scored by enqueue time in ms, and workers take the
lowest scores whose time has come. A job is scored ``enqueue time - rank * priority_step_s``
(rank 2 high, 1 normal, 0 low), so every score is already due (never "deferred") and the
``enqueue_time`` inside the job, from which ``queue_wait_s`` is measured, stays true. A job waits
behind higher-priority jobs enqueued up to ``priority_step_s`` after it and no longer: a flood of
high-priority work delays normal work by at most that much, it cannot starve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal, Self

import pydantic
from redis.asyncio import Redis

from agentq import schedules as schedule_store
from agentq import tenants, tracing
from agentq.analyses import analysis_names
from agentq.connection import open_redis, redis_client, wait_for_replicas
from agentq.contract import (
    JOB_FUNCTION,
    JobResult,
    Priority,
    ProgressEvent,
    QuestionRequest,
    describe_validation_error,
    parse_request,
    request_fingerprint,
)
from agentq.errors import REDIS_DOWN, InvalidRequest, JobNotFound, NotReplicated, RedisUnavailable, WaitTimeout
from agentq.protocol import queue as queue_protocol
from agentq.protocol import records
from agentq.protocol.keys import marker_field
from agentq.protocol.queue import CancelState, Enqueued, Queue
from agentq.schedules import Schedule
from agentq.settings import Settings, get_settings
from agentq.sources import source_names
from producer import jobs
from producer.jobs import JobSummary, QueueDepth
from producer.waiters import Mailbox, Waiters

Status = Literal["queued", "deferred", "in_progress", "complete"]
_RECHECK_S = 1.0
#: How many ``priority_step_s`` a job's queue score is moved ahead of its enqueue time.
PRIORITY_RANK = queue_protocol.PRIORITY_RANK
#: The furthest a listing pages (a queue this long is read in chunks, but no one pages through it).
MAX_OFFSET = 1_000_000
#: The ``status`` of a listing of unfinished jobs, and the state it lists.
WAITING: dict[str, jobs.Unfinished] = {"queued": "queued", "deferred": "deferred", "running": "in_progress"}
log = logging.getLogger(__name__)

__all__ = ["Client", "Enqueued", "Status"]


class Client:
    """Talks to the queue. Use as an async context manager; one instance per event loop.

    Jobs it makes belong to ``tenant`` (default: ``AGENTQ_TENANT``). A client holds Redis's
    credentials, so it reads every tenant's jobs; :meth:`for_tenant` gives a view on the same
    connection that sees only one tenant's (what the API gives each key).
    """

    def __init__(self, settings: Settings | None = None, *, ping: bool = True, tenant: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.keys = self.settings.keys
        self.tenant = tenants.check(tenant or self.settings.tenant)
        self.sees: str | None = None
        """The one tenant whose jobs this client sees; None: every tenant's."""
        self._redis: Redis | None = None
        self._ping = ping
        self._queue: Queue | None = None
        self._waiters: Waiters | None = None
        self._view = False

    def for_tenant(self, tenant: str, *, every_tenant: bool = False) -> Client:
        """This client's connection, making ``tenant``'s jobs and seeing only them (``every_tenant``: all).

        Another tenant's job is unknown to the view: ``JobNotFound``, as for an id that never was.
        The view is not entered or closed: it lives as long as this client.
        """
        view = copy.copy(self)
        view.tenant = tenants.check(tenant)
        view.sees = None if every_tenant else tenant
        view._queue, view._waiters = self.queue, self._shared_waiters()
        view._view = True
        return view

    def _shared_waiters(self) -> Waiters:
        if self._waiters is None:
            self._waiters = Waiters(self.redis)
        return self._waiters

    def _own(self, job_id: str) -> None:
        """Raise ``JobNotFound`` for another tenant's job, if this client sees one tenant only."""
        if self.sees is not None and tenants.of(job_id) != self.sees:
            raise JobNotFound(f"no job {job_id!r} (unknown id, or its result expired)")

    async def __aenter__(self) -> Self:
        """Connect; with ``ping=False`` (a long-lived server) connections open on first use instead."""
        with self._redis_errors():
            self._redis = await open_redis(self.settings) if self._ping else redis_client(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._view:
            raise RuntimeError("a tenant's view closes with the client it came from")
        if self._waiters is not None:
            await self._waiters.aclose()
        self._queue = self._waiters = None  # both belong to the connection closed here
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("use the client inside 'async with Client() as client:'")
        return self._redis

    # ---------------------------------------------------------------------------- requests
    def validate(
        self,
        question: object,
        *,
        sources: Sequence[str] | None = None,
        source_timeout_s: float | None = None,
        deadline_s: float | None = None,
        no_cache: bool = False,
        analysis: str | None = None,
    ) -> QuestionRequest:
        """Check a request against the contract and limits; raise ``InvalidRequest``."""
        data: dict[str, Any] = {"question": question}
        options = (("sources", sources), ("source_timeout_s", source_timeout_s), ("deadline_s", deadline_s))
        for name, value in (*options, ("analysis", analysis)):
            if value is not None:
                data[name] = tuple(value) if name == "sources" and isinstance(value, list) else value
        if no_cache:
            data["no_cache"] = no_cache
        return self.validate_data(data)

    def validate_data(self, data: object) -> QuestionRequest:
        """Check a raw request object (a dict as JSON gives it) against the contract and limits."""
        s = self.settings
        # AGENTQ_PLUGIN_MODULES: names this producer cannot know are the worker's to check (see above).
        unknowable = bool(s.plugin_modules)
        return parse_request(
            data,
            known_sources=None if unknowable else source_names(s),
            known_analyses=None if unknowable else analysis_names(),
            max_question_chars=s.max_question_chars,
            max_source_timeout_s=s.max_source_timeout_s,
            max_deadline_s=s.max_deadline_s,
        )

    async def submit(
        self,
        question: object,
        *,
        sources: Sequence[str] | None = None,
        source_timeout_s: float | None = None,
        deadline_s: float | None = None,
        no_cache: bool = False,
        analysis: str | None = None,
        priority: Priority = "normal",
        dedup: bool = True,
        not_before: float | None = None,
    ) -> Enqueued:
        """Validate, then queue the question, or join an identical one in flight (unless ``dedup=False``).

        ``analysis`` names the analysis to run (default: the worker's ``AGENTQ_DEFAULT_ANALYSIS``).
        ``not_before`` (epoch seconds) defers the job until then: it is ``deferred`` until that time,
        then waits in line as a job enqueued then (its priority counts from then). A deferred job is
        always a job of its own (no deduplication: an identical question asked now must not move it).
        """
        request = self.validate(
            question,
            sources=sources,
            source_timeout_s=source_timeout_s,
            deadline_s=deadline_s,
            no_cache=no_cache,
            analysis=analysis,
        )
        return await self.submit_request(request, priority=priority, dedup=dedup, not_before=not_before)

    async def enqueue(
        self,
        question: object,
        *,
        sources: Sequence[str] | None = None,
        source_timeout_s: float | None = None,
        deadline_s: float | None = None,
        no_cache: bool = False,
        analysis: str | None = None,
        priority: Priority = "normal",
        dedup: bool = True,
        not_before: float | None = None,
    ) -> str:
        """Like :meth:`submit`, returning just the job id."""
        enqueued = await self.submit(
            question,
            sources=sources,
            source_timeout_s=source_timeout_s,
            deadline_s=deadline_s,
            no_cache=no_cache,
            analysis=analysis,
            priority=priority,
            dedup=dedup,
            not_before=not_before,
        )
        return enqueued.job_id

    async def enqueue_request(
        self, request: QuestionRequest, *, priority: Priority = "normal", dedup: bool = False
    ) -> str:
        """Queue an already validated request; return the job id. The low-level call: every call is a
        new job unless ``dedup=True`` (the benchmarks queue many identical requests on purpose)."""
        return (await self.submit_request(request, priority=priority, dedup=dedup)).job_id

    async def submit_request(
        self,
        request: QuestionRequest,
        *,
        priority: Priority = "normal",
        dedup: bool = True,
        retry_of: str | None = None,
        not_before: float | None = None,
    ) -> Enqueued:
        """Queue an already validated request at ``priority``, or join an identical one in flight;
        ``not_before`` defers it (see :meth:`submit`)."""
        deferred = not_before is not None and not_before > time.time()
        job_id = self._new_id(self.tenant, request, dedup=dedup and not deferred)
        return await self._submit(job_id, request, priority, dedup, retry_of, not_before)

    async def ask(
        self,
        request: QuestionRequest,
        *,
        priority: Priority = "normal",
        dedup: bool = True,
        timeout: float | None = None,
    ) -> JobResult:
        """Queue an already validated request (or join an identical one) and wait for its result.

        The job's done channel is subscribed before the job exists, so the wait needs no first
        look at Redis: one round trip fewer than ``submit_request`` then ``result``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job_id = self._new_id(self.tenant, request, dedup=dedup)
        async with self._watch(job_id) as mailbox:
            enqueued = await self._submit(job_id, request, priority, dedup)
            if enqueued.job_id == job_id:
                return await self._wait(job_id, mailbox, deadline, timeout, look=False)
        return await self.result(enqueued.job_id, timeout=None if deadline is None else deadline - time.monotonic())

    async def _submit(
        self,
        job_id: str,
        request: QuestionRequest,
        priority: Priority,
        dedup: bool,
        retry_of: str | None = None,
        not_before: float | None = None,
    ) -> Enqueued:
        """Write the job (the enqueue script: ``producer.enqueue``), or join the one its marker names.

        What it writes is what arq's ``ArqRedis.enqueue_job`` writes (``agentq.wire``): the job record
        under arq's job key, the id in the queue, the same expiry; and, in the same step, the job's
        listing entry and its place in the recent-jobs index (``producer.jobs``).
        """
        if priority not in PRIORITY_RANK:
            raise InvalidRequest(f"priority: must be one of {', '.join(PRIORITY_RANK)}, got {priority!r}")
        payload = request.model_dump(mode="json", exclude_none=True)
        now = time.time()
        now_ms = round(now * 1000)
        # A fractional score keeps first-come-first-served within a priority for jobs enqueued in
        # the same millisecond (a sorted set would order those ties by their random ids).
        score = now * 1000 - PRIORITY_RANK[priority] * round(self.settings.priority_step_s * 1000)
        if not_before is not None and not_before > now:  # deferred: due then, as if enqueued then
            score, dedup = not_before * 1000, False
        tenant = tenants.of(job_id)
        marker = marker_field(request_fingerprint(request), tenant) if dedup else None
        quota = self.settings.quota_of(tenant)
        # The trace of the job begins here (agentq.tracing; nothing happens unless tracing is on).
        with tracing.span("enqueue", attributes={"agentq.priority": priority}) as span:
            trace = tracing.inject()  # W3C trace context: the worker's spans join this trace
            with self._redis_errors():
                enqueued = await self.queue.enqueue(
                    job_id,
                    records.encode_job(JOB_FUNCTION, (payload,), {"trace": trace} if trace else {}, now_ms),
                    score=score,
                    marker=marker,
                    index_score=now * 1000,  # fractional: ties keep their order
                    index_size=self.settings.jobs_index_size,
                    priority=priority,
                    retry_of=retry_of,
                    now=now_ms,
                    in_flight=quota.in_flight if quota else None,
                    per_minute=quota.per_minute if quota else None,
                )
                await self._replicated(enqueued.job_id)
            if span is not None:
                span.set_attribute("agentq.job_id", enqueued.job_id)
                span.set_attribute("agentq.deduplicated", enqueued.deduplicated)
        return enqueued

    async def _replicated(self, job_id: str) -> None:
        """With ``redis_wait_replicas``, return only once that many replicas hold the job (``WAIT``).

        Raises ``NotReplicated`` if they do not confirm in time: the job is queued on the primary
        but a failover now could lose it. Asking again is safe: the dedup marker joins the same job.
        """
        acked = await wait_for_replicas(self.redis, self.settings, self.keys.of(job_id).fence)
        wanted = self.settings.redis_wait_replicas
        if acked is not None and acked < wanted:
            raise NotReplicated(
                f"job {job_id} is queued, but only {acked} of {wanted} replicas confirmed it within "
                f"{self.settings.redis_wait_timeout_s:g}s: a failover now could lose it"
            )

    def _new_id(self, tenant: str, request: QuestionRequest, *, dedup: bool) -> str:
        """A new job's id. On a sharded queue it names the shard of the request's fingerprint, where an
        identical question in flight is (deduplication), or any shard for a job of its own."""
        sharded = self.keys.shards > 1  # the fingerprint is computed only where it places the job
        return self.keys.new_job_id(tenant, fingerprint=request_fingerprint(request) if dedup and sharded else None)

    # ---------------------------------------------------------------------------- results
    async def status(self, job_id: str) -> Status:
        """Where the job is now; raise ``JobNotFound`` for an unknown (or expired) id."""
        self._own(job_id)
        with self._redis_errors():
            state = await self._state(job_id)
        if state == "not_found":
            raise JobNotFound(f"no job {job_id!r} (unknown id, or its result expired)")
        return state

    async def fetch_result(self, job_id: str) -> JobResult | None:
        """The stored result, or None while the job is queued or running."""
        self._own(job_id)
        with self._redis_errors():
            raw = await self.redis.get(self.keys.result(job_id))
        if raw is None:
            return None
        return self._parse(job_id, raw)

    async def result(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """Wait up to ``timeout`` seconds (forever if None) for the result.

        Raises ``JobNotFound`` if no such job exists and ``WaitTimeout`` if time runs out.
        """
        self._own(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._watch(job_id) as mailbox:
            return await self._wait(job_id, mailbox, deadline, timeout, look=True)

    async def _wait(
        self, job_id: str, mailbox: Mailbox, deadline: float | None, timeout: float | None, *, look: bool
    ) -> JobResult:
        """Wait for the done message on ``mailbox``, looking at Redis first (``look``) and every second."""
        while True:
            if look:
                found = await self._look(job_id)  # raises JobNotFound
                if found is not None:
                    return found
            look = True
            left = _RECHECK_S if deadline is None else min(_RECHECK_S, deadline - time.monotonic())
            if left <= 0:
                raise WaitTimeout(_not_done(job_id, timeout))
            message = await mailbox.get(left)
            if message is not None and message != b"1":  # the stored result itself
                return self._parse(job_id, message)

    async def _look(self, job_id: str) -> JobResult | None:
        """The stored result, or None while the job is unfinished; ``JobNotFound`` if there is no job.

        Two reads in one round trip, the queue entry first: a job stays in the queue until the same
        step that stores its result, so no result and no queue entry means no such job.
        """
        with self._redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zscore(self.keys.job_queue(job_id), job_id)
                pipe.get(self.keys.result(job_id))
                score, raw = await pipe.execute()
        if raw is not None:
            return self._parse(job_id, raw)
        if score is None:
            raise JobNotFound(f"no job {job_id!r} (unknown id, or its result expired)")
        return None

    async def progress(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[ProgressEvent]:
        """The job's progress events: first those already logged, then each as it happens.

        Ends after ``job_done``. A run that ended before it logged anything (a job of a few tens of
        milliseconds), or whose log has expired, is told from its result: a ``done`` event per
        source, then ``job_done``. Raises ``JobNotFound`` for an unknown id and ``WaitTimeout``
        after ``timeout`` seconds.
        """
        self._own(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self.keys.progress(job_id)
        last: bytes | str = "0-0"
        block_ms: int | None = None  # the first read only replays what is logged already
        async with self._watch(job_id) as mailbox:  # the stored result ends a wait on the log
            while True:
                with self._redis_errors():
                    reply, ended = await self._log_or_end(key, last, block_ms, mailbox)
                for _stream, entries in reply or ():
                    for entry_id, fields in entries:
                        last = entry_id
                        for event in parse_events(fields):
                            yield event
                            if event.event == "job_done":
                                return
                if ended or not reply:
                    result = await self.fetch_result(job_id)
                    if result is not None:
                        for event in told_by(result):
                            yield event
                        return
                    if not reply:
                        await self.status(job_id)  # raises JobNotFound
                left = _RECHECK_S if deadline is None else min(_RECHECK_S, deadline - time.monotonic())
                if left <= 0:
                    raise WaitTimeout(_not_done(job_id, timeout))
                block_ms = max(1, round(left * 1000))  # 0 would block forever

    async def _log_or_end(
        self, key: str, last: bytes | str, block_ms: int | None, mailbox: Mailbox
    ) -> tuple[list[Any], bool]:
        """New entries of the progress log, waiting up to ``block_ms`` for some, and whether the job's
        done message came meanwhile (its last entries, if it logged any, are read before returning)."""
        if block_ms is None:
            return await self.redis.xread({key: last}), False
        read = asyncio.ensure_future(self.redis.xread({key: last}, block=block_ms))
        done = asyncio.ensure_future(mailbox.get(block_ms / 1000))
        try:
            await asyncio.wait({read, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (read, done):
                if not task.done():
                    task.cancel()  # a blocked read's connection is dropped, not reused
            await asyncio.gather(read, done, return_exceptions=True)
        ended = done.done() and not done.cancelled() and done.result() is not None
        if read.cancelled():
            return (await self.redis.xread({key: last}) if ended else []), ended
        return read.result(), ended

    # ---------------------------------------------------------------------------- cancel, list, retry
    async def cancel(self, job_id: str) -> CancelState:
        """Cancel a job: ``cancelled`` (it was queued and never starts), ``cancelling`` (its worker was
        told; its result will say ``cancelled``), ``finished`` (too late). Raise ``JobNotFound``."""
        self._own(job_id)
        with self._redis_errors():
            state = await jobs.cancel(self.queue, self.settings, job_id)
        if state == "not_found":
            raise JobNotFound(f"no job {job_id!r} (unknown id, or its result expired)")
        return state

    def _tenant_seen(self, tenant: str | None) -> str | None:
        """Whose jobs a listing shows: this view's tenant; else ``tenant`` if one is named; else everyone's.
        Raise ``InvalidRequest`` for a name that cannot be a tenant's."""
        if tenant is not None:
            try:
                tenants.check(tenant)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        return self.sees if self.sees is not None else tenant

    async def jobs(
        self, *, status: str | None = None, limit: int = 20, offset: int = 0, tenant: str | None = None
    ) -> list[JobSummary]:
        """Recent jobs, newest first; with a final ``status``, recent finished jobs of that status; with
        ``queued``, ``deferred`` or ``running``, the jobs in that state in queue order. ``offset`` pages.
        Only ``tenant``'s jobs, if one is named (a view of one tenant lists only its own)."""
        seen = self._tenant_seen(tenant)
        if status not in (None, "all", *jobs.FINAL_STATUSES, *WAITING):
            known = ", ".join(("all", *jobs.FINAL_STATUSES, *WAITING))
            raise InvalidRequest(f"status: must be one of {known}; got {status!r}")
        if limit < 1 or not 0 <= offset <= MAX_OFFSET:
            raise InvalidRequest(f"limit at least 1 and offset 0 to {MAX_OFFSET}; got {limit} and {offset}")
        with self._redis_errors():
            if status in WAITING:
                state = WAITING[status]
                return await jobs.list_waiting(
                    self.queue, self.settings, status=state, limit=limit, offset=offset, tenant=seen
                )
            limit = min(limit, self.settings.jobs_index_size)  # no index holds more
            return await jobs.list_jobs(self.queue, status=status, limit=limit, offset=offset, tenant=seen)

    async def queue_depth(self, *, tenant: str | None = None) -> QueueDepth:
        """How many jobs wait, run and are deferred, by priority, how long the oldest queued one has waited,
        and each tenant's part (only ``tenant``'s, if one is named; a view's own only)."""
        seen = self._tenant_seen(tenant)
        with self._redis_errors():
            entries = await jobs.snapshot(self.queue, self.settings)
        return QueueDepth.of(self.settings.queue_name, entries, tenant=seen)

    async def purge(self, *, tenant: str | None = None) -> tuple[list[str], int]:
        """Cancel every job that waits (queued or deferred; running ones run on; only ``tenant``'s, if one is
        named; a view's own only): the ids cancelled, and how many a worker took (or that finished) before
        their turn came."""
        seen = self._tenant_seen(tenant)
        with self._redis_errors():
            return await jobs.purge(self.queue, self.settings, seen)

    async def failed_since(self, seconds: float) -> list[str]:
        """The ids of the jobs that ended ``failed`` within the last ``seconds``, oldest first (their results kept)."""
        since = time.time() * 1000 - seconds * 1000
        with self._redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in self.keys.every_shard:
                    index = (k.tenant_index(self.sees, "failed") if self.sees else "") or k.by_status("failed")
                    pipe.zrangebyscore(index, since, "+inf", withscores=True)
                pages = await pipe.execute()
        found = [(score, i.decode()) for page in pages for i, score in page]
        return [i for _, i in sorted(found) if self.sees is None or tenants.of(i) == self.sees]

    async def retry(self, job_id: str, *, priority: Priority | None = None) -> Enqueued:
        """Queue a finished ``failed`` or ``cancelled`` job's request again, as a new job; return it.

        Raise ``JobNotFound`` if its result is gone and ``InvalidRequest`` if it did not fail. The new job
        is the failed one's tenant's.
        """
        self._own(job_id)
        with self._redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.result(job_id))
                pipe.get(self.keys.final(job_id))
                raw, final = await pipe.execute()
        if raw is None:
            raise JobNotFound(f"no finished job {job_id!r} (unknown id, still running, or its result expired)")
        result = self._parse(job_id, raw)
        if result.status not in ("failed", "cancelled"):
            raise InvalidRequest(f"job {job_id} is {result.status}: only a failed or cancelled job can be re-run")
        try:
            args = records.decode_result(raw).args
        except records.RecordError:
            args = ()
        if not args:
            raise InvalidRequest(f"job {job_id} holds no request to re-run")
        request = self.validate_data(args[0])
        stored_priority = jobs.figures_of(final).get("priority")
        chosen: Priority = priority or (stored_priority if stored_priority in PRIORITY_RANK else "normal")
        new_id = self._new_id(tenants.of(job_id), request, dedup=True)
        return await self._submit(new_id, request, chosen, True, retry_of=job_id)

    # ---------------------------------------------------------------------------- schedules
    async def schedule(
        self,
        name: str,
        question: object,
        *,
        cron: str | None = None,
        every_s: float | None = None,
        sources: Sequence[str] | None = None,
        analysis: str | None = None,
        priority: Priority = "normal",
    ) -> int:
        """Add (or replace) the recurring question ``name``: ``cron`` (five fields, UTC) or ``every_s``.
        Returns its next tick (epoch ms). The workers enqueue each tick once (``agentq.schedules``), as
        jobs of this client's tenant; another tenant's schedule of that name is another schedule."""
        request = self.validate(question, sources=sources, analysis=analysis)
        data = request.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        try:
            rule = Schedule(name=name, cron=cron, every_s=every_s, request=data, priority=priority, tenant=self.tenant)
        except pydantic.ValidationError as exc:
            raise InvalidRequest(describe_validation_error(exc)) from None
        with self._redis_errors():
            return await schedule_store.add(self.redis, self.keys, rule, time.time() * 1000)

    async def schedules(self) -> list[tuple[str, Schedule | None, int | None]]:
        """Every schedule: its name, the schedule (None if what Redis holds does not read as one), its next tick.

        A view of one tenant lists that tenant's by name; a client of every tenant lists each by its key
        (``<tenant>/<name>`` for a tenant but the default)."""
        with self._redis_errors():
            found = await schedule_store.listed(self.redis, self.keys)
        if self.sees is None:
            return found
        own: list[tuple[str, Schedule | None, int | None]] = []
        for key, rule, tick in found:
            if rule is not None and rule.tenant == self.sees and rule.key == key:
                own.append((rule.name, rule, tick))
        return own

    async def unschedule(self, name: str) -> None:
        """Remove this client's tenant's schedule ``name`` (jobs its ticks enqueued stay); ``JobNotFound`` if
        there is none. A client of every tenant may also name another tenant's as ``<tenant>/<name>``."""
        key = schedule_store.key_of(name, self.tenant)
        if "/" in name and self.sees is None:
            key = name
        with self._redis_errors():
            if not await schedule_store.remove(self.redis, self.keys, key):
                raise JobNotFound(f"no schedule {name!r}")

    # ---------------------------------------------------------------------------- workers
    async def workers(self) -> list[dict[str, Any]]:
        """The heartbeat records of every live worker."""
        with self._redis_errors():
            keys = [k async for k in self.redis.scan_iter(match=self.keys.workers_pattern, count=500)]
            async with self.redis.pipeline(transaction=False) as pipe:  # on a cluster, the keys' slots differ
                for key in keys:
                    pipe.get(key)
                values = await pipe.execute() if keys else []
        records = []
        for value in values:
            with contextlib.suppress(ValueError, TypeError):
                records.append(json.loads(value))
        return sorted(records, key=lambda r: str(r.get("id")))

    # ---------------------------------------------------------------------------- internals
    async def _state(self, job_id: str) -> records.JobState:
        """The job's state from its marks in Redis, read in one transaction."""
        return await self.queue.state(job_id)

    def _parse(self, job_id: str, raw: bytes) -> JobResult:
        """Turn what the worker stored into a JobResult, whatever the job returned or failed with."""
        try:
            info = records.decode_result(raw)
        except records.RecordError:
            return JobResult(job_id=job_id, question="", status="failed", errors=["stored result is unreadable"])
        if info.success and isinstance(info.result, dict):
            return JobResult.model_validate(info.result)
        question = info.args[0].get("question", "") if info.args and isinstance(info.args[0], dict) else ""
        reason = info.result
        if isinstance(reason, dict) and "error" in reason:
            reason = f"{reason['error']}: {reason.get('message', '')}"
        return JobResult(
            job_id=job_id,
            question=str(question)[:200],
            status="failed",
            errors=[f"job failed before it could answer: {reason}"],
            job_try=info.job_try,
        )

    @property
    def queue(self) -> Queue:
        """The queue protocol on this client's connection (its scripts registered on first use)."""
        if self._queue is None:  # ``self.redis`` says if there is no connection
            self._queue = Queue(self.redis, self.keys)
        return self._queue

    @contextlib.asynccontextmanager
    async def _watch(self, job_id: str) -> AsyncIterator[Mailbox]:
        """The job's done messages, on the client's one pub/sub connection, while the block runs."""
        waiters = self._shared_waiters()
        with self._redis_errors():
            async with waiters.watch(self.keys.done_channel(job_id)) as mailbox:
                yield mailbox

    @contextlib.contextmanager
    def _redis_errors(self) -> Iterator[None]:
        """Map Redis connection failures to ``RedisUnavailable`` naming the (masked) URL."""
        try:
            yield
        except REDIS_DOWN as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.settings.redis_location}: {exc}") from exc


def told_by(result: JobResult) -> list[ProgressEvent]:
    """A finished job's progress as its result tells it: each source done, then the job."""
    events = [
        ProgressEvent(
            job_id=result.job_id,
            event="done",
            t=o.inference_end_s or o.fetch_end_s or 0.0,
            source=o.name,
            status=o.status,
            error=o.error,
        )
        for o in result.sources
    ]
    total = result.timing.total_s if result.timing is not None else 0.0
    return [*events, ProgressEvent(job_id=result.job_id, event="job_done", t=total, status=result.status)]


def parse_events(fields: dict[bytes, bytes]) -> list[ProgressEvent]:
    """The events of one progress-log entry: its ``e`` field holds one event, or a JSON list of them
    (the worker writes what happened since its last write as one entry). Invalid ones are logged and
    skipped."""
    raw = fields.get(b"e", b"")
    try:
        items = json.loads(raw)
    except ValueError as exc:
        log.warning("skipping an unreadable progress entry: %s", exc)
        return []
    events = []
    for item in items if isinstance(items, list) else [items]:
        try:
            events.append(ProgressEvent.model_validate(item))
        except pydantic.ValidationError as exc:
            log.warning("skipping an unreadable progress event: %s", exc)
    return events


def _not_done(job_id: str, timeout: float | None) -> str:
    """Why a wait ended without a result: still running after ``timeout``, or asked not to wait at all."""
    if not timeout:
        return f"job {job_id} is not finished yet"
    return f"job {job_id} did not finish within {timeout:g}s"
