"""Cancellation end to end: a queued job never starts; a running one stops its fetches at once and
discards an inference under way; whichever worker runs it; the result says ``cancelled``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import fakeredis
import pytest

from agentq.errors import JobNotFound
from agentq.protocol import records
from agentq.protocol.keys import Field, Keys, field
from agentq.settings import Settings
from producer import jobs
from producer.client import Client
from tests.helpers import eventually, progress_reached
from worker.job.cancel import DISCARDED, Cancellation, CancelRegistry, JobCancelled, _race, _recheck

StartWorkers = Callable[..., list[Popen[bytes]]]
PRODUCER = str(Path(sys.executable).with_name("producer"))
SOURCES = ["weather", "news", "knowledge_base"]


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the documented `producer` command."""
    return subprocess.run([PRODUCER, *args], env=env, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------ the script, on fakeredis
@pytest.fixture
async def fake_client(monkeypatch: pytest.MonkeyPatch) -> Client:
    """A client whose Redis is fakeredis (Lua through lupa); nothing is started."""
    c = Client(Settings(_env_file=None))  # type: ignore[call-arg]
    c._redis = fakeredis.FakeAsyncRedis()
    return c


async def test_a_queued_job_is_taken_out_and_stored_cancelled(fake_client: Client) -> None:
    """Cancelling a queued job removes it from the queue and its record, and stores a cancelled result."""
    job_id = await fake_client.enqueue("Will it rain?", sources=["weather"])
    assert await fake_client.cancel(job_id) == "cancelled"
    r = fake_client.redis
    assert await r.zscore(fake_client.keys.queue, job_id) is None
    assert not await r.hexists(fake_client.keys.jobs, job_id)
    result = await fake_client.fetch_result(job_id)
    assert result is not None and result.status == "cancelled" and result.question == "Will it rain?"
    assert await fake_client.status(job_id) == "complete"
    assert await fake_client.cancel(job_id) == "finished"
    [listed] = await fake_client.jobs(status="cancelled")
    assert (listed.job_id, listed.status) == (job_id, "cancelled")


async def test_a_running_job_gets_its_cancel_field_set_and_a_message(fake_client: Client) -> None:
    """A job a worker holds is marked and announced on the cancel channel; its result is left to the worker."""
    job_id = await fake_client.enqueue("Will it rain?")
    r, keys = fake_client.redis, fake_client.keys
    await r.hset(keys.jobs, field(job_id, Field.HOLDER), "a-worker")
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.cancel_channel)
    assert await fake_client.cancel(job_id) == "cancelling"
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message:
            break
    await pubsub.aclose()
    assert message is not None and message["data"] == job_id.encode()
    assert await r.hget(keys.jobs, field(job_id, Field.CANCEL)) == b"1"
    assert await r.exists(keys.result(job_id)) == 0 and await r.hexists(keys.jobs, job_id)


async def test_an_unknown_job_cannot_be_cancelled(fake_client: Client) -> None:
    """An id that is neither queued, running nor finished raises JobNotFound and writes nothing."""
    with pytest.raises(JobNotFound):
        await fake_client.cancel("nope")
    assert await fake_client.redis.dbsize() == 0


def test_the_cancelled_result_record_reads_back() -> None:
    """The result record the producer stores is one the client (and arq's format) reads."""
    raw = records.encode_result(
        "j", "f", ({"question": "q"},), {}, job_try=None, enqueue_ms=1, success=True, result={"a": 1},
        start_ms=2, finish_ms=3, queue_name="q",
    )  # fmt: skip
    record = records.decode_result(raw)
    assert (record.result, record.args, record.start_ms, record.job_id) == ({"a": 1}, ({"question": "q"},), 2, "j")
    assert jobs.FINAL_STATUSES[-1] == "cancelled"


# ------------------------------------------------------------------------------ end to end
@pytest.mark.e2e
@pytest.mark.interpreter
async def test_a_cancelled_queued_job_never_starts(
    client: Client, worker_env: dict[str, str], start_worker_processes: StartWorkers
) -> None:
    """`producer cancel` on a queued job prints cancelled; a worker started afterwards never runs it."""
    job_id = await client.enqueue("Will it rain in Paris tomorrow?", sources=SOURCES)
    done = producer(worker_env, "cancel", job_id)
    assert (done.returncode, done.stdout.strip()) == (0, "cancelled"), done.stderr
    start_worker_processes(1)
    after = await client.enqueue("Is the launch on time?", sources=["weather"])
    assert (await client.result(after, timeout=30)).status == "ok"  # the worker has polled the queue since
    result = await client.result(job_id, timeout=1)
    assert result.status == "cancelled" and result.errors == ["cancelled while queued"] and result.worker_id is None
    assert not await client.redis.exists(client.keys.progress(job_id)), "the job never started"
    again = producer(worker_env, "cancel", job_id, "--json")
    assert json.loads(again.stdout) == {"job_id": job_id, "cancel": "finished"}


