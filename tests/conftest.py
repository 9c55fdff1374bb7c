"""Shared fixtures: a real redis-server for the session, flushed per test, and worker processes.

End-to-end tests use a real ``redis-server`` on a free loopback port and real ``worker``
processes started with the documented command; fakeredis serves the fast unit tests.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import Any

import fakeredis
import pytest
import redis

from agentq.contract import ExecutorInfo, InferenceOutput, JobResult, RanIn, SourceOutcome, Timing
from agentq.settings import Settings
from agentq_tools.embedded import EmbeddedRedis
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats
from producer.client import Client

#: Latencies and inference work at 2% of the reference: a reference query takes ~0.1 s.
TEST_TIME_SCALE = 0.02


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One real redis-server for the whole session."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The real server's URL, emptied before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def settings_env(redis_url: str) -> dict[str, str]:
    """Environment variables that configure a producer or worker for the test server."""
    return {
        "AGENTQ_REDIS_URL": redis_url,
        "AGENTQ_TIME_SCALE": str(TEST_TIME_SCALE),
        "AGENTQ_HEALTH_CHECK_INTERVAL_S": "1",
        "AGENTQ_POOL_SIZE": "2",
    }


@pytest.fixture
def settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for this test, read from the same environment the workers get."""
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A connected producer client."""
    async with Client(settings) as c:
        yield c


@pytest.fixture
def worker_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The full environment of a worker subprocess (extend it in a test to inject faults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    return {**env, **settings_env}


@pytest.fixture
def start_worker_processes(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., list[Popen[bytes]]]]:
    """Factory: start N real worker processes with extra settings, wait until they heartbeat; stop
    them afterwards."""
    started: list[Popen[bytes]] = []

    def start(count: int = 1, **extra_env: str) -> list[Popen[bytes]]:
        procs = start_workers(count, {**worker_env, **extra_env}, tmp_path, first=len(started))
        started.extend(procs)
        try:
            wait_for_heartbeats(worker_env["AGENTQ_REDIS_URL"], procs)
        except RuntimeError:
            for log in sorted(tmp_path.glob("worker-*.log")):
                print(log.read_text()[-3000:])
            raise
        return procs

    yield start
    stop_workers(started)


@pytest.fixture
def fake_redis() -> Any:
    """An in-memory async Redis for unit tests of logic."""
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
def sample_result() -> JobResult:
    """A complete result as a worker would store it: two sources answered, one timed out."""
    now = datetime.now(UTC)
    ran_in = RanIn(executor="interpreter", pid=1, interpreter_id=3, thread_id=7)
    inference = InferenceOutput(summary="s.", top_terms=["rain"], relevance=0.5, work_units=30, ran_in=ran_in)
    ok = {
        "status": "ok",
        "data": "text",
        "inference": inference,
        "fetch_start_s": 0.0,
        "fetch_end_s": 0.2,
        "fetch_s": 0.2,
        "inference_start_s": 0.2,
        "inference_end_s": 0.4,
        "inference_s": 0.2,
    }
    return JobResult(
        job_id="abc",
        question="rain?",
        status="partial",
        answer=["[weather] s."],
        sources=[
            SourceOutcome(name="weather", **ok),  # type: ignore[arg-type]
            SourceOutcome(name="news", **ok),  # type: ignore[arg-type]
            SourceOutcome(name="knowledge_base", status="timeout", error="no answer within 5s", fetch_s=5.0),
        ],
        errors=["knowledge_base: timeout: no answer within 5s"],
        timing=Timing(
            queued_at=now,
            started_at=now,
            finished_at=now,
            queue_wait_s=0.0,
            total_s=5.0,
            fetch_wall_s=5.0,
            inference_cpu_s=0.4,
            critical_path_s=5.0,
            sequential_estimate_s=5.8,
            speedup=1.16,
        ),
        executor=ExecutorInfo(kind="interpreter", size=2, reason="auto"),
        worker_id="host:1:abc",
        job_try=1,
    )
