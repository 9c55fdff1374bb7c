"""Prometheus metrics and JSON logs: unit checks of the counters, then a real worker scraped over loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import io
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agentq.contract import JobResult, SourceOutcome
from agentq.protocol.keys import Keys
from producer.client import Client
from tests.helpers import enqueue_raw
from worker.ops import logs, metrics


def sample(name: str, **labels: str) -> float:
    """The current value of one sample in this process's registry (0 if absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_pool_backlog_counts_tasks_not_yet_started() -> None:
    """With one busy pool worker, three more submitted tasks are the pool's queue depth."""
    release = threading.Event()
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(release.wait, 10) for _ in range(4)]
        time.sleep(0.05)
        assert metrics.pool_backlog(pool) == 3
        release.set()
        cf.wait(futures)
        assert metrics.pool_backlog(pool) == 0


def test_observe_job_counts_status_duration_fetches_and_fetch_failures() -> None:
    """A partial job: one count, one duration, a fetch sample per fetched source, failures by reason."""
    before = {
        "partial": sample("agentq_jobs_total", status="partial"),
        "duration": sample("agentq_job_duration_seconds_count", status="partial"),
        "weather": sample("agentq_source_fetch_seconds_count", source="weather"),
        "news_timeout": sample("agentq_source_failures_total", source="news", reason="timeout"),
        "kb_error": sample("agentq_source_failures_total", source="knowledge_base", reason="error"),
    }
    result = JobResult(
        job_id="j1",
        question="q",
        status="partial",
        sources=[
            SourceOutcome(name="weather", status="ok", data="sun", fetch_s=0.2),
            SourceOutcome(name="news", status="timeout", fetch_s=5.0),
            # fetched fine, inference failed: not a fetch failure
            SourceOutcome(name="knowledge_base", status="error", data="text", fetch_s=0.3),
        ],
    )
    metrics.observe_job(result, 1.5)
    assert sample("agentq_jobs_total", status="partial") == before["partial"] + 1
    assert sample("agentq_job_duration_seconds_count", status="partial") == before["duration"] + 1
    assert sample("agentq_source_fetch_seconds_count", source="weather") == before["weather"] + 1
    assert sample("agentq_source_failures_total", source="news", reason="timeout") == before["news_timeout"] + 1
    assert sample("agentq_source_failures_total", source="knowledge_base", reason="error") == before["kb_error"]


def test_json_log_lines_carry_the_job_id_of_their_task() -> None:
    """In JSON format every line is one object with the job id of the task that logged it, '-' outside jobs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.JobContextFilter("w-1"))
    log = logging.getLogger("test_metrics.json")
    log.addHandler(handler)
    log.propagate = False

    async def job(job_id: str) -> None:
        logs.current_job_id.set(job_id)
        await asyncio.to_thread(log.warning, "from a thread of %s", job_id)

    async def main() -> None:
        await asyncio.gather(job("job-a"), job("job-b"))

    try:
        asyncio.run(main())
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted((r["job_id"], r["message"]) for r in lines) == [
        ("-", "outside"),
        ("job-a", "from a thread of job-a"),
        ("job-b", "from a thread of job-b"),
    ]
    assert {r["worker_id"] for r in lines} == {"w-1"} and {r["level"] for r in lines} == {"WARNING"}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fetch /metrics over loopback and index every sample by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metrics_port(url: str, pid: int) -> int:
    """The metrics port a worker published in its heartbeat."""
    client = redis.Redis.from_url(url)
    try:
        records = [json.loads(client.get(k) or b"{}") for k in client.scan_iter(match=Keys("agentq").workers_pattern)]
    finally:
        client.close()
    return int(next(r["metrics_port"] for r in records if r["pid"] == pid))


@pytest.mark.e2e
async def test_worker_serves_metrics_and_json_logs_for_a_real_job(
    start_worker_processes: Callable[..., list[Popen[bytes]]],
    client: Client,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A real worker: /metrics counts the job, its fetches, the failed source and queue depth; logs are JSON."""
    (proc,) = start_worker_processes(
        1,
        AGENTQ_METRICS_PORT="0",
        AGENTQ_LOG_FORMAT="json",
        AGENTQ_SOURCE_FAIL='["news"]',
        AGENTQ_QUEUE_DEPTH_INTERVAL_S="0.1",
    )
    port = metrics_port(worker_env["AGENTQ_REDIS_URL"], proc.pid)
    job_id = await client.enqueue("Will it rain in Paris tomorrow?")
    result = await client.result(job_id, timeout=60)
    assert result.status == "partial"

    # The worker hears that its result is stored a round trip after the caller does; then it logs the
    # job's line and counts the job out of flight. Wait for both rather than race them.
    give_up = time.monotonic() + 10
    while f"job {job_id} partial" not in (log := (tmp_path / "worker-0.log").read_text()):
        assert time.monotonic() < give_up, log[-3000:]
        await asyncio.sleep(0.05)

    # A deferred job stays in the queue's sorted set: the gauge must show it.
    await enqueue_raw(client, {"question": "later"}, defer_s=60)
    give_up = time.monotonic() + 10
    depth, in_flight = ("agentq_queue_depth", ()), ("agentq_jobs_in_flight", ())
    while (values := await asyncio.to_thread(scrape, port))[depth] != 1 or values[in_flight] != 0:
        assert time.monotonic() < give_up, f"queue depth {values[depth]} (1 expected), in flight {values[in_flight]}"
        await asyncio.sleep(0.1)

    assert values[("agentq_jobs_total", (("status", "partial"),))] == 1
    assert values[("agentq_job_duration_seconds_count", (("status", "partial"),))] == 1
    for source in ("weather", "news", "knowledge_base"):
        assert values[("agentq_source_fetch_seconds_count", (("source", source),))] == 1
    assert values[("agentq_source_failures_total", (("reason", "error"), ("source", "news")))] == 1
    assert ("agentq_source_failures_total", (("reason", "error"), ("source", "weather"))) not in values
    assert values[("agentq_pool_size", ())] == 2
    assert values[("agentq_jobs_in_flight", ())] == 0
    assert values[("agentq_pool_queue_depth", ())] == 0

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [r for r in lines if r["job_id"] == job_id]
    assert any(f"job {job_id} partial" in r["message"] for r in mine)
    assert all(r["worker_id"].split(":")[1] == str(proc.pid) for r in lines)
