"""Our settings turned into arq's, in one place, for the worker and the producer alike.

:class:`AgentQWorker` is arq's ``Worker`` with the delivery guarantees arq leaves out: heartbeated
leases instead of timeout-based crash recovery, a poll loop that rides through Redis restarts,
and result writes where the first complete result of a job wins (see ``worker.leases``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from signal import Signals
from typing import Any

import redis.exceptions
from arq.connections import ArqRedis, RedisSettings
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.worker import Worker, func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from worker import job
from worker.contract import JOB_FUNCTION, Keys, dumps, loads
from worker.errors import REDIS_DOWN
from worker.leases import OutageBudget, explain_failure, renew_leases_forever
from worker.settings import Settings

log = logging.getLogger(__name__)

#: Errors on which a Redis command is retried (see ``REDIS_DOWN`` for why OSError is among them).
RETRY_ON = list(REDIS_DOWN)


def redis_settings(s: Settings, *, connect_retries: int | None = None) -> RedisSettings:
    """arq's ``RedisSettings`` with everything ``from_dsn`` leaves out (TLS, timeouts, retries)."""
    base = RedisSettings.from_dsn(s.redis_url)
    return dataclasses.replace(
        base,
        conn_timeout=s.redis_connect_timeout_s,  # type: ignore[arg-type]  # arq annotates int, uses float
        conn_retries=s.redis_connect_retries if connect_retries is None else connect_retries,
        conn_retry_delay=1,
        ssl_ca_certs=s.redis_ca_file,
        ssl_check_hostname=base.ssl and s.redis_tls_check_hostname,
        retry_on_timeout=True,
        retry_on_error=list(RETRY_ON),
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
    )


def worker_options(s: Settings, **overrides: Any) -> dict[str, Any]:
    """Every argument of ``arq.worker.Worker``, written out, derived from our settings."""
    ctx: job.WorkerContext = {"settings": s, "worker_id": job.new_worker_id(), "keys": Keys(s.key_prefix)}
    options: dict[str, Any] = {
        # arq types ctx as a plain dict; ours is a TypedDict of the same keys.
        "functions": [func(job.answer_question, name=JOB_FUNCTION)],  # type: ignore[arg-type]
        "queue_name": s.queue_name,
        "redis_settings": redis_settings(s),
        "on_startup": job.startup,
        "on_shutdown": job.shutdown,
        "on_job_start": job.job_started,
        "after_job_end": job.notify_done,
        "ctx": ctx,
        # JSON both ways: a payload in Redis can never become code in the worker.
        "job_serializer": dumps,
        "job_deserializer": loads,
        # Above the longest deadline a request may ask, so arq never kills a job that is still
        # inside its own deadline. (The in-progress key is a renewed lease instead: AgentQWorker.)
        "job_timeout": s.job_timeout_s,
        "max_jobs": s.max_jobs,
        "max_tries": s.max_tries,
        "keep_result": s.result_ttl_s,
        "poll_delay": s.poll_delay_s,
        "job_completion_wait": s.shutdown_grace_s,
        "health_check_interval": s.health_check_interval_s,
        "health_check_key": Keys(s.key_prefix).health(s.queue_name),
        "handle_signals": True,
        "log_results": False,
    }
    options.update(overrides)
    return options


def create_worker(s: Settings, **overrides: Any) -> AgentQWorker:
    """A worker configured from ``s`` (``overrides`` for tests: ``burst=True`` ...)."""
    return AgentQWorker(s, **worker_options(s, **overrides))


async def create_redis(s: Settings, *, connect_retries: int | None = None) -> ArqRedis:
    """The worker's Redis pool: arq's settings plus what ``RedisSettings`` cannot carry.

    Socket timeouts (a Redis that stopped answering is a connection error, not a hang), TCP
    keep-alive and redis-py's health checks (an idle connection is PINGed before reuse, so a
    connection cut by a Redis restart is noticed and replaced, not used).
    """
    rs = redis_settings(s, connect_retries=connect_retries)
    attempts = 0
    while True:
        pool = ArqRedis(
            host=rs.host,
            port=rs.port,
            db=rs.database,
            username=rs.username,
            password=rs.password,
            ssl=rs.ssl,
            ssl_cert_reqs=rs.ssl_cert_reqs,
            ssl_ca_certs=rs.ssl_ca_certs,
            ssl_check_hostname=rs.ssl_check_hostname,
            socket_connect_timeout=rs.conn_timeout,
            socket_timeout=s.redis_socket_timeout_s,
            socket_keepalive=True,
            health_check_interval=5,
            retry=rs.retry,
            retry_on_timeout=rs.retry_on_timeout,
            retry_on_error=rs.retry_on_error,
            encoding="utf8",
            job_serializer=dumps,
            job_deserializer=loads,
            default_queue_name=s.queue_name,
        )
        try:
            await pool.ping()
            return pool
        except (OSError, redis.exceptions.RedisError) as exc:
            await pool.aclose()
            if attempts >= rs.conn_retries:
                raise
            attempts += 1
            log.warning("cannot reach Redis at %s (%s); %d attempts left", s.redis_url_safe, exc, rs.conn_retries)
            await asyncio.sleep(rs.conn_retry_delay)


class AgentQWorker(Worker):
    """arq's worker with leases, outage riding and first-result-wins writes."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(**options)
        self.settings = settings
        # start_jobs sets the in-progress key to this: one lease, renewed while the job runs.
        self.in_progress_timeout_s = settings.lease_s
        self.outage = OutageBudget(settings.redis_outage_s)
        self.stopping = False
        self.results_discarded = 0

    async def main(self) -> None:
        """Connect with our own pool, keep the leases of running jobs, then run arq's loop."""
        if self._pool is None:
            self._pool = await create_redis(self.settings)
        renewer = asyncio.create_task(renew_leases_forever(self._pool, self._running, self.settings.lease_s))
        try:
            await super().main()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    def _running(self) -> list[str]:
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    def handle_sig(self, signum: Signals) -> None:
        """arq's stop (cancel the jobs and the main task), remembered: see :meth:`_poll_iteration`."""
        self.stopping = True
        super().handle_sig(signum)

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
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                # arq takes the slot (semaphore and counter) before talking to Redis and only gives
                # it back on a WATCH conflict; without this each outage would cost one slot for good.
                if job_id.decode() not in self.tasks:
                    self.job_counter -= 1
                    self.sem.release()
                raise
            if not self.allow_pick_jobs or self.job_counter >= self.max_jobs:
                return

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
            in_progress_key = in_progress_key_prefix + job_id
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
                    tr.set(result_key_prefix + job_id, result_data, px=px, nx=True)
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            replies = await tr.execute()
        if wrote_at is not None and not replies[wrote_at]:
            self.results_discarded += 1
            log.warning("job %s already had a result (an earlier try finished first); this one is discarded", job_id)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's finish_failed_job with ``SET NX`` and a reason a caller can act on."""
        result_data = explain_failure(result_data, self.max_tries)
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(retry_key_prefix + job_id, in_progress_key_prefix + job_id, job_key_prefix + job_id)
            tr.zrem(abort_jobs_ss, job_id)
            tr.zrem(self.queue_name, job_id)
            if result_data is not None and (self.keep_result_forever or self.keep_result_s > 0):
                px = _ms(self.keep_result_s, self.keep_result_forever)
                tr.set(result_key_prefix + job_id, result_data, px=px, nx=True)
            await tr.execute()


def _ms(seconds: float | None, forever: bool) -> int | None:
    return None if forever or seconds is None else round(seconds * 1000)
