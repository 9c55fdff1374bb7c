"""Running one claimed job on fakeredis: what is stored when it answers, raises, overruns, cannot start or
has used up its tries; and the finish calls of jobs ending together sharing one round trip."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from typing import Any

import pytest
import redis.exceptions

from agentq.contract import loads
from agentq.protocol.records import decode_result
from tests.engine.conftest import KEYS, MakeWorker, queue_jobs


async def run_one(w: Any, fake: Any, job_id: str = "a") -> dict[str, Any]:
    """Claim and run ``job_id`` to its end; its stored result record, decoded."""
    await w._pickup()
    await asyncio.gather(*w.tasks.values())
    raw = await fake.get(KEYS.result(job_id))
    assert raw is not None, f"no result stored for {job_id}"
    record: dict[str, Any] = loads(raw)
    return record


async def test_a_job_that_answers_has_its_answer_stored_and_its_run_cleared(make_worker: MakeWorker, fake: Any) -> None:
    """The returned value is the result (success), with the try and the times; the job leaves the queue."""

    async def job(ctx: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        return {"job_id": ctx["job_id"], "status": "ok", "question": request["question"]}

    w = await make_worker(job=job)
    await queue_jobs(fake, "a")
    record = await run_one(w, fake)
    result = decode_result(await fake.get(KEYS.result("a")))
    assert result.success and result.result == {"job_id": "a", "status": "ok", "question": "a"} and result.job_try == 1
    assert record["q"] == "test" and await fake.zscore(KEYS.queue, "a") is None and await fake.hgetall(KEYS.jobs) == {}
    assert w.runner.done == 1 and loads(await fake.get(KEYS.final("a")))["status"] == "ok"


async def test_a_job_that_raises_is_failed_with_the_error_not_retried(make_worker: MakeWorker, fake: Any) -> None:
    """An exception is the result, as arq stores it: its type and message; the job ends ``failed``."""

    async def job(ctx: dict[str, Any], *args: Any) -> None:
        raise ValueError("broken")

    w = await make_worker(job=job)
    await queue_jobs(fake, "a")
    record = await run_one(w, fake)
    assert (record["s"], record["r"]) == (False, {"error": "ValueError", "message": "broken"})
    assert w.runner.failed == 1 and loads(await fake.get(KEYS.final("a")))["status"] == "failed"


async def test_a_job_past_its_timeout_is_failed_with_a_reason(
    make_worker: MakeWorker, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run longer than the function's timeout is stopped and failed, saying so."""

    async def job(ctx: dict[str, Any], *args: Any) -> None:
        await asyncio.sleep(5)

    w = await make_worker(job=job)
    monkeypatch.setitem(w.functions, "job", dataclasses.replace(w.functions["job"], timeout_s=0.01))  # type: ignore[index]
    await queue_jobs(fake, "a")
    record = await run_one(w, fake)
    assert record["s"] is False and "past its timeout of 0.01s" in record["r"]["message"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("gone", "the job's record had gone from Redis"),
        ("garbage", "is not a JSON job in arq's format"),
        ("function", "function 'elsewhere' is not registered on this worker"),
        ("tries", "gave up after 3 tries"),
    ],
)
async def test_a_job_that_cannot_start_is_failed_with_the_reason(
    make_worker: MakeWorker, fake: Any, damage: str, reason: str
) -> None:
    """No record, an unreadable one, an unknown function, its tries used up: a failed result says which."""
    ran: list[str] = []

    async def job(ctx: dict[str, Any], *args: Any) -> None:
        ran.append(ctx["job_id"])

    w = await make_worker(job=job, max_tries=3)
    await queue_jobs(fake, "a", function="elsewhere" if damage == "function" else "job")
    if damage == "gone":
        await fake.hdel(KEYS.jobs, "a")
    elif damage == "garbage":
        await fake.hset(KEYS.jobs, "a", b"\x80pickle")
    elif damage == "tries":
        await fake.hset(KEYS.jobs, "a:t", 3)
    record = await run_one(w, fake)
    assert record["s"] is False and reason in record["r"]["message"] and ran == []
    assert loads(await fake.get(KEYS.final("a")))["status"] == "failed"


