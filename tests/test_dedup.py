"""Deduplication: an identical question in flight gets the same job id, race-free across producers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from agentq import wire
from agentq.contract import request_fingerprint
from agentq.keys import Keys
from agentq.settings import Settings
from producer.client import Client
from producer.enqueue import Enqueued, Enqueuer

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
    different question do not, the marker expires no sooner than its job, and a marker naming a
    vanished job is replaced."""
    first = await client.submit("Will it rain in Paris?")
    again = await client.submit("  will it rain in PARIS? ")
    assert (first.deduplicated, again.deduplicated, again.job_id) == (False, True, first.job_id)
    assert await client.enqueue("Will it rain in Paris?", dedup=False) != first.job_id
    assert await client.enqueue("Will it rain in Rome?") != first.job_id
    assert await client.redis.zcard(client.settings.queue_name) == 3

    # The marker outlives its job (its keys deleted by hand): the next ask must not join a ghost.
    marker = client.keys.inflight(request_fingerprint(client.validate("Will it rain in Paris?")))
    assert (await client.redis.get(marker)).decode() == first.job_id
    # It expires no sooner than the job key (arq's job lifetime, a day), far past the old fixed 300 s:
    # however long the backlog, a question still queued is joined.
    marker_expiry, job_expiry = (
        await client.redis.pexpiretime(marker),
        await client.redis.pexpiretime(Keys.job(first.job_id)),
    )
    assert marker_expiry >= job_expiry > 0
    assert await client.redis.pttl(marker) > 3_600_000 and wire.JOB_EXPIRY_MS == 86_400_000
    await client.redis.zrem(client.settings.queue_name, first.job_id)
    await client.redis.delete(Keys.job(first.job_id))
    fresh = await client.submit("Will it rain in Paris?")
    assert not fresh.deduplicated and fresh.job_id != first.job_id
    assert (await client.redis.get(marker)).decode() == fresh.job_id


@pytest.mark.e2e
async def test_two_producers_at_once_make_one_job(settings: Settings) -> None:
    """Two clients (two connections) enqueueing the same question at the same moment, 20 times over:
    each pair gets one id, exactly one of them made the job, and the queue holds 20 jobs."""
    async with Client(settings) as a, Client(settings) as b:
        for i in range(20):
            one, two = await asyncio.gather(a.submit(f"question {i}"), b.submit(f"Question  {i}"))
            assert one.job_id == two.job_id, i
            assert sorted([one.deduplicated, two.deduplicated]) == [False, True], i
        assert await a.redis.zcard(settings.queue_name) == 20


@pytest.mark.e2e
async def test_a_finished_job_is_not_joined_and_its_marker_is_cleared(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """Once the job has finished, the worker deletes its marker and the same question is a new job."""
    start_worker_processes(1)
    job_id = await client.enqueue("Will it rain in Paris?", sources=["weather"])
    assert (await client.result(job_id, timeout=30)).job_id == job_id
    marker = client.keys.inflight(request_fingerprint(client.validate("Will it rain in Paris?", sources=["weather"])))
    for _ in range(100):  # the worker clears it just after storing the result
        if not await client.redis.exists(marker):
            break
        await asyncio.sleep(0.05)
    assert not await client.redis.exists(marker)
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


async def test_the_enqueue_script_writes_the_job_its_marker_and_a_ring_or_joins_the_job_in_flight(
    fake_redis: Any,
) -> None:
    """One script: a new job's record (arq's format and expiry), queue entry, marker and doorbell ring;
    the same marker then joins it, moving it up for a higher priority only while it is queued; once the
    job has a result the marker is taken over by a new job. Each new job gets its listing entry and
    a place in the capped recent-jobs index."""
    keys, queue = Keys("agentq"), "agentq:queue"
    enqueue = Enqueuer(fake_redis)
    marker = keys.inflight("f" * 64)
    now = time.time() * 1000

    async def submit(job_id: str, score: float) -> Enqueued:
        record = wire.encode_job("answer_question", ({"question": "q"},), {}, round(now))
        return await enqueue(
            job_id=job_id,
            record=record,
            queue=queue,
            bell=keys.bell(queue),
            score=score,
            now_ms=round(now),
            marker=marker,
            summary=keys.summary(job_id),
            summary_fields={"question": "q", "priority": "normal", "enqueued_ms": str(round(now))},
            index=keys.jobs_index,
            index_score=now,
            index_size=2,
        )

    assert await submit("a", now) == Enqueued("a", deduplicated=False)
    assert await fake_redis.hgetall(keys.summary("a")) == {
        b"question": b"q",
        b"priority": b"normal",
        b"enqueued_ms": str(round(now)).encode(),
    }
    assert 86_300_000 < await fake_redis.pttl(keys.summary("a")) <= wire.JOB_EXPIRY_MS
    assert await fake_redis.zrange(keys.jobs_index, 0, -1) == [b"a"]
    assert await fake_redis.get(marker) == b"a" and await fake_redis.zscore(queue, "a") == now
    assert 86_300_000 < await fake_redis.pttl(Keys.job("a")) <= wire.JOB_EXPIRY_MS
    assert await fake_redis.zrange(keys.bell(queue), 0, -1) == [b"ring"]

    assert await submit("b", now + 1000) == Enqueued("a", deduplicated=True)  # lower priority: left alone
    assert await fake_redis.zscore(queue, "a") == now and not await fake_redis.exists(Keys.job("b"))
    assert await submit("c", now - 300_000) == Enqueued("a", deduplicated=True)  # higher: moved up
    assert await fake_redis.zscore(queue, "a") == now - 300_000
    await fake_redis.set(Keys.in_progress("a"), b"1")
    await fake_redis.zadd(queue, {"a": now + 10_000})  # running: its lease score
    assert await submit("d", now - 600_000) == Enqueued("a", deduplicated=True)
    assert await fake_redis.zscore(queue, "a") == now + 10_000  # a running job is never moved

    await fake_redis.set(Keys.result("a"), b"{}")
    assert await submit("e", now) == Enqueued("e", deduplicated=False)
    assert await fake_redis.get(marker) == b"e"
    # Only new jobs are listed (b, c and d joined a), and the index keeps its newest 2 entries.
    assert not await fake_redis.exists(keys.summary("b"), keys.summary("c"), keys.summary("d"))
    await submit("f", now + 1)  # its own marker now names e, still unfinished: joins
    await fake_redis.set(Keys.result("e"), b"{}")
    await submit("g", now + 2)
    assert await fake_redis.zrange(keys.jobs_index, 0, -1) == [b"e", b"g"]
