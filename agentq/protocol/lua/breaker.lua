-- A source's circuit breaker, shared by every worker (worker.resilience.breaker says why).
--
-- KEYS: [1] the breaker hash
-- ARGV: [1] op (allow|success|failure), [2] threshold, [3] cool-down s, [4] probe lease s
-- Returns {state, consecutive failures, seconds until a call may go through (as a string)}.
local op, threshold, cooldown, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_until', 'probe_until')
local state, failures = h[1] or 'closed', tonumber(h[2] or '0')
if state == 'closed' and op ~= 'failure' then
  -- the common case, a healthy source: one read, no clock, no write unless failures are to be forgotten
  if op == 'success' and failures > 0 then redis.call('DEL', KEYS[1]) end
  if op == 'success' then failures = 0 end
  return {'closed', failures, '0'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = math.ceil(cooldown) + 3600
if op == 'allow' then
  local until_ = tonumber(h[3] or '0')
  if state == 'half_open' then until_ = tonumber(h[4] or '0') end
  if now < until_ then return {'open', failures, tostring(until_ - now)} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', tostring(now + lease))
  redis.call('EXPIRE', KEYS[1], ttl)
  return {'half_open', failures, '0'}
elseif op == 'success' then
  if state == 'open' then
    -- a call begun before the circuit opened: it must not close it early (only the probe may)
    return {'open', failures, tostring(math.max(tonumber(h[3] or '0') - now, 0))}
  end
  redis.call('DEL', KEYS[1])
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
