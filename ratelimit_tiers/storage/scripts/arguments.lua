-- A part of every script (storage/redis.py assembles the parts): numbers as
-- command arguments.

-- A whole number as a command argument. Given a Lua number, Redis before 7.2
-- writes it with "%.17g" (glibc's exact float printing), which costs several
-- times this: a check passes a dozen numbers.
local function int(n)
  return string.format("%d", n)
end
