"""A job that kills every worker that runs it, and an inference pool that breaks mid-job."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from agentq.analyses import Analysis
from agentq.settings import Settings
from agentq.sources import SourceContext, installed_sources
from agentq_tools import plugins
from agentq_tools.sources import POISON_EXIT
from producer.client import Client
from tests.helpers import enqueue_raw, eventually, progress_reached
from tests.reliability.conftest import Workers, wait_for
from worker.job.fanout import FanOut
from worker.pool import bag_of_words as inference
from worker.pool.analyses import BagOfWordsOutput
from worker.pool.executor import InferencePool, create_pool

PRODUCER = str(Path(sys.executable).with_name("producer"))


@pytest.mark.e2e
@pytest.mark.interpreter
async def test_poison_job_fails_for_good_after_max_tries(
    client: Client, workers: Workers, worker_env: dict[str, str]
) -> None:
    """A job that kills its worker every time, with a supervisor that brings each dead worker back: its first
    death (in company, so not yet its fault) and then max_tries deaths while it runs alone, then a `failed`
    result saying why; every worker it killed is back, and they serve on."""
    enabled = json.dumps(["weather", "news", "knowledge_base", "poison"])
    settings = {"AGENTQ_MAX_TRIES": "2", "AGENTQ_LEASE_S": "1", "AGENTQ_ENABLED_SOURCES": enabled, **plugins.ENV}
    workers.start(2, **settings)
    job_id = await enqueue_raw(client, {"question": "crash", "sources": ["poison"]})
    deaths: list[int | None] = []
    replaced: set[int] = set()  # the dead workers whose replacement has started (and beats)

    async def supervise() -> None:  # as compose's restart policy or a Kubernetes Deployment would
        while True:
            for proc in [p for p in workers.started if p.poll() is not None and p.pid not in replaced]:
                deaths.append(proc.returncode)
                await asyncio.to_thread(workers.start, 1, **settings)
                replaced.add(proc.pid)
            await asyncio.sleep(0.05)

    async def every_death_replaced() -> bool:
        return {p.pid for p in workers.started if p.poll() is not None} <= replaced

    supervisor = asyncio.create_task(supervise())
    try:
        result = await client.result(job_id, timeout=120)
        # Every death came before the result (the last one's lapsed lease let the job be given up), but the
        # supervisor may have been starting the previous replacement when it came: let it catch up.
        await eventually(every_death_replaced, timeout=60)
    finally:
        supervisor.cancel()
    print(f"\nfigure: poison job (max_tries 2): {len(deaths)} workers killed, each brought back; {result.errors[0]}")
    assert deaths == [POISON_EXIT] * 3
    assert result.status == "failed"
    assert "gave up after 2 tries" in result.errors[0] and "died" in result.errors[0] and "alone" in result.errors[0]

    shown = await asyncio.to_thread(
        subprocess.run,
        [PRODUCER, "result", job_id, "--json"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 1, shown.stderr
    assert "gave up after 2 tries" in json.loads(shown.stdout)["errors"][0]
    # The workers brought back go on serving.
    good = await client.enqueue("still alive?", sources=["weather", "news"])
    assert (await client.result(good, timeout=30)).status == "ok"
    assert sum(p.poll() is None for p in workers.started) == 2


@pytest.mark.e2e
@pytest.mark.interpreter
async def test_a_broken_inference_pool_is_an_error_then_replaced(client: Client, workers: Workers) -> None:
    """Pool processes killed mid-inference: those sources are `error`, the job completes, the next job runs."""
    (worker,) = workers.start(1, AGENTQ_EXECUTOR="process", AGENTQ_INFERENCE_UNITS="40000")  # ~1 s per inference
    job_id = await client.enqueue("break the pool")
    # Every source's inference is in the pool now (2 running, 1 waiting): kill the pool under them.
    await progress_reached(client, job_id, "inference_start", count=3)

    def pool_processes() -> list[psutil.Process]:
        # The pool's processes are the forkserver's children, the worker's grandchildren.
        return [c for c in psutil.Process(worker.pid).children(recursive=True) if c.ppid() != worker.pid]

    before = pool_processes()
    assert before, "the process pool has processes"
    for proc in before:
        os.kill(proc.pid, signal.SIGKILL)
    broken = await client.result(job_id, timeout=60)
    assert broken.status in ("failed", "partial")
    errors = [s.error or "" for s in broken.sources if s.status == "error"]
    assert errors and all("inference failed" in e for e in errors), broken.sources

    after = await client.result(await client.enqueue("and now?"), timeout=60)
    assert after.status == "ok"
    ran_in = {s.inference.ran_in.pid for s in after.sources if s.inference}
    assert ran_in and not ran_in & {p.pid for p in before}  # a new pool did the work
    assert worker.poll() is None
    wait_for(lambda: "inference pool broken" in workers.log(worker), timeout=5)


def explodes_on_news(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in analysis, except that it raises on the news source's text."""
    if text.startswith("News"):
        raise ValueError("model exploded")
    return inference.analyse(question, text, params)


async def test_an_inference_exception_is_that_sources_error() -> None:
    """Inference raising on one source's text: that source is `error`, the others answer, nothing propagates."""
    flaky = Analysis("explodes_on_news", explodes_on_news, BagOfWordsOutput)
    pool: InferencePool = create_pool("thread", 2)
    try:
        settings = Settings(time_scale=0.01)
        outcomes, _ = await FanOut(pool, installed_sources(), analysis=flaky, params={"units": 1}).run(
            _request("does news explode?"),
            SourceContext(settings, "job-1"),
            source_names=("weather", "news", "knowledge_base"),
            source_timeout_s=5.0,
            deadline_s=10.0,
        )
    finally:
        pool.shutdown()
    by_name = {o.name: o for o in outcomes}
    assert by_name["news"].status == "error" and "model exploded" in (by_name["news"].error or "")
    assert by_name["weather"].status == by_name["knowledge_base"].status == "ok"
    assert not pool.broken


def _request(question: str) -> object:
    from agentq.contract import QuestionRequest

    return QuestionRequest(question=question)
