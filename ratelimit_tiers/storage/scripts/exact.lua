-- A part of hit.lua and give_back.lua (storage/redis.py assembles the parts):
-- the exact sliding log, whose reference is algorithms.exact_decide.
--
-- A ring of the last `limit` admitted stamps, 6 bytes each (u48 milliseconds),
-- in one string after a header of five u48 slots:
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
local EXACT_HEADER = 5

local function exact_slot(i)
  return "#" .. (EXACT_HEADER + i)
end

-- `count` copies of `stamp` in the ring's slots from `from` on, wrapping at
-- `limit`: as whole byte ranges (u48 is big-endian), a command or two.
local function exact_write(key, from, count, limit, stamp)
  local bytes, value = {}, stamp
  for i = 6, 1, -1 do
    bytes[i] = value % 256
    value = math.floor(value / 256)
  end
  local cell = string.char(unpack(bytes))
  local run = math.min(count, limit - from)
  redis.call("SETRANGE", key, (EXACT_HEADER + from) * 6, string.rep(cell, run))
  if count > run then
    redis.call("SETRANGE", key, EXACT_HEADER * 6, string.rep(cell, count - run))
  end
end

-- Decide on a request of `cost` at `now` (ms) under `limit` per `window` (ms),
-- writing `cost` stamps of `stamp` (ms) if `charge` and admitted. Returns
-- allowed (1 or 0), remaining and reset (ms).
local function exact_check(key, now, stamp, window, limit, cost, charge)
  local header = redis.call(
    "BITFIELD", key,
    "GET", "u48", "#0", "GET", "u48", "#1", "GET", "u48", "#2", "GET", "u48", "#3", "GET", "u48", "#4"
  )
  local head, size, expired, first, deadline = header[1], header[2], header[3], header[4], header[5]

  if size ~= limit then
    -- New key, or the limit changed: keep the newest stamps in ring order (the
    -- empty slots, which count as expired, come first), moved as whole byte
    -- ranges: a few string commands whatever the size, no Lua loop per stamp.
    local body = ""
    if size > 0 then
      local stored = redis.call("GETRANGE", key, EXACT_HEADER * 6, -1)
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
      redis.call("SETRANGE", key, EXACT_HEADER * 6, body)
    end
    -- The oldest slot is now slot 0. A new key has nothing live; otherwise the
    -- search below finds the first live stamp from slot 0.
    head, expired, first, deadline = 0, 0, 0, now + window
    if size == 0 then
      expired = limit
    else
      first = redis.call("BITFIELD", key, "GET", "u48", exact_slot(0))[1]
    end
    redis.call(
      "BITFIELD", key, "SET", "u48", "#0", head, "SET", "u48", "#1", limit, "SET", "u48", "#2", expired,
      "SET", "u48", "#3", first, "SET", "u48", "#4", deadline
    )
    redis.call("PEXPIREAT", key, deadline)
  end

  local function at(i)
    return redis.call("BITFIELD", key, "GET", "u48", exact_slot((head + i) % limit))[1]
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

  if expired < cost then
    -- Until enough of the oldest live stamps leave the window to make room for `cost`.
    return 0, expired, at(cost - 1) + window - now
  end
  if charge then
    -- The oldest slots (expired) take the new stamps and become the newest.
    if expired == limit then
      first = stamp -- Nothing else is live: the new stamp is the oldest live one.
    end
    expired = expired - cost
    local args = {
      "SET", "u48", "#0", (head + cost) % limit,
      "SET", "u48", "#2", expired,
      "SET", "u48", "#3", first,
    }
    if cost == 1 then
      args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", exact_slot(head), stamp
    else
      exact_write(key, head, cost, limit, stamp)
    end
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
    if head + cost >= limit then
      -- The ring just filled its last slot. Writing past a string's end grows
      -- it greedily (up to twice its length); a fresh SET keeps it exact-size.
      redis.call("SET", key, redis.call("GET", key), "KEEPTTL")
    end
  end
  local reset = 0
  if first > 0 then
    reset = first + window - now
  end
  return 1, expired, reset
end

-- Give back the admission of `cost` exact_check stamped at `now` or `now` + 1
-- (ms). Only the newest stamps can go, and only if they are this admission's:
-- a later admission's stamps must stay (dropping them instead would let a
-- request in early). The slots, now the oldest, hold 0 (expired), so the
-- header's "first" stays the first live stamp. Returns 1 if given back, else 0.
local function exact_give_back(key, now, cost)
  local header = redis.call("BITFIELD", key, "GET", "u48", "#0", "GET", "u48", "#1", "GET", "u48", "#2")
  local head, size, expired = header[1], header[2], header[3]
  if size == 0 or expired + cost > size then
    return 0
  end
  local args = {}
  for back = 1, cost do
    local slot = exact_slot((head - back) % size)
    local stamp = redis.call("BITFIELD", key, "GET", "u48", slot)[1]
    if stamp ~= now and stamp ~= now + 1 then
      return 0
    end
    args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", slot, 0
  end
  args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", "#0", (head - cost) % size
  args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", "#2", expired + cost
  if expired + cost == size then
    args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = "SET", "u48", "#3", 0
  end
  redis.call("BITFIELD", key, unpack(args))
  return 1
end
