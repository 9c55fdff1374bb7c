"""The HTTP API and the dashboard, one ASGI app (FastAPI): ``create_app(settings)``.

The app holds one :class:`producer.client.Client` (one Redis connection pool) for its life.
Errors of the client are turned into HTTP replies here, once: ``InvalidRequest`` 422 (with each
wrong field), ``JobNotFound`` 404, ``RedisUnavailable`` 503. The request guard
(``producer.api.guard``: size, key, scope, rate) sits in front of everything; CORS, when
``api_cors_origins`` names origins, in front of that (a browser's preflight carries no key).
"""

from __future__ import annotations

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
from agentq.errors import REDIS_DOWN, InvalidRequest, JobNotFound, RedisUnavailable
from agentq.settings import Settings
from producer.api import dashboard, routes
from producer.api.guard import Guard
from producer.api.models import Health
from producer.client import Client

DESCRIPTION = """Submit questions to agentq's workers, follow them live, cancel, list and re-run them.

Every `/api` route needs an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) with the
route's scope: `read` for GETs, `submit` to create or re-run jobs, `cancel` to cancel them.
The dashboard is at `/`. See docs/api.md for curl examples."""


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``: the API under /api, the dashboard at /."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Client(settings, ping=False) as client:
            app.state.client = client
            yield

    app = FastAPI(title="agentq API", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.include_router(routes.create_router(settings))
    app.include_router(routes.router)
    app.include_router(dashboard.router)
    dashboard.mount_static(app)

    @app.get("/health", responses={503: {"model": Health}}, tags=["health"], summary="Is Redis reachable?")
    async def health(request: Request) -> Any:
        """200 when Redis answers a PING; 503 when it does not (the compose health check)."""
        try:
            await request.app.state.client.redis.ping()
        except REDIS_DOWN:
            return JSONResponse(Health(ok=False, redis=False).model_dump(), status_code=503)
        return Health(ok=True, redis=True)

    @app.exception_handler(InvalidRequest)
    async def invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        where = ["body"] if request.method == "POST" and request.url.path == "/api/jobs" else []
        detail = [{**e, "loc": [*where, *e.get("loc", [])]} for e in exc.errors]  # type: ignore[misc]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Each wrong field and why, without echoing the input back (it may be up to the body cap).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

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
    )
    if settings.api_cors_origins:  # added last: outermost, so a preflight needs no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "content-type"],
        )
    return app
