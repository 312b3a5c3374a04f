-- A part of hit.lua and give_back.lua (storage/redis.py assembles the parts):
-- the sliding-window counter, whose reference is algorithms.counter_decide.
--
-- Its key is a hash {w = fixed window index, c = current count, p = previous count}.

-- Decide on a request of `cost` at `now` (ms) under `limit` per `window` (ms),
-- counting it if `charge` and admitted. Returns allowed (1 or 0), remaining and
-- reset (ms).
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
  if weighted + cost > limit then
    return 0, math.max(0, math.floor(limit - weighted)), wait(current, cost)
  end
  local remaining = math.floor(limit - weighted)
  local count = current
  if charge then
    redis.call("HSET", key, "w", index, "c", current + cost, "p", previous)
    if seen ~= index then
      -- A new key or window: the key lives until the next window ends,
      -- while its count weighs as "previous". Later hits keep that expiry.
      redis.call("PEXPIREAT", key, (index + 2) * window)
    end
    remaining = math.floor(limit - weighted - cost)
    count = current + cost
  end
  -- The reset is when `remaining` next grows (never, while it is the limit).
  local reset = 0
  if remaining < limit then
    reset = wait(count, remaining + 1)
  end
  return 1, remaining, reset
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
  redis.call("HINCRBY", key, field, -cost)
  return 1
end
