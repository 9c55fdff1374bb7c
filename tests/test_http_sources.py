"""HTTP sources end to end: the real mock upstream, a real redis-server and real worker processes.

Upstream latencies are real seconds (a few tenths); margins are generous because the machine is
shared and noisy. Only structure is asserted (overlap, statuses, messages, counts), never speed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen

import httpx
import pytest

from agentq.contract import JobResult, SourceOutcome
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats
from agentq_tools.upstream import MockUpstream, answer
from producer.client import Client
from worker.job.sources.http import ENDPOINTS

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]
StartUpstream = Callable[..., MockUpstream]
QUESTION = "Will it rain at the conference in Paris tomorrow?"


@pytest.fixture
def start_upstream() -> Iterator[StartUpstream]:
    """Factory: a mock upstream on a free loopback port with the given arguments; stopped afterwards."""
    started: list[MockUpstream] = []

    def start(*args: str) -> MockUpstream:
        upstream = MockUpstream(*args).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


def by_name(result: JobResult) -> dict[str, SourceOutcome]:
    return {o.name: o for o in result.sources}


async def ask(client: Client, *sources: str, **options: float) -> JobResult:
    job_id = await client.enqueue(QUESTION, sources=list(sources), **options)  # type: ignore[arg-type]
    return await client.result(job_id, timeout=60)


async def test_http_fetches_start_together_and_overlap(
    client: Client, start_worker_processes: StartWorkers, start_upstream: StartUpstream
) -> None:
    """Three HTTP fetches start at once, are in flight together at the upstream, and carry its answers."""
    latency = {"weather": 0.4, "news": 0.3, "knowledge_base": 0.5}
    upstream = start_upstream(*(a for path, s in latency.items() for a in ("--latency", f"{path}={s}")))
    start_worker_processes(1, AGENTQ_UPSTREAM_URL=upstream.url)

    result = await ask(client, "weather_api", "news_api", "knowledge_base_api")

    assert result.status == "ok", result.errors
    outcomes = by_name(result)
    starts = [o.fetch_start_s or 0.0 for o in outcomes.values()]
    ends = [o.fetch_end_s or 0.0 for o in outcomes.values()]
    assert max(starts) - min(starts) < 0.25, starts
    assert max(starts) < min(ends), "every fetch was still running when the last one started"
    endpoints = {e.source: e for e in ENDPOINTS}
    for name, outcome in outcomes.items():
        endpoint = endpoints[name]
        assert (outcome.fetch_s or 0.0) >= latency[endpoint.path] * 0.9, (name, outcome.fetch_s)
        # The text is the upstream's JSON for this question, rendered by the source: it came over HTTP.
        assert outcome.data == endpoint.body.model_validate(answer(endpoint.path, QUESTION)).text()
        assert outcome.inference is not None and outcome.inference.work_units > 0
    stats = upstream.stats()
    assert stats["max_in_flight"] == 3
    assert all(stats["endpoints"][path]["ok"] == 1 for path in latency)


async def test_upstream_errors_and_slowness_stay_local(
    client: Client, start_worker_processes: StartWorkers, start_upstream: StartUpstream
) -> None:
    """An upstream 503 makes that source `error` (status in the message), a slow one `timeout`; the job completes."""
    upstream = start_upstream(
        "--latency", "weather=0.05", "--latency", "stocks=0.05", "--latency", "geo=5", "--error-rate", "stocks=1"
    )
    start_worker_processes(1, AGENTQ_UPSTREAM_URL=upstream.url)

    result = await ask(client, "weather_api", "stocks_api", "geo_api", source_timeout_s=0.6, deadline_s=10.0)

    assert result.status == "partial"
    o = by_name(result)
    assert o["weather_api"].status == "ok" and o["weather_api"].inference is not None
    assert o["stocks_api"].status == "error"
    assert "503" in (o["stocks_api"].error or "") and "TransientSourceError" in (o["stocks_api"].error or "")
    assert o["geo_api"].status == "timeout"
    assert 0.5 <= (o["geo_api"].fetch_s or 0.0) < 4.0, o["geo_api"].fetch_s
    assert any(e.startswith("stocks_api: error:") and "503" in e for e in result.errors)
    assert any(e.startswith("geo_api: timeout") for e in result.errors)
    assert upstream.stats()["endpoints"]["stocks"].get("errors", 0) >= 1


async def test_an_oversized_upstream_answer_fails_that_source_only_and_is_not_retried(
    client: Client, start_worker_processes: StartWorkers, start_upstream: StartUpstream
) -> None:
    """A 1 MB answer makes that source a permanent `error` naming the limit, fetched once; the others answer."""
    upstream = start_upstream("--latency", "0.05", "--pad-bytes", "weather=1000000")
    start_worker_processes(1, AGENTQ_UPSTREAM_URL=upstream.url, AGENTQ_MAX_SOURCE_BYTES="65536")

    result = await ask(client, "weather_api", "news_api")

    assert result.status == "partial"
    o = by_name(result)
    assert o["weather_api"].status == "error" and o["weather_api"].data is None
    assert f"SourceError: answer over 65536 bytes from {upstream.url}/weather" in (o["weather_api"].error or "")
    assert o["news_api"].status == "ok" and o["news_api"].data
    # Permanent: no retry (AGENTQ_SOURCE_RETRIES is 2), and the limit stopped the worker, not the upstream.
    assert upstream.stats()["endpoints"]["weather"] == {"requests": 1, "ok": 1}


async def test_one_pooled_client_per_worker(
    client: Client, start_worker_processes: StartWorkers, start_upstream: StartUpstream
) -> None:
    """Each worker sends every job's requests through one client: few connections, reused across jobs."""
    upstream = start_upstream("--latency", "0.05")
    workers = start_worker_processes(2, AGENTQ_UPSTREAM_URL=upstream.url, AGENTQ_MAX_JOBS="1")
    sources = ["weather_api", "news_api", "knowledge_base_api"]

    ids = [await client.enqueue(f"{QUESTION} ({i})", sources=sources) for i in range(8)]
    results = [await client.result(job_id, timeout=60) for job_id in ids]

    assert all(r.status == "ok" for r in results), [r.errors for r in results]
    clients = {ua: c for ua, c in upstream.stats()["clients"].items() if ua.startswith("agentq/")}
    assert len(clients) == len(workers), clients
    for worker in {r.worker_id for r in results}:
        stats = next(c for ua, c in clients.items() if f"(worker {worker})" in ua)
        jobs = sum(r.worker_id == worker for r in results)
        assert stats["requests"] == len(sources) * jobs
        # One job at a time per worker: its pool never needs more than one connection per source.
        assert stats["connections"] <= len(sources), (worker, stats)
    assert sum(c["connections"] for c in clients.values()) < len(sources) * len(results)


