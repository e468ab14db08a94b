//! Writing cache entries: read-path fills, write-through after an API write, and change capture all
//! go through one compare-and-set, so a slow writer can never put an older entry over a newer one.
//!
//! The compare-and-set is a Lua script (`store_if_newer.lua`) run with `EVALSHA`; `redis::Script`
//! loads it with `SCRIPT LOAD` the first time and again after a `NOSCRIPT` (a restarted Redis). One call
//! writes any number of entries, so change capture writes a bulk update in a few round trips.
//!
//! A change (write-through, change capture, the replay after a failover) is also announced on the
//! invalidation feed in the same script call ([`super::feed`]); a read-path fill is not.
//!
//! **On a Redis Cluster** one script call cannot name the feed (slot of `{feed}`) and the profiles
//! (each id's slot), so a write becomes two steps: the hashes, one call per slot (concurrently), then
//! the announcement of what was written or kept, one call on the feed's slot (`feed_announce.lua`).
//! Writing first keeps the rule readers rely on: an announcement never comes before the entry it
//! announces, so an edge that drops its copy on an announcement and re-reads tier 2 finds the new
//! entry. What the split costs: an origin that dies (or loses the feed's node) between the two steps
//! leaves a change in the cache that the feed did not announce, so edges keep older copies until
//! the change is announced again. It is: every change, made through the API or in SQL, is in the
//! outbox, and change capture writes it (announcing it) and moves its watermark only after both steps
//! succeeded, so another origin takes over and announces it again (at-least-once; a reader treats an
//! announcement of a version it has as a no-op). The window is the change capture lag (about a
//! second, more while no origin holds the lock).

use std::sync::LazyLock;
use std::time::Duration;

use aside_shared::UserId;
use aside_shared::cache::{CacheEntry, CachedProfile, Freshness, profile_key};
use aside_shared::feed::{FEED_KEY, FEED_SEQ_KEY};

use super::{CacheError, ProfileCache};

static STORE_IF_NEWER: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("store_if_newer.lua")));

static FEED_ANNOUNCE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("feed_announce.lua")));

/// The most entries written by one script call: keeps each call well within the command timeout and
/// Redis's other clients from waiting behind a long script.
pub const MAX_ENTRIES_PER_CALL: usize = 200;

/// What became of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Written,
    /// The cache held a newer entry, which was kept.
    KeptNewer,
    /// [`Condition::OnlyIfCached`] and the key did not exist.
    NotCached,
}

impl Stored {
    /// The `outcome` label of a fill or a write-through.
    pub fn label(stored: &Result<Stored, CacheError>) -> &'static str {
        match stored {
            Ok(Stored::Written) => "written",
            Ok(Stored::KeptNewer) => "kept_newer",
            Ok(Stored::NotCached) => "not_cached",
            Err(_) => "error",
        }
    }
}

/// When an entry may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unless the cache holds a newer entry.
    Always,
    /// Only over an existing key (unless that one is newer).
    OnlyIfCached,
}

/// One entry to store.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub id: UserId,
    pub entry: CacheEntry,
    pub condition: Condition,
    /// A change to announce on the invalidation feed (not a read-path fill).
    pub announce: bool,
}

impl ProfileCache {
    /// The soft TTL for one profile: the configured TTL spread by ±jitter %, so keys filled together
    /// (after a restart, a deploy) do not all expire in the same second.
    pub fn ttl_with_jitter(&self) -> Duration {
        jittered(
            self.ttls.profile,
            self.ttls.jitter_percent,
            rand::random_range(-1.0..=1.0),
        )
    }

    /// Gives a profile about to be stored its freshness: fresh for a jittered soft TTL from now, and
    /// `cost` (how long the PostgreSQL read or write that produced it took) as XFetch's `delta`.
    pub fn stamp(&self, mut profile: CachedProfile, cost: Duration) -> CachedProfile {
        let now = crate::clock::now_ms();
        profile.filled_at_ms = now;
        profile.freshness = Some(Freshness {
            fresh_until_ms: now.saturating_add(self.ttl_with_jitter().as_millis() as i64),
            delta_ms: u32::try_from(cost.as_millis()).unwrap_or(u32::MAX),
        });
        profile
    }

