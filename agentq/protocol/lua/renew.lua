-- Push back the leases of jobs this worker runs: each one's score becomes now + lease.
--
-- KEYS: [1] jobs, then per job: its tenant's queue
-- ARGV: [1] lease ms, [2] now ms, [3] worker id, [4...] job ids
-- Returns the ids whose lease this worker no longer holds (it lapsed and another worker took the
-- job, or the job has ended): those are left alone.
local lost = {}
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[1])
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[1], id .. ':w') == ARGV[3] then
    redis.call('ZADD', KEYS[i - 2], 'XX', until_ms, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
