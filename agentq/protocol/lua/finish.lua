-- End one run of a job: store its result (first complete result wins) or put it back in line,
-- end its progress log, file its listing figures and wake whoever waits. One atomic step.
--
-- KEYS: [1] the job's tenant's queue, [2] jobs, [3] result, [4] progress log or unused (nothing
--       logged yet), [5] bell, [6] the job's listing figures, [7] status index or unused (the status
--       has none), [8] the same index of the job's tenant, or unused (the status has none, or the
--       tenant is the default). "unused": see given() below.
-- ARGV: [1] job id, [2] 'finish' or 'requeue', [3] result record, [4] result px or '' (forever),
--       [5] worker id, [6] requeue score, [7] '1' to give the try back on requeue,
--       [8] pending events (JSON objects joined by ','), [9] job_done event, [10] requeued event,
--       [11] progress ttl s, [12] done channel, [13] now ms, [14] the job's marker field or '' (as the
--       claim read it),
--       [15] listing figures (JSON) or '', [16] finished ms, [17] status index size
-- Returns 1 if this run's result was stored, else 0.
--
-- finish: SET NX, so of a job run twice the first complete result is kept; the run whose result
-- is stored removes the job from the queue and its record, state and dedup marker from the jobs
-- hash (a later duplicate finds them gone; a marker that names a newer job stays).
-- requeue (a run ended without a result: a stop): if this worker still holds the lease, the job
-- gets its place in line back and the bell rings; the try is given back on a stop.
-- The progress log gets the events not written yet and the last one (job_done, or requeued) only
-- if the job logged before: a job that ended first logs nothing, its watchers read the result.
-- The done channel gets the stored result itself, or '1' when an earlier run's result was kept.

-- A KEYS slot the call does not use repeats KEYS[1], the job's queue, which no optional key can be
-- (agentq.protocol.queue.Queue._given): a key every caller may write, in the queue's slot.
local function given(key) return key ~= KEYS[1] end
-- Every state field of a job (agentq.protocol.keys.Field).
local STATE = {'n', 't', 'w', 'a', 's', 'c', 'm', 'p', 'r'}
local queue, jobs, id = KEYS[1], KEYS[2], ARGV[1]
local stored, done = 0, false
if ARGV[2] == 'finish' then
  local ok
  if ARGV[4] == '' then ok = redis.call('SET', KEYS[3], ARGV[3], 'NX')
  else ok = redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) end
  done = true
  if ok then
    stored = 1
    local fields = {id}
    for _, f in ipairs(STATE) do fields[#fields + 1] = id .. ':' .. f end
    -- The marker goes if it names this job still (a cancel hands it on to a newer job at once).
    if ARGV[14] ~= '' and redis.call('HGET', jobs, ARGV[14]) == id then fields[#fields + 1] = ARGV[14] end
    redis.call('HDEL', jobs, unpack(fields))
    redis.call('ZREM', queue, id)
  end
else
  if redis.call('HGET', jobs, id .. ':w') == ARGV[5] then
    redis.call('HDEL', jobs, id .. ':w', id .. ':a')
    if ARGV[7] == '1' then redis.call('HINCRBY', jobs, id .. ':t', -1) end
    redis.call('ZADD', queue, 'XX', ARGV[6], id)
    redis.call('ZADD', KEYS[5], ARGV[13], 'ring')
  end
  done = redis.call('EXISTS', KEYS[3]) == 1
end
if given(KEYS[4]) then
  local last = ARGV[10]
  if done then last = ARGV[9] end
  local entry = '[' .. last .. ']'
  if ARGV[8] ~= '' then entry = '[' .. ARGV[8] .. ',' .. last .. ']' end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, '*', 'e', entry)
  redis.call('EXPIRE', KEYS[4], ARGV[11])
end
if stored == 1 and ARGV[15] ~= '' then
  if ARGV[4] == '' then redis.call('SET', KEYS[6], ARGV[15]) else redis.call('SET', KEYS[6], ARGV[15], 'PX', ARGV[4]) end
  if given(KEYS[7]) then
    redis.call('ZADD', KEYS[7], ARGV[16], id)
    redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -1 - tonumber(ARGV[17]))
  end
  if given(KEYS[8]) then
    redis.call('ZADD', KEYS[8], ARGV[16], id)
    redis.call('ZREMRANGEBYRANK', KEYS[8], 0, -1 - tonumber(ARGV[17]))
  end
end
if ARGV[2] == 'finish' then
  if stored == 1 then redis.call('PUBLISH', ARGV[12], ARGV[3]) else redis.call('PUBLISH', ARGV[12], '1') end
end
return stored
