//! The read path of `GET /users/{id}`: tier 1, then tier 2, then the origin, then a stale copy.
//!
//! What to ask and what to accept is decided by [`crate::plan`]; this module carries its steps out
//! (tier 1, the process-wide tier, Redis, the origin, the single-flight, the writes of the tiers) and
//! measures them for `server-timing`, in one executor loop, `ReadPath::run`, for every plan: a
//! request's, the shared lookup it leads or joins, and a forwarded write's.
//!
//! Tier 1 is checked by every request. Requests that miss it and want the same thing (same id, same
//! projection) share one tier-2/origin lookup ([`crate::flight`]). Tier 1 is filled only with full
//! profiles: a full Redis hit, or a `200` full-profile origin answer that parses as a profile.
//! A projection is answered from a tier-1 full entry when there is one, but never fills tier 1. Every
//! write of tier 1, by a read or by a write forwarded through this instance, goes through
//! [`ReadPath::keep`], which also writes the process-wide tier when it is on ([`crate::process_tier`]:
//! read by a lookup before Redis, `x-cache: SHARED`).
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
//!
//! [`Freshness::refresh_early`]: aside_shared::cache::Freshness::refresh_early

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use aside_shared::headers::{CacheStatus, ServerTiming};
use aside_shared::{ApiError, FieldSelection, UserId};
use bytes::Bytes;
use http::Method;

use crate::budget::OriginBudget;
use crate::clock::{self, Deadline, Nanos};
use crate::config::Config;
use crate::copy::{Keeping, ProfileEntry, Shelf};
use crate::feed::{Fallback, Feed, FeedTag, Trust, Verdict};
use crate::flight::SingleFlight;
use crate::forward::{Origin, OriginAnswer, OriginRequest, Unavailable};
use crate::l1::Tier1;
use crate::l2::{Read, Redis};
use crate::metrics::{METRICS, OriginRead, Shed};
use crate::plan::{Answer, Asked, Body, Cached, Effect, Env, FlightKey, Keep, Plan, Step};
use crate::process_budget::{ProcessBudget, Take};
use crate::process_tier::{ProcessTier, SlotValue};
use crate::reply::{Reply, origin_unavailable};
use crate::routes::fields_query;

/// Slack added to the longest a lookup can take (Redis then origin timeouts) for the tier-1 version
/// floors: the host may be slow to run a request whose answer has arrived.
const FLOOR_SLACK: Duration = Duration::from_secs(1);

/// What one shared lookup found, and its tiers' times (`server-timing`), which every request that
/// waited for it reports.
#[derive(Debug)]
pub struct Fetched {
    timing: ServerTiming,
    answer: Answer,
}

/// One run of a plan by [`ReadPath::run`] (a request, a shared lookup or a forwarded write): what it
/// was given, and what it measured and learnt on its way.
struct Run<'r> {
    origin: &'r Origin,
    /// The projection asked for (`None`: the full profile).
    selection: Option<&'r FieldSelection>,
    deadline: Deadline,
    /// The feed position before the copies were asked for: the feed vouches for what the run keeps
    /// from there on.
    tag: FeedTag,
    /// The process-wide tier's copies the feed lets the run trust.
    trust: Option<Trust>,
    /// The tiers' times, in the order visited (a request adds those of the lookups it shared).
    timing: ServerTiming,
    /// Why the origin is asked (`server-timing: origin;desc=...`): what tier 2 said (no tier-2 read: a
    /// miss), or a reload.
    origin_why: OriginRead,
    /// The version of the id the lookup saw in the process-wide tier (a fill never replaces a newer one).
    seen: Option<i64>,
    /// Redis had no entry for the id (not: Redis was skipped or failed): the origin may skip its look.
    redis_missed: bool,
    /// The shared lookup the request waited for last.
    fetched: Option<Rc<Fetched>>,
}

