//! The read path of `GET /users/{id}`: tier 1, then tier 2, then the origin, then a stale copy.
//!
//! Tier 1 is checked by every request. Requests that miss it and want the same thing (same id, same
//! projection) share one tier-2/origin lookup ([`crate::flight`]). Tier 1 is filled only with full
//! profiles: a full Redis hit, or a `200` full-profile origin answer that parses as a profile.
//! A projection is answered from a tier-1 full entry when there is one, but never fills tier 1.
//!
//! Freshness. A copy is *fresh* until its soft expiry (the hash's `_fresh_until`, or the origin's
//! `max-age`; tier 1 also never longer than `l1_ttl_ms`), then *stale* until its hard expiry (Redis's
//! TTL; in tier 1, `l1_stale_ms` or the origin's `stale-if-error`). A fresh copy is answered as it is
//! (`L1`, `L2`); a stale one is not, the origin is asked, and only if the origin cannot answer (no
//! answer in time, cannot connect, a 5xx, its breaker open) is the newest stale copy answered with
//! `x-cache: STALE`. Without one, the answer is the origin's own 5xx or a 503 with `Retry-After`. A 404
//! from the origin is an answer, not a failure; an origin answer that is itself `x-cache: STALE` is
//! passed on as `STALE` and not kept as fresh.
//!
//! Early refresh (XFetch). On a fresh tier-1 or tier-2 hit, [`Freshness::refresh_early`] decides with
//! the *shared* soft expiry (the one in Redis, the same on every edge instance, not tier 1's own short
//! TTL) and a random `u` per request: as the soft expiry nears, one request now and then asks the origin
//! for a reload from PostgreSQL (`cache-control: no-cache`) and answers the new value (`x-cache: MISS`),
//! or its cached copy if the refresh fails. So a hot key is reloaded before it expires instead of every
//! edge missing at once. One refresh per id runs at a time in an instance; other requests keep hitting.
//!
//! Every `200` carries the row version as `etag`. Before one that did not come from tier 1 is served,
//! tier 1 checks it against the newest version this instance has served or written
//! ([`crate::l1::Tier1::observe`]): an older one (a lookup that read the row before a write and came back
//! late) is replaced by tier 1's newer profile, by a 404 if this instance deleted the row, or else looked
//! up again, this time from PostgreSQL through the origin (`cache-control: no-cache`), never from
//! tier 2 again: the Redis node an edge reads may be a replica that lags behind (see
//! docs/consistency.md), and would give the same old version. So versions never go backwards on one
//! instance.

use std::rc::Rc;

use aside_shared::cache::Freshness;
use aside_shared::headers::{CacheStatus, ServerTiming};
use aside_shared::{ApiError, Field, FieldSelection, UserId, UserProfile};
use bytes::Bytes;

use crate::clock::{self, Deadline};
use crate::forward::{OriginAnswer, OriginRequest, Unavailable};
use crate::handler::{Edge, Reply};
use crate::l1::{Observed, ProfileEntry, Shelf};
use crate::l2::Read;
use crate::routes::fields_query;

/// What one shared lookup found, with the time each tier took.
#[derive(Debug)]
pub struct Fetched {
    l2_ms: Option<f64>,
    origin_ms: Option<f64>,
    answer: Answer,
}

#[derive(Debug)]
enum Answer {
    /// A fresh full profile: from Redis (`L2`), tier 1 (`L1`) or an early refresh (`MISS`).
    Cached {
        entry: ProfileEntry,
        source: CacheStatus,
    },
    /// A fresh `?fields` projection from Redis, serialised, and the version it was taken from.
    Projection(Bytes, i64),
    /// The origin's answer, passed on as it is (a profile, a projection, a 404, an error...); `STALE`
    /// when the origin says so.
    Origin(OriginAnswer),
    /// The origin could not answer; a copy past its soft expiry is answered instead (`STALE`).
    Stale(StaleCopy),
    /// The origin could not answer and there is no copy: 503 with this `Retry-After`.
    Unavailable(u32),
    /// Redis holds a "missing" marker or a tombstone for the id: 404 without asking the origin.
    NotFound,
}

