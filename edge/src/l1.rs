//! Tier 1: the profiles this instance answered recently, in its own memory.
//!
//! Spin 4 reuses an instance for many requests, so memory that outlives one request is a real cache.
//! It is bounded three ways: entry count, approximate bytes, and a time-to-live that is the edge's
//! staleness bound (the edge is never told about writes made through other instances or the origin).
//!
//! Every entry carries the row version it was taken from, and tier 1 only moves forward: beside the
//! profiles it keeps, per id, the newest version this instance has answered with or written (a
//! [`Floor`], which also records a delete made through this instance). A fill older than the floor is
//! refused, and an answer older than it is not served ([`Tier1::observe`]), so a lookup that was slow
//! to come back (it read the row before a write) cannot put the old value back, and a client never sees
//! a version go backwards on one instance. Floors outlive the profiles: they are kept for the longest a
//! lookup can take (see `Tier1::new`).
//!
//! [`TtlLru`] is generic and takes "now" as an argument (a monotonic clock reading in nanoseconds), so
//! its behaviour is tested natively without a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use aside_shared::UserId;
use aside_shared::cache::Freshness;

use crate::clock::Nanos;
use crate::config::L1Limits;
use crate::copy::{Deadlines, Hit, Keeping, Observed, ProfileEntry, Shelf};
use crate::feed_tag::{FeedTag, Trust};
use aside_shared::feed::Change;

const NIL: usize = usize::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    weight: usize,
    expires_at: Nanos,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// A least-recently-used map with a per-entry deadline and a total weight bound.
///
/// Entries live in a slab (`slots`) linked into a recency list, so `get` and `insert` are O(1). An expired
/// entry is dropped when it is read, or when it reaches the least recently used end during an insert.
pub struct TtlLru<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    weight: usize,
    max_entries: usize,
    max_weight: usize,
    ttl: Nanos,
}

