"""At-least-once made safe: re-runs after SIGKILL, leases, SIGTERM, and first-result-wins writes."""

from __future__ import annotations

import json
import signal
import time

import pytest

from producer.client import Client
from tests.helpers import lose_lease, progress_reached
from tests.reliability.conftest import ONE_SECOND, Workers, alive, descendants, kill_group, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.interpreter]

SLOW = json.dumps(dict.fromkeys(("weather", "news", "knowledge_base"), ONE_SECOND))


async def test_a_job_run_twice_keeps_the_first_complete_result(client: Client, workers: Workers) -> None:
    """Two complete runs of one job id (its lease lost mid-run): one stored result, the first to finish."""
    workers.start(2, AGENTQ_SOURCE_LATENCY_S=SLOW)
    job_id = await client.enqueue("run me twice")
    await progress_reached(client, job_id, "fetch_start", count=3)  # the first run is fetching (~1 s)
    # Simulate a lost lease: the other worker sees the job as free and starts it again (try 2).
    await lose_lease(client, job_id)
    first = await client.result(job_id, timeout=30)
    runs = workers.runs_of(job_id, at_least=2)

    assert sorted(t for _, t in runs) == [1, 2], runs  # it really ran twice
    assert first.status == "ok" and first.job_try == runs[0][1]  # the stored result is the earlier finisher's
    stored = await client.fetch_result(job_id)
    assert stored == first  # the later run did not overwrite it
    # The later run's line says its result was dropped: an earlier one was stored.
    discarded = wait_for(lambda: [p for p in workers.started if "already had a result" in workers.log(p)], timeout=30)
    assert len(discarded) == 1 and first.worker_id is not None and str(discarded[0].pid) not in first.worker_id


async def test_sigkill_mid_job_another_worker_finishes_within_a_lease(client: Client, workers: Workers) -> None:
    """SIGKILL a worker mid-job: the other finishes it (try 2) within deadline + lease + margin, once."""
    lease, deadline = 1.5, 5.0
    workers.start(2, AGENTQ_SOURCE_LATENCY_S=SLOW, AGENTQ_LEASE_S=str(lease))
    job_id = await client.enqueue("who finishes me?", deadline_s=deadline)
    victim = workers.running(job_id)
    await progress_reached(client, job_id, "fetch_start", count=3)  # mid-job: its fetches (~1 s) are under way
    killed_at = time.monotonic()
    kill_group(victim)  # the worker and its pool processes, as if the machine died
    result = await client.result(job_id, timeout=60)
    recovery = time.monotonic() - killed_at

    survivor = next(p for p in workers.started if p is not victim)
    print(f"\nSIGKILL recovery: {recovery:.2f}s (lease {lease}s, job ~1s; arq's default would wait 45s+)")
    assert result.status == "ok" and result.job_try == 2
    assert result.worker_id is not None and f":{survivor.pid}:" in result.worker_id
    assert recovery < deadline + lease + 5.0
    assert [t for _, t in workers.runs_of(job_id, at_least=1)] == [2]  # the killed run never finished


async def test_a_live_job_longer_than_its_lease_is_never_taken(client: Client, workers: Workers) -> None:
    """A job running three times longer than the lease keeps it (renewed): one run, try 1."""
    slow = json.dumps(dict.fromkeys(("weather", "news", "knowledge_base"), 3 * ONE_SECOND))
    workers.start(2, AGENTQ_SOURCE_LATENCY_S=slow, AGENTQ_LEASE_S="1")
    result = await client.result(await client.enqueue("a long one"), timeout=60)
    assert result.status == "ok" and result.job_try == 1
    assert result.timing is not None and result.timing.total_s > 2.5  # it really outlived the lease
    assert [t for _, t in workers.runs_of(result.job_id, at_least=1)] == [1]


async def test_sigterm_with_grace_lets_the_running_job_finish(client: Client, workers: Workers) -> None:
    """SIGTERM with a grace period: the job in flight finishes (try 1), the worker exits 0, no child remains."""
    (worker,) = workers.start(1, AGENTQ_SOURCE_LATENCY_S=SLOW, AGENTQ_SHUTDOWN_GRACE_S="10", AGENTQ_EXECUTOR="process")
    job_id = await client.enqueue("finish me first")
    workers.running(job_id)
    await progress_reached(client, job_id, "fetch_start", count=3)  # it has begun (one not begun goes back)
    children = descendants(worker.pid)
    assert children, "a process pool has child processes"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    result = await client.fetch_result(job_id)
    assert result is not None and result.status == "ok" and result.job_try == 1
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)


async def test_sigterm_without_grace_requeues_and_another_worker_finishes(client: Client, workers: Workers) -> None:
    """SIGTERM with no grace: the job goes back on the queue, the pool is gone, the next worker runs it (try 2)."""
    (first,) = workers.start(1, AGENTQ_SOURCE_LATENCY_S=SLOW, AGENTQ_EXECUTOR="process")
    job_id = await client.enqueue("requeue me")
    workers.running(job_id)
    await progress_reached(client, job_id, "fetch_start", count=3)  # it has begun: its run is cut short
    children = descendants(first.pid)
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert await client.fetch_result(job_id) is None
    requeued = await client.redis.zscore(client.keys.queue, job_id)
    assert requeued is not None and requeued <= time.time() * 1000  # re-queued, due at once
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)

    (second,) = workers.start(1)
    result = await client.result(job_id, timeout=30)
    assert result.status == "ok" and result.job_try == 2
    assert result.worker_id is not None and f":{second.pid}:" in result.worker_id
