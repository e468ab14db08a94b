//! A circuit breaker, one per backend (Redis, PostgreSQL): after `failures` consecutive failures the
//! backend is skipped for a back-off, so requests stop paying its timeout; when the back-off ends one
//! request (and only one) is let through as a probe. A successful probe closes the breaker; a failed one
//! opens it again for twice the back-off, up to a maximum.
//!
//! ```text
//!            failures in a row >= threshold              back-off over: next caller probes
//!   Closed ─────────────────────────────────▶ Open ───────────────────────────────▶ HalfOpen
//!     ▲                                         ▲                                       │
//!     └──────────── probe (or any call) succeeds ┼───────── probe fails: back-off × 2 ───┘
//! ```
//!
//! The state is exported as the gauge `aside_origin_breaker_open{backend}` (1 while open or probing).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a breaker reacts to failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (1 = the first failure).
    pub failures: u32,
    /// The first back-off after opening.
    pub backoff: Duration,
    /// The longest back-off, reached by doubling after each failed probe.
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, backoff: Duration },
    HalfOpen { backoff: Duration },
}

pub struct Breaker {
    /// `redis` or `postgres`: the metric label and the name in logs.
    backend: &'static str,
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// Leave to call the backend once. Report the outcome with [`Permit::success`] or [`Permit::failure`];
/// a probe dropped without an outcome (its request was cancelled) counts as a failure, so the breaker
/// can never stay half-open with no probe in flight.
#[must_use = "report the outcome of the call"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, true, Instant::now());
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, false, Instant::now());
    }

    /// Is this call the half-open probe?
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.record(true, false, Instant::now());
        }
    }
}