impl<'r> Run<'r> {
    fn new(
        origin: &'r Origin,
        selection: Option<&'r FieldSelection>,
        deadline: Deadline,
        tag: FeedTag,
        trust: Option<Trust>,
    ) -> Self {
        Self {
            origin,
            selection,
            deadline,
            tag,
            trust,
            timing: ServerTiming::new(),
            origin_why: OriginRead::Miss,
            seen: None,
            redis_missed: false,
            fetched: None,
        }
    }

    /// Tier 2's read, which took since `started`.
    fn tier2<T>(&mut self, read: &Read<T>, started: Nanos) {
        self.origin_why = match read {
            Read::Skipped => OriginRead::RedisSkipped,
            Read::Failed => OriginRead::RedisFailed,
            Read::Hit(_) => OriginRead::Expired,
            Read::Miss | Read::Absent | Read::Shed => OriginRead::Miss,
        };
        if read.visited() {
            self.timing.add("l2", clock::millis_since(started));
        }
        self.redis_missed = matches!(read, Read::Miss);
    }
}

/// How a run ended.
enum Ended {
    /// With an answer of its own.
    Answer(Answer),
    /// With what the shared lookup it waited for found.
    Shared(Rc<Fetched>),
}

/// What the read path keeps between the requests of an instance: tier 1, the Redis client, the lookups
/// in flight and the ids being refreshed early.
pub struct ReadPath {
    config: Rc<Config>,
    tier1: RefCell<Tier1>,
    /// The process-wide tier (off unless `shared_tier_store` names a store).
    process_tier: Rc<ProcessTier>,
    redis: Redis,
    flights: Rc<SingleFlight<FlightKey, Rc<Fetched>>>,
    /// Ids being refreshed early (XFetch) by a request of this instance.
    refreshing: RefCell<HashSet<UserId>>,
    /// The instance's budget of origin reads (the only one, or the fallback of the process's).
    budget: RefCell<OriginBudget>,
    /// The process's budget of origin reads (`origin_budget_store`), if configured.
    process_budget: Option<ProcessBudget>,
    /// The invalidation feed: how long copies stay fresh.
    feed: Feed,
    /// How long after it was taken a process-tier copy may be trusted by the feed: as long as the
    /// instances' version floors outlive a lookup that raced an invalidation (see `SlotValue::new`).
    feed_window: Duration,
}

/// The host's clocks and randomness, and the request's deadline, as the plan sees them.
struct Host(Deadline);

impl Env for Host {
    fn wall_ms(&self) -> i64 {
        clock::wall_ms()
    }

    fn unit_random(&self) -> f64 {
        clock::unit_random()
    }

    fn out_of_time(&self) -> bool {
        self.0.remaining().is_zero()
    }
}

impl ReadPath {
    /// `process_tier`: the process-wide tier (which may be off).
    pub fn new(config: Rc<Config>, process_tier: Rc<ProcessTier>) -> Self {
        let longest_lookup = config.redis_timeout + config.origin_timeout + FLOOR_SLACK;
        // Floors also outlive a lagging Redis replica (the edge's `redis_address` may be one): as long
        // as the instance keeps stale copies, it keeps the versions it answered, so a replica that is
        // behind by less than that can never move this instance's answers back.
        let floor_ttl = longest_lookup.max(config.l1_stale);
        Self {
            tier1: RefCell::new(Tier1::new(config.l1, config.l1_stale, floor_ttl)),
            redis: Redis::new(Rc::clone(&config)).sharing(Rc::clone(&process_tier)),
            process_tier,
            flights: Rc::default(),
            refreshing: RefCell::default(),
            budget: RefCell::new(OriginBudget::new(config.origin_budget)),
            process_budget: ProcessBudget::new(&config.origin_budget_store, config.origin_budget),
            feed: Feed::new(Rc::clone(&config)),
            feed_window: floor_ttl.saturating_sub(longest_lookup),
            config,
        }
    }

