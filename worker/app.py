"""Our settings turned into arq's, in one place, for the worker and the producer alike."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis.exceptions
from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from worker import job
from worker.contract import JOB_FUNCTION, Keys, dumps, loads
from worker.settings import Settings

#: Errors on which a Redis command is retried: the builtin OSError covers "connection refused"
#: while Redis restarts, which redis-py's own ConnectionError does not.
RETRY_ON = [OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]


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
        # Above the longest deadline a request may ask, so arq never kills a job that is
        # still inside its own deadline; arq derives the in-progress expiry from it (+10 s).
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


def create_worker(s: Settings, **overrides: Any) -> Worker:
    """An arq worker configured from ``s`` (``overrides`` for tests: ``burst=True`` ...)."""
    return Worker(**worker_options(s, **overrides))
