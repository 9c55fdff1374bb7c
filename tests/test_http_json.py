"""Sources defined by settings alone (AGENTQ_HTTP_SOURCES): unit tests on httpx.MockTransport, and one
end to end through a real worker against the real mock upstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import httpx
import pytest

from agentq.errors import SourceError, TransientSourceError
from agentq.settings import Settings
from agentq.sources import SourceContext, source_names
from agentq_tools.upstream import MockUpstream, answer
from producer.client import Client
from producer.display import summary
from worker.job.sources.http_json import http_json_sources

QUESTION = "Is the rail strike in Paris over?"
FIELDS = ["articles[].title", "articles[].summary"]


def settings_with(url: str, tmp_path: Path | None = None, **extra: object) -> Settings:
    """Settings defining the source ``headlines`` at ``url``, with a secret header file when ``tmp_path`` is given."""
    config: dict[str, object] = {"url": url, "fields": FIELDS, "headers": {"X-Client": "agentq-test"}, **extra}
    if tmp_path is not None:
        secret = tmp_path / "token"
        secret.write_text("Bearer s3cret-token\n")
        config["header_files"] = {"Authorization": str(secret)}
    return Settings(http_sources={"headlines": config})  # type: ignore[arg-type]


async def fetch(settings: Settings, handler: Callable[[httpx.Request], httpx.Response]) -> str:
    source = http_json_sources(settings)["headlines"]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await source.fetch_text(QUESTION, SourceContext(settings, "job-1", http=http))


async def test_the_url_template_fields_and_headers(tmp_path: Path) -> None:
    """{question} is URL-encoded into the template; the fields are read in order; plain and secret headers are sent."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer("news", QUESTION))

    s = settings_with("http://api.test/v2/news?lang=en&q={question}", tmp_path)
    text = await fetch(s, handler)

    body = answer("news", QUESTION)
    assert text.splitlines() == [a["title"] for a in body["articles"]] + [a["summary"] for a in body["articles"]]
    (request,) = seen
    assert str(request.url) == "http://api.test/v2/news?lang=en&q=Is%20the%20rail%20strike%20in%20Paris%20over%3F"
    assert request.headers["authorization"] == "Bearer s3cret-token" and request.headers["x-client"] == "agentq-test"
    source = http_json_sources(s)["headlines"]
    assert source.kind == "http" and "s3cret" not in repr(source) and "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("response", "transient", "message"),
    [
        (httpx.Response(503), True, "HTTP 503 Service Unavailable from http://api.test/news"),
        (httpx.Response(404), False, "HTTP 404 Not Found from http://api.test/news"),
        (httpx.Response(200, text="<html>"), False, "not JSON"),
        (httpx.Response(200, json={"items": []}), False, "no value at articles[].title, articles[].summary"),
    ],
)
async def test_failures_map_like_the_built_in_http_sources(
    tmp_path: Path, response: httpx.Response, transient: bool, message: str
) -> None:
    """Statuses map to transient or permanent errors; bodies without the fields are permanent; no secret leaks."""
    with pytest.raises(SourceError) as caught:
        await fetch(settings_with("http://api.test/news?q={question}", tmp_path), lambda request: response)
    assert isinstance(caught.value, TransientSourceError) is transient
    assert message in str(caught.value) and "s3cret" not in str(caught.value) and "strike" not in str(caught.value)


def test_settings_are_checked_and_the_producer_learns_the_names() -> None:
    """Bad URLs and JMESPath are refused when settings are read; the names join source_names without importing."""
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(http_sources={"x": {"url": "ftp://a/{question}", "fields": ["a"]}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not a JMESPath expression"):
        Settings(http_sources={"x": {"url": "http://a", "fields": ["a[?"]}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="Unexpected keyword argument"):
        Settings(http_sources={"x": {"url": "http://a", "fields": ["a"], "policies": {"cach": False}}})  # type: ignore[dict-item]
    s = settings_with("http://api.test/news?q={question}", timeout_s=1.5, policies={"cache": False}, opt_in=True)
    assert "headlines" in source_names(s) and "headlines" not in source_names()
    source = http_json_sources(s)["headlines"]
    assert (source.timeout_s, source.policies.cache, source.policies.retries, source.opt_in) == (1.5, False, True, True)


@pytest.mark.e2e
async def test_a_settings_only_source_answers_from_the_mock_upstream(
    client: Client, start_worker_processes: Callable[..., list[Popen[bytes]]], tmp_path: Path
) -> None:
    """A source defined only in AGENTQ_HTTP_SOURCES reads /news?q= of the real mock upstream through a real worker."""
    with MockUpstream("--latency", "0.05") as upstream:
        secret = tmp_path / "news-token"
        secret.write_text("Bearer not-checked-by-the-mock")
        definition = {
            "headlines": {
                "url": f"{upstream.url}/news?q={{question}}",
                "fields": FIELDS,
                "header_files": {"Authorization": str(secret)},
                "timeout_s": 2.0,
                "policies": {"cache": False},
            }
        }
        env = {"AGENTQ_HTTP_SOURCES": json.dumps(definition)}
        (worker,) = start_worker_processes(1, **env)
        producer = Client(Settings(redis_url=client.settings.redis_url, http_sources=definition))  # type: ignore[arg-type]
        async with producer:
            job_id = await producer.enqueue(QUESTION, sources=["headlines", "weather"])
            result = await producer.result(job_id, timeout=60)
        stats = upstream.stats()

    from rich.console import Console

    Console(width=140, force_terminal=False).print(summary(result))
    print("headlines' data (what the analysis read):", *(result.sources[0].data or "").splitlines()[:4], sep="\n  ")
    assert result.status == "ok", result.errors
    headlines = next(o for o in result.sources if o.name == "headlines")
    articles = answer("news", QUESTION)["articles"]
    assert headlines.data is not None and headlines.data.splitlines()[0] == articles[0]["title"]
    assert headlines.timeout_s == 2.0 and headlines.cache == "off"
    assert headlines.inference is not None and headlines.inference.analysis == "bag_of_words"
    assert headlines.inference.summary in headlines.data
    assert any(line.startswith("[headlines] ") for line in result.answer)
    assert stats["endpoints"]["news"]["ok"] == 1
    assert worker.poll() is None