    /// The feed position a copy asked for now is tagged with (a write forwarded through the instance).
    pub fn feed_tag(&self) -> FeedTag {
        self.feed.verdict(None).tag
    }

    /// The feed's state as this instance last saw it.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// `GET /edge/feed`: brings the instance up to date with the feed, then its state as Prometheus text.
    pub async fn feed_metrics(&self, deadline: Deadline) -> Reply {
        let verdict = self.follow_feed(deadline, None).await;
        let text = self.feed.state().prometheus(
            clock::wall_ms(),
            verdict.fallback,
            self.process_tier.is_on(),
        );
        Reply::text(200, text, "text/plain; version=0.0.4")
    }

    /// Brings the instance up to date with the invalidation feed when it is due (see
    /// [`Feed::refresh`]), and sets what tier 1 may trust. A read of `id` that tier 1 holds no copy
    /// of (and no process-wide tier could answer) does not read the feed: nothing it serves depends on
    /// it (a copy it takes is tagged with the position last read, and the changes after it are applied
    /// by the next read that does), so the feed is read only for the reads it decides. Except a new
    /// instance's first read: its feed read is also its first answer from Redis, the evidence that
    /// tells its later timeouts (a queue) from a silent Redis (crate::backoff); without it, a spike's
    /// new instances sent their first reads to the origin (21 in one spike test, 14 allowed).
    async fn follow_feed(&self, deadline: Deadline, id: Option<UserId>) -> Verdict {
        let needed = id.is_none_or(|id| {
            self.process_tier.is_on()
                || self.feed.never_checked()
                || self.tier1.borrow().holds(&id, clock::now())
        });
        let verdict = if needed {
            let limit = deadline.cap(self.config.redis_timeout);
            self.feed
                .refresh(&self.redis, &self.process_tier, &self.tier1, limit)
                .await
        } else {
            self.feed.verdict(None)
        };
        self.tier1.borrow_mut().set_trust(verdict.trust);
        verdict
    }

    /// The Redis client (its breaker shows in `x-edge-breaker`).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Answers `GET /users/{id}[?fields=...]` by `deadline`, asking `origin` when the caches cannot.
    pub async fn serve(
        &self,
        origin: &Origin,
        id: UserId,
        selection: Option<FieldSelection>,
        deadline: Deadline,
    ) -> Reply {
        let selection = selection.as_ref();
        let verdict = self.follow_feed(deadline, Some(id)).await;
        let mut run = Run::new(origin, selection, deadline, verdict.tag, verdict.trust);
        if verdict.fallback != Some(Fallback::Off) {
            let spent = verdict.spent_ms.unwrap_or(0.0);
            run.timing.add_described("feed", spent, verdict.describe());
        }
        let plan = Plan::read(id, selection, self.config.xfetch_beta);
        let ended = self.run(plan, &mut run).await;
        let timing = std::mem::take(&mut run.timing);
        match ended {
            Ended::Answer(answer) => reply(&answer, id, selection, timing),
            Ended::Shared(found) => reply(&found.answer, id, selection, timing),
        }
    }

    /// A write this instance forwarded came back with `answer`: the tiers keep what the plan decides
    /// for read-your-writes ([`Plan::write`]), carried out by the same executor as a read's, and the
    /// answer is passed on (`x-cache: BYPASS`). `tag` is the feed position taken before the write was
    /// forwarded.
    pub async fn written(
        &self,
        origin: &Origin,
        method: &Method,
        path: &str,
        answer: OriginAnswer,
        tag: FeedTag,
        deadline: Deadline,
    ) -> Reply {
        let mut run = Run::new(origin, None, deadline, tag, None);
        match self.run(Plan::write(method, path, answer), &mut run).await {
            Ended::Answer(Answer::Origin(answer, source)) => Reply::from_origin(&answer, source),
            Ended::Answer(_) | Ended::Shared(_) => {
                unreachable!("a write's plan answers with the origin's answer")
            }
        }
    }

