-- A part of hit.lua, give_back.lua and tally.lua (storage/redis.py assembles
-- the parts): the usage ledger, counted in the same script call as the
-- decision (see ratelimit_tiers.names for its layout, ratelimit_tiers.usage
-- for its reader).
--
-- One hash per account and UTC hour, "<stem>:<hour>" (hour: Unix s // 3600),
-- whose fields are per key prefix and category ("<prefix>:<category>:"):
--   a          requests admitted
--   r:<rule>   requests refused, by the rule that refused each
--   t          the last refusal (ms)
-- Each hash expires the ledger's retention after its hour ends.
--
-- `spec` (an ARGV) is "" when nothing is to be counted (a peek, the ledger
-- off), else "<retention s> <shadow 0|1> <prefix>:<category>:" and then the
-- refusals the process served from its own memory since (local_refusals),
-- carried here: " <rule> <count> <last ms>" each, within one hour.

local function ledger_add(key, field, n, hour, retention)
  if redis.call("HINCRBY", key, field, int(n)) == n then
    -- A new field, maybe a new hash: (re)set the hash's expiry, the same every time.
    redis.call("EXPIREAT", key, int((hour + 1) * 3600 + retention))
  end
end

local function ledger_refuse(stem, field, rule, n, at, retention)
  local hour = math.floor(at / 3600000)
  local key = stem .. ":" .. hour
  ledger_add(key, field .. "r:" .. rule, n, hour, retention)
  local last = tonumber(redis.call("HGET", key, field .. "t")) or 0
  if at > last then
    redis.call("HSET", key, field .. "t", int(at))
  end
end

-- The parts of a non-empty `spec`: the retention (s), the shadow setting,
-- the fields' start "<prefix>:<category>:", and the carried refusals.
local function ledger_spec(spec)
  local retention, shadow, field, carried = string.match(spec, "^(%d+) (%d) (%S+)(.*)$")
  return tonumber(retention), shadow, field, carried
end

-- Add refusals, "<rule> <count> <last ms>" each in `carried`, then `rule` at
-- `at` if given, those of one rule and hour together: one write of each field.
local function ledger_refusals(stem, field, retention, carried, rule, at)
  local sums, order = {}, {}
  local function sum(name, n, last)
    local slot = name .. " " .. math.floor(last / 3600000)
    local found = sums[slot]
    if found then
      found[2], found[3] = found[2] + n, math.max(found[3], last)
    else
      sums[slot] = {name, n, last}
      order[#order + 1] = slot
    end
  end
  for name, n, last in string.gmatch(carried, "(%S+) (%d+) (%d+)") do
    sum(name, tonumber(n), tonumber(last))
  end
  if rule then
    sum(rule, 1, at)
  end
  for _, slot in ipairs(order) do
    local found = sums[slot]
    ledger_refuse(stem, field, found[1], found[2], found[3], retention)
  end
end

-- Add the refusals carried in `spec` (tally.lua).
local function ledger_carried(stem, spec)
  local retention, _, field, carried = ledger_spec(spec)
  ledger_refusals(stem, field, retention, carried)
end

-- Count a check at `now` (ms), and the refusals `spec` carries: admitted if
-- `admitted` is 1 or in shadow mode (the tier's flag `shadow`, or the
-- setting's in `spec`: the client got through), else refused by the refusing
-- rule with the longest wait, the one the 429 names (algorithms.headline).
-- `rules` and `results` are hit.lua's.
local function ledger_count(stem, spec, now, admitted, shadow, rules, results)
  if spec == "" then
    return
  end
  local retention, setting, field, carried = ledger_spec(spec)
  if admitted == 1 or shadow == "1" or setting == "1" then
    local hour = math.floor(now / 3600000)
    ledger_add(stem .. ":" .. hour, field .. "a", 1, hour, retention)
    if carried ~= "" then
      ledger_refusals(stem, field, retention, carried)
    end
    return
  end
  local rule, wait = nil, -1
  for i, result in ipairs(results) do
    if result[1] == 0 and result[3] > wait then
      rule, wait = rules[i][5], result[3]
    end
  end
  ledger_refusals(stem, field, retention, carried, rule, now)
end

-- Move the admission counted at `now` (ms) to the refusals: another throttle
-- of the view refused the request (give_back.lua).
local function ledger_give_back(stem, spec, now)
  if spec == "" then
    return
  end
  local retention, _, field = ledger_spec(spec)
  local key = stem .. ":" .. math.floor(now / 3600000)
  if (tonumber(redis.call("HGET", key, field .. "a")) or 0) > 0 then
    redis.call("HINCRBY", key, field .. "a", "-1")
    ledger_refuse(stem, field, "~other-throttle", 1, now, retention)
  end
end
