-- Give back one admission that hit.lua counted, when another throttle refused
-- the request after all: the entry of the script that storage/redis.py
-- assembles from policy.lua, counter.lua, exact.lua, quota.lua and this file.
-- Never frees more than that admission: in a rule where it cannot be told
-- apart any more, nothing is given back.
--
-- KEYS     as for hit.lua
-- ARGV[1]  endpoint category
-- ARGV[2]  the "now_ms" hit.lua reported for the admission
-- ARGV[3]  its cost
-- ARGV[4..9] the day, week and month hit.lua counted it in: start and end (ms)
-- ARGV[10] as for hit.lua: the ledger moves the admission to the refusals
--
-- Returns how many rules gave it back.

ledger_give_back(KEYS[5], ARGV[10], tonumber(ARGV[2]))

local policy = read_policy(ARGV[1])
if not policy then
  return 0
end
local now, cost, given = tonumber(ARGV[2]), tonumber(ARGV[3]), 0
local CALENDAR = {d = 4, w = 6, m = 8}
for _, rule in ipairs(parse_rules(policy[5])) do
  local base = KEYS[3]
  if rule[3] == "a" then
    base = KEYS[4]
  end
  local key = base .. ":" .. rule[5] .. ":"
  if rule[1] == "e" then
    given = given + exact_give_back(key .. "e", now, cost)
  elseif rule[1] == "c" then
    given = given + counter_give_back(key .. "c", now, rule[2], cost)
  else
    given = given + quota_give_back(key .. "q:" .. ARGV[CALENDAR[rule[1]]], cost)
  end
end
return given
