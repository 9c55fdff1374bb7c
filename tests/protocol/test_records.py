"""``agentq.protocol.records`` against arq itself: the records are arq's format, checked against the arq
functions they mirror, and every arq function mirrored or used is pinned by its source."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib import metadata
from typing import Any

import pytest
from arq.jobs import deserialize_result, serialize_job, serialize_result

from agentq.contract import dumps, loads
from agentq.protocol import records

JOBS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("answer_question", ({"question": "rain?"},), {}),
    ("answer_question", (), {"request": {"question": 'été ☔ "quoted" \\ back', "sources": ["a", "b"]}}),
    ("f", (1, 2.5, None, True, [1, [2]]), {"k": {"nested": {"x": []}}}),
]


@pytest.mark.parametrize(("function", "args", "kwargs"), JOBS)
def test_encode_job_writes_what_arq_writes(function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """encode_job is byte for byte arq's serialize_job with our JSON serializer, and decode_job reads it back."""
    enqueue_ms = 1_700_000_000_123
    data = records.encode_job(function, args, kwargs, enqueue_ms)
    assert data == serialize_job(function, args, kwargs, None, enqueue_ms, serializer=dumps)
    assert records.decode_job(data) == records.JobRecord(function, args, kwargs, enqueue_ms)


def arq_result(success: bool, result: Any) -> bytes:
    """A result record as arq's run_job writes it, with our JSON serializer."""
    data = serialize_result(
        "answer_question", ({"question": "q"},), {}, 2, 1000, success, result, 2000, 3000, "j1:f", "q", "j1",
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
def test_results_read_and_write_as_arq_does(success: bool, result: Any, read_back: Any) -> None:
    """decode_result reads arq's serialize_result records as arq's deserialize_result does, and
    encode_result writes them byte for byte."""
    data = arq_result(success, result)
    ours = records.decode_result(data)
    theirs = deserialize_result(data, deserializer=loads)
    assert ours == records.ResultRecord(
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
    again = records.encode_result(
        "j1", "answer_question", ({"question": "q"},), {}, job_try=2, enqueue_ms=1000, success=success,
        result=result, start_ms=2000, finish_ms=3000, queue_name="q",
    )  # fmt: skip
    assert again == data


@pytest.mark.parametrize(
    "garbage",
    [b"\x80\x04pickle", b"not json", b"[]", b"null", b"{}", b'{"t": 1, "f": "f"}', b"\xff\xfe", ""],
    ids=["pickle", "text", "list", "null", "empty-object", "partial", "not-utf8", "empty"],
)
def test_what_is_not_a_record_is_refused(garbage: bytes | str) -> None:
    """Anything that is not an arq record in JSON raises RecordError, as a job or as a result."""
    with pytest.raises(records.RecordError):
        records.decode_result(garbage)
    with pytest.raises(records.RecordError):
        records.decode_job(garbage)


@pytest.mark.parametrize(
    ("result", "held", "score", "state"),
    [
        (True, True, 1.0, "complete"),
        (False, True, 1.0, "in_progress"),
        (False, False, 1.0, "queued"),
        (False, False, 0.0, "queued"),
        (False, False, 9e15, "deferred"),
        (False, False, None, "not_found"),
    ],
)
def test_a_jobs_state_from_its_marks(result: bool, held: bool, score: float | None, state: str) -> None:
    """A result wins, then a lease holder, then the queue score against now (a score of 0 is still a place)."""
    assert records.job_state(result, held, score, 1_000.0) == state


def resolve(dotted: str) -> object:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_everything_of_arq_mirrored_or_used_is_the_pinned_source() -> None:
    """Each pinned arq function's source hashes as pinned; a change names the function and what to do."""

    def digest(dotted: str) -> str:
        return hashlib.sha256(inspect.getsource(resolve(dotted)).encode()).hexdigest()  # type: ignore[arg-type]

    changed = [(name, pinned, digest(name)) for name, pinned in records.ARQ_PINNED.items() if digest(name) != pinned]
    assert not changed, (
        f"arq {metadata.version('arq')} is installed; agentq.protocol.records follows arq {records.ARQ_VERSION}, "
        "and the source of what it mirrors or uses has changed:\n"
        + "\n".join(f"  {name}: pinned sha256 {old[:12]}..., now {new[:12]}..." for name, old, new in changed)
        + "\nRead the new source of each, adapt agentq/protocol/records.py (the format) or worker/engine "
        "(the function registry), then put the new digests in agentq.protocol.records.ARQ_PINNED."
    )
