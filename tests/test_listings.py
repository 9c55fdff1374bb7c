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

from agentq.contract import JobResult
from agentq.errors import InvalidRequest, JobNotFound
from agentq.protocol import queue as queue_module
from agentq.protocol import records
from agentq.protocol.keys import Field, field
from agentq.protocol.queue import ClaimedJob, Ending
from agentq.settings import Settings
from producer.client import Client
from worker.job import listing

StartWorkers = Callable[..., list[Popen[bytes]]]
PRODUCER = str(Path(sys.executable).with_name("producer"))


@pytest.fixture
def fake_client() -> Client:
    """A client on fakeredis with small indexes (3 entries)."""
    c = Client(Settings(_env_file=None, jobs_index_size=3, result_ttl_s=60))  # type: ignore[call-arg]
    c._redis = fakeredis.FakeAsyncRedis()
    return c


async def finish(c: Client, job_id: str, status: str) -> None:
    """Store a result for ``job_id`` as a worker does (the finish script), its listing figures included."""
    result = JobResult(job_id=job_id, question="q", status=status, errors=["why"] if status == "failed" else [])  # type: ignore[arg-type]
    value = result.model_dump(mode="json")
    record = records.encode_result(
        job_id, "answer_question", ({"question": "Will it rain?"},), {}, job_try=1, enqueue_ms=1, success=True,
        result=value, start_ms=2, finish_ms=3, queue_name=c.settings.queue_name,
    )  # fmt: skip
    priority = await c.redis.hget(c.keys.jobs, field(job_id, Field.PRIORITY))
    claimed = ClaimedJob(job_id, 0, None, 1, 1, False, False, priority=(priority or b"normal").decode())
    job = records.JobRecord("answer_question", ({"question": "Will it rain?"},), {}, 1)
    status_, final = listing.final(claimed, job, value, True, 5)
    ending = Ending(job_id, "finish", result=record, result_px=60_000, final=final, status=status_, finished_ms=5)
    assert await c.queue.finish("w", [ending], progress_ttl_s=60, index_size=c.settings.jobs_index_size) == [True]


async def test_indexes_stay_capped_and_figures_expire_with_results(
    fake_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five jobs leave three in the recent index and three in the failed one; every job's figures have a TTL."""
    monkeypatch.setattr(queue_module, "TRIM_EVERY", 1)
    ids = [await fake_client.enqueue(f"question {i}", dedup=False) for i in range(5)]
    for job_id in ids:
        await finish(fake_client, job_id, "failed")
    r, keys = fake_client.redis, fake_client.keys
    assert await r.zcard(keys.index) == 3 and await r.zcard(keys.by_status("failed")) == 3
    assert all(0 < ttl <= 60_000 for ttl in [await r.pttl(keys.final(j)) for j in ids])
    listed = await fake_client.jobs(limit=10)
    assert [j.job_id for j in listed] == ids[:-4:-1]
    assert {j.status for j in listed} == {"failed"} and listed[0].error == "why"


async def test_the_listing_shows_live_states_and_filters_by_status(fake_client: Client) -> None:
    """Unfinished jobs read queued; --status picks finished jobs of one status; a job with no trace is dropped."""
    a, b, c = [await fake_client.enqueue(f"q{i}", dedup=False) for i in range(3)]
    await finish(fake_client, a, "ok")
    await finish(fake_client, b, "failed")
    assert [(j.job_id, j.status) for j in await fake_client.jobs()] == [(c, "queued"), (b, "failed"), (a, "ok")]
    assert [j.job_id for j in await fake_client.jobs(status="failed")] == [b]
    assert [j.job_id for j in await fake_client.jobs(status="ok")] == [a]
    await fake_client.redis.zrem(fake_client.keys.queue, c)
    assert [j.job_id for j in await fake_client.jobs()] == [b, a]
    assert await fake_client.redis.zscore(fake_client.keys.index, c) is None


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


def test_a_job_that_failed_before_answering_is_listed_failed_with_its_reason() -> None:
    """A run that could not answer (raised, or never started) files as failed, with the reason."""
    claimed = ClaimedJob("j", 0, None, 3, 3, False, False)
    job = records.JobRecord("answer_question", ({"question": "q"},), {}, 1)
    status, final = listing.final(claimed, job, ValueError("gave up"), False, 5)
    assert status == "failed" and "gave up" in json.loads(final)["error"]
    status, final = listing.final(claimed, job, "not a result", True, 5)
    assert status == "failed" and "returned str" in json.loads(final)["error"]


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
