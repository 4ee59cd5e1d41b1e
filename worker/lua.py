"""The Lua scripts behind :mod:`worker.inflight`: each move of a message is one atomic script.

Redis >= 6.2 (``RPOP key count``; no ``LMPOP``). See :mod:`worker.inflight` for the protocol.
"""

# KEYS: queue, inflight, landing, deaths, tag counter. ARGV: n, lowest first tag, max raw bytes.
# Returns a flat list: tag, deaths, size, payload (the message; or, when size > max, its sha1 followed by
# its last 4 KB, where kombu's envelope keeps the headers and properties, so the task id can be read).
# Tags come from the worker's counter in Redis, never from the caller alone: a call whose reply was lost
# (Redis restarting, a dropped connection) moved its messages under tags the worker never saw, and the next
# call must not overwrite them (resync returns them to the queue). ARGV[2] is the worker's own horizon, a
# floor for the case where Redis lost the counter.
RECEIVE = """
local n = tonumber(ARGV[1])
local maxb = tonumber(ARGV[3])
local msgs = {}
local m = redis.call('RPOP', KEYS[3])
while m do
  msgs[#msgs + 1] = m
  if #msgs >= n then break end
  m = redis.call('RPOP', KEYS[3])
end
if #msgs < n then
  local got = redis.call('RPOP', KEYS[1], n - #msgs)
  if got then
    for i = 1, #got do msgs[#msgs + 1] = got[i] end
  end
end
if #msgs == 0 then return {} end
local tag = tonumber(redis.call('GET', KEYS[5]) or '0') + 1
if tag < tonumber(ARGV[2]) then tag = tonumber(ARGV[2]) end
redis.call('SET', KEYS[5], tag + #msgs - 1)
local deaths = redis.call('HLEN', KEYS[4]) > 0
local out = {}
local args = {}
for i = 1, #msgs do
  local msg = msgs[i]
  local t = tag + i - 1
  args[#args + 1] = t
  args[#args + 1] = msg
  local d = 0
  local sha = nil
  if deaths or #msg > maxb then sha = redis.sha1hex(msg) end
  if deaths then d = tonumber(redis.call('HGET', KEYS[4], sha) or '0') end
  out[#out + 1] = t
  out[#out + 1] = d
  out[#out + 1] = #msg
  if #msg > maxb then out[#out + 1] = sha .. string.sub(msg, -4096) else out[#out + 1] = msg end
end
redis.call('HSET', KEYS[2], unpack(args))
return out
"""

# KEYS: alive, inflight, landing, busy, registry, deaths, queue, tag counter. ARGV: worker id, force.
# Returns the number of messages returned to the queue and how many were charged a death,
# or {-1, 0} when the worker is alive (and not forced).
REAP = """
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0} end
-- another live worker reaped it a moment ago (both saw it dead): nothing left to return
if ARGV[2] ~= '1' and redis.call('HEXISTS', KEYS[5], ARGV[1]) == 0 then return {-1, 0} end
local busy = {}
local b = redis.call('GET', KEYS[4])
if b then for t in string.gmatch(b, '[^,]+') do busy[t] = true end end
local all = redis.call('HGETALL', KEYS[2])
local tags = {}
local msgs = {}
for i = 1, #all, 2 do
  tags[#tags + 1] = tonumber(all[i])
  msgs[all[i]] = all[i + 1]
end
table.sort(tags, function(a, b) return a > b end)
local n, charged = 0, 0
-- newest first onto the consuming end: the oldest is taken first again
for _, t in ipairs(tags) do
  local key = tostring(t)
  local msg = msgs[key]
  if ARGV[2] ~= '1' and busy[key] then
    redis.call('HINCRBY', KEYS[6], redis.sha1hex(msg), 1)
    charged = charged + 1
  end
  redis.call('RPUSH', KEYS[7], msg)
  n = n + 1
end
while redis.call('LMOVE', KEYS[3], KEYS[7], 'LEFT', 'RIGHT') do n = n + 1 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[1], KEYS[8])
redis.call('HDEL', KEYS[5], ARGV[1])
return {n, charged}
"""

# KEYS: inflight, queue. ARGV: tags, newest first. Returns how many went back.
RELEASE = """
local n = 0
for i = 1, #ARGV do
  local msg = redis.call('HGET', KEYS[1], ARGV[i])
  if msg then
    redis.call('RPUSH', KEYS[2], msg)
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


UNMARK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
