-- A part of hit.lua and give_back.lua (storage/redis.py assembles the parts):
-- the sliding-window counter, whose reference is algorithms.counter_decide.
--
-- Its key is a hash {w = fixed window index, c = current count, p = previous count}.

-- Milliseconds until there is room for `room` requests (at most `limit` per
-- `window`), if none come meanwhile, `elapsed` ms into a window that counts
-- `count` after one that counted `previous`. Mirrors algorithms.counter_wait.
local function counter_wait(window, limit, previous, elapsed, count, room)
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

-- The reset (ms) of `remaining` with `count` in window `index` at `now`: when
-- `remaining` next grows (never, while it is the limit).
local function counter_reset(now, window, limit, index, previous, count, remaining)
  if remaining < limit then
    return counter_wait(window, limit, previous, now - index * window, count, remaining + 1)
  end
  return 0
end

-- Count the admission of `cost` that counter_check decided at `now` (ms)
-- without counting, from what it read: the window `index`, its `current` and
-- `previous` counts (as they stand in that window), their weighted sum, and
-- whether the key held an older window (`moved`). No read of its own: a rule
-- is read once per check (hit.lua). Returns 1, remaining and reset (ms).
local function counter_charge(key, now, window, limit, cost, index, current, previous, weighted, moved)
  redis.call("HSET", key, "w", int(index), "c", int(current + cost), "p", int(previous))
  if moved then
    -- A new key or window: the key lives until the next window ends,
    -- while its count weighs as "previous". Later hits keep that expiry.
    redis.call("PEXPIREAT", key, int((index + 2) * window))
  end
  local remaining = math.floor(limit - weighted - cost)
  return 1, remaining, counter_reset(now, window, limit, index, previous, current + cost, remaining)
end

-- Decide on a request of `cost` at `now` (ms) under `limit` per `window` (ms),
-- counting it if `charge` and admitted. Returns allowed (1 or 0), remaining and
-- reset (ms); on an admission not counted, also what counter_charge needs to
-- count it later: the window's index, its current and previous counts, their
-- weighted sum, and whether the key held an older window.
local function counter_check(key, now, window, limit, cost, charge)
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
  if weighted + cost > limit then
    local wait = counter_wait(window, limit, previous, elapsed, current, cost)
    return 0, math.max(0, math.floor(limit - weighted)), wait
  end
  if charge then
    return counter_charge(key, now, window, limit, cost, index, current, previous, weighted, seen ~= index)
  end
  local remaining = math.floor(limit - weighted)
  local reset = counter_reset(now, window, limit, index, previous, current, remaining)
  return 1, remaining, reset, index, current, previous, weighted, seen ~= index
end

-- Uncount the admission of `cost` counter_check counted at `now` (ms). Returns
-- 1 if it was given back, else 0.
local function counter_give_back(key, now, window, cost)
  -- The admission is in "c" while its window lasts, then in "p" for one more.
  local state = redis.call("HMGET", key, "w", "c", "p")
  local seen, index = tonumber(state[1]), math.floor(now / window)
  local field, count = "c", tonumber(state[2]) or 0
  if seen == index + 1 then
    field, count = "p", tonumber(state[3]) or 0
  elseif seen ~= index then
    return 0
  end
  if count < cost then
    return 0
  end
  redis.call("HINCRBY", key, field, int(-cost))
  return 1
end
