"""The installed sources, the enabled and default sets, and the HTTP sources' edge, without a network.

HTTP answers come from ``httpx.MockTransport``, so every status and body can be tried in
milliseconds; the real mock upstream is exercised in ``test_http_sources.py``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable, Iterable

import httpx
import pytest
from pydantic import ValidationError

from agentq.analyses import analysis_names, installed_analyses
from agentq.errors import InvalidRequest, SourceError, TransientSourceError
from agentq.settings import Settings
from agentq.sources import SourceContext, default_sources, enabled_sources, installed_sources, source_names
from agentq_tools import plugins as tools_plugins
from agentq_tools.upstream import answer
from producer.client import Client
from worker.job.sources.http import ENDPOINTS, create_client

SIMULATED = ("weather", "news", "knowledge_base")
HTTP = tuple(e.source for e in ENDPOINTS)
Handler = Callable[[httpx.Request], httpx.Response]


async def fetch(name: str, handler: Handler, **settings: object) -> str:
    """Run the registered source ``name`` against ``handler`` with an upstream URL configured."""
    s = Settings(**{"upstream_url": "http://user:secret@upstream.test:8080/api/", **settings})  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await installed_sources()[name].fetch("Rain in Paris?", SourceContext(s, "job-1", http=http))


def defaults(settings: Settings) -> tuple[str, ...]:
    """The default set of a worker with these settings."""
    return default_sources(settings, enabled_sources(settings))


def test_at_least_five_sources_and_the_default_set_follows_configuration() -> None:
    """Eight built-in sources are installed; HTTP ones join the default set only once a URL is configured."""
    assert set(SIMULATED) | set(HTTP) <= set(source_names()) and len(HTTP) >= 5
    assert set(source_names()) == set(installed_sources())  # the names are read without importing, the same
    local = defaults(Settings())
    assert local == SIMULATED  # opt-in sources (the tools' test and bench sources) never join it
    assert set(defaults(Settings(upstream_url="http://u.test"))) == set(local) | set(HTTP)
    assert set(defaults(Settings(source_urls={"geo_api": "http://geo.test/x"}))) == {*local, "geo_api"}
    chosen = Settings(upstream_url="http://u.test", default_sources=("news_api", "weather", "news_api"))
    assert defaults(chosen) == ("news_api", "weather")


def test_opt_in_sources_are_served_only_when_enabled_by_name() -> None:
    """A worker serves opt-in sources only when AGENTQ_ENABLED_SOURCES names them; a name not installed is refused."""
    available = {**installed_sources(), **{source.name: source for source in tools_plugins.SOURCES}}
    assert available["poison"].opt_in and "poison" not in enabled_sources(Settings(), available)
    chosen = enabled_sources(Settings(enabled_sources=("news", "poison")), available)
    assert list(chosen) == ["news", "poison"]
    assert default_sources(Settings(enabled_sources=("news", "poison")), chosen) == ("news",)
    with pytest.raises(ValueError, match="not installed: nope"):
        enabled_sources(Settings(enabled_sources=("news", "nope")), available)


def test_the_tools_test_plugins_are_not_installed_as_sources_or_analyses() -> None:
    """After ``make install`` the tests' and the benchmark's plugins are no entry points: no producer lists or
    accepts them, no worker loads them unless AGENTQ_PLUGIN_MODULES names ``agentq_tools.plugins``."""
    tools = {p.name for p in [*tools_plugins.SOURCES, *tools_plugins.ANALYSES]}
    assert {"noop", "poison", "flaky", "ticker", "extra_04", "numpy_similarity"} <= tools
    assert not tools & {*source_names(), *installed_sources(), *analysis_names(), *installed_analyses()}
    with pytest.raises(InvalidRequest, match="unknown source 'poison'; known: ") as refused:
        Client(Settings()).validate("q", sources=["poison"])
    known = set(str(refused.value).split("known: ", 1)[1].replace(",", " ").split())
    assert "weather" in known and not tools & known


def test_a_default_set_that_cannot_run_is_refused() -> None:
    """AGENTQ_DEFAULT_SOURCES with an unknown name, or an HTTP source without a URL, is a ValueError."""
    with pytest.raises(ValueError, match=r"'nope' is not a source this worker serves"):
        defaults(Settings(default_sources=("weather", "nope")))
    with pytest.raises(ValueError, match=r"'stocks_api' cannot run here: no URL configured"):
        defaults(Settings(default_sources=("stocks_api",)))


def test_upstream_urls_must_be_http() -> None:
    """Upstream and per-source URLs must be http(s); an empty upstream URL means none."""
    with pytest.raises(ValidationError, match="http"):
        Settings(upstream_url="ftp://u.test")
    with pytest.raises(ValidationError, match="geo_api"):
        Settings(source_urls={"geo_api": "u.test/geo"})
    assert Settings(upstream_url="").upstream_url is None


async def test_each_source_gets_its_endpoint_with_the_question_and_renders_the_answer() -> None:
    """GET <upstream>/<path>?q=question; the JSON body is rendered as text holding its fields."""
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=answer(request.url.path.rsplit("/", 1)[-1], request.url.params["q"]))

    for endpoint in ENDPOINTS:
        text = await fetch(endpoint.source, handler)
        assert text == endpoint.body.model_validate(answer(endpoint.path, "Rain in Paris?")).text()
        assert len(text) > 200
    assert [u.path for u in seen] == [f"/api/{e.path}" for e in ENDPOINTS]
    assert {u.params["q"] for u in seen} == {"Rain in Paris?"}
    weather = await fetch("weather_api", handler)
    assert "Paris" in weather and "chance of rain" in weather


async def test_a_source_url_overrides_the_upstream() -> None:
    """AGENTQ_SOURCE_URLS sends that one source elsewhere; the others stay under the upstream URL."""
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, json={"places": []})

    await fetch("geo_api", handler, source_urls={"geo_api": "https://maps.test/v2/places"})
    assert hosts == ["maps.test"]


@pytest.mark.parametrize(
    ("response", "transient", "message"),
    [
        (httpx.Response(503), True, "HTTP 503 Service Unavailable from http://upstream.test:8080/api/news"),
        (httpx.Response(500, text="boom"), True, "HTTP 500"),
        (httpx.Response(429, headers={"Retry-After": "3"}), True, "HTTP 429 Too Many Requests"),
        (httpx.Response(404), False, "HTTP 404 Not Found"),
        (httpx.Response(401), False, "HTTP 401"),
        (httpx.Response(200, text="<html>oops</html>"), False, "unexpected answer"),
        (httpx.Response(200, json={"articles": [{"title": 1}]}), False, "articles.0.title"),
    ],
)
async def test_statuses_and_bodies_map_to_transient_or_permanent_errors(
    response: httpx.Response, transient: bool, message: str
) -> None:
    """5xx and 429 are TransientSourceError, 4xx and bad bodies plain SourceError; the message says which."""
    with pytest.raises(SourceError) as caught:
        await fetch("news_api", lambda request: response)
    assert isinstance(caught.value, TransientSourceError) is transient
    assert message in str(caught.value)
    assert "secret" not in str(caught.value) and "Rain" not in str(caught.value), "no credentials or question"
    if response.status_code == 429:
        assert isinstance(caught.value, TransientSourceError) and caught.value.retry_after_s == 3.0


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.ReadError("x")])
async def test_transport_failures_are_transient(error: httpx.TransportError) -> None:
    """Refused, timed-out or broken connections are TransientSourceError naming the upstream."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(TransientSourceError, match=r"upstream\.test:8080/api/knowledge_base"):
        await fetch("knowledge_base_api", handler)


