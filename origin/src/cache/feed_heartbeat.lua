-- A heartbeat on the invalidation feed (see aside_shared::feed): the next number from the counter, and
-- an entry `s <n> k h`, in one atomic step, so readers tell a quiet feed from a dead one.
--
-- KEYS: the feed's stream and its counter (aside:{feed}, aside:{feed}:seq). ARGV: the cap (XADD MAXLEN ~).
-- Returns the entry's number.
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', n, 'k', 'h')
return n
