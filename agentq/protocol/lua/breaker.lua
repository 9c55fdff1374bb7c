-- A source's circuit breaker, shared by every worker (worker.resilience.breaker says why).
--
-- KEYS: [1] the breaker hash
-- ARGV: [1] op (allow|success|failure), [2] threshold, [3] cool-down s, [4] probe lease s
-- Returns {state, consecutive failures, seconds until a call may go through (as a string)}.
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