/// A soft-expired copy kept for stale-if-error.
#[derive(Debug, Clone)]
enum StaleCopy {
    Profile(ProfileEntry),
    Projection(Bytes, i64),
}

impl StaleCopy {
    fn version(&self) -> i64 {
        match self {
            StaleCopy::Profile(entry) => entry.version,
            StaleCopy::Projection(_, version) => *version,
        }
    }
}

impl Fetched {
    /// The row version of a `200` profile answer (full or projection), when it has one.
    fn version(&self) -> Option<i64> {
        match &self.answer {
            Answer::Cached { entry, .. } => Some(entry.version),
            Answer::Projection(_, version) => Some(*version),
            Answer::Origin(answer) if answer.status == http::StatusCode::OK => answer.version(),
            Answer::Stale(copy) => Some(copy.version()),
            Answer::Origin(_) | Answer::Unavailable(_) | Answer::NotFound => None,
        }
    }
}

/// How many lookups one request makes at most when each comes back older than what this instance
/// served before. A lookup that starts after a version was served finds it or a newer one (Redis and
/// PostgreSQL only move forward), so the second normally settles it.
const MAX_LOOKUPS: u32 = 3;

/// What a lookup is for: requests with equal keys share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlightKey {
    id: UserId,
    /// `None` for the full profile, else one bit per selected field.
    fields: Option<u8>,
    /// Skip tier 2 and have the origin reload from PostgreSQL (a lookup found an old version).
    reload: bool,
}

impl FlightKey {
    fn new(id: UserId, selection: Option<&FieldSelection>) -> Self {
        let fields = selection.map(|s| {
            s.fields().iter().fold(0u8, |bits, f| {
                bits | 1 << Field::ALL.iter().position(|a| a == f).unwrap_or(7)
            })
        });
        Self {
            id,
            fields,
            reload: false,
        }
    }
}

/// Answers `GET /users/{id}[?fields=...]` by `deadline`.
pub async fn serve(
    edge: &Rc<Edge>,
    id: UserId,
    selection: Option<FieldSelection>,
    deadline: Deadline,
) -> Reply {
    let mut timing = ServerTiming::new();
    let started = clock::now();
    let hit = edge.l1.borrow_mut().get(&id, started);
    timing.add("l1", clock::millis_since(started));
    if let Some(hit) = hit {
        if due_for_early_refresh(edge, hit.shared)
            && let Some(_refreshing) = Refreshing::start(edge, id)
        {
            return refresh_l1_hit(edge, id, selection.as_ref(), hit.entry, deadline, timing).await;
        }
        return profile_reply(&hit.entry, selection.as_ref(), CacheStatus::L1, timing);
    }

    let mut key = FlightKey::new(id, selection.as_ref());
    let mut lookups = 0;
    loop {
        lookups += 1;
        let reload = key.reload;
        let (fetched, _role) = edge
            .flights
            .run(key.clone(), || {
                fetch(Rc::clone(edge), id, selection.clone(), reload, deadline)
            })
            .await;
        // A follower reports the tiers of the lookup it shared.
        if let Some(ms) = fetched.l2_ms {
            timing.add("l2", ms);
        }
        if let Some(ms) = fetched.origin_ms {
            timing.add("origin", ms);
        }
        if let Some(version) = fetched.version() {
            let observed = edge.l1.borrow_mut().observe(id, version, clock::now());
            match observed {
                Observed::Current => {}
                Observed::Newer(entry) => {
                    return profile_reply(&entry, selection.as_ref(), CacheStatus::L1, timing);
                }
                Observed::Deleted => {
                    return Reply::error(&ApiError::user_not_found(id), CacheStatus::L1)
                        .timing(timing);
                }
                Observed::Stale if lookups < MAX_LOOKUPS && !deadline.remaining().is_zero() => {
                    // Tier 2 (a lagging replica) or a slow lookup gave an old version: ask
                    // PostgreSQL through the origin, which only moves forward.
                    key.reload = true;
                    continue;
                }
                Observed::Stale => eprintln!(
                    "aside-edge: user {id}: {lookups} lookups found version {version}, older than \
                     one this instance served; answering with it"
                ),
            }
        }
        return fetched_reply(&fetched, id, selection.as_ref(), timing);
    }
}

