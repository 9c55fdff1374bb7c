"""The job contract: what a producer sends, what a worker stores, and where in Redis.

This module is the single home of the request and result models and the JSON codec (Redis key
names are in ``agentq.keys``, arq's record format in ``agentq.wire``). The producer and the worker
both import it; nothing re-declares it.

Jobs and results cross Redis as JSON only (never pickle), so whoever can write to Redis can at
worst make a job fail, never run code in a worker.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from agentq.errors import InvalidRequest

#: The name the worker registers its job function under (what ``enqueue_job`` is given).
JOB_FUNCTION = "answer_question"
#: Bumped when the result format changes incompatibly.
RESULT_VERSION = 1

SourceStatus = Literal["ok", "error", "timeout", "deadline", "circuit_open", "rate_limited", "cancelled"]
#: How a source's shared cache was used: ``off`` (no cache), ``bypass`` (the request said no_cache).
CacheUse = Literal["hit", "miss", "bypass", "off"]
#: The circuit breaker's state when a fetch began (``half_open``: this fetch was the probe).
CircuitState = Literal["closed", "half_open", "open"]
JobStatus = Literal["ok", "partial", "failed", "cancelled"]
ExecutorName = Literal["interpreter", "process", "thread"]
#: How soon a queued job is taken when workers are busy (see ``producer.client``).
Priority = Literal["high", "normal", "low"]

_ALLOWED_CONTROL = {"\n", "\t"}


# --------------------------------------------------------------------------------------------
# Request
# --------------------------------------------------------------------------------------------
class QuestionRequest(BaseModel):
    """One user question and how to answer it. Validated on both sides of the queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict types: a number where the question belongs is a caller's bug, not something to coerce.
    question: StrictStr
    sources: tuple[StrictStr, ...] | None = Field(None, description="default: every registered source")
    source_timeout_s: StrictFloat | None = Field(None, description="per-source fetch timeout")
    deadline_s: StrictFloat | None = Field(None, description="whole-query deadline")
    no_cache: StrictBool = Field(False, description="fetch every source afresh, bypassing the shared cache")
    analysis: StrictStr | None = Field(None, description="the analysis to run; default: the worker's default_analysis")

    @field_validator("question")
    @classmethod
    def _question(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not value:
            raise ValueError("question is empty")
        limit = _context(info).get("max_question_chars", 2000)
        if len(value) > limit:
            raise ValueError(f"question is {len(value):,} characters; the limit is {limit:,}")
        for ch in value:
            category = unicodedata.category(ch)
            if category == "Cs":
                raise ValueError("question is not valid UTF-8")
            if category == "Cc" and ch not in _ALLOWED_CONTROL:
                raise ValueError(f"question contains a control character (U+{ord(ch):04X})")
        return value

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
        if not names:
            raise ValueError("no source named")
        known: Collection[str] | None = _context(info).get("known_sources")
        if known is not None:
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"unknown source {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        return names

    @field_validator("analysis")
    @classmethod
    def _analysis(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("no analysis named")
        known: Collection[str] | None = _context(info).get("known_analyses")
        if known is not None and value not in known:
            raise ValueError(f"unknown analysis {value!r}; known: {', '.join(sorted(known)) or 'none'}")
        return value

    @field_validator("source_timeout_s", "deadline_s")
    @classmethod
    def _timeout(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        limit = _context(info).get(f"max_{info.field_name}", 3600.0)
        if not (0 < value <= limit):  # also rejects NaN
            raise ValueError(f"must be > 0 and <= {limit:g} seconds, got {value!r}")
        return value


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


def parse_request(
    data: object,
    *,
    known_sources: Collection[str] | None,
    max_question_chars: int,
    max_source_timeout_s: float,
    max_deadline_s: float,
    known_analyses: Collection[str] | None = None,
) -> QuestionRequest:
    """Validate raw request data against the limits in force; raise :class:`InvalidRequest`.

    ``known_sources`` and ``known_analyses`` are the names that may be asked for; None accepts any
    (the worker checks them: a producer cannot know the plugins of ``AGENTQ_PLUGIN_MODULES``).
    """
    context = {
        "known_sources": known_sources,
        "known_analyses": known_analyses,
        "max_question_chars": max_question_chars,
        "max_source_timeout_s": max_source_timeout_s,
        "max_deadline_s": max_deadline_s,
    }
    try:
        return QuestionRequest.model_validate(data, context=context)
    except ValidationError as exc:
        errors: list[dict[str, object]] = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"].removeprefix("Value error, "), "type": err["type"]}
            for err in exc.errors(include_url=False)
        ]
        raise InvalidRequest(describe_validation_error(exc), errors=errors) from exc


def request_fingerprint(request: QuestionRequest) -> str:
    """sha256 of what makes two requests the same work: the question casefolded with its whitespace
    collapsed, the sources (in any order), the timeouts, ``no_cache`` and the analysis. Deduplication keys on it."""
    body: dict[str, object] = {
        "question": " ".join(request.question.casefold().split()),
        "sources": sorted(request.sources) if request.sources is not None else None,
        "source_timeout_s": request.source_timeout_s,
        "deadline_s": request.deadline_s,
        "no_cache": request.no_cache,
    }
    if request.analysis is not None:  # absent otherwise, so fingerprints of requests without one stay as they were
        body["analysis"] = request.analysis
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every field that is wrong and why."""
    parts = []
    for err in exc.errors(include_url=False):
        # A field name comes from the caller and may hold a newline: quote what is not printable.
        where = ".".join(s if (s := str(p)).isprintable() else repr(s) for p in err["loc"]) or "request"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------
class RanIn(BaseModel):
    """Where an inference ran: proves which executor did the work."""

    executor: ExecutorName = Field(description="the kind of pool the inference ran in")
    pid: int = Field(description="the process it ran in (a pool's child process, or the worker itself)")
    interpreter_id: int = Field(description="the interpreter it ran in; 0 is the main interpreter")
    thread_id: int = Field(description="the thread it ran in")


class InferenceOutput(BaseModel):
    """What the CPU-bound analysis of one source's text produced.

    The fields every analysis has (``agentq.analyses.AnalysisOutput``) are here; the analysis's own
    typed fields are under ``details``. ``ran_in`` is measured around the analysis, in the pool.
    """

    analysis: str = Field("bag_of_words", description="which analysis ran (results before plugins: the built-in)")
    summary: str = Field(
        description="the analysis's summary of the source's text (the built-in: its sentence most "
        "similar to the question)"
    )
    top_terms: list[str] = Field(default_factory=list, description="the text's main terms, if the analysis names any")
    relevance: float = Field(description="how relevant the text is to the question, 0 to 1: the answer is ranked by it")
    work_units: int | None = Field(
        None, description="the CPU work done, in the analysis's own units (the built-in: 1,000 token hashes)"
    )
    ran_in: RanIn = Field(description="where the inference ran")
    details: dict[str, Any] = Field(default_factory=dict, description="the analysis's own output fields (JSON)")


class SourceOutcome(BaseModel):
    """One source's part of the answer. Offsets are seconds from the start of the job."""

    name: str = Field(description="the source's name")
    status: SourceStatus = Field(
        "deadline",
        description="ok: fetched and analysed; timeout: no answer within timeout_s; error: the fetch or the"
        " inference failed; deadline: the whole-query deadline passed first; circuit_open, rate_limited: skipped"
        " by a source policy; cancelled: the job was cancelled first (an inference under way is discarded)",
    )
    data: str | None = Field(None, description="the text the source returned")
    inference: InferenceOutput | None = Field(None, description="the analysis of that text, when it finished")
    error: str | None = Field(None, description="why the source did not answer, when it did not")
    timeout_s: float | None = Field(None, description="the per-attempt timeout used")
    fetch_start_s: float | None = Field(None, description="when the fetch began")
    fetch_end_s: float | None = Field(None, description="when the fetch ended, whatever its outcome")
    fetch_s: float | None = Field(None, description="how long the fetch took, retries and waits included")
    inference_submit_s: float | None = Field(None, description="when the text was handed to the inference pool")
    inference_start_s: float | None = Field(None, description="when the pool began the inference")
    inference_end_s: float | None = Field(None, description="when the inference ended")
    inference_s: float | None = Field(None, description="the inference's wall time in the pool")
    inference_cpu_s: float | None = Field(None, description="the CPU time the inference used")
    # What the source policies (worker.job.resilience) did; see docs/sources.md.
    timeout_mode: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed: the request's or the default timeout; adaptive: from recent latencies"
    )
    attempts: int = Field(0, description="calls made to the source; 0 on a cache hit or when it was skipped")
    attempt_errors: list[str] = Field(default_factory=list, description="why each failed attempt failed, in order")
    cache: CacheUse | None = Field(
        None, description="how the shared cache was used; off also when Redis could not be asked"
    )
    circuit: CircuitState | None = Field(
        None,
        description="the circuit breaker's state when the fetch began; null without a breaker or when Redis"
        " could not be asked",
    )
    rate_limit_wait_s: float = Field(0.0, description="time spent waiting for rate-limit tokens")


class ExecutorInfo(BaseModel):
    """Which pool ran inference, how big it is and why it was chosen."""

    kind: ExecutorName = Field(description="the kind of inference pool")
    size: int = Field(description="how many inferences it runs at once")
    reason: str = Field(description="why this kind was chosen (AGENTQ_EXECUTOR and the Python version)")


class Timing(BaseModel):
    """Where the time went. Durations are seconds."""

    queued_at: datetime | None = Field(None, description="when the producer enqueued the job (its clock)")
    started_at: datetime = Field(description="when this start of the job began (the worker's clock)")
    finished_at: datetime = Field(description="when the fan-out ended")
    queue_wait_s: float | None = Field(None, description="started_at minus queued_at")
    total_s: float = Field(description="the fan-out's wall time: every fetch and inference, overlapped")
    fetch_wall_s: float = Field(description="from the first fetch's start to the last fetch's end")
    inference_cpu_s: float = Field(description="CPU time of every inference, summed")
    critical_path_s: float = Field(
        description="the shortest possible total_s for the measured fetch and inference times on this pool's size"
    )
    sequential_estimate_s: float = Field(description="every fetch and every inference one after the other, summed")
    speedup: float = Field(description="sequential_estimate_s / total_s")


class JobResult(BaseModel):
    """The aggregated answer to one question, as stored in Redis and shown to callers."""

    version: int = Field(RESULT_VERSION, description="the result format's version, bumped on incompatible changes")
    job_id: str = Field(description="the job's id, as enqueue returned it")
    question: str = Field(description="the question, stripped (at most 200 characters when the request was invalid)")
    status: JobStatus = Field(
        description="ok: every source answered; partial: some did; failed: none did, or the job could not run;"
        " cancelled: cancelled by a caller (sources that had finished keep their answers)"
    )
    answer: list[str] = Field(
        default_factory=list, description="one line per answering source, [name] summary, most relevant first"
    )
    sources: list[SourceOutcome] = Field(default_factory=list, description="every source asked, in the order asked")
    errors: list[str] = Field(
        default_factory=list, description="one line per source that did not answer, or why the job failed"
    )
    timing: Timing | None = Field(None, description="where the time went; null when the job could not run")
    executor: ExecutorInfo | None = Field(None, description="the worker's inference pool")
    worker_id: str | None = Field(None, description="host:pid:random of the worker that stored the result")
    job_try: int | None = Field(None, description="which start of the job this result came from (1 = the first)")


ProgressKind = Literal["fetch_start", "fetch_end", "inference_start", "done", "job_done", "requeued"]


class ProgressEvent(BaseModel):
    """One moment of a running job, as the worker appends it to the job's progress log.

    Source events (``fetch_start`` ... ``done``) carry the source's status as it stands; ``job_done``
    comes once the result is stored, ``requeued`` when a start ended without one (it will run again).
    """

    job_id: str
    event: ProgressKind
    t: float = Field(description="seconds since this start of the job, on the worker's clock")
    source: str | None = None
    status: str | None = None
    error: str | None = None
    detail: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="what else the fetch recorded so far: timeout used, attempts, cache ..."
    )


# --------------------------------------------------------------------------------------------
# The codec
# --------------------------------------------------------------------------------------------
def _json_default(obj: object) -> object:
    if isinstance(obj, BaseException):
        # arq stores an exception as the result of a job it could not run (bad payload, too
        # many tries): keep its name and message rather than losing the reason.
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: object) -> bytes:
    """The serializer of jobs and results (arq's ``job_serializer``): JSON, UTF-8, never pickle."""
    return json.dumps(obj, default=_json_default, separators=(",", ":"), allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    """The deserializer (arq's ``job_deserializer``): JSON only; anything else raises and the job fails cleanly."""
    return json.loads(data)
