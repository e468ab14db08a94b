//! When to skip a backend: an instance-local circuit breaker, one for Redis and one for the origin.
//!
//! A backend that is down or slow must not add its timeout to every request. The state machine is the
//! shared one ([`aside_shared::breaker`], where its semantics are documented), with a fixed back-off
//! window: after `threshold` consecutive failures the breaker *opens* and the edge skips the backend for
//! the window (Redis: straight to the origin; origin: a stale copy or an immediate 503). Then one request
//! probes it (the others keep skipping it) and its outcome decides: closed again, or another window. A
//! probing request that is cancelled frees the probe for the next request.
//!
//! This module holds the instance's state and turns it into what the edge shows: state changes are
//! returned by [`Attempt::finish`] so that the caller logs them, and [`Breaker::visible`] is put on every
//! answer while the breaker is not closed (`x-edge-breaker`): an edge has no metrics endpoint and its
//! instances are independent, so that is where it shows.
//!
//! **Overload is not failure** ([`Verdict`]). A call with no answer in time is evidence against the
//! backend only if the edge could have heard one: an error always counts; a timeout counts only when
//! the call started early in its request's budget (less than half of it spent: else the request
//! waited in the instance), the component ran on time when its timer fired (the host was not starved
//! of CPU), the backend answered no other call of the instance meanwhile, and its recent answers were
//! quick. Otherwise the slowness is the edge's own queue: the breaker is left alone, so a saturated
//! edge never opens it and sends its load to the origin.
//!
//! **Only a silent Redis sends a read to the origin** ([`silent`]). A call unanswered through all the
//! waiting its request allows goes to the origin only if it started on time and Redis has answered
//! nothing of the instance for a whole `redis_timeout_ms`; otherwise (Redis answered other calls
//! meanwhile, or the call started late) it is shed: a stale copy or a fast 503, never an origin read.
//! So an overloaded edge adds no load to the origin, whatever its timers show.
//! And **overlapping timeouts** count once: a call that was already waiting when another call's
//! timeout was counted saw the same stall, so a single stall of a busy host, felt by every call in
//! flight at once, cannot open the breaker by itself; a Redis that stopped answering times out the
//! calls started after the first timeout too, and opens it one timeout later.
//!
//! Pure: "now" is passed in (monotonic nanoseconds), so it is tested natively.

use std::cell::RefCell;
use std::time::Duration;

use aside_shared::breaker::{self, BreakerSettings, Phase};

use crate::clock::Nanos;

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

/// One backend's breaker in this instance.
#[derive(Debug, Clone)]
pub struct Breaker(breaker::Breaker);

impl Breaker {
    /// `threshold` is at least 1 (0 is taken as 1).
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self(breaker::Breaker::new(BreakerSettings::fixed(
            threshold, window,
        )))
    }

    /// Opens the breaker for `left`, what is left of a back-off another instance started (see
    /// `crate::process_tier::BreakerMark`); see [`breaker::Breaker::open_for`].
    pub fn open_for(&mut self, left: Duration, now: Nanos) {
        self.0.open_for(left, Duration::from_nanos(now));
    }

    pub fn is_closed(&self) -> bool {
        self.0.phase() == Phase::Closed
    }

    /// What answers say about this breaker.
    pub fn visible(&self) -> Visible {
        match self.0.phase() {
            Phase::Closed => Visible::Closed,
            Phase::Open => Visible::Open,
            Phase::HalfOpen => Visible::Probing,
        }
    }

    /// How long until the next probe (zero when closed or due): the `Retry-After` of an answer the
    /// breaker refused.
    pub fn remaining(&self, now: Nanos) -> Duration {
        self.0.retry_in(Duration::from_nanos(now))
    }

    pub fn threshold(&self) -> u32 {
        self.0.settings().failures
    }
}

