-- A part of hit.lua and give_back.lua (storage/redis.py assembles the parts):
-- the exact sliding log, whose reference is algorithms.exact_decide.
--
-- A ring of the last `limit` admitted stamps, 6 bytes each (u48 milliseconds,
-- big-endian, as BITFIELD's u48), in one string after a header of five u48 slots:
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
-- Fields are read and written as byte ranges with `struct` (one GETRANGE, two
-- SETRANGEs), which costs Redis less than BITFIELD's argument lists.
local EXACT_HEADER = 5
local EXACT_HEADER_BYTES = EXACT_HEADER * 6
-- As command arguments: where the ring starts, where the header ends.
local EXACT_HEADER_TEXT, EXACT_HEADER_LAST = int(EXACT_HEADER_BYTES), int(EXACT_HEADER_BYTES - 1)
-- Rings of up to this many slots are read whole by the command that reads the
-- header (a few hundred bytes): a search then reads no more.
local EXACT_WHOLE = 64

local function exact_slot(i)
  return "#" .. (EXACT_HEADER + i)
end

-- `count` copies of `stamp` in the ring's slots from `from` on, wrapping at
-- `limit`: as whole byte ranges, a command or two.
local function exact_write(key, from, count, limit, stamp)
  local cell = struct.pack(">I6", stamp)
  local run = math.min(count, limit - from)
  redis.call("SETRANGE", key, int((EXACT_HEADER + from) * 6), string.rep(cell, run))
  if count > run then
    redis.call("SETRANGE", key, EXACT_HEADER_TEXT, string.rep(cell, count - run))
  end
end

-- Write the `cost` stamps of `stamp` (ms) of an admission that exact_check
-- decided at `now` (ms) without charging, from what it read: the count of
-- expired slots, the ring's head, its first live stamp and its deadline. No
-- read of its own: a rule is read once per check (hit.lua). Returns 1,
-- remaining and reset (ms).
local function exact_charge(key, now, stamp, window, limit, cost, expired, head, first, deadline)
  -- The oldest slots (expired) take the new stamps and become the newest.
  if expired == limit then
    first = stamp -- Nothing else is live: the new stamp is the oldest live one.
  end
  expired = expired - cost
  -- The key must outlive its newest stamp by a window. Setting the expiry a
  -- window further than that lets the next window's admissions skip PEXPIREAT.
  local extend = stamp + window > deadline
  if extend then
    deadline = stamp + 2 * window
  end
  local header = struct.pack(">I6I6I6I6I6", (head + cost) % limit, limit, expired, first, deadline)
  redis.call("SETRANGE", key, "0", header)
  exact_write(key, head, cost, limit, stamp)
  if extend then
    redis.call("PEXPIREAT", key, int(deadline))
  end
  if head + cost >= limit then
    -- The ring just filled its last slot. Writing past a string's end grows
    -- it greedily (up to twice its length); a fresh SET keeps it exact-size.
    redis.call("SET", key, redis.call("GET", key), "KEEPTTL")
  end
  return 1, expired, first + window - now
end

-- Decide on a request of `cost` at `now` (ms) under `limit` per `window` (ms),
-- writing `cost` stamps of `stamp` (ms) if `charge` and admitted. Returns
-- allowed (1 or 0), remaining and reset (ms); on an admission not charged,
-- also what exact_charge needs to charge it later: the ring's head, its first
-- live stamp and its deadline (the remaining count is its expired slots).
local function exact_check(key, now, stamp, window, limit, cost, charge)
  -- `data`: the key's string from its start, the header at least (or less: a new key).
  local data
  if limit <= EXACT_WHOLE then
    data = redis.call("GET", key) or ""
  else
    data = redis.call("GETRANGE", key, "0", EXACT_HEADER_LAST)
  end
  local head, size, expired, first, deadline = 0, 0, 0, 0, 0
  if #data >= EXACT_HEADER_BYTES then
    head, size, expired, first, deadline = struct.unpack(">I6I6I6I6I6", data)
  end

  if size ~= limit then
    -- New key, or the limit changed: keep the newest stamps in ring order (the
    -- empty slots, which count as expired, come first), moved as whole byte
    -- ranges: a few string commands whatever the size, no Lua loop per stamp.
    local body = ""
    if size > 0 then
      local stored = redis.call("GETRANGE", key, EXACT_HEADER_TEXT, "-1")
      -- Slots never written lie past the string's end: they are empty.
      stored = stored .. string.rep("\0", size * 6 - #stored)
      local ordered = string.sub(stored, head * 6 + 1) .. string.sub(stored, 1, head * 6)
      if limit < size then
        body = string.sub(ordered, (size - limit) * 6 + 1)
      else
        body = string.rep("\0", (limit - size) * 6) .. ordered
      end
    end
    -- The oldest slot is now slot 0. A new key has nothing live; otherwise the
    -- search below finds the first live stamp from slot 0.
    head, expired, first, deadline = 0, 0, 0, now + window
    if size == 0 then
      expired = limit
    else
      first = struct.unpack(">I6", body)
    end
    data = struct.pack(">I6I6I6I6I6", head, limit, expired, first, deadline) .. body
    redis.call("SET", key, data)
    redis.call("PEXPIREAT", key, int(deadline))
  end

  -- The stamp at logical index `i` (from the head): 0 in a slot never written.
  local function at(i)
    local offset = (EXACT_HEADER + (head + i) % limit) * 6
    local cell = data
    if limit > EXACT_WHOLE then
      cell, offset = redis.call("GETRANGE", key, int(offset), int(offset + 5)), 0
    end
    if #cell < offset + 6 then
      return 0
    end
    return (struct.unpack(">I6", cell, offset + 1))
  end

  if expired < limit and now - first >= window then
    -- `first` has expired: find the first live logical index. Gallop: low is
    -- expired; find a live high, then bisect. `live` is the stamp at `high`.
    local low, step, high, live = expired, 1, limit, 0
    while low + step < limit do
      local stamp_at = at(low + step)
      if now - stamp_at < window then
        high, live = low + step, stamp_at
        break
      end
      low = low + step
      step = step * 2
    end
    while high - low > 1 do
      local middle = math.floor((low + high) / 2)
      local stamp_at = at(middle)
      if now - stamp_at < window then
        high, live = middle, stamp_at
      else
        low = middle
      end
    end
    expired, first = high, 0
    if high < limit then
      first = live
    end
  end

  if expired < cost then
    -- Until enough of the oldest live stamps leave the window to make room for `cost`.
    return 0, expired, at(cost - 1) + window - now
  end
  if charge then
    return exact_charge(key, now, stamp, window, limit, cost, expired, head, first, deadline)
  end
  local reset = 0
  if first > 0 then
    reset = first + window - now
  end
  return 1, expired, reset, head, first, deadline
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
