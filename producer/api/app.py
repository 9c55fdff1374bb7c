"""The HTTP API and the dashboard, one ASGI app (FastAPI): ``create_app(settings)``.

The app holds one :class:`producer.client.Client` (one Redis connection pool) for its life.
Errors of the client are turned into HTTP replies here, once: ``QuotaExceeded`` 429 with
``Retry-After``, ``InvalidRequest`` 422 (with each
wrong field), ``JobNotFound`` 404, ``RedisUnavailable`` 503. The request guard
(``producer.api.guard``: size, key, scope, rate) sits in front of everything; CORS, when
``api_cors_origins`` names origins, in front of that (a browser's preflight carries no key).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match

from agentq import __version__, apikeys
from agentq.errors import REDIS_DOWN, InvalidRequest, JobNotFound, QuotaExceeded, RedisUnavailable
from agentq.settings import Settings
from producer.api import dashboard, routes
from producer.api.guard import Guard, SecurityHeaders, Streams
from producer.api.models import Health
from producer.client import Client

DESCRIPTION = """Submit questions to agentq's workers, follow them live, cancel, list and re-run them.

Every `/api` route needs an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) with the
route's scope: `read` for GETs, `submit` to create or re-run jobs, `cancel` to cancel them.
The dashboard is at `/`. See docs/api.md for curl examples."""


#: The largest 422 body: a request of up to ``api_max_body_bytes`` never gets a reply much larger
#: than this, whatever it holds (each error is cut short, and the errors past this are counted).
MAX_ERROR_BYTES = 8192
#: How long /health's last answer stands before Redis is asked again.
HEALTH_FRESH_S = 1.0
_MSG_CHARS = 300


def capped(detail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``detail`` (each wrong field), cut to fit :data:`MAX_ERROR_BYTES`: each message and location
    shortened, and the errors past the budget replaced by one that counts them."""
    kept: list[dict[str, Any]] = []
    used = 64
    for n, error in enumerate(detail):
        loc = [part if isinstance(part, int) else str(part)[:64] for part in error.get("loc", [])][:8]
        short = {**error, "loc": loc, "msg": str(error.get("msg", ""))[:_MSG_CHARS]}
        size = len(json.dumps(short)) + 1
        if used + size > MAX_ERROR_BYTES - 200:
            left = len(detail) - n
            kept.append({"loc": [], "msg": f"and {left} more errors, not shown", "type": "too_many_errors"})
            break
        kept.append(short)
        used += size
    return kept


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``: the API under /api, the dashboard at /."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bounded = settings.model_copy(update={"redis_max_connections": settings.api_redis_max_connections})
        async with Client(bounded, ping=False) as client:
            app.state.client = client
            yield

    # No /docs or /redoc: FastAPI serves them from a CDN, and nothing from another origin may run on the
    # dashboard's (it holds an API key). The spec is at /openapi.json, for any OpenAPI viewer.
    app = FastAPI(
        title="agentq API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(routes.create_router(settings))
    app.include_router(routes.router)
    app.include_router(dashboard.router)
    dashboard.mount_static(app)

    app.state.streams = Streams(settings.api_max_streams, settings.api_max_streams_per_key)
    pinged_at, redis_ok = -HEALTH_FRESH_S, False  # when Redis was last asked, and its answer

    @app.get("/health", responses={503: {"model": Health}}, tags=["health"], summary="Is Redis reachable?")
    async def health(request: Request) -> Any:
        """200 when Redis answers a PING; 503 when it does not (the compose health check). Redis is asked at
        most once a second: callers within it get the last answer."""
        nonlocal pinged_at, redis_ok
        if time.monotonic() - pinged_at >= HEALTH_FRESH_S:
            try:
                await request.app.state.client.redis.ping()
                redis_ok = True
            except REDIS_DOWN:
                redis_ok = False
            pinged_at = time.monotonic()
        if not redis_ok:
            return JSONResponse(Health(ok=False, redis=False).model_dump(), status_code=503)
        return Health(ok=True, redis=True)

    @app.exception_handler(QuotaExceeded)
    async def over_quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        wait = str(max(1, math.ceil(exc.retry_after_s)))
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"retry-after": wait})

    @app.exception_handler(InvalidRequest)
    async def invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        where = ["body"] if request.method == "POST" and request.url.path == "/api/jobs" else []
        detail = [{**e, "loc": [*where, *e.get("loc", [])]} for e in exc.errors]  # type: ignore[misc]
        return JSONResponse({"detail": capped(detail)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Each wrong field and why, without echoing the input back (it may be up to the body cap).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": capped(detail)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow every method some route of this path takes, not the first route's only
            methods = {
                m for r in app.routes if r.matches(request.scope)[0] != Match.NONE for m in getattr(r, "methods", ())
            }
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(JobNotFound)
    async def not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(RedisUnavailable)
    async def redis_down(request: Request, exc: RedisUnavailable) -> JSONResponse:
        return JSONResponse({"detail": "Redis cannot be reached"}, status_code=503)

    app.add_middleware(
        Guard,
        keys=apikeys.load(settings.api_keys, settings.api_keys_file),
        rate_limit=settings.api_rate_limit,
        max_body_bytes=settings.api_max_body_bytes,
        key_prefix=settings.key_prefix,
    )
    app.add_middleware(SecurityHeaders)
    if settings.api_cors_origins:  # added last: outermost, so a preflight needs no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "content-type"],
        )
    return app
