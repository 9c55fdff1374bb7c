"""``make soak``: a steady stream of questions for SOAK_SECONDS (default 600) through 2 real workers.

Prints throughput, enqueue->result p50/p99, jobs lost and doubled, and each worker's peak RSS.
Not part of the test suite. Knobs: SOAK_SECONDS, SOAK_RATE (jobs/s, default 10), SOAK_WORKERS (2).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]

from agentq.settings import Settings
from agentq_tools.embedded import EmbeddedRedis
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats
from producer.client import Client


async def soak(seconds: float, rate: float, worker_count: int) -> int:
    """Run the soak; return 0 when nothing was lost or doubled."""
    with EmbeddedRedis(appendonly=True) as server, tempfile.TemporaryDirectory(prefix="agentq-soak-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
        env |= {"AGENTQ_REDIS_URL": server.url, "AGENTQ_TIME_SCALE": "0.05", "AGENTQ_SOURCE_FAIL_RATE": "0.05"}
        env["AGENTQ_INFERENCE_UNITS"] = "200"  # 10 units (~15 ms of CPU) per inference: well within 2 cores
        procs = start_workers(worker_count, env, Path(tmp))
        try:
            wait_for_heartbeats(server.url, procs)
            peak = dict.fromkeys((p.pid for p in procs), 0)
            settings = Settings(redis_url=server.url, time_scale=0.05)
            async with Client(settings) as client:
                job_ids: list[str] = []
                t0 = time.monotonic()
                while (elapsed := time.monotonic() - t0) < seconds:
                    due = int(elapsed * rate) + 1 - len(job_ids)
                    for _ in range(max(0, due)):
                        job_ids.append(await client.enqueue(f"soak question {len(job_ids)}"))
                    for pid in peak:
                        proc = psutil.Process(pid)
                        rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                        peak[pid] = max(peak[pid], rss)
                    await asyncio.sleep(0.05)
                drain_until = time.monotonic() + 120
                raws: list[bytes | None] = []
                while time.monotonic() < drain_until:
                    raws = await client.redis.mget([client.keys.result(j) for j in job_ids])
                    if all(raws):
                        break
                    await asyncio.sleep(0.5)
                total = time.monotonic() - t0
                results = [client._parse(j, r) for j, r in zip(job_ids, raws, strict=True) if r is not None]
        finally:
            stop_workers(procs)
        runs = finished_runs(Path(tmp))
    latencies = sorted(
        (r.timing.finished_at - r.timing.queued_at).total_seconds() for r in results if r.timing and r.timing.queued_at
    )
    lost, doubled = len(job_ids) - len(results), sum(n > 1 for n in runs.values())
    print(
        f"soak: {seconds:g}s at {rate:g} jobs/s on {worker_count} workers: {len(job_ids)} enqueued, "
        f"{len(results)} results ({len(results) / total:.1f} jobs/s), lost (no result 2 min after the last "
        f"enqueue) {lost}, doubled {doubled}; "
        f"enqueue->result p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms; statuses "
        f"{dict(Counter(r.status for r in results))}; peak RSS per worker incl. pool (MiB): "
        + ", ".join(f"{v / 2**20:.0f}" for v in peak.values())
    )
    return 0 if lost == doubled == 0 else 1


def finished_runs(log_dir: Path) -> Counter[str]:
    """How many times each job id finished, from the workers' ``job <id> <status> in ...`` lines."""
    pattern = re.compile(r"job (\w+) \w+ in [\d.]+s \(try \d+\)")
    return Counter(m[1] for log in log_dir.glob("worker-*.log") for m in pattern.finditer(log.read_text()))


def main() -> None:
    """Entry point: ``python -m agentq_tools.soak`` (``make soak``)."""
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    rate = float(os.environ.get("SOAK_RATE", "10"))
    sys.exit(asyncio.run(soak(seconds, rate, int(os.environ.get("SOAK_WORKERS", "2")))))


if __name__ == "__main__":
    main()
