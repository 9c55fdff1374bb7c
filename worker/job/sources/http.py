"""HTTP sources: JSON APIs fetched through the worker's one pooled ``httpx.AsyncClient``.

Each source is an endpoint under ``AGENTQ_UPSTREAM_URL`` (``GET <url>/<path>?q=<question>``) or
has its own URL in ``AGENTQ_SOURCE_URLS``; with neither it is left out of the default set, and a
request that names it gets an error saying what to set. The JSON body is validated by a small
pydantic model per endpoint (unknown fields ignored) and rendered as the text inference reads.

Failures are mapped at this edge so retries and breakers can tell them apart::

    HTTP 429, HTTP 5xx, connection refused/reset, connect timeout  ->  TransientSourceError
    any other non-2xx (4xx), a body that is not the expected JSON   ->  SourceError (permanent)
    an answer over ``max_source_bytes`` (the read stops there),
    or one whose text would be over that many characters            ->  SourceError (permanent)

The client's read timeout is only a backstop (``max_source_timeout_s``): the fan-out's per-source
timeout cancels the request first, and that cancellation closes the connection it was using.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from agentq import __version__, tracing
from agentq.errors import SourceError, TransientSourceError
from agentq.settings import Settings
from agentq.sources import Source, SourceContext


def create_client(settings: Settings, worker_id: str) -> httpx.AsyncClient:
    """The worker process's HTTP client: one connection pool shared by every job and source.

    The User-Agent names the worker, so an upstream can tell workers apart (and count their connections).
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.max_source_timeout_s, connect=settings.upstream_connect_timeout_s),
        limits=httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_connections,
        ),
        headers={"User-Agent": f"agentq/{__version__} (worker {worker_id})", "Accept": "application/json"},
        follow_redirects=True,
        event_hooks={"request": [_trace_context]},
    )


async def _trace_context(request: httpx.Request) -> None:
    """Send the current fetch span's W3C trace context upstream (nothing when tracing is off)."""
    request.headers.update(tracing.inject())


# --------------------------------------------------------------------------------------------
# What each endpoint answers (only the fields we read) and how it reads as text
# --------------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def parts(self) -> Iterator[str]:
        """The answer as text, one item at a time."""
        raise NotImplementedError

    def text(self, limit: int | None = None) -> str | None:
        """The parts joined by spaces; None if that is over ``limit`` characters.

        A small body can render long (a location repeated per period, ``1e300`` printed in full),
        so the count stops as soon as it passes the limit instead of building the whole text first.
        """
        kept: list[str] = []
        length = -1
        for part in self.parts():
            length += len(part) + 1
            if limit is not None and length > limit:
                return None
            kept.append(part)
        return " ".join(kept)


class _Period(_Body):
    period: str
    summary: str
    temperature_c: float
    precipitation_chance: float


class WeatherBody(_Body):
    location: str
    forecast: list[_Period]

    def parts(self) -> Iterator[str]:
        for p in self.forecast:
            yield (
                f"{p.period.capitalize()} in {self.location}: {p.summary} {p.temperature_c:.0f} degrees, "
                f"{p.precipitation_chance:.0%} chance of rain."
            )


class _Article(_Body):
    title: str
    summary: str
    outlet: str


class NewsBody(_Body):
    articles: list[_Article]

    def parts(self) -> Iterator[str]:
        return (f"{a.title} ({a.outlet}). {a.summary}" for a in self.articles)


class _Entry(_Body):
    title: str
    extract: str


class KnowledgeBody(_Body):
    entries: list[_Entry]

    def parts(self) -> Iterator[str]:
        return (f"{e.title}: {e.extract}" for e in self.entries)


class _Quote(_Body):
    symbol: str
    price: float
    change_pct: float
    comment: str


class StocksBody(_Body):
    quotes: list[_Quote]

    def parts(self) -> Iterator[str]:
        return (f"{q.symbol} at {q.price:.2f} ({q.change_pct:+.1f}%): {q.comment}" for q in self.quotes)


class _Place(_Body):
    name: str
    lat: float
    lon: float
    description: str


class GeoBody(_Body):
    places: list[_Place]

    def parts(self) -> Iterator[str]:
        return (f"{p.name} ({p.lat:.3f}, {p.lon:.3f}): {p.description}" for p in self.places)


@dataclass(frozen=True)
class Endpoint:
    """One HTTP source: its name, its path under the upstream URL and the shape of its answer."""

    source: str
    path: str
    body: type[_Body]


