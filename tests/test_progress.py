"""Live progress: the worker's per-source events reach the client in order, live and replayed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from agentq.contract import ProgressEvent, SourceOutcome
from agentq.errors import JobNotFound, WaitTimeout
from agentq.protocol.keys import Keys
from producer import client as client_module
from producer.client import Client, parse_events
from tests.helpers import eventually
from worker.job.progress import ProgressPublisher, ProgressWriter

StartWorkers = Callable[..., list[Popen[bytes]]]
SOURCES = ["weather", "news", "knowledge_base"]
PRODUCER = str(Path(sys.executable).with_name("producer"))


@pytest.mark.e2e
async def test_events_arrive_in_order_and_a_late_watcher_gets_them_all(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """Per source fetch_start < fetch_end < inference_start < done, every fetch starts before any source
    is done, job_done comes last and after the result is stored, and a late watcher replays it all."""
    # knowledge_base answers in 0.4 s (20 x 0.02), the others in ~0.04 s.
    start_worker_processes(1, AGENTQ_SOURCE_LATENCY_S='{"knowledge_base": 20}')
    job_id = await client.enqueue("Will it rain in Paris tomorrow?", sources=SOURCES)

    live = [event async for event in client.progress(job_id, timeout=30)]
    assert await client.fetch_result(job_id) is not None, "job_done must follow the stored result"
    late = [event async for event in client.progress(job_id, timeout=5)]

    kinds = [(e.source, e.event) for e in live]
    assert kinds[-1] == (None, "job_done") and live[-1].status == "ok"
    assert sorted(kinds[:-1]) == sorted(
        (s, k) for s in SOURCES for k in ("fetch_start", "fetch_end", "inference_start", "done")
    )
    for source in SOURCES:
        mine = [e.event for e in live if e.source == source]
        assert mine == ["fetch_start", "fetch_end", "inference_start", "done"], (source, mine)
        assert [e for e in live if e.source == source][-1].status == "ok"
    first_done = next(i for i, e in enumerate(live) if e.event == "done")
    assert {e.source for e in live[:first_done] if e.event == "fetch_start"} == set(SOURCES)
    assert live[-2].source == "knowledge_base", "the slow source finishes last"
    assert [e.t for e in live] == sorted(e.t for e in live)
    fetch_start = next(e for e in live if e.event == "fetch_start")
    assert isinstance(fetch_start.detail.get("timeout_s"), float)
    assert late == live


@pytest.mark.e2e
async def test_waiters_are_woken_when_the_job_finishes_not_at_the_next_recheck(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """result() and the progress iterator, both waiting on a running job, return within 0.5 s of the
    job's finished_at: well inside the client's 1 s recheck, so they were woken, not polling.

    The wait starts while the job is still fetching (its finished_at is later than the call, so the
    first look found nothing) and it ends ~0.25 s later. Measured: woken ~5 ms after finished_at;
    with the wake-up disabled (recheck only) ~0.7 s."""
    # knowledge_base answers in 0.2 s (10 x 0.02).
    start_worker_processes(1, AGENTQ_SOURCE_LATENCY_S='{"knowledge_base": 10}')
    job_id = await client.enqueue("Is the launch on time?", sources=["knowledge_base"])
    for _ in range(3000):  # until a worker has taken it
        if await client.status(job_id) != "queued":
            break
        await asyncio.sleep(0.01)

    async def wait_result() -> datetime:
        await client.result(job_id, timeout=30)
        return datetime.now(UTC)

    async def follow_progress() -> datetime:
        events = [e async for e in client.progress(job_id, timeout=30)]
        assert events[-1].event == "job_done"
        return datetime.now(UTC)

    called = datetime.now(UTC)
    result_back, progress_back = await asyncio.gather(wait_result(), follow_progress())
    stored = await client.fetch_result(job_id)
    assert stored is not None and stored.status == "ok"
    finished = stored.timing.finished_at
    assert called < finished, "the job finished before the wait began: nothing was measured"
    assert client_module._RECHECK_S == 1.0
    for returned in (result_back, progress_back):
        assert timedelta(0) <= returned - finished < timedelta(seconds=0.5), returned - finished


@pytest.mark.e2e
async def test_progress_ends_for_failed_or_unknown_jobs_and_times_out(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """An unknown id raises JobNotFound at once; a queued job with no worker times out; a source that
    fails shows its error in its fetch_end and done events."""
    with pytest.raises(JobNotFound):
        [e async for e in client.progress("no-such-job", timeout=5)]
    queued = await client.enqueue("nobody is working yet")
    with pytest.raises(WaitTimeout):
        [e async for e in client.progress(queued, timeout=0.3)]

    start_worker_processes(1, AGENTQ_SOURCE_FAIL='["news"]')
    failing = await client.enqueue("Will it rain?", sources=["news", "weather"])
    events = [e async for e in client.progress(failing, timeout=30)]
    news = [e for e in events if e.source == "news"]
    assert [e.event for e in news] == ["fetch_start", "fetch_end", "done"]
    assert news[-1].status == "error" and news[-1].error and news[1].status == "error"
    assert events[-1].event == "job_done" and events[-1].status == "partial"
    queued_events = [e async for e in client.progress(queued, timeout=30)]
    assert queued_events[-1].event == "job_done"


async def test_publisher_never_blocks_writes_in_batches_and_hands_over_its_tail(fake_redis: Any) -> None:
    """on_event only notes the event; what arrives within WRITE_DELAY_S is written as one entry, the first
    write setting the expiry; tail() hands over what is unwritten (cancelling the pending write) with
    job_done and requeued events, for the finish script."""
    keys = Keys("agentq")
    publisher = ProgressPublisher(fake_redis, keys, "job1", 60)
    outcome = SourceOutcome(name="weather", timeout_s=1.0)
    for kind in ("fetch_start", "fetch_end"):
        publisher.on_event(kind, outcome)
    assert await fake_redis.exists(keys.progress("job1")) == 0  # nothing written synchronously
    writer = ProgressWriter.of(fake_redis)
    assert writer._timer is not None  # one write is scheduled, WRITE_DELAY_S from the first event
    ((_, fields),) = await eventually(lambda: fake_redis.xrange(keys.progress("job1")), timeout=10)
    assert [e.event for e in parse_events(fields)] == ["fetch_start", "fetch_end"]
    assert 0 < await fake_redis.ttl(keys.progress("job1")) <= 60

    for kind in ("inference_start", "done"):
        publisher.on_event(kind, outcome)
    tail = await publisher.tail()  # before the delay: the pending write is cancelled, its events handed over
    assert "job1" not in writer._dirty  # nothing of this job is left for the writer
    assert len(await fake_redis.xrange(keys.progress("job1"))) == 1
    assert [ProgressEvent.model_validate_json(e).event for e in tail.pending] == ["inference_start", "done"]
    assert ProgressEvent.model_validate_json(tail.job_done).event == "job_done"
    assert ProgressEvent.model_validate_json(tail.requeued).event == "requeued" and tail.logged


async def test_a_job_over_before_its_first_write_logs_nothing(fake_redis: Any) -> None:
    """Events noted but never written (the job ended within WRITE_DELAY_S) are dropped with the tail: nothing
    is logged at all; watchers are told from the result."""
    keys = Keys("agentq")
    publisher = ProgressPublisher(fake_redis, keys, "quick", 60)
    publisher.on_event("fetch_start", SourceOutcome(name="weather"))
    tail = await publisher.tail()
    assert "quick" not in ProgressWriter.of(fake_redis)._dirty  # nothing left to write
    assert (tail.logged, tail.pending, tail.job_done) == (False, [], "")
    assert not await fake_redis.exists(keys.progress("quick"))


def test_a_progress_entry_holds_one_event_or_a_list() -> None:
    """Readers take an entry's "e" as one event (older workers) or a list of them; bad ones are skipped."""
    one = {"job_id": "j", "event": "fetch_start", "t": 0.1, "source": "news"}
    assert [e.event for e in parse_events({b"e": json.dumps(one).encode()})] == ["fetch_start"]
    two = [one, {**one, "event": "fetch_end"}, {"event": "nonsense"}]
    assert [e.event for e in parse_events({b"e": json.dumps(two).encode()})] == ["fetch_start", "fetch_end"]
    assert parse_events({b"e": b"not json"}) == []


