//! The plan of `GET /users/{id}[?fields]`, and of what a write forwarded through this instance leaves in
//! the tiers: what to ask, in which order, and what to accept. No I/O: [`crate::read`] carries each step
//! out and hands back what it found, so every branch of the read path is tested here natively, with a
//! fixed clock and a fixed random draw ([`Env`]).
//!
//! One [`Plan`] type and one [`Step`] enum, in three roles:
//!
//! * a request ([`Plan::read`]): tier 1; on a fresh hit, maybe an early refresh (XFetch); on a miss,
//!   the shared lookup ([`Step::Lookup`]), whose answer tier 1 then checks against the newest version
//!   this instance served (the version floor), looking up again (from PostgreSQL) when it is older.
//! * a shared lookup ([`Plan::lookup`]), one per [`FlightKey`], run once for every request that wants
//!   the same thing: the executor answers a request's [`Step::Lookup`] by joining the lookup in flight
//!   or leading it, running this sub-plan through the same loop. The process-wide tier when it is on
//!   ([`crate::process_tier`]), then tier 2; on a fresh copy, maybe an early refresh; else the origin;
//!   when the origin cannot answer, the newest stale copy.
//! * a forwarded write ([`Plan::write`]): what it leaves in the tiers ([`after_write`]), then its
//!   answer, passed on.
//!
//! The executor (`ReadPath::run` in `read.rs`, one loop) starts a plan, does the step it returns and
//! calls the method named after the step with what it found, which returns the next step, until an
//! answer. A write of the tiers ([`Keep`], which the executor carries out in one function) and a log
//! line ([`Note`]) are an [`Effect`] step, after which the executor calls [`Plan::resume`].
//!
//! Another tier between tier 1 and Redis is one more step of a lookup: a [`Step`] variant that
//! [`Plan::start`] returns before [`Step::Tier2`], a method taking what it found (a fresh copy is
//! answered and kept in tier 1 through a [`Keep`], a stale one remembered like tier 2's for the
//! fallback, a miss goes on to tier 2), and an arm in the executor's loop in `read.rs`. What a lookup
//! keeps reaches every tier through `ReadPath::keep`.
//!
//! Layering: the plan takes and gives plain values ([`crate::copy`], [`crate::outcome`]) and names none of
//! the modules that do I/O (`tests/tests/architecture.rs` checks it).

use std::fmt;

use aside_shared::cache::Freshness;
use aside_shared::headers::CacheStatus;
use aside_shared::{Field, FieldSelection, UserId, UserProfile};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::copy::{Hit, Observed, ProfileEntry, Shelf, Stored};
use crate::outcome::{Found, OriginAnswer, Read, Unavailable};
use crate::routes;

/// How many lookups one request makes at most when each comes back older than what this instance
/// served before. A lookup that starts after a version was served finds it or a newer one (Redis and
/// PostgreSQL only move forward), so the second normally settles it.
pub const MAX_LOOKUPS: u32 = 3;

/// What the plan needs from the world besides the steps' results: the clocks and the random draw, read
/// only when a decision needs them (the tier-1 hit path reads none unless XFetch is on).
pub trait Env {
    /// Milliseconds since the Unix epoch: soft expiries are wall-clock times shared by every edge.
    fn wall_ms(&self) -> i64;
    /// XFetch's `u`, uniform in (0, 1].
    fn unit_random(&self) -> f64;
    /// Whether the request's budget is spent (no further lookup then).
    fn out_of_time(&self) -> bool;
}

/// What a lookup is for: requests with equal keys share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub id: UserId,
    /// `None` for the full profile, else one bit per selected field.
    fields: Option<u8>,
    /// Skip tier 2 and have the origin reload from PostgreSQL (a lookup found an old version).
    pub reload: bool,
}

impl FlightKey {
    pub fn new(id: UserId, selection: Option<&FieldSelection>) -> Self {
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

    /// Whether the lookup is for the full profile (not a `?fields` projection).
    pub fn is_full(&self) -> bool {
        self.fields.is_none()
    }
}

/// A profile the edge can answer with.
#[derive(Debug, Clone)]
pub enum Body {
    /// The full profile; a `?fields` read is answered by projecting it.
    Full(ProfileEntry),
    /// A `?fields` projection read from Redis, serialised, and the version it was taken from.
    Fields { json: Bytes, version: i64 },
}

impl Body {
    pub fn version(&self) -> i64 {
        match self {
            Body::Full(entry) => entry.version,
            Body::Fields { version, .. } => *version,
        }
    }
}

/// A tier-2 copy and its shared freshness (`None`: a hash from an older writer, treated as fresh).
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Body,
    pub freshness: Option<Freshness>,
}

/// What the read answers.
#[derive(Debug)]
pub enum Answer {
    /// `200` with a profile (projected for `?fields` when it is the full one), and where it came from.
    Body(Body, CacheStatus),
    /// The origin's answer passed on as it is (a profile, a projection, a 404, an error...).
    Origin(OriginAnswer, CacheStatus),
    /// `404`: Redis holds a "missing" marker or a tombstone (`L2`), or the row was deleted through this
    /// instance (`L1`).
    NotFound(CacheStatus),
    /// `503` (its `Retry-After` from [`Unavailable::retry_after_secs`]): the origin could not answer,
    /// or was not asked, and there is no copy; why, for the metrics.
    Unavailable(Unavailable),
}

impl Answer {
    /// The row version of a `200` profile answer (full or projection), when it has one.
    pub fn version(&self) -> Option<i64> {
        match self {
            Answer::Body(body, _) => Some(body.version()),
            Answer::Origin(answer, _) if answer.status == StatusCode::OK => answer.version(),
            Answer::Origin(..) | Answer::NotFound(_) | Answer::Unavailable(_) => None,
        }
    }
}

/// A step with nothing to report back: the executor does it, then calls the plan's `resume`.
#[derive(Debug)]
pub enum Effect {
    Keep(Keep),
    Note(Note),
}

/// A write of tier 1 (and of the process-wide tier, when it is on). The executor carries every one out in one
/// place.
#[derive(Debug)]
pub enum Keep {
    /// Store a full profile, fresh and kept as the shelf says (refused if older than the floor); the
    /// process-wide tier gets it too.
    Fill(ProfileEntry, Shelf),
    /// Store a copy read from the process-wide tier in tier 1 only (the process-wide tier has it).
    Adopt(ProfileEntry, Shelf),
    /// Drop the profile of the id (its floor stays).
    Forget(UserId),
    /// A delete through this instance (at the version the origin said): the profile goes, the floor
    /// keeps the deleted row out.
    Deleted(UserId, Option<i64>),
}

/// A log line the plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// An origin `200` for a full profile that does not parse as the profile with an `etag`.
    NotAProfile(UserId),
    /// `lookups` lookups found `version`, older than one this instance served; answered anyway.
    OlderThanServed {
        id: UserId,
        lookups: u32,
        version: i64,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::NotAProfile(id) => write!(
                f,
                "origin answer for user {id} is not a profile with an etag; not cached"
            ),
            Note::OlderThanServed {
                id,
                lookups,
                version,
            } => write!(
                f,
                "user {id}: {lookups} lookups found version {version}, older than one this \
                 instance served; answering with it"
            ),
        }
    }
}

/// One call to the origin: its answer or why there is none, and how long it took (`None` when it was
/// not asked: the breaker is open).
#[derive(Debug)]
pub struct Asked {
    pub result: Result<OriginAnswer, Unavailable>,
    pub ms: Option<f64>,
}

