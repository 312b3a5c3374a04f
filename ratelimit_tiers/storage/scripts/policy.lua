-- A part of hit.lua (storage/redis.py assembles the parts into one script): the key's policy.
--
-- The policy hash holds Policy.to_fields: state, expires (ms, 0 for never),
-- window (s), algorithm, tier, shadow ("1" or "0"), and one limit per category.
-- KEYS[1] is the hash, KEYS[4] the policy's generation: a token each eviction
-- replaces (Storage.forget).

-- Install the policy whose field/value pairs are ARGV[first..], for `ttl`
-- seconds, loaded when the key's generation was `generation`. Installed only
-- if no eviction came since the policy was read from the database: a load of
-- the row as it was before a revocation is dropped.
local function install_policy(generation, first, ttl)
  if (redis.call("GET", KEYS[4]) or "") == generation then
    redis.call("DEL", KEYS[1])
    redis.call("HSET", KEYS[1], unpack(ARGV, first))
    redis.call("EXPIRE", KEYS[1], ttl)
  end
end

-- The fields a check of `category` needs: {state, expires, window, algorithm,
-- limit, shadow, tier}; nil when none is installed, or one written before
-- policies carried their shadow flag (then it is loaded again).
local function read_policy(category)
  local policy = redis.call("HMGET", KEYS[1], "state", "expires", "window", "algorithm", category, "shadow", "tier")
  if not policy[1] or not policy[6] then
    return nil
  end
  return policy
end
