-- Add refusals a process served from its own memory to the usage ledger, when
-- no check of their key carried them (local_refusals, refusal_tally): the
-- entry of the script that storage/redis.py assembles from ledger.lua and
-- this file.
--
-- KEYS[1]  the account's ledger stem (names.ledger_key)
-- ARGV[1]  the ledger spec of one key and category, with the refusals (ledger.lua)

ledger_carried(KEYS[1], ARGV[1])
return 1
