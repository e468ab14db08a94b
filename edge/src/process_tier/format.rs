//! The process-wide tier's byte format: the slot a profile lives in, the value stored there, and the
//! origin breaker's mark. Pure: encoding and decoding only ([`super::policy`] decides what a value means,
//! [`super::store`] reads and writes the bytes).

use aside_shared::cache::Freshness;
use aside_shared::{UserId, UserProfile};

use crate::feed_tag::FeedTag;
use crate::tagged::{tagged_i64, untag_i64};

/// The first bytes of every value aside writes: a format tag, so a foreign or older value is a miss.
const MAGIC: &[u8; 4] = b"asT2";
/// Magic, id, version, fresh-until, keep-until, shared flag, shared fresh-until, shared delta, feed
/// epoch, feed entry, feed-until.
const HEADER: usize = 4 + 4 + 8 + 8 + 8 + 1 + 8 + 4 + 8 + 8 + 8;
/// The key of the origin breaker's mark.
pub const ORIGIN_BREAKER_KEY: &str = "aside:breaker:origin";
/// The key of the Redis breaker's mark (same format).
pub const REDIS_BREAKER_KEY: &str = "aside:breaker:redis";
const BREAKER_MAGIC: &[u8; 4] = b"asB1";

/// The key of the slot `id` lives in.
pub fn slot_key(id: UserId, slots: u32) -> String {
    let slot = u32::try_from(id.get()).unwrap_or(0) % slots.max(1);
    format!("aside:l1:{slot}")
}

/// One slot's content.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotValue {
    pub profile: UserProfile,
    pub version: i64,
    /// Wall-clock milliseconds: fresh before this (at most `l1_ttl_ms` after the copy was taken).
    pub fresh_until_ms: i64,
    /// Wall-clock milliseconds: kept as a stale-if-error fallback until this.
    pub keep_until_ms: i64,
    /// The source's shared soft expiry and load cost (XFetch decides with it), when it said one.
    pub shared: Option<Freshness>,
    /// The feed position the copy was taken at ([`crate::feed`]).
    pub tag: FeedTag,
    /// Wall-clock milliseconds: fresh before this while the feed vouches for `tag` (never before
    /// `fresh_until_ms`): the soft expiry, but at most the feed window after the copy was taken.
    pub feed_until_ms: i64,
}

