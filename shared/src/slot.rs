//! Redis Cluster key slots: which of the 16384 slots a key lives in, as every cluster node computes it
//! (`CLUSTER KEYSLOT`): CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.
//!
//! The hash tag is the part between the first `{` and the first `}` after it, when that part is not
//! empty; aside's keys carry one ([`crate::cache::profile_key`]) so that a record's keys share a slot.
//! The CRC is the `crc16` crate's, the one the `redis` crate's own cluster client routes with.

/// How many slots a Redis Cluster has.
pub const SLOTS: u16 = 16384;

/// The part of `key` a cluster hashes: its hash tag if it has a non-empty one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_s() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0 (and the cluster specification's
        // reference: CRC16 of "123456789" is 0x31C3).
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn a_hash_tag_places_the_key() {
        assert_eq!(hash_tag(b"user:profile:{42}"), b"42");
        assert_eq!(key_slot(b"user:profile:{42}"), key_slot(b"user:lease:{42}"));
        assert_eq!(key_slot(b"user:profile:{42}"), key_slot(b"42"));
        assert_eq!(key_slot(b"aside:{feed}"), key_slot(b"aside:{feed}:seq"));
        // The first `{` and the first `}` after it; an empty tag hashes the whole key.
        assert_eq!(hash_tag(b"a{b}{c}"), b"b");
        assert_eq!(hash_tag(b"a{{b}}"), b"{b");
        assert_eq!(hash_tag(b"a{}{b}"), b"a{}{b}");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(hash_tag(b"a}b{"), b"a}b{");
    }
}
