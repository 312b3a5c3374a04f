-- Give back one admission that hit.lua counted, when another throttle refused
-- the request after all: the entry of the script that storage/redis.py
-- assembles from counter.lua, exact.lua and this file. Never frees more than
-- that admission: when it cannot be told apart any more, nothing is given back.
--
-- KEYS[1]  policy hash (see policy.lua)
-- KEYS[2]  exact-mode ring (see exact.lua)
-- KEYS[3]  counter-mode hash (see counter.lua)
-- ARGV[1]  the "now_ms" hit.lua reported for the admission
--
-- Returns 1 when the admission was given back, else 0.

local now = tonumber(ARGV[1])
local policy = redis.call("HMGET", KEYS[1], "algorithm", "window")
if not policy[1] then
  return 0
end
if policy[1] == "counter" then
  return counter_give_back(KEYS[3], now, tonumber(policy[2]) * 1000)
end
return exact_give_back(KEYS[2], now)
