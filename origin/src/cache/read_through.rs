//! The read-through policy of `GET /users/{id}`: one [`ReadThrough`] per process owns the whole read
//! (after the model of pingora-memory-cache's `RTCache`): the Redis lookup, the freshness decision,
//! XFetch early refresh, single-flight coalescing, the fill lease across origins, the PostgreSQL load,
//! the fill, and the fallback to a cached copy. It answers the copy (or "absent") with a
//! [`CacheStatus`], or a [`ReadError`]; turning either into an HTTP response is the caller's business.
//!
//! * Fresh copy in Redis: `HIT`, unless XFetch picks this read to refresh it early (it then answers the
//!   refreshed value, still `HIT`).
//! * Soft-expired copy, or a forced reload: refreshed from PostgreSQL (`MISS`), or the copy served
//!   (`STALE`, or `HIT` while still fresh) if PostgreSQL fails or does not answer within `refresh_wait`.
//! * No copy: loaded (`MISS`), or [`ReadError`] if PostgreSQL cannot answer.
//! * A cached "missing" marker or tombstone: absent, `HIT`, without PostgreSQL.
//!
//! Every load is coalesced per id in the origin ([`crate::singleflight`]) and, through the fill lease,
//! across origins ([`load`]); its fill runs after its answer, off the request's path. A failed load is logged once, where it fails ([`ReadThrough::failure`]),
//! and every read is counted by its result ([`crate::metrics::cache_result`]) where it is decided.

mod load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aside_shared::cache::{CacheEntry, CachedProfile, Freshness, Projection};
use aside_shared::headers::{CacheStatus, ServerTiming};
use aside_shared::{FieldSelection, UserId};
use deadpool_postgres::Pool;

use super::{Lookup, ProfileCache};
use crate::clock::now_ms;
use crate::db::DbError;
use crate::db::guard::DbGuard;
use crate::singleflight::{Join, Role, SingleFlight};
use load::Seen;

/// The read path's settings (the flags are `ResilienceArgs` in `config`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadPath {
    /// XFetch's beta; 0 turns early refresh off.
    pub xfetch_beta: f64,
    /// How long a request holding a cached copy waits for its refresh before answering the copy.
    pub refresh_wait: Duration,
    /// Lifetime of a fill lease.
    pub lease_ttl: Duration,
    /// How long an origin without the lease waits for the holder's fill.
    pub lease_wait: Duration,
    /// How often it looks.
    pub lease_poll: Duration,
}

impl Default for ReadPath {
    /// The defaults of the command line.
    fn default() -> Self {
        Self {
            xfetch_beta: 1.0,
            refresh_wait: Duration::from_millis(1000),
            lease_ttl: Duration::from_millis(2000),
            lease_wait: Duration::from_millis(500),
            lease_poll: Duration::from_millis(20),
        }
    }
}

/// A profile as the read answers it: the body (whole or projected to the `?fields` selection), its
/// version and its freshness.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileCopy {
    pub body: serde_json::Value,
    pub version: i64,
    pub freshness: Option<Freshness>,
}

impl ProfileCopy {
    /// `cached` as an answer, projected to `selection` if there is one.
    pub fn of(cached: &CachedProfile, selection: Option<&FieldSelection>) -> Self {
        Self {
            body: match selection {
                Some(sel) => sel.project(&cached.profile),
                None => serde_json::to_value(&cached.profile).expect("profiles serialise"),
            },
            version: cached.version,
            freshness: cached.freshness,
        }
    }
}

/// What a read found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Profile(ProfileCopy),
    /// No such user: a cached "missing" marker or tombstone (`HIT`), or PostgreSQL said so (`MISS`).
    Absent,
}

/// A read's outcome: the answer, where it came from, and the time spent per tier (`redis`, `db`).
#[derive(Debug)]
pub struct Read {
    pub answer: Answer,
    pub status: CacheStatus,
    pub timing: ServerTiming,
}

/// Why a read has no answer: PostgreSQL was needed and could not give one. Already logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// PostgreSQL is down, too slow, or skipped by its open circuit breaker: retry later.
    #[error("PostgreSQL is unavailable")]
    Unavailable,
    /// PostgreSQL answered with something unusable (an invalid row, a failed query).
    #[error("the profile query failed")]
    Failed,
}

impl From<&DbError> for ReadError {
    fn from(e: &DbError) -> Self {
        match e {
            DbError::Unavailable(_) => ReadError::Unavailable,
            DbError::InvalidRow { .. } | DbError::Other(_) => ReadError::Failed,
        }
    }
}

/// One coalesced PostgreSQL load, shared by the reads that waited for it.
type Loaded = Result<Option<CachedProfile>, ReadError>;

