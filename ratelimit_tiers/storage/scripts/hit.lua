-- One rate-limit check, atomically, on the Redis server's clock: the entry of
-- the script that storage/redis.py assembles from arguments.lua, policy.lua,
-- counter.lua, exact.lua, quota.lua, ledger.lua and this file (one script, one SHA).
--
-- KEYS[1]  policy hash (see policy.lua)
-- KEYS[2]  the policy's generation: a token each eviction replaces (Storage.forget)
-- KEYS[3]  where the key's own counters of the category live (names.counter_base)
-- KEYS[4]  where the account's shared counters of the category live
-- KEYS[5]  the account's usage ledger (ledger.lua)
-- ARGV[1]  endpoint category
-- ARGV[2]  "1" to count an admitted request, "0" to only look
-- ARGV[3]  the request's cost
-- ARGV[4..9] the current day, week and month: start and end of each (ms), for quotas
-- ARGV[10] what the ledger counts ("" nothing; see ledger.lua)
-- ARGV[11] with a policy to install: the generation "miss" reported before it was loaded
-- ARGV[12] its time-to-live (ms)
-- ARGV[13..] its field/value pairs
--
-- Returns the state when the key cannot be used ("miss <generation>" when no
-- policy is installed; "cost <count> <rule>" when the cost is more than a rule's
-- count), else the decision on every rule the category meets, as three lines:
--   "<allowed> <now_ms> <shadow>" then "<allowed> <remaining> <reset_ms>" per rule
--   the rules, as the policy encodes them (policies.encode), in the same order
--   "<tier>"
-- so a refusal needs no second round trip. The last two lines are the same
-- on every check of the key: storage/redis.py parses them once. A request is admitted only if every
-- rule admits it, and a refused one writes nothing: the rules are checked before
-- any is charged. Every key written carries an expiry.

local category, charge, cost = ARGV[1], ARGV[2] == "1", tonumber(ARGV[3])

if #ARGV > 11 then
  install_policy(ARGV[11], 13, ARGV[12])
end

local policy = read_policy(category)
if not policy then
  return "miss " .. (redis.call("GET", KEYS[2]) or "")
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

local rules = parse_rules(policy[5])
for _, rule in ipairs(rules) do
  if cost > rule[4] then
    return "cost " .. rule[4] .. " " .. rule[5]
  end
end

-- Quotas: the index in ARGV of each calendar's period start (its end follows).
local CALENDAR = {d = 4, w = 6, m = 8}

-- Decide on `rule`, charging it if `charged` and admitted: allowed, remaining
-- and reset (ms), then, on an admission not charged, what the rule's part read
-- (see charge_rule). The rule keeps its counter's key, as rule[6].
local function check(rule, charged)
  local kind, window, count, at = rule[1], rule[2], rule[4], CALENDAR[rule[1]]
  local base = KEYS[3]
  if rule[3] == "a" then
    base = KEYS[4]
  end
  local key = base .. ":" .. rule[5] .. ":"
  if at then
    key = key .. "q:" .. ARGV[at]
  else
    key = key .. kind -- The kind is the key's: "e" an exact ring, "c" a counter.
  end
  rule[6] = key
  if kind == "e" then
    -- At most algorithms.EXACT_MAX_LIMIT: policies.kind chose the counter above it.
    return exact_check(key, now, stamp, window, count, cost, charged)
  elseif kind == "c" then
    return counter_check(key, now, window, count, cost, charged)
  end
  return quota_check(key, now, tonumber(ARGV[at + 1]), count, cost, charged)
end

-- Charge `rule`, which check admitted without charging, from what it read
-- then (`looked`, check's results): each rule's state is read once per check.
local function charge_rule(rule, looked)
  local kind, window, count, key = rule[1], rule[2], rule[4], rule[6]
  if kind == "e" then
    -- The remaining count is the ring's expired slots.
    return exact_charge(key, now, stamp, window, count, cost, looked[2], looked[4], looked[5], looked[6])
  elseif kind == "c" then
    return counter_charge(
      key, now, window, count, cost, looked[4], looked[5], looked[6], looked[7], looked[8]
    )
  end
  return quota_charge(key, now, tonumber(ARGV[CALENDAR[kind] + 1]), count, cost, looked[4])
end

-- Only the last rule may charge on the first pass, and only once every other
-- admitted: a refusal, by any rule, writes nothing. Then the others are
-- charged, from what the first pass read.
local results, admitted, last = {}, 1, #rules
for i, rule in ipairs(rules) do
  local result = {check(rule, charge and admitted == 1 and i == last)}
  results[i] = result
  if result[1] == 0 then
    admitted = 0
  end
end
if admitted == 1 and charge then
  for i = 1, last - 1 do
    results[i] = {charge_rule(rules[i], results[i])}
  end
end

ledger_count(KEYS[5], ARGV[10], now, admitted, policy[3], rules, results)

-- The reply: what changes on every check, as numbers on one line, then what
-- does not (the rules as the policy encodes them, the tier): the client
-- parses those once (storage/redis.py).
local numbers = {admitted, now, policy[3]}
for i = 1, last do
  local result, at = results[i], 3 * i
  numbers[at + 1], numbers[at + 2], numbers[at + 3] = result[1], result[2], result[3]
end
-- One format of whole numbers: cheaper than letting Lua write each number.
local line = string.format("%d %d %s" .. string.rep(" %d %d %d", last), unpack(numbers))
return line .. "\n" .. policy[5] .. "\n" .. (policy[4] or "")
