//! The invalidation feed, read by the edge's own requests (see `aside_shared::feed` for the stream).
//!
//! Spin 4.0.2 has no timer trigger, a Redis trigger runs in another process (it cannot reach this
//! process's stores), work spawned after a response dies with the instance, and the Redis binding
//! refuses `SUBSCRIBE`. So the feed is read the only way left: a request that finds it read longer ago
//! than `feed_poll_ms` reads it, with a non-blocking `XREAD` from the last position, before it serves.
//!
//! * With the process-wide tier on, one reader per process at a time: the state ([`FeedState`]: epoch,
//!   position, when it was last read and last heard from, the recent invalidations) lives in the
//!   tier's key-value store under [`STATE_KEY`]; an instance that finds it older than `feed_poll_ms`
//!   takes a short lease ([`LEASE_KEY`]) and reads Redis, the others only read the state. Without it
//!   (or while the store fails), every instance reads the feed for itself.
//! * Every instance applies the invalidations it has not applied yet to its tier 1 (each one drops the
//!   older copy and raises the id's version floor, so a lookup that read the old version and comes
//!   back late cannot put it back) before it serves from tier 1 again.
//!
//! **The serving rule.** While the feed is *current* (read within `feed_max_lag_ms` and an entry, a
//! change or the origin's heartbeat, seen within it), a copy tagged with the feed's epoch, taken at a
//! position from which this instance has every invalidation, is fresh until its own soft expiry
//! (minutes); otherwise today's `l1_ttl_ms` rule holds. The *epoch* changes whenever the reader cannot
//! prove it saw every entry: a gap in the entry numbers (the stream was trimmed past the position,
//! deleted, or Redis restarted or failed over without them), or a fresh start after a silence. A copy
//! of an older epoch is never trusted beyond the TTL rule: a broken feed is never worse than no feed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use aside_shared::feed::{Change, FeedEntry, StreamId, parse_flat_xread};

use crate::clock::{self, Nanos};
use crate::config::Config;
pub use crate::feed_tag::{FeedTag, Trust};
use crate::l1::Tier1;
use crate::l2::Redis;
use crate::process_tier::ProcessTier;

/// The key of the process-wide feed state in the process-wide tier's store.
pub const STATE_KEY: &str = "aside:feed:state";
/// The key of the reader's lease.
pub const LEASE_KEY: &str = "aside:feed:lease";
/// Entries asked for per `XREAD`; a full answer is followed by another read, up to [`MAX_ROUNDS`].
pub const READ_COUNT: usize = 512;
const MAX_ROUNDS: usize = 4;
/// The recent invalidations the state keeps for instances that have not applied them yet.
pub const RING: usize = 256;
const STATE_MAGIC: &[u8; 4] = b"asF1";
const LEASE_MAGIC: &[u8; 4] = b"asL1";

/// Why copies are on the TTL rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The feed is off (`feed_poll_ms = 0`).
    Off,
    /// Never read successfully, or the last read found something that is not the feed.
    NoFeed,
    /// Reads are failing (Redis down, too slow, breaker open).
    Late,
    /// Reads work but no entry (heartbeat) came for `feed_max_lag_ms`: the origin's publisher is down.
    Silent,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Off => "off",
            Fallback::NoFeed => "ttl-no-feed",
            Fallback::Late => "ttl-late",
            Fallback::Silent => "ttl-silent",
        }
    }
}

/// The reader's state: in the process-wide tier's store (one per process), or the instance's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedState {
    /// 0: no feed yet. Changes whenever continuity is lost.
    pub epoch: u64,
    /// The number of the last entry read.
    pub seq: u64,
    /// The stream id of the last entry read.
    pub pos: StreamId,
    /// Wall clock of the last successful read.
    pub read_at_ms: i64,
    /// Wall clock of the last read that returned an entry.
    pub beat_at_ms: i64,
    /// Every change numbered after this, up to `seq`, is in `ring`.
    pub ring_from: u64,
    pub ring: VecDeque<(u64, Change)>,
    /// Counters, process-wide with the process-wide tier (for `GET /edge/feed`).
    pub reads: u64,
    pub invalidations: u64,
    pub epochs: u64,
    /// Changes of the reader's verdict from current to a fallback.
    pub fallbacks: u64,
    /// The last verdict the reader logged (so a change of state is logged once).
    pub verdict: u8,
}

