"""The source registry and what a source is given when it runs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from worker.errors import SourceError
from worker.settings import Settings


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the settings in force and the job it works for."""

    settings: Settings
    job_id: str
    job_try: int = 1

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


@dataclass(frozen=True)
class Source:
    """A registered source: its name and the coroutine function that fetches its text."""

    name: str
    fetch: SourceFunction


REGISTRY: dict[str, Source] = {}


def register(name: str) -> Callable[[SourceFunction], SourceFunction]:
    """Decorator: make ``fn`` available to every query as the source ``name``."""

    def decorate(fn: SourceFunction) -> SourceFunction:
        if name in REGISTRY:
            raise ValueError(f"source {name!r} is registered twice")
        REGISTRY[name] = Source(name, fn)
        return fn

    return decorate
