//! The process-wide tier: copies of profiles in Spin's key-value store, shared by every instance of the
//! Spin process and kept when an instance retires (`x-cache: SHARED`, `server-timing: shared`).
//!
//! Spin 4 keeps an instance for at most 128 requests and runs several side by side, so tier 1 (instance
//! memory) alone answers few reads. With a runtime config that declares the store `type = "spin"` and no
//! `path`, Spin keeps it in one in-memory SQLite database per process, behind one mutex: every instance
//! sees the same copies, and a read or write costs one host call of a few microseconds.
//!
//! Spin's key-value API has no TTL, no eviction and no atomic update, so the tier is built to need none:
//! it is a direct-mapped table of `shared_tier_slots` keys, `aside:l1:{id mod slots}`, each holding one
//! profile ([`SlotValue`]: id, version, soft and hard expiry, the shared freshness, the profile's JSON).
//! A fill overwrites whatever the slot held, so memory is bounded by construction (slots x the largest
//! value: a 45-byte header and a profile's JSON, at most a few KB) and nothing is ever swept. A value that does not decode, or holds another id, is a
//! miss.
//!
//! Guarantees are tier 1's: a copy is fresh for at most `l1_ttl_ms` after it was taken from Redis or the
//! origin (never longer than its shared soft expiry), and every answer from here still passes the
//! instance's version floors (`crate::l1::Tier1::observe`), so read-your-writes and monotonic reads per
//! instance hold. A fill never replaces a newer version of the same id that the lookup saw in the slot.
//!
//! It is optional (`shared_tier_store`, empty: off). A store that cannot be opened (not declared in
//! `key_value_stores`, not defined by the runtime) turns the tier off for the instance; one that fails
//! (`redis_timeout_ms`, then the Redis breaker's settings) is skipped like Redis is: the edge then works
//! as without it.
//!
//! The same store keeps what an instance must not forget when it retires (see [`BreakerMark`]): until when
//! the origin's breaker is open, so that a fresh instance does not spend a whole request budget finding out
//! that the origin is frozen.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use aside_shared::cache::Freshness;
use aside_shared::{UserId, UserProfile};

use crate::backoff::{Attempt, Breaker};
use crate::clock;
use crate::config::Config;
use crate::feed_tag::{FeedTag, Trust};
use crate::l1::{ProfileEntry, Shelf};

/// The first bytes of every value aside writes: a format tag, so a foreign or older value is a miss.
const MAGIC: &[u8; 4] = b"asT2";
/// Magic, id, version, fresh-until, keep-until, shared flag, shared fresh-until, shared delta, feed
/// epoch, feed entry, feed-until.
const HEADER: usize = 4 + 4 + 8 + 8 + 8 + 1 + 8 + 4 + 8 + 8 + 8;
/// The key of the origin breaker's mark.
pub const ORIGIN_BREAKER_KEY: &str = "aside:breaker:origin";
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
    /// The copy of `entry` to keep, as tier 1 keeps it (see `Tier1::fill`): fresh until its soft expiry
    /// or `ttl` from now, whichever comes first, kept until its soft expiry plus the stale window
    /// (`stale`, or the source's shorter `stale-if-error`).
    ///
    /// While the feed vouches for the copy's tag, it is fresh until its soft expiry, but never longer than
    /// `feed_window` after now: the instances' version floors, which keep a copy that raced an
    /// invalidation from being used, live that long (see `ReadPath::new`).
    pub fn new(
        entry: &ProfileEntry,
        shelf: Shelf,
        now_ms: i64,
        ttl: Duration,
        stale: Duration,
        feed_window: Duration,
    ) -> Self {
        let own = now_ms.saturating_add(millis(ttl));
        let soft = shelf.freshness.map_or(own, |f| f.fresh_until_ms);
        let window = millis(shelf.stale_if_error.map_or(stale, |w| w.min(stale)));
        let fresh_until_ms = soft.min(own);
        let keep_until_ms = soft.saturating_add(window).max(fresh_until_ms);
        let feed_until_ms = if shelf.tag.epoch == 0 {
            fresh_until_ms
        } else {
            shelf
                .feed_until_ms
                .unwrap_or(soft)
                .min(now_ms.saturating_add(millis(feed_window)))
                .min(keep_until_ms)
                .max(fresh_until_ms)
        };
        Self {
            profile: (*entry.profile).clone(),
            version: entry.version,
            fresh_until_ms,
            keep_until_ms,
            shared: shelf.freshness,
            tag: shelf.tag,
            feed_until_ms,
        }
    }

    /// Fresh at `now_ms` by the TTL rule, or by the feed while it vouches for the copy (`trust`).
    pub fn is_fresh(&self, now_ms: i64, trust: Option<Trust>) -> bool {
        now_ms < self.fresh_until_ms
            || (Trust::covers(trust, self.tag) && now_ms < self.feed_until_ms)
    }

    /// The tier-1 copy of this one, and how tier 1 keeps it: never fresh longer than here (so a copy
    /// passed from instance to instance is still fresh for at most `l1_ttl_ms` after it was taken), nor
    /// kept longer. Tier 1 refreshes it early only by its own deadline (cost 0: never early).
    pub fn to_tier1(&self) -> (ProfileEntry, Shelf) {
        let entry = ProfileEntry::new(self.profile.clone(), self.version);
        let gap = self
            .keep_until_ms
            .saturating_sub(self.fresh_until_ms)
            .max(0);
        let shelf = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: self.fresh_until_ms,
                delta_ms: 0,
            }),
            stale_if_error: Some(Duration::from_millis(gap as u64)),
            tag: self.tag,
            feed_until_ms: Some(self.feed_until_ms),
        };
        (entry, shelf)
    }

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

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Until when (wall clock) the origin's breaker is open, as the instance that opened it wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerMark {
    pub open_until_ms: i64,
}

