"""Many jobs at once: enqueue a batch and learn when each finishes, with one subscription.

``Client.result`` subscribes per job, which is right for one caller and wasteful for a thousand.
Here one pattern subscription to every job's done channel (the same notification the worker
publishes after storing the result) timestamps each completion, and a once-a-second check of
the result keys covers a missed message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agentq.contract import JobResult, QuestionRequest
from producer.client import Client


@dataclass
class Batch:
    """A finished batch: when each job was enqueued and done (``time.time()``) and its result."""

    enqueued_at: dict[str, float]
    done_at: dict[str, float]
    results: dict[str, JobResult]
    started: float
    finished: float

    @property
    def wall_s(self) -> float:
        """From the first enqueue to the last completion the caller saw."""
        return self.finished - self.started

    def latencies(self) -> list[float]:
        """Each job's enqueue → caller-knows-it-is-done, seconds."""
        return [self.done_at[j] - self.enqueued_at[j] for j in self.done_at]


async def run_batch(
    client: Client, requests: Sequence[QuestionRequest], *, timeout: float = 300.0, concurrency: int = 50
) -> Batch:
    """Enqueue every request (``concurrency`` at a time), wait for all, fetch every result."""
    pubsub = client.redis.pubsub()
    await pubsub.psubscribe(client.keys.done_channel("*"))
    prefix = client.keys.done_channel("")
    enqueued_at: dict[str, float] = {}
    done_at: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def enqueue(request: QuestionRequest) -> None:
        async with gate:
            at = time.time()
            job_id = await client.enqueue_request(request)
            enqueued_at[job_id] = at

    try:
        started = time.time()
        enqueuing = asyncio.ensure_future(asyncio.gather(*(enqueue(r) for r in requests)))
        give_up = time.monotonic() + timeout
        last_check = time.monotonic()
        while not enqueuing.done() or set(enqueued_at) - set(done_at):
            if time.monotonic() > give_up:
                raise TimeoutError(f"{len(enqueued_at) - len(done_at)} of {len(requests)} jobs unfinished")
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                job_id = message["channel"].decode().removeprefix(prefix)
                done_at.setdefault(job_id, time.time())
            elif time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                await _recheck(client, set(enqueued_at) - set(done_at), done_at)
        await enqueuing
        finished = max(done_at.values(), default=started)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
    results = await fetch_all(client, list(done_at))
    return Batch(enqueued_at, {j: done_at[j] for j in enqueued_at}, results, started, finished)


async def _recheck(client: Client, pending: set[str], done_at: dict[str, float]) -> None:
    ids = sorted(pending)
    if not ids:
        return
    async with client.redis.pipeline(transaction=False) as pipe:
        for j in ids:
            pipe.exists(client.keys.result(j))
        flags = await pipe.execute()
    now = time.time()
    for job_id, flag in zip(ids, flags, strict=True):
        if flag:
            done_at.setdefault(job_id, now)


async def fetch_all(client: Client, job_ids: Sequence[str]) -> dict[str, JobResult]:
    """Every stored result of ``job_ids``, read in chunks."""
    results: dict[str, JobResult] = {}
    for i in range(0, len(job_ids), 100):
        chunk = job_ids[i : i + 100]
        found = await asyncio.gather(*(client.fetch_result(j) for j in chunk))
        results.update({j: r for j, r in zip(chunk, found, strict=True) if r is not None})
    return results
