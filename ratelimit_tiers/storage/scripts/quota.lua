-- A part of hit.lua and give_back.lua (storage/redis.py assembles the parts):
-- the calendar quota, whose reference is algorithms.quota_decide.
--
-- Its key is one integer: the count of the period [start, stop) (ms) whose
-- start the key is named after, so a new period starts from nothing.

-- Decide on a request of `cost` at `now` (ms) under `limit` in the period
-- ending at `stop`, counting it if `charge` and admitted. Returns allowed
-- (1 or 0), remaining and reset (ms).
local function quota_check(key, now, stop, limit, cost, charge)
  local used = tonumber(redis.call("GET", key)) or 0
  if used + cost > limit then
    return 0, math.max(0, limit - used), math.max(stop - now, 1)
  end
  if charge then
    redis.call("INCRBY", key, cost)
    if used == 0 then
      -- An hour past the period's end: the app servers' clocks set the bounds, and may lag.
      redis.call("PEXPIREAT", key, stop + 3600000)
    end
    used = used + cost
  end
  local reset = 0
  if used > 0 then
    reset = math.max(stop - now, 0)
  end
  return 1, limit - used, reset
end

-- Uncount an admission of `cost` quota_check counted in this key's period.
local function quota_give_back(key, cost)
  local used = tonumber(redis.call("GET", key)) or 0
  if used < cost then
    return 0
  end
  redis.call("DECRBY", key, cost)
  return 1
end