@pytest.mark.e2e
@pytest.mark.interpreter
async def test_a_running_jobs_fetches_stop_at_once_whichever_worker_runs_it(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """With two workers, a job whose slow fetch runs is cancelled within a second; the finished source keeps
    its answer, the slow one says cancelled, and the result says cancelled."""
    # knowledge_base takes 4 s (200 x 0.02); the others ~0.04 s.
    start_worker_processes(2, AGENTQ_SOURCE_LATENCY_S='{"knowledge_base": 200}', AGENTQ_SOURCE_RETRIES="0")
    job_id = await client.enqueue("Will it rain in Paris tomorrow?", sources=SOURCES)
    await progress_reached(client, job_id, "done", count=2)
    asked = time.monotonic()
    assert await client.cancel(job_id) == "cancelling"
    result = await client.result(job_id, timeout=10)
    took = time.monotonic() - asked
    assert took < 2.0, f"the result came {took:.2f}s after the cancel, as if it waited for the 4 s fetch"
    by_name = {o.name: o for o in result.sources}
    assert result.status == "cancelled"
    assert by_name["weather"].status == "ok" and by_name["weather"].inference is not None
    assert by_name["knowledge_base"].status == "cancelled"
    assert by_name["knowledge_base"].error == "cancelled during fetch"
    assert "knowledge_base: cancelled: cancelled during fetch" in result.errors

    async def marker_gone() -> bool:
        return not await client.redis.hexists(client.keys.jobs, field(job_id, Field.CANCEL))

    await eventually(marker_gone, timeout=5)  # removed once the job has ended
    [listed] = await client.jobs(status="cancelled")
    assert listed.job_id == job_id and listed.sources["weather"][0] == "ok"


@pytest.mark.e2e
@pytest.mark.interpreter
async def test_an_inference_under_way_is_discarded(client: Client, start_worker_processes: StartWorkers) -> None:
    """Cancelled during a long inference, the job answers at once and the source's output is discarded."""
    start_worker_processes(1, AGENTQ_INFERENCE_UNITS="200000")  # 4,000 units: about 5 s of CPU
    job_id = await client.enqueue("Will it rain in Paris tomorrow?", sources=["weather"])
    await progress_reached(client, job_id, "inference_start")
    asked = time.monotonic()
    assert await client.cancel(job_id) == "cancelling"
    result = await client.result(job_id, timeout=10)
    assert time.monotonic() - asked < 2.5  # not the ~5 s the inference takes
    [weather] = result.sources
    assert (result.status, weather.status, weather.error, weather.inference) == (
        "cancelled",
        "cancelled",
        DISCARDED,
        None,
    )
    assert weather.fetch_end_s is not None and weather.inference_submit_s is not None


@pytest.mark.e2e
@pytest.mark.interpreter
async def test_a_worker_that_missed_the_message_sees_the_cancel_field(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """A job whose cancel field is set when a worker takes it (the message was missed) does not fan out."""
    job_id = await client.enqueue("Will it rain in Paris tomorrow?", sources=SOURCES)
    await client.redis.hset(client.keys.jobs, field(job_id, Field.CANCEL), "1")
    start_worker_processes(1)
    result = await client.result(job_id, timeout=30)
    assert (result.status, result.errors, result.sources) == ("cancelled", ["cancelled before it started"], [])
    assert result.worker_id is not None


# ------------------------------------------------------------------------------ the worker's side, in-process
async def test_the_race_returns_the_work_or_cancels_it_at_once() -> None:
    """Work that ends first is returned; a cancel set meanwhile cancels the work where it waits and raises; a
    cancel already set never starts it; a cancel of the caller from outside goes through as a cancel, and the
    work is cancelled with it."""
    cancellation = Cancellation()
    assert await _race(asyncio.sleep(0, result="done"), cancellation, lambda: JobCancelled("x")) == "done"

    started, unwound = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            unwound.set()
        return "late"

    racing = asyncio.ensure_future(_race(slow(), cancellation, lambda: JobCancelled("cancelled")))
    await started.wait()
    cancellation.set()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(racing, 1)
    assert unwound.is_set()
    with pytest.raises(JobCancelled):
        await _race(slow(), cancellation, lambda: JobCancelled("before"))

    started.clear()
    unwound.clear()
    outer = asyncio.ensure_future(_race(slow(), Cancellation(), lambda: JobCancelled("never")))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert unwound.is_set()


async def test_a_missed_message_is_caught_up_from_the_cancel_fields(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    """On (re)subscribing, the listener cancels every running job whose cancel field is set, and only those."""
    keys = Keys("agentq")
    registry = CancelRegistry()
    marked, unmarked = registry.register("a"), registry.register("b")
    await fake_redis.hset(keys.jobs, field("a", Field.CANCEL), "1")
    await _recheck({"redis": fake_redis, "keys": keys, "cancels": registry})  # type: ignore[typeddict-item]
    assert marked.is_set() and not unmarked.is_set()
    assert registry.cancel("b") and not registry.cancel("unknown")
