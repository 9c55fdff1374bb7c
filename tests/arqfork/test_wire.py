"""``agentq.wire`` against arq itself: the producer writes and reads arq's Redis format without
importing arq, so each mirrored piece is checked here against the arq function it mirrors."""

from __future__ import annotations

from typing import Any

import pytest
from arq import constants
from arq.connections import ArqRedis
from arq.jobs import Job, deserialize_result, serialize_job, serialize_result
from arq.utils import timestamp_ms

from agentq import wire
from agentq.contract import dumps, loads
from agentq.keys import Keys
from tests.arqfork.conftest import QUEUE

JOBS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("answer_question", ({"question": "rain?"},), {}),
    ("answer_question", (), {"request": {"question": 'été ☔ "quoted" \\ back', "sources": ["a", "b"]}}),
    ("f", (1, 2.5, None, True, [1, [2]]), {"k": {"nested": {"x": []}}}),
]


@pytest.mark.parametrize(("function", "args", "kwargs"), JOBS)
def test_encode_job_writes_what_arq_writes(function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """encode_job is byte for byte arq's serialize_job with our JSON serializer."""
    enqueue_ms = 1_700_000_000_123
    assert wire.encode_job(function, args, kwargs, enqueue_ms) == serialize_job(
        function, args, kwargs, None, enqueue_ms, serializer=dumps
    )


async def test_encode_job_writes_what_arqs_enqueue_job_stores(arq_pool: ArqRedis) -> None:
    """The job record arq's own enqueue_job stores is the one encode_job gives for the same job."""
    function, args, kwargs = JOBS[1]
    job = await arq_pool.enqueue_job(function, *args, _job_id="j1", **kwargs)
    assert job is not None
    stored = await arq_pool.get(wire.JOB_PREFIX + "j1")
    assert stored == wire.encode_job(function, args, kwargs, loads(stored)["et"])


def arq_result(success: bool, result: Any) -> bytes:
    """A result record as arq's run_job writes it, with our JSON serializer."""
    data = serialize_result(
        "answer_question", ({"question": "q"},), {}, 2, 1000, success, result, 2000, 3000, "j1:f", QUEUE, "j1",
        serializer=dumps,
    )  # fmt: skip
    assert data is not None
    return data


@pytest.mark.parametrize(
    ("success", "result", "read_back"),
    [
        (True, {"job_id": "j1", "answer": ["42"]}, {"job_id": "j1", "answer": ["42"]}),
        (False, ValueError("boom"), {"error": "ValueError", "message": "boom"}),
    ],
    ids=["success", "failure"],
)
def test_decode_result_reads_what_arq_writes(success: bool, result: Any, read_back: Any) -> None:
    """decode_result reads arq's serialize_result records, agreeing with arq's own deserialize_result."""
    data = arq_result(success, result)
    ours = wire.decode_result(data)
    theirs = deserialize_result(data, deserializer=loads)

    assert ours == wire.ResultRecord(
        job_try=2,
        function="answer_question",
        args=({"question": "q"},),
        success=success,
        result=read_back,
        enqueue_ms=1000,
        start_ms=2000,
        finish_ms=3000,
        job_id="j1",
    )
    assert (ours.job_try, ours.function, ours.args, ours.success, ours.result, ours.job_id) == (
        theirs.job_try, theirs.function, tuple(theirs.args), theirs.success, theirs.result, theirs.job_id,
    )  # fmt: skip
    assert wire.decode_result(data.decode()) == ours


@pytest.mark.parametrize(
    "garbage",
    [b"\x80\x04pickle", b"not json", b"[]", b"null", b"{}", b'{"t": 1, "f": "f"}', b"\xff\xfe", ""],
    ids=["pickle", "text", "list", "null", "empty-object", "partial", "not-utf8", "empty"],
)
def test_decode_result_rejects_what_is_not_a_result(garbage: bytes | str) -> None:
    """Anything that is not an arq result record in JSON raises WireError."""
    with pytest.raises(wire.WireError):
        wire.decode_result(garbage)


async def set_marks(redis: ArqRedis, job_id: str, marks: set[str]) -> None:
    """Give a job the marks arq's Job.status reads: a result, a lease, a queue score (past or future)."""
    if "result" in marks:
        await redis.set(wire.RESULT_PREFIX + job_id, b"{}")
    if "in_progress" in marks:
        await redis.set(wire.IN_PROGRESS_PREFIX + job_id, b"1")
    if "due" in marks:
        await redis.zadd(QUEUE, {job_id: timestamp_ms() - 60_000})
    if "later" in marks:
        await redis.zadd(QUEUE, {job_id: timestamp_ms() + 60_000})


@pytest.mark.parametrize(
    ("marks", "state"),
    [
        ({"result"}, "complete"),
        ({"result", "in_progress", "due"}, "complete"),
        ({"in_progress", "due"}, "in_progress"),
        ({"in_progress"}, "in_progress"),
        ({"due"}, "queued"),
        ({"later"}, "deferred"),
        (set(), "not_found"),
    ],
    ids=["complete", "complete-before-all", "in_progress", "in_progress-unqueued", "queued", "deferred", "not_found"],
)
async def test_job_state_agrees_with_arqs_job_status(arq_pool: ArqRedis, marks: set[str], state: str) -> None:
    """job_state, given a job's marks read from Redis, says what arq's Job.status says, for every state."""
    await set_marks(arq_pool, "j1", marks)
    has_result = bool(await arq_pool.exists(wire.RESULT_PREFIX + "j1"))
    leased = bool(await arq_pool.exists(wire.IN_PROGRESS_PREFIX + "j1"))
    score = await arq_pool.zscore(QUEUE, "j1")

    ours = wire.job_state(has_result, leased, score, timestamp_ms())
    theirs = await Job("j1", arq_pool, _queue_name=QUEUE, _deserializer=loads).status()
    assert ours == theirs.value == state


def test_keys_use_arqs_prefixes() -> None:
    """Keys.job/result/in_progress and wire's other names are arq's constants."""
    assert Keys.job("x") == constants.job_key_prefix + "x"
    assert Keys.result("x") == constants.result_key_prefix + "x"
    assert Keys.in_progress("x") == constants.in_progress_key_prefix + "x"
    mirrored = (wire.RETRY_PREFIX, wire.ABORT_SET, wire.JOB_EXPIRY_MS)
    assert mirrored == (constants.retry_key_prefix, constants.abort_jobs_ss, constants.expires_extra_ms)
