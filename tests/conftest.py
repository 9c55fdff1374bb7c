"""Shared fixtures: a real redis-server for the session, flushed per test, and worker processes.

End-to-end tests use a real ``redis-server`` on a free loopback port and real ``worker``
processes started with the documented command; fakeredis serves the fast unit tests.

The ``e2e`` marker is kept true by the hooks at the end: a test that starts a program (a
redis-server, a worker, the mock upstream, a command, another Python) or uses the session's
redis-server must be marked ``e2e``, and a test marked ``e2e`` must do one of the two.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Generator, Iterator
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
    _real_redis_used.append(True)
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
            wait_for_heartbeats(
                worker_env["AGENTQ_REDIS_URL"], procs, cluster=worker_env.get("AGENTQ_REDIS_CLUSTER", "")
            )
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


# ------------------------------------------------------------------------------------------------
# The e2e marker, enforced. Programs are seen through Python's "subprocess.Popen" audit event, so
# every way of starting one counts (Popen, run, asyncio's subprocesses, the tools' helpers). The
# session's redis-server starts only once, so a test that uses it counts through its fixtures
# (redis_server, and everything built on it: redis_url, settings, client, worker_env, ...).
# The inference pool's own processes (multiprocessing, no Popen) are the unit under test in
# test_executor.py and test_fanout.py and need nothing outside the test: they do not count.
# ------------------------------------------------------------------------------------------------
#: Markers of suites that start real processes by definition (each runs by its own make target):
#: they count as e2e.
REAL_PROCESS_MARKERS = ("e2e", "compose", "distributed", "browser", "cluster")
#: Fixtures that mean a real redis-server or worker processes, directly or through their closure.
PROCESS_FIXTURES = frozenset({"redis_server", "start_worker_processes", "workers"})
_started: list[str] = []  # programs started since the current test's setup began
_real_redis_used: list[bool] = []  # the session's redis-server was handed to the current test (redis_url)
_CALL_PASSED = pytest.StashKey[bool]()


def _real(item: pytest.Item) -> bool:
    """Is the test marked as one that starts real processes?"""
    return any(item.get_closest_marker(name) is not None for name in REAL_PROCESS_MARKERS)


def _record_program(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen":
        _started.append(os.path.basename(os.fsdecode(args[0])))


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_record_program)  # cannot be removed; it only appends a name to a list


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse, before anything starts, a test that uses real processes through fixtures without e2e."""
    _started.clear()
    _real_redis_used.clear()
    used = sorted(PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())))
    if used and not _real(item):
        pytest.fail(
            f"{item.nodeid} uses {', '.join(used)} (a real redis-server or worker processes) but is not "
            "marked e2e: add @pytest.mark.e2e, or use fake_redis if it does not need a real server",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """After the fixtures are gone: a test that started a program is e2e; a passed e2e test started one."""
    yield
    started, e2e = sorted(set(_started)), _real(item)
    _started.clear()
    if started and not e2e:
        pytest.fail(
            f"{item.nodeid} started {', '.join(started)} but is not marked e2e: add @pytest.mark.e2e", pytrace=False
        )
    uses_processes = bool(PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))) or bool(_real_redis_used)
    _real_redis_used.clear()
    # The heavier suites share processes started once per session (a compose stack, network hosts).
    plain_e2e = item.get_closest_marker("e2e") is not None and not any(
        item.get_closest_marker(name) for name in REAL_PROCESS_MARKERS[1:]
    )
    if plain_e2e and not started and not uses_processes and item.stash.get(_CALL_PASSED, False):
        pytest.fail(
            f"{item.nodeid} is marked e2e but started no program and used no real redis-server: "
            "remove the marker (move it from the module's pytestmark to the tests that need it)",
            pytrace=False,
        )