impl FeedState {
    /// Takes in what one read returned at `now_ms`. `restart`: the read was from a point in time
    /// rather than from the position, so a new epoch starts at its first entry. `draw` gives new epochs.
    /// Returns the first break in the numbering it found, if any: `(last number held, number read)`.
    pub fn absorb(
        &mut self,
        entries: &[FeedEntry],
        restart: bool,
        now_ms: i64,
        draw: &mut impl FnMut() -> u64,
    ) -> Option<(u64, u64)> {
        self.read_at_ms = now_ms;
        self.reads += 1;
        let first = entries.first()?;
        self.beat_at_ms = now_ms;
        if restart {
            self.new_epoch(first.seq.saturating_sub(1), draw);
        }
        let mut break_found = None;
        for entry in entries {
            if entry.seq != self.seq.wrapping_add(1) {
                // Entries were lost (trimmed, deleted) or the numbers went back (a restart or a
                // failover without them): nothing before this entry can be vouched for.
                break_found.get_or_insert((self.seq, entry.seq));
                self.new_epoch(entry.seq.saturating_sub(1), draw);
            }
            self.seq = entry.seq;
            self.pos = entry.stream_id;
            if let Some(change) = entry.change {
                self.invalidations += 1;
                self.ring.push_back((entry.seq, change));
                if self.ring.len() > RING
                    && let Some((seq, _)) = self.ring.pop_front()
                {
                    self.ring_from = seq;
                }
            }
        }
        break_found
    }

    fn new_epoch(&mut self, seq: u64, draw: &mut impl FnMut() -> u64) {
        let mut epoch = draw();
        while epoch == 0 || epoch == self.epoch {
            epoch = draw();
        }
        self.epoch = epoch;
        self.epochs += 1;
        self.seq = seq;
        self.ring_from = seq;
        self.ring.clear();
    }

    /// The feed's verdict at `now_ms`.
    pub fn verdict(&self, now_ms: i64, max_lag: Duration) -> Result<(), Fallback> {
        let lag = i64::try_from(max_lag.as_millis()).unwrap_or(i64::MAX);
        if self.epoch == 0 {
            Err(Fallback::NoFeed)
        } else if now_ms.saturating_sub(self.read_at_ms) > lag {
            Err(Fallback::Late)
        } else if now_ms.saturating_sub(self.beat_at_ms) > lag {
            Err(Fallback::Silent)
        } else {
            Ok(())
        }
    }

    /// Whether the next read starts from a point in time instead of the position.
    pub fn must_restart(&self, now_ms: i64, max_lag: Duration) -> bool {
        matches!(
            self.verdict(now_ms, max_lag),
            Err(Fallback::NoFeed | Fallback::Silent)
        )
    }

