"""The source interface and the registry of installed sources.

A source is one async function ``fetch(question, ctx) -> str`` wrapped in a :class:`Source` that
names it and says what it needs. Sources are found through the ``agentq.sources`` entry-point
group: the one way to add a source, for the built-in ones, the benchmark's, the tests' and
yours alike. A package declares, in its ``pyproject.toml``::

    [project.entry-points."agentq.sources"]
    my_api = "my_package.sources:my_api"     # the name a request uses = "module:Source object"

and once it is installed, every worker in that environment can serve ``my_api``. The producer
reads only the names (from the installed packages' metadata, importing none of them), so it can
check a request's sources without loading what fetches them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal

from agentq.settings import Settings

if TYPE_CHECKING:
    import httpx

#: The entry-point group sources are registered in.
ENTRY_POINT_GROUP = "agentq.sources"
#: The reference workload's three sources (simulated), in the order results list them.
REFERENCE_SOURCES = ("weather", "news", "knowledge_base")


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the settings in force, the job it works for, the worker's HTTP client."""

    settings: Settings
    job_id: str
    job_try: int = 1
    http: httpx.AsyncClient | None = None
    """The worker process's one pooled HTTP client (opened at start-up); None outside a worker."""


SourceFunction = Callable[[str, SourceContext], Awaitable[str]]
#: Why a source cannot run under given settings (e.g. "needs AGENTQ_UPSTREAM_URL"), or None if it can.
Readiness = Callable[[Settings], str | None]
SourceKind = Literal["simulated", "http", "custom"]


def _always_ready(settings: Settings) -> str | None:
    return None


@dataclass(frozen=True)
class Source:
    """A source: its name, the coroutine function that fetches its text, and what it needs."""

    name: str
    fetch: SourceFunction
    kind: SourceKind = "custom"
    unready: Readiness = field(default=_always_ready)
    """Returns why the source cannot run under given settings; such a source is left out of the default set."""
    opt_in: bool = False
    """Served only by workers whose ``AGENTQ_ENABLED_SOURCES`` names it (test and benchmark sources)."""


class SourceLoadError(RuntimeError):
    """An installed entry point does not load, or is not a :class:`Source` of its own name."""


def source_names() -> tuple[str, ...]:
    """The names of every installed source, without importing any of them (sorted)."""
    return tuple(sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}))


@functools.cache
def installed_sources() -> Mapping[str, Source]:
    """Every installed source, loaded (imported) once per process.

    In the order a default set lists them: the reference three, then the rest of agentq's own,
    then every other package's, each by name.
    """
    found: dict[str, Source] = {}
    rank: dict[str, tuple[int, bool, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            source = ep.load()
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise SourceLoadError(f"source {ep.name!r} ({ep.value}) does not load: {why}") from exc
        if not isinstance(source, Source) or source.name != ep.name:
            raise SourceLoadError(f"entry point {ep.name!r} ({ep.value}) is not a Source named {ep.name!r}")
        if ep.name in found and found[ep.name] is not source:
            raise SourceLoadError(f"two installed packages register a source named {ep.name!r}")
        found[ep.name] = source
        ours = ep.dist is not None and ep.dist.name == "agentq"
        reference = REFERENCE_SOURCES.index(ep.name) if ep.name in REFERENCE_SOURCES else len(REFERENCE_SOURCES)
        rank[ep.name] = (reference, not ours, ep.name)
    return dict(sorted(found.items(), key=lambda item: rank[item[0]]))


def enabled_sources(settings: Settings, installed: Mapping[str, Source] | None = None) -> dict[str, Source]:
    """The sources a worker with these settings serves (``AGENTQ_ENABLED_SOURCES``).

    Empty setting: every installed source that is not opt-in. Otherwise exactly the named ones;
    a name that is not installed raises ``ValueError``.
    """
    installed = installed_sources() if installed is None else installed
    if not settings.enabled_sources:
        return {name: s for name, s in installed.items() if not s.opt_in}
    missing = [n for n in settings.enabled_sources if n not in installed]
    if missing:
        raise ValueError(f"AGENTQ_ENABLED_SOURCES: not installed: {', '.join(missing)}")
    return {name: installed[name] for name in dict.fromkeys(settings.enabled_sources)}


def default_sources(settings: Settings, enabled: Mapping[str, Source]) -> tuple[str, ...]:
    """The sources a request that names none fans out to.

    ``AGENTQ_DEFAULT_SOURCES`` when set (every name must be enabled and able to run here, else
    ``ValueError``); otherwise every enabled source that can run under ``settings`` and is not
    opt-in, so HTTP sources join the default set only once their URL is configured.
    """
    if not settings.default_sources:
        return tuple(name for name, s in enabled.items() if not s.opt_in and s.unready(settings) is None)
    problems = []
    for name in settings.default_sources:
        if name not in enabled:
            problems.append(f"{name!r} is not a source this worker serves")
        elif (why := enabled[name].unready(settings)) is not None:
            problems.append(f"{name!r} cannot run here: {why}")
    if problems:
        raise ValueError(f"AGENTQ_DEFAULT_SOURCES: {'; '.join(problems)}")
    return tuple(dict.fromkeys(settings.default_sources))