/// One use of a backend under its breaker. Report how it went with [`Attempt::finish`]; dropped
/// unfinished (the request was cancelled), it counts as nothing and, if it was the probe, the next request
/// probes instead.
#[must_use = "report the outcome with `finish`"]
pub struct Attempt<'a> {
    breaker: &'a RefCell<Breaker>,
    permit: Option<breaker::Permit>,
}

impl<'a> Attempt<'a> {
    /// Leave to use the backend now, or `None` while the breaker is open (or another request probes):
    /// do without it.
    pub fn start(breaker: &'a RefCell<Breaker>, now: Nanos) -> Option<Self> {
        let permit = breaker.borrow_mut().0.acquire(Duration::from_nanos(now));
        // `then`, not `then_some`: a refused permit must not build (and drop) an attempt.
        (!permit.is_refused()).then(|| Self {
            breaker,
            permit: Some(permit),
        })
    }

    /// Records how the use went (`ok`: the backend answered); returns the state change, if any.
    pub fn finish(mut self, ok: bool, now: Nanos) -> Option<Transition> {
        let permit = self.permit.take()?;
        let transition = self
            .breaker
            .borrow_mut()
            .0
            .record(permit, ok, Duration::from_nanos(now));
        transition.map(|t| match t {
            breaker::Transition::Opened | breaker::Transition::Reopened => Transition::Opened,
            breaker::Transition::Closed => Transition::Closed,
        })
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && let Ok(mut breaker) = self.breaker.try_borrow_mut()
        {
            breaker.0.cancel(permit);
        }
    }
}

/// How a call that got no answer within its limit went: the evidence that tells a backend that fails
/// from an edge too busy to hear it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// How long the call was given before the edge looked at it again.
    pub limit: Duration,
    /// How long it actually was, from the call to the moment the component ran again: longer than
    /// `limit` by however late the host ran the component after its timer fired.
    pub waited: Duration,
    /// Whether the backend answered another call of this instance while this one waited.
    pub answered_meanwhile: bool,
    /// How long the instance's recent answered calls took (a moving average), if it has any.
    pub recent_answers: Option<Duration>,
    /// Whether the call started late in its request's budget ([`started_late`]).
    pub started_late: bool,
}

/// Whether a call that started with `left` of its request's `budget` started late: more than half of
/// the budget was already spent before it, inside the instance (waiting for the instance, for the
/// client check, for another request's lookup, for a connection). Such a call's timeout is the edge's
/// own queue ([`Saturated::LateStart`]), whatever else is seen; and the request has too little budget
/// left to be worth an origin read.
pub fn started_late(budget: Duration, left: Duration) -> bool {
    left < budget / 2
}

/// Whether a call that stayed unanswered through all the waiting its request allows (the timeout,
/// then the request's patience) points at a *silent* Redis rather than a queue: it did not start late,
/// and Redis has answered nothing of the instance for at least one whole `timeout` (the configured
/// `redis_timeout_ms`, not the call's limit, which the budget may have shortened) and for at least
/// twice what its recent answers took (`recent`): an instance whose answers took a second each is
/// not silent after 250 ms. Only then does the request go to the origin; otherwise it is shed (a
/// stale copy or a 503), never an origin read.
pub fn silent(
    started_late: bool,
    quiet_for: Duration,
    timeout: Duration,
    recent: Option<Duration>,
) -> bool {
    let threshold = timeout.max(recent.map_or(Duration::ZERO, |r| r * 2));
    !started_late && quiet_for >= threshold
}

/// What a failed call says, and so what the breaker and the request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The backend is failing: it counts towards opening the breaker, and the request does without
    /// the backend.
    Failing(Failing),
    /// The edge itself is saturated: the backend is not blamed (the call counts as nothing for the
    /// breaker), and the request keeps waiting for its answer within its own budget instead of
    /// moving its load elsewhere.
    Saturated(Saturated),
}

/// Why a backend is taken to be failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failing {
    /// It answered with an error, or the connection failed: an outage whatever the load.
    Error,
    /// No answer in time, while the host ran the component on time and nothing else was answered.
    Timeout,
}

