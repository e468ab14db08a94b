//! The read path of `GET /users/{id}`: tier 1, then tier 2, then the origin.
//!
//! Tier 1 is checked by every request. Requests that miss it and want the same thing (same id, same
//! projection) share one tier-2/origin lookup ([`crate::flight`]). Tier 1 is filled only with full
//! profiles: a full Redis hit, or a `200` full-profile origin answer that parses as a profile.
//! A projection is answered from a tier-1 full entry when there is one, but never fills tier 1.
//!
//! Every `200` carries the row version as `etag`. Before one that did not come from tier 1 is served,
//! tier 1 checks it against the newest version this instance has served or written
//! ([`crate::l1::Tier1::observe`]): an older one (a lookup that read the row before a write and came back
//! late) is replaced by tier 1's newer profile, by a 404 if this instance deleted the row, or else looked
//! up again. So versions never go backwards on one instance.

use std::rc::Rc;

use aside_shared::headers::{CacheStatus, ServerTiming};
use aside_shared::{ApiError, Field, FieldSelection, UserId, UserProfile};
use bytes::Bytes;
use http::Method;

use crate::clock;
use crate::forward::{self, OriginAnswer};
use crate::handler::{Edge, Reply};
use crate::l1::{Observed, ProfileEntry};
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
    /// A full profile from Redis.
    Profile(ProfileEntry),
    /// A `?fields` projection from Redis, serialised, and the version it was taken from.
    Projection(Bytes, i64),
    /// The origin's answer, passed on as it is (a profile, a projection, a 404, an error...).
    Origin(OriginAnswer),
    /// The origin could not be reached in time.
    Unavailable,
    /// Redis holds a "missing" marker or a tombstone for the id: 404 without asking the origin.
    NotFound,
}

impl Fetched {
    /// The row version of a `200` profile answer (full or projection), when it has one.
    fn version(&self) -> Option<i64> {
        match &self.answer {
            Answer::Profile(entry) => Some(entry.version),
            Answer::Projection(_, version) => Some(*version),
            Answer::Origin(answer) if answer.status == http::StatusCode::OK => answer.version(),
            Answer::Origin(_) | Answer::Unavailable | Answer::NotFound => None,
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
}

impl FlightKey {
    fn new(id: UserId, selection: Option<&FieldSelection>) -> Self {
        let fields = selection.map(|s| {
            s.fields().iter().fold(0u8, |bits, f| {
                bits | 1 << Field::ALL.iter().position(|a| a == f).unwrap_or(7)
            })
        });
        Self { id, fields }
    }
}

/// Answers `GET /users/{id}[?fields=...]`.
pub async fn serve(edge: &Rc<Edge>, id: UserId, selection: Option<FieldSelection>) -> Reply {
    let mut timing = ServerTiming::new();
    let started = clock::now();
    let hit = edge.l1.borrow_mut().get(&id, started).cloned();
    timing.add("l1", clock::millis_since(started));
    if let Some(entry) = hit {
        return profile_reply(&entry, selection.as_ref(), CacheStatus::L1, timing);
    }

    let key = FlightKey::new(id, selection.as_ref());
    let mut lookups = 0;
    loop {
        lookups += 1;
        let (fetched, _role) = edge
            .flights
            .run(key.clone(), || {
                fetch(Rc::clone(edge), id, selection.clone())
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
                Observed::Stale if lookups < MAX_LOOKUPS => continue,
                Observed::Stale => eprintln!(
                    "aside-edge: user {id}: {lookups} lookups found version {version}, older than \
                     one this instance served; answering with it"
                ),
            }
        }
        return fetched_reply(&fetched, id, selection.as_ref(), timing);
    }
}

fn fetched_reply(
    fetched: &Fetched,
    id: UserId,
    selection: Option<&FieldSelection>,
    timing: ServerTiming,
) -> Reply {
    match &fetched.answer {
        Answer::Profile(entry) => profile_reply(entry, selection, CacheStatus::L2, timing),
        Answer::Projection(json, version) => Reply::json(200, json.clone(), CacheStatus::L2)
            .etag(*version)
            .timing(timing),
        Answer::Origin(answer) => Reply::from_origin(answer, CacheStatus::Miss).timing(timing),
        Answer::Unavailable => {
            Reply::error(&origin_unavailable(), CacheStatus::Miss).timing(timing)
        }
        Answer::NotFound => {
            Reply::error(&ApiError::user_not_found(id), CacheStatus::L2).timing(timing)
        }
    }
}

/// The 503 the edge answers when the origin is down or too slow.
pub fn origin_unavailable() -> ApiError {
    ApiError::unavailable("the origin", 1)
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
async fn fetch(edge: Rc<Edge>, id: UserId, selection: Option<FieldSelection>) -> Rc<Fetched> {
    let started = clock::now();
    match &selection {
        None => {
            let read = edge.redis.read_profile(id).await;
            let l2_ms = read.visited().then(|| clock::millis_since(started));
            if let Read::Absent = read {
                return not_found(l2_ms);
            }
            if let Read::Hit(cached) = read {
                let entry = ProfileEntry::new(cached.profile, cached.version);
                edge.l1.borrow_mut().fill(entry.clone(), clock::now());
                return Rc::new(Fetched {
                    l2_ms,
                    origin_ms: None,
                    answer: Answer::Profile(entry),
                });
            }
            from_origin(&edge, id, None, l2_ms).await
        }
        Some(s) => {
            let read = edge.redis.read_fields(id, s).await;
            let l2_ms = read.visited().then(|| clock::millis_since(started));
            if let Read::Absent = read {
                return not_found(l2_ms);
            }
            if let Read::Hit((projection, version)) = read {
                return Rc::new(Fetched {
                    l2_ms,
                    origin_ms: None,
                    answer: Answer::Projection(Bytes::from(projection.to_string()), version),
                });
            }
            from_origin(&edge, id, Some(s), l2_ms).await
        }
    }
}

fn not_found(l2_ms: Option<f64>) -> Rc<Fetched> {
    Rc::new(Fetched {
        l2_ms,
        origin_ms: None,
        answer: Answer::NotFound,
    })
}

async fn from_origin(
    edge: &Edge,
    id: UserId,
    selection: Option<&FieldSelection>,
    l2_ms: Option<f64>,
) -> Rc<Fetched> {
    let path = match selection {
        None => format!("/users/{id}"),
        Some(s) => format!("/users/{id}?{}", fields_query(s)),
    };
    let started = clock::now();
    let result = forward::send(&edge.config, Method::GET, &path, None, Bytes::new()).await;
    let origin_ms = Some(clock::millis_since(started));
    let answer = match result {
        Ok(mut answer) => {
            if selection.is_none() && answer.status == http::StatusCode::OK {
                match (
                    serde_json::from_slice::<UserProfile>(&answer.body),
                    answer.version(),
                ) {
                    (Ok(profile), Some(version)) if profile.id == id => {
                        let entry = ProfileEntry::new(profile, version);
                        // The bytes tiers 1 and 2 will answer with, whatever key order the origin
                        // wrote: one profile has one body at the edge.
                        answer.body = entry.json.clone();
                        edge.l1.borrow_mut().fill(entry, clock::now());
                    }
                    _ => eprintln!(
                        "aside-edge: origin answer for user {id} is not a profile with an etag; \
                         not cached"
                    ),
                }
            }
            Answer::Origin(answer)
        }
        Err(_) => Answer::Unavailable,
    };
    Rc::new(Fetched {
        l2_ms,
        origin_ms,
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
