-- One rate-limit check, atomically, on the Redis server's clock: the entry of
-- the script that storage/redis.py assembles from policy.lua, counter.lua,
-- exact.lua and this file (one script, one SHA).
--
-- KEYS[1]  policy hash (see policy.lua)
-- KEYS[2]  exact-mode ring of the last N admitted timestamps (see exact.lua)
-- KEYS[3]  counter-mode hash (see counter.lua)
-- KEYS[4]  the policy's generation: a token each eviction replaces (Storage.forget)
-- ARGV[1]  endpoint category ("read", "write", "delete", "auth")
-- ARGV[2]  "1" to count an admitted request, "0" to only look
-- ARGV[3]  policy time-to-live in seconds
-- ARGV[4]  with a policy to install: the generation "miss" reported before it was loaded
-- ARGV[5..] optional policy field/value pairs to install first
--
-- Returns the state when the key cannot be used ("miss <generation>" when no
-- policy is installed), else one string "allowed limit window_ms remaining reset_ms now_ms shadow tier":
-- the decision and the policy's tier and shadow flag, so a refusal needs no second
-- round trip (a single bulk reply parses faster than an array; the tier, which
-- may hold spaces, comes last).
-- Every key written carries an expiry, and a refusal writes nothing.

local category, charge = ARGV[1], ARGV[2] == "1"

if #ARGV > 4 then
  install_policy(ARGV[4], 5, ARGV[3])
end

local policy = read_policy(category)
if not policy then
  return "miss " .. (redis.call("GET", KEYS[4]) or "")
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

local window = tonumber(policy[3]) * 1000
local limit = tonumber(policy[5]) or 0

local allowed, remaining, reset = 0, 0, window
if limit <= 0 then
  -- Nothing is admitted: no bucket is read or written.
elseif policy[4] == "counter" or limit > 10000 then
  -- Above algorithms.EXACT_MAX_LIMIT stamps a window, a ring would cost too
  -- much to keep and to resize: such limits use the counter.
  allowed, remaining, reset = counter_check(KEYS[3], now, window, limit, charge)
else
  allowed, remaining, reset = exact_check(KEYS[2], now, stamp, window, limit, charge)
end
return string.format(
  "%d %d %d %d %d %d %s %s", allowed, limit, window, remaining, reset, now, policy[6], policy[7] or ""
)