    /// The state as Prometheus text (`GET /edge/feed`): `fallback` is the asking instance's verdict,
    /// `shared` whether the state is the process's (else the instance's own).
    pub fn prometheus(&self, now_ms: i64, fallback: Option<Fallback>, shared: bool) -> String {
        let scope = if shared { "process" } else { "instance" };
        let lag = if self.read_at_ms > 0 {
            now_ms.saturating_sub(self.read_at_ms).max(0) as f64 / 1000.0
        } else {
            f64::INFINITY
        };
        let silence = if self.beat_at_ms > 0 {
            now_ms.saturating_sub(self.beat_at_ms).max(0) as f64 / 1000.0
        } else {
            f64::INFINITY
        };
        let state = fallback.map_or("current", Fallback::as_str);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{scope=\"{scope}\"}} {value}\n"
            ));
        };
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                "+Inf".to_string()
            }
        };
        metric(
            "aside_edge_feed_current",
            "gauge",
            "1 while the invalidation feed is current (copies fresh until their soft expiry), 0 on the TTL rule",
            u8::from(fallback.is_none()).to_string(),
        );
        metric(
            "aside_edge_feed_lag_seconds",
            "gauge",
            "Seconds since the feed was last read successfully",
            num(lag),
        );
        metric(
            "aside_edge_feed_silence_seconds",
            "gauge",
            "Seconds since the last read that returned an entry (a change or a heartbeat)",
            num(silence),
        );
        metric(
            "aside_edge_feed_reads_total",
            "counter",
            "Successful XREADs of the feed",
            self.reads.to_string(),
        );
        metric(
            "aside_edge_feed_invalidations_total",
            "counter",
            "Changes read from the feed and applied",
            self.invalidations.to_string(),
        );
        metric(
            "aside_edge_feed_fallbacks_total",
            "counter",
            "Times the feed went from current to the TTL fallback",
            self.fallbacks.to_string(),
        );
        metric(
            "aside_edge_feed_epochs_total",
            "counter",
            "Epochs started (a first read, a gap, numbers going back, a restart after a silence)",
            self.epochs.to_string(),
        );
        metric(
            "aside_edge_feed_position",
            "gauge",
            "The number of the last entry read",
            self.seq.to_string(),
        );
        out.push_str(&format!(
            "# HELP aside_edge_feed_state The feed's state as the answering instance sees it\n\
             # TYPE aside_edge_feed_state gauge\naside_edge_feed_state{{scope=\"{scope}\",state=\"{state}\"}} 1\n"
        ));
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(104 + self.ring.len() * 21);
        out.extend_from_slice(STATE_MAGIC);
        for n in [
            self.epoch,
            self.seq,
            self.pos.ms,
            self.pos.seq,
            self.read_at_ms as u64,
            self.beat_at_ms as u64,
            self.ring_from,
            self.reads,
            self.invalidations,
            self.epochs,
            self.fallbacks,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(self.verdict);
        out.extend_from_slice(&(self.ring.len() as u32).to_le_bytes());
        for (seq, c) in &self.ring {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&c.id.to_le_bytes());
            out.extend_from_slice(&c.version.to_le_bytes());
            out.push(c.rank);
        }
        out
    }

    /// The state [`FeedState::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(STATE_MAGIC)?;
        let mut r = Bytes(rest);
        let mut n = [0u64; 11];
        for v in &mut n {
            *v = u64::from_le_bytes(r.take()?);
        }
        let verdict = r.take::<1>()?[0];
        let len = u32::from_le_bytes(r.take()?) as usize;
        if len > RING {
            return None;
        }
        let mut ring = VecDeque::with_capacity(len);
        for _ in 0..len {
            let seq = u64::from_le_bytes(r.take()?);
            let id = i32::from_le_bytes(r.take()?);
            let version = i64::from_le_bytes(r.take()?);
            let rank = r.take::<1>()?[0];
            ring.push_back((seq, Change { id, version, rank }));
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(Self {
            epoch: n[0],
            seq: n[1],
            pos: StreamId {
                ms: n[2],
                seq: n[3],
            },
            read_at_ms: n[4] as i64,
            beat_at_ms: n[5] as i64,
            ring_from: n[6],
            ring,
            reads: n[7],
            invalidations: n[8],
            epochs: n[9],
            fallbacks: n[10],
            verdict,
        })
    }
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// How far one instance has applied the feed to its tier 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The epoch applied (0: none yet).
    pub epoch: u64,
    /// The last entry number applied.
    pub applied: u64,
    /// This instance has applied every change numbered after this one (in `epoch`).
    pub since: u64,
}

impl Progress {
    /// The changes of `state` this instance has not applied yet, and its progress after applying them.
    /// An instance that is behind the ring (or meets a new epoch) applies the whole ring and vouches
    /// only for copies tagged from the ring's start on.
    pub fn catch_up(&mut self, state: &FeedState) -> Vec<Change> {
        if state.epoch == 0 {
            return Vec::new();
        }
        let from = if state.epoch != self.epoch || self.applied < state.ring_from {
            self.epoch = state.epoch;
            self.since = state.ring_from;
            state.ring_from
        } else if state.seq <= self.applied {
            // Nothing new (or an older state written by a slower reader: nothing to undo).
            return Vec::new();
        } else {
            self.applied
        };
        self.applied = state.seq;
        state
            .ring
            .iter()
            .filter(|(seq, _)| *seq > from)
            .map(|(_, c)| *c)
            .collect()
    }

