"""Fixtures for the unit tests of arq's overrides: an arq pool on fakeredis, and workers on it.

Nothing here starts a process or runs arq's ``main`` (it calls ``INFO``, which fakeredis lacks):
tests call the overridden methods directly and inject faults by switching the fake server off
(``server.connected = False``) or by patching a Redis call to raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from arq.worker import Worker

from agentq import wire
from agentq.contract import dumps, loads
from agentq.settings import Settings
from worker.app import worker_options
from worker.arqfork import AgentQWorker

QUEUE = "agentq:test-queue"

#: A worker factory: ``make_worker(max_jobs=2, lease_s=3.0)`` takes ``Settings`` fields, and
#: ``options={...}`` for arq ``Worker`` arguments.
MakeWorker = Callable[..., AgentQWorker]


def worker_settings(**fields: Any) -> Settings:
    """Settings for a worker under test: no ``.env`` file, and the arguments win over the environment."""
    return Settings(_env_file=None, queue_name=QUEUE, **fields)


def free_slots(sem: asyncio.Semaphore) -> int:
    """How many times ``sem`` can be acquired without waiting (arq's job slots are this semaphore)."""
    return sem._value  # no public accessor; private, but the same in 3.11 and 3.14 (both tested)


async def queue_jobs(redis: ArqRedis, *job_ids: str) -> None:
    """Put ids in the queue, due now, as arq's enqueue leaves them (the job records are not needed)."""
    await redis.zadd(QUEUE, {job_id: timestamp_ms() - 1000 for job_id in job_ids})


async def blocked_job(job_id: str, score: int) -> None:
    """Stands in for ``run_job``: a job that runs until it is cancelled."""
    await asyncio.Event().wait()


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """A fresh in-memory Redis server; set ``connected = False`` to take it down."""
    return fakeredis.FakeServer()


@pytest.fixture
async def arq_pool(fake_server: fakeredis.FakeServer) -> AsyncIterator[ArqRedis]:
    """An ``ArqRedis`` on the fake server, JSON both ways like the worker's, closed after the test."""
    backing = fakeredis.FakeAsyncRedis(server=fake_server)
    pool = ArqRedis(backing.connection_pool, job_serializer=dumps, job_deserializer=loads, default_queue_name=QUEUE)
    yield pool
    fake_server.connected = True
    await pool.aclose(close_connection_pool=True)
    await backing.aclose()


@pytest.fixture
async def make_worker(arq_pool: ArqRedis) -> AsyncIterator[MakeWorker]:
    """Factory of ``AgentQWorker``s on ``arq_pool`` whose jobs block until cancelled (cancelled after
    the test). Call it from a coroutine: arq's ``Worker`` takes the running loop."""
    made: list[Worker] = []

    def make(options: dict[str, Any] | None = None, **fields: Any) -> AgentQWorker:
        s = worker_settings(**fields)
        w = AgentQWorker(s, **worker_options(s, redis_pool=arq_pool, handle_signals=False, **(options or {})))
        w.run_job = blocked_job  # type: ignore[method-assign]
        made.append(w)
        return w

    yield make
    await cancel_tasks(made)


@pytest.fixture
async def make_arq_worker(arq_pool: ArqRedis) -> AsyncIterator[Callable[..., Worker]]:
    """Factory of arq's own ``Worker``s, configured like ours, to show what the overrides change."""
    made: list[Worker] = []

    def make(**fields: Any) -> Worker:
        s = worker_settings(**fields)
        w = Worker(**worker_options(s, redis_pool=arq_pool, handle_signals=False))
        w.run_job = blocked_job  # type: ignore[method-assign]
        made.append(w)
        return w

    yield make
    await cancel_tasks(made)


async def cancel_tasks(workers: list[Worker]) -> None:
    """Cancel and await every job task the workers started."""
    tasks = [t for w in workers for t in w.tasks.values()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def in_progress(job_id: str) -> str:
    """arq's in-progress key of a job."""
    return wire.IN_PROGRESS_PREFIX + job_id