impl BreakerMark {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BREAKER_MAGIC.to_vec();
        out.extend_from_slice(&self.open_until_ms.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(BREAKER_MAGIC)?;
        let open_until_ms = i64::from_le_bytes(rest.try_into().ok()?);
        Some(Self { open_until_ms })
    }

    /// How long the origin is still to be skipped at `now_ms` (`None` once the mark has passed).
    pub fn remaining(&self, now_ms: i64) -> Option<Duration> {
        let left = self
            .open_until_ms
            .checked_sub(now_ms)
            .filter(|&ms| ms > 0)?;
        Some(Duration::from_millis(left as u64))
    }
}

/// What a lookup in the tier found.
#[derive(Debug)]
pub enum Found {
    /// A fresh copy of the id.
    Fresh(SlotValue),
    /// A copy of the id past its soft expiry, kept as a stale-if-error fallback.
    Stale(SlotValue),
    /// Nothing usable (empty slot, another id, a corrupt value, expired).
    Miss,
    /// The tier was not asked: off, unavailable, skipped after failures, or no budget left.
    Skipped,
}

impl Found {
    /// Whether the store was visited (for `server-timing`).
    pub fn visited(&self) -> bool {
        !matches!(self, Found::Skipped)
    }

    /// The version of the id this lookup saw in its slot, fresh or not.
    pub fn version(&self) -> Option<i64> {
        match self {
            Found::Fresh(v) | Found::Stale(v) => Some(v.version),
            Found::Miss | Found::Skipped => None,
        }
    }
}

/// The instance's handle on the process-wide tier.
pub struct SharedTier {
    config: Rc<Config>,
    store: RefCell<Store>,
    breaker: RefCell<Breaker>,
}

enum Store {
    /// Not opened yet (or `shared_tier_store` is empty: then never).
    Closed,
    Open(Rc<spin_sdk::key_value::Store>),
    /// The runtime refused to open it: off for this instance.
    Unavailable,
}

impl SharedTier {
    pub fn new(config: Rc<Config>) -> Self {
        let settings = config.redis_breaker;
        let store = if config.shared_tier.store.is_empty() {
            Store::Unavailable
        } else {
            Store::Closed
        };
        Self {
            config,
            store: RefCell::new(store),
            breaker: RefCell::new(Breaker::new(settings.threshold, settings.backoff)),
        }
    }

    /// Whether the tier is configured and was not refused by the runtime.
    pub fn is_on(&self) -> bool {
        !matches!(*self.store.borrow(), Store::Unavailable)
    }

    /// The copy of `id` in its slot; at most `limit`.
    /// Fresh by the TTL rule, or by the feed while it vouches for the copy (`trust`).
    pub async fn get(&self, id: UserId, trust: Option<Trust>, limit: Duration) -> Found {
        if !self.is_on() {
            return Found::Skipped;
        }
        let key = slot_key(id, self.config.shared_tier.slots);
        let Some(bytes) = self
            .call(limit, |store| async move { store.get(&key).await })
            .await
        else {
            return Found::Skipped;
        };
        let now_ms = clock::wall_ms();
        match bytes.as_deref().and_then(SlotValue::decode) {
            Some(v) if v.profile.id == id && v.is_fresh(now_ms, trust) => Found::Fresh(v),
            Some(v) if v.profile.id == id && now_ms < v.keep_until_ms => Found::Stale(v),
            _ => Found::Miss,
        }
    }

    /// Stores `value` in its slot, unless the lookup that preceded it saw a newer version of the same
    /// id there (`seen`); at most `limit`.
    pub async fn put(&self, value: &SlotValue, seen: Option<i64>, limit: Duration) {
        if seen.is_some_and(|v| v > value.version) {
            return;
        }
        let key = slot_key(value.profile.id, self.config.shared_tier.slots);
        let bytes = value.encode();
        self.call(limit, |store| async move { store.set(&key, &bytes).await })
            .await;
    }