    /// Carries `plan` out: the edge's one executor loop, for a request, a shared lookup and a forwarded
    /// write alike. It does each step the plan returns (tier 1, the process-wide tier, tier 2, the
    /// origin, the shared lookup, the writes of the tiers) and hands what it found to the plan, until
    /// an answer.
    async fn run(&self, mut plan: Plan, run: &mut Run<'_>) -> Ended {
        let host = Host(run.deadline);
        let mut step = plan.start();
        loop {
            step = match step {
                Step::Tier1 => {
                    let started = clock::now();
                    let hit = self.tier1.borrow_mut().get(&plan.id(), started);
                    run.timing.add("l1", clock::millis_since(started));
                    plan.tier1(hit, &host)
                }
                Step::Refresh => {
                    let asked = self.refresh(run.origin, plan.id(), run.deadline).await;
                    if let Some(ms) = asked.as_ref().and_then(|a| a.ms) {
                        let why = OriginRead::Refresh.as_str();
                        run.timing.add_described("origin", ms, why);
                    }
                    plan.refreshed(asked, &host)
                }
                Step::Lookup(key) => {
                    let found = self.shared_lookup(run, key).await;
                    run.timing.append(&found.timing);
                    let version = found.answer.version();
                    run.fetched = Some(found);
                    plan.looked(version)
                }
                Step::Observe(version) => {
                    let observed =
                        self.tier1
                            .borrow_mut()
                            .observe(plan.id(), version, clock::now());
                    plan.observed(observed, &host)
                }
                Step::ProcessTier => {
                    let started = clock::now();
                    let limit = run.deadline.cap(self.config.redis_timeout);
                    let found = self.process_tier.get(plan.id(), run.trust, limit).await;
                    if found.visited() {
                        run.timing.add("shared", clock::millis_since(started));
                    }
                    run.seen = found.version();
                    plan.process_tier(found, &host)
                }
                Step::Tier2 => {
                    let started = clock::now();
                    let read = self
                        .read_tier2(plan.id(), run.selection, run.deadline)
                        .await;
                    run.tier2(&read, started);
                    plan.tier2(read, &host)
                }
                Step::Origin { reload } => {
                    let asked = self.origin_step(run, plan.id(), reload).await;
                    plan.answered(asked, &host)
                }
                Step::Fallback => {
                    let now = clock::now();
                    let mut tier1 = self.tier1.borrow_mut();
                    let fresh = tier1.get(&plan.id(), now).map(|hit| hit.entry);
                    let kept = tier1.stale(&plan.id(), now);
                    drop(tier1);
                    plan.fallback(fresh, kept)
                }
                Step::Effect(effect) => {
                    self.carry_out(effect, run.seen, run.tag, run.deadline)
                        .await;
                    plan.resume()
                }
                Step::Answer(answer) => return Ended::Answer(answer),
                Step::AnswerLookup => {
                    let found = run.fetched.take().expect("a lookup precedes its answer");
                    return Ended::Shared(found);
                }
            }
        }
    }

    /// A write of tier 1 or a log line the plan asked for; `seen` is the version of the id the lookup
    /// found in the process-wide tier, `tag` the feed position before the copy was asked for.
    async fn carry_out(&self, effect: Effect, seen: Option<i64>, tag: FeedTag, deadline: Deadline) {
        match effect {
            Effect::Keep(keep) => self.keep(keep, seen, tag, deadline).await,
            Effect::Note(note) => eprintln!("aside-edge: {note}"),
        }
    }

