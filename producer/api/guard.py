"""What every API request passes before a route sees it: its size, its key, its scope, its rate.

One ASGI middleware, in front of everything, so a refused request never reaches a route or Redis:

- a body over ``api_max_body_bytes`` is 413 (a declared ``Content-Length`` at once, a chunked body
  as soon as it passes the cap);
- ``/api/*`` needs a key, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``: none or an
  unknown one is 401; a key without the route's scope is 403 (:func:`scope_for`); the key goes on
  to the route in the request's state (``request.state.api_key``): its tenant bounds what it sees;
- each key may make ``api_rate_limit`` requests (a moving window, counted in Redis by the ``limits``
  library on the API's own connection pool, so every API process shares one count; while Redis
  cannot be reached, in this process's memory): past it, 429 with ``Retry-After``; requests with no
  key or an unknown one count against the same limit per client address, so guessing keys is
  limited too.

:class:`Streams` caps the event streams (SSE) open at once, per key and per process: each holds a
Redis connection for as long as it lasts.

The dashboard's pages, its static files, ``/health`` and the OpenAPI spec need no key; the pages
ask for one and send it with every call they make.

:class:`SecurityHeaders` puts the browser's protections on every reply: a Content-Security-Policy
that lets the pages load only their own scripts, styles and images and no one frame them, with
``nosniff`` and no referrer (the dashboard keeps a key in ``sessionStorage``: nothing from another
origin may run beside it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from limits import parse as parse_rate_limit
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter as LocalRateLimiter
from starlette.exceptions import HTTPException

from agentq import apikeys
from agentq.apikeys import ApiKey
from agentq.connection import limits_storage
from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def scope_for(method: str, path: str) -> str:
    """The scope a request to ``/api/...`` needs."""
    if method == "POST" and path.endswith(("/cancel", "/queue/purge")):
        return "cancel"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    return "submit"


class RateLimits:
    """One moving-window limit per name (a key's, an address's), counted in Redis, or in memory while
    Redis cannot be reached (each process then counts its own, as the limit is better kept loosely than
    not at all)."""

    def __init__(self, limit: str, key_prefix: str) -> None:
        self.limit = parse_rate_limit(limit)
        self.key_prefix = key_prefix
        self.shared: MovingWindowRateLimiter | None = None
        self.local = LocalRateLimiter(MemoryStorage())

    def connect(self, redis: Redis) -> None:
        """Count in Redis, on ``redis``'s connections (the API client's own bounded pool)."""
        self.shared = MovingWindowRateLimiter(limits_storage(redis, self.key_prefix))

    async def hit(self, name: str) -> tuple[bool, float]:
        """Count one request of ``name``: whether it is within the limit, and when its window next frees a request."""
        if self.shared is not None:
            try:
                allowed = await self.shared.hit(self.limit, name)
                reset = (await self.shared.get_window_stats(self.limit, name)).reset_time
                return allowed, reset
            except REDIS_DOWN as exc:
                log.warning("counting the rate limit in this process's memory: Redis cannot be reached (%s)", exc)
        allowed = self.local.hit(self.limit, name)
        return allowed, self.local.get_window_stats(self.limit, name).reset_time


class Guard:
    """The middleware (see the module's docstring)."""

    def __init__(
        self, app: ASGIApp, *, keys: list[ApiKey], rate_limit: str, max_body_bytes: int, key_prefix: str = "agentq"
    ) -> None:
        self.app, self.keys, self.max_body_bytes = app, keys, max_body_bytes
        self.limits = RateLimits(rate_limit, f"{key_prefix}:api-rate")
        self.limit = self.limits.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        path = scope.get("path", "")
        if path.startswith("/api/") or path == "/api":
            client = scope.get("client") or ("unknown", 0)
            if self.limits.shared is None and (api_client := getattr(scope["app"].state, "client", None)) is not None:
                self.limits.connect(api_client.redis)
            refusal = await self._refusal(scope["method"], path, headers, str(client[0]))
            if not isinstance(refusal, ApiKey):
                status, detail, extra = refusal
                await _reply(send, status, detail, extra)
                return
            scope.setdefault("state", {})["api_key"] = refusal
        await self.app(scope, self._capped(receive), send)

    async def _over(self, name: str) -> dict[str, str] | None:
        """Count a request of ``name``; past the limit, the ``Retry-After`` header to refuse it with."""
        allowed, reset = await self.limits.hit(name)
        return None if allowed else {"retry-after": str(max(1, math.ceil(reset - time.time())))}

    async def _refusal(
        self, method: str, path: str, headers: dict[str, str], address: str
    ) -> tuple[int, str, dict[str, str]] | ApiKey:
        """Why the request is refused (status, detail, headers), or the key that may make it."""
        presented = headers.get("x-api-key", "")
        auth = headers.get("authorization", "")
        if not presented and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        challenge = {"www-authenticate": 'Bearer realm="agentq"'}
        if not presented or (key := apikeys.find(self.keys, presented)) is None:
            if (wait := await self._over(f"address:{address}")) is not None:
                return 429, f"rate limit of {self.limit} exceeded for requests without a known key", wait
            if not presented:
                return 401, "an API key is required (Authorization: Bearer <key>, or X-API-Key)", challenge
            return 401, "unknown API key", challenge
        if (wait := await self._over(f"key:{key.name}")) is not None:  # every request of a known key counts
            return 429, f"rate limit of {self.limit} exceeded for key {key.name!r}", wait
        needed = scope_for(method, path)
        if not key.allows(needed):
            return 403, f"key {key.name!r} lacks the {needed!r} scope", {}
        return key

    def _capped(self, receive: Receive) -> Receive:
        """``receive``, refusing a body (chunked, or lying about its length) once it passes the cap."""
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise HTTPException(413, f"request body over {self.max_body_bytes} bytes")
            return message

        return capped


async def _reply(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StreamRefused(Exception):
    """No stream may open now: the status (429 for the key, 503 for the process) and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class Streams:
    """How many event streams are open, in all and per key; :meth:`open` refuses past the caps."""

    def __init__(self, most: int, most_per_key: int) -> None:
        self.most, self.most_per_key = most, most_per_key
        self.by_key: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.by_key.values())

    def open(self, key: str) -> None:
        """Count a stream of ``key`` in; ``StreamRefused`` if a cap is reached."""
        if self.by_key.get(key, 0) >= self.most_per_key:
            raise StreamRefused(429, f"key {key!r} holds {self.most_per_key} event streams open already")
        if self.total >= self.most:
            raise StreamRefused(503, f"this API process holds {self.most} event streams open already")
        self.by_key[key] = self.by_key.get(key, 0) + 1

    def close(self, key: str) -> None:
        left = self.by_key.get(key, 0) - 1
        if left > 0:
            self.by_key[key] = left
        else:
            self.by_key.pop(key, None)


#: Every reply's security headers (``SecurityHeaders``).
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """The middleware that adds :data:`SECURITY_HEADERS` to every HTTP reply (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