/// Why a slow call is put down to the edge's own load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saturated {
    /// The call started with less than half of its request's budget left ([`started_late`]): the
    /// request had already waited in the instance for most of its time, so the call's short limit
    /// says nothing about Redis.
    LateStart,
    /// The component ran late after its timer fired (by more than [`LATE_WAKE_UP`] or a fifth of the
    /// limit, whichever is more): the host had no CPU for it, so the wait says nothing about the
    /// backend.
    LateWakeUp,
    /// The backend answered other calls of this instance meanwhile: it is up, and this call was
    /// queued behind them.
    AnsweredOthers,
    /// The instance's recent calls were already answered slowly (a quarter of the limit or more on
    /// average): a queue that grew, not a backend that stopped (a stopped one answers fast until it
    /// answers nothing).
    SlowAnswers,
}

/// The least lateness of a timer that counts as the host being saturated.
pub const LATE_WAKE_UP: Duration = Duration::from_millis(25);

impl Verdict {
    /// The rule (docs/operations.md, "Overload"): an error is a failure; a timeout is a failure only
    /// if the call did not start late in its request's budget, the component ran on time when it
    /// fired, the backend answered nothing else meanwhile, and its recent answers were quick.
    pub fn of_timeout(stalled: Stalled) -> Verdict {
        let tolerance = (stalled.limit / 5).max(LATE_WAKE_UP);
        if stalled.started_late {
            Verdict::Saturated(Saturated::LateStart)
        } else if stalled.waited >= stalled.limit.saturating_add(tolerance) {
            Verdict::Saturated(Saturated::LateWakeUp)
        } else if stalled.answered_meanwhile {
            Verdict::Saturated(Saturated::AnsweredOthers)
        } else if stalled
            .recent_answers
            .is_some_and(|recent| recent >= stalled.limit / 4)
        {
            Verdict::Saturated(Saturated::SlowAnswers)
        } else {
            Verdict::Failing(Failing::Timeout)
        }
    }

    /// For logs and metrics: `error`, `timeout`, `saturated:late_start`, `saturated:late_wake_up`,
    /// `saturated:answered_others`, `saturated:slow_answers`.
    pub fn cause(self) -> &'static str {
        match self {
            Verdict::Failing(Failing::Error) => "error",
            Verdict::Failing(Failing::Timeout) => "timeout",
            Verdict::Saturated(Saturated::LateStart) => "saturated:late_start",
            Verdict::Saturated(Saturated::LateWakeUp) => "saturated:late_wake_up",
            Verdict::Saturated(Saturated::AnsweredOthers) => "saturated:answered_others",
            Verdict::Saturated(Saturated::SlowAnswers) => "saturated:slow_answers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn breaker(threshold: u32, window_ms: u64) -> RefCell<Breaker> {
        RefCell::new(Breaker::new(threshold, Duration::from_millis(window_ms)))
    }

    /// A use that ends at `at` with `ok`.
    fn used(b: &RefCell<Breaker>, ok: bool, at: Nanos) -> Option<Transition> {
        Attempt::start(b, at).expect("admitted").finish(ok, at)
    }

    #[test]
    fn a_closed_breaker_lets_requests_through() {
        let b = breaker(1, 2000);
        assert_eq!(used(&b, true, 0), None);
        assert!(Attempt::start(&b, 1).is_some());
        assert_eq!(b.borrow().visible(), Visible::Closed);
        assert_eq!(b.borrow().remaining(1), Duration::ZERO);
    }

