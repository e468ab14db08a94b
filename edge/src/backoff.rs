//! When to skip a backend: an instance-local circuit breaker, one for Redis and one for the origin.
//!
//! A backend that is down or slow must not add its timeout to every request. After `threshold`
//! consecutive failures the breaker *opens*: the edge skips the backend for the back-off window (Redis:
//! straight to the origin; origin: a stale copy or an immediate 503). Then one request probes it (the
//! others keep skipping it) and its outcome decides: closed again, or another window. A success resets
//! the count of consecutive failures, so scattered errors never open it.
//!
//! State changes are returned by [`Breaker::record`] so that the caller logs them, and
//! [`Breaker::state`] is put on every answer while the breaker is not closed (`x-edge-breaker`): an
//! edge has no metrics endpoint and its instances are independent, so that is where it shows.
//!
//! Pure: "now" is passed in (monotonic nanoseconds), so it is tested natively.

use std::time::Duration;

use crate::clock::Nanos;

/// What a request may do with the backend right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: use it.
    Use,
    /// The back-off is over and this request is the one that tries the backend again.
    Probe,
    /// Open (or another request is probing): do without the backend.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { at: Nanos },
    Probing { since: Nanos },
}

/// What an answer says about a breaker (`x-edge-breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible {
    Closed,
    Open,
    /// One request is trying the backend again.
    Probing,
}

impl Visible {
    pub fn as_str(self) -> &'static str {
        match self {
            Visible::Closed => "closed",
            Visible::Open => "open",
            Visible::Probing => "probing",
        }
    }
}

/// A state change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `threshold` consecutive failures (or a failed probe): skipped for the window.
    Opened,
    /// A probe succeeded.
    Closed,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    window: Nanos,
    state: State,
}

