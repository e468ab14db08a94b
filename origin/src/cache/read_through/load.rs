//! The read-through's load: a profile from PostgreSQL, once per id across all origins.
//!
//! Within an origin, concurrent loads of one id already share one run ([`crate::singleflight`]). Across
//! origins, the run first takes the id's fill lease (`user:lease:{id}`, see [`crate::cache::lease`]):
//!
//! * lease taken: look in Redis once more (another origin may have filled the key just before), else
//!   query PostgreSQL, answer, then fill and release the lease ([`Tail`]);
//! * lease held elsewhere: poll Redis every `lease_poll` for the holder's fill, and try the lease again
//!   each time (it is free again when the holder finished without filling, or died and the lease
//!   expired); after `lease_wait` without either, query PostgreSQL directly;
//! * Redis unavailable: no lease, straight to PostgreSQL (the cache cannot coordinate anything then);
//!   likewise while PostgreSQL's breaker is open (the query is refused at once, or is its probe).
//!
//! Whatever the path, what is answered is either a PostgreSQL read or an entry found in Redis that is
//! newer than what the request had seen ([`supersedes`]), so a refresh never answers the stale copy it
//! was started to replace.
//!
//! **The fill is not on the request's path.** A load answers as soon as PostgreSQL has, and leaves the
//! fill, the "missing" marker's re-check and the lease's release, in that order, to its tail, which the
//! single-flight runs on the load's task right after handing out the answer; the id stays in flight until
//! the tail ends, so a read of this origin arriving meanwhile shares the answer rather than waiting for
//! the lease (a reload does not: it shares only a load that has not answered yet). Nothing else changes: the fill is the same versioned compare-and-set (an older fill never
//! replaces a newer version or a tombstone, whenever it lands), the lease is still released only after the
//! fill (other origins polling for the holder's fill still find it), and a failed fill is still only
//! logged and counted (`aside_origin_cache_fills_total`). A tail cut short by the process's exit loses its
//! fill: a later read misses and loads again; the lease, if held, expires after `lease_ttl`.

use std::time::Instant;

use aside_shared::UserId;
use aside_shared::cache::{CacheEntry, CachedProfile};
use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{Loaded, ReadThrough};
use crate::cache::Lookup;
use crate::cache::fill::Stored;
use crate::cache::lease::Lease;

/// What the request found in Redis before it asked for a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing (a miss, a malformed hash, Redis unavailable).
    Nothing,
    /// A profile copy (soft-expired, due for early refresh, or a forced reload).
    Profile {
        version: i64,
        fresh_until_ms: Option<i64>,
    },
}

/// May `candidate`, found in Redis during a load, be answered instead of querying PostgreSQL? Only a
/// usable entry that is newer than what the request saw: a marker or a tombstone (written after the
/// request's read, so it reflects a later look at PostgreSQL), or a *fresh* profile that is a newer
/// version or a later refresh of the same one.
pub(crate) fn supersedes(candidate: &CacheEntry, seen: Seen, now_ms: i64) -> bool {
    let profile = match candidate {
        CacheEntry::Missing(_) | CacheEntry::Deleted(_) => return true,
        CacheEntry::Present(profile) => profile,
    };
    if !profile.is_fresh(now_ms) {
        return false;
    }
    match seen {
        Seen::Nothing => true,
        Seen::Profile {
            version,
            fresh_until_ms,
        } => {
            let refreshed = match (profile.freshness, fresh_until_ms) {
                (Some(new), Some(old)) => new.fresh_until_ms > old,
                (Some(_), None) => true,
                (None, _) => false,
            };
            profile.version > version || (profile.version == version && refreshed)
        }
    }
}

/// What a load leaves to do after its answer (the fill, its re-check, the lease's release): see the
/// module documentation.
pub(super) type Tail = BoxFuture<'static, ()>;

fn no_tail() -> Tail {
    std::future::ready(()).boxed()
}

/// How the lease step ended.
enum Leased {
    /// An entry to answer, found in Redis.
    Found(CacheEntry),
    /// This origin holds the lease: it loads.
    Holder(Lease),
    /// Load without the lease.
    Direct,
}

