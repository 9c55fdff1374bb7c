"""The cluster suite's fixtures: one real Redis Cluster (3 primaries, 3 replicas) for the session,
emptied before each test, and worker processes speaking to it (``AGENTQ_REDIS_CLUSTER``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from agentq.settings import Settings
from agentq_tools.cluster import LocalCluster
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats
from producer.client import Client
from tests.conftest import TEST_TIME_SCALE

StartWorkers = Callable[..., list[Popen[bytes]]]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def cluster_env(cluster: LocalCluster) -> dict[str, str]:
    """The settings of a producer or worker of the cluster, which is emptied first."""
    for node in cluster.primaries():
        with node.client() as c:
            c.flushall()
    return {
        "AGENTQ_REDIS_CLUSTER": cluster.startup_nodes,
        "AGENTQ_REDIS_URL": cluster.url,
        "AGENTQ_TIME_SCALE": str(TEST_TIME_SCALE),
        "AGENTQ_HEALTH_CHECK_INTERVAL_S": "1",
        "AGENTQ_POOL_SIZE": "2",
    }


@pytest.fixture
async def cluster_client(cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    for name, value in cluster_env.items():
        monkeypatch.setenv(name, value)
    async with Client(Settings()) as c:
        yield c


@pytest.fixture
def start_cluster_workers(cluster_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorkers]:
    """Factory: start N worker processes of the cluster with extra settings, wait for their heartbeats."""
    started: list[Popen[bytes]] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")} | cluster_env

    def start(count: int = 1, **extra_env: str) -> list[Popen[bytes]]:
        procs = start_workers(count, {**base, **extra_env}, tmp_path, first=len(started))
        started.extend(procs)
        try:
            wait_for_heartbeats(cluster_env["AGENTQ_REDIS_URL"], procs, cluster=cluster_env["AGENTQ_REDIS_CLUSTER"])
        except RuntimeError:
            for log in sorted(tmp_path.glob("worker-*.log")):
                print(log.read_text()[-3000:])
            raise
        return procs

    yield start
    stop_workers(started)