impl Breaker {
    /// `threshold` is at least 1 (0 is taken as 1).
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            state: State::Closed { failures: 0 },
        }
    }

    /// Asks for permission to use the backend. A `Probe` permit must be followed by
    /// [`Breaker::record`]; if it never is (the probing request was cancelled), another probe is allowed
    /// one window later.
    pub fn permit(&mut self, now: Nanos) -> Permit {
        match self.state {
            State::Closed { .. } => Permit::Use,
            State::Open { at: since } | State::Probing { since } => {
                if now.saturating_sub(since) >= self.window {
                    self.state = State::Probing { since: now };
                    Permit::Probe
                } else {
                    Permit::Skip
                }
            }
        }
    }

    /// Records how a use of the backend under `permit` went. A failed probe opens the breaker again at
    /// once; only a probe's success closes it (a request that started before it opened and succeeded
    /// after says nothing about the backend now).
    pub fn record(&mut self, permit: Permit, ok: bool, now: Nanos) -> Option<Transition> {
        match (permit, ok, self.state) {
            (Permit::Skip, _, _) => None,
            (Permit::Probe, true, _) => {
                self.state = State::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (Permit::Probe, false, _) => {
                self.state = State::Open { at: now };
                Some(Transition::Opened)
            }
            (Permit::Use, true, State::Closed { .. }) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (Permit::Use, false, State::Closed { failures }) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    self.state = State::Open { at: now };
                    Some(Transition::Opened)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            // Already open or probing: a late failure from before keeps it open (and restarts the
            // window only if it is not being probed), a late success changes nothing.
            (Permit::Use, false, State::Open { .. }) => {
                self.state = State::Open { at: now };
                None
            }
            (Permit::Use, _, _) => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// What answers say about this breaker.
    pub fn visible(&self) -> Visible {
        match self.state {
            State::Closed { .. } => Visible::Closed,
            State::Open { .. } => Visible::Open,
            State::Probing { .. } => Visible::Probing,
        }
    }

    /// How long until the next probe (zero when closed or due): the `Retry-After` of an answer the
    /// breaker refused.
    pub fn remaining(&self, now: Nanos) -> Duration {
        match self.state {
            State::Closed { .. } => Duration::ZERO,
            State::Open { at: since } | State::Probing { since } => {
                Duration::from_nanos(self.window.saturating_sub(now.saturating_sub(since)))
            }
        }
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn a_closed_breaker_lets_requests_through() {
        let mut b = Breaker::new(1, Duration::from_millis(2000));
        assert_eq!(b.permit(0), Permit::Use);
        assert_eq!(b.record(Permit::Use, true, 0), None);
        assert_eq!(b.permit(1), Permit::Use);
        assert_eq!(b.visible(), Visible::Closed);
        assert_eq!(b.remaining(1), Duration::ZERO);
    }

    #[test]
    fn a_failure_skips_the_backend_for_the_window_then_one_request_probes() {
        let mut b = Breaker::new(1, Duration::from_millis(2000));
        assert_eq!(
            b.record(Permit::Use, false, 1000 * MS),
            Some(Transition::Opened)
        );
        assert!(!b.is_closed());
        assert_eq!(b.visible(), Visible::Open);
        assert_eq!(b.permit(1000 * MS), Permit::Skip);
        assert_eq!(b.remaining(1500 * MS), Duration::from_millis(1500));
        assert_eq!(b.permit(2999 * MS), Permit::Skip);
        assert_eq!(b.permit(3000 * MS), Permit::Probe);
        assert_eq!(b.visible(), Visible::Probing);
        assert_eq!(
            b.permit(3000 * MS),
            Permit::Skip,
            "only one probe at a time"
        );
        assert_eq!(
            b.record(Permit::Probe, true, 3001 * MS),
            Some(Transition::Closed)
        );
        assert!(b.is_closed());
        assert_eq!(b.permit(3002 * MS), Permit::Use);
    }

    #[test]
    fn it_opens_only_after_the_threshold_of_consecutive_failures() {
        let mut b = Breaker::new(3, Duration::from_millis(100));
        assert_eq!(b.record(Permit::Use, false, 0), None);
        assert_eq!(b.record(Permit::Use, false, MS), None);
        // A success in between resets the count.
        assert_eq!(b.record(Permit::Use, true, 2 * MS), None);
        assert_eq!(b.record(Permit::Use, false, 3 * MS), None);
        assert_eq!(b.record(Permit::Use, false, 4 * MS), None);
        assert_eq!(b.permit(4 * MS), Permit::Use);
        assert_eq!(
            b.record(Permit::Use, false, 5 * MS),
            Some(Transition::Opened)
        );
        assert_eq!(b.permit(6 * MS), Permit::Skip);
        assert_eq!(b.threshold(), 3);
    }

    #[test]
    fn a_failed_probe_opens_it_again_whatever_the_threshold() {
        let mut b = Breaker::new(5, Duration::from_millis(100));
        for i in 0..5 {
            b.record(Permit::Use, false, i * MS);
        }
        assert_eq!(b.permit(104 * MS), Permit::Probe);
        assert_eq!(
            b.record(Permit::Probe, false, 150 * MS),
            Some(Transition::Opened)
        );
        assert_eq!(b.permit(249 * MS), Permit::Skip);
        assert_eq!(b.permit(250 * MS), Permit::Probe);
    }

    #[test]
    fn a_late_success_from_before_the_failure_does_not_close_it() {
        let mut b = Breaker::new(1, Duration::from_millis(100));
        b.record(Permit::Use, false, 0);
        assert_eq!(b.record(Permit::Use, true, 10 * MS), None);
        assert_eq!(b.permit(20 * MS), Permit::Skip);
    }

    #[test]
    fn a_lost_probe_is_retried_after_another_window() {
        let mut b = Breaker::new(1, Duration::from_millis(100));
        b.record(Permit::Use, false, 0);
        assert_eq!(b.permit(100 * MS), Permit::Probe);
        // The probing request is cancelled and never records.
        assert_eq!(b.permit(199 * MS), Permit::Skip);
        assert_eq!(b.permit(200 * MS), Permit::Probe);
    }

    #[test]
    fn a_zero_window_never_skips() {
        let mut b = Breaker::new(1, Duration::ZERO);
        b.record(Permit::Use, false, 5);
        assert_eq!(b.permit(5), Permit::Probe);
        assert_eq!(b.permit(5), Permit::Probe);
    }

    #[test]
    fn a_zero_threshold_is_one() {
        let mut b = Breaker::new(0, Duration::from_millis(100));
        assert_eq!(b.record(Permit::Use, false, 0), Some(Transition::Opened));
    }
}
