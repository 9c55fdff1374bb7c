"""The cluster suite's fixtures: one real Redis Cluster (3 primaries, 3 replicas) for the session,
emptied before each test; the shared client and worker fixtures (``tests/conftest.py``) speak to it
(``AGENTQ_REDIS_CLUSTER``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentq_tools.cluster import LocalCluster
from tests.conftest import TEST_TIME_SCALE


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
def settings_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """The shared fixtures (``settings``, ``client``, ``start_worker_processes``, ...) speak to the cluster."""
    return cluster_env