#: The HTTP sources; the mock upstream (``agentq_tools.upstream``) serves every path here.
ENDPOINTS = (
    Endpoint("weather_api", "weather", WeatherBody),
    Endpoint("news_api", "news", NewsBody),
    Endpoint("knowledge_base_api", "knowledge_base", KnowledgeBody),
    Endpoint("stocks_api", "stocks", StocksBody),
    Endpoint("geo_api", "geo", GeoBody),
)


def url_of(endpoint: Endpoint, settings: Settings) -> str | None:
    """Where the source is fetched from: its own URL, else under the upstream URL, else nowhere."""
    if endpoint.source in settings.source_urls:
        return settings.source_urls[endpoint.source]
    if settings.upstream_url:
        return f"{settings.upstream_url.rstrip('/')}/{endpoint.path}"
    return None


def _not_configured(endpoint: Endpoint) -> str:
    return f"no URL configured: set AGENTQ_UPSTREAM_URL, or AGENTQ_SOURCE_URLS with a URL for {endpoint.source}"


def _unready(endpoint: Endpoint, settings: Settings) -> str | None:
    return _not_configured(endpoint) if url_of(endpoint, settings) is None else None


def shown(url: str) -> str:
    """The URL for messages: no credentials, no query string (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))


def _retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (the HTTP-date form is rare for APIs and ignored)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


async def _read_capped(response: httpx.Response, limit: int, url: str) -> bytes:
    """The (decoded) body, read chunk by chunk and given up on once past ``limit`` bytes.

    httpx has no body-size limit of its own, so the count is kept here: a declared
    ``Content-Length`` over the limit is refused before reading, and an undeclared or lying one
    stops the read at the first chunk past the limit (leaving the ``stream`` block closes the
    connection). Retrying would get the same answer, hence a permanent :class:`SourceError`.
    """
    too_long = SourceError(f"answer over {limit} bytes from {shown(url)}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and "content-encoding" not in response.headers:
        raise too_long
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_long
    return bytes(body)


async def get(
    ctx: SourceContext, url: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """GET ``url`` through the worker's client: the body (capped at ``max_source_bytes``) and its status line.

    Every failure is mapped as the module docstring says; messages name the URL without its query.
    """
    if ctx.http is None:
        raise SourceError("no HTTP client here (a worker opens one at start-up)")
    try:
        async with ctx.http.stream("GET", url, params=params, headers=headers) as response:
            status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientSourceError(f"{status} from {shown(url)}", retry_after_s=_retry_after(response))
            if not response.is_success:
                raise SourceError(f"{status} from {shown(url)}")
            return await _read_capped(response, ctx.settings.max_source_bytes, url), status
    except httpx.TimeoutException as exc:  # connect or pool timeout (reads are cut by the fan-out first)
        raise TransientSourceError(f"{type(exc).__name__} talking to {shown(url)}") from exc
    except httpx.TransportError as exc:  # refused, reset, DNS, protocol errors
        raise TransientSourceError(f"cannot reach {shown(url)}: {type(exc).__name__}: {exc}") from exc


async def fetch(endpoint: Endpoint, question: str, ctx: SourceContext) -> str:
    """GET the endpoint with the question, check the answer, return it as text."""
    url = url_of(endpoint, ctx.settings)
    if url is None:
        raise SourceError(_not_configured(endpoint))
    content, status = await get(ctx, url, params={"q": question})
    try:
        body = endpoint.body.model_validate_json(content)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise SourceError(f"unexpected answer from {shown(url)} ({status}): {where}: {first['msg']}") from exc
    text = body.text(ctx.settings.max_source_bytes)
    if text is None:
        raise SourceError(f"answer from {shown(url)} renders to over {ctx.settings.max_source_bytes} characters")
    return text


def http_source(endpoint: Endpoint) -> Source:
    """The :class:`Source` that fetches ``endpoint``."""

    async def fetch_endpoint(question: str, ctx: SourceContext) -> str:
        return await fetch(endpoint, question, ctx)

    fetch_endpoint.__name__ = fetch_endpoint.__qualname__ = endpoint.source
    fetch_endpoint.__doc__ = f"GET <upstream>/{endpoint.path}?q=<question>"
    return Source(endpoint.source, fetch_endpoint, kind="http", unready=functools.partial(_unready, endpoint))


weather_api, news_api, knowledge_base_api, stocks_api, geo_api = (http_source(e) for e in ENDPOINTS)