/// An early refresh of a fresh tier-1 hit: the new value if the origin gives one, else the hit.
async fn refresh_l1_hit(
    edge: &Rc<Edge>,
    id: UserId,
    selection: Option<&FieldSelection>,
    held: ProfileEntry,
    deadline: Deadline,
    mut timing: ServerTiming,
) -> Reply {
    let (refreshed, origin_ms) = early_refresh(edge, id, deadline).await;
    if let Some(ms) = origin_ms {
        timing.add("origin", ms);
    }
    match refreshed {
        Some(Refreshed::Profile(entry)) => {
            let observed = edge
                .l1
                .borrow_mut()
                .observe(id, entry.version, clock::now());
            match observed {
                Observed::Current => profile_reply(&entry, selection, CacheStatus::Miss, timing),
                Observed::Newer(newer) => profile_reply(&newer, selection, CacheStatus::L1, timing),
                Observed::Deleted => {
                    Reply::error(&ApiError::user_not_found(id), CacheStatus::L1).timing(timing)
                }
                Observed::Stale => profile_reply(&held, selection, CacheStatus::L1, timing),
            }
        }
        Some(Refreshed::Gone(answer)) => {
            Reply::from_origin(&answer, CacheStatus::Miss).timing(timing)
        }
        None => profile_reply(&held, selection, CacheStatus::L1, timing),
    }
}

/// Whether XFetch picks this hit for an early refresh, by the shared soft expiry (a copy without one
/// is never refreshed early: its tier-1 TTL ends it).
fn due_for_early_refresh(edge: &Edge, shared: Option<Freshness>) -> bool {
    let beta = edge.config.xfetch_beta;
    beta > 0.0
        && shared.is_some_and(|f| f.refresh_early(clock::wall_ms(), beta, clock::unit_random()))
}

/// The ids this instance is refreshing early: one refresh per id at a time; while it runs, other
/// requests for the id are answered from the cache as usual. Released when dropped (also when the
/// refreshing request is cancelled).
struct Refreshing {
    edge: Rc<Edge>,
    id: UserId,
}

impl Refreshing {
    fn start(edge: &Rc<Edge>, id: UserId) -> Option<Self> {
        edge.refreshing.borrow_mut().insert(id).then(|| Self {
            edge: Rc::clone(edge),
            id,
        })
    }
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.edge.refreshing.borrow_mut().remove(&self.id);
    }
}

/// What an early refresh brought back.
enum Refreshed {
    /// The reloaded profile (tier 1 has it now).
    Profile(ProfileEntry),
    /// The origin says the id has no profile (deleted meanwhile): its 404, passed on.
    Gone(OriginAnswer),
}

/// Asks the origin to reload the full profile from PostgreSQL. `None` if it could not (the caller
/// answers with its fresh copy); the origin's time when it was asked.
async fn early_refresh(
    edge: &Rc<Edge>,
    id: UserId,
    deadline: Deadline,
) -> (Option<Refreshed>, Option<f64>) {
    let (outcome, origin_ms) = ask_origin(edge, id, None, true, deadline).await;
    let refreshed = match outcome {
        Outcome::Answer(_, Some(entry)) => Some(Refreshed::Profile(entry)),
        Outcome::Answer(answer, None) if answer.status == http::StatusCode::NOT_FOUND => {
            edge.l1.borrow_mut().remove(&id);
            Some(Refreshed::Gone(answer))
        }
        _ => None,
    };
    (refreshed, origin_ms)
}

