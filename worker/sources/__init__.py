"""Data sources a question fans out to, kept in a registry.

Adding a source is writing one async function ``(question, ctx) -> str`` and decorating it with
``@register("name")``; importing this package registers the built-in ones: the three simulated
reference sources and five HTTP sources (``worker.sources.http``) that run once an upstream URL
is configured.
"""

from __future__ import annotations

from worker.settings import Settings
from worker.sources.registry import REGISTRY, Source, SourceContext, register

# Registration order is the order of the default set and of a result's sources: simulated first.
from worker.sources import simulated as _simulated  # noqa: F401  # isort: skip
from worker.sources import http as _http  # noqa: F401  # isort: skip

__all__ = ["REGISTRY", "Source", "SourceContext", "default_sources", "register", "source_names"]


def source_names() -> tuple[str, ...]:
    """Every registered source, in registration order: the names a request may use."""
    return tuple(REGISTRY)


def default_sources(settings: Settings) -> tuple[str, ...]:
    """The sources a request that names none fans out to.

    ``AGENTQ_DEFAULT_SOURCES`` when set (every name must be registered and able to run here, else
    ``ValueError``); otherwise every registered source that can run under ``settings``, so HTTP
    sources join the default set only once their URL is configured.
    """
    if not settings.default_sources:
        return tuple(name for name, source in REGISTRY.items() if source.unready(settings) is None)
    problems = []
    for name in settings.default_sources:
        if name not in REGISTRY:
            problems.append(f"{name!r} is not a registered source")
        elif (why := REGISTRY[name].unready(settings)) is not None:
            problems.append(f"{name!r} cannot run here: {why}")
    if problems:
        raise ValueError(f"AGENTQ_DEFAULT_SOURCES: {'; '.join(problems)}")
    return tuple(dict.fromkeys(settings.default_sources))