/// Why a read asks for a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Redis has nothing (or something unusable).
    Miss,
    /// Redis could not be read.
    NoRedis,
    /// A soft-expired copy: refresh it; serve it STALE if PostgreSQL cannot answer.
    Stale,
    /// A fresh copy chosen by XFetch: refresh it now; serve the copy if the refresh fails.
    Early,
    /// `cache-control: no-cache` on the request.
    Reload,
}

/// What to do with a profile copy found in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Answer it (`HIT`).
    Serve,
    /// Refresh it from PostgreSQL first, falling back on it if the refresh fails or is late.
    Refresh(Reason),
}

/// The freshness decision for a copy found in Redis. A copy of unknown freshness (written by an older
/// origin) counts as fresh and is never refreshed early; `early` is asked only about a fresh copy
/// (XFetch, see [`Freshness::refresh_early`]).
pub(crate) fn decide(
    freshness: Option<Freshness>,
    now_ms: i64,
    reload: bool,
    early: impl FnOnce(Freshness) -> bool,
) -> Decision {
    if reload {
        return Decision::Refresh(Reason::Reload);
    }
    match freshness {
        None => Decision::Serve,
        Some(f) if !f.is_fresh(now_ms) => Decision::Refresh(Reason::Stale),
        Some(f) if early(f) => Decision::Refresh(Reason::Early),
        Some(_) => Decision::Serve,
    }
}

/// The status (and the `cache_result` label) of an answer refreshed from PostgreSQL: an early refresh
/// of a fresh copy is still a `HIT`.
pub(crate) fn refreshed_status(reason: Reason) -> (CacheStatus, &'static str) {
    if reason == Reason::Early {
        (CacheStatus::Hit, "hit")
    } else {
        (CacheStatus::Miss, "refreshed")
    }
}

/// The status (and label) of a cached copy answered because its refresh failed or is late: `HIT` while
/// still fresh, else `STALE`.
pub(crate) fn fallback_status(
    freshness: Option<Freshness>,
    now_ms: i64,
) -> (CacheStatus, &'static str) {
    if freshness.is_none_or(|f| f.is_fresh(now_ms)) {
        (CacheStatus::Hit, "hit")
    } else {
        (CacheStatus::Stale, "stale")
    }
}

/// How a read uses Redis ([`ReadThrough::get`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Redis first, PostgreSQL on a miss.
    Plain,
    /// A cached copy is refreshed from PostgreSQL (`cache-control: no-cache`).
    Reload,
    /// The caller found no entry in Redis just before (`x-aside-redis: miss`): straight to the load.
    AfterMiss,
}

/// The read path of one process; cheap to clone (the load's task holds a clone).
#[derive(Clone)]
pub struct ReadThrough {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Arc<ProfileCache>,
    pool: Pool,
    /// PostgreSQL's circuit breaker and deadline, shared with the writes.
    db: Arc<DbGuard>,
    settings: ReadPath,
    loads: SingleFlight<UserId, Loaded>,
}

