"""Fair share across tenants through a real Redis and a real worker: one tenant's backlog does not hold
up another tenant's jobs. The figures (waits beside first-in-first-out, shares by weight, a lone
tenant's throughput) are the benchmark's: ``make bench`` (``agentq_tools.bench.fairness``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from subprocess import Popen

import pytest

from agentq.settings import Settings
from producer.client import Client

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]


async def test_a_tenants_few_jobs_start_among_another_tenants_backlog_not_after_it(
    settings: Settings, start_worker_processes: StartWorkers
) -> None:
    """team-a queues 30 jobs, then team-b 3. First in, first out, team-b's would start 31st to 33rd; with
    fair share they start among the first starts (asserted: within the first 12 of 33)."""
    async with Client(settings, tenant="team-a") as a, Client(settings, tenant="team-b") as b:
        backlog = [await a.enqueue(f"backlog question {i}", sources=["weather"], dedup=False) for i in range(30)]
        few = [await b.enqueue(f"few question {i}", sources=["weather"], dedup=False) for i in range(3)]
        start_worker_processes(1, AGENTQ_MAX_JOBS="2")
        results = await asyncio.gather(*(a.result(j, timeout=120) for j in backlog + few))
    assert {r.status for r in results} == {"ok"} and all(r.timing is not None for r in results)
    order = [r.job_id for r in sorted(results, key=lambda r: r.timing.started_at)]  # type: ignore[union-attr]
    ranks = sorted(order.index(j) + 1 for j in few)
    print(f"figure: team-b's 3 jobs started at ranks {ranks} of 33 (first in, first out: [31, 32, 33])")
    assert ranks[-1] <= 12, order