    /// The tag for a copy about to be asked for now.
    pub fn tag(&self) -> FeedTag {
        FeedTag {
            epoch: self.epoch,
            seq: self.applied,
        }
    }
}

/// A reader's lease: who holds it, until when (wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    holder: u64,
    until_ms: i64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        let mut out = LEASE_MAGIC.to_vec();
        out.extend_from_slice(&self.holder.to_le_bytes());
        out.extend_from_slice(&self.until_ms.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(LEASE_MAGIC)?;
        let mut r = Bytes(rest);
        Some(Self {
            holder: u64::from_le_bytes(r.take()?),
            until_ms: i64::from_le_bytes(r.take()?),
        })
    }
}

/// What the feed says for one request.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub trust: Option<Trust>,
    pub tag: FeedTag,
    pub fallback: Option<Fallback>,
    /// Time spent reading the state or the feed for this request, in ms (`None`: not read).
    pub spent_ms: Option<f64>,
}

impl Verdict {
    pub fn off() -> Self {
        Self {
            trust: None,
            tag: FeedTag::default(),
            fallback: Some(Fallback::Off),
            spent_ms: None,
        }
    }

    /// The `server-timing` description: `current` or why copies are on the TTL rule.
    pub fn describe(&self) -> &'static str {
        match self.fallback {
            None => "current",
            Some(f) => f.as_str(),
        }
    }
}

/// The instance's side of the feed.
pub struct Feed {
    config: Rc<Config>,
    /// The state as last read (from the store, or the instance's own when it reads for itself).
    state: RefCell<FeedState>,
    progress: Cell<Progress>,
    /// When the instance last looked at the state (monotonic; `None`: never).
    checked_at: Cell<Option<Nanos>>,
    polling: Cell<bool>,
    holder: u64,
}

impl Feed {
    pub fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            state: RefCell::default(),
            progress: Cell::default(),
            checked_at: Cell::new(None),
            polling: Cell::new(false),
            holder: draw_nonzero(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.config.feed.is_on()
    }

    /// Whether this instance has not looked at the feed yet (a new instance).
    pub fn never_checked(&self) -> bool {
        self.checked_at.get().is_none()
    }

    /// The state as this instance last saw it (for `GET /edge/feed`).
    pub fn state(&self) -> FeedState {
        self.state.borrow().clone()
    }

    /// Brings this instance up to date with the feed when it last looked longer than `feed_poll_ms`
    /// ago (reading the shared state, and the stream itself when the state is that old too), applies
    /// what it has not applied to `tier1`, and says what copies may be trusted. Bounded by `limit`.
    pub async fn refresh(
        &self,
        redis: &Redis,
        shared: &ProcessTier,
        tier1: &RefCell<Tier1>,
        limit: Duration,
    ) -> Verdict {
        if !self.is_on() {
            return Verdict::off();
        }
        let poll = self.config.feed.poll;
        let now = clock::now();
        let due = self
            .checked_at
            .get()
            .is_none_or(|at| now.saturating_sub(at) >= nanos(poll));
        let mut spent_ms = None;
        if due && !self.polling.get() && !limit.is_zero() {
            self.polling.set(true);
            let _done = Reset(&self.polling);
            self.checked_at.set(Some(now));
            let state = self.poll(redis, shared, limit).await;
            let mut progress = self.progress.get();
            let changes = progress.catch_up(&state);
            self.progress.set(progress);
            if !changes.is_empty() {
                let mut tier1 = tier1.borrow_mut();
                let at = clock::now();
                for change in &changes {
                    tier1.invalidate(change, at);
                }
            }
            *self.state.borrow_mut() = state;
            spent_ms = Some(clock::millis_since(now));
        }
        self.verdict(spent_ms)
    }