impl ReadThrough {
    pub fn new(cache: Arc<ProfileCache>, pool: Pool, db: Arc<DbGuard>, settings: ReadPath) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache,
                pool,
                db,
                settings,
                loads: SingleFlight::default(),
            }),
        }
    }

    /// Reads profile `id` (projected to `selection`), Redis first; [`ReadMode::Reload`]
    /// (`cache-control: no-cache`) refreshes a cached copy from PostgreSQL; [`ReadMode::AfterMiss`]
    /// goes straight to the load, whose lease is taken with a look at Redis in one step. See the
    /// module documentation.
    pub async fn get(
        &self,
        id: UserId,
        selection: Option<&FieldSelection>,
        mode: ReadMode,
    ) -> Result<Read, ReadError> {
        let mut timing = ServerTiming::new();
        let reload = mode == ReadMode::Reload;
        let join = if reload { Join::Unanswered } else { Join::Any };
        if mode == ReadMode::AfterMiss {
            // The caller's look a moment ago is this read's: one Redis round trip less. A fill that
            // landed since is found by the look taken with the lease, and answered.
            crate::metrics::cache_result("miss");
            return self
                .load_uncached(id, selection, Reason::Miss, timing, Join::Any)
                .await;
        }
        let started = Instant::now();
        let cached = self.lookup(id, selection).await;
        timing.add("redis", ms_since(started));
        let now = now_ms();
        let (reason, copy) = match cached {
            Lookup::Hit(Answer::Absent) => {
                crate::metrics::cache_result("hit");
                return Ok(Read {
                    answer: Answer::Absent,
                    status: CacheStatus::Hit,
                    timing,
                });
            }
            Lookup::Hit(Answer::Profile(copy)) => {
                let early = |f: Freshness| {
                    // refresh_early wants u in (0, 1]; random() is in [0, 1).
                    !self.inner.db.rejects_now()
                        && f.refresh_early(
                            now,
                            self.inner.settings.xfetch_beta,
                            1.0 - rand::random::<f64>(),
                        )
                };
                match decide(copy.freshness, now, reload, early) {
                    Decision::Serve => {
                        crate::metrics::cache_result("hit");
                        return Ok(Read {
                            answer: Answer::Profile(copy),
                            status: CacheStatus::Hit,
                            timing,
                        });
                    }
                    Decision::Refresh(reason) => {
                        if reason == Reason::Early {
                            crate::metrics::early_refresh();
                        }
                        (reason, copy)
                    }
                }
            }
            Lookup::Miss => {
                crate::metrics::cache_result("miss");
                return self
                    .load_uncached(id, selection, Reason::Miss, timing, join)
                    .await;
            }
            Lookup::Unavailable(_) => {
                crate::metrics::cache_result("error");
                return self
                    .load_uncached(id, selection, Reason::NoRedis, timing, join)
                    .await;
            }
        };
        Ok(self
            .refresh(id, selection, reason, copy, timing, join)
            .await)
    }

    /// The Redis read: `HGETALL` for the whole profile, `HMGET` of the selected fields for `?fields`.
    async fn lookup(&self, id: UserId, selection: Option<&FieldSelection>) -> Lookup<Answer> {
        match selection {
            Some(sel) => self.inner.cache.get_fields(id, sel).await.map(|p| match p {
                Projection::Present {
                    body,
                    version,
                    freshness,
                } => Answer::Profile(ProfileCopy {
                    body,
                    version,
                    freshness,
                }),
                Projection::Absent => Answer::Absent,
            }),
            None => self.inner.cache.get(id).await.map(|entry| match entry {
                CacheEntry::Present(c) => Answer::Profile(ProfileCopy::of(&c, None)),
                CacheEntry::Missing(_) | CacheEntry::Deleted(_) => Answer::Absent,
            }),
        }
    }

    /// A copy in hand: refresh it, waiting only `refresh_wait` for the load (which loads in flight it
    /// may share: `join`), else answer the copy.
    async fn refresh(
        &self,
        id: UserId,
        selection: Option<&FieldSelection>,
        reason: Reason,
        copy: ProfileCopy,
        mut timing: ServerTiming,
        join: Join,
    ) -> Read {
        // PostgreSQL's breaker is open: answer the copy now rather than wait behind a load that
        // started before it opened.
        if self.inner.db.rejects_now() {
            return fallback(copy, timing);
        }
        let seen = Seen::Profile {
            version: copy.version,
            fresh_until_ms: copy.freshness.map(|f| f.fresh_until_ms),
        };
        let started = Instant::now();
        let refreshed = tokio::time::timeout(
            self.inner.settings.refresh_wait,
            self.coalesced_load(id, seen, true, join),
        )
        .await;
        timing.add("db", ms_since(started));
        match refreshed {
            Ok(Ok(Some(loaded))) => {
                let (status, label) = refreshed_status(reason);
                crate::metrics::cache_result(label);
                Read {
                    answer: Answer::Profile(ProfileCopy::of(&loaded, selection)),
                    status,
                    timing,
                }
            }
            // Deleted meanwhile: PostgreSQL (or a tombstone written since) says so.
            Ok(Ok(None)) => Read {
                answer: Answer::Absent,
                status: CacheStatus::Miss,
                timing,
            },
            Ok(Err(e)) => {
                tracing::debug!(%id, ?reason, error = %e, "refresh failed; answering the cached copy");
                fallback(copy, timing)
            }
            Err(_) => {
                tracing::debug!(%id, ?reason, "refresh still running; answering the cached copy");
                fallback(copy, timing)
            }
        }
    }

    /// A miss (or no Redis): the read has nothing to fall back on and waits for the load (bounded by
    /// the PostgreSQL deadline and the request timeout).
    async fn load_uncached(
        &self,
        id: UserId,
        selection: Option<&FieldSelection>,
        reason: Reason,
        mut timing: ServerTiming,
        join: Join,
    ) -> Result<Read, ReadError> {
        if self.inner.db.rejects_now() {
            let skipped = DbError::Unavailable(crate::db::guard::SKIPPED.into());
            return Err(self.failure(id, &skipped));
        }
        let started = Instant::now();
        let loaded = self
            .coalesced_load(id, Seen::Nothing, reason != Reason::NoRedis, join)
            .await;
        timing.add("db", ms_since(started));
        let answer = match loaded? {
            Some(loaded) => Answer::Profile(ProfileCopy::of(&loaded, selection)),
            None => Answer::Absent,
        };
        Ok(Read {
            answer,
            status: CacheStatus::Miss,
            timing,
        })
    }

    /// The id's load, shared by every concurrent read of this origin (see [`load`]): answered as soon as
    /// PostgreSQL has, while its fill still runs (a read arriving before the fill ends shares it too).
    ///
    /// `join`: a reload ([`Join::Unanswered`]) never shares a load that has already answered and is
    /// only filling: its PostgreSQL read may predate a write the caller has already seen (an edge
    /// asks for a reload when a tier gave it a version older than one it served).
    async fn coalesced_load(&self, id: UserId, seen: Seen, via_redis: bool, join: Join) -> Loaded {
        let this = self.clone();
        let (loaded, role) = self
            .inner
            .loads
            .run_joining(id, join, move || async move {
                this.load(id, seen, via_redis).await
            })
            .await;
        if role == Role::Follower {
            crate::metrics::coalesced();
        }
        loaded
    }

    /// The one place a read's PostgreSQL failure is logged; the reads that share the load get the
    /// typed error only.
    fn failure(&self, id: UserId, e: &DbError) -> ReadError {
        e.log(id);
        ReadError::from(e)
    }
}

