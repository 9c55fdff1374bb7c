"""agentq's shared core: what the producer and the worker both need, and nothing either runs.

- ``agentq.contract``    the request and result models, progress events, the JSON codec
- ``agentq.wire``        arq's Redis format (job and result records, key names), spoken without arq
- ``agentq.keys``        every Redis key name of ours
- ``agentq.settings``    every setting, one pydantic-settings object
- ``agentq.errors``      the error tree, and the one test of "Redis is down"
- ``agentq.connection``  how a Redis connection is built from the settings
- ``agentq.sources``     the source interface and the registry of installed sources

The core imports neither side: ``producer`` and ``worker`` import it.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("agentq")
except metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0"
