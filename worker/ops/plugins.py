"""The worker's plugins: every configured one imported and checked at start-up, never during a job.

:func:`load` gathers the sources and analyses of every kind of registration (entry points,
``AGENTQ_PLUGIN_MODULES``, ``AGENTQ_HTTP_SOURCES``), refuses clashing names and plugins written for
a newer plugin API, and picks what this worker serves (``AGENTQ_ENABLED_SOURCES``,
``AGENTQ_ENABLED_ANALYSES``). :func:`check_analyses` then runs every enabled analysis once, in the
worker's own pool, on a tiny input, and validates what it returns. Any failure is a
:class:`~agentq.errors.StartupError` with one line saying what to change: the worker exits 2.

The usual failure is an analysis whose module cannot load in a subinterpreter (numpy, pydantic
and most C extensions cannot): the message names the analysis and its module and points to
``AGENTQ_EXECUTOR=process``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from agentq.analyses import Analysis, enabled_analyses, installed_analyses
from agentq.contract import ExecutorName, describe_validation_error
from agentq.errors import PluginError, StartupError
from agentq.plugins import check_api_version, module_plugins
from agentq.settings import Settings
from agentq.sources import Source, default_sources, enabled_sources, installed_sources
from worker.job.fanout import inference_output
from worker.job.sources.http_json import http_json_sources
from worker.pool import pooled
from worker.pool.executor import InferencePool

#: The start-up check's input: small, so that the check costs little whatever the analysis.
CHECK_QUESTION = "Will it rain in Paris tomorrow?"
CHECK_TEXT = "Rain is expected in Paris tomorrow. The museums stay open.\nWind from the west."
#: How long one analysis may take on that input before the check gives up on it.
CHECK_TIMEOUT_S = 120.0

T = TypeVar("T", Source, Analysis)


@dataclass(frozen=True)
class Plugins:
    """What this worker serves: its sources and analyses, by name, and the default source set."""

    sources: Mapping[str, Source]
    analyses: Mapping[str, Analysis]
    default_sources: tuple[str, ...]


def _merge(kind: str, *registrations: Mapping[str, T]) -> dict[str, T]:
    """One name space for every kind of registration; a name registered twice is refused."""
    merged: dict[str, T] = {}
    for found in registrations:
        for name, plugin in found.items():
            if name in merged and merged[name] is not plugin:
                raise PluginError(f"two plugins are registered as the {kind} {name!r}: rename one")
            merged[name] = plugin
    return merged


def load(settings: Settings) -> Plugins:
    """Import every configured plugin and choose what this worker serves; ``StartupError`` if it cannot."""
    module_sources, module_analyses = module_plugins(settings.plugin_modules)
    sources = _merge("source", installed_sources(), module_sources, http_json_sources(settings))
    analyses = _merge("analysis", installed_analyses(), module_analyses)
    for source in sources.values():
        check_api_version(source)
    for analysis in analyses.values():
        check_api_version(analysis)
    try:
        served = enabled_sources(settings, sources)
        chosen = enabled_analyses(settings, analyses)
        defaults = default_sources(settings, served)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    return Plugins(served, chosen, defaults)


async def check_analyses(pool: InferencePool, analyses: Mapping[str, Analysis], settings: Settings) -> None:
    """Run each analysis once in ``pool`` and validate its output; then import every analysis module in
    every pool worker. Raises :class:`PluginError` naming the first analysis that fails."""
    for analysis in analyses.values():
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                raw = await pool.run(
                    pooled.run_analysis,
                    analysis.function,
                    CHECK_QUESTION,
                    CHECK_TEXT,
                    analysis.check_params_for(settings),
                    pool.kind,
                )
            inference_output(analysis, raw["output"], raw["ran_in"])
        except Exception as exc:
            raise PluginError(check_failure(analysis, pool.kind, exc)) from exc
    await pool.warm(a.module for a in analyses.values())


#: How CPython 3.14 says that an extension module cannot be imported in a subinterpreter.
_NOT_IN_SUBINTERPRETERS = re.compile(r"module ([\w.]+) does not support loading in subinterpreters")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (\S.*)$", re.M)


def check_failure(analysis: Analysis, executor: ExecutorName, exc: BaseException) -> str:
    """One line saying why ``analysis`` failed its start-up check, and what to do about it."""
    where = f"analysis {analysis.name!r} (module {analysis.module})"
    if isinstance(exc, TimeoutError):
        return f"{where} did not finish its start-up check within {CHECK_TIMEOUT_S:g}s under the {executor} executor"
    if isinstance(exc, ValidationError):
        return f"{where} returned output that does not fit {analysis.output.__name__}: {describe_validation_error(exc)}"
    chain = _chain_text(exc)
    unloadable = _NOT_IN_SUBINTERPRETERS.search(chain)
    if executor == "interpreter" and (unloadable or isinstance(exc, ImportError) or "ImportError" in chain):
        cause = f"ImportError: {unloadable[0]}" if unloadable else _root_cause(exc, chain)
        beside = (
            " (if only its module needs pydantic, as agentq.plugins does, move the function to a module of its own)"
            if unloadable and unloadable[1].startswith("pydantic_core")
            else ""
        )
        return (
            f"{where} cannot run in a subinterpreter (AGENTQ_EXECUTOR=interpreter): {cause}. Most C extensions"
            f" (numpy, pydantic-core) do not load in subinterpreters: set AGENTQ_EXECUTOR=process to run analyses"
            f" in processes instead, or leave {analysis.name!r} out of AGENTQ_ENABLED_ANALYSES{beside}"
        )
    return f"{where} failed its start-up check under the {executor} executor: {_root_cause(exc, chain)}"


def _chain_text(exc: BaseException) -> str:
    """The messages of ``exc`` and of its causes (a pool's remote traceback arrives as a cause's text)."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _root_cause(exc: BaseException, chain: str) -> str:
    """The most telling ``SomeError: message`` line: the deepest one in the chain, else ``exc`` itself."""
    found = _EXCEPTION_LINE.findall(chain)
    name, message = found[-1] if found else (type(exc).__name__, str(exc))
    return f"{name.rsplit('.', 1)[-1]}: {message.strip()}"
