"""Redis killed -9 and restarted on the same data (AOF everysec): workers ride through, nothing is lost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentq.contract import JobResult
from agentq.errors import JobNotFound, WaitTimeout
from agentq.settings import Settings
from agentq_tools.embedded import EmbeddedRedis
from producer.client import Client
from tests.reliability.conftest import Workers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PRODUCER = str(Path(sys.executable).with_name("producer"))
JOBS = 60
#: How long the results may take after the restart before a job counts as lost.
RESULTS_WITHIN_S = 90.0


def in_the_aof(data_dir: Path, token: bytes) -> bool:
    """True once ``token`` is in the server's append-only file (Redis 7 splits it into appendonlydir/)."""
    return any(token in f.read_bytes() for f in data_dir.rglob("appendonly.aof*") if f.is_file())


async def collect(client: Client, job_ids: list[str], within: float) -> dict[str, JobResult]:
    """The results that arrive within ``within`` seconds; a job without one by then is lost."""
    give_up = time.monotonic() + within
    results: dict[str, JobResult] = {}
    for job_id in job_ids:
        try:
            results[job_id] = await client.result(job_id, timeout=max(give_up - time.monotonic(), 0.001))
        except (WaitTimeout, JobNotFound):  # never came, or the job itself is gone: lost either way
            continue
    return results


async def test_redis_crash_and_restart_loses_no_job(workers: Workers, tmp_path: Path) -> None:
    """Kill -9 Redis mid-run, restart it 2 s later: the producer gets exit 5 meanwhile, every job completes."""
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    server = EmbeddedRedis(appendonly=True, data_dir=data_dir)
    server.start()
    try:
        # ~0.5 s a job, 4 at a time: the kill comes with most of the jobs still queued or running.
        slow = json.dumps({"weather": 25, "news": 25})
        env = {"AGENTQ_REDIS_URL": server.url, "AGENTQ_MAX_JOBS": "2", "AGENTQ_SOURCE_LATENCY_S": slow}
        procs = workers.start(2, **env)
        settings = Settings(redis_url=server.url, time_scale=0.02)
        token = uuid.uuid4().hex.encode()
        async with Client(settings) as client:
            job_ids = [await client.enqueue(f"question {i}", sources=["weather", "news"]) for i in range(JOBS)]
            # Redis appends writes to the AOF in the order it ran them: once a key written after the
            # jobs is in the file, so is every job, and a kill -9 of the server cannot take them back
            # (they are in the kernel's hands; fsync, every second, matters only if the machine dies).
            await client.redis.set("test:written-after-the-jobs", token)
            await asyncio.to_thread(wait_for, lambda: in_the_aof(data_dir, token), 30)
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
        # A timed wait on purpose: the outage's length (~2 s, longer than a worker's poll and its
        # Redis retries) is the experiment, not a guess at when something has happened.
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - killed)))
        server.start()
        restarted = time.monotonic()
        outage = restarted - killed

        async with Client(settings) as client:
            results = await collect(client, job_ids, within=RESULTS_WITHIN_S)
        lost = [j for j in job_ids if j not in results]
        print(
            f"\nRedis restart: {len(results)}/{JOBS} jobs completed, {len(lost)} lost "
            f"(no result within {RESULTS_WITHIN_S:g}s of the restart); outage {outage:.1f}s, "
            f"results collected {time.monotonic() - restarted:.1f}s after the restart"
        )
        assert down.returncode == 5 and "cannot reach Redis" in down.stderr
        assert not lost, f"{len(lost)} of {JOBS} jobs lost: {lost}\n{workers.logs()}"
        assert all(r.status in ("ok", "partial") for r in results.values())
        assert all(p.poll() is None for p in procs), workers.logs()  # rode through the outage
        assert done_before < JOBS  # the outage really hit the run
        # An outage is logged as warning lines (tests/test_outage_logs.py): never a traceback.
        assert not any("Traceback" in workers.log(p) for p in procs), workers.logs()
    finally:
        server.stop()
