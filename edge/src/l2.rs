//! Tier 2: read-only profile lookups in Redis through Spin's Redis binding (`spin:redis/redis@3.0.0`).
//!
//! The edge's Redis user may only read (`HGETALL`, `HMGET`, ...), so both reads go through
//! [`Redis::execute`]. Connections are pooled per instance ([`Pool`]): a command takes an idle
//! connection, or opens one when none is idle, so at most one command is in flight on each connection.
//! Spin's binding writes each command on a socket with Nagle's algorithm on, so a command written while
//! another is unanswered on the same connection waits for that one's ACK: about one more round trip.
//! Spin reuses instances, so a connection's connect and `AUTH` are paid once per instance, not per request.
//! At most `redis_max_connections` are open per instance (default 16, Spin's default of concurrent
//! requests per instance); at that bound a command shares the connection with the fewest commands in
//! flight rather than waiting or skipping Redis.
//!
//! A failure (cannot connect, command error, or a timeout the edge cannot put down to its own saturation,
//! [`crate::backoff::Verdict`]) drops the connection and counts towards the breaker ([`crate::backoff`]):
//! after `redis_failure_threshold` consecutive failures the next requests go straight to the origin until
//! a probe succeeds. A request whose call timed out goes to the origin only if Redis turned out silent
//! ([`crate::backoff::silent`]); otherwise it is shed, never sent to the origin. A connection that had answered before and now fails (Redis restarted and closed it
//! while it sat in the pool) is dropped with every other idle one, and the command is tried once more on a
//! new connection within the same time limit: a restart costs no request its Redis read.
//! A hash that is missing or does not parse is a plain miss: it says nothing about Redis's health.
//! The invalidation feed's `XREAD` ([`Redis::read_feed`]) is the exception: it shares the connections
//! but not the breaker or the timeout verdicts; when it fails or is late, only the feed is late.
//!
//! **On a Redis Cluster** (`redis_mode = cluster`, [`crate::cluster`]) each command goes to the primary
//! that serves its key's slot, with a pool per node (opened lazily, each bounded by
//! `redis_max_connections`). The slot map is asked with `CLUSTER SLOTS` (first of `redis_address`, then
//! of the primaries already known) before the instance's first command, and again (at most every
//! [`SLOT_MAP_REFRESH`]) after a `MOVED` or after a node failed. A `MOVED` answer corrects the map for
//! its slot and the command is sent once more, to the node named; an `ASK` answer sends it once more to
//! the node named, after `ASKING` on the same connection. A second redirection is not followed: the read
//! is a miss (the origin answers it) and never an error. A redirection is an answer: it counts towards
//! nothing in the breaker and keeps its connection. One breaker per instance covers every node: a node
//! that fails opens it like a single Redis would (reads go to the origin until a probe succeeds).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use std::time::Duration;

use aside_shared::cache::{
    CacheEntry, Freshness, Projection, hmget_fields, profile_key, projection_from_hmget,
};
use aside_shared::slot::key_slot;
use aside_shared::{CachedProfile, FieldSelection, UserId};
use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

use crate::backoff::{
    self, Attempt, Breaker, Failing, Saturated, Stalled, Transition, Verdict, Visible,
};
use crate::clock::{self, Deadline, Nanos};
use crate::cluster::{Redirect, SlotMap};
use crate::config::{Config, RedisMode};
use crate::flight::SingleFlight;
use crate::metrics::{Backend, METRICS, RedirectKind};
use crate::process_tier::{ProcessTier, REDIS_BREAKER_KEY};

/// On a cluster, the slot map is asked again at most this often per instance (after a `MOVED`, a
/// failed node, or while none could be learnt).
pub const SLOT_MAP_REFRESH: Duration = Duration::from_millis(250);

pub use crate::outcome::Read;

/// The instance's Redis client state.
pub struct Redis {
    config: Rc<Config>,
    /// A pool per node, by `host:port`: one (`redis_address`) in single mode.
    pools: RefCell<Vec<(String, Rc<Pool<Connection>>)>>,
    /// On a cluster: which primary serves which slot, once learnt.
    slots: RefCell<Option<SlotMap>>,
    /// On a cluster: the map should be asked again (a `MOVED`, a node failed).
    slots_stale: Cell<bool>,
    /// When the map was last asked for (0: never).
    slots_asked: Cell<Nanos>,
    /// Concurrent commands share one `CLUSTER SLOTS`.
    slots_refresh: Rc<SingleFlight<(), ()>>,
    /// Redirections followed or not, by kind (for the log: the first and then one in 100).
    redirects: Cell<[u64; 3]>,
    /// With `redis_read_from = replica`: which of a primary's replicas this instance reads (instances
    /// spread over them).
    replica_pick: usize,
    breaker: RefCell<Breaker>,
    /// When Redis last answered a command of this instance: evidence that it is up while another
    /// command waits (see [`Verdict::of_timeout`]).
    last_answer: Cell<Nanos>,
    /// How long Redis's recent answers took, a moving average (evidence too).
    recent_answers: Cell<Option<Duration>>,
    /// When the breaker last counted a timeout: calls started before it do not count again.
    counted_timeout: Cell<Nanos>,
    /// Requests shed because Redis could not be heard within their budget (for the log).
    shed: Cell<u64>,
    /// Reads of the invalidation feed that failed or came late (for the log).
    feed_failures: Cell<u64>,
    /// How long each connection opened since the last answer took (connect, `AUTH`, `SELECT`), in ms:
    /// the next answers of the instance report one each (`server-timing: redis_open`).
    opens: RefCell<Vec<f64>>,
    /// The process-wide tier, when it is on: where the breaker's mark is shared ([`Redis::sharing`]).
    shared: Option<Rc<ProcessTier>>,
    /// A state change of the breaker not yet written to the process-wide tier.
    unpublished: Cell<Option<Transition>>,
}

/// One pooled connection and how many commands are in flight on it (more than one only at the bound).
struct Pooled<C> {
    connection: C,
    in_flight: Cell<usize>,
    /// Whether a command has completed on it: a failure then may be a connection that died idle.
    answered: Cell<bool>,
}

/// A connection taken from the [`Pool`] for one command; given back when dropped.
struct Lease<C> {
    pooled: Rc<Pooled<C>>,
}

impl<C> Drop for Lease<C> {
    fn drop(&mut self) {
        self.pooled.in_flight.set(self.pooled.in_flight.get() - 1);
    }
}

/// The instance's connections (generic over the connection so the policy is tested natively).
/// Single-threaded (an instance runs on one thread), so plain cells.
struct Pool<C> {
    /// `redis_max_connections`: open or being opened, at most this many.
    bound: usize,
    /// The open connections, idle or busy, oldest first.
    open: RefCell<Vec<Rc<Pooled<C>>>>,
    /// Connections being opened, each under its own key in `opening`.
    pending: RefCell<Vec<u64>>,
    next_key: Cell<u64>,
    /// At the bound with every connection still being opened, a command joins one of those opens.
    opening: Rc<SingleFlight<u64, Option<Rc<Pooled<C>>>>>,
}

/// Counts a connection as being opened until its open ends (or its request is cancelled).
struct Opening<'a, C> {
    pool: &'a Pool<C>,
    key: u64,
}

impl<C> Drop for Opening<'_, C> {
    fn drop(&mut self) {
        self.pool.pending.borrow_mut().retain(|k| *k != self.key);
    }
}

impl<C> Pool<C> {
    fn new(bound: usize) -> Self {
        Self {
            bound: bound.max(1),
            open: RefCell::default(),
            pending: RefCell::default(),
            next_key: Cell::new(0),
            opening: Rc::default(),
        }
    }

