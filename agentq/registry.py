"""Where plugins are found: entry points (their names read without importing anything) and modules.

Both sources and analyses are registered the same two ways:

- an **entry point** of an installed distribution, in the group ``agentq.sources`` or
  ``agentq.analyses``, naming the object (``name = "package.module:object"``);
- a **module** named in ``AGENTQ_PLUGIN_MODULES``, imported at worker start, whose module-level
  ``SOURCES`` and ``ANALYSES`` lists hold the objects.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import Protocol, TypeVar

from agentq.errors import PluginError


class Named(Protocol):
    """What every plugin object has: the name requests use."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


def entry_point_names(group: str) -> frozenset[str]:
    """The names registered in ``group`` by every installed distribution, importing none of them.

    Read once per process: the scan reads every installed distribution's metadata (5-10 ms), which
    was most of an enqueue's time when the client read it for every request.
    """
    return _entry_point_names(group)


@functools.cache
def _entry_point_names(group: str) -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group=group))


def load_entry_points(group: str, kind: type[T]) -> dict[str, tuple[T, str | None]]:
    """Every object of ``group``, loaded, with the name of the distribution that registers it.

    Raises :class:`PluginError` if one does not load, is not a ``kind`` of its own name, or if two
    distributions register the same name.
    """
    found: dict[str, tuple[T, str | None]] = {}
    label = kind.__name__.lower()
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"{label} {ep.name!r} ({ep.value}) does not load: {type(exc).__name__}: {exc}") from exc
        if not isinstance(obj, kind) or obj.name != ep.name:
            raise PluginError(f"entry point {ep.name!r} ({ep.value}) is not a {kind.__name__} named {ep.name!r}")
        if ep.name in found and found[ep.name][0] is not obj:
            raise PluginError(f"two installed packages register a {label} named {ep.name!r}")
        found[ep.name] = (obj, ep.dist.name if ep.dist is not None else None)
    return found


def load_module_lists(module_names: tuple[str, ...], attribute: str, kind: type[T]) -> dict[str, T]:
    """The ``kind`` objects in the ``attribute`` list of each module, imported now, by name.

    Raises :class:`PluginError` if a module does not import, its list holds something else, or a
    name comes twice.
    """
    found: dict[str, T] = {}
    for module_name in module_names:
        module = import_plugin_module(module_name)
        for obj in getattr(module, attribute, ()):
            if not isinstance(obj, kind):
                raise PluginError(f"{module_name}.{attribute} holds a {type(obj).__name__}, not a {kind.__name__}")
            if obj.name in found and found[obj.name] is not obj:
                raise PluginError(f"two plugin modules define a {kind.__name__.lower()} named {obj.name!r}")
            found[obj.name] = obj
    return found


def import_plugin_module(module_name: str) -> object:
    """Import a module of ``AGENTQ_PLUGIN_MODULES``; :class:`PluginError` naming it if that fails."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(
            f"AGENTQ_PLUGIN_MODULES: {module_name!r} does not import: {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, "SOURCES") and not hasattr(module, "ANALYSES"):
        raise PluginError(f"AGENTQ_PLUGIN_MODULES: {module_name!r} has neither a SOURCES nor an ANALYSES list")
    return module