fn fetched_reply(
    fetched: &Fetched,
    id: UserId,
    selection: Option<&FieldSelection>,
    timing: ServerTiming,
) -> Reply {
    match &fetched.answer {
        Answer::Cached { entry, source } => profile_reply(entry, selection, *source, timing),
        Answer::Projection(json, version) => Reply::json(200, json.clone(), CacheStatus::L2)
            .etag(*version)
            .timing(timing),
        Answer::Origin(answer) => {
            let source = if answer.stale {
                CacheStatus::Stale
            } else {
                CacheStatus::Miss
            };
            Reply::from_origin(answer, source).timing(timing)
        }
        Answer::Stale(StaleCopy::Profile(entry)) => {
            profile_reply(entry, selection, CacheStatus::Stale, timing)
        }
        Answer::Stale(StaleCopy::Projection(json, version)) => {
            Reply::json(200, json.clone(), CacheStatus::Stale)
                .etag(*version)
                .timing(timing)
        }
        Answer::Unavailable(retry_after) => {
            Reply::error(&origin_unavailable(*retry_after), CacheStatus::Miss).timing(timing)
        }
        Answer::NotFound => {
            Reply::error(&ApiError::user_not_found(id), CacheStatus::L2).timing(timing)
        }
    }
}

/// The 503 the edge answers when the origin is down, too slow, or skipped by its open breaker.
pub fn origin_unavailable(retry_after_secs: u32) -> ApiError {
    ApiError::unavailable("the origin", retry_after_secs)
}

fn profile_reply(
    entry: &ProfileEntry,
    selection: Option<&FieldSelection>,
    source: CacheStatus,
    timing: ServerTiming,
) -> Reply {
    let body = match selection {
        None => entry.json.clone(),
        Some(s) => Bytes::from(s.project(&entry.profile).to_string()),
    };
    Reply::json(200, body, source)
        .etag(entry.version)
        .timing(timing)
}

/// One lookup past tier 1, shared by every request with the same [`FlightKey`].
async fn fetch(
    edge: Rc<Edge>,
    id: UserId,
    selection: Option<FieldSelection>,
    reload: bool,
    deadline: Deadline,
) -> Rc<Fetched> {
    let started = clock::now();
    let redis_limit = deadline.cap(edge.config.redis_timeout);
    let done = |l2_ms, origin_ms, answer| {
        Rc::new(Fetched {
            l2_ms,
            origin_ms,
            answer,
        })
    };
    // A soft-expired copy from Redis, answered only if the origin cannot answer.
    let stale_copy;
    let l2_ms;
    if reload {
        stale_copy = None;
        l2_ms = None;
    } else {
        match &selection {
            None => {
                let read = edge.redis.read_profile(id, redis_limit).await;
                l2_ms = read.visited().then(|| clock::millis_since(started));
                match read {
                    Read::Absent => return done(l2_ms, None, Answer::NotFound),
                    Read::Hit(cached) => {
                        let now_ms = clock::wall_ms();
                        let entry = ProfileEntry::new(cached.profile, cached.version);
                        let shelf = Shelf {
                            freshness: cached.freshness,
                            stale_if_error: None,
                        };
                        // A soft-expired copy goes to tier 1 too, as a stale fallback only.
                        edge.l1
                            .borrow_mut()
                            .fill(entry.clone(), shelf, clock::now(), now_ms);
                        if cached.freshness.is_none_or(|f| f.is_fresh(now_ms)) {
                            let (refreshed, origin_ms) =
                                refresh_if_due(&edge, id, cached.freshness, deadline).await;
                            let answer = match refreshed {
                                Some(Refreshed::Profile(new)) => Answer::Cached {
                                    entry: new,
                                    source: CacheStatus::Miss,
                                },
                                Some(Refreshed::Gone(answer)) => Answer::Origin(answer),
                                None => Answer::Cached {
                                    entry,
                                    source: CacheStatus::L2,
                                },
                            };
                            return done(l2_ms, origin_ms, answer);
                        }
                        stale_copy = Some(StaleCopy::Profile(entry));
                    }
                    Read::Miss | Read::Skipped | Read::Failed => stale_copy = None,
                }
            }
            Some(s) => {
                let read = edge.redis.read_fields(id, s, redis_limit).await;
                l2_ms = read.visited().then(|| clock::millis_since(started));
                match read {
                    Read::Absent => return done(l2_ms, None, Answer::NotFound),
                    Read::Hit((projection, version, freshness)) => {
                        let json = Bytes::from(projection.to_string());
                        if freshness.is_none_or(|f| f.is_fresh(clock::wall_ms())) {
                            let (refreshed, origin_ms) =
                                refresh_if_due(&edge, id, freshness, deadline).await;
                            let answer = match refreshed {
                                Some(Refreshed::Profile(new)) => Answer::Cached {
                                    entry: new,
                                    source: CacheStatus::Miss,
                                },
                                Some(Refreshed::Gone(answer)) => Answer::Origin(answer),
                                None => Answer::Projection(json, version),
                            };
                            return done(l2_ms, origin_ms, answer);
                        }
                        stale_copy = Some(StaleCopy::Projection(json, version));
                    }
                    Read::Miss | Read::Skipped | Read::Failed => stale_copy = None,
                }
            }
        }
    }

    let (outcome, origin_ms) = ask_origin(&edge, id, selection.as_ref(), reload, deadline).await;
    let answer = match outcome {
        Outcome::Answer(answer, _) => Answer::Origin(answer),
        Outcome::Failed(failure) => match best_fallback(&edge, id, stale_copy) {
            Some(answer) => answer,
            None => match failure {
                Failure::Status(answer) => Answer::Origin(answer),
                Failure::Unavailable(why) => Answer::Unavailable(why.retry_after_secs()),
            },
        },
    };
    done(l2_ms, origin_ms, answer)
}

