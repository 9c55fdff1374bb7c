"""The analysis interface (the inference stage) and the registry of installed analyses.

An analysis is a pure function ``(question, text, params) -> mapping`` wrapped in an
:class:`Analysis` that names it, gives its default parameters and the pydantic model its output
must satisfy (a subclass of :class:`AnalysisOutput`). The worker sends the function to its
inference pool, possibly a subinterpreter, so it must be a module-level function of a module that
imports only what a subinterpreter can load (the standard library, pure-Python packages): never
pydantic, numpy or ``agentq`` itself. Keep the :class:`Analysis` object, which needs pydantic, in
another module. The function returns plain data; the worker validates it against the output model
in its main interpreter. See docs/plugins.md.

Analyses are registered like sources, through the ``agentq.analyses`` entry-point group (or the
``ANALYSES`` list of a module in ``AGENTQ_PLUGIN_MODULES``). The built-in one, ``bag_of_words``, is
registered that way too (``worker.pool.analyses``).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from agentq.registry import entry_point_names, load_entry_points
from agentq.settings import Settings, check_plugin_name

#: The entry-point group analyses are registered in.
ENTRY_POINT_GROUP = "agentq.analyses"

#: ``(question, text, params) -> output``: plain data in (str, str, JSON mapping), plain data out.
AnalysisFunction = Callable[[str, str, Mapping[str, Any]], Mapping[str, Any]]
#: The parameters an analysis gets for the settings in force (see :attr:`Analysis.configure`).
Configure = Callable[[Settings], Mapping[str, Any]]


class AnalysisOutput(BaseModel):
    """What every analysis returns for one source's text. Subclass it with the analysis's own fields.

    ``summary`` and ``relevance`` are required: the answer lists each source's summary, the most
    relevant first. ``top_terms`` and ``work_units`` are optional common fields. A result keeps these
    four at the top of its ``inference`` record and a subclass's own fields under ``details``.
    """

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="the source's answer in one sentence or so")
    relevance: FiniteFloat = Field(description="how well the text answers the question; higher ranks first")
    top_terms: list[str] = Field(default_factory=list, description="the words that mattered most")
    work_units: int | None = Field(None, description="how much work the analysis did, in its own units")


#: The output fields every result carries at the top level of its ``inference`` record.
COMMON_FIELDS = frozenset(AnalysisOutput.model_fields)


@dataclass(frozen=True)
class Analysis:
    """An analysis: its name, its pure function, its default parameters and its output model."""

    name: str
    function: AnalysisFunction
    """A module-level function (sent to the pool by reference: module and qualified name)."""
    output: type[AnalysisOutput] = AnalysisOutput
    """The model the function's output must satisfy; a failure is that source's ``error``."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Default parameters (JSON); ``AGENTQ_ANALYSIS_PARAMS`` overrides them per worker."""
    configure: Configure | None = None
    """Parameters derived from the settings in force, between the defaults and ``AGENTQ_ANALYSIS_PARAMS``."""
    opt_in: bool = False
    """Run only by workers whose ``AGENTQ_ENABLED_ANALYSES`` names it."""
    check_params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters laid over the others for the worker's start-up check only (e.g. less work: the check
    proves the function runs in the pool and fits its model, not what a job costs)."""
    api_version: int | None = None
    """The plugin API version it was written for (``agentq.plugins.PLUGIN_API_VERSION``); None = the current one."""

    def __post_init__(self) -> None:
        check_plugin_name(self.name)
        if not (isinstance(self.output, type) and issubclass(self.output, AnalysisOutput)):
            raise TypeError(f"analysis {self.name!r}: output must be a subclass of AnalysisOutput")
        check_importable(self.function, f"analysis {self.name!r}")
        try:
            json.dumps(dict(self.params), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"analysis {self.name!r}: params must be JSON ({exc})") from None

    @property
    def module(self) -> str:
        """The module the function is imported from wherever it runs (what a subinterpreter loads)."""
        return str(self.function.__module__)

    def params_for(self, settings: Settings) -> dict[str, Any]:
        """Its parameters under ``settings``: defaults, then :attr:`configure`, then ``AGENTQ_ANALYSIS_PARAMS``."""
        derived = self.configure(settings) if self.configure is not None else {}
        return {**self.params, **derived, **settings.analysis_params.get(self.name, {})}

    def check_params_for(self, settings: Settings) -> dict[str, Any]:
        """Its parameters for the start-up check: :meth:`params_for`, then :attr:`check_params`."""
        return {**self.params_for(settings), **self.check_params}

    def check_output(self, raw: object) -> AnalysisOutput:
        """The function's output validated against :attr:`output` (``pydantic.ValidationError`` if it does not fit)."""
        if not isinstance(raw, Mapping):
            raise TypeError(f"analysis {self.name!r} returned {type(raw).__name__}, not a mapping")
        return self.output.model_validate(dict(raw))


def check_importable(function: object, what: str) -> None:
    """Raise ``TypeError`` unless ``function`` can be found again by its module and qualified name.

    That is how a pool sends it: a subinterpreter or a child process imports the module and looks
    the name up. Lambdas, nested functions, bound methods and anything from ``__main__`` cannot be.
    """
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", None)
    if not callable(function) or not module or not qualname or "<" in qualname:
        raise TypeError(f"{what}: the function must be defined at the top level of a module (not {function!r})")
    if module == "__main__":
        raise TypeError(f"{what}: {qualname} is defined in __main__, which a pool cannot import: move it to a module")
    target: object = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if target is not function:
        raise TypeError(f"{what}: {module}.{qualname} does not lead back to the function (importable name required)")


def analysis_names() -> tuple[str, ...]:
    """The names of every installed analysis, without importing any of them (sorted)."""
    return tuple(sorted(entry_point_names(ENTRY_POINT_GROUP)))


@functools.cache
def installed_analyses() -> Mapping[str, Analysis]:
    """Every analysis installed through entry points, loaded once per process: agentq's own first."""
    found = load_entry_points(ENTRY_POINT_GROUP, Analysis)
    return {name: found[name][0] for name in sorted(found, key=lambda n: (found[n][1] != "agentq", n))}


def enabled_analyses(settings: Settings, installed: Mapping[str, Analysis] | None = None) -> dict[str, Analysis]:
    """The analyses a worker with these settings runs (``AGENTQ_ENABLED_ANALYSES``).

    Empty setting: every available analysis that is not opt-in. Otherwise exactly the named ones; a
    name that is not available raises ``ValueError``. The default analysis must be among them.
    """
    installed = installed_analyses() if installed is None else installed
    if not settings.enabled_analyses:
        enabled = {name: a for name, a in installed.items() if not a.opt_in}
    else:
        missing = [n for n in settings.enabled_analyses if n not in installed]
        if missing:
            raise ValueError(f"AGENTQ_ENABLED_ANALYSES: not installed: {', '.join(missing)}")
        enabled = {name: installed[name] for name in dict.fromkeys(settings.enabled_analyses)}
    if settings.default_analysis not in enabled:
        raise ValueError(
            f"AGENTQ_DEFAULT_ANALYSIS: {settings.default_analysis!r} is not an analysis this worker runs"
            f" (it runs: {', '.join(enabled) or 'none'})"
        )
    return enabled
