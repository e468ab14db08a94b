-- Announces changes on the invalidation feed, on a Redis Cluster only: there the feed's keys live in
-- their own slot, so store_if_newer.lua writes the hashes (per slot) without them and the origin then
-- announces what it wrote with this script, on the feed's slot (see fill.rs for what the split costs).
--
-- KEYS: the feed's stream and its sequence counter (aside:{feed}, aside:{feed}:seq).
-- ARGV: the feed's cap (XADD MAXLEN ~), then for each change: id, version, rank.
-- Each change is numbered by INCR of the counter, exactly as store_if_newer.lua numbers its own.
-- Returns the number of the last entry appended.
local feed, seq = KEYS[1], KEYS[2]
local maxlen = tonumber(ARGV[1])
local n = 0
for a = 2, #ARGV, 3 do
  n = redis.call('INCR', seq)
  redis.call('XADD', feed, 'MAXLEN', '~', maxlen, '*', 's', n, 'k', 'c',
    'id', ARGV[a], 'v', ARGV[a + 1], 'r', ARGV[a + 2])
end
return n