/// [`early_refresh`] if XFetch picks this hit and no refresh of the id is running here.
async fn refresh_if_due(
    edge: &Rc<Edge>,
    id: UserId,
    freshness: Option<Freshness>,
    deadline: Deadline,
) -> (Option<Refreshed>, Option<f64>) {
    if !due_for_early_refresh(edge, freshness) {
        return (None, None);
    }
    let Some(_refreshing) = Refreshing::start(edge, id) else {
        return (None, None);
    };
    early_refresh(edge, id, deadline).await
}

/// When the origin cannot answer: a fresh tier-1 copy if one arrived meanwhile, else the newest stale
/// copy (Redis's soft-expired one or tier 1's kept one), else nothing.
fn best_fallback(edge: &Edge, id: UserId, from_redis: Option<StaleCopy>) -> Option<Answer> {
    let now = clock::now();
    let mut l1 = edge.l1.borrow_mut();
    if let Some(hit) = l1.get(&id, now) {
        return Some(Answer::Cached {
            entry: hit.entry,
            source: CacheStatus::L1,
        });
    }
    let kept = l1.stale(&id, now).map(StaleCopy::Profile);
    let best = match (from_redis, kept) {
        (Some(redis), Some(kept)) if kept.version() >= redis.version() => Some(kept),
        (Some(redis), _) => Some(redis),
        (None, kept) => kept,
    };
    best.map(Answer::Stale)
}

/// What the origin did with one request.
enum Outcome {
    /// An answer to pass on (2xx, 3xx, 4xx, or its own `STALE`), and the profile it carried when it
    /// was a fresh full profile (tier 1 has it now).
    Answer(OriginAnswer, Option<ProfileEntry>),
    /// It could not answer.
    Failed(Failure),
}

enum Failure {
    /// A 5xx, kept to be passed on if there is no stale copy.
    Status(OriginAnswer),
    Unavailable(Unavailable),
}

