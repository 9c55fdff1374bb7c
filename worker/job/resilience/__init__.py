"""Source policies: how a source's text is fetched when upstreams are slow, flaky and rate-limited.

:class:`ResilientFetch` is the fan-out's :class:`~worker.job.fanout.FetchPolicy`. For each source of each
query it consults, in order: the shared cache (``cache``), the circuit breaker (``breaker``), the
adaptive timeout (``adaptive``), then runs the fetch under retries (``retry``), each attempt first
taking a rate-limit token (``ratelimit``). All state lives in Redis, so every worker shares it.
"""

from __future__ import annotations

from worker.job.resilience.policy import ResilientFetch

__all__ = ["ResilientFetch"]
