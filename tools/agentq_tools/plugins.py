"""The tests' and the benchmark's plugins, for ``AGENTQ_PLUGIN_MODULES=agentq_tools.plugins``.

They are not entry points: a ``make install`` must not make them look like real sources (listed
by ``--sources nope`` and the API's 422, accepted by a producer). A worker loads them only where
the tests and the benchmark name this module (:data:`ENV`), and even then serves each one only
when ``AGENTQ_ENABLED_SOURCES`` / ``AGENTQ_ENABLED_ANALYSES`` names it (all are opt-in).
"""

from __future__ import annotations

from agentq_tools import analyses, sources

#: This module's name, as ``AGENTQ_PLUGIN_MODULES`` takes it.
MODULE = __name__
#: The environment a worker needs to load them.
ENV = {"AGENTQ_PLUGIN_MODULES": MODULE}

SOURCES = [*sources.EXTRAS.values(), sources.flaky, sources.noop, sources.ticker, sources.poison]
ANALYSES = [analyses.numpy_similarity, analyses.noop]