    /// What may be trusted now, from the state as last seen.
    pub fn verdict(&self, spent_ms: Option<f64>) -> Verdict {
        if !self.is_on() {
            return Verdict::off();
        }
        let state = self.state.borrow();
        let progress = self.progress.get();
        let verdict = state.verdict(clock::wall_ms(), self.config.feed.max_lag);
        let trust = match verdict {
            Ok(()) if progress.epoch == state.epoch => Some(Trust {
                epoch: state.epoch,
                since: progress.since,
            }),
            _ => None,
        };
        Verdict {
            trust,
            tag: progress.tag(),
            fallback: verdict
                .err()
                .or(trust.is_none().then_some(Fallback::NoFeed)),
            spent_ms,
        }
    }

    /// The current state: from the store when the process-wide tier is on (reading the stream when it is
    /// older than `feed_poll_ms` and no other instance holds the lease), else the instance's own.
    async fn poll(&self, redis: &Redis, shared: &ProcessTier, limit: Duration) -> FeedState {
        let poll_ms = millis(self.config.feed.poll);
        let max_lag = self.config.feed.max_lag;
        let now_ms = clock::wall_ms();
        let stored = if shared.is_on() {
            shared.get_raw(STATE_KEY, limit).await
        } else {
            None
        };
        let Some(stored) = stored else {
            // Per instance: no store, or it failed (then this instance reads for itself).
            let mut state = self.state.borrow().clone();
            if now_ms.saturating_sub(state.read_at_ms) >= poll_ms {
                let before = state.verdict(now_ms, max_lag);
                self.read(redis, &mut state, now_ms, limit).await;
                log_change(before, &mut state, now_ms, max_lag, "instance");
            }
            return state;
        };
        let mut state = stored
            .as_deref()
            .and_then(FeedState::decode)
            .unwrap_or_default();
        if now_ms.saturating_sub(state.read_at_ms) < poll_ms {
            return state;
        }
        // The state is old: read the stream unless another instance is at it.
        let lease = shared
            .get_raw(LEASE_KEY, limit)
            .await
            .flatten()
            .as_deref()
            .and_then(Lease::decode);
        if lease.is_some_and(|l| l.holder != self.holder && l.until_ms > now_ms) {
            return state;
        }
        let until_ms = now_ms.saturating_add(millis(limit).saturating_mul(2));
        let mine = Lease {
            holder: self.holder,
            until_ms,
        };
        shared.set_raw(LEASE_KEY, &mine.encode(), limit).await;
        let before = state.verdict(now_ms, max_lag);
        self.read(redis, &mut state, now_ms, limit).await;
        log_change(before, &mut state, clock::wall_ms(), max_lag, "process");
        shared.set_raw(STATE_KEY, &state.encode(), limit).await;
        shared.delete_raw(LEASE_KEY, limit).await;
        state
    }

    /// Reads the stream into `state`: from its position, or from `feed_max_lag_ms` ago when it must
    /// start over. A failed read leaves `state` as it was (it becomes late); a reply that is not the
    /// feed drops the epoch.
    async fn read(&self, redis: &Redis, state: &mut FeedState, now_ms: i64, limit: Duration) {
        let max_lag = self.config.feed.max_lag;
        let restart = state.must_restart(now_ms, max_lag);
        let mut after = if restart {
            StreamId::at_ms(now_ms.saturating_sub(millis(max_lag)).max(0) as u64)
        } else {
            state.pos
        };
        for round in 0..MAX_ROUNDS {
            let reply = match redis.read_feed(&after.to_string(), READ_COUNT, limit).await {
                Ok(reply) => reply,
                Err(false) => return,
                Err(true) => {
                    eprintln!("aside-edge: the feed key is not a stream; copies on the TTL rule");
                    state.epoch = 0;
                    return;
                }
            };
            let entries = match parse_flat_xread(&reply) {
                Ok(entries) => entries,
                Err(e) => {
                    eprintln!("aside-edge: the feed holds {e}; copies on the TTL rule");
                    state.epoch = 0;
                    return;
                }
            };
            let restart = restart && round == 0;
            if let Some((held, read)) = state.absorb(&entries, restart, now_ms, &mut draw_nonzero) {
                // Said once per break (per process with the process-wide tier: only the reader sees it).
                eprintln!(
                    "aside-edge: invalidation feed lost continuity: entry {read} came after entry \
                     {held} ({}); a new epoch, copies taken before it fall back to the l1_ttl_ms rule",
                    if read <= held {
                        "the numbers went back: Redis restarted or failed over without the latest entries"
                    } else {
                        "entries were lost: the stream was trimmed or deleted past this position, or \
                         Redis restarted or failed over without them"
                    }
                );
            }
            if entries.len() < READ_COUNT {
                return;
            }
            after = state.pos;
        }
    }
}