impl Breaker {
    pub fn new(backend: &'static str, settings: BreakerSettings) -> Self {
        let settings = BreakerSettings {
            failures: settings.failures.max(1),
            backoff: settings.backoff,
            max_backoff: settings.max_backoff.max(settings.backoff),
        };
        crate::metrics::breaker_open(backend, false);
        Self {
            backend,
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May the backend be called now? `None` while open (skip the backend), or while half-open with
    /// the probe still in flight.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.try_acquire_at(Instant::now())
    }

    /// Would a call be refused right now (open within its back-off, or half-open with the probe in
    /// flight)? Lets a caller give up before queueing behind work that was started earlier and may still
    /// be stuck on the failing backend.
    pub fn rejects_now(&self) -> bool {
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until, .. } => Instant::now() < until,
            State::HalfOpen { .. } => true,
        }
    }

    /// True while the breaker is open or half-open.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_acquire_at(&self, now: Instant) -> Option<Permit<'_>> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until, .. } if now < until => return None,
            State::Open { backoff, .. } => {
                *state = State::HalfOpen { backoff };
                true
            }
            State::HalfOpen { .. } => return None,
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    fn record(&self, probe: bool, ok: bool, now: Instant) {
        let mut state = self.lock();
        let before = *state;
        *state = match (before, ok) {
            // Any success shows the backend answers: close (a call admitted before the breaker opened
            // may finish while it is open; its success is as good as a probe's).
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= self.settings.failures {
                    State::Open {
                        until: now + self.settings.backoff,
                        backoff: self.settings.backoff,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen { backoff }, false) if probe => {
                let backoff = (backoff * 2).min(self.settings.max_backoff);
                State::Open {
                    until: now + backoff,
                    backoff,
                }
            }
            // A late failure of a call admitted before the breaker opened: the probe decides.
            (other, false) => other,
        };
        let was_open = !matches!(before, State::Closed { .. });
        let is_open = !matches!(*state, State::Closed { .. });
        drop(state);
        if was_open != is_open {
            crate::metrics::breaker_open(self.backend, is_open);
            if is_open {
                tracing::warn!(
                    backend = self.backend,
                    backoff_ms = self.settings.backoff.as_millis() as u64,
                    "backend failing; skipping it for the back-off period"
                );
            } else {
                tracing::info!(
                    backend = self.backend,
                    "backend answered again; breaker closed"
                );
            }
        } else if probe && !ok {
            tracing::debug!(backend = self.backend, "probe failed; breaker stays open");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(
            "test",
            BreakerSettings {
                failures,
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(350),
            },
        )
    }

    fn fail(b: &Breaker, now: Instant) {
        let permit = b.try_acquire_at(now).expect("admitted");
        b.record(permit.probe, false, now);
        std::mem::forget(permit);
    }

    #[test]
    fn opens_only_after_the_threshold_of_consecutive_failures() {
        let b = breaker(3);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        assert!(!b.is_open());
        // A success in between starts the count again.
        b.try_acquire_at(t).unwrap().success();
        fail(&b, t);
        fail(&b, t);
        assert!(!b.is_open());
        fail(&b, t);
        assert!(b.is_open());
        assert!(b.rejects_now());
        assert!(b.try_acquire_at(t).is_none(), "skipped during the back-off");
        assert!(b.try_acquire_at(t + Duration::from_millis(99)).is_none());
    }

    #[test]
    fn lets_one_probe_through_after_the_backoff_and_closes_on_its_success() {
        let b = breaker(1);
        let t = Instant::now();
        fail(&b, t);
        let later = t + Duration::from_millis(100);
        let probe = b.try_acquire_at(later).expect("probe after the back-off");
        assert!(probe.is_probe());
        assert!(
            b.try_acquire_at(later).is_none(),
            "one probe at a time: others are still skipped"
        );
        assert!(b.rejects_now());
        probe.success();
        assert!(!b.is_open());
        assert!(!b.rejects_now());
        let next = b.try_acquire_at(later).expect("closed");
        assert!(!next.is_probe());
        next.success();
    }

    #[test]
    fn a_failed_probe_doubles_the_backoff_up_to_the_maximum() {
        let b = breaker(1);
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        fail(&b, t); // open until 100
        // Each failed probe: 200, then 400 capped at 350, then 350 again.
        for (probe_at, next_at) in [(100, 300), (300, 650), (650, 1000)] {
            assert!(b.try_acquire_at(ms(probe_at - 1)).is_none(), "{probe_at}");
            fail(&b, ms(probe_at));
            assert!(b.try_acquire_at(ms(next_at - 1)).is_none(), "{next_at}");
        }
        let probe = b.try_acquire_at(ms(1000)).expect("probe");
        probe.success();
        // Closed again, and the next opening starts from the first back-off.
        fail(&b, ms(1000));
        assert!(b.try_acquire_at(ms(1099)).is_none());
        assert!(b.try_acquire_at(ms(1100)).is_some());
    }

    #[test]
    fn a_dropped_probe_counts_as_failed_and_a_dropped_normal_call_counts_as_nothing() {
        let b = breaker(2);
        let t = Instant::now();
        drop(b.try_acquire_at(t).unwrap());
        drop(b.try_acquire_at(t).unwrap());
        assert!(!b.is_open(), "cancelled calls are not failures");
        fail(&b, t);
        fail(&b, t);
        assert!(b.is_open());
        let later = t + Duration::from_millis(100);
        drop(b.try_acquire_at(later).expect("probe"));
        assert!(b.is_open(), "the cancelled probe reopened it");
        // The drop recorded the failure at the real time: the doubled back-off (200 ms) runs from then.
        let now = Instant::now();
        assert!(
            b.try_acquire_at(now + Duration::from_millis(150)).is_none(),
            "with a doubled back-off"
        );
        assert!(b.try_acquire_at(now + Duration::from_millis(250)).is_some());
    }

    #[test]
    fn late_results_of_calls_admitted_before_opening() {
        let b = breaker(1);
        let t = Instant::now();
        let slow = b.try_acquire_at(t).unwrap();
        fail(&b, t);
        assert!(b.is_open());
        // A late success shows the backend answers: closed at once.
        slow.success();
        assert!(!b.is_open());
        // A late failure while half-open leaves the decision to the probe.
        let slow = b.try_acquire_at(t).unwrap();
        fail(&b, t);
        let probe = b.try_acquire_at(t + Duration::from_millis(100)).unwrap();
        slow.failure();
        assert!(b.try_acquire_at(t + Duration::from_millis(100)).is_none());
        probe.success();
        assert!(!b.is_open());
    }
}
