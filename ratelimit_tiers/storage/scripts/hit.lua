-- One rate-limit check, atomically, on the Redis server's clock.
--
-- KEYS[1]  policy hash (see Policy.to_fields)
-- KEYS[2]  exact-mode ring of the last N admitted timestamps
-- KEYS[3]  counter-mode hash {w = window index, c = current, p = previous}
-- KEYS[4]  the policy's generation: a token each eviction replaces (Storage.forget)
-- ARGV[1]  endpoint category ("read", "write", "delete", "auth")
-- ARGV[2]  "1" to count an admitted request, "0" to only look
-- ARGV[3]  policy time-to-live in seconds
-- ARGV[4]  with a policy to install: the generation "miss" reported before it was loaded
-- ARGV[5..] optional policy field/value pairs to install first
--
-- Returns the state when the key cannot be used ("miss <generation>" when no
-- policy is installed), else one string "allowed limit window_ms remaining reset_ms now_ms shadow tier":
-- the decision and the policy's tier and shadow flag, so a refusal needs no second
-- round trip (a single bulk reply parses faster than an array; the tier, which
-- may hold spaces, comes last).
-- Every key written carries an expiry, and a refusal writes nothing.

local category, charge = ARGV[1], ARGV[2] == "1"


if #ARGV > 4 and (redis.call("GET", KEYS[4]) or "") == ARGV[4] then
  -- Installed only if no eviction came since the policy was read from the
  -- database: a load of the row as it was before a revocation is dropped.
  redis.call("DEL", KEYS[1])
  redis.call("HSET", KEYS[1], unpack(ARGV, 5))
  redis.call("EXPIRE", KEYS[1], ARGV[3])
end

local policy = redis.call("HMGET", KEYS[1], "state", "expires", "window", "algorithm", category, "shadow", "tier")
if not policy[1] or not policy[6] then
  -- None installed, or one written before policies carried their shadow flag: load it.
  return "miss " .. (redis.call("GET", KEYS[4]) or "")
end
local shadow, tier = policy[6], policy[7] or ""

local function decided(allowed, limit, window, remaining, reset, now)
  return string.format("%d %d %d %d %d %d %s %s", allowed, limit, window, remaining, reset, now, shadow, tier)
end
if policy[1] ~= "active" then
  return policy[1]
end

local time = redis.call("TIME")
local seconds, micros = tonumber(time[1]), tonumber(time[2])
-- "now" rounds down and stored stamps round up, so millisecond rounding can
-- only make a stamp look younger: it never admits early.
local now = seconds * 1000 + math.floor(micros / 1000)
local stamp = seconds * 1000 + math.ceil(micros / 1000)

local expires = tonumber(policy[2])
if expires > 0 and now >= expires then
  return "expired"
end

local window = tonumber(policy[3]) * 1000
local limit = tonumber(policy[5]) or 0

if limit <= 0 then
  return decided(0, limit, window, 0, window, now)
end

-- Above algorithms.EXACT_MAX_LIMIT stamps a window, a ring would cost too much
-- to keep and to resize: such limits use the counter.
if policy[4] == "counter" or limit > 10000 then
  local key = KEYS[3]
  local index = math.floor(now / window)
  local state = redis.call("HMGET", key, "w", "c", "p")
  local seen = tonumber(state[1])
  local current, previous = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  if seen == index - 1 then
    previous, current = current, 0
  elseif seen == nil or seen < index - 1 then
    previous, current = 0, 0
  end
  local elapsed = now - index * window
  local weighted = previous * (window - elapsed) / window + current
  -- Milliseconds until there is room for `room` requests (at most the limit),
  -- if none come meanwhile, with `count` in this window. Mirrors algorithms.counter_wait.
  local function wait(count, room)
    if count + room <= limit then
      -- Still in this window, once the previous window has decayed enough.
      local decayed = 0
      if previous > 0 then
        decayed = math.ceil(window * (previous - limit + room + count) / previous)
      end
      return math.max(decayed - elapsed, 1)
    end
    -- In the next window, where this window's count becomes the decaying one.
    return window - elapsed + math.ceil(window * (count - limit + room) / count)
  end
  if weighted + 1 <= limit then
    local remaining = math.floor(limit - weighted)
    local count = current
    if charge then
      redis.call("HSET", key, "w", index, "c", current + 1, "p", previous)
      if seen ~= index then
        -- A new key or window: the key lives until the next window ends,
        -- while its count weighs as "previous". Later hits keep that expiry.
        redis.call("PEXPIREAT", key, (index + 2) * window)
      end
      remaining = math.floor(limit - weighted - 1)
      count = current + 1
    end
    -- The reset is when `remaining` next grows (never, while it is the limit).
    local reset = 0
    if remaining < limit then
      reset = wait(count, remaining + 1)
    end
    return decided(1, limit, window, remaining, reset, now)
  end
  return decided(0, limit, window, 0, wait(current, 1), now)