impl ReadThrough {
    /// The single-flight work for `id`: see the module documentation. `via_redis` is false when the
    /// request's own Redis read failed (no lease is tried then). Returns the answer and the tail to run
    /// after it.
    pub(super) async fn load(&self, id: UserId, seen: Seen, via_redis: bool) -> (Loaded, Tail) {
        let inner = &*self.inner;
        // While PostgreSQL's breaker is open there is nothing to coordinate: the query is refused (or
        // is the breaker's probe), so skip the lease's round trips.
        let mut lease = None;
        if via_redis && !inner.db.is_open() {
            match self.lease_or_wait(id, seen).await {
                Leased::Found(entry) => return (Ok(answer_of(entry)), no_tail()),
                Leased::Holder(held) => lease = Some(held),
                Leased::Direct => {}
            }
        }
        let (loaded, fill) = self.query(id).await;
        // With the cache off there is nothing to fill: no tail, so the next read of the id queries
        // PostgreSQL again instead of sharing this load while a fill that cannot happen runs.
        let fill = fill.filter(|_| !inner.cache.is_disabled());
        if fill.is_none() && lease.is_none() {
            return (loaded, no_tail());
        }
        // Counted before the answer goes out, so "no fill pending" after an answer means it landed.
        let pending = crate::metrics::PendingFill::start();
        let this = self.clone();
        let tail = async move {
            let _pending = pending;
            if let Some(entry) = fill {
                this.fill(id, entry).await;
            }
            // Only after the fill: an origin polling for it finds it before it could take the lease.
            if let Some(lease) = lease {
                this.release(lease).await;
            }
        };
        (loaded, tail.boxed())
    }

    /// Releases `lease` after the answer has gone: the readers waiting for it look for the fill in
    /// Redis and find it without the lease being released, so the release is not on the request's
    /// path (one round trip less per miss). A release that fails leaves the lease to expire.
    fn release_later(&self, lease: Lease) {
        let this = self.clone();
        tokio::spawn(async move { this.release(lease).await });
    }

    async fn release(&self, lease: Lease) {
        if let Err(e) = self.inner.cache.release(&lease).await {
            tracing::debug!(id = %lease.id, error = %e, "lease release failed; it expires by itself");
        }
    }

    async fn lease_or_wait(&self, id: UserId, seen: Seen) -> Leased {
        let inner = &*self.inner;
        let settings = &inner.settings;
        let deadline = Instant::now() + settings.lease_wait;
        loop {
            match inner.cache.try_lease_and_look(id, settings.lease_ttl).await {
                Ok(Some((lease, found))) => {
                    // Another origin may have filled the key between our read and the lease (or a
                    // request of this origin that missed just before a load finished arrives here after
                    // it): the look taken with the lease, in the same atomic step, says so, so a burst
                    // of misses costs one query however it interleaves.
                    if let Lookup::Hit(entry) = found
                        && supersedes(&entry, seen, crate::clock::now_ms())
                    {
                        crate::metrics::lease("found");
                        self.release_later(lease);
                        return Leased::Found(entry);
                    }
                    crate::metrics::lease("acquired");
                    return Leased::Holder(lease);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%id, error = %e, "no lease: Redis did not answer");
                    crate::metrics::lease("unavailable");
                    return Leased::Direct;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                crate::metrics::lease("fallback");
                return Leased::Direct;
            }
            tokio::time::sleep(settings.lease_poll.min(deadline - now)).await;
            match inner.cache.get(id).await {
                Lookup::Hit(entry) if supersedes(&entry, seen, crate::clock::now_ms()) => {
                    crate::metrics::lease("waited");
                    return Leased::Found(entry);
                }
                Lookup::Unavailable(_) => {
                    crate::metrics::lease("unavailable");
                    return Leased::Direct;
                }
                Lookup::Hit(_) | Lookup::Miss => {}
            }
        }
    }

    /// One PostgreSQL read for `id`: the answer, and the entry to fill with it (the row with its
    /// freshness: a jittered soft TTL from now, and the read's duration as XFetch's delta; or a "missing"
    /// marker), none when the read failed.
    async fn query(&self, id: UserId) -> (Loaded, Option<CacheEntry>) {
        let inner = &*self.inner;
        let started = Instant::now();
        let row = match inner
            .db
            .run(crate::db::profile_by_id(&inner.pool, id))
            .await
        {
            Ok(row) => row,
            Err(e) => return (Err(self.failure(id, &e)), None),
        };
        // Delays the answer and the fill alike (the fill comes after the answer).
        #[cfg(feature = "test-hooks")]
        if let Some(delay) = crate::test_hooks::fill_delay() {
            tokio::time::sleep(delay).await;
        }
        let row = row.map(|profile| inner.cache.stamp(profile, started.elapsed()));
        let entry = match &row {
            Some(cached) => CacheEntry::Present(cached.clone()),
            None => CacheEntry::missing(crate::clock::now_ms()),
        };
        (Ok(row), Some(entry))
    }

