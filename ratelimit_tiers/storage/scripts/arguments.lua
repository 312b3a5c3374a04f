-- A part of every script (storage/redis.py assembles the parts): numbers as
-- command arguments.

-- A whole number as a command argument. Given a Lua number, Redis 7.0 writes
-- it with "%.17g" (glibc's exact float printing; later versions use a faster
-- conversion), which costs several times this: a check passes a dozen numbers.
local function int(n)
  return string.format("%d", n)
end