/// Logs the reader's verdict when it changed (once per change per process with the process-wide tier).
fn log_change(
    before: Result<(), Fallback>,
    state: &mut FeedState,
    now_ms: i64,
    max_lag: Duration,
    scope: &str,
) {
    let after = state.verdict(now_ms, max_lag);
    let code = match after {
        Ok(()) => 1,
        Err(f) => 2 + f as u8,
    };
    if code == state.verdict && before.is_ok() == after.is_ok() {
        return;
    }
    if state.verdict == 0 && after == Err(Fallback::NoFeed) {
        // A reader's first read failed: no change of state (a new instance under load would log it
        // once each; the failed read is logged by crate::l2).
        state.verdict = code;
        return;
    }
    state.verdict = code;
    if before.is_ok() && after.is_err() {
        state.fallbacks += 1;
    }
    match after {
        Ok(()) => eprintln!(
            "aside-edge: invalidation feed current ({scope}, epoch {:016x} at entry {}): copies are \
             fresh until their own soft expiry",
            state.epoch, state.seq
        ),
        Err(f) => eprintln!(
            "aside-edge: invalidation feed {} ({scope}): copies fall back to the l1_ttl_ms rule",
            match f {
                Fallback::Off => "off",
                Fallback::NoFeed => "unavailable (never read, or not a feed)",
                Fallback::Late => "late (reads failing)",
                Fallback::Silent => "silent (no heartbeat)",
            }
        ),
    }
}

struct Reset<'a>(&'a Cell<bool>);

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(target_arch = "wasm32")]
fn draw_nonzero() -> u64 {
    spin_sdk::wasip3::random::random::get_random_u64().max(1)
}