    #[test]
    fn a_failure_skips_the_backend_for_the_window_then_one_request_probes() {
        let b = breaker(1, 2000);
        assert_eq!(used(&b, false, 1000 * MS), Some(Transition::Opened));
        assert!(!b.borrow().is_closed());
        assert_eq!(b.borrow().visible(), Visible::Open);
        assert!(Attempt::start(&b, 1000 * MS).is_none());
        assert_eq!(b.borrow().remaining(1500 * MS), Duration::from_millis(1500));
        assert!(Attempt::start(&b, 2999 * MS).is_none());
        let probe = Attempt::start(&b, 3000 * MS).expect("the probe");
        assert_eq!(b.borrow().visible(), Visible::Probing);
        assert!(
            Attempt::start(&b, 3000 * MS).is_none(),
            "only one probe at a time"
        );
        assert_eq!(probe.finish(true, 3001 * MS), Some(Transition::Closed));
        assert!(b.borrow().is_closed());
        assert!(Attempt::start(&b, 3002 * MS).is_some());
    }

    #[test]
    fn it_opens_only_after_the_threshold_of_consecutive_failures() {
        let b = breaker(3, 100);
        assert_eq!(used(&b, false, 0), None);
        assert_eq!(used(&b, false, MS), None);
        // A success in between resets the count.
        assert_eq!(used(&b, true, 2 * MS), None);
        assert_eq!(used(&b, false, 3 * MS), None);
        assert_eq!(used(&b, false, 4 * MS), None);
        assert_eq!(used(&b, false, 5 * MS), Some(Transition::Opened));
        assert!(Attempt::start(&b, 6 * MS).is_none());
        assert_eq!(b.borrow().threshold(), 3);
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_the_same_window_whatever_the_threshold() {
        let b = breaker(5, 100);
        for i in 0..5 {
            used(&b, false, i * MS);
        }
        let probe = Attempt::start(&b, 104 * MS).expect("the probe");
        assert_eq!(probe.finish(false, 150 * MS), Some(Transition::Opened));
        assert!(Attempt::start(&b, 249 * MS).is_none());
        assert!(Attempt::start(&b, 250 * MS).is_some());
    }

    #[test]
    fn a_late_success_from_before_the_failure_does_not_close_it() {
        let b = breaker(1, 100);
        let slow = Attempt::start(&b, 0).unwrap();
        used(&b, false, 0);
        assert_eq!(slow.finish(true, 10 * MS), None);
        assert!(Attempt::start(&b, 20 * MS).is_none());
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_request_probe_at_once() {
        let b = breaker(1, 100);
        used(&b, false, 0);
        drop(Attempt::start(&b, 100 * MS).expect("the probe"));
        assert_eq!(b.borrow().visible(), Visible::Open);
        let next = Attempt::start(&b, 101 * MS).expect("probes at once");
        assert_eq!(b.borrow().visible(), Visible::Probing);
        assert_eq!(next.finish(true, 102 * MS), Some(Transition::Closed));
    }

    #[test]
    fn a_lost_probe_is_retried_after_another_window() {
        let b = breaker(1, 100);
        used(&b, false, 0);
        // The probing request vanishes without reporting or being dropped.
        std::mem::forget(Attempt::start(&b, 100 * MS).expect("the probe"));
        assert!(Attempt::start(&b, 199 * MS).is_none());
        assert!(Attempt::start(&b, 200 * MS).is_some());
    }

    #[test]
    fn a_zero_window_never_skips() {
        let b = breaker(1, 0);
        used(&b, false, 5);
        let first = Attempt::start(&b, 5);
        assert!(first.is_some());
        assert!(Attempt::start(&b, 5).is_some());
    }

    #[test]
    fn a_zero_threshold_is_one() {
        let b = breaker(0, 100);
        assert_eq!(used(&b, false, 0), Some(Transition::Opened));
    }

    fn stalled(limit_ms: u64, waited_ms: u64, answered_meanwhile: bool) -> Stalled {
        Stalled {
            limit: Duration::from_millis(limit_ms),
            waited: Duration::from_millis(waited_ms),
            answered_meanwhile,
            recent_answers: Some(Duration::from_millis(1)),
            started_late: false,
        }
    }

    #[test]
    fn a_call_that_started_late_in_its_budget_blames_the_edge() {
        assert!(started_late(
            Duration::from_millis(2000),
            Duration::from_millis(999)
        ));
        assert!(!started_late(
            Duration::from_millis(2000),
            Duration::from_millis(1000)
        ));
        // Whatever else is seen: on time, nothing answered, recent answers quick.
        let late = Stalled {
            started_late: true,
            ..stalled(90, 90, false)
        };
        let verdict = Verdict::of_timeout(late);
        assert_eq!(verdict, Verdict::Saturated(Saturated::LateStart));
        assert_eq!(verdict.cause(), "saturated:late_start");
    }

    #[test]
    fn only_a_whole_timeout_of_silence_on_a_call_that_started_on_time_is_a_silent_redis() {
        let timeout = Duration::from_millis(250);
        let quick = Some(Duration::from_millis(5));
        assert!(silent(false, Duration::from_millis(250), timeout, quick));
        assert!(silent(false, Duration::from_millis(250), timeout, None));
        // Redis answered another call of the instance within the last timeout: a queue.
        assert!(!silent(false, Duration::from_millis(249), timeout, quick));
        // A late start never goes to the origin, however long Redis was quiet.
        assert!(!silent(true, Duration::from_secs(5), timeout, quick));
        // Answers that took a second each: quiet for twice that before it is silence.
        let slow = Some(Duration::from_millis(1000));
        assert!(!silent(false, Duration::from_millis(1999), timeout, slow));
        assert!(silent(false, Duration::from_millis(2000), timeout, slow));
    }

    #[test]
    fn a_backend_already_answering_slowly_is_queued_not_stopped() {
        let slow = Stalled {
            recent_answers: Some(Duration::from_millis(63)),
            ..stalled(250, 250, false)
        };
        assert_eq!(
            Verdict::of_timeout(slow),
            Verdict::Saturated(Saturated::SlowAnswers)
        );
        let quick = Stalled {
            recent_answers: Some(Duration::from_millis(62)),
            ..stalled(250, 250, false)
        };
        assert_eq!(
            Verdict::of_timeout(quick),
            Verdict::Failing(Failing::Timeout)
        );
        let none_yet = Stalled {
            recent_answers: None,
            ..stalled(250, 250, false)
        };
        assert_eq!(
            Verdict::of_timeout(none_yet),
            Verdict::Failing(Failing::Timeout)
        );
    }

    #[test]
    fn a_timeout_on_time_with_nothing_answered_is_a_failure() {
        assert_eq!(
            Verdict::of_timeout(stalled(250, 250, false)),
            Verdict::Failing(Failing::Timeout)
        );
        // A little late is still on time: a fifth of the limit (here 50 ms) is tolerated.
        assert_eq!(
            Verdict::of_timeout(stalled(250, 299, false)),
            Verdict::Failing(Failing::Timeout)
        );
        assert_eq!(
            Verdict::of_timeout(stalled(250, 250, false)).cause(),
            "timeout"
        );
    }

    #[test]
    fn a_timer_the_host_ran_late_blames_the_edge_not_the_backend() {
        assert_eq!(
            Verdict::of_timeout(stalled(250, 300, false)),
            Verdict::Saturated(Saturated::LateWakeUp)
        );
        assert_eq!(
            Verdict::of_timeout(stalled(250, 2_000, true)),
            Verdict::Saturated(Saturated::LateWakeUp)
        );
        // Short limits still get LATE_WAKE_UP of slack.
        assert_eq!(
            Verdict::of_timeout(stalled(10, 34, false)),
            Verdict::Failing(Failing::Timeout)
        );
        assert_eq!(
            Verdict::of_timeout(stalled(10, 35, false)),
            Verdict::Saturated(Saturated::LateWakeUp)
        );
    }

    #[test]
    fn a_backend_that_answered_others_meanwhile_is_up() {
        let verdict = Verdict::of_timeout(stalled(250, 260, true));
        assert_eq!(verdict, Verdict::Saturated(Saturated::AnsweredOthers));
        assert_eq!(verdict.cause(), "saturated:answered_others");
    }
}
