//! The origin budget: how many reads an instance may send to the origin, as a token bucket.
//!
//! Every read that goes to the origin (a miss, a read Redis could not answer, an early refresh) takes
//! a token; the bucket holds `origin_budget_burst` tokens and refills at `origin_budget_per_s`. With
//! the bucket empty the read is not sent: it is answered from a stale copy if the instance has one,
//! else `503` with `Retry-After` (the seconds until the next token), at once, instead of adding load
//! to an origin that the edge's own overload would otherwise flood. Writes are not counted (they are
//! limited per caller, [`crate::ratelimit`]).
//!
//! The budget is **per instance**: Spin runs several instances per process, each with its own bucket,
//! so a process sends at most `instances × rate` (see docs/operations.md, "Overload", for why it is not
//! process-wide). 0 turns it off.

use std::time::Duration;

use crate::clock::Nanos;

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Reads a second, sustained; 0: no budget.
    pub per_second: u32,
    /// Reads at once (the bucket's size, at least 1).
    pub burst: u32,
}

/// One instance's bucket.
#[derive(Debug, Clone)]
pub struct OriginBudget {
    settings: BudgetSettings,
    tokens: f64,
    updated: Option<Nanos>,
    /// Reads refused so far, for the log line that reports them.
    refused: u64,
}

impl OriginBudget {
    pub fn new(settings: BudgetSettings) -> Self {
        Self {
            settings,
            tokens: f64::from(settings.burst.max(1)),
            updated: None,
            refused: 0,
        }
    }

    /// Takes one read at `now`; `Err(wait)` (until a token is back) when the bucket is empty.
    pub fn take(&mut self, now: Nanos) -> Result<(), Duration> {
        if self.settings.per_second == 0 {
            return Ok(());
        }
        let burst = f64::from(self.settings.burst.max(1));
        let per_nano = f64::from(self.settings.per_second) / 1e9;
        let elapsed = self.updated.map_or(0, |t| now.saturating_sub(t)) as f64;
        self.tokens = (self.tokens + elapsed * per_nano).min(burst);
        self.updated = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            self.refused += 1;
            let wait = (1.0 - self.tokens) / per_nano;
            Err(Duration::from_nanos(wait.ceil() as u64))
        }
    }

    /// Reads the bucket would grant at once at `now` (`None`: no budget); changes nothing.
    pub fn tokens_at(&self, now: Nanos) -> Option<f64> {
        if self.settings.per_second == 0 {
            return None;
        }
        let burst = f64::from(self.settings.burst.max(1));
        let per_nano = f64::from(self.settings.per_second) / 1e9;
        let elapsed = self.updated.map_or(0, |t| now.saturating_sub(t)) as f64;
        Some((self.tokens + elapsed * per_nano).min(burst))
    }

    /// Reads refused since the instance started.
    pub fn refused(&self) -> u64 {
        self.refused
    }
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
        assert_eq!(b.refused(), 1);
        // A tenth of a second brings one token back, not more.
        assert!(b.take(S / 10).is_ok());
        assert!(b.take(S / 10).is_err());
        // A long pause refills up to the burst only.
        for _ in 0..3 {
            assert!(b.take(100 * S).is_ok());
        }
        assert!(b.take(100 * S).is_err());
        assert_eq!(b.refused(), 3);
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
        assert_eq!(b.refused(), 0);
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
}