/// The next thing a plan does: the executor does it and calls the method named after it with what it
/// found, which returns the next step.
#[derive(Debug)]
pub enum Step {
    /// Look in tier 1: [`Plan::tier1`].
    Tier1,
    /// Refresh the fresh copy early (of tier 1, the process-wide tier or tier 2): ask the origin to reload
    /// the full profile from PostgreSQL, unless a refresh of the id is already running in this
    /// instance: [`Plan::refreshed`].
    Refresh,
    /// The lookup past tier 1 that requests with this key share: the executor joins the one in flight
    /// or leads it, running [`Plan::lookup`] for the key; then [`Plan::looked`].
    Lookup(FlightKey),
    /// Check this version against tier 1's floor ([`crate::l1::Tier1::observe`]):
    /// [`Plan::observed`].
    Observe(i64),
    /// Read the process-wide tier: [`Plan::process_tier`].
    ProcessTier,
    /// Read tier 2 (the profile, or the projection): [`Plan::tier2`].
    Tier2,
    /// Ask the origin for what the request asked for; `reload`: from PostgreSQL
    /// (`cache-control: no-cache`): [`Plan::answered`].
    Origin { reload: bool },
    /// The origin could not answer: read tier 1's copies, fresh or kept: [`Plan::fallback`].
    Fallback,
    /// Write the tiers or log, then [`Plan::resume`].
    Effect(Effect),
    /// Answer with this (a shared lookup: its answer, for every request that waits for it).
    Answer(Answer),
    /// Answer with what the last shared lookup found.
    AnswerLookup,
}

/// What a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// One request: tier 1; on a miss the shared lookup, whose answer tier 1 checks against the version
    /// floor.
    Request,
    /// One shared lookup: the process-wide tier (when on), tier 2, the origin, a stale copy.
    Lookup,
    /// A write forwarded through this instance: what it leaves in the tiers, then its answer.
    Write,
}

/// One request's, one shared lookup's or one forwarded write's plan.
#[derive(Debug)]
pub struct Plan {
    role: Role,
    /// What is read (`None` for a write, which reads nothing): the id, the projection and, for a
    /// lookup, whether it reloads from PostgreSQL.
    key: Option<FlightKey>,
    xfetch_beta: f64,
    /// Whether a lookup reads the process-wide tier first ([`Plan::with_process_tier`]).
    reads_process_tier: bool,
    /// The process-wide tier's soft-expired copy, answered only if the origin cannot answer.
    process_stale: Option<Body>,
    state: State,
    /// The step after an [`Effect`].
    then: Option<Step>,
}

#[derive(Debug)]
enum State {
    /// Before the first step, or between a step and its method.
    Start,
    /// A write's plan, before it starts: what the write leaves in the tiers, and its answer.
    Writing {
        keep: Option<Keep>,
        answer: OriginAnswer,
    },
    /// XFetch picked the fresh copy `held` (of tier 1, the process-wide tier or tier 2: `source`); the
    /// refresh is out.
    Refreshing { held: Body, source: CacheStatus },
    /// A request's refresh brought `new`; tier 1 checks its version.
    CheckingRefresh { held: Body, new: ProfileEntry },
    /// A request's lookup number `lookups` is out.
    Looking { lookups: u32 },
    /// Tier 1 checks the `version` the request's lookup number `lookups` found.
    CheckingLookup { lookups: u32, version: i64 },
    /// A lookup asks the origin; `stale` is the soft-expired copy answered only if it cannot answer.
    Asking { stale: Option<Body> },
    /// The origin could not answer; tier 1 is read for a copy.
    FallingBack {
        stale: Option<Body>,
        failure: Failure,
    },
}

/// Why the origin could not answer.
#[derive(Debug)]
enum Failure {
    /// A 5xx, passed on if there is no stale copy.
    Status(OriginAnswer),
    /// No answer (cannot connect, too slow, breaker open): a 503 if there is no stale copy.
    Unavailable(Unavailable),
}

impl Plan {
    fn new(role: Role, key: Option<FlightKey>, xfetch_beta: f64, state: State) -> Self {
        Self {
            role,
            key,
            xfetch_beta,
            reads_process_tier: false,
            process_stale: None,
            state,
            then: None,
        }
    }

    /// One request's plan: tier 1 first.
    pub fn read(id: UserId, selection: Option<&FieldSelection>, xfetch_beta: f64) -> Self {
        let key = FlightKey::new(id, selection);
        Self::new(Role::Request, Some(key), xfetch_beta, State::Start)
    }

    /// One shared lookup's plan, run once for every request waiting on `key`.
    pub fn lookup(key: &FlightKey, xfetch_beta: f64) -> Self {
        Self::new(Role::Lookup, Some(key.clone()), xfetch_beta, State::Start)
    }

    /// A forwarded write's plan: what the write that came back with `answer` leaves in the tiers
    /// ([`after_write`]), then `answer` passed on (`BYPASS`).
    pub fn write(method: &Method, path: &str, answer: OriginAnswer) -> Self {
        let keep = after_write(method, path, &answer);
        Self::new(Role::Write, None, 0.0, State::Writing { keep, answer })
    }

    /// A lookup reads the process-wide tier before tier 2.
    pub fn with_process_tier(self) -> Self {
        Self {
            reads_process_tier: true,
            ..self
        }
    }

    /// The id read (not for a write's plan, which starts with its effect and ends with its answer).
    pub fn id(&self) -> UserId {
        self.key().id
    }

    fn key(&self) -> &FlightKey {
        self.key
            .as_ref()
            .expect("a read or a lookup names what it reads")
    }

    /// The first step. A request starts in tier 1. A lookup reads the process-wide tier (when on),
    /// then tier 2, unless it is a reload (a cache gave an old version before). A write keeps what it
    /// wrote, then answers.
    pub fn start(&mut self) -> Step {
        match (self.role, std::mem::replace(&mut self.state, State::Start)) {
            (Role::Request, _) => Step::Tier1,
            (Role::Lookup, _) if self.key().reload => {
                self.state = State::Asking { stale: None };
                Step::Origin { reload: true }
            }
            (Role::Lookup, _) if self.reads_process_tier => Step::ProcessTier,
            (Role::Lookup, _) => Step::Tier2,
            (Role::Write, State::Writing { keep, answer }) => {
                let answer = Step::Answer(Answer::Origin(answer, CacheStatus::Bypass));
                self.after(keep.map(Effect::Keep), answer)
            }
            (Role::Write, _) => unreachable!("a write's plan starts once"),
        }
    }

    /// Tier 1's fresh copy, or `None`.
    pub fn tier1(&mut self, hit: Option<Hit>, env: &impl Env) -> Step {
        let Some(hit) = hit else {
            return self.lookup_next(1, false);
        };
        if xfetch_picks(self.xfetch_beta, hit.shared, env) {
            self.state = State::Refreshing {
                held: Body::Full(hit.entry),
                source: CacheStatus::L1,
            };
            return Step::Refresh;
        }
        Step::Answer(Answer::Body(Body::Full(hit.entry), CacheStatus::L1))
    }

