"""Sources for the benchmark and the tests, loaded through ``AGENTQ_PLUGIN_MODULES`` (``agentq_tools.plugins``)
and all opt-in: a worker serves them only when its ``AGENTQ_ENABLED_SOURCES`` names them, and they
never join a default set.

- ``extra_04`` ... ``extra_20``: the growth benchmark's sources beyond the reference three; each
  mirrors one of them in turn (its latency and text), so 20 sources are the reference mix repeated.
- ``flaky``: the first call of each job and try fails transiently (an upstream 503), the next answers.
- ``ticker``: appends the wall-clock time of every call to a Redis list, so a test can count calls
  per time window across all workers.
- ``poison``: takes its whole worker process down at once, as a segfault or the OOM killer would.
- ``noop``: answers at once with a fixed line and needs no source policy (it calls nothing that
  could fail, be slow or be rate-limited), so the worker makes no policy call for it: the
  benchmark's zero-work and no-op jobs ask it.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio

from agentq.errors import TransientSourceError
from agentq.policies import SourcePolicies
from agentq.sources import REFERENCE_SOURCES, Source, SourceContext
from worker.job.sources.simulated import REFERENCE_LATENCY_S, simulated

MAX_SOURCES = 20
#: The Redis list ``ticker`` appends to.
TICKS_KEY = "agentq-test:ticks"
#: Exit status of a worker the poison source killed (EX_SOFTWARE), to tell it from other exits.
POISON_EXIT = 70


def extra_name(i: int) -> str:
    """Name of the ``i``-th source overall (1-based) beyond the reference three."""
    return f"extra_{i:02d}"


def _base(i: int) -> str:
    return REFERENCE_SOURCES[(i - 1) % len(REFERENCE_SOURCES)]


def first_sources(n: int) -> tuple[str, ...]:
    """The reference sources, then extras, ``n`` in all."""
    if not 1 <= n <= MAX_SOURCES:
        raise ValueError(f"between 1 and {MAX_SOURCES} sources, not {n}")
    names = [*REFERENCE_SOURCES, *(extra_name(i) for i in range(len(REFERENCE_SOURCES) + 1, MAX_SOURCES + 1))]
    return tuple(names[:n])


def latency_of(name: str) -> float:
    """The unscaled latency a (reference or extra) source simulates."""
    if name in REFERENCE_LATENCY_S:
        return REFERENCE_LATENCY_S[name]
    return REFERENCE_LATENCY_S[_base(int(name.removeprefix("extra_")))]


#: extra_04 ... extra_20, by name.
EXTRAS = {
    extra_name(i): simulated(extra_name(i), REFERENCE_LATENCY_S[_base(i)], _base(i), opt_in=True)
    for i in range(len(REFERENCE_SOURCES) + 1, MAX_SOURCES + 1)
}


_flaky_calls: dict[str, int] = {}


async def _flaky(question: str, ctx: SourceContext) -> str:
    key = f"{ctx.job_id}:{ctx.job_try}"
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    await asyncio.sleep(0.01)
    if _flaky_calls[key] == 1:
        raise TransientSourceError("flaky: 503 Service Unavailable (first call of this job)")
    return f"Flaky says {question} on call {_flaky_calls[key]}."


async def _ticker(question: str, ctx: SourceContext) -> str:
    client = redis.asyncio.Redis.from_url(ctx.settings.redis_url)
    try:
        await client.rpush(TICKS_KEY, repr(time.time()))  # type: ignore[misc,unused-ignore]
    finally:
        await client.aclose()
    await asyncio.sleep(0.01)
    return f"Ticker says {question}."


async def _poison(question: str, ctx: SourceContext) -> str:
    os._exit(POISON_EXIT)


async def _noop(question: str, ctx: SourceContext) -> str:
    return "Noop says nothing."


flaky = Source("flaky", _flaky, opt_in=True)
noop = Source(
    "noop",
    _noop,
    opt_in=True,
    policies=SourcePolicies(cache=False, retries=False, breaker=False, adaptive_timeout=False, rate_limit=False),
)
ticker = Source("ticker", _ticker, opt_in=True)
poison = Source("poison", _poison, opt_in=True)
