-- A part of hit.lua and give_back.lua (storage/redis.py assembles the parts):
-- the calendar quota, whose reference is algorithms.quota_decide.
--
-- Its key is one integer: the count of the period [start, stop) (ms) whose
-- start the key is named after, so a new period starts from nothing.

-- Count the admission of `cost` that quota_check decided at `now` (ms) without
-- counting, from the `used` count it read: no read of its own (hit.lua reads a
-- rule once per check). Returns 1, remaining and reset (ms).
local function quota_charge(key, now, stop, limit, cost, used)
  redis.call("INCRBY", key, int(cost))
  if used == 0 then
    -- An hour past the period's end: the app servers' clocks set the bounds, and may lag.
    redis.call("PEXPIREAT", key, int(stop + 3600000))
  end
  return 1, limit - used - cost, math.max(stop - now, 0)
end

-- Decide on a request of `cost` at `now` (ms) under `limit` in the period
-- ending at `stop`, counting it if `charge` and admitted. Returns allowed
-- (1 or 0), remaining and reset (ms); on an admission not counted, also the
-- count quota_charge needs to count it later.
local function quota_check(key, now, stop, limit, cost, charge)
  local used = tonumber(redis.call("GET", key)) or 0
  if used + cost > limit then
    return 0, math.max(0, limit - used), math.max(stop - now, 1)
  end
  if charge then
    return quota_charge(key, now, stop, limit, cost, used)
  end
  local reset = 0
  if used > 0 then
    reset = math.max(stop - now, 0)
  end
  return 1, limit - used, reset, used
end

-- Uncount an admission of `cost` quota_check counted in this key's period.
local function quota_give_back(key, cost)
  local used = tonumber(redis.call("GET", key)) or 0
  if used < cost then
    return 0
  end
  redis.call("DECRBY", key, int(cost))
  return 1
end
