-- Give back one admission that hit.lua counted, when another throttle refused
-- the request after all. Never frees more than that admission: when it cannot
-- be told apart any more, nothing is given back.
--
-- KEYS[1]  policy hash (see Policy.to_fields)
-- KEYS[2]  exact-mode ring (layout in hit.lua)
-- KEYS[3]  counter-mode hash {w = window index, c = current, p = previous}
-- ARGV[1]  the "now_ms" hit.lua reported for the admission
--
-- Returns 1 when the admission was given back, else 0.

local now = tonumber(ARGV[1])
local policy = redis.call("HMGET", KEYS[1], "algorithm", "window")
if not policy[1] then
  return 0
end
local window = tonumber(policy[2]) * 1000

if policy[1] == "counter" then
  -- The admission is in "c" while its window lasts, then in "p" for one more.
  local state = redis.call("HMGET", KEYS[3], "w", "c", "p")
  local seen, index = tonumber(state[1]), math.floor(now / window)
  local field, count = "c", tonumber(state[2]) or 0
  if seen == index + 1 then
    field, count = "p", tonumber(state[3]) or 0
  elseif seen ~= index then
    return 0
  end
  if count < 1 then
    return 0
  end
  redis.call("HINCRBY", KEYS[3], field, -1)
  return 1
end

-- Exact: only the newest stamp can go, and only if it is this admission's
-- (hit.lua wrote now or now + 1). A later admission's stamp must stay: dropping
-- it instead would let a request in early. The slot, now the oldest, holds 0
-- (expired), so the header's "first" stays the first live stamp.
local key = KEYS[2]
local header = redis.call("BITFIELD", key, "GET", "u48", "#0", "GET", "u48", "#1", "GET", "u48", "#2")
local head, size, expired = header[1], header[2], header[3]
if size == 0 or expired >= size then
  return 0
end
local newest = (head + size - 1) % size
local slot = "#" .. (5 + newest)
local stamp = redis.call("BITFIELD", key, "GET", "u48", slot)[1]
if stamp ~= now and stamp ~= now + 1 then
  return 0
end
local args = {"SET", "u48", slot, 0, "SET", "u48", "#0", newest, "SET", "u48", "#2", expired + 1}
if expired + 1 == size then
  args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", "#3", 0
end
redis.call("BITFIELD", key, unpack(args))
return 1
