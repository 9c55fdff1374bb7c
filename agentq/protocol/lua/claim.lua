-- Take due jobs off the head of the queue, each under a lease this worker holds.
--
-- KEYS: [1] queue, [2] jobs, [3] bell
-- ARGV: [1] now ms, [2] jobs wanted, [3] lease ms, [4] entries to read, [5] worker id,
--       [6] '1' if this worker runs nothing now (only then may it take a job that must run alone),
--       [7] '1' if this worker lost Redis itself within the last lease (it cannot tell a death)
-- Returns {more, next due score or '', leases of its own renewed, read all, held back,
--          other workers' lapsed leases spared, then per job taken: id, score, record or '', run
--          number, tries counted, cancel requested or '', alone, marker field or '', priority or '',
--          the job it re-runs or '', '1' if this worker held it already or '0'}.
--
-- The head is read by rank, lowest score first, so priorities hold. A due entry is a queued job,
-- or a running job whose lease lapsed: its worker died, or stalls. A lease this worker holds is
-- renewed, neither a new run nor a try, and the job is handed back marked as held: the worker
-- runs it still (its loop stalled), or never did because the reply to the claim that took it was
-- lost; only the worker knows which, and starts it in the second case. Another worker's
-- lapsed lease is a death, and makes the job a suspect, to run alone from now on: a run alone
-- died of itself and keeps its try; a run in company may have died of another job, so its try is
-- given back. A suspect is taken only by a worker that runs nothing, as its only job; a busy
-- worker that meets one takes nothing behind it (held back), so it soon runs nothing and can.
-- A worker that has itself just lost Redis cannot tell a death from an outage that struck every
-- worker at once (a failover, a restart longer than the lease): it spares another worker's lapsed
-- lease, pushing it back one lease and changing nothing else, so a holder that is alive renews it
-- and keeps its job; a holder that is dead loses it one lease later, to a worker that can tell.
-- A taken job's score becomes its lease's end (the lease score): running jobs are never due.
local queue, jobs, bell = KEYS[1], KEYS[2], KEYS[3]
local now, want, lease, me = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local idle, unsure = ARGV[6] == '1', ARGV[7] == '1'
local look = tonumber(ARGV[4])
local head = redis.call('ZRANGE', queue, 0, look - 1, 'WITHSCORES')
local out = {0, '', 0, 0, 0, 0}
local taken, stopped = 0, false
for i = 1, #head, 2 do
  local id, score = head[i], head[i + 1]
  if tonumber(score) > now then out[2] = score; stopped = true; break end
  if taken >= want then out[1] = 1; stopped = true; break end
  local f = redis.call('HMGET', jobs, id, id .. ':t', id .. ':w', id .. ':a', id .. ':s', id .. ':c',
    id .. ':m', id .. ':p', id .. ':r', id .. ':n')
  local record, tries, holder, alone, suspect, cancel = f[1], tonumber(f[2]) or 0, f[3], f[4], f[5], f[6]
  if holder == me then
    redis.call('ZADD', queue, 'XX', now + lease, id)
    out[3] = out[3] + 1
    local runs, solo = f[10] or '1', '0'
    if alone == '1' then solo = '1' end
    for _, v in ipairs({id, score, record or '', runs, tries, cancel or '', solo, f[7] or '', f[8] or '', f[9] or '', '1'}) do
      out[#out + 1] = v
    end
  elseif holder and unsure then
    redis.call('ZADD', queue, 'XX', now + lease, id)
    out[6] = out[6] + 1
  else
    if holder then
      if alone ~= '1' then tries = tries - 1 end
      suspect = '1'
      redis.call('HDEL', jobs, id .. ':w', id .. ':a')
      redis.call('HSET', jobs, id .. ':t', tries, id .. ':s', suspect)
    end
    if suspect == '1' and not (idle and taken == 0) then
      out[5] = 1
      stopped = true
      break
    end
    tries = tries + 1
    local runs = (tonumber(f[10]) or 0) + 1
    local solo = '0'
    if suspect == '1' then solo = '1' end
    redis.call('HSET', jobs, id .. ':t', tries, id .. ':n', runs, id .. ':w', me, id .. ':a', solo, id .. ':s', '')
    redis.call('ZADD', queue, 'XX', now + lease, id)
    for _, v in ipairs({id, score, record or '', runs, tries, cancel or '', solo, f[7] or '', f[8] or '', f[9] or '', '0'}) do
      out[#out + 1] = v
    end
    taken = taken + 1
    if solo == '1' then stopped = true; break end
  end
end
if not stopped and #head == 2 * look then out[4] = 1 end
if out[1] == 1 or out[5] == 1 then redis.call('ZADD', bell, now, 'ring') end
return out
