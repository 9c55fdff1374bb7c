-- Cancel a job, atomically: a job is never both started and cancelled.
--
-- KEYS: [1] the job's tenant's queue, [2] jobs, [3] result, [4] the job's listing figures, [5] cancelled index,
--       [6] its tenant's cancelled index or '' (the default tenant has none of its own)
-- ARGV: [1] job id, [2] result record (status cancelled), [3] result px, [4] cancel channel,
--       [5] done channel, [6] listing figures (JSON), [7] now ms, [8] index size,
--       [9] '1' to cancel only a job that waits (a purge): one a worker holds is left to run
-- Returns 'finished' (a result is stored: too late), 'cancelling' (a worker holds it: its cancel
-- field is set and the workers are told), 'running' (a worker holds it and [9] is '1': untouched),
-- 'cancelled' (it was queued: it is out of the queue, its cancelled result stored and its waiters
-- woken) or 'not_found'.

-- Every state field of a job (agentq.protocol.keys.Field).
local STATE = {'n', 't', 'w', 'a', 's', 'c', 'm', 'p', 'r'}
local queue, jobs, id = KEYS[1], KEYS[2], ARGV[1]
if redis.call('EXISTS', KEYS[3]) == 1 then return 'finished' end
if redis.call('HEXISTS', jobs, id .. ':w') == 1 then
  if ARGV[9] == '1' then return 'running' end
  redis.call('HSET', jobs, id .. ':c', '1')
  redis.call('PUBLISH', ARGV[4], id)
  return 'cancelling'
end
if redis.call('ZREM', queue, id) == 1 then
  local fields = {id}
  for _, f in ipairs(STATE) do fields[#fields + 1] = id .. ':' .. f end
  local marker = redis.call('HGET', jobs, id .. ':m')
  if marker then fields[#fields + 1] = marker end  -- an unfinished job's marker names it
  redis.call('HDEL', jobs, unpack(fields))
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3], 'NX')
  redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[7], id)
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -1 - tonumber(ARGV[8]))
  if KEYS[6] ~= '' then
    redis.call('ZADD', KEYS[6], ARGV[7], id)
    redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - tonumber(ARGV[8]))
  end
  redis.call('PUBLISH', ARGV[5], ARGV[2])
  return 'cancelled'
end
return 'not_found'
