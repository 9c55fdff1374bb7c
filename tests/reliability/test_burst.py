"""A burst: 2,000 jobs at once on 2 workers with random source faults. Nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from agentq.contract import JobResult
from producer.client import Client
from tests.reliability.conftest import Workers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
JOBS = int(os.environ.get("AGENTQ_BURST_JOBS", "2000"))
FIGURES = Path(__file__).with_name("burst-figures.txt")


class RssSampler(threading.Thread):
    """Samples the resident memory of each worker (with its pool processes) until stopped."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for pid in self.pids:
                try:
                    proc = psutil.Process(pid)
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                except psutil.Error:
                    continue
                self.peak[pid] = max(self.peak[pid], rss)


@pytest.mark.timeout(300)  # above the 240 s the test itself waits for stragglers
async def test_burst_of_jobs_all_complete_once(client: Client, workers: Workers) -> None:
    """2,000 jobs enqueued at once: 2,000 results, each run exactly once, bounded memory; figures printed."""
    procs = workers.start(
        2,
        AGENTQ_TIME_SCALE="0.01",
        AGENTQ_INFERENCE_UNITS="100",  # one unit (1,000 token hashes) per inference
        AGENTQ_SOURCE_FAIL_RATE="0.2",
        AGENTQ_MAX_JOBS="16",
        AGENTQ_POOL_SIZE="1",
    )
    sampler = RssSampler([p.pid for p in procs])
    sampler.start()
    t0 = time.monotonic()
    job_ids: list[str] = []
    for start in range(0, JOBS, 200):
        batch = [client.enqueue(f"burst question {i}") for i in range(start, min(JOBS, start + 200))]
        job_ids += await asyncio.gather(*batch)
    enqueued_s = time.monotonic() - t0

    results: dict[str, JobResult] = {}
    give_up = time.monotonic() + 240
    while len(results) < JOBS and time.monotonic() < give_up:
        missing = [j for j in job_ids if j not in results]
        for job_id, raw in zip(missing, await client.redis.mget([client.keys.result(j) for j in missing]), strict=True):
            if raw is not None:
                results[job_id] = client._parse(job_id, raw)
        await asyncio.sleep(0.2)
    total_s = time.monotonic() - t0
    sampler.done.set()
    sampler.join()

    runs = workers.run_counts(job_ids)
    latencies = sorted(
        (r.timing.finished_at - r.timing.queued_at).total_seconds()
        for r in results.values()
        if r.timing and r.timing.queued_at
    )
    statuses = Counter(r.status for r in results.values())
    faults = sum(1 for r in results.values() for s in r.sources if s.status == "error")
    peak_mb = {pid: rss / 2**20 for pid, rss in sampler.peak.items()}
    figures = (
        f"burst: {JOBS} jobs, 2 workers, fail rate 0.2: {len(results)} results, lost {JOBS - len(results)}, "
        f"doubled {sum(n > 1 for n in runs.values())}; enqueue {enqueued_s:.1f}s, all done {total_s:.1f}s "
        f"({len(results) / total_s:.0f} jobs/s); enqueue->result p50 {statistics.median(latencies):.2f}s "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))]:.2f}s; statuses {dict(statuses)}; "
        f"injected source faults {faults}; peak RSS per worker incl. pool (MiB) "
        + ", ".join(f"{mb:.0f}" for mb in peak_mb.values())
    )
    print("\n" + figures)
    FIGURES.write_text(figures + "\n")

    assert len(results) == JOBS and set(results) == set(job_ids)
    assert all(r.job_id == job_id for job_id, r in results.items())
    assert set(runs) == set(job_ids) and max(runs.values()) == 1  # every job ran exactly once
    assert all(r.job_try == 1 for r in results.values())
    assert faults > 0 and statuses["partial"] > 0  # the faults really happened, and stayed local
    assert all(p.poll() is None for p in procs)
    assert max(peak_mb.values()) < 1024  # bounded: a leak over 2,000 jobs would show here
