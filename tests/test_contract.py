"""The job contract: request validation, the JSON codec, settings, and how they reach Redis and arq."""

from __future__ import annotations

import json
import pickle

import pytest
from redis.asyncio.connection import SSLConnection

from agentq.connection import redis_client
from agentq.contract import JOB_FUNCTION, JobResult, QuestionRequest, dumps, loads, parse_request
from agentq.errors import InvalidRequest
from agentq.settings import Settings
from agentq.sources import source_names
from worker.engine.app import create_worker

LIMITS = {
    "known_sources": source_names(),
    "max_question_chars": 50,
    "max_source_timeout_s": 30.0,
    "max_deadline_s": 60.0,
}


def parse(data: object) -> QuestionRequest:
    return parse_request(data, **LIMITS)  # type: ignore[arg-type]


def test_valid_request_is_stripped_and_keeps_options() -> None:
    """A good request is accepted, its question stripped, duplicate sources dropped."""
    r = parse({"question": "  rain in Paris?\n", "sources": ["news", "weather", "news"], "deadline_s": 5})
    assert r.question == "rain in Paris?"
    assert r.sources == ("news", "weather")
    assert r.deadline_s == 5.0
    assert r.source_timeout_s is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"question": ""}, "question is empty"),
        ({"question": " \t\n "}, "question is empty"),
        ({"question": "x" * 51}, "51 characters; the limit is 50"),
        ({"question": "bell\x07"}, "control character (U+0007)"),
        ({"question": "nul\x00byte"}, "control character (U+0000)"),
        ({"question": "bad \udcff utf-8"}, "not valid UTF-8"),
        ({"question": 42}, "question: Input should be a valid string"),
        ({"question": None}, "question: Input should be a valid string"),
        ({}, "question: Field required"),
        ({"question": "ok", "sources": ["weather", "stock"]}, "unknown source 'stock'"),
        ({"question": "ok", "sources": []}, "no source named"),
        ({"question": "ok", "sources": "weather"}, "sources: Input should be a valid tuple"),
        ({"question": "ok", "source_timeout_s": -1}, "source_timeout_s: must be > 0"),
        ({"question": "ok", "source_timeout_s": 0}, "source_timeout_s: must be > 0"),
        ({"question": "ok", "deadline_s": 1e9}, "deadline_s: must be > 0 and <= 60"),
        ({"question": "ok", "deadline_s": float("nan")}, "deadline_s: must be > 0"),
        ({"question": "ok", "deadline_s": "5"}, "deadline_s: Input should be a valid number"),
        ({"question": "ok", "extra": 1}, "extra: Extra inputs are not permitted"),
        (["question"], "Input should be a valid dictionary"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_reason(data: object, message: str) -> None:
    """Every kind of bad input raises InvalidRequest whose one-line message says what is wrong."""
    with pytest.raises(InvalidRequest) as caught:
        parse(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_newline_and_tab_are_allowed_inside_a_question() -> None:
    """Multi-line questions are fine: only other control characters are refused."""
    assert parse({"question": "line one\nline\ttwo"}).question == "line one\nline\ttwo"


def test_codec_is_json_and_refuses_pickle() -> None:
    """The arq serializer writes JSON text; the deserializer will not read a pickle."""
    payload = {"question": "q", "sources": ("news",)}
    raw = dumps(payload)
    assert json.loads(raw) == {"question": "q", "sources": ["news"]}
    assert loads(raw) == {"question": "q", "sources": ["news"]}
    with pytest.raises(ValueError):
        loads(pickle.dumps(payload))


def test_codec_keeps_the_reason_of_an_exception() -> None:
    """An exception arq stores as a job's result becomes its name and message, not a pickle."""
    assert loads(dumps({"r": RuntimeError("boom")})) == {"r": {"error": "RuntimeError", "message": "boom"}}


def test_result_round_trips_through_json(sample_result: JobResult) -> None:
    """A full result survives dumps/loads and validation unchanged."""
    again = JobResult.model_validate(loads(dumps(sample_result.model_dump(mode="json"))))
    assert again == sample_result


def test_the_worker_registers_the_job_function_as_arq_does_with_a_timeout_above_any_deadline() -> None:
    """One function, in arq's registry form, whose timeout lies past the longest deadline a request may ask;
    a job's lease is far shorter (renewed while it runs), so a dead worker's job comes back quickly."""
    s = Settings(redis_url="redis://127.0.0.1:6390/2", deadline_s=15, max_deadline_s=30)
    w = create_worker(s)
    (function,) = w.functions.values()
    assert function.name == JOB_FUNCTION and function.timeout_s is not None
    assert function.timeout_s > s.max_deadline_s > s.deadline_s > s.lease_s
    assert s.poll_delay_s < s.redis_socket_timeout_s and w.keys.queue == s.keys.queue


async def test_the_redis_connection_follows_the_url_and_retries_when_redis_is_down() -> None:
    """Host, port and db come from the URL; commands are retried on OSError and redis-py's connection errors."""
    client = redis_client(Settings(redis_url="redis://127.0.0.1:6390/2", redis_socket_timeout_s=7))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == ("127.0.0.1", 6390, 2, 7)
    assert OSError in kwargs["retry_on_error"] and kwargs["socket_keepalive"]
    await client.aclose()


async def test_redis_url_with_password_and_tls() -> None:
    """A password and rediss:// reach the connection, TLS checks the hostname, messages mask the password."""
    s = Settings(redis_url="rediss://agent:s3cret@redis.example:6380/0", redis_ca_file="/etc/ca.pem")
    client = redis_client(s)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["username"], kwargs["ssl_check_hostname"]) == ("s3cret", "agent", True)
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert issubclass(client.connection_pool.connection_class, SSLConnection)
    assert "s3cret" not in s.redis_url_safe and "***" in s.redis_url_safe
    await client.aclose()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """AGENTQ_ variables (JSON for dicts and sets) and plain REDIS_URL configure the settings."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7000/0")
    monkeypatch.setenv("AGENTQ_TIME_SCALE", "0.5")
    monkeypatch.setenv("AGENTQ_SOURCE_FAIL", '["news"]')
    monkeypatch.setenv("AGENTQ_SOURCE_LATENCY_S", '{"weather": 0.1}')
    s = Settings()
    assert s.redis_url == "redis://127.0.0.1:7000/0"
    assert (s.time_scale, s.source_fail, s.source_latency_s) == (0.5, frozenset({"news"}), {"weather": 0.1})


def test_bad_settings_are_refused() -> None:
    """A Redis URL of another scheme is rejected when settings are read."""
    with pytest.raises(ValueError, match="redis://"):
        Settings(redis_url="http://127.0.0.1:6379")
