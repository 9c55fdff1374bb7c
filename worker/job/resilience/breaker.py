"""A circuit breaker per source, shared by every worker through one Redis hash.

Shared rather than per worker: all workers call the same upstream, so what one worker learns (the
upstream is down) holds for all. With per-worker breakers each of N workers would have to fail K
times itself, sending N×K doomed calls to an upstream that is already struggling, and each would
probe it separately after the cool-down.

States: ``closed`` (calls go through; consecutive failures are counted), ``open`` (calls are
skipped until the cool-down ends; a late success of a call begun before it opened is ignored),
``half_open`` (after the cool-down exactly one caller, across all workers, is let through as a
probe; its success closes the circuit, its failure re-opens it for another cool-down; a probe that
never reports is replaced once its lease runs out).

Hand-written as a short Lua script (``agentq/protocol/lua/breaker.lua``) because no maintained
breaker library keeps its state in Redis for asyncio clients with atomic transitions (pybreaker's
Redis storage is synchronous and updates its fields one command at a time). A script runs
atomically, so two workers can never both become the probe, and it reads Redis's own clock, so
workers on hosts whose clocks differ agree on when a cool-down ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from agentq.contract import CircuitState
from agentq.protocol import scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.protocol.keys import Keys


@dataclass(frozen=True)
class Verdict:
    """The breaker's answer: its state, the consecutive failures, and when a call may go through."""

    state: CircuitState
    failures: int
    retry_in_s: float = 0.0


class CircuitBreaker:
    """Open a source's circuit after ``threshold`` consecutive failed calls, for ``cooldown_s``."""

    def __init__(self, redis: Redis, keys: Keys, threshold: int, cooldown_s: float) -> None:
        self.keys, self.threshold, self.cooldown_s = keys, threshold, cooldown_s
        self._script = scripts.register(redis, "breaker")

    async def _run(self, source: str, op: str, lease_s: float = 0.0) -> Verdict:
        raw = await self._script(keys=[self.keys.breaker(source)], args=[op, self.threshold, self.cooldown_s, lease_s])
        state, failures, retry_in = (v.decode() if isinstance(v, bytes) else v for v in raw)
        return Verdict(cast(CircuitState, state), int(failures), float(retry_in))

    async def allow(self, source: str, probe_lease_s: float) -> Verdict:
        """May a call go to ``source`` now? ``half_open`` means yes, as the one probe."""
        return await self._run(source, "allow", probe_lease_s)

    async def success(self, source: str) -> Verdict:
        """A call answered: the count starts again and a half-open circuit closes.

        Ignored while the circuit is open: that call began before the circuit opened (a slow one),
        and one late answer must not undo the failures that opened it; only the probe closes it.
        """
        return await self._run(source, "success")

    async def failure(self, source: str) -> Verdict:
        """A call failed in a way that says the upstream is unwell: count it; open the circuit at the threshold.

        The caller decides what counts (the policy reports only timeouts and transient errors).
        """
        return await self._run(source, "failure")
