//! The origin's circuit breakers, one per backend (Redis, PostgreSQL): the shared state machine
//! ([`aside_shared::breaker`], where its semantics are documented) behind a lock, with the real clock,
//! the gauge `aside_origin_breaker_open{backend}` (1 while open or probing) and a log line per change.
//!
//! In short: after `failures` consecutive failures the backend is skipped for a back-off; then one
//! request (and only one) probes it. A successful probe closes the breaker; a failed one opens it again
//! for twice the back-off, up to a maximum; a probe whose request is cancelled frees the slot for the
//! next request and counts as nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use aside_shared::breaker::BreakerSettings;
use aside_shared::breaker::{self, Phase, Transition};

pub struct Breaker {
    /// `redis` or `postgres`: the metric label and the name in logs.
    backend: &'static str,
    /// The fixed point the shared machine's times count from.
    epoch: Instant,
    state: Mutex<breaker::Breaker>,
}

/// Leave to call the backend once. Report the outcome with [`Permit::success`] or [`Permit::failure`];
/// dropped without an outcome (its request was cancelled), it counts as nothing, and if it was the probe
/// the next request probes instead.
#[must_use = "report the outcome of the call"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    permit: breaker::Permit,
    reported: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.permit, true, Instant::now());
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.permit, false, Instant::now());
    }

    /// Is this call the half-open probe?
    pub fn is_probe(&self) -> bool {
        self.permit.is_probe()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.lock().cancel(self.permit);
            if self.permit.is_probe() {
                tracing::debug!(
                    backend = self.breaker.backend,
                    "probe cancelled; slot freed"
                );
            }
        }
    }
}

impl Breaker {
    pub fn new(backend: &'static str, settings: BreakerSettings) -> Self {
        crate::metrics::breaker_open(backend, false);
        Self {
            backend,
            epoch: Instant::now(),
            state: Mutex::new(breaker::Breaker::new(settings)),
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
        self.lock().refuses(self.since_epoch(Instant::now()))
    }

    /// True while the breaker is open or half-open.
    pub fn is_open(&self) -> bool {
        self.lock().phase() != Phase::Closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, breaker::Breaker> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    fn try_acquire_at(&self, now: Instant) -> Option<Permit<'_>> {
        let permit = self.lock().acquire(self.since_epoch(now));
        // `then`, not `then_some`: a refused call must not build a permit whose drop locks again.
        (!permit.is_refused()).then(|| Permit {
            breaker: self,
            permit,
            reported: false,
        })
    }

    fn record(&self, permit: breaker::Permit, ok: bool, now: Instant) {
        let mut state = self.lock();
        let transition = state.record(permit, ok, self.since_epoch(now));
        let backoff_ms = state.backoff().as_millis() as u64;
        drop(state);
        match transition {
            Some(Transition::Opened) => {
                crate::metrics::breaker_open(self.backend, true);
                tracing::warn!(
                    backend = self.backend,
                    backoff_ms,
                    "backend failing; skipping it for the back-off period"
                );
            }
            Some(Transition::Reopened) => {
                tracing::debug!(
                    backend = self.backend,
                    backoff_ms,
                    "probe failed; breaker stays open"
                );
            }
            Some(Transition::Closed) => {
                crate::metrics::breaker_open(self.backend, false);
                tracing::info!(
                    backend = self.backend,
                    "backend answered again; breaker closed"
                );
            }
            None => {}
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
        let mut permit = b.try_acquire_at(now).expect("admitted");
        permit.reported = true;
        b.record(permit.permit, false, now);
    }

    #[test]
    fn opens_after_the_threshold_and_refuses_during_the_backoff() {
        let b = breaker(3);
        let t = Instant::now();
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
    fn a_failed_probe_doubles_the_backoff() {
        let b = breaker(1);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t + Duration::from_millis(100)); // the probe: open for 200 ms from then
        assert!(b.try_acquire_at(t + Duration::from_millis(299)).is_none());
        assert!(b.try_acquire_at(t + Duration::from_millis(300)).is_some());
    }

    #[test]
    fn a_dropped_probe_frees_the_slot_and_a_dropped_normal_call_counts_as_nothing() {
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
        assert!(b.is_open(), "a cancelled probe proves nothing");
        let next = b
            .try_acquire_at(later)
            .expect("the next request probes at once");
        assert!(next.is_probe());
        next.success();
        assert!(!b.is_open());
    }

    #[test]
    fn late_results_of_calls_admitted_before_opening_change_nothing() {
        let b = breaker(1);
        let t = Instant::now();
        let slow = b.try_acquire_at(t).unwrap();
        fail(&b, t);
        slow.success();
        assert!(b.is_open(), "only a probe closes it");
        let probe = b.try_acquire_at(t + Duration::from_millis(100)).unwrap();
        probe.success();
        assert!(!b.is_open());
    }
}
