"""The source interface, how a source's answer becomes text, and the registry of installed sources.

A source is one async function ``fetch(question, ctx)`` wrapped in a :class:`Source` that names it
and says what it needs. It returns text, or a structured JSON-able payload (a mapping or a list)
that :func:`render` turns into text, the same way every time. Plugin authors import all of this
from ``agentq.plugins`` (docs/plugins.md).

Sources are found through the ``agentq.sources`` entry-point group: the way to add a source, for
the built-in ones, the benchmark's, the tests' and yours alike. A package declares, in its
``pyproject.toml``::

    [project.entry-points."agentq.sources"]
    my_api = "my_package.sources:my_api"     # the name a request uses = "module:Source object"

and once it is installed, every worker in that environment can serve ``my_api``. The producer
reads only the names (from the installed packages' metadata, importing none of them), so it can
check a request's sources without loading what fetches them. Two other kinds of source exist
beside these: those of ``AGENTQ_PLUGIN_MODULES`` (``agentq.plugins``) and those defined by
``AGENTQ_HTTP_SOURCES`` (``worker.job.sources.http_json``); :func:`source_names` counts the latter too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agentq.policies import SourcePolicies
from agentq.registry import entry_point_names, load_entry_points
from agentq.settings import Settings, check_plugin_name

if TYPE_CHECKING:
    import httpx

#: The entry-point group sources are registered in.
ENTRY_POINT_GROUP = "agentq.sources"
#: The reference workload's three sources (simulated), in the order results list them.
REFERENCE_SOURCES = ("weather", "news", "knowledge_base")
#: How deep a payload may nest before :func:`render` refuses it.
MAX_PAYLOAD_DEPTH = 32


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the settings in force, the job it works for, the worker's HTTP client."""

    settings: Settings
    job_id: str
    job_try: int = 1
    http: httpx.AsyncClient | None = None
    """The worker process's one pooled HTTP client (opened at start-up); None outside a worker."""


#: What a fetch returns: text, or a JSON-able payload (a mapping with string keys, or a list).
FetchResult = str | Mapping[str, Any] | Sequence[Any]
SourceFunction = Callable[[str, SourceContext], Awaitable[FetchResult]]
#: Why a source cannot run under given settings (e.g. "needs AGENTQ_UPSTREAM_URL"), or None if it can.
Readiness = Callable[[Settings], str | None]
SourceKind = Literal["simulated", "http", "custom"]


def _always_ready(settings: Settings) -> str | None:
    return None


@dataclass(frozen=True)
class Source:
    """A source: its name, the coroutine function that fetches its answer, and what it needs."""

    name: str
    fetch: SourceFunction
    """``async (question, ctx) -> str | Mapping | Sequence``; may raise ``SourceError`` (``TransientSourceError``
    for what a retry may fix)."""
    kind: SourceKind = "custom"
    unready: Readiness = field(default=_always_ready)
    """Returns why the source cannot run under given settings; such a source is left out of the default set."""
    opt_in: bool = False
    """Served only by workers whose ``AGENTQ_ENABLED_SOURCES`` names it (test and benchmark sources)."""
    timeout_s: float | None = None
    """Its default timeout; None = ``AGENTQ_SOURCE_TIMEOUT_S``. A request's ``source_timeout_s`` overrides it."""
    policies: SourcePolicies = field(default_factory=SourcePolicies)
    """Which source policies apply (cache, retries, breaker, adaptive timeout, rate limit)."""
    api_version: int | None = None
    """The plugin API version it was written for (``agentq.plugins.PLUGIN_API_VERSION``); None = the current one."""

    def __post_init__(self) -> None:
        check_plugin_name(self.name)
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError(f"source {self.name!r}: timeout_s must be a positive number of seconds")

    async def fetch_text(self, question: str, ctx: SourceContext) -> str:
        """Fetch, and render a structured answer as text (:func:`render`)."""
        return render(await self.fetch(question, ctx))


def render(payload: object) -> str:
    """A source's answer as the text an analysis reads: the same payload always gives the same text.

    Text stays as it is. A payload becomes one line per value, in the payload's own order: a
    mapping's values as ``key: value`` (a nested one under ``key:``, indented), a list's items one
    after another; ``None`` is left out, booleans are ``true``/``false``. Anything that is not
    JSON-able raises ``TypeError``.
    """
    if isinstance(payload, str):
        return payload
    if not isinstance(payload, Mapping | Sequence) or isinstance(payload, bytes | bytearray):
        raise TypeError(f"source returned {type(payload).__name__}, not text or a JSON payload")
    lines: list[str] = []
    _render(payload, 0, None, lines, 0)
    return "\n".join(lines)


def _render(value: object, depth: int, label: str | None, lines: list[str], level: int) -> None:
    """Append ``value``'s lines: ``depth`` is the indentation, ``level`` how deep in the payload it is."""
    indent = "  " * depth
    if isinstance(value, Mapping | list | tuple):
        if level >= MAX_PAYLOAD_DEPTH:
            raise TypeError(f"payload nested deeper than {MAX_PAYLOAD_DEPTH} levels")
        if label is not None:
            lines.append(f"{indent}{label}:")
            depth += 1
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(f"payload has a {type(key).__name__} key; JSON keys are strings")
                _render(item, depth, key, lines, level + 1)
        else:
            for item in value:
                _render(item, depth, None, lines, level + 1)
        return
    if value is None:
        return
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        raise TypeError(f"payload holds a {type(value).__name__}, which is not JSON")
    lines.append(f"{indent}{label}: {text}" if label is not None else f"{indent}{text}")


def source_names(settings: Settings | None = None) -> tuple[str, ...]:
    """The names of every installed source, and of the ``AGENTQ_HTTP_SOURCES`` of ``settings``, without
    importing any of them (sorted). Sources of ``AGENTQ_PLUGIN_MODULES`` are not among them."""
    names = entry_point_names(ENTRY_POINT_GROUP)
    return tuple(sorted(names | set(settings.http_sources if settings is not None else ())))


@functools.cache
def installed_sources() -> Mapping[str, Source]:
    """Every source installed through entry points, loaded (imported) once per process.

    In the order a default set lists them: the reference three, then the rest of agentq's own,
    then every other package's, each by name. Raises ``PluginError`` if one does not load.
    """
    found = load_entry_points(ENTRY_POINT_GROUP, Source)

    def rank(name: str) -> tuple[int, bool, str]:
        reference = REFERENCE_SOURCES.index(name) if name in REFERENCE_SOURCES else len(REFERENCE_SOURCES)
        return reference, found[name][1] != "agentq", name

    return {name: found[name][0] for name in sorted(found, key=rank)}


def enabled_sources(settings: Settings, installed: Mapping[str, Source] | None = None) -> dict[str, Source]:
    """The sources a worker with these settings serves (``AGENTQ_ENABLED_SOURCES``).

    Empty setting: every available source that is not opt-in. Otherwise exactly the named ones;
    a name that is not available raises ``ValueError``. ``installed`` is every source there is
    (the worker's: ``worker.ops.plugins``); by default the installed entry points.
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