    /// The process-wide tier's read. A fresh copy is answered (`SHARED`), or refreshed early if XFetch
    /// picks it by its shared soft expiry, and goes to tier 1 no fresher than it is there; a
    /// soft-expired one is kept for the case the origin cannot answer; then tier 2.
    pub fn process_tier(&mut self, found: Found, env: &impl Env) -> Step {
        match found {
            Found::Fresh(Stored {
                entry,
                shelf,
                shared,
            }) => {
                let body = Body::Full(entry.clone());
                let next = if xfetch_picks(self.xfetch_beta, shared, env) {
                    self.state = State::Refreshing {
                        held: body,
                        source: CacheStatus::Shared,
                    };
                    Step::Refresh
                } else {
                    Step::Answer(Answer::Body(body, CacheStatus::Shared))
                };
                self.after(Some(Effect::Keep(Keep::Adopt(entry, shelf))), next)
            }
            Found::Stale(stored) => {
                self.process_stale = Some(Body::Full(stored.entry));
                Step::Tier2
            }
            Found::Miss | Found::Skipped => Step::Tier2,
        }
    }

    /// Tier 2's read. A fresh copy is answered (`L2`), or refreshed early if XFetch picks it; a
    /// soft-expired one is kept for the case the origin cannot answer. A full profile goes to tier 1
    /// either way (a soft-expired one as a stale fallback only).
    pub fn tier2(&mut self, read: Read<Cached>, env: &impl Env) -> Step {
        let Cached { body, freshness } = match read {
            Read::Hit(cached) => cached,
            Read::Absent => return Step::Answer(Answer::NotFound(CacheStatus::L2)),
            Read::Miss | Read::Skipped | Read::Failed => return self.ask_origin(None),
            // Redis is up but this edge could not hear it within the budget: no origin call (that
            // would add load to an overload); a copy tier 1 or the process-wide tier holds, or a 503.
            Read::Shed => {
                self.state = State::FallingBack {
                    stale: self.process_stale.take(),
                    failure: Failure::Unavailable(Unavailable::Overloaded),
                };
                return Step::Fallback;
            }
        };
        let keep = match &body {
            Body::Full(entry) => Some(Effect::Keep(Keep::Fill(
                entry.clone(),
                Shelf {
                    freshness,
                    ..Shelf::default()
                },
            ))),
            Body::Fields { .. } => None,
        };
        let next = if freshness.is_none_or(|f| f.is_fresh(env.wall_ms())) {
            if xfetch_picks(self.xfetch_beta, freshness, env) {
                self.state = State::Refreshing {
                    held: body,
                    source: CacheStatus::L2,
                };
                Step::Refresh
            } else {
                Step::Answer(Answer::Body(body, CacheStatus::L2))
            }
        } else {
            self.ask_origin(Some(body))
        };
        self.after(keep, next)
    }

    /// What the early refresh brought (`None`: another request of this instance is refreshing the
    /// id). A new profile is kept and answered (`MISS`), by a request only if tier 1 accepts its
    /// version; a 404 is passed on and tier 1's copy dropped; anything else answers the held copy.
    pub fn refreshed(&mut self, asked: Option<Asked>, env: &impl Env) -> Step {
        let State::Refreshing { held, source } = std::mem::replace(&mut self.state, State::Start)
        else {
            unreachable!("Plan::refreshed follows Step::Refresh");
        };
        let id = self.id();
        match refresh_outcome(id, asked, env) {
            Refreshed::Profile(entry, shelf) => {
                let next = if self.role == Role::Request {
                    let version = entry.version;
                    self.state = State::CheckingRefresh {
                        held,
                        new: entry.clone(),
                    };
                    Step::Observe(version)
                } else {
                    Step::Answer(Answer::Body(Body::Full(entry.clone()), CacheStatus::Miss))
                };
                self.after(Some(Effect::Keep(Keep::Fill(entry, shelf))), next)
            }
            Refreshed::Gone(answer) => {
                // A lookup passes the origin's own `STALE` on; a request answers the 404 as `MISS`.
                let source = match self.role {
                    Role::Request => CacheStatus::Miss,
                    Role::Lookup | Role::Write => passed_on_as(&answer),
                };
                let answer = Step::Answer(Answer::Origin(answer, source));
                self.after(Some(Effect::Keep(Keep::Forget(id))), answer)
            }
            Refreshed::Nothing(note) => self.after(
                note.map(Effect::Note),
                Step::Answer(Answer::Body(held, source)),
            ),
        }
    }

    /// The version of the shared lookup's answer, when it is a `200` profile.
    pub fn looked(&mut self, version: Option<i64>) -> Step {
        let State::Looking { lookups } = self.state else {
            unreachable!("Plan::looked follows Step::Lookup");
        };
        match version {
            Some(version) => {
                self.state = State::CheckingLookup { lookups, version };
                Step::Observe(version)
            }
            None => Step::AnswerLookup,
        }
    }

    /// What tier 1 says about the version being answered.
    pub fn observed(&mut self, observed: Observed, env: &impl Env) -> Step {
        match (std::mem::replace(&mut self.state, State::Start), observed) {
            (_, Observed::Newer(entry)) => {
                Step::Answer(Answer::Body(Body::Full(entry), CacheStatus::L1))
            }
            (_, Observed::Deleted) => Step::Answer(Answer::NotFound(CacheStatus::L1)),
            (State::CheckingRefresh { new, .. }, Observed::Current) => {
                Step::Answer(Answer::Body(Body::Full(new), CacheStatus::Miss))
            }
            (State::CheckingRefresh { held, .. }, Observed::Stale) => {
                Step::Answer(Answer::Body(held, CacheStatus::L1))
            }
            (State::CheckingLookup { .. }, Observed::Current) => Step::AnswerLookup,
            (State::CheckingLookup { lookups, version }, Observed::Stale) => {
                if lookups < MAX_LOOKUPS && !env.out_of_time() {
                    // Tier 2 (a lagging replica) or a slow lookup gave an old version: ask
                    // PostgreSQL through the origin, which only moves forward.
                    self.lookup_next(lookups + 1, true)
                } else {
                    let note = Note::OlderThanServed {
                        id: self.id(),
                        lookups,
                        version,
                    };
                    self.after(Some(Effect::Note(note)), Step::AnswerLookup)
                }
            }
            (_, _) => unreachable!("Plan::observed follows Step::Observe"),
        }
    }

    /// The origin's answer to the lookup: passed on (a fresh full profile also goes to tier 1), or,
    /// when it could not answer, tier 1 is read for a copy.
    pub fn answered(&mut self, asked: Asked, env: &impl Env) -> Step {
        let State::Asking { stale } = std::mem::replace(&mut self.state, State::Start) else {
            unreachable!("Plan::answered follows Step::Origin");
        };
        let key = self.key();
        match from_origin(key.id, key.is_full(), asked, env) {
            FromOrigin::Profile {
                answer,
                entry,
                shelf,
            } => {
                let done = Step::Answer(Answer::Origin(answer, CacheStatus::Miss));
                self.after(Some(Effect::Keep(Keep::Fill(entry, shelf))), done)
            }
            FromOrigin::Answer(answer, note) => {
                let source = passed_on_as(&answer);
                let done = Step::Answer(Answer::Origin(answer, source));
                self.after(note.map(Effect::Note), done)
            }
            FromOrigin::Failed(failure) => {
                self.state = State::FallingBack { stale, failure };
                Step::Fallback
            }
        }
    }