    /// Writes tier 1: the one place that does. When the process-wide tier is on, what tier 1 accepted goes
    /// there too (unless that lookup saw a newer version of the id there: `seen`), and what tier 1
    /// drops leaves it, within `redis_timeout_ms` and what is left of the budget.
    ///
    /// `tag` is the feed position taken before the copy was asked for (a copy adopted from the shared
    /// tier keeps its own): the feed vouches for the copy only from there on.
    async fn keep(&self, keep: Keep, seen: Option<i64>, tag: FeedTag, deadline: Deadline) {
        let now = clock::now();
        let now_ms = clock::wall_ms();
        let share = {
            let mut tier1 = self.tier1.borrow_mut();
            match keep {
                Keep::Fill(entry, shelf) => {
                    let shelf = Shelf { tag, ..shelf };
                    tier1
                        .fill(entry.clone(), shelf, now, now_ms)
                        .then_some(Ok((entry, shelf)))
                }
                Keep::Adopt(entry, shelf) => {
                    tier1.fill(entry, shelf, now, now_ms);
                    None
                }
                Keep::Forget(id) => {
                    tier1.remove(&id);
                    Some(Err(id))
                }
                Keep::Deleted(id, version) => {
                    tier1.deleted(id, version, now);
                    Some(Err(id))
                }
            }
        };
        let Some(share) = share.filter(|_| self.process_tier.is_on()) else {
            return;
        };
        let limit = deadline.cap(self.config.redis_timeout);
        match share {
            Ok((entry, shelf)) => {
                let keeping = Keeping {
                    ttl: self.config.l1.ttl,
                    stale: self.config.l1_stale,
                    feed_window: Some(self.feed_window),
                };
                let value = SlotValue::new(&entry, shelf, now_ms, keeping);
                self.process_tier.put(&value, seen, limit).await;
            }
            Err(id) => self.process_tier.forget(id, limit).await,
        }
    }

    /// The lookup past tier 1 for `key`, shared by every request with the same key: joined if one is
    /// in flight in this instance, else led by this request.
    async fn shared_lookup(&self, run: &Run<'_>, key: FlightKey) -> Rc<Fetched> {
        let (origin, selection, deadline) = (run.origin, run.selection, run.deadline);
        let lookup = || self.lookup(origin, key.clone(), selection, deadline);
        let (found, _role) = self.flights.run(key.clone(), lookup).await;
        found
    }