/// `GET /users/{id}[?fields]` at the origin (`no_cache`: reload from PostgreSQL). A fresh full profile
/// fills tier 1, fresh for the origin's `max-age` (and tier 1's TTL), with the origin's time as the
/// cost of a refresh. Also returns the time the origin took, `None` when it was not asked (breaker).
async fn ask_origin(
    edge: &Edge,
    id: UserId,
    selection: Option<&FieldSelection>,
    no_cache: bool,
    deadline: Deadline,
) -> (Outcome, Option<f64>) {
    let path = match selection {
        None => format!("/users/{id}"),
        Some(s) => format!("/users/{id}?{}", fields_query(s)),
    };
    let started = clock::now();
    let request = OriginRequest {
        no_cache,
        ..OriginRequest::get(&path)
    };
    let result = edge.origin.call(request, deadline).await;
    let origin_ms = match &result {
        Err(Unavailable::BreakerOpen(_)) => None,
        _ => Some(clock::millis_since(started)),
    };
    let mut answer = match result {
        Err(why) => return (Outcome::Failed(Failure::Unavailable(why)), origin_ms),
        Ok(answer) if answer.status.is_server_error() => {
            return (Outcome::Failed(Failure::Status(answer)), origin_ms);
        }
        Ok(answer) => answer,
    };
    let mut filled = None;
    if selection.is_none() && answer.status == http::StatusCode::OK {
        match (
            serde_json::from_slice::<UserProfile>(&answer.body),
            answer.version(),
        ) {
            (Ok(profile), Some(version)) if profile.id == id => {
                let entry = ProfileEntry::new(profile, version);
                // The bytes tiers 1 and 2 will answer with, whatever key order the origin wrote: one
                // profile has one body at the edge.
                answer.body = entry.json.clone();
                // The origin's own stale answer is passed on, never kept as fresh.
                if !answer.stale {
                    let now_ms = clock::wall_ms();
                    let shelf = origin_shelf(&answer, now_ms, origin_ms.unwrap_or(0.0));
                    edge.l1
                        .borrow_mut()
                        .fill(entry.clone(), shelf, clock::now(), now_ms);
                    filled = Some(entry);
                }
            }
            _ => eprintln!(
                "aside-edge: origin answer for user {id} is not a profile with an etag; not cached"
            ),
        }
    }
    (Outcome::Answer(answer, filled), origin_ms)
}

/// What the origin's `cache-control` says about keeping its answer. Without one (an older origin),
/// tier 1 goes by its own settings alone.
fn origin_shelf(answer: &OriginAnswer, now_ms: i64, origin_ms: f64) -> Shelf {
    match answer.cache_control {
        Some(cc) => Shelf {
            freshness: Some(freshness_from_max_age(cc.max_age_secs, now_ms, origin_ms)),
            stale_if_error: Some(std::time::Duration::from_secs(cc.stale_if_error_secs)),
        },
        None => Shelf::default(),
    }
}

/// The shared freshness of an origin answer: soft expiry `max-age` seconds from now, and the cost of a
/// refresh as this edge sees it (the origin call, rounded up to whole milliseconds).
fn freshness_from_max_age(max_age_secs: u64, now_ms: i64, origin_ms: f64) -> Freshness {
    aside_shared::headers::freshness_from_max_age(max_age_secs, now_ms, origin_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_max_age_becomes_a_shared_soft_expiry_with_the_call_as_its_cost() {
        let f = freshness_from_max_age(30, 1_000_000, 4.2);
        assert_eq!(
            f,
            Freshness {
                fresh_until_ms: 1_030_000,
                delta_ms: 5
            }
        );
        assert!(f.is_fresh(1_029_999) && !f.is_fresh(1_030_000));
        let huge = freshness_from_max_age(u64::MAX, 1, f64::INFINITY);
        assert_eq!(huge.fresh_until_ms, i64::MAX);
        assert_eq!(huge.delta_ms, u32::MAX);
        assert_eq!(freshness_from_max_age(0, 7, -1.0).delta_ms, 0);
    }

    #[test]
    fn flight_keys_separate_full_reads_and_each_projection() {
        let id = UserId::parse("5").unwrap();
        let full = FlightKey::new(id, None);
        let a = FieldSelection::parse("email,gender").unwrap();
        let b = FieldSelection::parse("gender,email").unwrap();
        let c = FieldSelection::parse("email").unwrap();
        let only_id = FieldSelection::parse("id").unwrap();
        assert_eq!(FlightKey::new(id, Some(&a)), FlightKey::new(id, Some(&b)));
        assert_ne!(FlightKey::new(id, Some(&a)), FlightKey::new(id, Some(&c)));
        assert_ne!(full, FlightKey::new(id, Some(&only_id)));
        assert_ne!(full, FlightKey::new(UserId::parse("6").unwrap(), None));
    }
}
