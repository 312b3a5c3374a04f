-- A part of hit.lua (storage/redis.py assembles the parts into one script): the key's policy.
--
-- The policy hash holds Policy.to_fields: state, expires (ms, 0 for never),
-- tier, shadow ("1" or "0"), and the rules: "r:<category>" for each category
-- with rules of its own, "r:" for every other category (policies.encode).
-- KEYS[1] is the hash, KEYS[2] the policy's generation: a token each eviction
-- replaces (Storage.forget).

-- Install the policy whose field/value pairs are ARGV[first..], for `ttl`
-- milliseconds, loaded when the key's generation was `generation`. Installed
-- only if no eviction came since the policy was read from the database: a
-- load of the row as it was before a revocation is dropped.
local function install_policy(generation, first, ttl)
  if (redis.call("GET", KEYS[2]) or "") == generation then
    redis.call("DEL", KEYS[1])
    redis.call("HSET", KEYS[1], unpack(ARGV, first))
    redis.call("PEXPIRE", KEYS[1], ttl)
  end
end

-- The fields a check of `category` needs: {state, expires, shadow, tier,
-- rules}; nil when none is installed, or one written before policies carried
-- rules (then it is loaded again).
local function read_policy(category)
  local policy = redis.call("HMGET", KEYS[1], "state", "expires", "shadow", "tier", "r:" .. category, "r:")
  if not policy[1] or not policy[6] then
    return nil
  end
  return {policy[1], policy[2], policy[3], policy[4], policy[5] or policy[6]}
end

-- The rules of an encoded list: {kind, window_ms, scope, count, name} each.
local function parse_rules(encoded)
  local rules = {}
  for kind, window, scope, count, name in string.gmatch(encoded, "(%a) (%d+) (%a) (%d+) ([^;]+)") do
    rules[#rules + 1] = {kind, tonumber(window), scope, tonumber(count), name}
  end
  return rules
end