    /// A connection for one command: an idle one, else a new one (`open`) while fewer than the bound
    /// are open or being opened, else the least busy open one. `None`: a new connection was needed and
    /// `open` could not open it.
    async fn take<F, Fut>(&self, open: F) -> Option<Lease<C>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<C>>,
    {
        let mut open = Some(open);
        loop {
            let least_busy = self
                .open
                .borrow()
                .iter()
                .rev()
                .min_by_key(|p| p.in_flight.get())
                .cloned();
            if let Some(pooled) = least_busy.as_ref().filter(|p| p.in_flight.get() == 0) {
                return Some(Self::lease(pooled));
            }
            if self.open.borrow().len() + self.pending.borrow().len() < self.bound
                && let Some(open) = open.take()
            {
                return self.open_new(open).await.map(|p| Self::lease(&p));
            }
            if let Some(pooled) = least_busy {
                return Some(Self::lease(&pooled));
            }
            // At the bound and every connection is still being opened: share the oldest open's result.
            let key = *self.pending.borrow().first()?;
            if let (Some(pooled), _) = self.opening.run(key, || async { None }).await {
                return Some(Self::lease(&pooled));
            }
            // That open failed or ended before it could be joined: look again.
        }
    }

    fn lease(pooled: &Rc<Pooled<C>>) -> Lease<C> {
        pooled.in_flight.set(pooled.in_flight.get() + 1);
        Lease {
            pooled: Rc::clone(pooled),
        }
    }

    /// Opens a connection with `open` and adds it to the pool.
    async fn open_new<Fut>(&self, open: impl FnOnce() -> Fut) -> Option<Rc<Pooled<C>>>
    where
        Fut: Future<Output = Option<C>>,
    {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        self.pending.borrow_mut().push(key);
        let _opening = Opening { pool: self, key };
        let (pooled, _) = self
            .opening
            .run(key, || async {
                let pooled = Rc::new(Pooled {
                    connection: open().await?,
                    in_flight: Cell::new(0),
                    answered: Cell::new(false),
                });
                self.open.borrow_mut().push(Rc::clone(&pooled));
                Some(pooled)
            })
            .await;
        pooled
    }

    /// Drops `pooled` from the pool (closed once its last lease is given back).
    fn discard(&self, pooled: &Rc<Pooled<C>>) {
        self.open.borrow_mut().retain(|p| !Rc::ptr_eq(p, pooled));
    }

    /// Drops every idle connection: after one that had answered fails, the others opened before it are
    /// suspect too (a restarted Redis closed them all).
    fn discard_idle(&self) {
        self.open.borrow_mut().retain(|p| p.in_flight.get() > 0);
    }
}

/// Why a command did not produce a usable reply.
#[derive(Debug, Clone)]
enum Failure {
    /// Not heard within the request's budget while the edge was saturated: shed, nobody blamed.
    Unheard(Verdict),
    Connect,
    Command(String),
    TimedOut,
    /// A cluster node answered that the key's slot is served elsewhere ([`crate::cluster`]).
    Redirected(Redirect),
}

/// One command's call through [`Redis::execute`]: its breaker permit and what its waits showed.
struct Call<'a> {
    /// The breaker's permit, until the outcome (or a timeout counted early) is reported.
    permit: Option<Attempt<'a>>,
    /// A timeout already counted against Redis (its state change, to report).
    counted: Option<Transition>,
    /// A wait judged to be the edge's own saturation.
    saturated: Option<Verdict>,
    started: Nanos,
    /// Started with less than half of the request's budget left.
    late: bool,
    limit: Duration,
    deadline: Deadline,
}

impl Redis {
    /// One connection opened since the last call, and how long its opening took (ms): what an answer
    /// reports as `server-timing: redis_open` (docs/operations.md, "Overload": the instance's start).
    pub fn take_open(&self) -> Option<f64> {
        self.opens.borrow_mut().pop()
    }

    pub fn new(config: Rc<Config>) -> Self {
        let settings = config.redis_breaker;
        Self {
            pools: RefCell::default(),
            slots: RefCell::default(),
            slots_stale: Cell::new(false),
            slots_asked: Cell::new(0),
            slots_refresh: Rc::default(),
            redirects: Cell::new([0; 3]),
            replica_pick: clock::now() as usize / 1000,
            config,
            breaker: RefCell::new(Breaker::new(settings.threshold, settings.backoff)),
            last_answer: Cell::new(0),
            recent_answers: Cell::new(None),
            counted_timeout: Cell::new(0),
            shed: Cell::new(0),
            feed_failures: Cell::new(0),
            opens: RefCell::default(),
            shared: None,
            unpublished: Cell::new(None),
        }
    }

    /// Shares the breaker through the process-wide tier (when it is on): when it opens (Redis failing,
    /// never the edge's own saturation: a saturated wait counts towards nothing), it leaves a mark until
    /// the end of its back-off, and every instance started before then starts with its breaker open
    /// for what is left ([`Redis::restore`]) instead of each paying its first reads' Redis timeouts to
    /// find out. A probe that succeeds clears the mark.
    pub fn sharing(self, shared: Rc<ProcessTier>) -> Self {
        Self {
            shared: Some(shared).filter(|s| s.is_on()),
            ..self
        }
    }

    /// A new instance's breaker: open for what is left of the back-off another instance of the process
    /// started, if one is running.
    pub async fn restore(&self) {
        let Some(shared) = &self.shared else { return };
        if let Some(left) = shared
            .breaker_left(REDIS_BREAKER_KEY, self.config.redis_timeout)
            .await
        {
            self.breaker.borrow_mut().open_for(left, clock::now());
            eprintln!(
                "aside-edge: redis breaker open for {} ms more: another instance found Redis failing; \
                 reads skip Redis until then, then one request probes it",
                left.as_millis()
            );
        }
    }

    /// Writes the breaker's last state change to the process-wide tier: a mark until the end of the
    /// back-off when it opened, none when it closed; within `limit`.
    async fn publish(&self, limit: Duration) {
        let (Some(shared), Some(transition)) = (&self.shared, self.unpublished.take()) else {
            return;
        };
        shared
            .publish_breaker(
                REDIS_BREAKER_KEY,
                transition == Transition::Opened,
                self.config.redis_breaker.backoff,
                limit,
            )
            .await;
    }

    /// The breaker's state, for `x-edge-breaker`.
    pub fn breaker(&self) -> Visible {
        self.breaker.borrow().visible()
    }

    /// `HGETALL user:profile:{id}`, parsed into the full profile; at most `limit`.
    pub async fn read_profile(
        &self,
        id: UserId,
        limit: Duration,
        deadline: Deadline,
    ) -> Read<CachedProfile> {
        let key = profile_key(id).into_bytes();
        match self
            .execute(
                "HGETALL",
                vec![RedisParameter::Binary(key)],
                limit,
                deadline,
            )
            .await
        {
            Read::Hit(reply) => match hash_entries(reply).map(|e| CacheEntry::from_hash(id, e)) {
                Some(Ok(CacheEntry::Present(cached))) => Read::Hit(cached),
                Some(Ok(CacheEntry::Missing(_) | CacheEntry::Deleted(_))) => Read::Absent,
                Some(Err(_)) | None => Read::Miss,
            },
            Read::Miss => Read::Miss,
            Read::Absent => Read::Absent,
            Read::Skipped => Read::Skipped,
            Read::Failed => Read::Failed,
            Read::Shed => Read::Shed,
        }
    }

