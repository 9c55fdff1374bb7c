"""A mock upstream for the HTTP sources: real HTTP, JSON answers, configurable latency and failures.

``agentq-upstream --port 8080 --latency weather=2 --error-rate news=0.1`` serves
``GET /<endpoint>?q=<question>`` for every endpoint of ``worker.job.sources.http`` (weather, news,
knowledge_base, stocks, geo), plus ``/health`` and ``/stats`` (request, error and connection
counts, per endpoint and per client). Answers are deterministic functions of the question, so
inference has real text to work on and the same question always gets the same answer. It binds
127.0.0.1 unless told otherwise. :class:`MockUpstream` runs one as a child process for the demo
and the tests.

Built on Starlette and uvicorn (dependencies of agentq-tools, not of the product): both pure
Python, so they install from PyPI on any CPython (3.11 and 3.14 alike).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentq_tools.embedded import free_port
from agentq_tools.processes import stop_process
from worker.job.sources.http import ENDPOINTS
from worker.job.sources.simulated import phrase, question_words, seeded

PATHS = tuple(e.path for e in ENDPOINTS)
#: The reference workload's latencies (and two more for the extra endpoints), seconds.
REFERENCE_LATENCY_S = {"weather": 2.0, "news": 1.5, "knowledge_base": 3.0, "stocks": 1.0, "geo": 0.5}


@dataclass
class Behaviour:
    """How the upstream misbehaves, per endpoint path."""

    latency_s: dict[str, float] = field(default_factory=lambda: dict(REFERENCE_LATENCY_S))
    error_rate: dict[str, float] = field(default_factory=dict)
    rate_limit: dict[str, int] = field(default_factory=dict)
    """Requests per second an endpoint accepts; past that it answers 429 with Retry-After."""
    padding: dict[str, int] = field(default_factory=dict)
    """Characters of filler added to an endpoint's answer (a ``padding`` field the sources ignore)."""
    error_status: int = 503
    jitter: float = 0.0
    """Each latency is multiplied by a uniform draw from [1 - jitter, 1 + jitter]."""
    seed: int = 0


class Upstream:
    """The Starlette app and its counters.

    The rate limit is a fixed one-second window per endpoint, written out here because it is a
    mock's quota of a few lines; a rate-limiting library would be larger than the thing it limits.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.rng = random.Random(behaviour.seed)
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.peers: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.client_requests: Counter[str] = Counter()
        self.in_flight = self.max_in_flight = 0
        self.windows: dict[str, tuple[int, int]] = {}
        self.traceparents: deque[str] = deque(maxlen=100)  # the W3C trace context of recent requests
        routes = [Route("/health", self.health), Route("/stats", self.stats)]
        routes += [Route(f"/{path}", self.endpoint, name=path) for path in PATHS]
        self.app = Starlette(routes=routes)

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "endpoints": list(PATHS)})

    async def stats(self, request: Request) -> JSONResponse:
        """Counters since start: per endpoint, per client (User-Agent), the most requests at once, and the
        ``traceparent`` headers of the last 100 requests that carried one."""
        clients = {ua: {"requests": n, "connections": len(self.peers[ua])} for ua, n in self.client_requests.items()}
        return JSONResponse(
            {
                "endpoints": {path: dict(self.counts[path]) for path in PATHS},
                "clients": clients,
                "max_in_flight": self.max_in_flight,
                "traceparents": list(self.traceparents),
            }
        )

    async def endpoint(self, request: Request) -> JSONResponse:
        path = request.url.path.strip("/")
        b, counts = self.behaviour, self.counts[path]
        agent = request.headers.get("user-agent", "")
        self.client_requests[agent] += 1
        if request.client is not None:
            self.peers[agent].add((request.client.host, request.client.port))
        counts["requests"] += 1
        if "traceparent" in request.headers:
            self.traceparents.append(request.headers["traceparent"])
        question = request.query_params.get("q", "").strip()
        if not question:
            counts["bad_request"] += 1
            return JSONResponse({"error": "the query parameter q is required"}, status_code=400)
        if (wait := self._over_limit(path)) is not None:
            counts["rate_limited"] += 1
            return JSONResponse({"error": "rate limit"}, status_code=429, headers={"Retry-After": str(wait)})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            latency = b.latency_s.get(path, 0.0) * (1 + self.rng.uniform(-b.jitter, b.jitter))
            await asyncio.sleep(max(0.0, latency))
        finally:
            self.in_flight -= 1
        if self.rng.random() < b.error_rate.get(path, 0.0):
            counts["errors"] += 1
            return JSONResponse({"error": "injected failure"}, status_code=b.error_status)
        counts["ok"] += 1
        body = answer(path, question)
        if b.padding.get(path):
            body["padding"] = "." * b.padding[path]
        return JSONResponse(body)

    def _over_limit(self, path: str) -> int | None:
        """Seconds to wait if ``path`` has used this second's quota, else None (and count the request)."""
        limit = self.behaviour.rate_limit.get(path)
        if limit is None:
            return None
        now = time.monotonic()
        window, used = self.windows.get(path, (math.floor(now), 0))
        if window != math.floor(now):
            window, used = math.floor(now), 0
        if used >= limit:
            return max(1, math.ceil(window + 1 - now))
        self.windows[path] = (window, used + 1)
        return None