/// The cached copy, when its refresh failed or is late (see [`fallback_status`]).
fn fallback(copy: ProfileCopy, timing: ServerTiming) -> Read {
    let (status, label) = fallback_status(copy.freshness, now_ms());
    crate::metrics::cache_result(label);
    Read {
        answer: Answer::Profile(copy),
        status,
        timing,
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn fresh_until(fresh_until_ms: i64) -> Option<Freshness> {
        Some(Freshness {
            fresh_until_ms,
            delta_ms: 50,
        })
    }

    fn never_early(_: Freshness) -> bool {
        false
    }

    #[test]
    fn a_fresh_copy_is_served_unless_xfetch_picks_it() {
        let fresh = fresh_until(NOW + 60_000);
        assert_eq!(decide(fresh, NOW, false, never_early), Decision::Serve);
        assert_eq!(
            decide(fresh, NOW, false, |_| true),
            Decision::Refresh(Reason::Early)
        );
    }

    #[test]
    fn a_soft_expired_copy_is_refreshed_without_asking_xfetch() {
        let asked = std::cell::Cell::new(false);
        let early = |_| {
            asked.set(true);
            false
        };
        assert_eq!(
            decide(fresh_until(NOW), NOW, false, early),
            Decision::Refresh(Reason::Stale),
            "fresh until now = stale now"
        );
        assert!(!asked.get());
        assert_eq!(
            decide(fresh_until(NOW - 1), NOW, false, never_early),
            Decision::Refresh(Reason::Stale)
        );
    }

    #[test]
    fn a_reload_refreshes_any_copy() {
        for freshness in [fresh_until(NOW + 60_000), fresh_until(NOW - 1), None] {
            assert_eq!(
                decide(freshness, NOW, true, never_early),
                Decision::Refresh(Reason::Reload),
                "{freshness:?}"
            );
        }
    }

    #[test]
    fn a_copy_of_unknown_freshness_counts_as_fresh_and_is_never_refreshed_early() {
        assert_eq!(decide(None, NOW, false, |_| true), Decision::Serve);
    }

    #[test]
    fn xfetch_refreshes_early_only_near_the_expiry() {
        // With the real XFetch draw: far from the soft expiry even the luckiest draw serves, right
        // before it a typical one refreshes.
        let xfetch = |unit: f64| move |f: Freshness| f.refresh_early(NOW, 1.0, unit);
        assert_eq!(
            decide(fresh_until(NOW + 3_600_000), NOW, false, xfetch(1e-9)),
            Decision::Serve
        );
        assert_eq!(
            decide(fresh_until(NOW + 1), NOW, false, xfetch(0.5)),
            Decision::Refresh(Reason::Early)
        );
    }

    #[test]
    fn a_refreshed_answer_is_a_miss_except_after_an_early_refresh() {
        assert_eq!(refreshed_status(Reason::Early), (CacheStatus::Hit, "hit"));
        for reason in [Reason::Stale, Reason::Reload, Reason::Miss] {
            assert_eq!(
                refreshed_status(reason),
                (CacheStatus::Miss, "refreshed"),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn a_copy_whose_refresh_failed_is_a_hit_while_fresh_then_stale() {
        assert_eq!(
            fallback_status(fresh_until(NOW + 1), NOW),
            (CacheStatus::Hit, "hit")
        );
        assert_eq!(fallback_status(None, NOW), (CacheStatus::Hit, "hit"));
        assert_eq!(
            fallback_status(fresh_until(NOW), NOW),
            (CacheStatus::Stale, "stale")
        );
    }

    #[test]
    fn only_an_outage_is_a_retryable_read_error() {
        assert_eq!(
            ReadError::from(&DbError::Unavailable("down".into())),
            ReadError::Unavailable
        );
        assert_eq!(
            ReadError::from(&DbError::Other("syntax".into())),
            ReadError::Failed
        );
    }
}