end

-- Exact sliding log: a ring of the last `limit` admitted stamps, 6 bytes each
-- (u48 milliseconds), in one string after a header of five u48 slots:
--   #0 head: ring index of the oldest stamp
--   #1 size: the ring's length (the limit it was built for)
--   #2 expired: how many stamps from the head are known to have expired
--   #3 first: the stamp just after those (0 when there is none)
--   #4 deadline: when the key's expiry was last set to (ms)
-- A request is admitted iff the oldest stamp is at least a window old.
-- Stamps are written in time order, so the ring read from the head is sorted:
-- expired ones first, then live ones. Time only moves forward, so the expired
-- prefix only grows until admissions consume it. Admitting writes the new
-- stamp over the head and advances it, which leaves `first` on the same stamp;
-- so a check reads the header, and searches the ring (galloping from the known
-- prefix, O(log k) for k new expiries) only when `first` has expired.
local HEADER = 5
local key = KEYS[2]
local header = redis.call(
  "BITFIELD", key,
  "GET", "u48", "#0", "GET", "u48", "#1", "GET", "u48", "#2", "GET", "u48", "#3", "GET", "u48", "#4"
)
local head, size, expired, first, deadline = header[1], header[2], header[3], header[4], header[5]

local function slot(i)
  return "#" .. (HEADER + i)
end

if size ~= limit then
  -- New key, or the limit changed: keep the newest stamps in ring order (the
  -- empty slots, which count as expired, come first), moved as whole byte
  -- ranges: a few string commands whatever the size, no Lua loop per stamp.
  local body = ""
  if size > 0 then
    local stored = redis.call("GETRANGE", key, HEADER * 6, -1)
    -- Slots never written lie past the string's end: they are empty.
    stored = stored .. string.rep("\0", size * 6 - #stored)
    local ordered = string.sub(stored, head * 6 + 1) .. string.sub(stored, 1, head * 6)
    if limit < size then
      body = string.sub(ordered, (size - limit) * 6 + 1)
    else
      body = string.rep("\0", (limit - size) * 6) .. ordered
    end
  end
  redis.call("DEL", key)
  if #body > 0 then
    redis.call("SETRANGE", key, HEADER * 6, body)
  end
  -- The oldest slot is now slot 0. A new key has nothing live; otherwise the
  -- search below finds the first live stamp from slot 0.
  head, expired, first, deadline = 0, 0, 0, now + window
  if size == 0 then
    expired = limit
  else
    first = redis.call("BITFIELD", key, "GET", "u48", slot(0))[1]
  end
  redis.call(
    "BITFIELD", key, "SET", "u48", "#0", head, "SET", "u48", "#1", limit, "SET", "u48", "#2", expired,
    "SET", "u48", "#3", first, "SET", "u48", "#4", deadline
  )
  redis.call("PEXPIREAT", key, deadline)
end

local function at(i)
  return redis.call("BITFIELD", key, "GET", "u48", slot((head + i) % limit))[1]
end

if expired < limit and now - first >= window then
  -- `first` has expired: find the first live logical index. Gallop: low is
  -- expired; find a live high, then bisect.
  local low, step, high = expired, 1, limit
  while low + step < limit do
    if now - at(low + step) < window then
      high = low + step
      break
    end
    low = low + step
    step = step * 2
  end
  while high - low > 1 do
    local middle = math.floor((low + high) / 2)
    if now - at(middle) < window then
      high = middle
    else
      low = middle
    end
  end
  expired, first = high, 0
  if high < limit then
    first = at(high)
  end
end

if expired == 0 then
  return decided(0, limit, window, 0, first + window - now, now)
end
if charge then
  -- The oldest slot (expired) takes the new stamp and becomes the newest.
  if expired == limit then
    first = stamp -- Nothing else is live: the new stamp is the oldest live one.
  end
  expired = expired - 1
  local args = {
    "SET", "u48", slot(head), stamp,
    "SET", "u48", "#0", (head + 1) % limit,
    "SET", "u48", "#2", expired,
    "SET", "u48", "#3", first,
  }
  -- The key must outlive its newest stamp by a window. Setting the expiry a
  -- window further than that lets the next window's admissions skip PEXPIREAT.
  local extend = stamp + window > deadline
  if extend then
    deadline = stamp + 2 * window
    args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", "#4", deadline
  end
  redis.call("BITFIELD", key, unpack(args))
  if extend then
    redis.call("PEXPIREAT", key, deadline)
  end
  if head == limit - 1 then
    -- The ring just filled its last slot. Writing past a string's end grows
    -- it greedily (up to twice its length); a fresh SET keeps it exact-size.
    redis.call("SET", key, redis.call("GET", key), "KEEPTTL")
  end
end
local reset = 0
if first > 0 then
  reset = first + window - now
end
return decided(1, limit, window, expired, reset, now)
