"""Helpers the tests share that are not fixtures: raw jobs in Redis, waiting on a condition or on
a job's progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from agentq.contract import JOB_FUNCTION, ProgressEvent, ProgressKind, QuestionRequest, request_fingerprint
from agentq.errors import WaitTimeout
from agentq.protocol.keys import Field, field, shard_for
from agentq.protocol.records import encode_job
from producer.client import Client

T = TypeVar("T")


async def enqueue_raw(
    client: Client, *args: Any, function: str = JOB_FUNCTION, defer_s: float = 0.0, ring: bool = True, **kwargs: Any
) -> str:
    """Put a job on the queue as the protocol lays it out, skipping the client's validation; and ring the
    doorbell as the enqueue script does, unless ``ring`` is False."""
    job_id = uuid.uuid4().hex
    now_ms = round(time.time() * 1000)
    k = client.keys
    async with client.redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            k.jobs,
            mapping={job_id: encode_job(function, args, kwargs, now_ms), field(job_id, Field.PRIORITY): "normal"},
        )
        pipe.zadd(k.queue, {job_id: now_ms + round(defer_s * 1000)})
        if ring:
            pipe.zadd(k.bell, {"ring": now_ms})
        await pipe.execute()
    return job_id


async def lose_lease(client: Client, job_id: str) -> None:
    """Make a running job look as it does once its worker has died: its lease lapsed (queue score due
    now) and held by no live worker; and ring the doorbell, so an idle worker looks at once."""
    k = client.keys
    async with client.redis.pipeline(transaction=True) as pipe:
        pipe.hget(k.jobs, field(job_id, Field.HOLDER))
        pipe.hset(k.jobs, field(job_id, Field.HOLDER), "a-worker-that-died")
        pipe.zadd(k.queue, {job_id: time.time() * 1000}, xx=True)
        pipe.zadd(k.bell, {"ring": 0})
        holder, *_ = await pipe.execute()
    assert holder is not None, f"job {job_id} held no lease"


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, every: float = 0.01) -> T:
    """Await ``check`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > give_up:
            pytest.fail(f"gave up after {timeout:g}s waiting for {check}")
        await asyncio.sleep(every)


async def progress_reached(
    client: Client, job_id: str, event: ProgressKind, *, count: int = 1, timeout: float = 30.0
) -> list[ProgressEvent]:
    """Follow ``job_id``'s progress log until ``count`` events of kind ``event`` are in it; return
    every event so far. Fails the test if the job finishes first or ``timeout`` seconds pass.

    The log is what the worker publishes as it goes (``worker.job.progress``), so this waits for the
    moment itself (all fetches started, inference submitted), not for a guess at how long it takes.
    """
    seen: list[ProgressEvent] = []
    try:
        async with contextlib.aclosing(client.progress(job_id, timeout=timeout)) as events:
            async for logged in events:
                seen.append(logged)
                if sum(e.event == event for e in seen) >= count:
                    return seen
    except WaitTimeout:
        pass
    pytest.fail(f"job {job_id} logged {count} x {event} neither before it ended nor within {timeout:g}s: {seen}")


def questions_per_shard(client: Client, count: int, *, sources: list[str]) -> dict[int, list[QuestionRequest]]:
    """``count`` distinct requests on each shard of the client's queue (a request's shard is its
    fingerprint's), chosen among numbered questions."""
    shards = client.keys.shards
    found: dict[int, list[QuestionRequest]] = {shard: [] for shard in range(shards)}
    n = 0
    while any(len(requests) < count for requests in found.values()):
        request = client.validate(f"Question {n}: will it rain in Paris?", sources=sources)
        on_shard = found[shard_for(request_fingerprint(request), shards)]
        if len(on_shard) < count:
            on_shard.append(request)
        n += 1
    return found