    /// One lookup past tier 1: the lookup's plan ([`Plan::lookup`]) run by the same executor as the
    /// request that leads it (boxed: the executor runs itself); `selection` is the one the key was
    /// made from.
    fn lookup<'a>(
        &'a self,
        origin: &'a Origin,
        key: FlightKey,
        selection: Option<&'a FieldSelection>,
        deadline: Deadline,
    ) -> Pin<Box<dyn Future<Output = Rc<Fetched>> + 'a>> {
        Box::pin(async move {
            // Taken before any tier is asked: the feed vouches for what this lookup brings from here on.
            let at_start = self.feed.verdict(None);
            let mut plan = Plan::lookup(&key, self.config.xfetch_beta);
            if self.process_tier.is_on() {
                plan = plan.with_process_tier();
            }
            let mut run = Run::new(origin, selection, deadline, at_start.tag, at_start.trust);
            match self.run(plan, &mut run).await {
                Ended::Answer(answer) => Rc::new(Fetched {
                    timing: run.timing,
                    answer,
                }),
                Ended::Shared(_) => unreachable!("a lookup's plan waits for no other lookup"),
            }
        })
    }

    /// A lookup's origin call, with its time (and the origin's own `server-timing`) in the run's.
    async fn origin_step(&self, run: &mut Run<'_>, id: UserId, reload: bool) -> Asked {
        if reload {
            run.origin_why = OriginRead::Reload;
        }
        let ask = Ask {
            reload,
            redis_missed: run.redis_missed,
        };
        let (origin, selection, why) = (run.origin, run.selection, run.origin_why);
        let asked = self
            .ask_origin(origin, id, selection, ask, why, run.deadline)
            .await;
        if let Some(ms) = asked.ms {
            run.timing.add_described("origin", ms, why.as_str());
        }
        if let Some(upstream) = asked.result.as_ref().ok().and_then(|a| a.timing.as_deref()) {
            run.timing.add_prefixed("origin", upstream);
        }
        asked
    }

    /// Tier 2's copy of the profile (`HGETALL`) or of the projection (`HMGET`), within
    /// `redis_timeout_ms` and what is left of the budget.
    async fn read_tier2(
        &self,
        id: UserId,
        selection: Option<&FieldSelection>,
        deadline: Deadline,
    ) -> Read<Cached> {
        let limit = deadline.cap(self.config.redis_timeout);
        match selection {
            None => self
                .redis
                .read_profile(id, limit, deadline)
                .await
                .map(|cached| Cached {
                    body: Body::Full(ProfileEntry::new(cached.profile, cached.version)),
                    freshness: cached.freshness,
                }),
            Some(s) => {
                let read = self.redis.read_fields(id, s, limit, deadline).await;
                read.map(|(projection, version, freshness)| Cached {
                    body: Body::Fields {
                        json: Bytes::from(projection.to_string()),
                        version,
                    },
                    freshness,
                })
            }
        }
    }

    /// Origin reads the budget would grant at once now (`None`: no budget): the process's when it is
    /// kept in a store that answers, else the instance's.
    pub fn budget_tokens(&self) -> Option<f64> {
        self.process_budget
            .as_ref()
            .and_then(|p| p.tokens_at(clock::wall_us()))
            .or_else(|| self.budget.borrow().tokens_at(clock::now()))
    }

    /// One take from the origin budget: the process's if configured and it can decide, else the
    /// instance's.
    fn take_budget(&self) -> Result<(), Duration> {
        if let Some(process) = &self.process_budget {
            match process.take(clock::wall_us) {
                Take::Granted => return Ok(()),
                Take::Refused(wait) => return Err(wait),
                Take::Unavailable => METRICS.budget_fallback(),
            }
        }
        self.budget.borrow_mut().take(clock::now())
    }

    /// A read's origin call (`why`: for the metrics), taken from the instance's origin budget.
    async fn ask_origin(
        &self,
        origin: &Origin,
        id: UserId,
        selection: Option<&FieldSelection>,
        ask: Ask,
        why: OriginRead,
        deadline: Deadline,
    ) -> Asked {
        let taken = self.take_budget();
        METRICS.budget(taken.is_ok());
        if let Err(wait) = taken {
            let refused = self.budget.borrow_mut().note_refused();
            // One line for the first refusal and then one per 1,000: a spent budget under a flood would
            // otherwise log every request.
            if refused % 1000 == 1 {
                eprintln!(
                    "aside-edge: origin budget spent ({} reads/s, burst {}, per {}): reads the tiers \
                     cannot answer get a stale copy or 503 (refused so far by this instance: {refused})",
                    self.config.origin_budget.per_second,
                    self.config.origin_budget.burst,
                    if self.process_budget.is_some() {
                        "process"
                    } else {
                        "instance"
                    }
                );
            }
            return Asked {
                result: Err(Unavailable::BudgetSpent(wait)),
                ms: None,
            };
        }
        METRICS.origin_read(why);
        ask_origin(origin, id, selection, ask, deadline).await
    }

    /// An early refresh: the origin reloads the full profile from PostgreSQL. `None` when another
    /// request of this instance is refreshing the id (one at a time; the others answer their copy).
    async fn refresh(&self, origin: &Origin, id: UserId, deadline: Deadline) -> Option<Asked> {
        let _refreshing = Refreshing::start(&self.refreshing, id)?;
        let ask = Ask {
            reload: true,
            redis_missed: false,
        };
        Some(
            self.ask_origin(origin, id, None, ask, OriginRead::Refresh, deadline)
                .await,
        )
    }
}

