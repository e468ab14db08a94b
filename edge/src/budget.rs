//! The origin budget: how many reads an instance may send to the origin, as a token bucket.
//!
//! Every read that goes to the origin (a miss, a read Redis could not answer, an early refresh) takes
//! a token; the bucket holds `origin_budget_burst` tokens and refills at `origin_budget_per_s`. With
//! the bucket empty the read is not sent: it is answered from a stale copy if the instance has one,
//! else `503` with `Retry-After` (the seconds until the next token), at once, instead of adding load
//! to an origin that the edge's own overload would otherwise flood. Writes are not counted (they are
//! limited per caller, [`crate::ratelimit`]).
//!
//! By default the budget is **per instance**: Spin runs several instances per process, each with its
//! own bucket, so a process sends at most `instances × rate`. With `origin_budget_store` naming a
//! key-value store the budget is **per process**: every instance takes from one bucket kept in that
//! store ([`SharedBucket`], updated by compare-and-swap, [`crate::process_budget`]), and an instance
//! falls back to its own bucket only while the store cannot be used. 0 turns it off.

use std::time::Duration;

use crate::clock::Nanos;
use crate::tagged::{tagged_i64, untag_i64};

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Reads a second, sustained; 0: no budget.
    pub per_second: u32,
    /// Reads at once (the bucket's size, at least 1).
    pub burst: u32,
}

/// One instance's bucket: the same algorithm as the process's ([`SharedBucket`]), its state kept in the
/// instance and its time the instance's monotonic clock.
#[derive(Debug, Clone)]
pub struct OriginBudget {
    settings: BudgetSettings,
    state: Option<SharedBucket>,
    /// Reads refused so far, for the log line that reports them.
    refused: u64,
}

impl OriginBudget {
    pub fn new(settings: BudgetSettings) -> Self {
        Self {
            settings,
            state: None,
            refused: 0,
        }
    }

    /// Takes one read at `now`; `Err(wait)` (until a token is back) when the bucket is empty.
    pub fn take(&mut self, now: Nanos) -> Result<(), Duration> {
        if self.settings.per_second == 0 {
            return Ok(());
        }
        let next = SharedBucket::take(self.state, micros(now), self.settings)?;
        self.state = Some(next);
        Ok(())
    }

    /// Reads the bucket would grant at once at `now` (`None`: no budget); changes nothing.
    pub fn tokens_at(&self, now: Nanos) -> Option<f64> {
        (self.settings.per_second > 0)
            .then(|| SharedBucket::tokens_at(self.state, micros(now), self.settings))
    }

    /// Counts a refusal (by this bucket or by the process's) and returns the instance's count so far.
    pub fn note_refused(&mut self) -> u64 {
        self.refused += 1;
        self.refused
    }
}

/// A bucket's state: the generic cell rate algorithm's theoretical arrival time (GCRA, the "virtual
/// scheduling" form of a token bucket), so that the whole bucket is one number, which the process's
/// bucket keeps in the key-value store and replaces by compare-and-swap. A read at `now` is granted when the
/// arrival time is at most `(burst - 1) × interval` ahead of `now`, and moves it one `interval`
/// (`1 / origin_budget_per_s`) later; time passing is tokens coming back, up to `burst`.
///
/// Times are microseconds: for the process's bucket on the wall clock, since the Unix epoch (every
/// instance of a process reads the same clock; the monotonic clock of an instance starts at its own
/// creation and cannot be compared), for an instance's on its monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBucket {
    /// The theoretical arrival time of the next read, µs.
    pub arrival_us: i64,
}

/// The 4-byte tag of a [`SharedBucket`] value (a version: a different layout gets another tag).
const BUCKET_TAG: &[u8; 4] = b"asG1";

impl SharedBucket {
    /// The value's bytes: the tag, then the arrival time (little-endian).
    pub fn encode(&self) -> Vec<u8> {
        tagged_i64(BUCKET_TAG, self.arrival_us)
    }

    /// The state in `bytes`; `None` for anything that is not an encoded bucket.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        untag_i64(BUCKET_TAG, bytes).map(|arrival_us| Self { arrival_us })
    }

    /// One take at `now_us` from the bucket whose state is `stored` (`None`: full): the state to keep
    /// when granted, or the wait until a token is back.
    pub fn take(
        stored: Option<Self>,
        now_us: i64,
        settings: BudgetSettings,
    ) -> Result<Self, Duration> {
        let (interval, tolerance) = gcra_steps(settings);
        let arrival = stored.map_or(now_us, |s| s.arrival_us.max(now_us));
        let ahead = arrival - now_us;
        if ahead > tolerance {
            let wait_us = u64::try_from(ahead - tolerance).unwrap_or(0);
            return Err(Duration::from_micros(wait_us));
        }
        Ok(Self {
            arrival_us: arrival.saturating_add(interval),
        })
    }

    /// Reads the bucket would grant at once at `now_us` (between 0 and the burst).
    pub fn tokens_at(stored: Option<Self>, now_us: i64, settings: BudgetSettings) -> f64 {
        let (interval, tolerance) = gcra_steps(settings);
        let burst = f64::from(settings.burst.max(1));
        let Some(arrival) = stored.map(|s| s.arrival_us) else {
            return burst;
        };
        let ahead = arrival.saturating_sub(now_us).max(0);
        // A full bucket has its arrival time at or before now; each take moves it one interval on.
        ((tolerance + interval - ahead) as f64 / interval as f64).clamp(0.0, burst)
    }
}

/// How far past a drained bucket's arrival time a stored one may be and still be trusted: clock reads
/// of instances racing each other, not a clock step.
pub const CLOCK_SLACK_US: i64 = 1_000_000;