    /// A non-blocking `XREAD COUNT <count> STREAMS aside:{feed} <after>` of the invalidation feed
    /// ([`crate::feed`]): the reply as Spin flattens it, nils as `None` (an empty list when there is
    /// nothing new); at most `limit`. `Err(true)` when Redis answered with a data error (the key is not a
    /// stream), `Err(false)` when the read failed, came late or was not tried.
    ///
    /// The feed's read stays out of the breaker and of the timeout verdicts of profile reads
    /// ([`Redis::execute`]): a read that fails or is late makes the *feed* late (copies fall back to
    /// the `l1_ttl_ms` rule, crate::feed) and nothing else. It never counts towards the breaker, never
    /// opens or closes it, never sends a read to the origin, and is not waited for past `limit` (under
    /// saturation a late feed is just a late feed; the late call is left to finish, crate::clock). It
    /// is not tried while the breaker is open or probing: profile reads judge Redis, the feed is late
    /// meanwhile. It shares the instance's connections, and its answers are evidence that Redis is up.
    pub async fn read_feed(
        &self,
        after: &str,
        count: usize,
        limit: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, bool> {
        if limit.is_zero() || !self.breaker.borrow().is_closed() {
            return Err(false);
        }
        let arguments: Vec<RedisParameter> = [
            b"COUNT".to_vec(),
            count.to_string().into_bytes(),
            b"STREAMS".to_vec(),
            aside_shared::feed::FEED_KEY.as_bytes().to_vec(),
            after.as_bytes().to_vec(),
        ]
        .into_iter()
        .map(RedisParameter::Binary)
        .collect();
        let started = clock::now();
        let mut address = self
            .node_for(Some(aside_shared::feed::FEED_KEY.as_bytes()), limit / 2)
            .await;
        let mut asking = false;
        let mut redirected = false;
        let outcome = loop {
            let left =
                limit.saturating_sub(Duration::from_nanos(clock::now().saturating_sub(started)));
            match self
                .call(&address, "XREAD", arguments.clone(), left, asking)
                .await
            {
                Err(Failure::Redirected(redirect)) if !redirected => {
                    redirected = true;
                    asking = self.follow(&redirect, "XREAD");
                    address = redirect.address().to_string();
                }
                Err(Failure::Redirected(redirect)) => {
                    self.unresolved(&redirect, "XREAD");
                    break Err(Failure::Redirected(redirect));
                }
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(Some(reply)) => Ok(reply.into_iter().map(bytes_of).collect()),
            Ok(None) => Err(true),
            Err(failure) => {
                let failures = self.feed_failures.get() + 1;
                self.feed_failures.set(failures);
                // The first and then one in 100 (the feed logs its own changes of state).
                if failures % 100 == 1 {
                    let why = self.describe_failure(&failure, limit);
                    eprintln!(
                        "aside-edge: redis XREAD of the feed {why}: the feed is late (not counted by \
                         the redis breaker; no read goes to the origin for it; failed feed reads so \
                         far by this instance: {failures})"
                    );
                }
                Err(false)
            }
        }
    }

    /// `HMGET user:profile:{id} <fields> _version _state _fresh_until _delta_ms`, as the `?fields` JSON
    /// answer, the version it was taken from and its freshness; at most `limit`.
    pub async fn read_fields(
        &self,
        id: UserId,
        selection: &FieldSelection,
        limit: Duration,
        deadline: Deadline,
    ) -> Read<(serde_json::Value, i64, Option<Freshness>)> {
        let mut arguments = vec![RedisParameter::Binary(profile_key(id).into_bytes())];
        arguments.extend(
            hmget_fields(selection)
                .into_iter()
                .map(|f| RedisParameter::Binary(f.as_bytes().to_vec())),
        );
        match self.execute("HMGET", arguments, limit, deadline).await {
            Read::Hit(reply) => match projection_from_hmget(id, selection, &hmget_values(reply)) {
                Ok(Projection::Present {
                    body,
                    version,
                    freshness,
                }) => Read::Hit((body, version, freshness)),
                Ok(Projection::Absent) => Read::Absent,
                Err(_) => Read::Miss,
            },
            Read::Miss => Read::Miss,
            Read::Absent => Read::Absent,
            Read::Skipped => Read::Skipped,
            Read::Failed => Read::Failed,
            Read::Shed => Read::Shed,
        }
    }

    /// Runs one command under the breaker and the timeout (`limit`, the smaller of `redis_timeout_ms`
    /// and what is left of the request's budget), on a pooled connection no other command is using
    /// (below the bound). `Miss` here means "Redis answered with a data error" (a key of the wrong type):
    /// reachable, but nothing to use. The edge's Redis user may only read: write commands fail.
    ///
    /// A command still unanswered at `limit` is judged by [`Verdict::of_timeout`]: a failure of
    /// Redis counts towards the breaker at once; a stall put down to the edge's own saturation blames
    /// nothing. Either way the request keeps waiting for the same answer within its patience (Redis
    /// may be up: giving its load to the origin would only add work); still unanswered, it goes on
    /// without Redis (`Failed`, the origin) only if Redis is silent ([`backoff::silent`]: the call
    /// started on time and nothing of the instance was answered for a whole timeout), else it gives
    /// up (`Shed`: answered from a stale copy or with a 503, never through the origin).
    /// A late call is never cancelled (crate::clock): it keeps its connection until it ends.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Vec<RedisParameter>,
        limit: Duration,
        deadline: Deadline,
    ) -> Read<Vec<RedisResult>> {
        if limit.is_zero() {
            return Read::Skipped;
        }
        let started = clock::now();
        let Some(permit) = Attempt::start(&self.breaker, started) else {
            return Read::Skipped;
        };
        let mut call = Call {
            permit: Some(permit),
            counted: None,
            saturated: None,
            started,
            // More than half of the request's budget spent before Redis was asked: any timeout of
            // this call is the instance's queue (crate::backoff, `started_late`).
            late: backoff::started_late(self.config.request_budget, deadline.remaining_at(started)),
            limit,
            deadline,
        };
        let attempt = self.attempt(command, arguments, &mut call).await;
        if attempt.is_ok() {
            self.answered(Duration::from_nanos(clock::now().saturating_sub(started)));
        }
        let read = self.conclude(command, attempt, call);
        self.publish(deadline.cap(self.config.redis_timeout)).await;
        read
    }

    /// Sends `command` (to the node that owns its key, following one redirection, and once more on a
    /// new connection when a pooled one that had answered fails) until an answer, a failure, or the
    /// end of its patience. `Ok(None)`: no usable reply (a data error, or redirected twice).
    async fn attempt(
        &self,
        command: &str,
        arguments: Vec<RedisParameter>,
        call: &mut Call<'_>,
    ) -> Result<Option<Vec<RedisResult>>, Failure> {
        let (limit, started, late, deadline) = (call.limit, call.started, call.late, call.deadline);
        let key = match arguments.first() {
            Some(RedisParameter::Binary(key)) => Some(key.as_slice()),
            _ => None,
        };
        let mut address = self.node_for(key, limit / 2).await;
        let (mut asking, mut redirected, mut retried) = (false, false, false);
        loop {
            let why_not = Cell::new(None);
            let pool = self.pool_of(&address);
            let url = self.url_of(&address);
            let Some(lease) = pool
                .take(|| {
                    self.open(
                        (&url, self.is_replica(&address)),
                        limit,
                        (started, late),
                        deadline,
                        &why_not,
                    )
                })
                .await
            else {
                return Err(match why_not.take() {
                    Some(Failure::Unheard(verdict)) => {
                        call.saturated = Some(verdict);
                        Failure::TimedOut
                    }
                    failed => {
                        // The node cannot be reached: on a cluster it may have failed over, so the
                        // map is due for a refresh (at most every SLOT_MAP_REFRESH). Without this an
                        // instance whose pooled connections to a killed primary were gone kept
                        // sending its slots there after the promotion, until Spin retired it.
                        self.node_failed();
                        // None: joined another request's open, which failed.
                        failed.unwrap_or(Failure::Connect)
                    }
                });
            };
            let pooled = Rc::clone(&lease.pooled);
            let sent = leased_call(
                lease,
                self.redirectable(&address),
                command,
                arguments.clone(),
                asking,
            );
            let result = self.await_answer(sent, call).await;
            if let Err(Failure::Redirected(redirect)) = &result {
                // An answer: the connection is fine, and so is the node.
                pooled.answered.set(true);
                if redirected {
                    // Redirected again: the slot is moving under us. The origin answers this one.
                    self.unresolved(redirect, command);
                    return Ok(None);
                }
                redirected = true;
                asking = self.follow(redirect, command);
                address = redirect.address().to_string();
                continue;
            }
            let Err(failure) = &result else {
                pooled.answered.set(true);
                return result;
            };
            // Whatever state the connection is in, it is not trusted again.
            pool.discard(&pooled);
            self.node_failed();
            let retry = matches!(failure, Failure::Command(_))
                && pooled.answered.get()
                && !retried
                && call.saturated.is_none()
                && call.permit.is_some();
            if !retry {
                return result;
            }
            // It worked before: it may have died idle (Redis restarted). So may the other idle
            // ones; try once more on a new connection, within the same limit.
            pool.discard_idle();
            retried = true;
            eprintln!(
                "aside-edge: redis {command} failed on a pooled connection ({}); retrying on a new one",
                match failure {
                    Failure::Command(e) => self.config.scrub(e),
                    _ => String::new(),
                }
            );
        }
    }

    /// The answer to a command sent, within the call's limit; past it, judged ([`Verdict::of_timeout`])
    /// and waited for within the request's patience.
    async fn await_answer<F>(
        &self,
        sent: Pin<Box<F>>,
        call: &mut Call<'_>,
    ) -> Result<Option<Vec<RedisResult>>, Failure>
    where
        F: Future<Output = Result<Option<Vec<RedisResult>>, Failure>> + 'static,
    {
        let left = call.limit.saturating_sub(Duration::from_nanos(
            clock::now().saturating_sub(call.started),
        ));
        let pending = match clock::race(left, sent).await {
            Ok(answer) => return answer,
            Err(pending) => pending,
        };
        match self.judge(call.limit, call.started, call.late) {
            verdict @ Verdict::Saturated(_) => call.saturated = Some(verdict),
            // Counted now (the breaker may open for the requests after it), but this request keeps
            // waiting for the same answer within its budget: one stall is not yet an outage, and the
            // origin is the costlier path.
            Verdict::Failing(_) => {
                call.counted = self.count_timeout(call.permit.take(), call.started);
            }
        }
        clock::within(patience(call.deadline), pending)
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }

    /// What an attempt comes to: its reply, a shed request, or a failure that sends the request to the
    /// origin; the breaker hears of it.
    ///
    /// Waited out the budget's patience too with no answer: only a silent Redis (the call started on
    /// time, and Redis has answered nothing of this instance for a whole `redis_timeout_ms`) sends the
    /// request to the origin; that counts (once per stall, as any timeout). Otherwise Redis is up and
    /// the call was queued in the instance, or the request started it too late to tell: shed (a stale
    /// copy or a 503), never an origin read (crate::backoff, `silent`).
    fn conclude(
        &self,
        command: &str,
        attempt: Result<Option<Vec<RedisResult>>, Failure>,
        call: Call<'_>,
    ) -> Read<Vec<RedisResult>> {
        let Call {
            permit,
            counted,
            saturated,
            started,
            late,
            limit,
            deadline,
        } = call;
        let quiet_for = Duration::from_nanos(clock::now().saturating_sub(self.last_answer.get()));
        // An instance that has never heard Redis has no silence to measure: if its wait was judged
        // saturated, that is all it knows, and it sheds.
        let never_heard = self.recent_answers.get().is_none();
        let silent = backoff::silent(
            late,
            quiet_for,
            self.config.redis_timeout,
            self.recent_answers.get(),
        ) && !(never_heard && saturated.is_some());
        let timed_out = matches!(attempt, Err(Failure::TimedOut));
        let shed_as = match saturated {
            Some(verdict) if attempt.is_err() && !silent => Some(verdict),
            // A timeout counted against Redis whose wait ended with Redis answering others.
            None if timed_out && !silent => Some(Verdict::Saturated(if late {
                Saturated::LateStart
            } else {
                Saturated::AnsweredOthers
            })),
            _ => None,
        };
        if let Some(verdict) = shed_as {
            // No origin call; the breaker hears nothing more (a probe's slot is freed). A timeout
            // counted earlier stays counted, and its state change is reported.
            drop(permit);
            self.note(counted);
            self.count_shed(command, verdict, quiet_for, deadline.remaining_at(started));
            return Read::Shed;
        }
        let transition = match permit {
            None => counted,
            Some(permit) if timed_out => self.count_timeout(Some(permit), started),
            Some(permit) => permit.finish(attempt.is_ok(), clock::now()),
        };
        self.note(transition);
        match attempt {
            Ok(Some(reply)) => Read::Hit(reply),
            Ok(None) => Read::Miss,
            Err(failure) => {
                let waited = Duration::from_nanos(clock::now().saturating_sub(started));
                self.failed(command, failure, (limit, waited), silent);
                Read::Failed
            }
        }
    }

    /// Counts a shed request and logs the first and then one in 100 (an overloaded edge must not
    /// spend itself on logging).
    fn count_shed(
        &self,
        command: &str,
        verdict: Verdict,
        quiet_for: Duration,
        left_at_start: Duration,
    ) {
        let shed = self.shed.get() + 1;
        self.shed.set(shed);
        if shed % 100 == 1 {
            eprintln!(
                "aside-edge: redis {command} unanswered within the request budget; shedding the \
                 request, not asking the origin (cause: {}; Redis last answered {} ms ago; the \
                 call started with {} ms of the budget left; shed so far by this instance: \
                 {shed})",
                verdict.cause(),
                quiet_for.as_millis(),
                left_at_start.as_millis()
            );
        }
    }

    /// Reports a failure that sends the request to the origin: its metric and one log line.
    fn failed(
        &self,
        command: &str,
        failure: Failure,
        (limit, waited): (Duration, Duration),
        silent: bool,
    ) {
        let (why, cause) = match failure {
            Failure::Connect => {
                METRICS.redis_verdict(Verdict::Failing(Failing::Error));
                ("cannot connect".to_string(), Failing::Error)
            }
            Failure::Command(e) => {
                METRICS.redis_verdict(Verdict::Failing(Failing::Error));
                (
                    format!("{command} failed: {}", self.config.scrub(&e)),
                    Failing::Error,
                )
            }
            // Not reached: a redirection is followed once, then a miss.
            Failure::Redirected(r) => (
                format!("{command} redirected to {}", r.address()),
                Failing::Error,
            ),
            Failure::TimedOut | Failure::Unheard(_) => (
                format!(
                    "{command} took longer than {} ms (waited {} ms{}; recent answers {} ms)",
                    limit.as_millis(),
                    waited.as_millis(),
                    if silent {
                        ", nothing else answered"
                    } else {
                        ""
                    },
                    self.recent_answers.get().map_or(0, |d| d.as_millis())
                ),
                Failing::Timeout,
            ),
        };
        eprintln!(
            "aside-edge: redis {why}; going to the origin (cause: {}; redis breaker: {})",
            Verdict::Failing(cause).cause(),
            self.breaker.borrow().visible().as_str()
        );
    }

    /// The pool of the node at `address` (`host:port`), made on first use.
    fn pool_of(&self, address: &str) -> Rc<Pool<Connection>> {
        if let Some((_, pool)) = self.pools.borrow().iter().find(|(a, _)| a == address) {
            return Rc::clone(pool);
        }
        let pool = Rc::new(Pool::new(self.config.redis_max_connections));
        self.pools
            .borrow_mut()
            .push((address.to_string(), Rc::clone(&pool)));
        pool
    }

    /// The Redis URL of the node at `address`.
    fn url_of(&self, address: &str) -> String {
        match self.config.redis_mode {
            RedisMode::Single => self.config.redis_url.clone(),
            RedisMode::Cluster => self.config.redis_url_of(address),
        }
    }

    /// Whether `address` is a replica this instance reads from (its connections say `READONLY`).
    fn is_replica(&self, address: &str) -> bool {
        self.config.redis_read_replicas
            && self
                .slots
                .borrow()
                .as_ref()
                .is_some_and(|map| map.is_replica(address))
    }

    /// On a cluster, `address` (redirections from it are followed); in single mode `None` (a `MOVED`
    /// there is a misconfiguration, a failed command like any other).
    fn redirectable(&self, address: &str) -> Option<String> {
        (self.config.redis_mode == RedisMode::Cluster).then(|| address.to_string())
    }

    /// The node a command on `key` goes to: in single mode `redis_address`; on a cluster the primary
    /// serving the key's slot, once the slot map is known (learnt or refreshed first when due, within
    /// `limit`), else `redis_address` (whose redirection then names the owner).
    async fn node_for(&self, key: Option<&[u8]>, limit: Duration) -> String {
        if self.config.redis_mode == RedisMode::Single {
            return self.config.redis_address.clone();
        }
        let unknown = self.slots.borrow().is_none();
        let due = self.slots_stale.get() || unknown;
        let asked = self.slots_asked.get();
        // Without a map, a request joins a refresh in progress rather than guess `redis_address`:
        // a new instance's concurrent first reads otherwise went there and two in three met a MOVED
        // (the bench's cluster scenario: about one MOVED per instance started, in a steady run).
        if due
            && (asked == 0
                || (unknown && !self.slots_refresh.is_empty())
                || clock::now().saturating_sub(asked) >= SLOT_MAP_REFRESH.as_nanos() as u64)
        {
            let flight = Rc::clone(&self.slots_refresh);
            flight.run((), || self.refresh_slots(limit)).await;
        }
        key.and_then(|key| {
            let slots = self.slots.borrow();
            let map = slots.as_ref()?;
            let slot = key_slot(key);
            let replica = if self.config.redis_read_replicas {
                map.replica(slot, self.replica_pick)
            } else {
                None
            };
            replica.or_else(|| map.owner(slot)).map(str::to_string)
        })
        .unwrap_or_else(|| self.config.redis_address.clone())
    }

    /// Asks `CLUSTER SLOTS` of `redis_address`, then of each primary already known, until one answers
    /// with a map; within `limit` in all. Outside the breaker: a node that cannot answer shows in the
    /// command that follows.
    async fn refresh_slots(&self, limit: Duration) {
        let started = clock::now();
        self.slots_asked.set(started);
        let mut candidates = vec![self.config.redis_address.clone()];
        if let Some(map) = self.slots.borrow().as_ref() {
            for primary in map.primaries() {
                if !candidates.contains(primary) {
                    candidates.push(primary.clone());
                }
            }
        }
        let mut why = String::new();
        for address in candidates {
            let left =
                limit.saturating_sub(Duration::from_nanos(clock::now().saturating_sub(started)));
            if left.is_zero() {
                why = format!("no time left within {} ms", limit.as_millis());
                break;
            }
            let slots = vec![RedisParameter::Binary(b"SLOTS".to_vec())];
            match self.call(&address, "CLUSTER", slots, left, false).await {
                Ok(Some(reply)) => match SlotMap::from_cluster_slots(&reply) {
                    Some(map) => {
                        // Logged when the primaries change, not when an instance learns the map
                        // (every new instance does, once).
                        let mut before: Option<Vec<String>> =
                            self.slots.borrow().as_ref().map(|m| m.primaries().to_vec());
                        let mut now = map.primaries().to_vec();
                        if let Some(before) = before.as_mut() {
                            before.sort();
                        }
                        now.sort();
                        if before.is_some_and(|b| b != now) {
                            eprintln!(
                                "aside-edge: redis cluster slot map from {address}: {} of 16384 \
                                 slots served by {} primaries ({})",
                                map.served(),
                                map.primaries().len(),
                                map.primaries().join(", ")
                            );
                        }
                        METRICS.slot_map_refreshed();
                        *self.slots.borrow_mut() = Some(map);
                        self.slots_stale.set(false);
                        return;
                    }
                    None => why = format!("{address} answered CLUSTER SLOTS with no slot map"),
                },
                Ok(None) => why = format!("{address} answered CLUSTER SLOTS with an error"),
                Err(failure) => {
                    why = format!("{address}: {}", self.describe_failure(&failure, left))
                }
            }
        }
        eprintln!(
            "aside-edge: redis cluster slot map not learnt ({why}); reads go to the nodes the last \
             map or redirections name, or to redis_address; asked again in {} ms at the earliest",
            SLOT_MAP_REFRESH.as_millis()
        );
    }

    /// Follows a redirection of `command` (the caller sends it once more to the node named): a
    /// `MOVED` corrects the map for its slot and makes the whole map due for a refresh. `true` for an
    /// `ASK` (the command must follow `ASKING`).
    fn follow(&self, redirect: &Redirect, command: &str) -> bool {
        let (kind, asking) = match redirect {
            Redirect::Moved { slot, address } => {
                if let Some(map) = self.slots.borrow_mut().as_mut() {
                    map.assign(*slot, address);
                }
                self.slots_stale.set(true);
                (RedirectKind::Moved, false)
            }
            Redirect::Ask { .. } => (RedirectKind::Ask, true),
        };
        self.note_redirect(kind, redirect, command);
        asking
    }

    /// A redirection not followed (the command was redirected already): the map is due for a refresh.
    fn unresolved(&self, redirect: &Redirect, command: &str) {
        self.slots_stale.set(true);
        self.note_redirect(RedirectKind::Unresolved, redirect, command);
    }

    fn note_redirect(&self, kind: RedirectKind, redirect: &Redirect, command: &str) {
        METRICS.redis_redirect(kind);
        let mut counts = self.redirects.get();
        counts[kind as usize] += 1;
        self.redirects.set(counts);
        // The first and then one in 100 of each kind: a resharding redirects many reads.
        if counts[kind as usize] % 100 == 1 {
            let (what, slot) = match redirect {
                Redirect::Moved { slot, .. } => ("MOVED", slot),
                Redirect::Ask { slot, .. } => ("ASK", slot),
            };
            let then = match kind {
                RedirectKind::Moved => "slot map corrected; sent once more there",
                RedirectKind::Ask => "sent once more there after ASKING",
                RedirectKind::Unresolved => {
                    "redirected twice: not followed, read as a miss (origin)"
                }
            };
            eprintln!(
                "aside-edge: redis cluster {what} {slot} {} for {command}: {then} ({} so far by this \
                 instance: {})",
                redirect.address(),
                kind.as_str(),
                counts[kind as usize]
            );
        }
    }

    /// A node failed a command: on a cluster its slots may have moved (a failover), so the map is
    /// due for a refresh.
    fn node_failed(&self) {
        if self.config.redis_mode == RedisMode::Cluster {
            self.slots_stale.set(true);
        }
    }

    fn describe_failure(&self, failure: &Failure, limit: Duration) -> String {
        match failure {
            Failure::Connect => "cannot connect".to_string(),
            Failure::Command(e) => format!("failed: {}", self.config.scrub(e)),
            Failure::TimedOut | Failure::Unheard(_) => {
                format!("took longer than {} ms", limit.as_millis())
            }
            Failure::Redirected(r) => format!("redirected to {}", r.address()),
        }
    }

    /// `command arguments` on the node at `address`, outside the breaker and the timeout verdicts
    /// (the feed's read and the slot map's): at most `limit`, a late call left to finish. A pooled
    /// connection that fails is dropped; one that had answered before is replaced once (Redis may
    /// have restarted while it sat idle).
    async fn call(
        &self,
        address: &str,
        command: &str,
        arguments: Vec<RedisParameter>,
        limit: Duration,
        asking: bool,
    ) -> Result<Option<Vec<RedisResult>>, Failure> {
        let started = clock::now();
        // A connection's open is bounded by the same limit (no patience: `deadline` is the limit).
        let deadline = Deadline::after(started, limit);
        let pool = self.pool_of(address);
        let url = self.url_of(address);
        let mut retried = false;
        loop {
            let why_not = Cell::new(None);
            let Some(lease) = pool
                .take(|| {
                    self.open(
                        (&url, self.is_replica(address)),
                        limit,
                        (started, false),
                        deadline,
                        &why_not,
                    )
                })
                .await
            else {
                return Err(why_not.take().unwrap_or(Failure::Connect));
            };
            let pooled = Rc::clone(&lease.pooled);
            let call = leased_call(
                lease,
                self.redirectable(address),
                command,
                arguments.clone(),
                asking,
            );
            let left =
                limit.saturating_sub(Duration::from_nanos(clock::now().saturating_sub(started)));
            let result = match clock::race(left, call).await {
                Ok(answer) => answer,
                Err(late) => {
                    let (pool, pooled) = (Rc::clone(&pool), Rc::clone(&pooled));
                    clock::detach(async move {
                        if let Err(Failure::Command(_) | Failure::Connect) = late.await {
                            pool.discard(&pooled);
                        }
                    });
                    Err(Failure::TimedOut)
                }
            };
            match &result {
                Ok(_) | Err(Failure::Redirected(_)) => {
                    pooled.answered.set(true);
                    self.answered(Duration::from_nanos(clock::now().saturating_sub(started)));
                }
                // A late call keeps its connection: the call goes on in the background and gives
                // the connection back when it ends (an error then drops it, in the background).
                // Dropping it here cost a new connection (connect, AUTH) for every late feed read
                // under a spike (docs/operations.md, "Overload").
                Err(Failure::TimedOut) => self.node_failed(),
                Err(failure) => {
                    // A connection that failed is not trusted again.
                    pool.discard(&pooled);
                    self.node_failed();
                    if matches!(failure, Failure::Command(_)) && pooled.answered.get() && !retried {
                        // It may have died idle (Redis restarted): once more on a new connection.
                        pool.discard_idle();
                        retried = true;
                        continue;
                    }
                }
            }
            return result;
        }
    }

    /// Reports a breaker state change (metric and log line; written to the process-wide tier by
    /// [`Redis::publish`]).
    fn note(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        self.unpublished.set(Some(t));
        METRICS.transition(Backend::Redis, t == Transition::Opened);
        match t {
            Transition::Opened => eprintln!(
                "aside-edge: redis breaker open after {} consecutive failure(s): skipping Redis for {} \
                 ms, then one request probes it",
                self.breaker.borrow().threshold(),
                self.config.redis_breaker.backoff.as_millis()
            ),
            Transition::Closed => {
                eprintln!("aside-edge: redis breaker closed: the probe succeeded")
            }
        }
    }

    /// What a command unanswered at `limit` (started at `started`, `late` in its request's budget)
    /// says: see [`Verdict::of_timeout`].
    fn judge(&self, limit: Duration, started: Nanos, late: bool) -> Verdict {
        let verdict = Verdict::of_timeout(Stalled {
            limit,
            waited: Duration::from_nanos(clock::now().saturating_sub(started)),
            answered_meanwhile: self.last_answer.get() > started,
            recent_answers: self.recent_answers.get(),
            started_late: late,
        });
        METRICS.redis_verdict(verdict);
        verdict
    }

    /// Reports a timeout of a call started at `started` to the breaker, unless it was already waiting
    /// when another call's timeout was counted: one stall seen twice is one piece of evidence, not
    /// two (see crate::backoff, "overlapping timeouts").
    fn count_timeout(&self, permit: Option<Attempt<'_>>, started: Nanos) -> Option<Transition> {
        let permit = permit?;
        if started <= self.counted_timeout.get() {
            drop(permit);
            return None;
        }
        self.counted_timeout.set(clock::now());
        permit.finish(false, clock::now())
    }

    /// Notes that Redis answered, `took` after the call (or the connection's opening) started.
    fn answered(&self, took: Duration) {
        self.last_answer.set(clock::now());
        // A moving average over the last few answers (weight 1/4 for the newest).
        let recent = match self.recent_answers.get() {
            Some(recent) => (recent * 3 + took) / 4,
            None => took,
        };
        self.recent_answers.set(Some(recent));
    }

    /// A new connection for the pool: within `limit` (counted from `started`), or, when the edge is
    /// saturated ([`Verdict::of_timeout`]), until `deadline`. `None` says why in `why_not`.
    async fn open(
        &self,
        (url, readonly): (&str, bool),
        limit: Duration,
        (started, late): (Nanos, bool),
        deadline: Deadline,
        why_not: &Cell<Option<Failure>>,
    ) -> Option<Connection> {
        let url = url.to_string();
        let opening = clock::now();
        let open = Box::pin(async move {
            let connection = Connection::open(&url).await?;
            if readonly {
                // A replica serves its primary's slots only to a connection that said READONLY.
                connection.execute("READONLY", Vec::new()).await?;
            }
            Ok::<Connection, Error>(connection)
        });
        let opened = match clock::race(limit, open).await {
            Ok(opened) => Some(opened),
            Err(pending) => match self.judge(limit, started, late) {
                verdict @ Verdict::Saturated(_) => {
                    match clock::within(patience(deadline), pending).await {
                        Some(opened) => Some(opened),
                        None => {
                            why_not.set(Some(Failure::Unheard(verdict)));
                            return None;
                        }
                    }
                }
                // An instance that has never heard Redis: its first connection (connect, AUTH,
                // SELECT) late under a spike says little, since there is nothing to compare with
                // (all of a spike's origin reads were these before: opens of about 300 ms against a
                // 250 ms limit). It gets one more `limit` (within the request's patience); still
                // nothing: a timeout, counted, and the origin. Not the whole patience: each new
                // instance has its own breaker, so under a frozen Redis every one of them would
                // wait that long before its breaker could open. The extra wait is judged like the
                // first: if the host ran its timer late, the edge is saturated and the request is
                // shed, not sent to the origin (a spike's new instances did, 14 in one 4 s spike,
                // each `waited 572-648 ms` for two 250 ms limits).
                Verdict::Failing(_) if self.recent_answers.get().is_none() => {
                    let extra = limit.min(patience(deadline));
                    let waiting = clock::now();
                    match clock::within(extra, pending).await {
                        Some(opened) => Some(opened),
                        None => {
                            let verdict = Verdict::of_timeout(Stalled {
                                limit: extra,
                                waited: Duration::from_nanos(clock::now().saturating_sub(waiting)),
                                answered_meanwhile: self.last_answer.get() > started,
                                recent_answers: None,
                                started_late: late,
                            });
                            if let Verdict::Saturated(_) = verdict {
                                METRICS.redis_verdict(verdict);
                                why_not.set(Some(Failure::Unheard(verdict)));
                                return None;
                            }
                            None
                        }
                    }
                }
                // One that heard answers before, and already counted a timeout since the last of
                // them: a second stall with nothing heard in between, so Redis stopped (frozen,
                // gone). Fail now, so that the breaker opens for the requests after it (its
                // connections were dropped with the first stall: this open is how it notices).
                Verdict::Failing(_) if self.counted_timeout.get() > self.last_answer.get() => {
                    clock::detach(async move {
                        let _ = pending.await;
                    });
                    None
                }
                // Otherwise it keeps waiting within the request's patience, and the end of the
                // wait decides (crate::backoff, `silent`): Redis silent for a whole timeout:
                // counted, and the origin; Redis heard meanwhile: shed. Failing at once here sent
                // every late open of a spike to the origin (20 of them in one 4 s spike, each
                // `waited 255-299 ms, nothing else answered`: opened late, not never).
                Verdict::Failing(_) => clock::within(patience(deadline), pending).await,
            },
        };
        match opened {
            Some(Ok(connection)) => {
                // Opening logs in (AUTH, SELECT): Redis answered.
                let took = Duration::from_nanos(clock::now().saturating_sub(opening));
                self.answered(took);
                let mut opens = self.opens.borrow_mut();
                // Bounded: an instance whose answers stopped reporting them keeps only the last few.
                if opens.len() < 64 {
                    opens.push(took.as_secs_f64() * 1000.0);
                }
                Some(connection)
            }
            Some(Err(e)) => {
                eprintln!(
                    "aside-edge: redis connection failed: {}",
                    self.config.scrub(&describe(&e))
                );
                why_not.set(Some(Failure::Connect));
                None
            }
            None => {
                why_not.set(Some(Failure::TimedOut));
                None
            }
        }
    }
}

/// How long a request whose Redis call is late because the edge is saturated keeps waiting for it:
/// what is left of its budget but a quarter (at most 500 ms), kept for the origin in case Redis turns
/// out to be silent rather than queued.
fn patience(deadline: Deadline) -> Duration {
    let left = deadline.remaining();
    left.saturating_sub((left / 4).min(Duration::from_millis(500)))
}

/// `HGETALL`'s reply as field/value pairs. Spin flattens the reply into one list (field, value, field,
/// value, ...); anything else (odd length, a non-string element) is `None`, a miss.
fn hash_entries(reply: Vec<RedisResult>) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if !reply.len().is_multiple_of(2) {
        return None;
    }
    let mut items = reply.into_iter().map(bytes_of);
    let mut entries = Vec::with_capacity(items.len() / 2);
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        entries.push((field?, value?));
    }
    Some(entries)
}

