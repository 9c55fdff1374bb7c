-- Give back jobs this worker claimed but will not start (admission: they would miss their
-- deadline here): lease gone, score and try count restored, bell rung for another worker.
--
-- KEYS: [1] jobs, [2] bell, then per job: its tenant's queue
-- ARGV: [1] now ms, [2] worker id, then per job: id, score to restore
local jobs = KEYS[1]
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', jobs, id .. ':w') == ARGV[2] then
    local alone = redis.call('HGET', jobs, id .. ':a')
    redis.call('HDEL', jobs, id .. ':w', id .. ':a')
    redis.call('HINCRBY', jobs, id .. ':t', -1)
    redis.call('HINCRBY', jobs, id .. ':n', -1)
    if alone == '1' then redis.call('HSET', jobs, id .. ':s', '1') end
    redis.call('ZADD', KEYS[3 + (i - 3) / 2], 'XX', ARGV[i + 1], id)
  end
end
redis.call('ZADD', KEYS[2], ARGV[1], 'ring')
return 1
