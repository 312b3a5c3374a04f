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
-- off), else "<retention s> <shadow 0|1> <prefix>:<category>" and then the
-- refusals the process served from its own memory since (local_refusals),
-- carried here: "<rule> <count> <last ms>" each, within one hour.

local function ledger_add(key, field, n, hour, retention)
  if redis.call("HINCRBY", key, field, n) == n then
    -- A new field, maybe a new hash: (re)set the hash's expiry, the same every time.
    redis.call("EXPIREAT", key, (hour + 1) * 3600 + retention)
  end
end

local function ledger_refuse(stem, field, rule, n, at, retention)
  local hour = math.floor(at / 3600000)
  local key = stem .. ":" .. hour
  ledger_add(key, field .. "r:" .. rule, n, hour, retention)
  local last = tonumber(redis.call("HGET", key, field .. "t")) or 0
  if at > last then
    redis.call("HSET", key, field .. "t", at)
  end
end

local function ledger_words(spec)
  local words = {}
  for word in string.gmatch(spec, "%S+") do
    words[#words + 1] = word
  end
  return words, tonumber(words[1]), words[3] .. ":"
end

-- Add the refusals in words[4..], "<rule> <count> <last ms>" each, those of
-- one rule and hour together: one write of each field.
local function ledger_refusals(stem, words, retention, field)
  local sums, order = {}, {}
  for i = 4, #words, 3 do
    local rule, n, at = words[i], tonumber(words[i + 1]), tonumber(words[i + 2])
    local slot = rule .. " " .. math.floor(at / 3600000)
    local sum = sums[slot]
    if sum then
      sum[2], sum[3] = sum[2] + n, math.max(sum[3], at)
    else
      sums[slot] = {rule, n, at}
      order[#order + 1] = slot
    end
  end
  for _, slot in ipairs(order) do
    local sum = sums[slot]
    ledger_refuse(stem, field, sum[1], sum[2], sum[3], retention)
  end
end

-- Add the refusals carried in `spec` (tally.lua).
local function ledger_carried(stem, spec)
  local words, retention, field = ledger_words(spec)
  ledger_refusals(stem, words, retention, field)
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
  local words, retention, field = ledger_words(spec)
  if admitted == 1 or shadow == "1" or words[2] == "1" then
    local hour = math.floor(now / 3600000)
    ledger_add(stem .. ":" .. hour, field .. "a", 1, hour, retention)
  else
    local rule, wait = nil, -1
    for i, result in ipairs(results) do
      if result[1] == 0 and result[3] > wait then
        rule, wait = rules[i][5], result[3]
      end
    end
    local n = #words
    words[n + 1], words[n + 2], words[n + 3] = rule, 1, now
  end
  ledger_refusals(stem, words, retention, field)
end

-- Move the admission counted at `now` (ms) to the refusals: another throttle
-- of the view refused the request (give_back.lua).
local function ledger_give_back(stem, spec, now)
  if spec == "" then
    return
  end
  local _, retention, field = ledger_words(spec)
  local key = stem .. ":" .. math.floor(now / 3600000)
  if (tonumber(redis.call("HGET", key, field .. "a")) or 0) > 0 then
    redis.call("HINCRBY", key, field .. "a", -1)
    ledger_refuse(stem, field, "~other-throttle", 1, now, retention)
  end
end