/// `HMGET`'s reply as one optional value per field asked for. A host that drops nils shortens the list,
/// which `projection_from_hmget` refuses (a miss), as it does a nil.
fn hmget_values(reply: Vec<RedisResult>) -> Vec<Option<Vec<u8>>> {
    reply.into_iter().map(bytes_of).collect()
}

fn bytes_of(result: RedisResult) -> Option<Vec<u8>> {
    match result {
        RedisResult::Binary(b) => Some(b),
        RedisResult::Status(s) => Some(s.into_bytes()),
        RedisResult::Int64(n) => Some(n.to_string().into_bytes()),
        RedisResult::Nil => None,
    }
}

/// A reply about the key's data rather than about Redis: `WRONGTYPE` (a key that is not a hash).
/// `name args` on the leased connection. The call owns its lease: a late call is left to finish,
/// never cancelled (crate::clock), and its connection is not given to another command until it has.
/// `Ok(None)`: Redis answered with something that is not data the edge can use.
/// `asked`: on a cluster, the node's `host:port`, and a `MOVED` or `ASK` answer is
/// [`Failure::Redirected`]; `asking`: `ASKING` first, on the same connection (an `ASK` redirection).
fn leased_call(
    lease: Lease<Connection>,
    asked: Option<String>,
    name: &str,
    args: Vec<RedisParameter>,
    asking: bool,
) -> Pin<Box<impl Future<Output = Result<Option<Vec<RedisResult>>, Failure>> + use<>>> {
    let name = name.to_string();
    Box::pin(async move {
        let asked_first = if asking {
            lease.pooled.connection.execute("ASKING", Vec::new()).await
        } else {
            Ok(Vec::new())
        };
        let result = match asked_first {
            Ok(_) => lease.pooled.connection.execute(&name, args).await,
            Err(e) => Err(e),
        };
        drop(lease);
        match result {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if is_data_error(&e) => Ok(None),
            Err(Error::Other(message))
                if let Some(redirect) = asked
                    .as_deref()
                    .and_then(|asked| Redirect::parse(&message, asked)) =>
            {
                Err(Failure::Redirected(redirect))
            }
            Err(e) => Err(Failure::Command(describe(&e))),
        }
    })
}