    /// The fill of a load's `entry`, after its answer. A failed fill is logged and counted, never
    /// returned: the reader already has its answer. After a "missing" marker, the re-check.
    async fn fill(&self, id: UserId, entry: CacheEntry) {
        #[cfg(feature = "test-hooks")]
        if let Some(lag) = crate::test_hooks::fill_lag() {
            tokio::time::sleep(lag).await;
        }
        let stored = self.inner.cache.store_if_newer(id, &entry).await;
        crate::metrics::cache_fill(Stored::label(&stored));
        match stored {
            Ok(Stored::Written) if matches!(entry, CacheEntry::Missing(_)) => {
                self.recheck_after_missing(id).await
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%id, error = %e, "cache fill skipped"),
        }
    }

    /// Closes the race between caching "missing" and a row created meanwhile outside the API: change
    /// capture writes a created row only over an existing entry, so a marker written after it looked would
    /// hide the row for the marker's TTL. Reading again after the marker is in place catches any row
    /// committed before now; any row committed later finds the marker and replaces it.
    async fn recheck_after_missing(&self, id: UserId) {
        let inner = &*self.inner;
        let started = Instant::now();
        match inner
            .db
            .run(crate::db::profile_by_id(&inner.pool, id))
            .await
        {
            Ok(Some(created)) => {
                let created = inner.cache.stamp(created, started.elapsed());
                if let Err(e) = inner
                    .cache
                    .store_if_newer(id, &CacheEntry::Present(created))
                    .await
                {
                    tracing::debug!(%id, error = %e, "cache fill skipped");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(%id, error = %e, "re-check after caching missing failed"),
        }
    }
}

fn answer_of(entry: CacheEntry) -> Option<CachedProfile> {
    match entry {
        CacheEntry::Present(profile) => Some(profile),
        CacheEntry::Missing(_) | CacheEntry::Deleted(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aside_shared::Freshness;
    use aside_shared::cache::Absence;

    fn profile(version: i64, fresh_until_ms: Option<i64>) -> CacheEntry {
        let id = UserId::parse("7").unwrap();
        CacheEntry::Present(CachedProfile {
            profile: aside_shared::UserProfile {
                id,
                full_name: aside_shared::FullName::parse("Ana Silva").unwrap(),
                gender: aside_shared::Gender::parse("F").unwrap(),
                birth_date: aside_shared::BirthDate::parse("1990-01-01").unwrap(),
                department: aside_shared::Department::parse("Sales").unwrap(),
                email: aside_shared::Email::parse("ana.silva@example.org").unwrap(),
                username: aside_shared::Username::parse("ana.silva").unwrap(),
            },
            version,
            filled_at_ms: 0,
            freshness: fresh_until_ms.map(|fresh_until_ms| Freshness {
                fresh_until_ms,
                delta_ms: 5,
            }),
        })
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn after_a_miss_any_usable_entry_will_do() {
        assert!(supersedes(&profile(1, Some(NOW + 1)), Seen::Nothing, NOW));
        assert!(
            supersedes(&profile(1, None), Seen::Nothing, NOW),
            "unknown = fresh"
        );
        let marker = CacheEntry::missing(NOW);
        assert!(supersedes(&marker, Seen::Nothing, NOW));
        assert!(
            !supersedes(&profile(1, Some(NOW)), Seen::Nothing, NOW),
            "a stale copy is no answer"
        );
    }

    #[test]
    fn a_refresh_takes_only_a_newer_version_or_a_later_refresh() {
        let seen = Seen::Profile {
            version: 3,
            fresh_until_ms: Some(NOW - 10),
        };
        assert!(
            !supersedes(&profile(3, Some(NOW - 10)), seen, NOW),
            "the copy it saw"
        );
        assert!(
            supersedes(&profile(3, Some(NOW + 5_000)), seen, NOW),
            "refreshed"
        );
        assert!(
            supersedes(&profile(4, Some(NOW + 5_000)), seen, NOW),
            "newer"
        );
        assert!(
            !supersedes(&profile(4, Some(NOW - 1)), seen, NOW),
            "newer but stale"
        );
        assert!(
            !supersedes(&profile(2, Some(NOW + 5_000)), seen, NOW),
            "older"
        );
        let tombstone = CacheEntry::Deleted(Absence {
            version: 3,
            filled_at_ms: NOW,
        });
        assert!(supersedes(&tombstone, seen, NOW), "deleted since");

        // A forced reload of a fresh copy: the same copy does not count, a later refresh does.
        let fresh = Seen::Profile {
            version: 3,
            fresh_until_ms: Some(NOW + 1_000),
        };
        assert!(!supersedes(&profile(3, Some(NOW + 1_000)), fresh, NOW));
        assert!(supersedes(&profile(3, Some(NOW + 1_001)), fresh, NOW));
        assert!(!supersedes(&profile(3, None), fresh, NOW));
    }
}
