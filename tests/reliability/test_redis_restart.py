"""Redis killed -9 and restarted on the same data (AOF everysec): workers ride through, nothing is lost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentq.settings import Settings
from agentq_tools.embedded import EmbeddedRedis
from producer.client import Client
from tests.reliability.conftest import Workers

pytestmark = pytest.mark.e2e
PRODUCER = str(Path(sys.executable).with_name("producer"))
JOBS = 60


async def test_redis_crash_and_restart_loses_no_job(workers: Workers, tmp_path: Path) -> None:
    """Kill -9 Redis mid-run, restart it 2 s later: the producer gets exit 5 meanwhile, every job completes."""
    server = EmbeddedRedis(appendonly=True, data_dir=tmp_path / "redis-data")
    (tmp_path / "redis-data").mkdir()
    server.start()
    try:
        # ~0.5 s a job, 4 at a time: the kill comes with most of the jobs still queued or running.
        slow = json.dumps({"weather": 25, "news": 25})
        env = {"AGENTQ_REDIS_URL": server.url, "AGENTQ_MAX_JOBS": "2", "AGENTQ_SOURCE_LATENCY_S": slow}
        procs = workers.start(2, **env)
        settings = Settings(redis_url=server.url, time_scale=0.02)
        async with Client(settings) as client:
            job_ids = [await client.enqueue(f"question {i}", sources=["weather", "news"]) for i in range(JOBS)]
        await asyncio.sleep(1.5)  # appendfsync everysec: everything enqueued is on disk now

        async with Client(settings) as client:
            done_before = sum([await client.fetch_result(j) is not None for j in job_ids])
        server.kill()
        killed = time.monotonic()
        down = await asyncio.to_thread(
            subprocess.run,
            [PRODUCER, "ask", "anyone there?"],
            env={**workers.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - killed)))
        server.start()
        restarted = time.monotonic()
        outage = restarted - killed

        async with Client(settings) as client:
            results = {}
            for job_id in job_ids:
                results[job_id] = await client.result(job_id, timeout=90)
        print(
            f"\nRedis restart: {len(results)}/{JOBS} jobs completed, {JOBS - len(results)} lost; "
            f"outage {outage:.1f}s, last result {time.monotonic() - restarted:.1f}s after the restart"
        )
        assert down.returncode == 5 and "cannot reach Redis" in down.stderr
        assert len(results) == JOBS and all(r.status in ("ok", "partial") for r in results.values())
        assert all(p.poll() is None for p in procs), workers.logs()  # rode through the outage
        assert done_before < JOBS  # the outage really hit the run
    finally:
        server.stop()
