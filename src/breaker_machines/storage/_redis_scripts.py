"""The Lua scripts the Redis storage runs: each operation is one script, one round trip.

Every script reads the time from Redis (``TIME``), never from a process: stored times are
the server's, and what goes back to a process is relative (``retry_in``, ``opened_ago``).
A breaker's keys share one hash tag, so a script touches one cluster slot. Names and
every other value arrive as ``ARGV`` (data), never as script text.

Keys of one breaker (``KEYS``): ``1`` the record (a hash), ``2`` the window buckets (a
hash: ``f:<bucket>`` failures of the failure window, ``c:``/``x:``/``s:<bucket>`` calls,
failures and slow calls of the rate window), ``3`` the half-open permits (a sorted set:
token -> lease end), ``4`` the batches applied in this generation (a hash: origin -> the
last ``seq`` applied), which makes a resent flush count once.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "FLUSH", "PROPOSE", "READ"]

# Shared helpers, pasted at the top of each script (scripts cannot share functions).
_PRELUDE = r"""
local function clock(shift)
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(shift)
end
-- A stored number that is not one is corrupt data: an error the storage reports as
-- CorruptRecordError (the breaker then replaces the record), never a silent default.
local function num(v, d)
  if v == nil or v == false or v == '' then return d end
  local n = tonumber(v)
  if n == nil then error({err = 'BM_CORRUPT not a number: ' .. string.sub(tostring(v), 1, 40)}) end
  return n
end
local function read(key)
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end
local function stamp(x)
  return string.format('%.6f', x)
end
-- The record as a process sees it: times relative to now, windows newest bucket first.
-- spec = {failure bucket width, rate bucket width, calls per rate bucket, buckets};
-- w is the window hash already read (nil: read it if the spec needs it).
local function record(h, now, wkey, pkey, spec, w)
  local rec = {
    status = h.status or 'closed', version = num(h.version, 0), trips = num(h.trips, 0),
    reason = h.reason or '', cf = num(h.cf, 0), hos = num(h.hos, 0),
    rhead = num(h.rhead, 0), origin = h.origin or '', missing = 0, fw = {}, rw = {},
    probes = 0,
  }
  if h.version == nil then rec.missing = 1 end
  local opened = num(h.opened_at, nil)
  if opened ~= nil then rec.opened_ago = now - opened end
  local retry = num(h.retry_at, nil)
  if retry ~= nil then rec.retry_in = retry - now end
  if rec.status == 'half_open' then
    rec.probes = redis.call('ZCOUNT', pkey, '(' .. stamp(now), '+inf')
  end
  local fwidth, rwidth, rcalls, n = spec[1], spec[2], spec[3], spec[4]
  if n > 0 and (fwidth > 0 or rwidth > 0 or rcalls > 0) then
    if w == nil then w = read(wkey) end
    if fwidth > 0 then
      local head = math.floor(now / fwidth)
      for i = 0, n - 1 do rec.fw[i + 1] = num(w['f:' .. (head - i)], 0) end
    end
    local head = nil
    if rcalls > 0 then head = rec.rhead elseif rwidth > 0 then head = math.floor(now / rwidth) end
    if head ~= nil then
      for i = 0, n - 1 do
        local b = head - i
        rec.rw[i + 1] = {num(w['c:' .. b], 0), num(w['x:' .. b], 0), num(w['s:' .. b], 0)}
      end
    end
  end
  return rec
