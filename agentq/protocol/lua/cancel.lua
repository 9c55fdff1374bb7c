-- Cancel a job, atomically: a job is never both started and cancelled.
--
-- KEYS: [1] the job's tenant's queue, [2] jobs, [3] bell, and, to store a waiting job's cancelled
--       result now: [4] result, [5] the job's listing figures, [6] cancelled index, [7] its tenant's
--       cancelled index or unused (the default tenant has none of its own; see given() below)
-- ARGV: [1] job id, [2] cancel channel, [3] now ms,
--       [4] '1' to cancel only a job that waits (a purge): one a worker holds is left to run,
--       with KEYS[4...]: [5] result record (status cancelled), [6] result px, [7] done channel,
--       [8] listing figures (JSON), [9] index size
-- Returns 'cancelling' (a worker holds it: its cancel field is set and the workers are told),
-- 'running' (a worker holds it and [4] is '1': untouched), 'cancelled' (it waited: it never
-- starts) or 'gone' (not in the queue: finished, or never was; the caller tells which by its result).
--
-- A job that waits leaves the queue with its cancelled result stored and its waiters woken, when
-- the caller passes the result's keys. A caller whose Redis user may not write results (the
-- producer's, agentq.protocol.acl) passes none: the job then keeps its place with its cancel field
-- set, and comes due at once ahead of every other (score 0); the next worker to take it stores its
-- cancelled result without running it (worker.job.answer). Either way the job's dedup marker goes
-- now, so the same question asked again is a new job instead of joining the cancelled one.

-- A KEYS slot the call does not use repeats KEYS[1], the job's queue, which no optional key can be
-- (agentq.protocol.queue.Queue._given): a key every caller may write, in the queue's slot.
local function given(key) return key ~= KEYS[1] end
-- Every state field of a job (agentq.protocol.keys.Field).
local STATE = {'n', 't', 'w', 'a', 's', 'c', 'm', 'p', 'r'}
local queue, jobs, id = KEYS[1], KEYS[2], ARGV[1]
local held = redis.call('HEXISTS', jobs, id .. ':w') == 1
if held and ARGV[4] == '1' then return 'running' end
if not held and not redis.call('ZSCORE', queue, id) then return 'gone' end
local marker = redis.call('HGET', jobs, id .. ':m')
if marker and redis.call('HGET', jobs, marker) == id then redis.call('HDEL', jobs, marker) end
if held or not KEYS[4] then
  redis.call('HDEL', jobs, id .. ':m')
  redis.call('HSET', jobs, id .. ':c', '1')
  if held then
    redis.call('PUBLISH', ARGV[2], id)
    return 'cancelling'
  end
  redis.call('ZADD', queue, 'XX', 0, id)
  redis.call('ZADD', KEYS[3], ARGV[3], 'ring')
  return 'cancelled'
end
redis.call('ZREM', queue, id)
local fields = {id}
for _, f in ipairs(STATE) do fields[#fields + 1] = id .. ':' .. f end
redis.call('HDEL', jobs, unpack(fields))
redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6], 'NX')
redis.call('SET', KEYS[5], ARGV[8], 'PX', ARGV[6])
redis.call('ZADD', KEYS[6], ARGV[3], id)
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - tonumber(ARGV[9]))
if given(KEYS[7]) then
  redis.call('ZADD', KEYS[7], ARGV[3], id)
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -1 - tonumber(ARGV[9]))
end
redis.call('PUBLISH', ARGV[7], ARGV[5])
return 'cancelled'
