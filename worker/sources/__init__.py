"""Data sources a question fans out to, kept in a registry.

Adding a source is writing one async function ``(question, ctx) -> str`` and decorating it with
``@register("name")``; importing this package registers the built-in ones.
"""

from __future__ import annotations

from worker.sources import simulated as _simulated  # noqa: F401  (registers the built-ins)
from worker.sources.registry import REGISTRY, Source, SourceContext, register

__all__ = ["REGISTRY", "Source", "SourceContext", "register", "source_names"]


def source_names() -> tuple[str, ...]:
    """Every registered source, in registration order."""
    return tuple(REGISTRY)