async def test_unconfigured_http_sources_are_left_out_and_refused_clearly(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """Without an upstream the default set is the simulated sources; naming an HTTP one says what to set."""
    start_worker_processes(1)

    default = await client.result(await client.enqueue(QUESTION), timeout=60)
    named = await client.result(await client.enqueue(QUESTION, sources=["news", "news_api"]), timeout=60)

    assert default.status == "ok" and [o.name for o in default.sources] == ["weather", "news", "knowledge_base"]
    o = by_name(named)
    assert named.status == "partial" and o["news"].status == "ok"
    assert o["news_api"].status == "error" and "AGENTQ_UPSTREAM_URL" in (o["news_api"].error or "")


def test_a_default_set_that_cannot_run_stops_the_worker(worker_env: dict[str, str], tmp_path: Path) -> None:
    """AGENTQ_DEFAULT_SOURCES naming an HTTP source without a URL stops the worker at start-up, saying why."""
    bad = start_workers(1, {**worker_env, "AGENTQ_DEFAULT_SOURCES": '["weather", "geo_api"]'}, tmp_path)
    try:
        with pytest.raises(RuntimeError, match="exited"):
            wait_for_heartbeats(worker_env["AGENTQ_REDIS_URL"], bad, timeout=60)
    finally:
        stop_workers(bad)
    log = (tmp_path / "worker-0.log").read_text()
    assert "AGENTQ_DEFAULT_SOURCES" in log and "geo_api" in log


async def test_mock_upstream_latency_errors_rate_limit_and_answers(start_upstream: StartUpstream) -> None:
    """The mock upstream honours its latency, error-rate, error-status and rate-limit flags; answers are stable."""
    upstream = start_upstream(
        *("--latency", "0", "--latency", "news=0.3", "--error-rate", "knowledge_base=0.5", "--seed", "7"),
        *("--error-rate", "stocks=1", "--error-status", "502", "--rate-limit", "geo=3"),
    )
    async with httpx.AsyncClient(base_url=upstream.url, timeout=10) as http:
        assert (await http.get("/health")).json()["status"] == "ok"

        t0 = time.monotonic()
        news = await http.get("/news", params={"q": QUESTION})
        assert news.status_code == 200 and time.monotonic() - t0 >= 0.28
        assert news.json() == (await http.get("/news", params={"q": QUESTION})).json() == answer("news", QUESTION)
        assert news.json() != (await http.get("/news", params={"q": "something else"})).json()
        assert (await http.get("/news")).status_code == 400

        kb = [(await http.get("/knowledge_base", params={"q": f"q{i}"})).status_code for i in range(40)]
        assert set(kb) == {200, 502} and 8 <= kb.count(502) <= 32, kb
        assert {(await http.get("/stocks", params={"q": "x"})).status_code for _ in range(5)} == {502}

        geo = await asyncio.gather(*(http.get("/geo", params={"q": "x"}) for _ in range(10)))
        limited = [r for r in geo if r.status_code == 429]
        assert len(limited) >= 4 and sum(r.status_code == 200 for r in geo) >= 3
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)

    stats = upstream.stats()["endpoints"]
    assert stats["knowledge_base"]["errors"] == kb.count(502)
    assert stats["stocks"]["errors"] == 5
    assert stats["geo"]["rate_limited"] == len(limited)


def test_demo_asks_the_reference_question_over_http(redis_url: str) -> None:
    """`agentq-demo` (make demo) starts the mock upstream and answers the reference question from the HTTP sources."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    env |= {"AGENTQ_REDIS_URL": redis_url, "AGENTQ_POOL_SIZE": "2", "COLUMNS": "200"}
    demo = str(Path(sys.executable).with_name("agentq-demo"))
    done = subprocess.run([demo, "--time-scale", "0.05"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "started the mock upstream at http://127.0.0.1:" in done.stdout
    for name in ("weather_api", "news_api", "knowledge_base_api"):
        assert f"[{name}]" in done.stdout
    assert "speed-up" in done.stdout and "critical-path floor" in done.stdout