impl SlotValue {
    /// The stored bytes: the fixed header (little-endian), then the profile's JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&self.profile).expect("profiles serialise");
        let mut out = Vec::with_capacity(HEADER + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.profile.id.get().to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.fresh_until_ms.to_le_bytes());
        out.extend_from_slice(&self.keep_until_ms.to_le_bytes());
        let shared = self.shared.unwrap_or(Freshness {
            fresh_until_ms: 0,
            delta_ms: 0,
        });
        out.push(u8::from(self.shared.is_some()));
        out.extend_from_slice(&shared.fresh_until_ms.to_le_bytes());
        out.extend_from_slice(&shared.delta_ms.to_le_bytes());
        out.extend_from_slice(&self.tag.epoch.to_le_bytes());
        out.extend_from_slice(&self.tag.seq.to_le_bytes());
        out.extend_from_slice(&self.feed_until_ms.to_le_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// The value in `bytes` if it is one [`SlotValue::encode`] wrote, for any id; `None` for anything
    /// else (another format, truncated, a profile that does not parse or whose id is not the header's).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (header, json) = bytes.split_at_checked(HEADER)?;
        let mut r = Reader(header);
        if r.take::<4>()? != *MAGIC {
            return None;
        }
        let id = i32::from_le_bytes(r.take()?);
        let version = i64::from_le_bytes(r.take()?);
        let fresh_until_ms = i64::from_le_bytes(r.take()?);
        let keep_until_ms = i64::from_le_bytes(r.take()?);
        let has_shared = match r.take::<1>()? {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        let shared = Freshness {
            fresh_until_ms: i64::from_le_bytes(r.take()?),
            delta_ms: u32::from_le_bytes(r.take()?),
        };
        let tag = FeedTag {
            epoch: u64::from_le_bytes(r.take()?),
            seq: u64::from_le_bytes(r.take()?),
        };
        let feed_until_ms = i64::from_le_bytes(r.take()?);
        let profile: UserProfile = serde_json::from_slice(json).ok()?;
        (profile.id.get() == id && version >= 0 && keep_until_ms >= fresh_until_ms).then_some(
            Self {
                profile,
                version,
                fresh_until_ms,
                keep_until_ms,
                shared: has_shared.then_some(shared),
                tag,
                feed_until_ms,
            },
        )
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Until when (wall clock) a breaker (the origin's or Redis's) is open, as the instance that opened it
/// wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerMark {
    pub open_until_ms: i64,
}

impl BreakerMark {
    pub fn encode(&self) -> Vec<u8> {
        tagged_i64(BREAKER_MAGIC, self.open_until_ms)
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        untag_i64(BREAKER_MAGIC, bytes).map(|open_until_ms| Self { open_until_ms })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn profile(id: i32) -> UserProfile {
        serde_json::from_value(serde_json::json!({
            "id": id, "full_name": "Ana Silva", "gender": "F", "birth_date": "1980-01-02",
            "department": "Sales", "email": "ana.silva@fake-devops-db.internal",
            "username": "ana.silva"
        }))
        .unwrap()
    }

    pub(crate) fn value(id: i32, shared: Option<Freshness>) -> SlotValue {
        SlotValue {
            profile: profile(id),
            version: 7,
            fresh_until_ms: 1_700_000_002_000,
            keep_until_ms: 1_700_000_602_000,
            shared,
            tag: FeedTag { epoch: 9, seq: 4 },
            feed_until_ms: 1_700_000_030_000,
        }
    }

    #[test]
    fn values_round_trip_with_and_without_a_shared_freshness() {
        for shared in [
            None,
            Some(Freshness {
                fresh_until_ms: 1_700_000_030_000,
                delta_ms: 12,
            }),
        ] {
            let v = value(42, shared);
            assert_eq!(SlotValue::decode(&v.encode()), Some(v));
        }
    }

    #[test]
    fn a_corrupt_truncated_or_foreign_value_is_no_value() {
        let good = value(42, None).encode();
        assert!(SlotValue::decode(&good).is_some());
        // Every truncation fails, and so does a change of any checked part.
        for n in 0..good.len() {
            assert_eq!(SlotValue::decode(&good[..n]), None, "truncated to {n}");
        }
        let mut wrong_magic = good.clone();
        wrong_magic[0] = b'x';
        let mut wrong_id = good.clone();
        wrong_id[4] ^= 1;
        let mut bad_flag = good.clone();
        bad_flag[32] = 2;
        let mut bad_json = good.clone();
        let last = bad_json.len() - 1;
        bad_json[last] = b'!';
        let mut negative_version = good.clone();
        negative_version[8..16].copy_from_slice(&(-1i64).to_le_bytes());
        let mut keep_before_fresh = good.clone();
        keep_before_fresh[24..32].copy_from_slice(&0i64.to_le_bytes());
        for (what, bytes) in [
            ("magic", wrong_magic),
            ("id", wrong_id),
            ("flag", bad_flag),
            ("json", bad_json),
            ("version", negative_version),
            ("deadlines", keep_before_fresh),
        ] {
            assert_eq!(SlotValue::decode(&bytes), None, "{what}");
        }
        for foreign in [&b""[..], b"hello", br#"{"id":42}"#, &[0u8; 64][..]] {
            assert_eq!(SlotValue::decode(foreign), None);
        }
        // A profile that breaks the domain rules is refused like any Redis hash would be.
        let mut invalid = value(42, None).encode();
        invalid.truncate(HEADER);
        invalid.extend_from_slice(
            br#"{"id":42,"full_name":"","gender":"F","birth_date":"1980-01-02","department":"Sales","email":"a@b.c","username":"a"}"#,
        );
        assert_eq!(SlotValue::decode(&invalid), None);
    }

    #[test]
    fn ids_map_to_a_fixed_number_of_slots() {
        let key = |id: i32, slots| slot_key(UserId::try_from(i64::from(id)).unwrap(), slots);
        assert_eq!(key(5, 4), "aside:l1:1");
        assert_eq!(key(1, 4), key(5, 4));
        assert_ne!(key(1, 4), key(2, 4));
        let keys: std::collections::HashSet<String> = (1..=10_000).map(|id| key(id, 64)).collect();
        assert_eq!(keys.len(), 64);
        assert_eq!(key(i32::MAX, 1), "aside:l1:0");
        assert_eq!(key(3, 0), "aside:l1:0", "0 slots is taken as 1");
    }

    #[test]
    fn breaker_marks_round_trip() {
        let mark = BreakerMark {
            open_until_ms: 1_000,
        };
        assert_eq!(BreakerMark::decode(&mark.encode()), Some(mark));
        assert_eq!(BreakerMark::decode(b"asB1"), None);
        assert_eq!(BreakerMark::decode(b"nope12345678"), None);
    }
}
