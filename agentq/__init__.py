"""agentq's shared core: what the producer and the worker both need, and nothing either runs.

- ``agentq.contract``    the request and result models, progress events, the JSON codec
- ``agentq.wire``        arq's Redis format (job and result records, key names), spoken without arq
- ``agentq.keys``        every Redis key name of ours
- ``agentq.settings``    every setting, one pydantic-settings object
- ``agentq.errors``      the error tree, and the one test of "Redis is down"
- ``agentq.connection``  how a Redis connection is built from the settings
- ``agentq.plugins``     the plugin interface, the one import of plugin authors (docs/plugins.md)
- ``agentq.sources``     the source interface, payload rendering and the registry of installed sources
- ``agentq.analyses``    the analysis interface (the inference stage) and the registry of installed analyses
- ``agentq.policies``    which source policies apply to a source
- ``agentq.registry``    where plugins are found: entry points, and the modules of a setting

The core imports neither side: ``producer`` and ``worker`` import it.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("agentq")
except metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0"