#[cfg(not(target_arch = "wasm32"))]
fn draw_nonzero() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0x5eed);
    NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, ms: u64, id: i32, version: i64) -> FeedEntry {
        FeedEntry {
            stream_id: StreamId { ms, seq: 0 },
            seq,
            change: Some(Change {
                id,
                version,
                rank: 1,
            }),
        }
    }

    fn beat(seq: u64, ms: u64) -> FeedEntry {
        FeedEntry {
            stream_id: StreamId { ms, seq: 0 },
            seq,
            change: None,
        }
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 100;
        move || {
            n += 1;
            n
        }
    }

    const LAG: Duration = Duration::from_millis(1000);

    #[test]
    fn a_first_read_starts_an_epoch_and_later_reads_continue_it() {
        let mut draw = counter();
        let mut s = FeedState::default();
        assert_eq!(s.verdict(0, LAG), Err(Fallback::NoFeed));
        assert!(s.must_restart(0, LAG));
        s.absorb(&[beat(10, 5), change(11, 6, 7, 3)], true, 1_000, &mut draw);
        let epoch = s.epoch;
        assert_ne!(epoch, 0);
        assert_eq!((s.seq, s.ring_from, s.ring.len()), (11, 9, 1));
        assert_eq!(s.verdict(1_500, LAG), Ok(()));
        s.absorb(&[beat(12, 7)], false, 1_600, &mut draw);
        assert_eq!((s.epoch, s.seq, s.pos.ms), (epoch, 12, 7));
        // Reads keep working but nothing comes: silent after the lag.
        s.absorb(&[], false, 2_700, &mut draw);
        assert_eq!(s.verdict(2_700, LAG), Err(Fallback::Silent));
        assert!(s.must_restart(2_700, LAG));
        // No read at all: late.
        assert_eq!(s.verdict(3_800, LAG), Err(Fallback::Late));
    }

    #[test]
    fn a_gap_or_numbers_going_back_start_a_new_epoch() {
        let mut draw = counter();
        let mut s = FeedState::default();
        assert_eq!(s.absorb(&[beat(10, 5)], true, 1_000, &mut draw), None);
        let first = s.epoch;
        assert_eq!(s.absorb(&[beat(11, 6)], false, 1_050, &mut draw), None);
        assert_eq!(s.epoch, first);
        // Trimmed past the position: 12..=19 lost.
        let gap = s.absorb(&[change(20, 9, 1, 2)], false, 1_100, &mut draw);
        assert_eq!(gap, Some((11, 20)), "the break is reported");
        let second = s.epoch;
        assert_ne!(second, first);
        assert_eq!((s.ring_from, s.seq), (19, 20));
        // A restart without persistence, or a failover to a replica without the latest entries:
        // the numbers go back.
        let back = s.absorb(&[beat(1, 12)], false, 1_200, &mut draw);
        assert_eq!(back, Some((20, 1)), "the numbers went back");
        assert_ne!(s.epoch, second);
        assert_eq!(s.epochs, 3);
        assert!(s.ring.is_empty());
    }

    #[test]
    fn the_ring_keeps_the_latest_changes_and_says_from_where() {
        let mut draw = counter();
        let mut s = FeedState::default();
        let entries: Vec<_> = (1..=(RING as u64 + 10))
            .map(|n| change(n, n, n as i32, 1))
            .collect();
        s.absorb(&entries, true, 0, &mut draw);
        assert_eq!(s.ring.len(), RING);
        assert_eq!(s.ring_from, 10);
        assert_eq!(s.ring.front().unwrap().0, 11);
    }

    #[test]
    fn an_instance_applies_what_it_has_not_and_vouches_only_from_where_it_can() {
        let mut draw = counter();
        let mut s = FeedState::default();
        s.absorb(&[beat(10, 1), change(11, 2, 7, 3)], true, 0, &mut draw);
        let mut p = Progress::default();
        let got = p.catch_up(&s);
        assert_eq!(got.len(), 1);
        assert_eq!((p.epoch, p.applied, p.since), (s.epoch, 11, 9));
        assert!(p.catch_up(&s).is_empty(), "nothing twice");
        s.absorb(
            &[change(12, 3, 8, 1), change(13, 4, 9, 1)],
            false,
            0,
            &mut draw,
        );
        let got = p.catch_up(&s);
        assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(p.since, 9, "still vouching from the start");
        // A slower reader's older state changes nothing.
        let mut older = s.clone();
        older.seq = 12;
        assert!(p.catch_up(&older).is_empty());
        assert_eq!(p.applied, 13);

        // Fallen behind the ring: everything in it, and copies only from its start.
        let entries: Vec<_> = (14..=(14 + RING as u64))
            .map(|n| change(n, n, 1, n as i64))
            .collect();
        s.absorb(&entries, false, 0, &mut draw);
        let got = p.catch_up(&s);
        assert_eq!(got.len(), RING);
        assert_eq!(p.since, s.ring_from);
        let trust = Some(Trust {
            epoch: p.epoch,
            since: p.since,
        });
        assert!(!Trust::covers(
            trust,
            FeedTag {
                epoch: p.epoch,
                seq: 13
            }
        ));
        assert!(Trust::covers(trust, p.tag()));
        assert!(!Trust::covers(
            trust,
            FeedTag {
                epoch: p.epoch + 1,
                seq: p.applied
            }
        ));
        assert!(!Trust::covers(None, p.tag()));
    }

    #[test]
    fn the_state_round_trips_and_anything_else_is_refused() {
        let mut draw = counter();
        let mut s = FeedState::default();
        s.absorb(&[beat(10, 1), change(11, 2, 7, 3)], true, 55, &mut draw);
        s.verdict = 1;
        let bytes = s.encode();
        assert_eq!(FeedState::decode(&bytes), Some(s.clone()));
        assert_eq!(FeedState::decode(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(FeedState::decode(&longer), None);
        assert_eq!(FeedState::decode(b"asT1...."), None);
        let lease = Lease {
            holder: 9,
            until_ms: 77,
        };
        assert_eq!(Lease::decode(&lease.encode()), Some(lease));
    }
}
