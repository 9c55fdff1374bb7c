"""The Python client: enqueue a question, ask a job's status, get or wait for its result.

    async with Client() as client:
        job_id = await client.enqueue("Will it rain in Paris tomorrow?")
        result = await client.result(job_id, timeout=30)

Requests are validated here, against the same contract the worker uses, before anything reaches
Redis. Waiting does not poll every half second as arq's ``Job.result`` does: the worker publishes
on a per-job channel once the result is stored, and the client checks the result key on every
message (and once a second, in case a message was missed).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal, Self, cast

import redis.exceptions
from arq.connections import ArqRedis, create_pool
from arq.jobs import DeserializationError, Job, JobStatus, deserialize_result

from worker.app import redis_settings
from worker.contract import JOB_FUNCTION, JobResult, Keys, QuestionRequest, dumps, loads, parse_request
from worker.errors import JobNotFound, RedisUnavailable, WaitTimeout
from worker.settings import Settings, get_settings
from worker.sources import source_names

Status = Literal["queued", "deferred", "in_progress", "complete"]
_REDIS_DOWN = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_RECHECK_S = 1.0


class Client:
    """Talks to the queue. Use as an async context manager; one instance per event loop."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.keys = Keys(self.settings.key_prefix)
        self._redis: ArqRedis | None = None

    async def __aenter__(self) -> Self:
        with self._redis_errors():
            self._redis = await create_pool(
                redis_settings(self.settings, connect_retries=0),
                job_serializer=dumps,
                job_deserializer=loads,
                default_queue_name=self.settings.queue_name,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> ArqRedis:
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
    ) -> QuestionRequest:
        """Check a request against the contract and limits; raise ``InvalidRequest``."""
        s = self.settings
        data: dict[str, Any] = {"question": question}
        for name, value in (("sources", sources), ("source_timeout_s", source_timeout_s), ("deadline_s", deadline_s)):
            if value is not None:
                data[name] = tuple(value) if name == "sources" and isinstance(value, list) else value
        return parse_request(
            data,
            known_sources=source_names(),
            max_question_chars=s.max_question_chars,
            max_source_timeout_s=s.max_source_timeout_s,
            max_deadline_s=s.max_deadline_s,
        )

    async def enqueue(
        self,
        question: object,
        *,
        sources: Sequence[str] | None = None,
        source_timeout_s: float | None = None,
        deadline_s: float | None = None,
    ) -> str:
        """Validate, then put the question on the queue; return the job id."""
        request = self.validate(question, sources=sources, source_timeout_s=source_timeout_s, deadline_s=deadline_s)
        return await self.enqueue_request(request)

    async def enqueue_request(self, request: QuestionRequest) -> str:
        """Put an already validated request on the queue; return the job id."""
        payload = request.model_dump(mode="json", exclude_none=True)
        with self._redis_errors():
            job = await self.redis.enqueue_job(JOB_FUNCTION, payload, _queue_name=self.settings.queue_name)
        if job is None:  # only when a job id is reused, which we never do
            raise RuntimeError("arq refused the job: duplicate id")
        return job.job_id

    # ---------------------------------------------------------------------------- results
    async def status(self, job_id: str) -> Status:
        """Where the job is now; raise ``JobNotFound`` for an unknown (or expired) id."""
        with self._redis_errors():
            status = await self._job(job_id).status()
        if status == JobStatus.not_found:
            raise JobNotFound(f"no job {job_id!r} (unknown id, or its result expired)")
        return cast(Status, status.value)

    async def fetch_result(self, job_id: str) -> JobResult | None:
        """The stored result, or None while the job is queued or running."""
        with self._redis_errors():
            raw = await self.redis.get(Keys.result(job_id))
        if raw is None:
            return None
        return self._parse(job_id, raw)

    async def result(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """Wait up to ``timeout`` seconds (forever if None) for the result.

        Raises ``JobNotFound`` if no such job exists and ``WaitTimeout`` if time runs out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._subscription(job_id) as messages:
            while True:
                found = await self.fetch_result(job_id)
                if found is not None:
                    return found
                await self.status(job_id)  # raises JobNotFound
                left = _RECHECK_S if deadline is None else min(_RECHECK_S, deadline - time.monotonic())
                if left <= 0:
                    raise WaitTimeout(f"job {job_id} did not finish within {timeout:g}s")
                with self._redis_errors():
                    await messages(left)

    # ---------------------------------------------------------------------------- workers
    async def workers(self) -> list[dict[str, Any]]:
        """The heartbeat records of every live worker."""
        with self._redis_errors():
            keys = [k async for k in self.redis.scan_iter(match=self.keys.workers_pattern, count=500)]
            values = await self.redis.mget(keys) if keys else []
        records = []
        for value in values:
            with contextlib.suppress(ValueError, TypeError):
                records.append(json.loads(value))
        return sorted(records, key=lambda r: str(r.get("id")))

    # ---------------------------------------------------------------------------- internals
    def _job(self, job_id: str) -> Job:
        return Job(job_id, self.redis, _queue_name=self.settings.queue_name, _deserializer=loads)

    def _parse(self, job_id: str, raw: bytes) -> JobResult:
        """Turn what arq stored into a JobResult, whatever the job returned or failed with."""
        try:
            info = deserialize_result(raw, deserializer=loads)
        except DeserializationError:
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

    @contextlib.asynccontextmanager
    async def _subscription(self, job_id: str) -> AsyncIterator[Any]:
        """Subscribe to the job's done channel; yield a function that waits for a message."""
        pubsub = self.redis.pubsub()
        with self._redis_errors():
            await pubsub.subscribe(self.keys.done_channel(job_id))

        async def wait(seconds: float) -> None:
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=max(0.0, seconds))

        try:
            yield wait
        finally:
            with contextlib.suppress(*_REDIS_DOWN):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.contextmanager
    def _redis_errors(self) -> Iterator[None]:
        """Map Redis connection failures to ``RedisUnavailable`` naming the (masked) URL."""
        try:
            yield
        except _REDIS_DOWN as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.settings.redis_url_safe}: {exc}") from exc