    /// Tier 1's copies once the origin could not answer: a fresh one (arrived meanwhile) is answered
    /// (`L1`); else the newer of tier 2's soft-expired copy and tier 1's kept one (`STALE`; tier 1's
    /// on a tie); else the origin's 5xx, or a 503.
    pub fn fallback(&mut self, fresh: Option<ProfileEntry>, kept: Option<ProfileEntry>) -> Step {
        let State::FallingBack { stale, failure } =
            std::mem::replace(&mut self.state, State::Start)
        else {
            unreachable!("Plan::fallback follows Step::Fallback");
        };
        if let Some(entry) = fresh {
            return Step::Answer(Answer::Body(Body::Full(entry), CacheStatus::L1));
        }
        let kept = kept.map(Body::Full);
        let best = match (stale, kept) {
            (Some(redis), Some(kept)) if kept.version() >= redis.version() => Some(kept),
            (Some(redis), _) => Some(redis),
            (None, kept) => kept,
        };
        Step::Answer(match (best, failure) {
            (Some(body), _) => Answer::Body(body, CacheStatus::Stale),
            (None, Failure::Status(answer)) => {
                let source = passed_on_as(&answer);
                Answer::Origin(answer, source)
            }
            (None, Failure::Unavailable(why)) => Answer::Unavailable(why),
        })
    }

    /// The step after a [`Step::Effect`].
    pub fn resume(&mut self) -> Step {
        self.then.take().expect("Plan::resume follows Step::Effect")
    }

    /// A request's lookup number `lookups` (`reload`: from PostgreSQL).
    fn lookup_next(&mut self, lookups: u32, reload: bool) -> Step {
        self.state = State::Looking { lookups };
        Step::Lookup(FlightKey {
            reload,
            ..self.key().clone()
        })
    }

    /// Asks the origin; `stale` (tier 2's soft-expired copy) or the process-wide tier's, the newer
    /// (tier 2's on a tie), is the fallback.
    fn ask_origin(&mut self, stale: Option<Body>) -> Step {
        let stale = match (stale, self.process_stale.take()) {
            (Some(redis), Some(shared)) if shared.version() > redis.version() => Some(shared),
            (redis, shared) => redis.or(shared),
        };
        self.state = State::Asking { stale };
        Step::Origin { reload: false }
    }

    /// `then`, after `effect` if there is one.
    fn after(&mut self, effect: Option<Effect>, then: Step) -> Step {
        let Some(effect) = effect else { return then };
        self.then = Some(then);
        Step::Effect(effect)
    }
}

/// Whether XFetch picks a fresh copy for an early refresh, by the shared soft expiry (a copy without
/// one is never refreshed early: its tier-1 TTL ends it).
fn xfetch_picks(beta: f64, shared: Option<Freshness>, env: &impl Env) -> bool {
    beta > 0.0 && shared.is_some_and(|f| f.refresh_early(env.wall_ms(), beta, env.unit_random()))
}

/// An origin answer is `STALE` when the origin says it served a soft-expired copy, else `MISS`.
fn passed_on_as(answer: &OriginAnswer) -> CacheStatus {
    if answer.stale {
        CacheStatus::Stale
    } else {
        CacheStatus::Miss
    }
}

/// What an early refresh brought back.
enum Refreshed {
    /// The reloaded profile, to keep in tier 1.
    Profile(ProfileEntry, Shelf),
    /// The origin says the id has no profile (deleted meanwhile): its 404, passed on.
    Gone(OriginAnswer),
    /// Nothing to use (no answer, an error, a stale answer): the caller answers its held copy.
    Nothing(Option<Note>),
}

fn refresh_outcome(id: UserId, asked: Option<Asked>, env: &impl Env) -> Refreshed {
    let Some(asked) = asked else {
        return Refreshed::Nothing(None);
    };
    match from_origin(id, true, asked, env) {
        FromOrigin::Profile { entry, shelf, .. } => Refreshed::Profile(entry, shelf),
        FromOrigin::Answer(answer, _) if answer.status == StatusCode::NOT_FOUND => {
            Refreshed::Gone(answer)
        }
        FromOrigin::Answer(_, note) => Refreshed::Nothing(note),
        FromOrigin::Failed(_) => Refreshed::Nothing(None),
    }
}

/// What an origin answer means for the read.
enum FromOrigin {
    /// A fresh full profile (its body made tier 1's bytes for it), to keep for as long as the origin's
    /// `cache-control` says.
    Profile {
        answer: OriginAnswer,
        entry: ProfileEntry,
        shelf: Shelf,
    },
    /// An answer to pass on (2xx, 3xx, 4xx, or the origin's own `STALE`), not kept.
    Answer(OriginAnswer, Option<Note>),
    /// The origin could not answer.
    Failed(Failure),
}

/// Sorts out an origin answer to a `full` read (the full profile) or a projection.
fn from_origin(id: UserId, full: bool, asked: Asked, env: &impl Env) -> FromOrigin {
    let mut answer = match asked.result {
        Err(why) => return FromOrigin::Failed(Failure::Unavailable(why)),
        Ok(answer) if answer.status.is_server_error() => {
            return FromOrigin::Failed(Failure::Status(answer));
        }
        Ok(answer) => answer,
    };
    if !full || answer.status != StatusCode::OK {
        return FromOrigin::Answer(answer, None);
    }
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
            if answer.stale {
                return FromOrigin::Answer(answer, None);
            }
            let shelf = origin_shelf(&answer, env.wall_ms(), asked.ms.unwrap_or(0.0));
            FromOrigin::Profile {
                answer,
                entry,
                shelf,
            }
        }
        _ => FromOrigin::Answer(answer, Some(Note::NotAProfile(id))),
    }
}

/// What tier 1 keeps after a write this instance forwarded, so that its next read of the profile is
/// the written one (read-your-writes) and no slower lookup can bring an older one back: a written
/// profile (200/201 with its version in `etag`) is stored; a `DELETE` leaves a floor at the deleted
/// version (the 204's `etag`); any other successful write, or a 404, drops the copy.
pub fn after_write(method: &Method, path: &str, answer: &OriginAnswer) -> Option<Keep> {
    let path_id = routes::user_id_of(path);
    let is_write = match *method {
        Method::PUT | Method::PATCH | Method::DELETE => path_id.is_some(),
        Method::POST => path == "/users",
        _ => false,
    };
    if !is_write || !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND) {
        return None;
    }
    if *method == Method::DELETE && answer.status.is_success() {
        return path_id.map(|id| Keep::Deleted(id, answer.version()));
    }
    let written = match answer.status {
        StatusCode::OK | StatusCode::CREATED => answer
            .version()
            .zip(serde_json::from_slice::<UserProfile>(&answer.body).ok())
            .filter(|(_, profile)| path_id.is_none_or(|id| id == profile.id)),
        _ => None,
    };
    match (written, path_id) {
        (Some((version, profile)), _) => Some(Keep::Fill(
            ProfileEntry::new(profile, version),
            Shelf::default(),
        )),
        (None, Some(id)) => Some(Keep::Forget(id)),
        (None, None) => None,
    }
}

