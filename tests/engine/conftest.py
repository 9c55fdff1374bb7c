"""Fixtures for the unit tests of the worker's loop on fakeredis: a worker whose job functions the
test writes, and fakes for the clock and for sleeping.

No process is started: the tests call the loop's parts (``_pass``, ``_pickup``, ``stop``, the
runner) directly, and inject faults by switching the fake server off or by making a call raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fakeredis
import pytest
from arq.worker import func

from agentq.protocol.keys import Keys
from agentq.protocol.queue import Queue, now_ms
from agentq.protocol.records import encode_job
from agentq.settings import Settings
from worker.engine import leases
from worker.engine.context import WorkerContext
from worker.engine.loop import Worker

QUEUE = "test"
KEYS = Keys("agentq", QUEUE)
#: A worker factory: ``make_worker(max_jobs=2, lease_s=3.0)`` takes ``Settings`` fields; ``job=`` the
#: coroutine every job runs (default: one that runs until cancelled).
MakeWorker = Callable[..., Awaitable[Worker]]


def worker_settings(**fields: Any) -> Settings:
    """Settings for a worker under test: no ``.env`` file, and the arguments win over the environment."""
    return Settings(_env_file=None, queue_name=QUEUE, **fields)


async def blocked(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A job that runs until it is cancelled."""
    await asyncio.Event().wait()
    return {}


async def queue_jobs(redis: Any, *job_ids: str, function: str = "job", score: float | None = None) -> None:
    """Enqueue jobs due a second ago (or at ``score``), with records as the producer writes them."""
    queue = Queue(redis, KEYS)
    for job_id in job_ids:
        record = encode_job(function, ({"question": job_id},), {}, now_ms())
        at = now_ms() - 1000 if score is None else score
        await queue.enqueue(job_id, record, score=at, marker=None, index_score=at, index_size=100)


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """A fresh in-memory Redis server; set ``connected = False`` to take it down."""
    return fakeredis.FakeServer()


@pytest.fixture
async def fake(fake_server: fakeredis.FakeServer) -> AsyncIterator[Any]:
    """An async client of the fake server, closed after the test."""
    client = fakeredis.FakeAsyncRedis(server=fake_server)
    yield client
    fake_server.connected = True
    await client.aclose()


@pytest.fixture
async def make_worker(fake: Any) -> AsyncIterator[MakeWorker]:
    """Factory of started workers on ``fake`` (no start-up hooks); their jobs are cancelled after the test."""
    made: list[Worker] = []

    async def make(job: Callable[..., Awaitable[Any]] = blocked, **fields: Any) -> Worker:
        s = worker_settings(**fields)
        ctx: WorkerContext = {"settings": s, "worker_id": f"w{len(made) + 1}", "keys": s.keys}
        w = Worker(s, [func(job, name="job")], ctx, redis=fake)  # type: ignore[arg-type]
        await w.start()
        made.append(w)
        return w

    yield make
    tasks = [t for w in made for t in w.tasks.values()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class FakeClock:
    """Stands in for the ``time`` module in ``worker.engine.leases``: ``monotonic()`` is what the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The outage budget's clock, moved by hand."""
    fake = FakeClock()
    monkeypatch.setattr(leases, "time", fake)
    return fake


class FakeSleep:
    """Stands in for ``asyncio.sleep`` in the module under test: records each delay and returns at once;
    the call after ``limit`` of them is cancelled (the only way the lease renewer stops)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.limit = float("inf")

    async def __call__(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        if len(self.delays) > self.limit:
            raise asyncio.CancelledError
        return result
