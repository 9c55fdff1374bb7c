"""Deduplication: an identical question in flight gets the same job id, race-free across producers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from agentq.contract import request_fingerprint
from agentq.protocol.keys import marker_field
from agentq.settings import Settings
from producer.client import Client

StartWorkers = Callable[..., list[Popen[bytes]]]
PRODUCER = str(Path(sys.executable).with_name("producer"))


def test_fingerprint_normalises_case_whitespace_and_source_order() -> None:
    """Case, runs of whitespace and source order do not matter; sources, timeouts and no_cache do."""
    client = Client(Settings())  # validation only: no connection
    base = request_fingerprint(client.validate("Will it rain  in\tParis?", sources=["news", "weather"]))
    assert base == request_fingerprint(client.validate(" will it RAIN in paris? ", sources=["weather", "news"]))
    for different in (
        client.validate("Will it rain in Paris?", sources=["news"]),
        client.validate("Will it rain in Paris?", sources=["news", "weather"], deadline_s=3.0),
        client.validate("Will it rain in Paris?", sources=["news", "weather"], source_timeout_s=1.0),
        client.validate("Will it rain in Paris?", sources=["news", "weather"], no_cache=True),
        client.validate("Will it snow in Paris?", sources=["news", "weather"]),
    ):
        assert request_fingerprint(different) != base


@pytest.mark.e2e
async def test_identical_questions_in_flight_share_one_job(client: Client) -> None:
    """With no worker the job stays queued: the same question (any case) joins it, dedup=False and a
    different question do not, and a marker naming a job no longer in the queue is replaced."""
    first = await client.submit("Will it rain in Paris?")
    again = await client.submit("  will it rain in PARIS? ")
    assert (first.deduplicated, again.deduplicated, again.job_id) == (False, True, first.job_id)
    assert await client.enqueue("Will it rain in Paris?", dedup=False) != first.job_id
    assert await client.enqueue("Will it rain in Rome?") != first.job_id
    assert await client.redis.zcard(client.keys.queue) == 3

    # A marker naming a job that has left the queue (removed by hand here) is not joined: a new job is made.
    marker = marker_field(request_fingerprint(client.validate("Will it rain in Paris?")))
    assert await client.redis.hget(client.keys.jobs, marker) == first.job_id.encode()
    await client.redis.zrem(client.keys.queue, first.job_id)
    fresh = await client.submit("Will it rain in Paris?")
    assert not fresh.deduplicated and fresh.job_id != first.job_id
    assert await client.redis.hget(client.keys.jobs, marker) == fresh.job_id.encode()


@pytest.mark.e2e
async def test_two_producers_at_once_make_one_job(settings: Settings) -> None:
    """Two clients (two connections) enqueueing the same question at the same moment, 20 times over:
    each pair gets one id, exactly one of them made the job, and the queue holds 20 jobs."""
    async with Client(settings) as a, Client(settings) as b:
        for i in range(20):
            one, two = await asyncio.gather(a.submit(f"question {i}"), b.submit(f"Question  {i}"))
            assert one.job_id == two.job_id, i
            assert sorted([one.deduplicated, two.deduplicated]) == [False, True], i
        assert await a.redis.zcard(settings.keys.queue) == 20


@pytest.mark.e2e
async def test_a_finished_job_is_not_joined_and_its_marker_is_cleared(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """The step that stores the job's result deletes its marker: the same question then makes a new job."""
    start_worker_processes(1)
    job_id = await client.enqueue("Will it rain in Paris?", sources=["weather"])
    assert (await client.result(job_id, timeout=30)).job_id == job_id
    marker = marker_field(request_fingerprint(client.validate("Will it rain in Paris?", sources=["weather"])))
    assert not await client.redis.hexists(client.keys.jobs, marker)  # cleared in the step that stored the result
    again = await client.submit("Will it rain in Paris?", sources=["weather"])
    assert not again.deduplicated and again.job_id != job_id


@pytest.mark.e2e
def test_cli_says_deduplicated_and_no_dedup_makes_a_new_job(
    settings_env: dict[str, str], worker_env: dict[str, str]
) -> None:
    """`producer ask` twice prints one id (the second says so on stderr and in --json);
    --no-dedup prints another."""

    def ask(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PRODUCER, "ask", "Is it sunny?", *extra], env=worker_env, capture_output=True, text=True, timeout=60
        )

    first, second, as_json, separate = ask(), ask(), ask("--json"), ask("--no-dedup")
    assert [p.returncode for p in (first, second, as_json, separate)] == [0, 0, 0, 0]
    assert first.stdout == second.stdout and "deduplicated" not in first.stderr
    assert "deduplicated" in second.stderr
    assert json.loads(as_json.stdout) == {"job_id": first.stdout.strip(), "deduplicated": True}
    assert separate.stdout.strip() != first.stdout.strip() and len(separate.stdout.strip()) == 32
