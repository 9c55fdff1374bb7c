"""A queue of six shards (``AGENTQ_QUEUE_SHARDS=6``) on the real Redis Cluster of 3 primaries: two shards on
each primary, jobs answered on every primary, and the commands of a burst spread evenly over them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from subprocess import Popen

import pytest

from agentq.protocol.keys import shard_of
from agentq.settings import Settings
from agentq_tools.cluster import LocalCluster, Node
from producer.client import Client
from tests.helpers import questions_per_shard

pytestmark = [pytest.mark.cluster]
StartWorkers = Callable[..., list[Popen[bytes]]]
SHARDS = 6
JOBS = 240
#: Commands of the cluster's own upkeep and of the test's reading, not the product's work.
UPKEEP = ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_cluster|", "cmdstat_ping", "cmdstat_command")


@pytest.fixture
def settings_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """The cluster's settings (``tests/cluster/conftest.py``), with a queue of six shards."""
    return {**cluster_env, "AGENTQ_QUEUE_SHARDS": str(SHARDS)}


def commands(node: Node) -> int:
    """Commands the node has run since its statistics were reset, its upkeep left out."""
    stats = node.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if not name.startswith(UPKEEP))


async def test_six_shards_put_jobs_and_commands_on_every_primary_evenly(
    cluster: LocalCluster, client: Client, settings: Settings, start_worker_processes: StartWorkers
) -> None:
    """240 distinct questions, 40 of each shard, from three workers: every shard and every primary answers
    some, and each primary runs within 25 % of the mean number of commands (figures printed).

    The breaker and the latency window are off: each is one key per source, shared by every worker (a
    hot key by design, on whichever primary holds its slot), so with two sources they alone would
    decide the spread. The cache's keys are one per question, and spread as the jobs do."""
    start_worker_processes(3, AGENTQ_BREAKER_FAILURES="0", AGENTQ_ADAPTIVE_TIMEOUTS="false")
    primaries = cluster.primaries()
    holder = {k.shard_index: cluster.primary_of(k.queue).port for k in settings.keys.every_shard}
    assert sorted(Counter(holder.values()).values()) == [2, 2, 2], holder  # two shards on each primary
    for node in primaries:
        with node.client() as c:
            c.config_resetstat()
    started = time.monotonic()
    # as many questions on each shard: the primaries' shares differ by their commands, not by the questions' luck
    placed = questions_per_shard(client, JOBS // SHARDS, sources=["weather", "news"])
    requests = [request for on_shard in placed.values() for request in on_shard]
    ids = [e.job_id for e in await asyncio.gather(*(client.submit_request(r) for r in requests))]
    results = await asyncio.gather(*(client.result(j, timeout=120) for j in ids))
    took = time.monotonic() - started
    assert [r.status for r in results] == ["ok"] * JOBS
    per_shard = Counter(shard_of(j) for j in ids)
    per_primary = Counter(holder[shard_of(j)] for j in ids)
    spent = {node.port: commands(node) for node in primaries}
    mean = sum(spent.values()) / len(spent)
    spread = {port: round(count / mean - 1, 3) for port, count in spent.items()}
    print(
        f"figure: {JOBS} jobs in {took:.1f} s over {SHARDS} shards: jobs per shard {sorted(per_shard.values())},"
        f" per primary {dict(per_primary)}; commands per primary {spent} ({mean / JOBS:.1f} a job),"
        f" off the mean by {spread}"
    )
    assert len(per_shard) == SHARDS and len(per_primary) == len(primaries)
    assert all(abs(off) <= 0.25 for off in spread.values()), spread