class Trickle(httpx.AsyncByteStream):
    """A response body sent chunk by chunk, counting what the client took and whether it hung up."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


LIMIT, CHUNK, HUGE = 262_144, 65_536, 10 * 1024 * 1024


def ten_megabytes() -> Iterable[bytes]:
    """A JSON answer that never ends soon: 10 MB of filler after a valid start, made lazily."""
    yield b'{"articles": [], "padding": "'
    for _ in range(HUGE // CHUNK):
        yield b"." * CHUNK


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_huge_answer_is_a_permanent_error_after_reading_at_most_the_limit(declared: bool) -> None:
    """A 10 MB answer: SourceError naming the limit, the read stopped past 256 KiB (at once if declared), closed."""
    body = Trickle(ten_megabytes())
    headers = {"Content-Length": str(HUGE + 29)} if declared else {}

    with pytest.raises(SourceError) as caught:
        await fetch("news_api", lambda request: httpx.Response(200, headers=headers, stream=body))

    assert not isinstance(caught.value, TransientSourceError), "retrying would get the same answer"
    assert str(caught.value) == f"answer over {LIMIT} bytes from http://upstream.test:8080/api/news"
    assert body.closed, "the response was closed, not left to be read to the end"
    assert body.sent == 0 if declared else LIMIT < body.sent <= LIMIT + CHUNK + 29, body.sent


async def test_the_limit_counts_decoded_bytes_and_is_exact() -> None:
    """A gzip answer is counted after decoding; an answer of exactly AGENTQ_MAX_SOURCE_BYTES passes, one more fails."""
    small = json.dumps(answer("news", "Rain in Paris?")).encode()
    assert len(await fetch("news_api", lambda request: httpx.Response(200, content=small), max_source_bytes=len(small)))
    with pytest.raises(SourceError, match=f"answer over {len(small) - 1} bytes"):
        await fetch("news_api", lambda request: httpx.Response(200, content=small), max_source_bytes=len(small) - 1)

    bomb = gzip.compress(b"".join(ten_megabytes()), compresslevel=9)
    assert len(bomb) < 20_000  # tiny on the wire, 10 MB once decoded
    body = Trickle(bomb[i : i + 1024] for i in range(0, len(bomb), 1024))
    gzipped = {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}
    with pytest.raises(SourceError, match=f"answer over {LIMIT} bytes"):
        await fetch("news_api", lambda request: httpx.Response(200, headers=gzipped, stream=body))
    assert body.closed and body.sent < len(bomb), "the read stopped before the end of the compressed body"


async def test_a_small_answer_that_renders_long_is_refused() -> None:
    """A 100 KB answer whose text would be megabytes (its location repeated per period) is a SourceError."""
    period = {"period": "today", "summary": "Dry.", "temperature_c": 1e300, "precipitation_chance": 0.1}
    weather = {"location": "x" * 100_000, "forecast": [period] * 40}
    assert len(json.dumps(weather)) < LIMIT

    with pytest.raises(SourceError, match=f"renders to over {LIMIT} characters") as caught:
        await fetch("weather_api", lambda request: httpx.Response(200, json=weather))
    assert not isinstance(caught.value, TransientSourceError)
    text = await fetch("weather_api", lambda request: httpx.Response(200, json=weather), max_source_bytes=5_000_000)
    assert text.count("x" * 100_000) == 40  # the same answer under a larger limit renders in full


async def test_unconfigured_or_clientless_http_source_says_what_is_missing() -> None:
    """No URL: the error names the settings to set; no client (outside a worker): says so."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(SourceError, match="AGENTQ_UPSTREAM_URL"):
            await installed_sources()["stocks_api"].fetch("q", SourceContext(Settings(), "job-1", http=http))
    with pytest.raises(SourceError, match="no HTTP client"):
        await installed_sources()["stocks_api"].fetch(
            "q", SourceContext(Settings(upstream_url="http://u.test"), "job-1")
        )


async def test_worker_client_names_the_worker_and_uses_the_configured_limits() -> None:
    """The worker's client: User-Agent with the worker id, connect timeout from settings, a read backstop."""
    s = Settings(upstream_connect_timeout_s=1.5, max_source_timeout_s=12.0)
    async with create_client(s, "host:1:abc") as http:
        assert "(worker host:1:abc)" in http.headers["user-agent"]
        assert http.timeout.connect == 1.5 and http.timeout.read == 12.0
