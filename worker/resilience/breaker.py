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

Hand-written as a short Lua script because no maintained breaker library keeps its state in Redis
for asyncio clients with atomic transitions (pybreaker's Redis storage is synchronous and updates
its fields one command at a time). A script runs atomically, so two workers can never both become
the probe, and it reads Redis's own clock, so workers on hosts whose clocks differ agree on when a
cool-down ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from agentq.contract import CircuitState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.keys import Keys

# KEYS[1] the breaker hash; ARGV: op (allow|success|failure), threshold, cool-down s, probe lease s.
# Returns {state, consecutive failures, seconds until a call may go through (as a string)}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, threshold, cooldown, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl = math.ceil(cooldown) + 3600
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if op == 'allow' then
  if state == 'closed' then return {'closed', failures, '0'} end
  local field = 'opened_until'
  if state == 'half_open' then field = 'probe_until' end
  local until_ = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if now < until_ then return {'open', failures, tostring(until_ - now)} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', tostring(now + lease))
  redis.call('EXPIRE', KEYS[1], ttl)
  return {'half_open', failures, '0'}
elseif op == 'success' then
  if state == 'open' then
    -- a call begun before the circuit opened: it must not close it early (only the probe may)
    local until_ = tonumber(redis.call('HGET', KEYS[1], 'opened_until') or '0')
    return {'open', failures, tostring(math.max(until_ - now, 0))}
  end
  if state ~= 'closed' or failures > 0 then redis.call('DEL', KEYS[1]) end
  return {'closed', 0, '0'}
end
failures = failures + 1
redis.call('HSET', KEYS[1], 'failures', failures)
if state == 'half_open' or (state == 'closed' and failures >= threshold) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_until', tostring(now + cooldown))
  state = 'open'
end
redis.call('EXPIRE', KEYS[1], ttl)
return {state, failures, '0'}
"""


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
        self._script = redis.register_script(_SCRIPT)

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