fn is_data_error(e: &Error) -> bool {
    match e {
        Error::TypeError => true,
        Error::Other(message) => message.contains("WRONGTYPE"),
        _ => false,
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::InvalidAddress => "invalid address".to_string(),
        Error::TooManyConnections => "too many connections".to_string(),
        Error::TypeError => "type error".to_string(),
        Error::Other(message) => message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use aside_shared::HashError;

    use super::*;

    fn bin(s: &str) -> RedisResult {
        RedisResult::Binary(s.as_bytes().to_vec())
    }

    fn hash_reply() -> Vec<RedisResult> {
        [
            ("full_name", "Ana Silva"),
            ("gender", "F"),
            ("birth_date", "1980-01-02"),
            ("department", "Sales"),
            ("email", "ana.silva@fake-devops-db.internal"),
            ("username", "ana.silva"),
            ("_version", "4"),
            ("_filled_at", "1700000000000"),
        ]
        .into_iter()
        .flat_map(|(k, v)| [bin(k), bin(v)])
        .collect()
    }

    #[test]
    fn a_flat_hgetall_reply_parses_into_a_profile() {
        let id = UserId::parse("3").unwrap();
        let entries = hash_entries(hash_reply()).unwrap();
        let cached = CachedProfile::from_hash(id, entries).unwrap();
        assert_eq!(cached.version, 4);
        assert_eq!(cached.profile.username.as_str(), "ana.silva");
    }

    #[test]
    fn a_marker_or_a_tombstone_parses_as_absent() {
        let id = UserId::parse("3").unwrap();
        for state in ["missing", "deleted"] {
            let reply = vec![
                bin("_state"),
                bin(state),
                bin("_version"),
                bin("2"),
                bin("_filled_at"),
                bin("1700000000000"),
            ];
            let entry = CacheEntry::from_hash(id, hash_entries(reply).unwrap()).unwrap();
            assert!(entry.is_absent(), "{state}");
        }
    }

    #[test]
    fn an_empty_or_odd_hgetall_reply_is_a_miss() {
        let id = UserId::parse("3").unwrap();
        let empty = hash_entries(vec![]).unwrap();
        assert_eq!(CachedProfile::from_hash(id, empty), Err(HashError::Empty));
        let mut odd = hash_reply();
        odd.pop();
        assert!(hash_entries(odd).is_none());
        let mut nil = hash_reply();
        nil[3] = RedisResult::Nil;
        assert!(hash_entries(nil).is_none());
    }

    #[test]
    fn hmget_nils_become_none_and_make_the_projection_a_miss() {
        let id = UserId::parse("3").unwrap();
        let selection = FieldSelection::parse("email").unwrap();
        let ok = hmget_values(vec![
            bin("ana.silva@fake-devops-db.internal"),
            bin("4"),
            RedisResult::Nil,
            RedisResult::Nil,
            RedisResult::Nil,
        ]);
        assert_eq!(
            projection_from_hmget(id, &selection, &ok).unwrap(),
            Projection::Present {
                body: serde_json::json!({"id": 3, "email": "ana.silva@fake-devops-db.internal"}),
                version: 4,
                freshness: None,
            }
        );
        let marker = hmget_values(vec![
            RedisResult::Nil,
            bin("0"),
            bin("missing"),
            RedisResult::Nil,
            RedisResult::Nil,
        ]);
        assert_eq!(
            projection_from_hmget(id, &selection, &marker).unwrap(),
            Projection::Absent
        );
        let missing = hmget_values((0..5).map(|_| RedisResult::Nil).collect());
        assert_eq!(missing, vec![None; 5]);
        assert!(projection_from_hmget(id, &selection, &missing).is_err());
        // A host that drops nils instead of passing them: wrong arity, also a miss.
        assert!(projection_from_hmget(id, &selection, &hmget_values(vec![bin("4")])).is_err());
    }

    #[test]
    fn only_wrong_type_replies_are_data_errors() {
        assert!(is_data_error(&Error::TypeError));
        assert!(is_data_error(&Error::Other(
            "WRONGTYPE: Operation against a key holding the wrong kind of value".into()
        )));
        assert!(!is_data_error(&Error::Other(
            "NOPERM this user has no permissions".into()
        )));
        assert!(!is_data_error(&Error::Other("connection refused".into())));
        assert!(!is_data_error(&Error::InvalidAddress));
    }

    mod pool {
        use std::cell::Cell;
        use std::rc::Rc;

        use futures::channel::oneshot;
        use futures::executor::LocalPool;
        use futures::task::LocalSpawnExt;

        use super::super::{Lease, Pool};

        /// A pool of numbered fake connections and how many were opened.
        fn pool(bound: usize) -> (Rc<Pool<u32>>, Rc<Cell<u32>>) {
            (Rc::new(Pool::new(bound)), Rc::new(Cell::new(0)))
        }

        fn take(pool: &Pool<u32>, opened: &Rc<Cell<u32>>) -> Lease<u32> {
            let opened = Rc::clone(opened);
            LocalPool::new()
                .run_until(pool.take(|| async move {
                    opened.set(opened.get() + 1);
                    Some(opened.get())
                }))
                .expect("a connection")
        }

        fn in_flight(pool: &Pool<u32>) -> Vec<(u32, usize)> {
            pool.open
                .borrow()
                .iter()
                .map(|p| (p.connection, p.in_flight.get()))
                .collect()
        }

        #[test]
        fn one_after_another_commands_reuse_one_connection() {
            let (pool, opened) = pool(16);
            for _ in 0..5 {
                let lease = take(&pool, &opened);
                assert_eq!(lease.pooled.connection, 1);
            }
            assert_eq!(opened.get(), 1);
            assert_eq!(in_flight(&pool), vec![(1, 0)]);
        }

        #[test]
        fn concurrent_commands_each_get_their_own_connection_up_to_the_bound_then_share() {
            let (pool, opened) = pool(3);
            let leases: Vec<_> = (0..3).map(|_| take(&pool, &opened)).collect();
            assert_eq!(opened.get(), 3, "no command waits on a busy connection");
            assert_eq!(in_flight(&pool), vec![(1, 1), (2, 1), (3, 1)]);
            // At the bound: the least busy connection is shared, nothing more is opened.
            let fourth = take(&pool, &opened);
            let fifth = take(&pool, &opened);
            assert_eq!(opened.get(), 3);
            assert_eq!(
                in_flight(&pool).iter().map(|(_, n)| n).sum::<usize>(),
                5,
                "{:?}",
                in_flight(&pool)
            );
            assert!(in_flight(&pool).iter().all(|(_, n)| *n <= 2));
            assert_ne!(fourth.pooled.connection, fifth.pooled.connection);
            drop(leases);
            drop((fourth, fifth));
            assert!(in_flight(&pool).iter().all(|(_, n)| *n == 0));
            // Once given back, they are idle and reused.
            let again = take(&pool, &opened);
            assert!((1..=3).contains(&again.pooled.connection));
            assert_eq!(opened.get(), 3);
        }

        #[test]
        fn a_discarded_connection_is_never_handed_out_again_and_idle_ones_can_be_dropped_at_once() {
            let (pool, opened) = pool(4);
            let a = take(&pool, &opened);
            let b = take(&pool, &opened);
            let c = take(&pool, &opened);
            let dead = Rc::clone(&a.pooled);
            drop((a, c));
            pool.discard(&dead);
            assert_eq!(in_flight(&pool), vec![(2, 1), (3, 0)]);
            pool.discard_idle();
            assert_eq!(in_flight(&pool), vec![(2, 1)], "the busy one stays");
            drop(b);
            let next = take(&pool, &opened);
            assert_eq!(next.pooled.connection, 2);
            let other = take(&pool, &opened);
            assert_eq!(
                other.pooled.connection, 4,
                "a new one, not the discarded 1 or 3"
            );
        }

        #[test]
        fn a_failed_open_gives_nothing_and_frees_its_place() {
            let (pool, _) = pool(1);
            let mut local = LocalPool::new();
            assert!(local.run_until(pool.take(|| async { None })).is_none());
            assert!(pool.pending.borrow().is_empty());
            let lease = local
                .run_until(pool.take(|| async { Some(9) }))
                .expect("the place is free again");
            assert_eq!(lease.pooled.connection, 9);
        }

        #[test]
        fn at_the_bound_with_every_connection_still_opening_a_command_joins_an_open() {
            let (pool, _) = pool(1);
            let mut local = LocalPool::new();
            let (connected, gate) = oneshot::channel::<()>();
            let got = Rc::new(Cell::new((0, 0)));
            for (i, gate) in [(0, Some(gate)), (1, None)] {
                let (pool, got) = (Rc::clone(&pool), Rc::clone(&got));
                local
                    .spawner()
                    .spawn_local(async move {
                        let lease = pool
                            .take(|| async move {
                                gate?.await.ok()?;
                                Some(7)
                            })
                            .await
                            .expect("a connection");
                        let (a, b) = got.get();
                        got.set(if i == 0 {
                            (lease.pooled.connection, b)
                        } else {
                            (a, lease.pooled.connection)
                        });
                        std::mem::forget(lease);
                    })
                    .unwrap();
            }
            local.run_until_stalled();
            assert_eq!(
                got.get(),
                (0, 0),
                "both wait for the one connection being opened"
            );
            connected.send(()).unwrap();
            local.run();
            assert_eq!(got.get(), (7, 7));
            assert_eq!(in_flight(&pool), vec![(7, 2)]);
        }
    }
}
