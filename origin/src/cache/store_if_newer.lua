-- Compare-and-set for profile hashes: the only way the origin writes to Redis.
--
-- KEYS: the invalidation feed's stream and its sequence counter (aside:{feed}, aside:{feed}:seq) unless
-- ARGV[2] is 0, then the hashes to write (user:profile:{<id>}).
-- ARGV: the feed's cap (XADD MAXLEN ~; 0: no feed), the number of feed keys (2, or 0 on a Redis Cluster,
-- where the feed lives in another slot than the hashes and the origin announces the changes itself
-- after this call: see fill.rs), then for each hash in turn: version, rank, ttl_ms, only_if_cached (0 or
-- 1), announce (0 or 1), n, then n field/value pairs (the whole new hash).
--
-- Each new entry replaces the key's current one unless the current one is newer, that is has a larger
-- (version, rank): rank 0 is a "missing" marker, 1 a profile, 2 a tombstone (see aside_shared::cache).
-- An equal entry is rewritten (it refreshes the TTL and repairs a damaged copy). Anything that is not an
-- aside entry (no numeric _version, an unknown _state, a key of another type) is replaced.
-- With only_if_cached = 1 the entry is written only over an existing key (change capture uses it for
-- inserts: a new row replaces a "missing" marker at once, but does not fill the cache by itself).
-- With announce = 1 (a change: write-through, change capture, the replay after a failover; not a
-- read-path fill, which only copies what PostgreSQL holds) and a feed, the entry's id, version and rank
-- are appended to the feed in the same atomic step, numbered by INCR of the counter (see
-- aside_shared::feed), whether the hash was written or a newer one kept: a reader drops its copies
-- older than that. Nothing is announced for a "missing" marker, nor when only_if_cached found no key.
-- Returns one integer per hash: 1 when written, 0 when the current entry was newer and was kept, 2 when
-- only_if_cached was set and the key did not exist.
local ranks = { missing = 0, deleted = 2 }
local written = {}
local maxlen = tonumber(ARGV[1])
local feed_keys = tonumber(ARGV[2])
local feed, seq = KEYS[1], KEYS[2]
if feed_keys == 0 then
  maxlen = 0
end
local a = 3
for i = 1 + feed_keys, #KEYS do
  local key = KEYS[i]
  local version = tonumber(ARGV[a])
  local rank = tonumber(ARGV[a + 1])
  local ttl_ms = ARGV[a + 2]
  local only_if_cached = ARGV[a + 3] == '1'
  local announce = ARGV[a + 4] == '1'
  local first = a + 6
  a = first + 2 * tonumber(ARGV[a + 5])

  local keep = false
  local current = redis.pcall('HMGET', key, '_version', '_state')
  if type(current) == 'table' and current.err == nil then
    local current_version = tonumber(current[1])
    local current_rank = 1
    if current[2] then
      current_rank = ranks[current[2]]
    end
    if current_version and current_rank then
      keep = current_version > version or (current_version == version and current_rank > rank)
    end
  end

  local outcome
  if only_if_cached and redis.call('EXISTS', key) == 0 then
    outcome = 2
  elseif keep then
    outcome = 0
  else
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(ARGV, first, a - 1))
    redis.call('PEXPIRE', key, ttl_ms)
    outcome = 1
  end
  written[i - feed_keys] = outcome
  if announce and maxlen > 0 and rank >= 1 and outcome ~= 2 then
    local n = redis.call('INCR', seq)
    redis.call('XADD', feed, 'MAXLEN', '~', maxlen, '*', 's', n, 'k', 'c',
      'id', string.sub(key, #'user:profile:{' + 1, -2), 'v', version, 'r', rank)
  end
end
return written