def answer(path: str, question: str) -> dict[str, Any]:
    """The endpoint's JSON answer: a deterministic function of the question."""
    rng, words = seeded(question, path), question_words(question)
    vocabulary = "knowledge_base" if path == "knowledge_base" else path

    def sentence() -> str:
        return phrase(rng, vocabulary, words).capitalize() + "."

    def name() -> str:
        return rng.choice(words).capitalize()

    if path == "weather":
        capitalised = [w.strip("?,.!") for w in question.split()[1:] if w[:1].isupper() and len(w) > 2]
        forecast = [
            {
                "period": period,
                "summary": f"{sentence()} {sentence()}",
                "temperature_c": round(rng.uniform(-5, 30), 1),
                "precipitation_chance": round(rng.random(), 2),
            }
            for period in ("today", "tonight", "tomorrow", "tomorrow night")
        ]
        return {"location": capitalised[0] if capitalised else "your area", "units": "metric", "forecast": forecast}
    if path == "news":
        outlets = ("The Daily Ledger", "Evening Wire", "Metro Courier", "World Bulletin")
        articles = [
            {"title": sentence(), "summary": f"{sentence()} {sentence()}", "outlet": rng.choice(outlets)}
            for _ in range(4)
        ]
        return {"total": len(articles), "articles": articles}
    if path == "knowledge_base":
        entries = [{"title": f"{name()} {name().lower()}", "extract": " ".join(sentence() for _ in range(3))}]
        entries += [{"title": name(), "extract": f"{sentence()} {sentence()}"} for _ in range(2)]
        return {"entries": entries}
    if path == "stocks":
        quotes = [
            {
                "symbol": name()[:4].upper(),
                "price": round(rng.uniform(5, 500), 2),
                "change_pct": round(rng.uniform(-5, 5), 2),
                "comment": f"{sentence()} {sentence()}",
            }
            for _ in range(3)
        ]
        return {"currency": "EUR", "quotes": quotes}
    places = [
        {
            "name": f"{name()} {rng.choice(('Square', 'Station', 'Avenue', 'Hall'))}",
            "lat": round(rng.uniform(-60, 60), 4),
            "lon": round(rng.uniform(-180, 180), 4),
            "description": f"{sentence()} {sentence()}",
        }
        for _ in range(3)
    ]
    return {"places": places}


# --------------------------------------------------------------------------------------------
# Command line, and a child process for the demo and the tests
# --------------------------------------------------------------------------------------------
def _per_endpoint(kind: type[float] | type[int]) -> Any:
    """argparse type for ``NAME=VALUE`` (one endpoint) or ``VALUE`` (every endpoint)."""

    def parse(text: str) -> tuple[str | None, float | int]:
        name, _, value = text.rpartition("=")
        if name and name not in PATHS:
            raise argparse.ArgumentTypeError(f"unknown endpoint {name!r}; endpoints: {', '.join(PATHS)}")
        try:
            return (name or None), kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="agentq-upstream", description="A mock upstream for the HTTP sources.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 = any free port (printed)")
    p.add_argument(
        "--latency",
        type=_per_endpoint(float),
        action="append",
        default=[],
        metavar="[NAME=]S",
        help="seconds before answering (default: the reference latencies)",
    )
    p.add_argument("--time-scale", type=float, default=1.0, help="multiplies every latency")
    p.add_argument(
        "--error-rate",
        type=_per_endpoint(float),
        action="append",
        default=[],
        metavar="[NAME=]P",
        help="chance that a request fails with --error-status",
    )
    p.add_argument("--error-status", type=int, default=503, help="status of an injected failure (default 503)")
    p.add_argument(
        "--rate-limit",
        type=_per_endpoint(int),
        action="append",
        default=[],
        metavar="[NAME=]N",
        help="requests per second accepted; more get 429 with Retry-After",
    )
    p.add_argument(
        "--pad-bytes",
        type=_per_endpoint(int),
        action="append",
        default=[],
        metavar="[NAME=]N",
        help="add N characters of filler to each answer (to try the HTTP sources' size limit)",
    )
    p.add_argument("--jitter", type=float, default=0.0, help="latency varies by up to this fraction")
    p.add_argument("--seed", type=int, default=0, help="seed of the failure and jitter draws")
    return p.parse_args(argv)


def behaviour_of(args: argparse.Namespace) -> Behaviour:
    """The :class:`Behaviour` the command-line arguments describe."""

    def table(pairs: list[tuple[str | None, Any]], start: dict[str, Any]) -> dict[str, Any]:
        for name, value in pairs:
            start.update({name: value} if name else dict.fromkeys(PATHS, value))
        return start

    latency = table(args.latency, dict(REFERENCE_LATENCY_S))
    return Behaviour(
        latency_s={path: seconds * args.time_scale for path, seconds in latency.items()},
        error_rate=table(args.error_rate, {}),
        rate_limit=table(args.rate_limit, {}),
        padding=table(args.pad_bytes, {}),
        error_status=args.error_status,
        jitter=args.jitter,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    args = parse_args(argv)
    sock = socket.create_server((args.host, args.port))
    host, port = sock.getsockname()[:2]
    print(f"mock upstream listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(
        Upstream(behaviour_of(args)).app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,  # longer than httpx's 5 s, so the client, not the server, closes idle connections
        timeout_graceful_shutdown=1,  # a request still sleeping out its latency need not delay a stop
    )
    uvicorn.Server(config).run(sockets=[sock])


class MockUpstream:
    """``with MockUpstream("--latency", "weather=0.2") as up:`` runs one on a free loopback port; ``up.url``."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="agentq-upstream-", suffix=".log")  # noqa: SIM115

    def start(self, timeout: float = 20.0) -> MockUpstream:
        """Start the server and wait until ``/health`` answers."""
        command = [sys.executable, "-m", "agentq_tools.upstream", "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        give_up = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                log = Path(self._log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the mock upstream did not start on port {self.port}:\n{log}")
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        """The server's ``/stats``."""
        data: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=5.0).json()
        return data

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        stop_process(self.process)
        self._log.close()

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
