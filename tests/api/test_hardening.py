"""The API against the security review's findings, in process (the app over ASGI, Redis in memory):
error replies stay small, pages carry the browser's protections and load nothing from a CDN, one bad
listing entry costs only itself, a stream ends with an error event, /health spares Redis, requests
without a known key are limited, and event streams are capped and end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import httpx
import pytest
import redis.exceptions

from agentq import apikeys
from agentq.settings import Settings
from producer.api.app import MAX_ERROR_BYTES, create_app
from producer.client import Client

KEY, ENTRY = apikeys.new_key("alice", ("read", "submit", "cancel"), "team-a")
AUTH = {"Authorization": f"Bearer {KEY}"}


class CountingRedis(fakeredis.FakeAsyncRedis):
    """In-memory Redis that counts PINGs and can be made to fail stream reads."""

    pings = 0
    fail_reads = False

    async def ping(self, **kwargs: Any) -> bool:
        type(self).pings += 1
        return bool(await super().ping(**kwargs))

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        if type(self).fail_reads:
            raise redis.exceptions.ConnectionError("Connection reset by peer")
        return await super().xread(*args, **kwargs)


Caller = Callable[..., Any]


@pytest.fixture
async def api() -> AsyncIterator[Callable[..., Any]]:
    """Factory: an httpx client on the app for ``settings`` (the app's Redis in memory)."""
    opened: list[tuple[Client, httpx.AsyncClient]] = []
    CountingRedis.pings, CountingRedis.fail_reads = 0, False

    async def make(**settings: Any) -> httpx.AsyncClient:
        s = Settings(_env_file=None, api_keys=(ENTRY,), **settings)
        app = create_app(s)
        client = Client(s, ping=False)
        client._redis = CountingRedis()
        app.state.client = client
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        opened.append((client, http))
        return http

    yield make
    for client, http in opened:
        await http.aclose()
        await client.__aexit__()


async def test_an_error_reply_to_a_request_of_up_to_64_kb_is_at_most_8_kb(api: Caller) -> None:
    """The review's 60 KB body (12,000 sources) got 5.2 MB back; every error is now cut to fit 8 KB, and
    what was left out is counted."""
    http = await api()
    bodies = [
        {"question": "q", "sources": ["x"] * 12000},
        {"question": "q", "sources": [f"s{i}" for i in range(64)]},  # each unknown name: its own error
        {"question": 5, "sources": [1] * 10000, "deadline_s": "x" * 30000},
    ]
    for body in bodies:
        sent = json.dumps(body).encode()
        assert len(sent) <= 65536
        reply = await http.post("/api/jobs", content=sent, headers={**AUTH, "content-type": "application/json"})
        assert reply.status_code == 422 and len(reply.content) <= MAX_ERROR_BYTES, len(reply.content)
        assert reply.json()["detail"]
    many = await http.post("/api/jobs", json=bodies[1], headers=AUTH)
    assert many.json()["detail"][-1]["type"] == "too_many_errors"


async def test_pages_and_replies_carry_the_browsers_protections_and_docs_load_no_cdn(api: Caller) -> None:
    """A policy that lets pages load only their own scripts, no framing, nosniff, no referrer; /docs and
    /redoc (FastAPI serves them from a CDN) are gone, the spec stays at /openapi.json."""
    http = await api()
    for path in ("/", "/jobs/abc", "/static/dashboard.js", "/api/jobs", "/health", "/openapi.json"):
        reply = await http.get(path, headers=AUTH)
        csp = reply.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert reply.headers["x-content-type-options"] == "nosniff" and reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["referrer-policy"] == "no-referrer"
    assert (await http.get("/docs")).status_code == (await http.get("/redoc")).status_code == 404
    assert (await http.get("/openapi.json")).json()["info"]["title"] == "agentq API"
    page = (await http.get("/")).text + (await http.get("/jobs/abc")).text
    assert "http://" not in page and "https://" not in page and "style=" not in page


async def test_a_malformed_listing_entry_is_left_out_not_a_500(api: Caller) -> None:
    """A finished job's figures that do not read (a string where a time is) leave that job out."""
    http = await api()
    ids = [(await http.post("/api/jobs", json={"question": f"q{i}"}, headers=AUTH)).json()["job_id"] for i in range(2)]
    client: Client = http._transport.app.state.client
    await client.redis.set(client.keys.final(ids[0]), json.dumps({"status": "ok", "finished_ms": "soon"}))
    readable = {"status": "ok", "finished_ms": 5, "sources": {"w": ["ok"]}}  # a short row: kept, counted
    await client.redis.set(client.keys.final(ids[1]), json.dumps(readable))
    reply = await http.get("/api/jobs", headers=AUTH)
    assert reply.status_code == 200 and [j["job_id"] for j in reply.json()["jobs"]] == [ids[1]]
    stats = await http.get("/api/sources", headers=AUTH)
    assert stats.status_code == 200 and stats.json()["sources"][0]["calls"] == 1


async def test_a_stream_ends_with_an_error_event_when_redis_fails_under_it(api: Caller) -> None:
    http = await api()
    job_id = (await http.post("/api/jobs", json={"question": "q"}, headers=AUTH)).json()["job_id"]
    CountingRedis.fail_reads = True
    reply = await http.get(f"/api/jobs/{job_id}/events", headers=AUTH)
    assert reply.status_code == 200
    events = reply.text.strip().split("\n\n")
    assert events[-1].startswith("event: error\ndata: ") and "Redis" in events[-1], events


async def test_health_asks_redis_at_most_once_a_second(api: Caller) -> None:
    http = await api()
    replies = [await http.get("/health") for _ in range(50)]
    assert {r.status_code for r in replies} == {200} and CountingRedis.pings == 1


async def test_requests_without_a_known_key_are_rate_limited_per_address(api: Caller) -> None:
    """Guessing keys counts against the rate limit like any key's requests."""
    http = await api(api_rate_limit="5/minute")
    codes = [(await http.get("/api/jobs", headers={"Authorization": f"Bearer guess{i}"})).status_code for i in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    assert (await http.get("/api/jobs")).status_code == 429  # no key at all: the same address's count
    assert (await http.get("/api/jobs", headers=AUTH)).status_code == 200  # a known key has its own


async def test_event_streams_are_capped_per_key_and_end_at_their_longest_life(api: Caller) -> None:
    """A key may hold api_max_streams_per_key streams (429 past it); each ends with an error event once it
    has lasted api_stream_max_s; then the key may open another."""
    http = await api(api_max_streams_per_key=1, api_stream_max_s=0.5)
    job_id = (await http.post("/api/jobs", json={"question": "q"}, headers=AUTH)).json()["job_id"]
    first = asyncio.ensure_future(http.get(f"/api/jobs/{job_id}/events", headers=AUTH))
    streams = http._transport.app.state.streams
    async with asyncio.timeout(10):
        while streams.total < 1:  # noqa: ASYNC110 (the app's own counter: no event to wait on)
            await asyncio.sleep(0.01)
    second = await http.get(f"/api/jobs/{job_id}/events", headers=AUTH)
    assert second.status_code == 429 and "event streams" in second.json()["detail"]
    ended = await first
    assert ended.text.strip().split("\n\n")[-1].startswith("event: error") and "longest life" in ended.text
    assert streams.total == 0
    third = await http.get(f"/api/jobs/{job_id}/events", headers=AUTH)
    assert third.status_code == 200 and "longest life" in third.text
