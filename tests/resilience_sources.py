"""Test-only sources for the source-policy tests, registered in worker processes started with
:data:`WORKER_COMMAND` (and in the test process on import).

- ``flaky``: the first attempt of each job fails with a transient error, the next one answers.
- ``ticker``: appends the wall-clock time of every call to a Redis list, so a test can count calls
  per time window across all workers.

Neither joins the default set of sources (a request must name them), so importing this module
changes no other test.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import redis.asyncio

from worker.errors import TransientSourceError
from worker.settings import Settings
from worker.sources import REGISTRY, SourceContext, register

#: The Redis list ``ticker`` appends to.
TICKS_KEY = "agentq-test:ticks"
#: A worker process that also has these sources.
WORKER_COMMAND = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import resilience_sources; "
    "from worker.cli import run; sys.argv = ['worker']; run()",
]

_calls: dict[str, int] = {}


async def flaky(question: str, ctx: SourceContext) -> str:
    """Fails its first call per job and try (an upstream 503), answers the next ones."""
    key = f"{ctx.job_id}:{ctx.job_try}"
    _calls[key] = _calls.get(key, 0) + 1
    await asyncio.sleep(0.01)
    if _calls[key] == 1:
        raise TransientSourceError("flaky: 503 Service Unavailable (first call of this job)")
    return f"Flaky says {question} on call {_calls[key]}."


async def ticker(question: str, ctx: SourceContext) -> str:
    """Records when it was called, then answers."""
    client = redis.asyncio.Redis.from_url(ctx.settings.redis_url)
    try:
        await client.rpush(TICKS_KEY, repr(time.time()))
    finally:
        await client.aclose()
    await asyncio.sleep(0.01)
    return f"Ticker says {question}."


def _named_only(settings: Settings) -> str:
    return "a test-only source: it runs only when a request names it"


for _name, _fn in (("flaky", flaky), ("ticker", ticker)):
    if _name not in REGISTRY:  # importable twice (as a test helper and by name) without a clash
        register(_name, unready=_named_only)(_fn)