    /// The TTL an entry is stored with: a profile's hard expiry (its soft expiry plus the stale window),
    /// a marker's or a tombstone's.
    fn ttl_of(&self, entry: &CacheEntry, now_ms: i64) -> Duration {
        match entry {
            CacheEntry::Present(profile) => hard_ttl(profile.freshness, now_ms, self.ttls.stale),
            CacheEntry::Missing(_) => self.ttls.missing,
            CacheEntry::Deleted(_) => self.ttls.tombstone,
        }
    }

    /// Writes `entry` for `id` unless the cache holds a newer entry (see `store_if_newer.lua`). The hash
    /// is replaced whole, with its TTL, in one atomic step. A read-path fill: nothing is announced.
    pub async fn store_if_newer(
        &self,
        id: UserId,
        entry: &CacheEntry,
    ) -> Result<Stored, CacheError> {
        self.store_one(id, entry, false).await
    }

    /// [`Self::store_if_newer`] for a change (the write-through of an API write): it is also announced
    /// on the invalidation feed, in the same atomic step.
    pub async fn store_change(&self, id: UserId, entry: &CacheEntry) -> Result<Stored, CacheError> {
        self.store_one(id, entry, true).await
    }

    async fn store_one(
        &self,
        id: UserId,
        entry: &CacheEntry,
        announce: bool,
    ) -> Result<Stored, CacheError> {
        let request = StoreRequest {
            id,
            entry: entry.clone(),
            condition: Condition::Always,
            announce,
        };
        let stored = self.store_all_if_newer(&[request]).await?;
        Ok(stored[0])
    }

    /// [`Self::store_if_newer`] for many entries, each with its [`Condition`], in calls of at most [`MAX_ENTRIES_PER_CALL`].
    /// Returns one outcome per entry, in order.
    pub async fn store_all_if_newer(
        &self,
        requests: &[StoreRequest],
    ) -> Result<Vec<Stored>, CacheError> {
        let mut outcomes = Vec::with_capacity(requests.len());
        // Profiles must carry their soft expiry (readers tell fresh from stale by it); a caller that
        // did not stamp one gets the default, with an unknown cost.
        let requests: Vec<StoreRequest> = requests
            .iter()
            .map(|r| match &r.entry {
                CacheEntry::Present(p) if p.freshness.is_none() => StoreRequest {
                    entry: CacheEntry::Present(self.stamp(p.clone(), Duration::ZERO)),
                    ..r.clone()
                },
                _ => r.clone(),
            })
            .collect();
        let now = crate::clock::now_ms();
        let cluster = self.topology.is_cluster();
        for chunk in requests.chunks(MAX_ENTRIES_PER_CALL) {
            let written = if cluster {
                self.store_on_cluster(chunk, now).await
            } else {
                self.store_chunk(chunk, true, now).await
            };
            let written = match written {
                Ok(written) => written,
                Err(e) => {
                    crate::metrics::cache_store("error");
                    return Err(e);
                }
            };
            for stored in written {
                crate::metrics::cache_store(match stored {
                    Stored::Written => "written",
                    Stored::KeptNewer => "kept_newer",
                    Stored::NotCached => "not_cached",
                });
                outcomes.push(stored);
            }
        }
        Ok(outcomes)
    }
}