    /// Empties the slot of `id` (a delete through this instance); at most `limit`.
    pub async fn forget(&self, id: UserId, limit: Duration) {
        let key = slot_key(id, self.config.shared_tier.slots);
        self.call(limit, |store| async move { store.delete(&key).await })
            .await;
    }

    /// The raw value of `key`, a key of another part of the edge in its own namespace (the feed's
    /// state, the identity provider's keys), never `aside:l1:`; `None` when the store is off, skipped
    /// or failed, `Some(None)` when the key is absent. At most `limit`.
    pub async fn get_raw(&self, key: &str, limit: Duration) -> Option<Option<Vec<u8>>> {
        let key = key.to_string();
        self.call(limit, |store| async move { store.get(&key).await })
            .await
    }

    /// Sets `key` to `bytes`; at most `limit`. Whether the store took it.
    pub async fn set_raw(&self, key: &str, bytes: &[u8], limit: Duration) -> bool {
        let (key, bytes) = (key.to_string(), bytes.to_vec());
        self.call(limit, |store| async move { store.set(&key, &bytes).await })
            .await
            .is_some()
    }

    /// Deletes `key`; at most `limit`.
    pub async fn delete_raw(&self, key: &str, limit: Duration) {
        let key = key.to_string();
        self.call(limit, |store| async move { store.delete(&key).await })
            .await;
    }

    /// The origin breaker's mark, if one is set and not yet passed; at most `limit`.
    pub async fn breaker_mark(&self, limit: Duration) -> Option<BreakerMark> {
        let bytes = self
            .call(
                limit,
                |store| async move { store.get(ORIGIN_BREAKER_KEY).await },
            )
            .await??;
        BreakerMark::decode(&bytes).filter(|m| m.remaining(clock::wall_ms()).is_some())
    }

    /// Sets (or, with `None`, clears) the origin breaker's mark; at most `limit`.
    pub async fn set_breaker_mark(&self, mark: Option<BreakerMark>, limit: Duration) {
        match mark {
            Some(mark) => {
                let bytes = mark.encode();
                self.call(limit, |store| async move {
                    store.set(ORIGIN_BREAKER_KEY, &bytes).await
                })
                .await;
            }
            None => {
                self.call(limit, |store| async move {
                    store.delete(ORIGIN_BREAKER_KEY).await
                })
                .await;
            }
        }
    }