/// An id being refreshed early by this request. Released when dropped (also when the refreshing
/// request is cancelled).
struct Refreshing<'a> {
    ids: &'a RefCell<HashSet<UserId>>,
    id: UserId,
}

impl<'a> Refreshing<'a> {
    fn start(ids: &'a RefCell<HashSet<UserId>>, id: UserId) -> Option<Self> {
        // `then`, not `then_some`: a refused guard must never exist (its drop would remove the id
        // another request is refreshing, while the set is still borrowed here).
        ids.borrow_mut().insert(id).then(|| Self { ids, id })
    }
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.ids.borrow_mut().remove(&self.id);
    }
}

/// How a read asks the origin.
#[derive(Debug, Clone, Copy)]
struct Ask {
    /// Reload from PostgreSQL (`cache-control: no-cache`).
    reload: bool,
    /// Redis had no entry a moment ago (`x-aside-redis: miss`).
    redis_missed: bool,
}

/// `GET /users/{id}[?fields]` at the origin, and the time it took, `None` when it was not asked
/// (breaker open).
async fn ask_origin(
    origin: &Origin,
    id: UserId,
    selection: Option<&FieldSelection>,
    ask: Ask,
    deadline: Deadline,
) -> Asked {
    let path = match selection {
        None => format!("/users/{id}"),
        Some(s) => format!("/users/{id}?{}", fields_query(s)),
    };
    let started = clock::now();
    let request = OriginRequest {
        no_cache: ask.reload,
        redis_missed: ask.redis_missed,
        ..OriginRequest::get(&path)
    };
    let result = origin.call(request, deadline).await;
    let ms = match &result {
        Err(Unavailable::BreakerOpen(_) | Unavailable::BudgetSpent(_)) => None,
        _ => Some(clock::millis_since(started)),
    };
    Asked { result, ms }
}

/// Why a read the origin could not answer (and with no copy) was answered 503, for the metrics.
fn shed_cause(why: Unavailable) -> Shed {
    match why {
        Unavailable::Overloaded => Shed::RedisUnheard,
        Unavailable::BudgetSpent(_) => Shed::OriginBudget,
        Unavailable::BreakerOpen(_) => Shed::OriginBreaker,
        Unavailable::TimedOut => Shed::OriginTimeout,
        Unavailable::Unreachable => Shed::OriginUnreachable,
    }
}

/// The reply to a read: a profile (cut to `selection` when it is the full one) with its version as
/// `etag`, the origin's answer, a 404 or a 503.
fn reply(
    answer: &Answer,
    id: UserId,
    selection: Option<&FieldSelection>,
    timing: ServerTiming,
) -> Reply {
    let reply = match answer {
        Answer::Body(Body::Full(entry), source) => {
            let json = match selection {
                None => entry.json.clone(),
                Some(s) => Bytes::from(s.project(&entry.profile).to_string()),
            };
            Reply::json(200, json, *source).etag(entry.version)
        }
        Answer::Body(Body::Fields { json, version }, source) => {
            Reply::json(200, json.clone(), *source).etag(*version)
        }
        Answer::Origin(answer, source) => Reply::from_origin(answer, *source),
        Answer::NotFound(source) => Reply::error(&ApiError::user_not_found(id), *source),
        Answer::Unavailable(why) => {
            METRICS.shed(shed_cause(*why));
            Reply::error(
                &origin_unavailable(why.retry_after_secs()),
                CacheStatus::Miss,
            )
        }
    };
    reply.timing(timing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_refresh_of_an_id_is_refused_and_leaves_the_first_in_place() {
        let ids = RefCell::new(HashSet::new());
        let id = UserId::parse("7").unwrap();
        let first = Refreshing::start(&ids, id).expect("the first refresh starts");
        assert!(Refreshing::start(&ids, id).is_none());
        assert!(ids.borrow().contains(&id), "still refreshing");
        drop(first);
        assert!(ids.borrow().is_empty());
    }
}
