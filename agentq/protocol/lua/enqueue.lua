-- Put a job on the queue, or join the unfinished job that answers the same request.
--
-- KEYS: [1] the job's tenant's queue, [2] jobs, [3] index, [4] bell, [5] the tenant's own index or
--       unused (the default tenant's jobs are listed from the index of all), [6] the tenants sorted
--       set or unused (the default tenant's queue is always served), [7] the tenant's enqueue times
--       or unused (it has no per-minute quota), [8] schedule ticks (only for a tick's job).
--       "unused": see given() below.
-- ARGV: [1] job id, [2] job record, [3] queue score, [4] now ms, [5] marker field or '' (no dedup),
--       [6] index score, [7] index size, [8] '1' to trim the index to its size now, [9] priority,
--       [10] the id of the job this one re-runs or '', [11] the job's tenant, [12] the tenant's
--       quota of jobs in flight or '', [13] its quota of jobs a minute or '',
--       with KEYS[8]: [14] schedule name, [15] the tick this worker read, [16] the tick after it
-- Returns {job id, 1 if an unfinished job was joined else 0}, {'', 2} when the tick had moved, or
-- {'', 3, ms} (jobs in flight) or {'', 4, ms} (jobs a minute) when the tenant's quota is used up:
-- nothing is written, and asking again after ms may pass.
--
-- Quotas (AGENTQ_TENANT_QUOTAS) count new jobs only: joining a job in flight is free. Jobs in
-- flight are those in the tenant's queue (queued, deferred, running); jobs a minute are the
-- enqueue times of the last 60 s, a moving window (a sorted set trimmed as it is read).
--
-- A tick's job (agentq.schedules) is written only if the schedule's tick is still the one the
-- worker read, and the tick moves on in the same step: of the workers that saw the tick come, one
-- enqueues it, whatever their number.
--
-- With a marker, the job it names is unfinished while it is in the queue (queued, deferred or
-- running: a job leaves the queue in the step that stores its result). The caller then joins it,
-- and a higher priority moves it up if it is due and waiting (ZADD LT: never down; a running
-- job's lease score and a deferred job's time lie in the future and stay). Else a new job is
-- written, the marker names it, it joins the recent-jobs index (and its tenant's), its tenant joins
-- the tenants the claim serves (agentq.protocol.lua.claim: fair share), and the bell rings.

-- A KEYS slot the call does not use repeats KEYS[1], the job's queue, which no optional key can be
-- (agentq.protocol.queue.Queue._given): a key every caller may write, in the queue's slot.
local function given(key) return key ~= KEYS[1] end
local queue, jobs, index, bell = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, marker, now = ARGV[1], ARGV[5], tonumber(ARGV[4])
if KEYS[8] then
  if tonumber(redis.call('ZSCORE', KEYS[8], ARGV[14])) ~= tonumber(ARGV[15]) then return {'', 2} end
  redis.call('ZADD', KEYS[8], 'XX', ARGV[16], ARGV[14])
end
if marker ~= '' then
  local current = redis.call('HGET', jobs, marker)
  if current then
    local score = redis.call('ZSCORE', queue, current)
    if score then
      if tonumber(score) <= now + 1 then  -- due and waiting (1 ms: rounding)
        redis.call('ZADD', queue, 'XX', 'LT', ARGV[3], current)
      end
      return {current, 1}
    end
  end
end
if ARGV[12] ~= '' and redis.call('ZCARD', queue) >= tonumber(ARGV[12]) then return {'', 3, 1000} end
if given(KEYS[7]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[13]) then
    local oldest = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
    if #oldest == 0 then return {'', 4, 1000} end  -- a sharded queue's other shards hold the minute's quota
    return {'', 4, math.max(1, tonumber(oldest[2]) + 60000 - now)}
  end
  redis.call('ZADD', KEYS[7], now, id)
  redis.call('PEXPIRE', KEYS[7], 61000)
end
local fields = {id, ARGV[2], id .. ':p', ARGV[9]}
if marker ~= '' then
  for _, v in ipairs({marker, id, id .. ':m', marker}) do fields[#fields + 1] = v end
end
if ARGV[10] ~= '' then fields[#fields + 1] = id .. ':r'; fields[#fields + 1] = ARGV[10] end
redis.call('HSET', jobs, unpack(fields))
redis.call('ZADD', queue, ARGV[3], id)
redis.call('ZADD', index, ARGV[6], id)
if ARGV[8] == '1' then redis.call('ZREMRANGEBYRANK', index, 0, -1 - tonumber(ARGV[7])) end
if given(KEYS[5]) then
  redis.call('ZADD', KEYS[5], ARGV[6], id)
  if ARGV[8] == '1' then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -1 - tonumber(ARGV[7])) end
end
if given(KEYS[6]) then redis.call('ZADD', KEYS[6], 'NX', 0, ARGV[11]) end
redis.call('ZADD', bell, now, 'ring')
return {id, 0}