    /// Runs one store operation under the breaker and `limit`; `None` when it was skipped or failed.
    async fn call<T, F, Fut>(&self, limit: Duration, op: F) -> Option<T>
    where
        T: 'static,
        F: FnOnce(Rc<spin_sdk::key_value::Store>) -> Fut,
        Fut: std::future::Future<Output = Result<T, spin_sdk::key_value::Error>> + 'static,
    {
        if limit.is_zero() || !self.is_on() {
            return None;
        }
        let started = clock::now();
        let attempt = Attempt::start(&self.breaker, started)?;
        // Opening is bounded too: Spin's Redis-backed store, for one, pings the server on open. Both
        // steps own what they need, so that a late one is left to finish, never cancelled (see
        // crate::clock).
        let result = match self.open(limit).await {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(store)) => {
                let left = limit
                    .saturating_sub(Duration::from_nanos(clock::now().saturating_sub(started)));
                clock::within(left, op(store)).await
            }
        };
        let ok = matches!(result, Some(Ok(_)));
        if let Some(transition) = attempt.finish(ok, clock::now()) {
            eprintln!(
                "aside-edge: shared tier (key-value store `{}`) {}",
                self.config.shared_tier.store,
                match transition {
                    crate::backoff::Transition::Opened => "failing: skipped for a while",
                    crate::backoff::Transition::Closed => "answering again",
                }
            );
        }
        match result {
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => {
                eprintln!("aside-edge: shared tier: {e:?}");
                None
            }
            None => None,
        }
    }

    /// The open store, opening it on first use (within `limit`; `None` when it took longer). A store
    /// the runtime refuses turns the tier off.
    async fn open(
        &self,
        limit: Duration,
    ) -> Option<Result<Rc<spin_sdk::key_value::Store>, spin_sdk::key_value::Error>> {
        match &*self.store.borrow() {
            Store::Open(store) => return Some(Ok(Rc::clone(store))),
            Store::Unavailable => {
                return Some(Err(spin_sdk::key_value::Error::Other("unavailable".into())));
            }
            Store::Closed => {}
        }
        let label = self.config.shared_tier.store.clone();
        let opening = label.clone();
        let opened = clock::within(limit, async move {
            spin_sdk::key_value::Store::open(&opening).await
        })
        .await?;
        Some(match opened {
            Ok(store) => {
                let store = Rc::new(store);
                let mut slot = self.store.borrow_mut();
                if let Store::Open(already) = &*slot {
                    return Some(Ok(Rc::clone(already)));
                }
                *slot = Store::Open(Rc::clone(&store));
                Ok(store)
            }
            Err(e) => {
                eprintln!(
                    "aside-edge: shared tier off for this instance: cannot open key-value store \
                     `{label}` ({e:?}); is it in the component's key_value_stores and defined by \
                     the runtime?"
                );
                *self.store.borrow_mut() = Store::Unavailable;
                Err(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: i32) -> UserProfile {
        serde_json::from_value(serde_json::json!({
            "id": id, "full_name": "Ana Silva", "gender": "F", "birth_date": "1980-01-02",
            "department": "Sales", "email": "ana.silva@fake-devops-db.internal",
            "username": "ana.silva"
        }))
        .unwrap()
    }

    fn value(id: i32, shared: Option<Freshness>) -> SlotValue {
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
    fn a_copy_is_fresh_for_at_most_the_ttl_and_kept_for_the_stale_window() {
        let entry = ProfileEntry::new(profile(3), 9);
        let now = 1_700_000_000_000;
        let ttl = Duration::from_millis(2000);
        let stale = Duration::from_secs(600);
        // No shared soft expiry: the TTL alone; kept the stale window after it.
        let v = SlotValue::new(&entry, Shelf::default(), now, ttl, stale, Duration::ZERO);
        assert_eq!(
            (v.fresh_until_ms, v.keep_until_ms),
            (now + 2000, now + 602_000)
        );
        // A soft expiry beyond the TTL: fresh for the TTL, kept from the soft expiry on.
        let far = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now + 30_000,
                delta_ms: 4,
            }),
            stale_if_error: Some(Duration::from_secs(60)),
            ..Shelf::default()
        };
        let v = SlotValue::new(&entry, far, now, ttl, stale, Duration::ZERO);
        assert_eq!(
            (v.fresh_until_ms, v.keep_until_ms),
            (now + 2000, now + 90_000)
        );
        assert_eq!(v.shared, far.freshness);
        // A soft expiry sooner than the TTL wins; an expired one makes a stale-only copy.
        let soon = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now + 500,
                delta_ms: 4,
            }),
            stale_if_error: None,
            ..Shelf::default()
        };
        assert_eq!(
            SlotValue::new(&entry, soon, now, ttl, stale, Duration::ZERO).fresh_until_ms,
            now + 500
        );
        let gone = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now - 1,
                delta_ms: 4,
            }),
            stale_if_error: None,
            ..Shelf::default()
        };
        assert!(!SlotValue::new(&entry, gone, now, ttl, stale, Duration::ZERO).is_fresh(now, None));
    }

    #[test]
    fn tier_one_keeps_a_shared_copy_no_longer_than_the_shared_tier_does() {
        let v = value(42, None);
        let (entry, shelf) = v.to_tier1();
        assert_eq!((entry.version, entry.profile.id.get()), (7, 42));
        let f = shelf.freshness.unwrap();
        assert_eq!((f.fresh_until_ms, f.delta_ms), (v.fresh_until_ms, 0));
        assert_eq!(shelf.stale_if_error, Some(Duration::from_secs(600)));
    }

    #[test]
    fn a_restored_breaker_skips_the_origin_for_what_is_left_then_probes() {
        const MS: u64 = 1_000_000;
        let start = 10_000 * MS;
        let mut b = Breaker::new(3, Duration::from_millis(2000));
        b.open_for(Duration::from_millis(500), start);
        assert_eq!(b.visible(), crate::backoff::Visible::Open);
        assert_eq!(b.remaining(start + 499 * MS), Duration::from_millis(1));
        assert_eq!(b.remaining(start + 500 * MS), Duration::ZERO);
        // Never longer than this instance's own back-off.
        let mut b = Breaker::new(3, Duration::from_millis(2000));
        b.open_for(Duration::from_secs(60), start);
        assert_eq!(b.remaining(start + 1999 * MS), Duration::from_millis(1));
        assert_eq!(b.remaining(start + 2000 * MS), Duration::ZERO);
    }

    #[test]
    fn breaker_marks_round_trip_and_expire() {
        let mark = BreakerMark {
            open_until_ms: 1_000,
        };
        assert_eq!(BreakerMark::decode(&mark.encode()), Some(mark));
        assert_eq!(BreakerMark::decode(b"asB1"), None);
        assert_eq!(BreakerMark::decode(b"nope12345678"), None);
        assert_eq!(mark.remaining(400), Some(Duration::from_millis(600)));
        assert_eq!(mark.remaining(1_000), None);
        assert_eq!(mark.remaining(5_000), None);
    }
}