@pytest.mark.e2e
def test_cli_ask_wait_shows_bars_and_exits_0(worker_env: dict[str, str], start_worker_processes: StartWorkers) -> None:
    """`producer ask --wait` at a (forced) terminal draws a bar per source, then prints the result and
    exits 0; --json draws no bars; --no-cache and --priority are accepted."""
    start_worker_processes(1)
    tty = {**worker_env, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    args = ["ask", "Will it rain in Paris?", "--sources", "weather,news", "--wait", "--timeout", "60"]
    shown = subprocess.run([PRODUCER, *args], env=tty, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "OK" in shown.stdout and "Sources" in shown.stdout
    assert "weather" in shown.stderr and "news" in shown.stderr and "fetch" in shown.stderr, shown.stderr

    plain = {k: v for k, v in worker_env.items() if k not in ("TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    quiet = subprocess.run(
        [PRODUCER, *args, "--json", "--no-cache", "--priority", "high", "--no-dedup"],
        env={**plain, "TERM": os.environ.get("TERM", "dumb")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["status"] == "ok"
    assert quiet.stderr == ""


def test_live_bars_follow_the_events() -> None:
    """The bars end finished with each source's status (retries and cache hits noted), a requeue
    resets them, and job_done completes the job's bar with the job's status."""
    from rich.console import Console

    from producer.display import LiveProgress

    bars = LiveProgress(Console(force_terminal=True, width=100), "0123456789abcdef")

    def event(kind: str, source: str | None = None, **more: object) -> ProgressEvent:
        return ProgressEvent.model_validate({"job_id": "j", "event": kind, "t": 0.1, "source": source, **more})

    for e in (
        event("fetch_start", "weather"),
        event("fetch_start", "news"),
        event("fetch_end", "news"),
        event("inference_start", "news", detail={"attempts": 2, "cache": "hit"}),
        event("fetch_end", "weather", status="circuit_open", error="open"),
        event("done", "weather", status="circuit_open", error="open"),
    ):
        bars.update(e)
    tasks = {t.description.strip(): t for t in bars.progress.tasks}
    assert tasks["weather"].finished and str(tasks["weather"].fields["state"]) == "circuit_open"
    assert not tasks["news"].finished and str(tasks["news"].fields["state"]) == "inference  try 2  cache hit"

    bars.update(event("requeued"))
    assert not any(t.finished for t in bars.progress.tasks)
    for kind in ("fetch_start", "fetch_end", "inference_start"):
        bars.update(event(kind, "news"))
    bars.update(event("done", "news", status="ok"))
    bars.update(event("job_done", status="ok"))
    job = bars.progress.tasks[0]
    assert job.finished and str(job.fields["state"]) == "ok"