impl ProfileCache {
    /// One call of `store_if_newer.lua` for `chunk`, naming the feed (and announcing in the same step)
    /// when `with_feed`; on a cluster every key of `chunk` must share a slot and `with_feed` be false.
    async fn store_chunk(
        &self,
        chunk: &[StoreRequest],
        with_feed: bool,
        now: i64,
    ) -> Result<Vec<Stored>, CacheError> {
        let mut invocation = STORE_IF_NEWER.prepare_invoke();
        if with_feed {
            invocation.key(FEED_KEY).key(FEED_SEQ_KEY);
        }
        invocation
            .arg(self.feed.max_len)
            .arg(if with_feed { 2 } else { 0 });
        for StoreRequest {
            id,
            entry,
            condition,
            announce,
        } in chunk
        {
            let fields = entry.to_hash_fields();
            invocation
                .key(profile_key(*id))
                .arg(entry.version())
                .arg(entry.rank())
                .arg(self.ttl_of(entry, now).as_millis().max(1) as u64)
                .arg(u8::from(*condition == Condition::OnlyIfCached))
                .arg(u8::from(*announce))
                .arg(fields.len());
            for (name, value) in fields {
                invocation.arg(name).arg(value);
            }
        }
        let written = self
            .call("store_if_newer", |mut c| async move {
                invocation.invoke_async::<Vec<i64>>(&mut c).await
            })
            .await?;
        if written.len() != chunk.len() {
            return Err(CacheError::UnexpectedReply);
        }
        Ok(written
            .into_iter()
            .map(|w| match w {
                1 => Stored::Written,
                2 => Stored::NotCached,
                _ => Stored::KeptNewer,
            })
            .collect())
    }

    /// `chunk` on a Redis Cluster: the hashes, one call per slot (concurrently), then the
    /// announcement of the changes among them on the feed's slot (see the module's documentation).
    async fn store_on_cluster(
        &self,
        chunk: &[StoreRequest],
        now: i64,
    ) -> Result<Vec<Stored>, CacheError> {
        let groups = by_slot(chunk);
        let calls = groups.iter().map(|positions| {
            let requests: Vec<StoreRequest> = positions.iter().map(|&i| chunk[i].clone()).collect();
            async move { self.store_chunk(&requests, false, now).await }
        });
        let results = futures::future::join_all(calls).await;
        let mut outcomes = vec![Stored::KeptNewer; chunk.len()];
        for (positions, result) in groups.iter().zip(results) {
            for (&i, stored) in positions.iter().zip(result?) {
                outcomes[i] = stored;
            }
        }
        let changes: Vec<(&StoreRequest, Stored)> = chunk
            .iter()
            .zip(outcomes.iter().copied())
            .filter(|(r, stored)| announced(self.feed.max_len, r, *stored))
            .collect();
        if !changes.is_empty() {
            let mut invocation = FEED_ANNOUNCE.prepare_invoke();
            invocation
                .key(FEED_KEY)
                .key(FEED_SEQ_KEY)
                .arg(self.feed.max_len);
            for (r, _) in &changes {
                invocation
                    .arg(r.id.to_string())
                    .arg(r.entry.version())
                    .arg(r.entry.rank());
            }
            self.call("feed_announce", |mut c| async move {
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await?;
        }
        Ok(outcomes)
    }
}

/// Whether the write of `request`, which came out as `stored`, is announced on the feed: a change (not
/// a read-path fill) of a profile or a tombstone (not a "missing" marker), written or kept newer but
/// not skipped for want of a cached key; the rule `store_if_newer.lua` applies on one node.
fn announced(max_len: u64, request: &StoreRequest, stored: Stored) -> bool {
    max_len > 0 && request.announce && request.entry.rank() >= 1 && stored != Stored::NotCached
}

/// The positions of `chunk`'s requests grouped by their key's cluster slot, in order of first
/// appearance.
fn by_slot(chunk: &[StoreRequest]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, request) in chunk.iter().enumerate() {
        let slot = aside_shared::slot::key_slot(profile_key(request.id).as_bytes());
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, positions)) => positions.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, positions)| positions).collect()
}