impl<K: Hash + Eq + Clone, V> TtlLru<K, V> {
    /// A zero in any limit makes a cache that stores nothing.
    pub fn new(limits: L1Limits) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            weight: 0,
            max_entries: limits.max_entries,
            max_weight: limits.max_bytes,
            ttl: u64::try_from(limits.ttl.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The live entry for `key`, without making it the most recently used (nor dropping it if expired).
    pub fn peek(&self, key: &K, now: Nanos) -> Option<&V> {
        let slot = self.slot(*self.index.get(key)?);
        (slot.expires_at > now).then_some(&slot.value)
    }

    /// The sum of the weights of the stored entries.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The live entry for `key`, which becomes the most recently used. An expired entry is removed.
    pub fn get(&mut self, key: &K, now: Nanos) -> Option<&V> {
        let i = *self.index.get(key)?;
        if self.slot(i).expires_at <= now {
            self.remove_at(i);
            return None;
        }
        self.unlink(i);
        self.push_newest(i);
        Some(&self.slot(i).value)
    }

    /// Stores `value` (replacing any entry for `key`) as the most recently used, live until `now + ttl`,
    /// then evicts from the least recently used end until the count and weight bounds hold. A value
    /// heavier than the whole budget is not stored (and any older entry for `key` is dropped).
    pub fn insert(&mut self, key: K, value: V, weight: usize, now: Nanos) {
        let until = now.saturating_add(self.ttl);
        self.insert_until(key, value, weight, until, now);
    }

    /// [`TtlLru::insert`] with the entry's own deadline, `expires_at`, instead of `now + ttl` (a zero
    /// TTL still stores nothing). An entry already expired is not stored.
    pub fn insert_until(&mut self, key: K, value: V, weight: usize, expires_at: Nanos, now: Nanos) {
        if let Some(i) = self.index.get(&key).copied() {
            self.remove_at(i);
        }
        if self.max_entries == 0
            || self.max_weight == 0
            || self.ttl == 0
            || weight > self.max_weight
            || expires_at <= now
        {
            return;
        }
        // Expired entries at the cold end go first, whatever the bounds.
        while self.oldest != NIL && self.slot(self.oldest).expires_at <= now {
            self.remove_at(self.oldest);
        }
        while self.index.len() >= self.max_entries || self.weight + weight > self.max_weight {
            self.remove_at(self.oldest);
        }
        let slot = Slot {
            key: key.clone(),
            value,
            weight,
            expires_at,
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        self.weight += weight;
        self.push_newest(i);
    }

    /// Drops the entry for `key`, if any.
    pub fn remove(&mut self, key: &K) {
        if let Some(i) = self.index.get(key).copied() {
            self.remove_at(i);
        }
    }

    fn slot(&self, i: usize) -> &Slot<K, V> {
        self.slots[i].as_ref().expect("indexed slots are occupied")
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot<K, V> {
        self.slots[i].as_mut().expect("indexed slots are occupied")
    }

    fn remove_at(&mut self, i: usize) {
        self.unlink(i);
        let slot = self.slots[i].take().expect("indexed slots are occupied");
        self.index.remove(&slot.key);
        self.weight -= slot.weight;
        self.free.push(i);
    }

    fn unlink(&mut self, i: usize) {
        let (newer, older) = {
            let s = self.slot(i);
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slot_mut(n).older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slot_mut(o).newer = newer,
        }
    }

    fn push_newest(&mut self, i: usize) {
        let previous = self.newest;
        {
            let s = self.slot_mut(i);
            s.newer = NIL;
            s.older = previous;
        }
        match previous {
            NIL => self.oldest = i,
            p => self.slot_mut(p).newer = i,
        }
        self.newest = i;
    }
}

/// The newest thing an instance knows about one id: a row version it answered with or wrote, or the
/// version a delete through this instance removed. Ordered like the origin's cache entries: by version,
/// then a deletion after the row it deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Floor {
    pub version: i64,
    pub deleted: bool,
}

impl Floor {
    pub fn row(version: i64) -> Self {
        Self {
            version,
            deleted: false,
        }
    }

    pub fn deletion(version: i64) -> Self {
        Self {
            version,
            deleted: true,
        }
    }
}

/// A stored copy: fresh until `fresh_until`, then kept (only to answer with when the origin cannot)
/// until the LRU deadline, its hard expiry.
#[derive(Debug, Clone)]
struct Held {
    entry: ProfileEntry,
    fresh_until: Nanos,
    shared: Option<Freshness>,
    /// Fresh until this while the feed vouches for `tag` (never before `fresh_until`).
    feed_until: Nanos,
    tag: FeedTag,
}

impl Held {
    fn is_fresh(&self, now: Nanos, trust: Option<Trust>) -> bool {
        self.fresh_until > now || (Trust::covers(trust, self.tag) && self.feed_until > now)
    }
}

/// Tier 1 as the edge uses it: the profiles, and the version floors that keep it moving forward.
pub struct Tier1 {
    profiles: TtlLru<UserId, Held>,
    floors: TtlLru<UserId, Floor>,
    /// The TTL and the stale window copies are kept by (no feed window: floors outlive them here).
    keeping: Keeping,
    /// What the invalidation feed vouches for now (`None`: the TTL rule alone).
    trust: Option<Trust>,
}

impl Tier1 {
    /// `stale` is how long after its soft expiry a copy is kept for stale-if-error (0: not at all).
    /// `floor_ttl` must be at least the longest a lookup can take (Redis plus origin timeouts), so that
    /// a slow lookup's old answer still finds the floor when it comes back; it is never below the
    /// profiles' TTL. Floors are bounded by the same entry count as profiles (weight 1 each); with a
    /// zero count there is no tier 1 and no floor.
    pub fn new(limits: L1Limits, stale: Duration, floor_ttl: Duration) -> Self {
        Self {
            profiles: TtlLru::new(limits),
            floors: TtlLru::new(L1Limits {
                max_entries: limits.max_entries,
                max_bytes: limits.max_entries,
                ttl: floor_ttl.max(limits.ttl),
            }),
            keeping: Keeping {
                ttl: limits.ttl,
                stale,
                feed_window: None,
            },
            trust: None,
        }
    }

    /// Sets what the invalidation feed vouches for, as the instance's last look at it said.
    pub fn set_trust(&mut self, trust: Option<Trust>) {
        self.trust = trust;
    }

    /// The feed names a change of `change.id`: every copy older than it goes, and the id's floor rises
    /// to it, so that a lookup that read the older version and comes back later cannot keep or serve it.
    pub fn invalidate(&mut self, change: &Change, now: Nanos) {
        let Ok(id) = UserId::try_from(i64::from(change.id)) else {
            return;
        };
        let floor = if change.is_deletion() {
            Floor::deletion(change.version)
        } else {
            Floor::row(change.version)
        };
        if self
            .profiles
            .peek(&id, now)
            .is_some_and(|held| Floor::row(held.entry.version) < floor)
        {
            self.profiles.remove(&id);
        }
        self.raise(id, floor, now);
    }

    /// The fresh profile of `id`, which becomes the most recently used.
    pub fn get(&mut self, id: &UserId, now: Nanos) -> Option<Hit> {
        let trust = self.trust;
        self.profiles
            .get(id, now)
            .filter(|held| held.is_fresh(now, trust))
            .map(|held| Hit {
                entry: held.entry.clone(),
                shared: held.shared,
            })
    }

    /// Whether tier 1 holds a copy of `id`, fresh or kept past its freshness.
    pub fn holds(&self, id: &UserId, now: Nanos) -> bool {
        self.profiles.peek(id, now).is_some()
    }

    /// The copy of `id` kept past its freshness (never a fresh one), to answer with `x-cache: STALE`
    /// when the origin cannot answer.
    pub fn stale(&self, id: &UserId, now: Nanos) -> Option<ProfileEntry> {
        self.profiles
            .peek(id, now)
            .filter(|held| !held.is_fresh(now, self.trust))
            .map(|held| held.entry.clone())
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Stores a full profile under its own id unless this instance knows a newer version of it, or its
    /// deletion; returns whether it was stored. An equal version is stored again (a fresh TTL).
    ///
    /// The copy is fresh and kept by the rule of [`Deadlines::of`] (`now_ms` being the wall clock),
    /// with tier 1's TTL and stale window (`l1_ttl_ms`, `l1_stale_ms`). A copy past its soft expiry is
    /// kept only as a stale fallback.
    pub fn fill(&mut self, entry: ProfileEntry, shelf: Shelf, now: Nanos, now_ms: i64) -> bool {
        let id = entry.profile.id;
        let incoming = Floor::row(entry.version);
        if self.floors.peek(&id, now).is_some_and(|f| *f > incoming) {
            return false;
        }
        if self
            .profiles
            .peek(&id, now)
            .is_some_and(|held| held.entry.version > entry.version)
        {
            return false;
        }
        self.raise(id, incoming, now);
        // The one rule for a copy's deadlines (wall clock), read on this instance's monotonic clock.
        let deadlines = Deadlines::of(&shelf, now_ms, self.keeping);
        let at = |ms: i64| {
            let left_ms = ms.saturating_sub(now_ms).max(0) as u64;
            now.saturating_add(left_ms.saturating_mul(1_000_000))
        };
        let fresh_until = at(deadlines.fresh_until_ms);
        let keep_until = at(deadlines.keep_until_ms);
        let weight = entry.weight();
        // A copy from the process-wide tier carries its freshness cut to the TTL, with no load cost: XFetch
        // would read that as a soft expiry already past once the feed keeps the copy fresh beyond
        // it, and refresh it from the origin on every hit. Tier 1 never refreshes such a copy early
        // (the process-wide tier's own hits decide with the source's soft expiry).
        let shared = shelf
            .freshness
            .filter(|f| shelf.feed_until_ms.is_none() || f.delta_ms > 0);
        let held = Held {
            entry,
            fresh_until,
            shared,
            feed_until: at(deadlines.feed_until_ms),
            tag: shelf.tag,
        };
        self.profiles
            .insert_until(id, held, weight, keep_until, now);
        true
    }

    /// An answer at `version` is about to be served for `id`: says whether it may be, and if so records
    /// it, so that nothing older is served afterwards (a held profile older than it is dropped).
    pub fn observe(&mut self, id: UserId, version: i64, now: Nanos) -> Observed {
        let seen = Floor::row(version);
        match self.floors.peek(&id, now).copied() {
            Some(floor) if floor > seen => {
                if floor.deleted {
                    return Observed::Deleted;
                }
                match self.get(&id, now) {
                    Some(held) if held.entry.version >= floor.version => {
                        Observed::Newer(held.entry)
                    }
                    _ => Observed::Stale,
                }
            }
            _ => {
                self.raise(id, seen, now);
                if self
                    .profiles
                    .peek(&id, now)
                    .is_some_and(|held| held.entry.version < version)
                {
                    self.profiles.remove(&id);
                }
                Observed::Current
            }
        }
    }

    /// A write through this instance deleted `id` (at `version`, when the origin said which): its
    /// profile goes, and no answer or fill of that version or older is used while the floor lives.
    pub fn deleted(&mut self, id: UserId, version: Option<i64>, now: Nanos) {
        self.profiles.remove(&id);
        if let Some(version) = version {
            self.raise(id, Floor::deletion(version), now);
        }
    }

    /// Drops the profile of `id` (its floor stays).
    pub fn remove(&mut self, id: &UserId) {
        self.profiles.remove(id);
    }

    fn raise(&mut self, id: UserId, to: Floor, now: Nanos) {
        let floor = match self.floors.peek(&id, now) {
            Some(held) if *held > to => *held,
            _ => to,
        };
        self.floors.insert(id, floor, 1, now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aside_shared::UserProfile;

    use super::*;

    const MS: Nanos = 1_000_000;

    fn lru(max_entries: usize, max_bytes: usize, ttl_ms: u64) -> TtlLru<u32, &'static str> {
        TtlLru::new(L1Limits {
            max_entries,
            max_bytes,
            ttl: Duration::from_millis(ttl_ms),
        })
    }

    fn keys(c: &mut TtlLru<u32, &'static str>, now: Nanos) -> Vec<u32> {
        let mut present: Vec<u32> = (0..20).filter(|k| c.index.contains_key(k)).collect();
        present.retain(|k| c.get(k, now).is_some());
        present
    }

    #[test]
    fn evicts_the_least_recently_used_when_the_count_is_reached() {
        let mut c = lru(3, 1000, 1000);
        for k in 1..=3 {
            c.insert(k, "v", 1, 0);
        }
        c.insert(4, "v", 1, 0);
        assert_eq!(c.len(), 3);
        assert_eq!(keys(&mut c, 0), vec![2, 3, 4]);
    }

    #[test]
    fn a_read_makes_an_entry_the_most_recent() {
        let mut c = lru(3, 1000, 1000);
        for k in 1..=3 {
            c.insert(k, "v", 1, 0);
        }
        assert!(c.get(&1, 0).is_some());
        c.insert(4, "v", 1, 0);
        assert!(c.get(&2, 0).is_none(), "2 was the least recently used");
        assert!(c.get(&1, 0).is_some());
    }

    #[test]
    fn evicts_by_weight_until_the_new_entry_fits() {
        let mut c = lru(100, 10, 1000);
        c.insert(1, "a", 4, 0);
        c.insert(2, "b", 4, 0);
        assert_eq!(c.weight(), 8);
        c.insert(3, "c", 5, 0);
        assert_eq!(keys(&mut c, 0), vec![2, 3]);
        assert_eq!(c.weight(), 9);
        c.insert(4, "d", 10, 0);
        assert_eq!(keys(&mut c, 0), vec![4]);
        assert_eq!(c.weight(), 10);
    }

    #[test]
    fn an_entry_heavier_than_the_budget_is_not_stored_and_drops_the_old_copy() {
        let mut c = lru(100, 10, 1000);
        c.insert(1, "small", 2, 0);
        c.insert(2, "other", 2, 0);
        c.insert(1, "huge", 11, 0);
        assert!(c.get(&1, 0).is_none());
        assert_eq!(c.get(&2, 0), Some(&"other"));
        assert_eq!(c.weight(), 2);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut c = lru(10, 100, 2000);
        c.insert(1, "v", 1, 5 * MS);
        assert_eq!(c.get(&1, 5 * MS + 1999 * MS), Some(&"v"));
        assert_eq!(c.get(&1, 5 * MS + 2000 * MS), None);
        assert!(c.is_empty());
        assert_eq!(c.weight(), 0);
    }

    #[test]
    fn reading_does_not_extend_the_ttl() {
        let mut c = lru(10, 100, 100);
        c.insert(1, "v", 1, 0);
        assert!(c.get(&1, 90 * MS).is_some());
        assert!(c.get(&1, 100 * MS).is_none());
    }

    #[test]
    fn replacing_updates_value_weight_and_deadline() {
        let mut c = lru(2, 100, 100);
        c.insert(1, "old", 10, 0);
        c.insert(2, "two", 1, 0);
        c.insert(1, "new", 3, 50 * MS);
        assert_eq!(c.len(), 2);
        assert_eq!(c.weight(), 4);
        assert_eq!(c.get(&1, 120 * MS), Some(&"new"));
        assert_eq!(c.get(&2, 120 * MS), None);
        // The replacement is the most recent: a third key evicts 2, not 1.
        let mut c = lru(2, 100, 100);
        c.insert(1, "old", 1, 0);
        c.insert(2, "two", 1, 0);
        c.insert(1, "new", 1, 0);
        c.insert(3, "three", 1, 0);
        assert_eq!(keys(&mut c, 0), vec![1, 3]);
    }

    #[test]
    fn expired_cold_entries_are_dropped_before_any_live_one() {
        let mut c = lru(2, 100, 100);
        c.insert(1, "a", 1, 0);
        c.insert(2, "b", 1, 60 * MS);
        assert!(c.get(&2, 90 * MS).is_some());
        // At 120 ms, 1 has expired and is the coldest: it goes, and 2 (live) is kept although the
        // count bound alone would have evicted it had 1 been read more recently.
        c.insert(3, "c", 1, 120 * MS);
        assert!(!c.index.contains_key(&1));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&2, 120 * MS), Some(&"b"));
        assert_eq!(c.get(&3, 120 * MS), Some(&"c"));
    }

    #[test]
    fn zero_limits_store_nothing() {
        for (n, b, t) in [(0, 100, 100), (10, 0, 100), (10, 100, 0)] {
            let mut c = lru(n, b, t);
            c.insert(1, "v", 0, 0);
            assert!(c.get(&1, 0).is_none());
        }
    }

    #[test]
    fn slots_are_reused_and_the_list_stays_consistent_under_churn() {
        let mut c = lru(5, 1000, 1000);
        for round in 0..200u32 {
            let k = (round * 7) % 11;
            if round % 3 == 0 {
                c.remove(&k);
            } else {
                c.insert(k, "v", (k as usize) + 1, 0);
            }
            let _ = c.get(&((round * 5) % 11), 0);
            assert!(c.len() <= 5);
            let expected: usize = c.index.values().map(|&i| c.slot(i).weight).sum();
            assert_eq!(c.weight(), expected);
            // Walk the list both ways: it holds exactly the indexed entries.
            let mut forward = 0;
            let mut i = c.newest;
            while i != NIL {
                forward += 1;
                i = c.slot(i).older;
            }
            let mut backward = 0;
            let mut i = c.oldest;
            while i != NIL {
                backward += 1;
                i = c.slot(i).newer;
            }
            assert_eq!((forward, backward), (c.len(), c.len()));
        }
        assert!(c.slots.len() <= 6, "slots are recycled: {}", c.slots.len());
    }

    #[test]
    fn profile_entries_are_keyed_by_their_id() {
        let profile: UserProfile = serde_json::from_str(
            r#"{"id":7,"full_name":"Ana Silva","gender":"F","birth_date":"1980-01-02",
                "department":"Sales","email":"ana.silva@fake-devops-db.internal","username":"ana.silva"}"#,
        )
        .unwrap();
        let mut c = Tier1::new(
            L1Limits {
                max_entries: 10,
                max_bytes: 10_000,
                ttl: Duration::from_secs(2),
            },
            Duration::ZERO,
            Duration::from_secs(3),
        );
        let entry = ProfileEntry::new(profile.clone(), 4);
        assert!(entry.weight() > entry.json.len());
        c.fill(entry, Shelf::default(), 0, 0);
        let id = UserId::parse("7").unwrap();
        let hit = c.get(&id, 0).unwrap().entry;
        assert_eq!(*hit.profile, profile);
        let back: UserProfile = serde_json::from_slice(&hit.json).unwrap();
        assert_eq!(back, profile);
        assert_eq!(hit.version, 4);
    }

    fn profile_at(version: i64, department: &str) -> ProfileEntry {
        let profile: UserProfile = serde_json::from_value(serde_json::json!({
            "id": 7, "full_name": "Ana Silva", "gender": "F", "birth_date": "1980-01-02",
            "department": department, "email": "ana.silva@fake-devops-db.internal",
            "username": "ana.silva"
        }))
        .unwrap();
        ProfileEntry::new(profile, version)
    }

    fn tier1() -> Tier1 {
        Tier1::new(
            L1Limits {
                max_entries: 10,
                max_bytes: 100_000,
                ttl: Duration::from_millis(100),
            },
            Duration::ZERO,
            Duration::from_millis(1000),
        )
    }

    fn held(t: &mut Tier1, now: Nanos) -> Option<(i64, String)> {
        let id = UserId::parse("7").unwrap();
        t.get(&id, now).map(|h| {
            (
                h.entry.version,
                h.entry.profile.department.as_str().to_string(),
            )
        })
    }

    #[test]
    fn a_fill_never_replaces_a_newer_version() {
        let mut t = tier1();
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, 0));
        assert!(!t.fill(profile_at(4, "Security"), Shelf::default(), MS, 0));
        assert_eq!(held(&mut t, MS), Some((5, "Sales".into())));
        assert!(
            t.fill(profile_at(5, "Sales"), Shelf::default(), 2 * MS, 0),
            "equal: refreshed"
        );
        assert!(t.fill(profile_at(6, "DevOps"), Shelf::default(), 3 * MS, 0));
        assert_eq!(held(&mut t, 3 * MS), Some((6, "DevOps".into())));
    }

    #[test]
    fn the_floor_outlives_the_profile_and_still_refuses_older_fills() {
        let mut t = tier1();
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, 0));
        // The profile's 100 ms are over; the floor's 1 s are not.
        assert_eq!(held(&mut t, 150 * MS), None);
        assert!(!t.fill(profile_at(4, "Security"), Shelf::default(), 150 * MS, 0));
        assert!(held(&mut t, 150 * MS).is_none());
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 160 * MS, 0));
        // Once the floor is gone too, anything may be filled (Redis and PostgreSQL only move forward, so
        // only a lookup slower than the floor's lifetime could bring an old version, and none is).
        assert!(t.fill(profile_at(3, "Security"), Shelf::default(), 2000 * MS, 0));
    }

    #[test]
    fn an_answer_older_than_what_was_served_is_replaced_or_looked_up_again() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1();
        assert!(matches!(t.observe(id, 3, 0), Observed::Current));
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, 0));
        // A slow lookup comes back with version 4: the held version 5 is served instead.
        match t.observe(id, 4, MS) {
            Observed::Newer(e) => assert_eq!(e.version, 5),
            other => panic!("{other:?}"),
        }
        // A `?fields` answer at 7 was served: the held 5 is now too old to serve, and a 6 is refused.
        assert!(matches!(t.observe(id, 7, 2 * MS), Observed::Current));
        assert!(held(&mut t, 2 * MS).is_none());
        assert!(matches!(t.observe(id, 6, 3 * MS), Observed::Stale));
        assert!(!t.fill(profile_at(6, "DevOps"), Shelf::default(), 3 * MS, 0));
        assert!(matches!(t.observe(id, 7, 4 * MS), Observed::Current));
        assert!(matches!(t.observe(id, 8, 4 * MS), Observed::Current));
    }

    #[test]
    fn a_delete_through_the_instance_keeps_the_deleted_row_out() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1();
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, 0));
        t.deleted(id, Some(5), MS);
        assert!(held(&mut t, MS).is_none());
        assert!(
            !t.fill(profile_at(5, "Sales"), Shelf::default(), 2 * MS, 0),
            "the late fill of the deleted row"
        );
        assert!(matches!(t.observe(id, 5, 2 * MS), Observed::Deleted));
        assert!(matches!(t.observe(id, 4, 2 * MS), Observed::Deleted));
        // A row created again with that id continues its versions: it is newer.
        assert!(t.fill(profile_at(6, "DevOps"), Shelf::default(), 3 * MS, 0));
        assert_eq!(held(&mut t, 3 * MS), Some((6, "DevOps".into())));
        // Without a version (an origin that does not say), the profile still goes.
        t.deleted(id, None, 4 * MS);
        assert!(held(&mut t, 4 * MS).is_none());
    }

    fn tier1_with_stale(stale_ms: u64) -> Tier1 {
        Tier1::new(
            L1Limits {
                max_entries: 10,
                max_bytes: 100_000,
                ttl: Duration::from_millis(100),
            },
            Duration::from_millis(stale_ms),
            Duration::from_millis(1000),
        )
    }

    fn shelf(fresh_for_ms: i64, now_ms: i64, stale_if_error_secs: Option<u64>) -> Shelf {
        Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now_ms + fresh_for_ms,
                delta_ms: 3,
            }),
            stale_if_error: stale_if_error_secs.map(Duration::from_secs),
            ..Shelf::default()
        }
    }

    const WALL: i64 = 1_700_000_000_000;

    #[test]
    fn a_copy_is_fresh_for_the_shorter_of_tier_one_s_ttl_and_its_soft_expiry() {
        let id = UserId::parse("7").unwrap();
        // Soft expiry in 10 s, tier-1 TTL 100 ms: fresh for 100 ms, then stale until 10 s + 1 s.
        let mut t = tier1_with_stale(1000);
        assert!(t.fill(profile_at(5, "Sales"), shelf(10_000, WALL, None), 0, WALL));
        let hit = t.get(&id, 99 * MS).unwrap();
        assert_eq!(hit.shared.unwrap().fresh_until_ms, WALL + 10_000);
        assert!(
            t.stale(&id, 99 * MS).is_none(),
            "a fresh copy is never stale"
        );
        assert!(t.get(&id, 100 * MS).is_none());
        assert_eq!(t.stale(&id, 100 * MS).unwrap().version, 5);
        assert!(t.stale(&id, 10_999 * MS).is_some());
        assert!(t.stale(&id, 11_000 * MS).is_none(), "hard expiry");

        // Soft expiry in 40 ms: fresh for 40 ms only.
        let mut t = tier1_with_stale(1000);
        assert!(t.fill(profile_at(5, "Sales"), shelf(40, WALL, None), 0, WALL));
        assert!(t.get(&id, 39 * MS).is_some());
        assert!(t.get(&id, 40 * MS).is_none());
        assert!(t.stale(&id, 40 * MS).is_some());
        assert!(t.stale(&id, 1040 * MS).is_none());
    }

    fn tagged(fresh_for_ms: i64, epoch: u64, seq: u64) -> Shelf {
        Shelf {
            tag: FeedTag { epoch, seq },
            ..shelf(fresh_for_ms, WALL, None)
        }
    }

    #[test]
    fn while_the_feed_vouches_for_a_copy_it_is_fresh_until_its_soft_expiry() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1_with_stale(1000);
        assert!(t.fill(profile_at(5, "Sales"), tagged(10_000, 3, 40), 0, WALL));
        // No trust: tier 1's TTL (100 ms).
        assert!(t.get(&id, 150 * MS).is_none());
        // The feed vouches for epoch 3 from entry 40 on: fresh until the soft expiry (10 s).
        t.set_trust(Some(Trust {
            epoch: 3,
            since: 40,
        }));
        assert_eq!(held(&mut t, 150 * MS).unwrap().0, 5);
        assert!(t.stale(&id, 150 * MS).is_none());
        assert!(t.get(&id, 9_999 * MS).is_some());
        assert!(
            t.get(&id, 10_000 * MS).is_none(),
            "the soft expiry still ends it"
        );
        // Another epoch (continuity lost), or a position this instance cannot vouch for: the TTL rule.
        for trust in [
            Trust {
                epoch: 4,
                since: 40,
            },
            Trust {
                epoch: 3,
                since: 41,
            },
        ] {
            t.set_trust(Some(trust));
            assert!(t.get(&id, 150 * MS).is_none(), "{trust:?}");
            assert_eq!(t.stale(&id, 150 * MS).unwrap().version, 5);
        }
        // A copy from the process-wide tier (its freshness cut to the TTL, no load cost; the feed's soft
        // expiry of its own): fresh by the feed past the TTL, and never picked for an early refresh.
        let mut t = tier1_with_stale(1000);
        let adopted = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: WALL + 100,
                delta_ms: 0,
            }),
            feed_until_ms: Some(WALL + 10_000),
            ..tagged(10_000, 3, 40)
        };
        assert!(t.fill(profile_at(5, "Sales"), adopted, 0, WALL));
        t.set_trust(Some(Trust {
            epoch: 3,
            since: 40,
        }));
        let hit = t
            .get(&id, 900 * MS)
            .expect("fresh by the feed past the 100 ms TTL");
        assert!(hit.shared.is_none(), "no early refresh: {:?}", hit.shared);
        // An untagged copy (taken with no feed) is never trusted.
        let mut t = tier1_with_stale(1000);
        assert!(t.fill(profile_at(5, "Sales"), tagged(10_000, 0, 0), 0, WALL));
        t.set_trust(Some(Trust { epoch: 0, since: 0 }));
        assert!(t.get(&id, 150 * MS).is_none());
    }

    /// The fill/invalidation race: a lookup reads version 5, the row becomes version 6 and the feed
    /// says so, and only then does the lookup's answer come back.
    #[test]
    fn an_invalidation_drops_older_copies_and_a_late_fill_of_the_old_version_is_refused() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1_with_stale(1000);
        t.set_trust(Some(Trust {
            epoch: 3,
            since: 40,
        }));
        assert!(t.fill(profile_at(5, "Sales"), tagged(10_000, 3, 40), 0, WALL));
        let change = |version, rank| Change {
            id: 7,
            version,
            rank,
        };
        // The same version again (a write-through of what is held): nothing to drop.
        t.invalidate(&change(5, 1), MS);
        assert_eq!(held(&mut t, 2 * MS).unwrap().0, 5);
        t.invalidate(&change(6, 1), 3 * MS);
        assert!(held(&mut t, 4 * MS).is_none(), "the old copy is gone");
        assert!(t.stale(&id, 4 * MS).is_none(), "not even kept as stale");
        // The slow lookup comes back with version 5: refused, and not served either.
        assert!(!t.fill(profile_at(5, "Sales"), tagged(10_000, 3, 41), 5 * MS, WALL));
        assert!(matches!(t.observe(id, 5, 6 * MS), Observed::Stale));
        // The new version is taken.
        assert!(t.fill(profile_at(6, "DevOps"), tagged(10_000, 3, 42), 7 * MS, WALL));
        assert_eq!(held(&mut t, 8 * MS).unwrap(), (6, "DevOps".to_string()));
        // A deletion at version 6 drops version 6 too, and a late answer of it is a 404.
        t.invalidate(&change(6, 2), 9 * MS);
        assert!(held(&mut t, 10 * MS).is_none());
        assert!(matches!(t.observe(id, 6, 11 * MS), Observed::Deleted));
    }

    #[test]
    fn a_soft_expired_copy_is_kept_only_as_a_stale_fallback() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1_with_stale(500);
        assert!(t.fill(profile_at(5, "Sales"), shelf(-1, WALL, None), 0, WALL));
        assert!(t.get(&id, 0).is_none());
        assert_eq!(t.stale(&id, 0).unwrap().version, 5);
        // Kept 500 ms after the soft expiry (counted from the fill: it had passed already).
        assert!(t.stale(&id, 499 * MS).is_some());
        assert!(t.stale(&id, 500 * MS).is_none());
    }

    #[test]
    fn the_source_s_stale_if_error_shortens_the_stale_window_but_never_lengthens_it() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1_with_stale(5000);
        assert!(t.fill(profile_at(5, "Sales"), shelf(0, WALL, Some(1)), 0, WALL));
        assert!(t.stale(&id, 999 * MS).is_some());
        assert!(t.stale(&id, 1000 * MS).is_none());
        let mut t = tier1_with_stale(500);
        assert!(t.fill(profile_at(5, "Sales"), shelf(0, WALL, Some(60)), 0, WALL));
        assert!(t.stale(&id, 499 * MS).is_some());
        assert!(t.stale(&id, 500 * MS).is_none());
    }

    #[test]
    fn without_a_soft_expiry_tier_one_s_ttl_is_the_freshness_and_zero_stale_keeps_nothing() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1_with_stale(0);
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, WALL));
        assert!(t.get(&id, 99 * MS).unwrap().shared.is_none());
        assert!(t.get(&id, 100 * MS).is_none());
        assert!(t.stale(&id, 100 * MS).is_none());
        let mut t = tier1_with_stale(300);
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, WALL));
        assert!(t.stale(&id, 399 * MS).is_some());
        assert!(t.stale(&id, 400 * MS).is_none());
    }

    #[test]
    fn a_stale_copy_still_keeps_older_versions_out_and_is_not_served_as_newer() {
        let id = UserId::parse("7").unwrap();
        let mut t = tier1_with_stale(1000);
        assert!(t.fill(profile_at(5, "Sales"), Shelf::default(), 0, WALL));
        // Stale at 150 ms: an older fill is refused, and an older answer is not replaced by it.
        assert!(!t.fill(profile_at(4, "Security"), Shelf::default(), 150 * MS, WALL));
        assert!(matches!(t.observe(id, 4, 150 * MS), Observed::Stale));
        assert_eq!(t.stale(&id, 150 * MS).unwrap().version, 5);
    }

    #[test]
    fn no_tier_one_keeps_no_floor() {
        let id = UserId::parse("7").unwrap();
        let mut t = Tier1::new(
            L1Limits {
                max_entries: 0,
                max_bytes: 100_000,
                ttl: Duration::from_millis(100),
            },
            Duration::ZERO,
            Duration::from_millis(1000),
        );
        assert!(matches!(t.observe(id, 5, 0), Observed::Current));
        assert!(matches!(t.observe(id, 4, 0), Observed::Current));
        assert!(t.is_empty());
    }
}