end
-- redis.call with many arguments, a few hundred at a time (Lua's stack is bounded).
local function call_chunked(command, key, args, step)
  for i = 1, #args, step do
    redis.call(command, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end
local function touch(ttl, keys)
  for _, k in ipairs(keys) do redis.call('PEXPIRE', k, ttl) end
end
"""

#: Add a batch of outcomes and released permits; read the record back.
#: ARGV: shift, ttl_ms, version, outcomes, fwidth, rwidth, rcalls, buckets, probes (JSON
#: list of [token, 0|1]), name, origin, seq.
FLUSH = (
    _PRELUDE
    + r"""
local now = clock(ARGV[1])
local ttl = tonumber(ARGV[2])
local version = tonumber(ARGV[3])
local outcomes = ARGV[4]
local spec = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local released = cjson.decode(ARGV[9])
local h = read(KEYS[1])
local current = num(h.version, 0) == version
local w = nil
-- A batch resent after a lost answer counts once: remember the last seq per origin.
local seq = tonumber(ARGV[12])
if seq > 0 and current and #outcomes > 0 then
  if num(redis.call('HGET', KEYS[4], ARGV[11]), 0) >= seq then
    outcomes = ''
  elseif redis.call('HSET', KEYS[4], ARGV[11], seq) == 1
         and redis.call('HLEN', KEYS[4]) > 1024 then
    -- Bounded: a generation that saw more than 1,024 breakers starts remembering anew.
    redis.call('DEL', KEYS[4])
    redis.call('HSET', KEYS[4], ARGV[11], seq)
  end
end
if current and h.version == nil and #outcomes > 0 then
  h = {status = 'closed', version = '0', trips = '0', cf = '0', hos = '0', rhead = '0',
       name = ARGV[10], reason = '', origin = ''}
  redis.call('HSET', KEYS[1], 'status', 'closed', 'version', 0, 'trips', 0, 'cf', 0,
             'hos', 0, 'rhead', 0, 'name', ARGV[10], 'reason', '', 'origin', '')
end
local status = h.status or 'closed'
if status == 'half_open' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', stamp(now))
end
if current and status == 'closed' and #outcomes > 0 then
  local fwidth, rwidth, rcalls, n = spec[1], spec[2], spec[3], spec[4]
  w = read(KEYS[2])
  local cf = num(h.cf, 0)
  local rhead = num(h.rhead, 0)
  local changed = {}
  local function bump(field, by)
    if by > 0 then
      w[field] = num(w[field], 0) + by
      changed[field] = true
    end
  end
  local fhead = fwidth > 0 and math.floor(now / fwidth) or 0
  local thead = rwidth > 0 and math.floor(now / rwidth) or 0
  local fill = 0
  if rcalls > 0 then fill = num(w['c:' .. rhead], 0) end
  for i = 1, #outcomes do
    local c = string.sub(outcomes, i, i)
    local failed = (c == 'f' or c == 'F') and 1 or 0
    local slow = (c == 'S' or c == 'F') and 1 or 0
    if failed == 1 then cf = cf + 1 else cf = 0 end
    if fwidth > 0 then bump('f:' .. fhead, failed) end
    local b = nil
    if rcalls > 0 then
      if fill >= rcalls then rhead = rhead + 1; fill = 0 end
      fill = fill + 1
      b = rhead
    elseif rwidth > 0 then
      b = thead
    end
    if b ~= nil then
      bump('c:' .. b, 1); bump('x:' .. b, failed); bump('s:' .. b, slow)
    end
  end
  -- One write for the buckets, one for the counters; buckets that left every window go.
  local sets, gone = {}, {}
  local keep_f = fhead - n + 1
  local keep_r = (rcalls > 0) and (rhead - n + 1) or (thead - n + 1)
  for field, value in pairs(w) do
    local kind, index = string.match(field, '^(%a):(-?%d+)$')
    index = tonumber(index)
    if index == nil or (kind == 'f' and index < keep_f) or (kind ~= 'f' and index < keep_r) then
      gone[#gone + 1] = field
    elseif changed[field] then
      sets[#sets + 1] = field
      sets[#sets + 1] = value
    end
  end
  for _, field in ipairs(gone) do w[field] = nil end
  call_chunked('HSET', KEYS[2], sets, 400)
  call_chunked('HDEL', KEYS[2], gone, 400)
  redis.call('HSET', KEYS[1], 'cf', cf, 'rhead', rhead)
  h.cf = cf
  h.rhead = rhead
end
if #released > 0 then
  local successes = num(h.hos, 0)
  for _, permit in ipairs(released) do
    local freed = redis.call('ZREM', KEYS[3], permit[1]) == 1
    if freed and current and status == 'half_open' and permit[2] == 1 then
      successes = successes + 1
    end
  end
  if current and successes ~= num(h.hos, 0) then
    redis.call('HSET', KEYS[1], 'hos', successes)
    h.hos = successes
  end
end
-- A breaker some process still flushes or refreshes is in use: its keys stay.
if h.version ~= nil then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return cjson.encode(record(h, now, KEYS[2], KEYS[3], spec, w))
"""
)

#: Compare-and-set a transition on the version (or force it), then publish it.
#: ARGV: shift, ttl_ms, expected, force (0|1), status, version, trips, reason,
#: opened_ago ('' for none), open_for ('' for none), origin, name, channel.
PROPOSE = (
    _PRELUDE
    + r"""
local now = clock(ARGV[1])
local ttl = tonumber(ARGV[2])
local h = read(KEYS[1])
local stored = tonumber(h.version or '0')  -- nil when corrupt: a forced write replaces it
local none = {0, 0, 0, 0}
if ARGV[4] ~= '1' and stored ~= tonumber(ARGV[3]) then
  return cjson.encode({0, record(h, now, KEYS[2], KEYS[3], none, nil)})
end
local version = tonumber(ARGV[6])
-- (a forced write replaces a record whose version is not a number: never trusted)
if ARGV[4] == '1' then version = math.max((stored or 0) + 1, version) end
local opened_at, retry_at = '', ''
if ARGV[9] ~= '' then opened_at = stamp(now - tonumber(ARGV[9])) end
if ARGV[10] ~= '' then retry_at = stamp(now + tonumber(ARGV[10])) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'version', version, 'trips', ARGV[7],
           'reason', ARGV[8], 'opened_at', opened_at, 'retry_at', retry_at, 'cf', 0,
           'hos', 0, 'rhead', 0, 'origin', ARGV[11], 'name', ARGV[12])
touch(ttl, KEYS)
local rec = record(read(KEYS[1]), now, KEYS[2], KEYS[3], none, nil)
rec.name = ARGV[12]
redis.call('PUBLISH', ARGV[13], cjson.encode(rec))
return cjson.encode({1, rec})
"""
)

#: Take a half-open permit with a lease on the server's clock.
#: ARGV: shift, ttl_ms, version, limit, lease, token.
ACQUIRE = (
    _PRELUDE
    + r"""
local now = clock(ARGV[1])
local h = read(KEYS[1])
local none = {0, 0, 0, 0}
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', stamp(now))
if (h.status or 'closed') ~= 'half_open' or num(h.version, 0) ~= tonumber(ARGV[3])
   or redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then
  return cjson.encode({0, record(h, now, KEYS[2], KEYS[3], none, nil)})
end
redis.call('ZADD', KEYS[3], stamp(now + tonumber(ARGV[5])), ARGV[6])
touch(tonumber(ARGV[2]), KEYS)
return cjson.encode({1, record(h, now, KEYS[2], KEYS[3], none, nil)})
"""
)

#: Read a record for inspection (operator tools): writes nothing, extends no TTL. Window
#: counts are totals over the stored buckets (the policy's widths are not known here).
#: ARGV: shift.
READ = (
    _PRELUDE
    + r"""
local now = clock(ARGV[1])
local h = read(KEYS[1])
local rec = record(h, now, KEYS[2], KEYS[3], {0, 0, 0, 0}, nil)
local totals = {0, 0, 0, 0}
local slots = {f = 1, c = 2, x = 3, s = 4}
for field, value in pairs(read(KEYS[2])) do
  local slot = slots[string.sub(field, 1, 1)]
  if slot ~= nil and string.sub(field, 2, 2) == ':' then
    totals[slot] = totals[slot] + num(value, 0)
  end
end
rec.totals = totals
local ttl = redis.call('PTTL', KEYS[1])
if h.version ~= nil and ttl >= 0 then rec.expires_in = ttl / 1000 end
return cjson.encode(rec)
"""
)
