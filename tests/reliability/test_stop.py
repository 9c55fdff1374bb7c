"""Stopping a worker with a grace period (AGENTQ_SHUTDOWN_GRACE_S > 0, as compose and Kubernetes
run it) ends within the grace period under load, every time, and loses no job."""

from __future__ import annotations

import json
import signal
import statistics
import time

import pytest

from producer.client import Client
from tests.reliability.conftest import ONE_SECOND, Workers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.interpreter]
STOPS = 20
GRACE_S = 2
#: Beyond the grace period: the pool's shutdown (it waits for its interpreters or processes) and
#: the process's own exit, on a loaded 2-core machine.
MARGIN_S = 6.0


@pytest.mark.timeout(600)
async def test_twenty_graceful_stops_in_a_row_each_within_the_grace_period(client: Client, workers: Workers) -> None:
    """20 times: a busy worker (4 jobs at once, some longer than the grace) gets SIGTERM and exits 0 in time."""
    job_ids: list[str] = []
    took: list[float] = []
    for i in range(STOPS):
        # Odd rounds: jobs of ~0.5 s that finish inside the grace; even rounds: ~4 s jobs that it cuts short.
        latency = ONE_SECOND / 2 if i % 2 else 4 * ONE_SECOND
        (worker,) = workers.start(
            1,
            AGENTQ_SHUTDOWN_GRACE_S=str(GRACE_S),
            AGENTQ_MAX_JOBS="4",
            AGENTQ_SOURCE_LATENCY_S=json.dumps({"weather": latency, "news": latency}),
        )
        batch = [await client.enqueue(f"stop {i} job {n}", sources=["weather", "news"], dedup=False) for n in range(6)]
        job_ids += batch
        workers.running(batch[0])  # the worker is busy: a job has started
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(GRACE_S + MARGIN_S + 30)  # a hang fails below, with the time it took
        took.append(time.monotonic() - stopped_at)
        assert code == 0, workers.log(worker)[-3000:]
        assert took[-1] <= GRACE_S + MARGIN_S, f"stop {i} took {took[-1]:.1f}s\n{workers.log(worker)[-3000:]}"
    print(
        f"\n{STOPS} graceful stops (grace {GRACE_S}s): median {statistics.median(took):.2f}s, "
        f"max {max(took):.2f}s; all exited 0"
    )

    # Nothing was lost: the jobs a stop re-queued run on the next worker, each with one result.
    workers.start(1)
    results = [await client.result(job_id, timeout=120) for job_id in job_ids]
    assert all(r.status == "ok" for r in results)
    runs = workers.run_counts(job_ids)
    doubled = [j for j in job_ids if runs[j] != 1]
    print(f"{len(job_ids)} jobs: {len(results)} results, 0 lost, {len(doubled)} run to completion twice")
    assert not doubled