async def test_a_second_result_of_a_job_is_dropped(make_worker: MakeWorker, fake: Any) -> None:
    """When an earlier run's result is stored already, this run's is not stored (first result wins)."""

    async def job(ctx: dict[str, Any], *args: Any) -> dict[str, str]:
        await fake.set(KEYS.result(ctx["job_id"]), b"earlier")
        return {"status": "ok"}

    w = await make_worker(job=job)
    await queue_jobs(fake, "a")
    await w._pickup()
    await asyncio.gather(*w.tasks.values())
    assert await fake.get(KEYS.result("a")) == b"earlier" and w.runner.discarded == 1


async def test_jobs_that_end_together_are_finished_in_one_round_trip(
    make_worker: MakeWorker, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten zero-work jobs ending in the same loop turn send their finish scripts in one pipeline."""

    async def job(ctx: dict[str, Any], *args: Any) -> dict[str, str]:
        return {"status": "ok"}

    w = await make_worker(job=job, max_jobs=10, admission=False)
    batches: list[int] = []
    real_finish = w.queue.finish

    async def finish(worker_id: str, endings: Any, **kw: Any) -> Any:
        batches.append(len(endings))
        return await real_finish(worker_id, endings, **kw)

    monkeypatch.setattr(w.queue, "finish", finish)
    await queue_jobs(fake, *(f"j{i}" for i in range(10)))
    await w._pickup()
    await asyncio.gather(*w.tasks.values())
    assert batches == [10] and len(await fake.keys(KEYS.result("*"))) == 10


async def test_a_finish_rides_out_a_short_outage(make_worker: MakeWorker, fake: Any, fake_server: Any) -> None:
    """The finish script sent while Redis is down is sent again once it is back: the result is stored."""
    back = asyncio.Event()

    async def job(ctx: dict[str, Any], *args: Any) -> dict[str, str]:
        fake_server.connected = False
        asyncio.get_running_loop().call_later(0.2, back.set)
        return {"status": "ok"}

    w = await make_worker(job=job, redis_outage_s=30)
    await queue_jobs(fake, "a")
    await w._pickup()

    async def reconnect() -> None:
        await back.wait()
        fake_server.connected = True

    await asyncio.gather(*w.tasks.values(), reconnect())
    assert await fake.get(KEYS.result("a")) is not None and w.runner.done == 1


async def test_a_jobs_one_line_follows_its_stored_result_never_a_result_that_was_not_stored(
    make_worker: MakeWorker, fake: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``job <id> <status> in <s>s (try <n>)`` is logged once the result is stored; a result the finish could
    not store logs an error and no such line; a result dropped for an earlier one says so on that line."""

    async def job(ctx: dict[str, Any], *args: Any) -> dict[str, str]:
        if ctx["job_id"] == "c":
            await fake.set(KEYS.result("c"), b"earlier")
        return {"status": "ok"}

    w = await make_worker(job=job, max_jobs=1)

    async def run(job_id: str) -> list[str]:
        caplog.clear()
        await queue_jobs(fake, job_id)
        await w._pickup()
        await asyncio.gather(*w.tasks.values())
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]

    with caplog.at_level(logging.INFO, logger="worker"):
        said = await run("a")
        assert [bool(re.fullmatch(r"job a ok in [\d.]+s \(try 1\)", m)) for m in said if m.startswith("job a ")] == [
            True
        ]
        real_finish = w.queue.finish

        async def refused(*args: Any, **kwargs: Any) -> Any:
            raise redis.exceptions.ResponseError("OOM command not allowed")

        monkeypatch.setattr(w.queue, "finish", refused)
        said = await run("b")
        assert not any(re.match(r"job b ok in", m) for m in said)
        assert any("job b: its result could not be stored (OOM" in m for m in said), said
        monkeypatch.setattr(w.queue, "finish", real_finish)
        said = await run("c")
        assert any(
            re.fullmatch(r"job c ok in [\d.]+s \(try 1\), but it already had a result .*discarded", m) for m in said
        )