impl SharedBucket {
    /// `stored` read from the store, unless it is further ahead of `now_us` than a drained bucket's
    /// arrival time by more than [`CLOCK_SLACK_US`] (the wall clock stepped back, or the settings
    /// shrank): then `None`, a full bucket, rather than refusing every read until the clock catches
    /// up. Within the slack it is kept: an instance whose `now` was read a moment before another's
    /// take sees that take's arrival time a little further ahead, and must not read that as a reset.
    /// (An instance's own bucket needs none of this: its monotonic clock never steps back.)
    pub fn trusted(stored: Option<Self>, now_us: i64, settings: BudgetSettings) -> Option<Self> {
        let (interval, tolerance) = gcra_steps(settings);
        let limit = tolerance
            .saturating_add(interval)
            .saturating_add(CLOCK_SLACK_US);
        stored.filter(|s| s.arrival_us.saturating_sub(now_us) <= limit)
    }
}

/// Monotonic nanoseconds as the microseconds a [`SharedBucket`] counts in.
fn micros(now: Nanos) -> i64 {
    i64::try_from(now / 1_000).unwrap_or(i64::MAX)
}

/// The emission interval (µs per read, at least 1) and the tolerance (`(burst - 1)` intervals) of
/// `settings` (a non-zero rate).
fn gcra_steps(settings: BudgetSettings) -> (i64, i64) {
    let interval = (1_000_000 / i64::from(settings.per_second.max(1))).max(1);
    let tolerance = interval.saturating_mul(i64::from(settings.burst.max(1)) - 1);
    (interval, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = OriginBudget::new(BudgetSettings {
            per_second: 10,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(b.take(0).is_ok());
        }
        let wait = b.take(0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(b.tokens_at(0), Some(0.0));
        assert_eq!(b.tokens_at(S / 20), Some(0.5));
        // A tenth of a second brings one token back, not more.
        assert!(b.take(S / 10).is_ok());
        assert!(b.take(S / 10).is_err());
        // A long pause refills up to the burst only.
        for _ in 0..3 {
            assert!(b.take(100 * S).is_ok());
        }
        assert!(b.take(100 * S).is_err());
    }

    #[test]
    fn a_zero_rate_is_no_budget() {
        let mut b = OriginBudget::new(BudgetSettings {
            per_second: 0,
            burst: 1,
        });
        for _ in 0..10_000 {
            assert!(b.take(0).is_ok());
        }
        assert_eq!(b.tokens_at(0), None);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut b = OriginBudget::new(BudgetSettings {
            per_second: 1,
            burst: 1,
        });
        assert!(b.take(10 * S).is_ok());
        assert!(b.take(5 * S).is_err());
    }

    const US: i64 = 1_000_000;

    #[test]
    fn the_shared_bucket_grants_its_burst_then_its_rate() {
        let settings = BudgetSettings {
            per_second: 10,
            burst: 3,
        };
        let t0 = 1_700_000_000 * US;
        let mut state = None;
        for _ in 0..3 {
            state = Some(SharedBucket::take(state, t0, settings).unwrap());
        }
        assert_eq!(SharedBucket::tokens_at(state, t0, settings), 0.0);
        let wait = SharedBucket::take(state, t0, settings).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Half an interval: half a token; a whole interval: one read, not two.
        assert_eq!(SharedBucket::tokens_at(state, t0 + US / 20, settings), 0.5);
        state = Some(SharedBucket::take(state, t0 + US / 10, settings).unwrap());
        assert!(SharedBucket::take(state, t0 + US / 10, settings).is_err());
        // A long pause refills up to the burst only.
        let later = t0 + 100 * US;
        assert_eq!(SharedBucket::tokens_at(state, later, settings), 3.0);
        for _ in 0..3 {
            state = Some(SharedBucket::take(state, later, settings).unwrap());
        }
        assert!(SharedBucket::take(state, later, settings).is_err());
    }

    #[test]
    fn the_shared_bucket_round_trips_and_refuses_foreign_bytes() {
        let b = SharedBucket {
            arrival_us: 1_733_000_000_123_456,
        };
        assert_eq!(SharedBucket::decode(&b.encode()), Some(b));
        assert_eq!(SharedBucket::decode(b"asG1"), None);
        // A breaker mark (another tag) is not a bucket.
        let mark = crate::process_tier::BreakerMark { open_until_ms: 5 };
        assert_eq!(SharedBucket::decode(&mark.encode()), None);
        assert_eq!(SharedBucket::decode(&7i64.to_le_bytes()), None);
    }

    #[test]
    fn a_shared_bucket_far_in_the_future_starts_full_again() {
        let settings = BudgetSettings {
            per_second: 1,
            burst: 2,
        };
        let now = 1_700_000_000 * US;
        // One take's worth ahead of a drained bucket is the most a take can leave: trusted.
        let drained = SharedBucket {
            arrival_us: now + 2 * US,
        };
        let read = |stored: SharedBucket| SharedBucket::trusted(Some(stored), now, settings);
        assert!(SharedBucket::take(read(drained), now, settings).is_err());
        // A take by another instance whose clock read came a moment later: trusted, still drained.
        let raced = SharedBucket {
            arrival_us: now + 2 * US + US / 2,
        };
        assert!(SharedBucket::take(read(raced), now, settings).is_err());
        assert_eq!(SharedBucket::tokens_at(read(raced), now, settings), 0.0);
        // An hour ahead (the clock went back an hour): not trusted, the bucket is full.
        let ahead = SharedBucket {
            arrival_us: now + 3_600 * US,
        };
        assert_eq!(SharedBucket::tokens_at(read(ahead), now, settings), 2.0);
        let granted = SharedBucket::take(read(ahead), now, settings).unwrap();
        assert_eq!(granted.arrival_us, now + US);
    }
}
