"""Job listings: `producer jobs` and `producer retry`, and what Redis keeps for them staying bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import fakeredis
import pytest

from agentq import wire
from agentq.contract import JobResult, dumps
from agentq.errors import InvalidRequest, JobNotFound
from agentq.settings import Settings
from producer.client import Client
from worker import listing, progress
from worker.finish import Finisher

StartWorkers = Callable[..., list[Popen[bytes]]]
PRODUCER = str(Path(sys.executable).with_name("producer"))


@pytest.fixture
def fake_client() -> Client:
    """A client on fakeredis with small indexes (3 entries)."""
    c = Client(Settings(_env_file=None, jobs_index_size=3, result_ttl_s=60))  # type: ignore[call-arg]
    c._redis = fakeredis.FakeAsyncRedis()
    return c


async def finish(c: Client, job_id: str, status: str) -> None:
    """Store a result for ``job_id`` as a worker does (the finish script), listing entry included (worker.listing)."""
    result = JobResult(job_id=job_id, question="q", status=status, errors=["why"] if status == "failed" else [])  # type: ignore[arg-type]
    record = wire.encode_result(
        job_id, "answer_question", ({"question": "Will it rain?"},), {}, job_try=1, enqueue_ms=1, success=True,
        result=result.model_dump(mode="json"), start_ms=2, finish_ms=3, queue_name=c.settings.queue_name,
    )  # fmt: skip
    finisher = Finisher(c.redis, c.keys, c.settings.queue_name, progress_ttl_s=60, abort=False)
    filing = listing.filing(c.settings, job_id, record)
    assert await finisher(job_id, "finish", progress.bare_tail(job_id), result=record, result_px=60_000, filing=filing)


async def test_indexes_stay_capped_and_summaries_expire(fake_client: Client) -> None:
    """Five jobs leave three in the recent index and three in the failed one; every summary has a TTL."""
    ids = [await fake_client.enqueue(f"question {i}", dedup=False) for i in range(5)]
    for job_id in ids:
        await finish(fake_client, job_id, "failed")
    r, keys = fake_client.redis, fake_client.keys
    assert await r.zcard(keys.jobs_index) == 3 and await r.zcard(keys.jobs_by_status("failed")) == 3
    assert all(0 < ttl <= 60_000 for ttl in [await r.pttl(keys.summary(j)) for j in ids])
    listed = await fake_client.jobs(limit=10)
    assert [j.job_id for j in listed] == ids[:-4:-1]
    assert {j.status for j in listed} == {"failed"} and listed[0].error == "why"


async def test_the_listing_shows_live_states_and_filters_by_status(fake_client: Client) -> None:
    """Unfinished jobs read queued; --status picks finished jobs of one status; a vanished summary is dropped."""
    a, b, c = [await fake_client.enqueue(f"q{i}", dedup=False) for i in range(3)]
    await finish(fake_client, a, "ok")
    await finish(fake_client, b, "failed")
    assert [(j.job_id, j.status) for j in await fake_client.jobs()] == [(c, "queued"), (b, "failed"), (a, "ok")]
    assert [j.job_id for j in await fake_client.jobs(status="failed")] == [b]
    await fake_client.redis.delete(fake_client.keys.summary(c))
    assert [j.job_id for j in await fake_client.jobs()] == [b, a]
    assert await fake_client.redis.zscore(fake_client.keys.jobs_index, c) is None


async def test_bad_listing_arguments_are_refused(fake_client: Client) -> None:
    """An unknown status or a limit out of range is InvalidRequest, before Redis is asked."""
    with pytest.raises(InvalidRequest):
        await fake_client.jobs(status="weird")
    with pytest.raises(InvalidRequest):
        await fake_client.jobs(limit=0)


async def test_retry_requeues_a_failed_job_and_refuses_others(fake_client: Client) -> None:
    """A failed job's request is queued again as a new job that names it; an ok job or an unknown id is refused."""
    failed, fine = [await fake_client.enqueue(f"q{i}", dedup=False, priority="high") for i in range(2)]
    await finish(fake_client, failed, "failed")
    await finish(fake_client, fine, "ok")
    again = await fake_client.retry(failed)
    assert again.job_id not in (failed, fine) and await fake_client.status(again.job_id) == "queued"
    [latest, *_] = await fake_client.jobs()
    assert (latest.job_id, latest.retry_of, latest.priority) == (again.job_id, failed, "high")
    with pytest.raises(InvalidRequest, match="only a failed or cancelled job"):
        await fake_client.retry(fine)
    with pytest.raises(JobNotFound):
        await fake_client.retry("nope")


def test_a_record_arq_failed_is_listed_failed_with_its_reason() -> None:
    """A result arq stored itself (the job could not run) files as failed, with the reason."""
    record = dumps({"t": 3, "f": "f", "a": [], "k": {}, "et": 1, "s": False, "r": {"error": "X", "message": "gave up"}})
    final = listing.final_of("j", record)
    assert final["status"] == "failed" and "gave up" in final["error"]
    assert listing.final_of("j", b"not json")["status"] == "failed"


@pytest.mark.e2e
def test_jobs_and_retry_through_the_cli(worker_env: dict[str, str], start_worker_processes: StartWorkers) -> None:
    """A job whose only source fails is listed by `producer jobs --status failed`; `producer retry` re-runs it."""
    start_worker_processes(1, AGENTQ_SOURCE_FAIL='["weather"]')

    def producer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PRODUCER, *args], env=worker_env, capture_output=True, text=True, timeout=60)

    job_id = producer("ask", "Will it rain?", "--sources", "weather").stdout.strip()
    assert producer("result", job_id, "--wait", "--timeout", "30").returncode == 1
    listed = json.loads(producer("jobs", "--status", "failed", "--json").stdout)
    assert [(j["job_id"], j["status"]) for j in listed] == [(job_id, "failed")]
    assert listed[0]["sources"]["weather"][0] == "error"
    retried = producer("retry", job_id)
    assert retried.returncode == 0, retried.stderr
    new_id = retried.stdout.strip()
    assert producer("result", new_id, "--wait", "--timeout", "30").returncode == 1
    table = producer("jobs", "--limit", "5").stdout
    assert new_id in table and job_id in table
    refused = producer("jobs", "--status", "bogus")
    assert refused.returncode == 2
