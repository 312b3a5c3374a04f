-- One rate-limit check, atomically, on the Redis server's clock.
--
-- KEYS[1]  policy hash (see Policy.to_fields)
-- KEYS[2]  exact-mode ring of the last N admitted timestamps
-- KEYS[3]  counter-mode hash {w = window index, c = current, p = previous}
-- ARGV[1]  endpoint category ("read", "write", "delete", "auth")
-- ARGV[2]  "1" to count an admitted request, "0" to only look
-- ARGV[3]  policy time-to-live in seconds
-- ARGV[4..] optional policy field/value pairs to install first
--
-- Returns {state} when the key cannot be used, else
-- {"active", allowed, limit, window_ms, remaining, reset_ms, now_ms}.
-- Every key written carries an expiry, and a refusal writes nothing.

local category, charge = ARGV[1], ARGV[2] == "1"

if #ARGV > 3 then
  redis.call("DEL", KEYS[1])
  redis.call("HSET", KEYS[1], unpack(ARGV, 4))
  redis.call("EXPIRE", KEYS[1], ARGV[3])
end

local policy = redis.call("HMGET", KEYS[1], "state", "expires", "window", "algorithm", category)
if not policy[1] then
  return {"miss"}
end
if policy[1] ~= "active" then
  return {policy[1]}
end

local time = redis.call("TIME")
local seconds, micros = tonumber(time[1]), tonumber(time[2])
-- "now" rounds down and stored stamps round up, so millisecond rounding can
-- only make a stamp look younger: it never admits early.
local now = seconds * 1000 + math.floor(micros / 1000)
local stamp = seconds * 1000 + math.ceil(micros / 1000)

local expires = tonumber(policy[2])
if expires > 0 and now >= expires then
  return {"expired"}
end

local window = tonumber(policy[3]) * 1000
local limit = tonumber(policy[5]) or 0

if limit <= 0 then
  return {"active", 0, limit, window, 0, window, now}
end

if policy[4] == "counter" then
  local key = KEYS[3]
  local index = math.floor(now / window)
  local state = redis.call("HMGET", key, "w", "c", "p")
  local seen = tonumber(state[1]) or index
  local current, previous = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  if seen == index - 1 then
    previous, current = current, 0
  elseif seen < index - 1 then
    previous, current = 0, 0
  end
  local elapsed = now - index * window
  local weighted = previous * (window - elapsed) / window + current
  if weighted + 1 <= limit then
    local remaining = math.floor(limit - weighted)
    if charge then
      redis.call("HSET", key, "w", index, "c", current + 1, "p", previous)
      redis.call("PEXPIRE", key, 2 * window)
      remaining = math.floor(limit - weighted - 1)
    end
    return {"active", 1, limit, window, remaining, window - elapsed, now}
  end
  -- Mirrors algorithms.counter_wait.
  local wait
  if current + 1 <= limit then
    wait = window * (1 - (limit - 1 - current) / previous) - elapsed
  else
    wait = window - elapsed + window * (1 - (limit - 1) / current)
  end
  return {"active", 0, limit, window, 0, math.ceil(math.max(wait, 1)), now}
end

-- Exact sliding log: a ring of the last `limit` admitted stamps, 6 bytes each
-- (u48 milliseconds), in one string. Slot 0 holds the head (oldest) index,
-- slot 1 the ring size, slots 2.. the stamps. A request is admitted iff the
-- oldest stamp is at least a window old; stamps are written in time order, so
-- the ring read from the head is sorted and a binary search counts the live ones.
local key = KEYS[2]
local header = redis.call("BITFIELD", key, "GET", "u48", "#0", "GET", "u48", "#1")
local head, size = header[1], header[2]

local function slot(i)
  return "#" .. (2 + i)
end

local function get_many(first, count, ring_size, ring_head)
  local out = {}
  local i = first
  while i < first + count do
    local args = {}
    local last = math.min(first + count, i + 1000) - 1
    for j = i, last do
      args[#args + 1] = "GET"
      args[#args + 1] = "u48"
      args[#args + 1] = slot((ring_head + j) % ring_size)
    end
    local values = redis.call("BITFIELD", key, unpack(args))
    for _, v in ipairs(values) do
      out[#out + 1] = v
    end
    i = last + 1
  end
  return out
end

if size ~= limit then
  -- New key, or the limit changed: keep the newest stamps, oldest first.
  local kept = {}
  if size > 0 then
    for _, v in ipairs(get_many(0, size, size, head)) do
      if v > 0 then
        kept[#kept + 1] = v
      end
    end
  end
  redis.call("DEL", key)
  local first = math.max(1, #kept - limit + 1)
  local args = {"SET", "u48", "#1", limit}
  local count = 0
  for i = first, #kept do
    args[#args + 1] = "SET"
    args[#args + 1] = "u48"
    args[#args + 1] = slot(count)
    args[#args + 1] = kept[i]
    count = count + 1
    if #args >= 4000 then
      redis.call("BITFIELD", key, unpack(args))
      args = {}
    end
  end
  head = count % limit
  args[#args + 1] = "SET"
  args[#args + 1] = "u48"
  args[#args + 1] = "#0"
  args[#args + 1] = head
  redis.call("BITFIELD", key, unpack(args))
  redis.call("PEXPIRE", key, window)
end

local function at(i)
  return redis.call("BITFIELD", key, "GET", "u48", slot((head + i) % limit))[1]
end

local oldest = at(0)
if now - oldest < window then
  return {"active", 0, limit, window, 0, oldest + window - now, now}
end
if charge then
  redis.call("BITFIELD", key, "SET", "u48", slot(head), stamp, "SET", "u48", "#0", (head + 1) % limit)
  redis.call("PEXPIRE", key, window)
  head = (head + 1) % limit
end
-- The first live logical index is also the number of free slots.
local low, high = 0, limit
while low < high do
  local middle = math.floor((low + high) / 2)
  if now - at(middle) < window then
    high = middle
  else
    low = middle + 1
  end
end
local reset = 0
if low < limit then
  reset = at(low) + window - now
end
return {"active", 1, limit, window, low, reset, now}
