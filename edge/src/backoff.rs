//! When to skip Redis: an instance-local back-off after a failure.
//!
//! A Redis that is down or slow must not add its timeout to every request. After a failure the edge goes
//! straight to the origin for the back-off window; then one request probes Redis (the others keep
//! skipping it) and its outcome decides: healthy again, or another window.
//!
//! Pure: "now" is passed in (monotonic nanoseconds), so it is tested natively.

use std::time::Duration;

use crate::l1::Nanos;

/// What a request may do with Redis right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Redis is healthy: use it.
    Use,
    /// The back-off is over and this request is the one that tries Redis again.
    Probe,
    /// In back-off (or another request is probing): go to the origin directly.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Healthy,
    Failed { at: Nanos },
    Probing { since: Nanos },
}

#[derive(Debug, Clone)]
pub struct Backoff {
    window: Nanos,
    state: State,
}

impl Backoff {
    pub fn new(window: Duration) -> Self {
        Self {
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            state: State::Healthy,
        }
    }

    /// Asks for permission to use Redis. A `Probe` permit must be followed by [`Backoff::record`]; if
    /// it never is (the probing request was cancelled), another probe is allowed one window later.
    pub fn permit(&mut self, now: Nanos) -> Permit {
        match self.state {
            State::Healthy => Permit::Use,
            State::Failed { at: since } | State::Probing { since } => {
                if now.saturating_sub(since) >= self.window {
                    self.state = State::Probing { since: now };
                    Permit::Probe
                } else {
                    Permit::Skip
                }
            }
        }
    }

    /// Records how a use of Redis under `permit` went. A failure starts a new window; only a probe's
    /// success ends one (a request that started before the failure and succeeded after it says nothing
    /// about Redis now).
    pub fn record(&mut self, permit: Permit, ok: bool, now: Nanos) {
        match (permit, ok) {
            (Permit::Skip, _) => {}
            (_, false) => self.state = State::Failed { at: now },
            (Permit::Probe, true) => self.state = State::Healthy,
            (Permit::Use, true) => {}
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state == State::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn healthy_redis_is_used() {
        let mut b = Backoff::new(Duration::from_millis(2000));
        assert_eq!(b.permit(0), Permit::Use);
        b.record(Permit::Use, true, 0);
        assert_eq!(b.permit(1), Permit::Use);
    }

    #[test]
    fn a_failure_skips_redis_for_the_window_then_one_request_probes() {
        let mut b = Backoff::new(Duration::from_millis(2000));
        b.record(Permit::Use, false, 1000 * MS);
        assert!(!b.is_healthy());
        assert_eq!(b.permit(1000 * MS), Permit::Skip);
        assert_eq!(b.permit(2999 * MS), Permit::Skip);
        assert_eq!(b.permit(3000 * MS), Permit::Probe);
        assert_eq!(
            b.permit(3000 * MS),
            Permit::Skip,
            "only one probe at a time"
        );
        b.record(Permit::Probe, true, 3001 * MS);
        assert!(b.is_healthy());
        assert_eq!(b.permit(3002 * MS), Permit::Use);
    }

    #[test]
    fn a_failed_probe_starts_another_window() {
        let mut b = Backoff::new(Duration::from_millis(100));
        b.record(Permit::Use, false, 0);
        assert_eq!(b.permit(100 * MS), Permit::Probe);
        b.record(Permit::Probe, false, 150 * MS);
        assert_eq!(b.permit(249 * MS), Permit::Skip);
        assert_eq!(b.permit(250 * MS), Permit::Probe);
    }

    #[test]
    fn a_late_success_from_before_the_failure_does_not_end_the_back_off() {
        let mut b = Backoff::new(Duration::from_millis(100));
        b.record(Permit::Use, false, 0);
        b.record(Permit::Use, true, 10 * MS);
        assert_eq!(b.permit(20 * MS), Permit::Skip);
    }

    #[test]
    fn a_lost_probe_is_retried_after_another_window() {
        let mut b = Backoff::new(Duration::from_millis(100));
        b.record(Permit::Use, false, 0);
        assert_eq!(b.permit(100 * MS), Permit::Probe);
        // The probing request is cancelled and never records.
        assert_eq!(b.permit(199 * MS), Permit::Skip);
        assert_eq!(b.permit(200 * MS), Permit::Probe);
    }

    #[test]
    fn a_zero_window_never_skips() {
        let mut b = Backoff::new(Duration::ZERO);
        b.record(Permit::Use, false, 5);
        assert_eq!(b.permit(5), Permit::Probe);
        assert_eq!(b.permit(5), Permit::Probe);
    }
}