/// What the origin's `cache-control` says about keeping its answer. Without one (an older origin),
/// tier 1 goes by its own settings alone.
fn origin_shelf(answer: &OriginAnswer, now_ms: i64, origin_ms: f64) -> Shelf {
    match answer.cache_control {
        Some(cc) => Shelf {
            freshness: Some(freshness_from_max_age(cc.max_age_secs, now_ms, origin_ms)),
            stale_if_error: Some(std::time::Duration::from_secs(cc.stale_if_error_secs)),
            ..Shelf::default()
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
    use std::time::Duration;

    use aside_shared::headers::{CacheControl, format_etag};
    use http::header::ETAG;
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::process_tier::SlotValue;

    const WALL: i64 = 1_700_000_000_000;

    /// A fixed world: wall clock, XFetch draw, and whether the budget is spent.
    struct Fixed {
        wall_ms: i64,
        u: f64,
        out_of_time: bool,
    }

    /// XFetch never picks (`u` = 1 makes the gap 0), the budget is not spent.
    const CALM: Fixed = Fixed {
        wall_ms: WALL,
        u: 1.0,
        out_of_time: false,
    };

    /// `u` close to 0: XFetch picks any copy with a cost and a soft expiry.
    const PICKY: Fixed = Fixed { u: 1e-300, ..CALM };

    impl Env for Fixed {
        fn wall_ms(&self) -> i64 {
            self.wall_ms
        }
        fn unit_random(&self) -> f64 {
            self.u
        }
        fn out_of_time(&self) -> bool {
            self.out_of_time
        }
    }

    fn id() -> UserId {
        UserId::parse("7").unwrap()
    }

    fn profile_json(department: &str) -> String {
        serde_json::json!({
            "id": 7, "full_name": "Ana Silva", "gender": "F", "birth_date": "1980-01-02",
            "department": department, "email": "ana.silva@fake-devops-db.internal",
            "username": "ana.silva"
        })
        .to_string()
    }

    fn entry(version: i64) -> ProfileEntry {
        entry_in(version, "Sales")
    }

    fn entry_in(version: i64, department: &str) -> ProfileEntry {
        ProfileEntry::new(
            serde_json::from_str(&profile_json(department)).unwrap(),
            version,
        )
    }

    /// Fresh for 1 s more, a 5 ms load: XFetch picks it only with a tiny `u` (`-5 ln u >= 1000`).
    fn fresh() -> Option<Freshness> {
        Some(Freshness {
            fresh_until_ms: WALL + 1_000,
            delta_ms: 5,
        })
    }

    fn hit(version: i64, shared: Option<Freshness>) -> Option<Hit> {
        Some(Hit {
            entry: entry(version),
            shared,
        })
    }

    fn origin(status: u16, body: &str, version: Option<i64>) -> OriginAnswer {
        let mut headers = HeaderMap::new();
        if let Some(v) = version {
            headers.insert(ETAG, HeaderValue::from_str(&format_etag(v)).unwrap());
        }
        OriginAnswer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
            cache_control: Some(CacheControl {
                max_age_secs: 30,
                stale_if_error_secs: 60,
            }),
            stale: false,
            timing: None,
        }
    }

    /// The origin's `200` full profile at `version`, its keys in another order than the edge's.
    fn origin_profile(version: i64) -> Asked {
        let body = r#"{"username":"ana.silva","id":7,"full_name":"Ana Silva","gender":"F",
            "birth_date":"1980-01-02","department":"DevOps","email":"ana.silva@fake-devops-db.internal"}"#;
        answered(origin(200, body, Some(version)))
    }

    fn answered(answer: OriginAnswer) -> Asked {
        Asked {
            result: Ok(answer),
            ms: Some(4.2),
        }
    }

    fn unavailable(why: Unavailable) -> Asked {
        Asked {
            result: Err(why),
            ms: None,
        }
    }

    fn fields(json: &str, version: i64) -> Body {
        Body::Fields {
            json: Bytes::from(json.to_string()),
            version,
        }
    }

    /// The version and `x-cache` of a profile answer, `None` for any other.
    fn body_of(step: &Step) -> Option<(i64, CacheStatus)> {
        match step {
            Step::Answer(Answer::Body(body, source)) => Some((body.version(), *source)),
            _ => None,
        }
    }

    // ---- A request's plan ----

    #[test]
    fn a_fresh_tier_one_hit_is_answered_as_l1_whatever_the_projection() {
        let selection = FieldSelection::parse("email").unwrap();
        for sel in [None, Some(&selection)] {
            let mut plan = Plan::read(id(), sel, 1.0);
            assert!(matches!(plan.start(), Step::Tier1));
            let step = plan.tier1(hit(5, fresh()), &CALM);
            assert_eq!(body_of(&step), Some((5, CacheStatus::L1)));
        }
        // Without a shared soft expiry, or with XFetch off, nothing is refreshed early.
        let mut plan = Plan::read(id(), None, 1.0);
        assert_eq!(
            body_of(&plan.tier1(hit(5, None), &PICKY)),
            Some((5, CacheStatus::L1))
        );
        let mut plan = Plan::read(id(), None, 0.0);
        assert_eq!(
            body_of(&plan.tier1(hit(5, fresh()), &PICKY)),
            Some((5, CacheStatus::L1))
        );
    }

    #[test]
    fn xfetch_refreshes_a_tier_one_hit_and_answers_the_reload_as_miss() {
        let mut plan = Plan::read(id(), None, 1.0);
        assert!(matches!(plan.tier1(hit(5, fresh()), &PICKY), Step::Refresh));
        let step = plan.refreshed(Some(origin_profile(6)), &CALM);
        let Step::Effect(Effect::Keep(Keep::Fill(kept, shelf))) = &step else {
            panic!("{step:?}");
        };
        assert_eq!(kept.version, 6);
        assert_eq!(kept.profile.department.as_str(), "DevOps");
        // The origin's `max-age` is the shared soft expiry, its call the cost.
        assert_eq!(
            shelf.freshness,
            Some(Freshness {
                fresh_until_ms: WALL + 30_000,
                delta_ms: 5
            })
        );
        assert_eq!(shelf.stale_if_error, Some(Duration::from_secs(60)));
        assert!(matches!(plan.resume(), Step::Observe(6)));
        let step = plan.observed(Observed::Current, &CALM);
        assert_eq!(body_of(&step), Some((6, CacheStatus::Miss)));
    }

    #[test]
    fn a_refreshed_version_tier_one_refuses_gives_way_to_what_it_holds() {
        let refreshed_then = |observed: Observed| {
            let mut plan = Plan::read(id(), None, 1.0);
            plan.tier1(hit(5, fresh()), &PICKY);
            plan.refreshed(Some(origin_profile(6)), &CALM);
            plan.resume();
            plan.observed(observed, &CALM)
        };
        let step = refreshed_then(Observed::Newer(entry(8)));
        assert_eq!(body_of(&step), Some((8, CacheStatus::L1)));
        let step = refreshed_then(Observed::Stale);
        assert_eq!(body_of(&step), Some((5, CacheStatus::L1)), "the held copy");
        let step = refreshed_then(Observed::Deleted);
        assert!(matches!(
            step,
            Step::Answer(Answer::NotFound(CacheStatus::L1))
        ));
    }

    #[test]
    fn a_refresh_that_brings_nothing_answers_the_tier_one_copy() {
        let broken = origin(200, "{}", Some(6));
        let mut stale = origin(200, &profile_json("DevOps"), Some(6));
        stale.stale = true;
        for asked in [
            None,
            Some(unavailable(Unavailable::TimedOut)),
            Some(answered(origin(503, "{}", None))),
            Some(answered(origin(400, "{}", None))),
            Some(answered(stale)),
        ] {
            let mut plan = Plan::read(id(), None, 1.0);
            plan.tier1(hit(5, fresh()), &PICKY);
            let step = plan.refreshed(asked, &CALM);
            assert_eq!(body_of(&step), Some((5, CacheStatus::L1)), "{step:?}");
        }
        // One that is not a profile is logged first.
        let mut plan = Plan::read(id(), None, 1.0);
        plan.tier1(hit(5, fresh()), &PICKY);
        let step = plan.refreshed(Some(answered(broken)), &CALM);
        assert!(matches!(
            step,
            Step::Effect(Effect::Note(Note::NotAProfile(_)))
        ));
        assert_eq!(body_of(&plan.resume()), Some((5, CacheStatus::L1)));
    }

    #[test]
    fn a_refresh_that_finds_the_row_gone_drops_the_copy_and_passes_the_404_on() {
        let mut plan = Plan::read(id(), None, 1.0);
        plan.tier1(hit(5, fresh()), &PICKY);
        let step = plan.refreshed(Some(answered(origin(404, "{}", None))), &CALM);
        assert!(matches!(step, Step::Effect(Effect::Keep(Keep::Forget(i))) if i == id()));
        let step = plan.resume();
        let Step::Answer(Answer::Origin(answer, CacheStatus::Miss)) = &step else {
            panic!("{step:?}");
        };
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_tier_one_miss_shares_a_lookup_keyed_by_the_projection() {
        let selection = FieldSelection::parse("gender,email").unwrap();
        let mut plan = Plan::read(id(), Some(&selection), 1.0);
        let step = plan.tier1(None, &CALM);
        let Step::Lookup(key) = step else {
            panic!("{step:?}");
        };
        assert_eq!(key, FlightKey::new(id(), Some(&selection)));
        assert!(!key.reload && !key.is_full());
        // An answer without a version (a 404, an error) is answered as it is.
        assert!(matches!(plan.looked(None), Step::AnswerLookup));
    }

    #[test]
    fn the_version_floor_accepts_replaces_or_looks_up_again_from_postgresql() {
        let mut plan = Plan::read(id(), None, 1.0);
        plan.tier1(None, &CALM);
        assert!(matches!(plan.looked(Some(4)), Step::Observe(4)));
        assert!(matches!(
            plan.observed(Observed::Current, &CALM),
            Step::AnswerLookup
        ));

        let looked_then = |observed: Observed| {
            let mut plan = Plan::read(id(), None, 1.0);
            plan.tier1(None, &CALM);
            plan.looked(Some(4));
            plan.observed(observed, &CALM)
        };
        assert_eq!(
            body_of(&looked_then(Observed::Newer(entry(5)))),
            Some((5, CacheStatus::L1))
        );
        assert!(matches!(
            looked_then(Observed::Deleted),
            Step::Answer(Answer::NotFound(CacheStatus::L1))
        ));

        // Older than what was served: again, skipping tier 2, at most MAX_LOOKUPS in all.
        let mut plan = Plan::read(id(), None, 1.0);
        plan.tier1(None, &CALM);
        for lookup in 2..=MAX_LOOKUPS {
            plan.looked(Some(4));
            let step = plan.observed(Observed::Stale, &CALM);
            let Step::Lookup(key) = step else {
                panic!("lookup {lookup}: {step:?}");
            };
            assert!(key.reload);
        }
        plan.looked(Some(4));
        let step = plan.observed(Observed::Stale, &CALM);
        assert!(matches!(
            step,
            Step::Effect(Effect::Note(Note::OlderThanServed {
                lookups: MAX_LOOKUPS,
                version: 4,
                ..
            }))
        ));
        assert!(matches!(plan.resume(), Step::AnswerLookup));

        // No budget left: no second lookup.
        let spent = Fixed {
            out_of_time: true,
            ..CALM
        };
        let mut plan = Plan::read(id(), None, 1.0);
        plan.tier1(None, &CALM);
        plan.looked(Some(4));
        assert!(matches!(
            plan.observed(Observed::Stale, &spent),
            Step::Effect(Effect::Note(Note::OlderThanServed { lookups: 1, .. }))
        ));
    }

    // ---- A shared lookup's plan ----

    fn full_key() -> FlightKey {
        FlightKey::new(id(), None)
    }

    fn fields_key() -> FlightKey {
        FlightKey::new(id(), Some(&FieldSelection::parse("email").unwrap()))
    }

    fn redis_hit(body: Body, freshness: Option<Freshness>) -> Read<Cached> {
        Read::Hit(Cached { body, freshness })
    }

    /// Soft-expired a second ago.
    fn expired() -> Option<Freshness> {
        Some(Freshness {
            fresh_until_ms: WALL - 1_000,
            delta_ms: 5,
        })
    }

    #[test]
    fn a_lookup_reads_tier_two_first_and_a_reload_goes_straight_to_the_origin() {
        assert!(matches!(
            Plan::lookup(&full_key(), 1.0).start(),
            Step::Tier2
        ));
        let reload = FlightKey {
            reload: true,
            ..full_key()
        };
        let mut plan = Plan::lookup(&reload, 1.0);
        assert!(matches!(plan.start(), Step::Origin { reload: true }));
        let step = plan.answered(origin_profile(9), &CALM);
        assert!(matches!(step, Step::Effect(Effect::Keep(Keep::Fill(ref e, _))) if e.version == 9));
    }

    #[test]
    fn a_fresh_tier_two_profile_fills_tier_one_and_is_answered_as_l2() {
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        let step = plan.tier2(redis_hit(Body::Full(entry(5)), fresh()), &CALM);
        let Step::Effect(Effect::Keep(Keep::Fill(kept, shelf))) = step else {
            panic!("{step:?}");
        };
        assert_eq!(kept.version, 5);
        assert_eq!(shelf.freshness, fresh());
        assert_eq!(shelf.stale_if_error, None);
        assert_eq!(body_of(&plan.resume()), Some((5, CacheStatus::L2)));
        // A copy from an older writer (no soft expiry) counts as fresh.
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.tier2(redis_hit(Body::Full(entry(5)), None), &PICKY);
        assert_eq!(body_of(&plan.resume()), Some((5, CacheStatus::L2)));
    }

    #[test]
    fn a_fresh_tier_two_projection_is_answered_as_l2_and_never_fills_tier_one() {
        let mut plan = Plan::lookup(&fields_key(), 1.0);
        plan.start();
        let step = plan.tier2(redis_hit(fields(r#"{"email":"a@b"}"#, 5), fresh()), &CALM);
        let Step::Answer(Answer::Body(Body::Fields { json, version }, CacheStatus::L2)) = step
        else {
            panic!("{step:?}");
        };
        assert_eq!((&json[..], version), (&br#"{"email":"a@b"}"#[..], 5));
    }

    #[test]
    fn redis_s_missing_marker_is_a_404_without_the_origin() {
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        assert!(matches!(
            plan.tier2(Read::Absent, &CALM),
            Step::Answer(Answer::NotFound(CacheStatus::L2))
        ));
    }

    #[test]
    fn xfetch_refreshes_a_tier_two_copy_profile_or_projection() {
        // Full: the reload is kept and answered as MISS.
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        plan.tier2(redis_hit(Body::Full(entry(5)), fresh()), &PICKY);
        assert!(matches!(plan.resume(), Step::Refresh));
        let step = plan.refreshed(Some(origin_profile(6)), &CALM);
        assert!(matches!(step, Step::Effect(Effect::Keep(Keep::Fill(ref e, _))) if e.version == 6));
        assert_eq!(body_of(&plan.resume()), Some((6, CacheStatus::Miss)));

        // A projection: refreshed with the full profile too; nothing back answers Redis's copy.
        for asked in [None, Some(unavailable(Unavailable::Unreachable))] {
            let mut plan = Plan::lookup(&fields_key(), 1.0);
            plan.start();
            let step = plan.tier2(redis_hit(fields("{}", 5), fresh()), &PICKY);
            assert!(matches!(step, Step::Refresh));
            let step = plan.refreshed(asked, &CALM);
            assert!(matches!(
                step,
                Step::Answer(Answer::Body(Body::Fields { .. }, CacheStatus::L2))
            ));
        }

        // Gone meanwhile: tier 1's copy goes, the 404 is passed on.
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        plan.tier2(redis_hit(Body::Full(entry(5)), fresh()), &PICKY);
        plan.resume();
        let step = plan.refreshed(Some(answered(origin(404, "{}", None))), &CALM);
        assert!(matches!(step, Step::Effect(Effect::Keep(Keep::Forget(_)))));
        assert!(matches!(
            plan.resume(),
            Step::Answer(Answer::Origin(ref a, CacheStatus::Miss)) if a.status == 404
        ));
    }

    #[test]
    fn a_stale_tier_two_copy_is_kept_as_a_fallback_and_the_origin_asked() {
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        let step = plan.tier2(redis_hit(Body::Full(entry(5)), expired()), &CALM);
        assert!(
            matches!(step, Step::Effect(Effect::Keep(Keep::Fill(_, _)))),
            "as a stale fallback"
        );
        assert!(matches!(plan.resume(), Step::Origin { reload: false }));
        let step = plan.answered(origin_profile(6), &CALM);
        let Step::Effect(Effect::Keep(Keep::Fill(kept, _))) = step else {
            panic!("{step:?}");
        };
        let Step::Answer(Answer::Origin(answer, CacheStatus::Miss)) = plan.resume() else {
            panic!();
        };
        // The answer carries tier 1's bytes for the profile, whatever order the origin wrote.
        assert_eq!(answer.body, kept.json);
    }

    #[test]
    fn origin_answers_other_than_a_fresh_profile_are_passed_on_and_not_kept() {
        let mut stale = origin(200, &profile_json("DevOps"), Some(6));
        stale.stale = true;
        let cases = [
            (full_key(), stale, CacheStatus::Stale),
            (full_key(), origin(404, "{}", None), CacheStatus::Miss),
            (
                fields_key(),
                origin(200, r#"{"email":"a@b"}"#, Some(6)),
                CacheStatus::Miss,
            ),
        ];
        for (key, answer, source) in cases {
            let mut plan = Plan::lookup(&key, 1.0);
            plan.start();
            assert!(matches!(
                plan.tier2(Read::Miss, &CALM),
                Step::Origin { reload: false }
            ));
            let status = answer.status;
            let step = plan.answered(answered(answer), &CALM);
            assert!(
                matches!(step, Step::Answer(Answer::Origin(ref a, s)) if a.status == status && s == source),
                "{step:?}"
            );
        }
        // A full `200` that is not the profile is logged and passed on.
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        plan.tier2(Read::Failed, &CALM);
        let step = plan.answered(answered(origin(200, &profile_json("x"), None)), &CALM);
        assert!(matches!(
            step,
            Step::Effect(Effect::Note(Note::NotAProfile(_)))
        ));
        assert!(matches!(plan.resume(), Step::Answer(Answer::Origin(..))));
    }

    /// A lookup whose tier-2 read gave `redis` and whose origin then failed as `asked` says.
    fn failed_lookup(redis: Read<Cached>, asked: Asked) -> Plan {
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        if let Step::Effect(Effect::Keep(_)) = plan.tier2(redis, &CALM) {
            plan.resume();
        }
        assert!(matches!(plan.answered(asked, &CALM), Step::Fallback));
        plan
    }

    #[test]
    fn when_the_origin_cannot_answer_the_newest_stale_copy_is_answered() {
        let down = || unavailable(Unavailable::TimedOut);
        let redis_stale = |v| redis_hit(Body::Full(entry(v)), expired());
        // A fresh tier-1 copy that arrived meanwhile wins.
        let mut plan = failed_lookup(redis_stale(5), down());
        let step = plan.fallback(Some(entry(6)), None);
        assert_eq!(body_of(&step), Some((6, CacheStatus::L1)));
        // Else the newer of Redis's and tier 1's stale copies; tier 1's on a tie.
        for (redis, kept, expected) in [(5, 4, "Redis"), (4, 5, "Tier1"), (5, 5, "Tier1")] {
            let from_redis = redis_hit(Body::Full(entry_in(redis, "Redis")), expired());
            let mut plan = failed_lookup(from_redis, down());
            let step = plan.fallback(None, Some(entry_in(kept, "Tier1")));
            let Step::Answer(Answer::Body(Body::Full(e), CacheStatus::Stale)) = step else {
                panic!("{step:?}");
            };
            assert_eq!(e.profile.department.as_str(), expected);
        }
        let mut plan = failed_lookup(Read::Miss, down());
        assert_eq!(
            body_of(&plan.fallback(None, Some(entry(3)))),
            Some((3, CacheStatus::Stale))
        );
        // A stale projection from Redis counts too.
        let mut plan = Plan::lookup(&fields_key(), 1.0);
        plan.start();
        plan.tier2(redis_hit(fields("{}", 5), expired()), &CALM);
        plan.answered(answered(origin(502, "{}", None)), &CALM);
        assert_eq!(
            body_of(&plan.fallback(None, None)),
            Some((5, CacheStatus::Stale))
        );
    }

    #[test]
    fn without_a_copy_the_origin_s_5xx_or_a_503_is_answered() {
        let mut plan = failed_lookup(Read::Skipped, answered(origin(500, "{}", None)));
        assert!(matches!(
            plan.fallback(None, None),
            Step::Answer(Answer::Origin(ref a, CacheStatus::Miss)) if a.status == 500
        ));
        let open = unavailable(Unavailable::BreakerOpen(Duration::from_millis(2_500)));
        let mut plan = failed_lookup(Read::Failed, open);
        assert!(matches!(
            plan.fallback(None, None),
            Step::Answer(Answer::Unavailable(why)) if why.retry_after_secs() == 3
        ));
    }

    #[test]
    fn a_shed_tier_2_read_never_asks_the_origin() {
        // With a kept copy: answered STALE; without: a 503 with Retry-After 1 (no origin step).
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        assert!(matches!(plan.tier2(Read::Shed, &CALM), Step::Fallback));
        assert_eq!(
            body_of(&plan.fallback(None, Some(entry(3)))),
            Some((3, CacheStatus::Stale))
        );
        let mut plan = Plan::lookup(&full_key(), 1.0);
        plan.start();
        assert!(matches!(plan.tier2(Read::Shed, &CALM), Step::Fallback));
        assert!(matches!(
            plan.fallback(None, None),
            Step::Answer(Answer::Unavailable(Unavailable::Overloaded))
        ));
        // A spent origin budget is a 503 with the wait until the next token.
        let spent = unavailable(Unavailable::BudgetSpent(Duration::from_millis(1_200)));
        let mut plan = failed_lookup(Read::Miss, spent);
        assert!(matches!(
            plan.fallback(None, None),
            Step::Answer(Answer::Unavailable(why @ Unavailable::BudgetSpent(_)))
                if why.retry_after_secs() == 2
        ));
    }

    #[test]
    fn answer_versions_are_those_of_200_profiles_only() {
        assert_eq!(
            Answer::Body(Body::Full(entry(3)), CacheStatus::L1).version(),
            Some(3)
        );
        assert_eq!(
            Answer::Body(fields("{}", 4), CacheStatus::L2).version(),
            Some(4)
        );
        let ok = origin(200, "{}", Some(5));
        assert_eq!(Answer::Origin(ok, CacheStatus::Miss).version(), Some(5));
        let gone = origin(404, "{}", Some(5));
        assert_eq!(Answer::Origin(gone, CacheStatus::Miss).version(), None);
        assert_eq!(Answer::NotFound(CacheStatus::L2).version(), None);
        assert_eq!(Answer::Unavailable(Unavailable::TimedOut).version(), None);
    }

    // ---- Writes through this instance ----

    #[test]
    fn a_write_through_the_instance_is_kept_for_read_your_writes() {
        let written = origin(200, &profile_json("DevOps"), Some(8));
        let keep = after_write(&Method::PUT, "/users/7", &written);
        assert!(
            matches!(keep, Some(Keep::Fill(ref e, s)) if e.version == 8 && s == Shelf::default())
        );
        let created = origin(201, &profile_json("DevOps"), Some(1));
        assert!(matches!(
            after_write(&Method::POST, "/users", &created),
            Some(Keep::Fill(..))
        ));
        let deleted = origin(204, "", Some(8));
        assert!(matches!(
            after_write(&Method::DELETE, "/users/7", &deleted),
            Some(Keep::Deleted(i, Some(8))) if i == id()
        ));
        // A profile of another id, no version, or a 404: the copy goes.
        for answer in [
            origin(200, &profile_json("DevOps"), None),
            origin(404, "{}", None),
        ] {
            assert!(matches!(
                after_write(&Method::PATCH, "/users/7", &answer),
                Some(Keep::Forget(i)) if i == id()
            ));
        }
        assert!(matches!(
            after_write(&Method::PUT, "/users/8", &written),
            Some(Keep::Forget(_))
        ));
        // Not a write, or a failed one: nothing.
        assert!(after_write(&Method::GET, "/users/7", &written).is_none());
        assert!(after_write(&Method::PUT, "/users/7", &origin(500, "{}", None)).is_none());
        assert!(after_write(&Method::POST, "/users/7", &written).is_none());
    }

    #[test]
    fn a_write_s_plan_keeps_what_the_write_leaves_then_passes_its_answer_on_as_bypass() {
        let mut plan = Plan::write(
            &Method::PUT,
            "/users/7",
            origin(200, &profile_json("DevOps"), Some(8)),
        );
        let step = plan.start();
        assert!(
            matches!(step, Step::Effect(Effect::Keep(Keep::Fill(ref e, _))) if e.version == 8),
            "{step:?}"
        );
        let step = plan.resume();
        assert!(
            matches!(step, Step::Answer(Answer::Origin(ref a, CacheStatus::Bypass)) if a.version() == Some(8)),
            "{step:?}"
        );
        // A failed write leaves nothing: its answer at once.
        let mut plan = Plan::write(&Method::PUT, "/users/7", origin(500, "{}", None));
        assert!(matches!(
            plan.start(),
            Step::Answer(Answer::Origin(ref a, CacheStatus::Bypass)) if a.status == 500
        ));
    }

    // ---- Moved from read.rs ----

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

    // ---- A shared lookup with the process-wide tier ----

    /// A copy in the process-wide tier at `version`: fresh for 1 s more unless `fresh` is false (then soft-
    /// expired, still kept); its shared soft expiry is `shared`.
    fn slot(version: i64, department: &str, fresh: bool, shared: Option<Freshness>) -> SlotValue {
        let fresh_until_ms = if fresh { WALL + 1_000 } else { WALL - 1_000 };
        SlotValue {
            profile: serde_json::from_str(&profile_json(department)).unwrap(),
            version,
            fresh_until_ms,
            keep_until_ms: WALL + 60_000,
            shared,
            tag: crate::feed_tag::FeedTag::default(),
            feed_until_ms: fresh_until_ms,
        }
    }

    fn shared_lookup() -> Plan {
        let mut plan = Plan::lookup(&full_key(), 1.0).with_process_tier();
        assert!(matches!(plan.start(), Step::ProcessTier));
        plan
    }

    #[test]
    fn with_the_shared_tier_a_lookup_reads_it_before_tier_two_but_a_reload_does_not() {
        let mut reload = Plan::lookup(
            &FlightKey {
                reload: true,
                ..full_key()
            },
            1.0,
        )
        .with_process_tier();
        assert!(matches!(reload.start(), Step::Origin { reload: true }));
        for found in [Found::Miss, Found::Skipped] {
            let mut plan = shared_lookup();
            assert!(matches!(plan.process_tier(found, &CALM), Step::Tier2));
        }
    }

    #[test]
    fn a_fresh_shared_copy_is_answered_and_adopted_by_tier_one_no_fresher_than_it_is() {
        let mut plan = shared_lookup();
        let step = plan.process_tier(
            Found::Fresh(slot(5, "Sales", true, fresh()).stored()),
            &CALM,
        );
        let Step::Effect(Effect::Keep(Keep::Adopt(entry, shelf))) = step else {
            panic!("{step:?}");
        };
        assert_eq!(entry.version, 5);
        let f = shelf.freshness.unwrap();
        assert_eq!((f.fresh_until_ms, f.delta_ms), (WALL + 1_000, 0));
        assert_eq!(body_of(&plan.resume()), Some((5, CacheStatus::Shared)));
        // A projection is cut from it: the body is the full profile.
        let mut plan = Plan::lookup(&fields_key(), 1.0).with_process_tier();
        plan.start();
        plan.process_tier(Found::Fresh(slot(5, "Sales", true, None).stored()), &CALM);
        assert!(matches!(
            plan.resume(),
            Step::Answer(Answer::Body(Body::Full(_), CacheStatus::Shared))
        ));
    }

    #[test]
    fn xfetch_refreshes_a_shared_copy_by_its_shared_soft_expiry_and_falls_back_to_it() {
        let mut plan = shared_lookup();
        plan.process_tier(
            Found::Fresh(slot(5, "Sales", true, fresh()).stored()),
            &PICKY,
        );
        assert!(matches!(plan.resume(), Step::Refresh));
        assert_eq!(
            body_of(&plan.refreshed(None, &PICKY)),
            Some((5, CacheStatus::Shared))
        );
        // Without a shared soft expiry (or a cost), never early.
        let mut plan = shared_lookup();
        plan.process_tier(Found::Fresh(slot(5, "Sales", true, None).stored()), &PICKY);
        assert_eq!(body_of(&plan.resume()), Some((5, CacheStatus::Shared)));
    }

    #[test]
    fn a_stale_shared_copy_is_the_fallback_when_it_is_the_newest() {
        let down = || unavailable(Unavailable::TimedOut);
        for (shared, redis, expected) in [
            (6, Some(5), "Shared"),
            (5, Some(5), "Redis"),
            (4, None, "Shared"),
        ] {
            let mut plan = shared_lookup();
            let stale = Found::Stale(slot(shared, "Shared", false, None).stored());
            assert!(matches!(plan.process_tier(stale, &CALM), Step::Tier2));
            let read = match redis {
                Some(v) => redis_hit(Body::Full(entry_in(v, "Redis")), expired()),
                None => Read::Miss,
            };
            if let Step::Effect(_) = plan.tier2(read, &CALM) {
                plan.resume();
            }
            assert!(matches!(plan.answered(down(), &CALM), Step::Fallback));
            let step = plan.fallback(None, None);
            let Step::Answer(Answer::Body(Body::Full(e), CacheStatus::Stale)) = step else {
                panic!("{step:?}");
            };
            assert_eq!(
                e.profile.department.as_str(),
                expected,
                "{shared} vs {redis:?}"
            );
        }
    }
}
