"""Which source policies apply to one source: a part of the plugin interface, and of the settings.

The policies themselves (``worker.job.resilience``) are the worker's; this is only the switchboard a
source carries. Every policy is on by default; a source turns off what does not fit it (an answer
that must never be cached, an upstream that must not be retried), and the worker then makes no
Redis call for that policy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourcePolicies:
    """Which of the worker's source policies apply to a source (all do unless turned off)."""

    cache: bool = True
    """Keep the fetched text in the shared cache (``AGENTQ_CACHE_TTL_S``) and answer from it."""
    retries: bool = True
    """Retry a timed-out or transiently failed fetch (``AGENTQ_SOURCE_RETRIES``)."""
    breaker: bool = True
    """Count upstream failures towards the shared circuit breaker (``AGENTQ_BREAKER_FAILURES``)."""
    adaptive_timeout: bool = True
    """Derive the timeout from recent latencies (``AGENTQ_ADAPTIVE_TIMEOUTS``)."""
    rate_limit: bool = True
    """Honour this source's entry of ``AGENTQ_RATE_LIMITS``."""
