"""The worker answers whatever it finds in Redis with a result, and keeps serving."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from agentq.contract import JOB_FUNCTION
from producer.client import Client
from tests.helpers import enqueue_raw

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (({"question": ""},), "invalid request: question: question is empty"),
        (({"question": "q", "sources": ["nope"]},), "invalid request: sources: unknown source 'nope'"),
        (("just a string",), "invalid request: request: Input should be a valid dictionary"),
        ((), "the job takes exactly one argument"),
    ],
)
async def test_bad_request_in_redis_gets_a_failed_result(
    client: Client, start_worker_processes: Callable[..., list[Popen[bytes]]], args: tuple[object, ...], reason: str
) -> None:
    """A request that skipped the producer's validation fails with the reason; the next job still works."""
    start_worker_processes(1)
    bad = await enqueue_raw(client, *args)
    result = await client.result(bad, timeout=30)
    assert result.status == "failed" and reason in result.errors[0]

    good = await client.result(await client.enqueue("still there?"), timeout=30)
    assert good.status == "ok"


async def test_unreadable_job_payload_fails_cleanly(
    client: Client, start_worker_processes: Callable[..., list[Popen[bytes]]]
) -> None:
    """Garbage bytes where a job should be: that job fails with a reason, the worker goes on."""
    start_worker_processes(1)
    job_id = "garbage-job"
    await client.redis.hset(client.keys.jobs, job_id, b"\x80\x04not json at all")
    await client.redis.zadd(client.keys.queue, {job_id: time.time() * 1000})
    result = await client.result(job_id, timeout=30)
    assert result.status == "failed"
    assert "job failed before it could answer" in result.errors[0] and "not a JSON job" in result.errors[0]
    assert (await client.result(await client.enqueue("next"), timeout=30)).status == "ok"


class _Canary:
    """Unpickling this creates the directory ``path``: proof that a pickle payload was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


async def test_hostile_job_payloads_fail_cleanly_and_never_execute(
    client: Client, start_worker_processes: Callable[..., list[Popen[bytes]]], tmp_path: Path
) -> None:
    """Truncated JSON, wrong shapes, an unknown function and a pickle: each fails with a reason; no code runs."""
    canary, control = tmp_path / "canary", tmp_path / "control"
    pickle.loads(pickle.dumps(_Canary(control)))  # the payload is live: unpickling it makes the directory
    assert control.is_dir()

    good = json.dumps({"t": 1, "f": JOB_FUNCTION, "a": [{"question": "q"}], "k": {}, "et": int(time.time() * 1000)})
    hostile = {
        "truncated": (good[: len(good) // 2].encode(), "not a JSON job"),
        "pickled": (
            pickle.dumps({"t": 1, "f": JOB_FUNCTION, "a": [_Canary(canary)], "k": {}, "et": 0}),
            "not a JSON job",
        ),
        "wrong-shape": (b"[1, 2, 3]", "not a JSON job"),
        "unknown-function": (good.replace(JOB_FUNCTION, "os.system").encode(), "'os.system' is not registered"),
    }
    start_worker_processes(1)
    for job_id, (payload, _) in hostile.items():
        await client.redis.hset(client.keys.jobs, job_id, payload)
        await client.redis.zadd(client.keys.queue, {job_id: time.time() * 1000})
    for job_id, (_, reason) in hostile.items():
        result = await client.result(job_id, timeout=30)
        assert result.status == "failed" and reason in result.errors[0], (job_id, result.errors)
    assert (await client.result(await client.enqueue("next"), timeout=30)).status == "ok"
    assert not canary.exists()
