"""The plugin interface: the one module a plugin author imports (docs/plugins.md).

    from agentq.plugins import Analysis, AnalysisOutput, Source, SourceContext, SourcePolicies

- :class:`Source`: a name and an async ``fetch(question, ctx)`` returning text or a JSON payload,
  its default timeout and which :class:`SourcePolicies` apply.
- :class:`Analysis`: the inference stage, a pure module-level function
  ``(question, text, params) -> mapping`` with default parameters and an output model (a subclass
  of :class:`AnalysisOutput`).

Register them through the entry-point groups ``agentq.sources`` and ``agentq.analyses``, or list
them in the ``SOURCES`` / ``ANALYSES`` of a module named in ``AGENTQ_PLUGIN_MODULES``.

**Versioning.** :data:`PLUGIN_API_VERSION` is the interface's major version. Within one version
the interface only grows (new optional fields with defaults, new helpers); anything that would
break a plugin written for it bumps the version. A plugin may declare the version it was written
for (``api_version=1``); a worker refuses, at start-up, a plugin that declares a newer version
than its own, saying so, rather than failing jobs later.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentq.analyses import Analysis, AnalysisFunction, AnalysisOutput, Configure
from agentq.errors import PluginError, SourceError, TransientSourceError
from agentq.policies import SourcePolicies
from agentq.registry import load_module_lists
from agentq.sources import FetchResult, Source, SourceContext, render

#: The major version of this interface (see the module docstring).
PLUGIN_API_VERSION = 1

__all__ = [
    "PLUGIN_API_VERSION",
    "Analysis",
    "AnalysisFunction",
    "AnalysisOutput",
    "Configure",
    "FetchResult",
    "PluginError",
    "Source",
    "SourceContext",
    "SourceError",
    "SourcePolicies",
    "TransientSourceError",
    "check_api_version",
    "module_plugins",
    "render",
]


def check_api_version(plugin: Source | Analysis) -> None:
    """Raise :class:`PluginError` if ``plugin`` was written for a newer plugin API than this one."""
    declared = plugin.api_version
    if declared is not None and declared > PLUGIN_API_VERSION:
        kind = "source" if isinstance(plugin, Source) else "analysis"
        raise PluginError(
            f"{kind} {plugin.name!r} was written for agentq plugin API {declared}; this worker has API"
            f" {PLUGIN_API_VERSION}: upgrade agentq, or install a version of the plugin written for"
            f" API {PLUGIN_API_VERSION}"
        )


def module_plugins(module_names: tuple[str, ...]) -> tuple[Mapping[str, Source], Mapping[str, Analysis]]:
    """The sources and analyses listed by the modules of ``AGENTQ_PLUGIN_MODULES``, imported now."""
    return (
        load_module_lists(module_names, "SOURCES", Source),
        load_module_lists(module_names, "ANALYSES", Analysis),
    )
