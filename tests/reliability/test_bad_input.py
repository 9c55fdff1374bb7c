"""Bad input is refused with one clear line before anything reaches Redis; the validator is total."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agentq.contract import QuestionRequest, parse_request
from agentq.errors import InvalidRequest
from producer.cli import app
from producer.client import Client

PRODUCER = str(Path(sys.executable).with_name("producer"))
KNOWN = ("weather", "news", "knowledge_base")
LIMITS = {"max_question_chars": 2000, "max_source_timeout_s": 30.0, "max_deadline_s": 30.0}

# Cases tests/test_e2e.py does not already cover (empty, blanks, BEL, 2,001 chars, unknown source,
# a negative deadline and a too-long source timeout are there).
CLI_CASES = [
    (["ask", "x" * 1_000_000], "limit is 2,000"),
    (["ask", "nul\x00byte"], "control character (U+0000)"),
    (["ask", "\x1b[31mred\x1b[0m"], "control character (U+001B)"),
    (["ask", "half a surrogate \udcff"], "not valid UTF-8"),
    (["ask", "\n\t \n"], "question is empty"),
    (["ask", "ok", "--sources", ","], "no source named"),
    (["ask", "ok", "--sources", "weather,../../etc/passwd"], "unknown source"),
    (["ask", "ok", "--deadline", "nan"], "deadline_s: must be > 0"),
    (["ask", "ok", "--deadline", "inf"], "deadline_s: must be > 0"),
    (["ask", "ok", "--deadline", "1e308"], "deadline_s: must be > 0"),
    (["ask", "ok", "--source-timeout", "0"], "source_timeout_s: must be > 0"),
    (["ask", "ok", "--source-timeout", "-0.0"], "source_timeout_s: must be > 0"),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("args", "message"), CLI_CASES, ids=lambda v: repr(v)[:40])
def test_cli_refuses_with_exit_2_one_line_and_nothing_enqueued(
    settings_env: dict[str, str], redis_url: str, args: list[str], message: str
) -> None:
    """`producer ask` with bad input: exit 2, one line on stderr saying why, Redis untouched."""
    result = CliRunner().invoke(app, args, env=settings_env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert redis.Redis.from_url(redis_url).dbsize() == 0


@pytest.mark.e2e
def test_cli_refuses_invalid_utf8_from_the_command_line(settings_env: dict[str, str], redis_url: str) -> None:
    """Raw bytes that are not UTF-8 in argv (a real process): exit 2, one line, nothing enqueued."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}, **settings_env}
    done = subprocess.run([PRODUCER, "ask", b"caf\xe9 \xff"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"not valid UTF-8" in done.stderr and done.stderr.count(b"\n") == 1
    assert redis.Redis.from_url(redis_url).dbsize() == 0


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"question": 42}, "question: Input should be a valid string"),
        ({"question": None}, "question: Input should be a valid string"),
        ({"question": b"bytes"}, "question: Input should be a valid string"),
        ({"question": ["a", "list"]}, "question: Input should be a valid string"),
        ({"question": "ok", "sources": "weather"}, "sources"),
        ({"question": "ok", "sources": [1, 2]}, "sources.0: Input should be a valid string"),
        ({"question": "ok", "sources": ["stocks"]}, "unknown source 'stocks'"),
        ({"question": "ok", "deadline_s": "5"}, "deadline_s: Input should be a valid number"),
        ({"question": "ok", "deadline_s": True}, "deadline_s"),
        ({"question": "ok", "deadline_s": -3.0}, "deadline_s: must be > 0"),
        ({"question": "ok", "source_timeout_s": math.inf}, "source_timeout_s: must be > 0"),
        ({"question": "x" * 1_000_000}, "limit is 2,000"),
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_client_raises_invalid_request_and_enqueues_nothing(
    client: Client, kwargs: dict[str, Any], message: str
) -> None:
    """The Python client refuses wrong types and values with InvalidRequest naming the field."""
    question = kwargs.pop("question")
    with pytest.raises(InvalidRequest) as refused:
        await client.enqueue(question, **kwargs)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert await client.redis.dbsize() == 0


# ------------------------------------------------------------------------------------------------
# The validator, property-based: whatever it is given, it returns a request within the limits or
# raises InvalidRequest with one line, never anything else.
# ------------------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=20),
)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner))
questions = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1900, max_size=2100),
    st.sampled_from(["   ", "ok", "\x00", "a\udc80b", "line\nbreak\ttab", "é" * 2001]),
    anything,
)
timeouts = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), anything)
sources = st.one_of(
    st.none(),
    st.lists(st.sampled_from([*KNOWN, "stocks", " news ", ""]), max_size=4),
    st.lists(st.text(max_size=8), max_size=3),
    anything,
)
requests = st.one_of(
    st.fixed_dictionaries(
        {"question": questions},
        optional={
            "sources": sources,
            "source_timeout_s": timeouts,
            "deadline_s": timeouts,
            "no_cache": anything,
        },
    ),
    st.dictionaries(st.text(max_size=12), anything, max_size=4),
    anything,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests)
def test_parse_request_accepts_only_what_is_within_the_limits(data: object) -> None:
    """Anything accepted satisfies every limit; anything else is InvalidRequest with a one-line reason."""
    try:
        request = parse_request(data, known_sources=KNOWN, **LIMITS)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message
        return
    assert isinstance(request, QuestionRequest)
    q = request.question
    assert q and q == q.strip() and len(q) <= LIMITS["max_question_chars"]
    assert all(unicodedata.category(ch) not in ("Cc", "Cs") or ch in "\n\t" for ch in q), (
        f"control or surrogate in {q!r}"
    )
    q.encode("utf-8")  # valid UTF-8: would raise otherwise
    if request.sources is not None:
        assert request.sources and set(request.sources) <= set(KNOWN)
    for value, limit in ((request.source_timeout_s, 30.0), (request.deadline_s, 30.0)):
        assert value is None or (isinstance(value, float) and 0 < value <= limit)
