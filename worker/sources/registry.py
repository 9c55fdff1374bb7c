"""The source registry and what a source is given when it runs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from worker.errors import SourceError
from worker.settings import Settings

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the settings in force, the job it works for, the worker's HTTP client."""

    settings: Settings
    job_id: str
    job_try: int = 1
    http: httpx.AsyncClient | None = None
    """The worker process's one pooled HTTP client (``worker.job.startup`` opens it); None outside a worker."""

    async def simulate(self, name: str, latency_s: float) -> None:
        """Wait like a remote API would, honouring the fault-injection settings.

        The latency is ``latency_s`` (or its override in ``source_latency_s``) times
        ``time_scale``. Injected failures are deterministic per job, source and try.
        """
        s = self.settings
        if name in s.source_fail:
            raise SourceError(f"{name}: injected failure (source_fail)")
        if s.source_fail_rate and random.Random(f"{self.job_id}:{name}:{self.job_try}").random() < s.source_fail_rate:
            raise SourceError(f"{name}: injected failure (source_fail_rate={s.source_fail_rate:g})")
        await asyncio.sleep(s.source_latency_s.get(name, latency_s) * s.time_scale)


SourceFunction = Callable[[str, SourceContext], Awaitable[str]]
#: Why a source cannot run under these settings (e.g. "needs AGENTQ_UPSTREAM_URL"), or None if it can.
Readiness = Callable[[Settings], str | None]
SourceKind = Literal["simulated", "http"]


def _always_ready(settings: Settings) -> str | None:
    return None


@dataclass(frozen=True)
class Source:
    """A registered source: its name, the coroutine function that fetches its text, and what it needs."""

    name: str
    fetch: SourceFunction
    kind: SourceKind = "simulated"
    unready: Readiness = _always_ready
    """Returns why the source cannot run under given settings; such a source is left out of the default set."""


REGISTRY: dict[str, Source] = {}


def register(
    name: str, *, kind: SourceKind = "simulated", unready: Readiness = _always_ready
) -> Callable[[SourceFunction], SourceFunction]:
    """Decorator: make ``fn`` available to every query as the source ``name``."""

    def decorate(fn: SourceFunction) -> SourceFunction:
        if name in REGISTRY:
            raise ValueError(f"source {name!r} is registered twice")
        REGISTRY[name] = Source(name, fn, kind, unready)
        return fn

    return decorate