/// A profile's Redis TTL: until its soft expiry, plus the stale window. A copy without freshness
/// (never stored by this origin) gets only the stale window.
fn hard_ttl(freshness: Option<Freshness>, now_ms: i64, stale: Duration) -> Duration {
    let soft_ms = freshness.map_or(0, |f| f.fresh_until_ms.saturating_sub(now_ms).max(0));
    Duration::from_millis(soft_ms as u64) + stale
}

/// `ttl * (1 + percent/100 * unit)`, `unit` in -1..=1.
fn jittered(ttl: Duration, percent: u8, unit: f64) -> Duration {
    let factor = 1.0 + f64::from(percent) / 100.0 * unit.clamp(-1.0, 1.0);
    Duration::from_secs_f64((ttl.as_secs_f64() * factor).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_percentage() {
        let ttl = Duration::from_secs(7200);
        assert_eq!(jittered(ttl, 10, -1.0), Duration::from_secs(6480));
        assert_eq!(jittered(ttl, 10, 1.0), Duration::from_secs(7920));
        assert_eq!(jittered(ttl, 0, 0.7), ttl);
        assert_eq!(
            jittered(ttl, 10, 5.0),
            Duration::from_secs(7920),
            "unit is clamped"
        );
        assert_eq!(
            jittered(Duration::ZERO, 10, 0.0),
            Duration::from_secs(1),
            "never 0"
        );
    }

    #[test]
    fn the_hard_expiry_is_the_soft_one_plus_the_stale_window() {
        let fresh = Some(Freshness {
            fresh_until_ms: 10_000,
            delta_ms: 3,
        });
        let stale = Duration::from_secs(60);
        assert_eq!(hard_ttl(fresh, 4_000, stale), Duration::from_millis(66_000));
        assert_eq!(
            hard_ttl(fresh, 12_000, stale),
            stale,
            "already soft-expired"
        );
        assert_eq!(hard_ttl(None, 4_000, stale), stale);
        assert_eq!(
            hard_ttl(fresh, 4_000, Duration::ZERO),
            Duration::from_secs(6),
            "no stale window: hard = soft"
        );
    }

    #[test]
    fn the_script_is_loaded_by_hash() {
        // EVALSHA needs the SHA1 of the exact text; a stable, non-empty hash proves it is computed.
        assert_eq!(STORE_IF_NEWER.get_hash().len(), 40);
        assert_eq!(FEED_ANNOUNCE.get_hash().len(), 40);
    }

    fn request(id: i64, entry: CacheEntry, announce: bool) -> StoreRequest {
        StoreRequest {
            id: UserId::parse(&id.to_string()).unwrap(),
            entry,
            condition: Condition::Always,
            announce,
        }
    }

    #[test]
    fn a_cluster_write_is_grouped_by_slot_in_order() {
        let chunk: Vec<StoreRequest> = (1..=60)
            .map(|id| request(id, CacheEntry::deleted(1, 0), true))
            .collect();
        let groups = by_slot(&chunk);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..60).collect::<Vec<_>>(), "every request once");
        assert!(groups.len() > 1);
        for positions in &groups {
            let slots: std::collections::BTreeSet<u16> = positions
                .iter()
                .map(|&i| aside_shared::slot::key_slot(profile_key(chunk[i].id).as_bytes()))
                .collect();
            assert_eq!(slots.len(), 1, "one slot per call");
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order");
        }
    }

    #[test]
    fn only_changes_of_profiles_and_tombstones_that_reached_a_key_are_announced() {
        let tombstone = request(1, CacheEntry::deleted(3, 0), true);
        assert!(announced(1000, &tombstone, Stored::Written));
        assert!(announced(1000, &tombstone, Stored::KeptNewer));
        assert!(!announced(1000, &tombstone, Stored::NotCached));
        assert!(!announced(0, &tombstone, Stored::Written), "no feed");
        let fill = request(1, CacheEntry::deleted(3, 0), false);
        assert!(!announced(1000, &fill, Stored::Written), "a read-path fill");
    }
}
