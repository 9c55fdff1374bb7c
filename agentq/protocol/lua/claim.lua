-- Take due jobs off the heads of the tenants' queues, each under a lease this worker holds, the
-- tenants served by weighted fair share.
--
-- KEYS: [1] the default tenant's queue, [2] jobs, [3] bell, [4] tenants, [5...] the queue of each
--       tenant named in ARGV[10...], in that order
-- ARGV: [1] now ms, [2] jobs wanted, [3] lease ms, [4] entries to read per queue, [5] worker id,
--       [6] '1' if this worker runs nothing now (only then may it take a job that must run alone),
--       [7] '1' if this worker lost Redis itself within the last lease (it cannot tell a death),
--       [8] the default tenant's weight, [9] '1' to read the tenants (an idle worker's look unasked,
--       knowing none, skips them: it costs no more than before tenants), [10...] per other tenant
--       this worker knows: name, weight
-- Returns {more, next due score or '', leases of its own renewed, read all, held back,
--          other workers' lapsed leases spared, the tenants now (each name after a ',') if they
--          are not those this worker named, else '', then per job taken: id, score, record or '', run
--          number, tries counted, cancel requested or '', alone, marker field or '', priority or '',
--          the job it re-runs or '', '1' if this worker held it already or '0'}.
--
-- Each tenant has a queue of its own (the default tenant's is the queue every job was in before
-- tenants existed), read by rank, lowest score first, so priorities hold within a tenant. A due
-- entry is a queued job, or a running job whose lease lapsed: its worker died, or stalls. A lease
-- this worker holds is renewed, neither a new run nor a try, and the job is handed back marked as
-- held: the worker runs it still (its loop stalled), or never did because the reply to the claim
-- that took it was lost; only the worker knows which, and starts it in the second case. Another
-- worker's lapsed lease is a death, and makes the job a suspect, to run alone from now on: a run
-- alone died of itself and keeps its try; a run in company may have died of another job, so its
-- try is given back. A suspect is taken only by a worker that runs nothing, as its only job; a
-- busy worker that meets one takes nothing more (held back), so it soon runs nothing and can.
-- A worker that has itself just lost Redis cannot tell a death from an outage that struck every
-- worker at once (a failover, a restart longer than the lease): it spares another worker's lapsed
-- lease, pushing it back one lease and changing nothing else, so a holder that is alive renews it
-- and keeps its job; a holder that is dead loses it one lease later, to a worker that can tell.
-- A taken job's score becomes its lease's end (the lease score): running jobs are never due.
--
-- Fair share (start-time fair queueing): the tenants sorted set holds each tenant's pass and, as
-- member '~', the virtual clock. Each job is taken from the tenant with due work whose pass is
-- lowest, a pass below the clock counting as the clock (a tenant back from idle gets no credit
-- for its idle time); taking a job moves that tenant's pass on by 1 / its weight and the clock to
-- where it was. So while tenants have backlogs, their starts go by their weights, and a tenant
-- with one job waits for at most one job of each other tenant. Work-conserving: a tenant with
-- nothing due is passed over. Passes move only when two or more tenants have due work: a tenant
-- alone costs no write. A tenant whose queue is empty leaves the set (enqueue puts it back).
-- Tenants this worker did not name (new ones) are returned, for it to claim again with them.
local jobs, bell, tenants = KEYS[2], KEYS[3], KEYS[4]
local now, want, lease, me = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local idle, unsure = ARGV[6] == '1', ARGV[7] == '1'
local look = tonumber(ARGV[4])
local out = {0, '', 0, 0, 0, 0, ''}
local sources, named = {{name = 'default', key = KEYS[1], weight = tonumber(ARGV[8]), pass = 0}}, {}
for i = 10, #ARGV, 2 do
  local source = {name = ARGV[i], key = KEYS[5 + (i - 10) / 2], weight = tonumber(ARGV[i + 1]), pass = 0}
  sources[#sources + 1] = source
  named[source.name] = source
end
named['default'] = sources[1]
local clock, listed = 0, {}
local found = {}
if ARGV[9] == '1' or #sources > 1 then found = redis.call('ZRANGE', tenants, 0, -1, 'WITHSCORES') end
for i = 1, #found, 2 do
  local name, pass = found[i], tonumber(found[i + 1])
  if name == '~' then clock = pass
  else
    if name ~= 'default' then listed[#listed + 1] = name end
    if named[name] then named[name].pass = pass end
  end
end

-- The next entry of a source's queue if it is due, else nil (and the source is done for this claim).
local function head(source)
  if source.done then return nil end
  if not source.page then
    source.page, source.at = redis.call('ZRANGE', source.key, 0, look - 1, 'WITHSCORES'), 1
    if #source.page == 0 and source.name ~= 'default' then
      redis.call('ZREM', tenants, source.name)
      source.gone = true
    end
  end
  if source.at > #source.page then
    if #source.page == 2 * look then out[4] = 1 end
    source.done = true
    return nil
  end
  local score = source.page[source.at + 1]
  if tonumber(score) > now then
    if out[2] == '' or tonumber(score) < tonumber(out[2]) then out[2] = score end
    source.done = true
    return nil
  end
  return source.page[source.at], score
end

-- The source to take from next (lowest pass, the clock at least), its pass, how many have due work.
local function pick()
  local best, best_pass, due = nil, 0, 0
  for _, source in ipairs(sources) do
    if head(source) then
      due = due + 1
      local pass = math.max(source.pass, clock)
      if not best or pass < best_pass then best, best_pass = source, pass end
    end
  end
  return best, best_pass, due
end

local function hand_over(id, score, f, runs, tries, solo, held)
  for _, v in ipairs({id, score, f[1] or '', runs, tries, f[6] or '', solo, f[7] or '', f[8] or '', f[9] or '', held}) do
    out[#out + 1] = v
  end
end

local taken = 0
while true do
  local source, pass, due = pick()
  if not source then break end
  if taken >= want then out[1] = 1; break end
  local queue = source.key
  local id, score = head(source)
  source.at = source.at + 2
  local f = redis.call('HMGET', jobs, id, id .. ':t', id .. ':w', id .. ':a', id .. ':s', id .. ':c',
    id .. ':m', id .. ':p', id .. ':r', id .. ':n')
  local tries, holder, alone, suspect = tonumber(f[2]) or 0, f[3], f[4], f[5]
  if holder == me then
    redis.call('ZADD', queue, 'XX', now + lease, id)
    out[3] = out[3] + 1
    local solo = '0'
    if alone == '1' then solo = '1' end
    hand_over(id, score, f, f[10] or '1', tries, solo, '1')
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
      break
    end
    tries = tries + 1
    local runs = (tonumber(f[10]) or 0) + 1
    local solo = '0'
    if suspect == '1' then solo = '1' end
    redis.call('HSET', jobs, id .. ':t', tries, id .. ':n', runs, id .. ':w', me, id .. ':a', solo, id .. ':s', '')
    redis.call('ZADD', queue, 'XX', now + lease, id)
    hand_over(id, score, f, runs, tries, solo, '0')
    taken = taken + 1
    if due > 1 then
      source.pass, clock, source.moved = pass + 1 / source.weight, pass, true
    end
    if solo == '1' then break end
  end
end
local passes = {clock, '~'}
for _, source in ipairs(sources) do
  if source.moved then passes[#passes + 1] = source.pass; passes[#passes + 1] = source.name end
end
if #passes > 2 then redis.call('ZADD', tenants, unpack(passes)) end
-- The tenants served now, when the worker did not name one of them (a stranger), or when more than
-- 16 of those it named had empty queues: those listed, less those just found empty. A tenant the
-- worker names that has gone idle costs a read of its empty queue, not a round trip to learn it
-- again when its next job comes.
local now_served, strangers, idle_named = {}, 0, 0
for _, name in ipairs(listed) do
  if not (named[name] and named[name].gone) then now_served[#now_served + 1] = name end
  if not named[name] then strangers = strangers + 1 end
end
for _, source in ipairs(sources) do
  if source.gone then idle_named = idle_named + 1 end
end
if strangers > 0 or idle_named > 16 then out[7] = ',' .. table.concat(now_served, ',') end
if out[1] == 1 or out[5] == 1 then redis.call('ZADD', bell, now, 'ring') end
return out
