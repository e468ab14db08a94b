//! The circuit breaker both sides put in front of a backend (the origin: Redis and PostgreSQL; the edge:
//! Redis and the origin), so that a backend that is down or stalled stops costing every request its
//! timeout. This is the one state machine; `origin/src/breaker.rs` (behind a lock, with metrics and logs)
//! and `edge/src/backoff.rs` (per instance, with `x-edge-breaker`) are adapters around it.
//!
//! ```text
//!             `failures` consecutive failures                 cool-down over: the next caller probes
//!   Closed ───────────────────────────────────▶ Open ─────────────────────────────────────▶ HalfOpen
//!     ▲                                          ▲ ▲                                           │ │ │
//!     │                                          │ └─ probe cancelled: slot freed, next caller ┘ │ │
//!     │                                          │    probes at once                             │ │
//!     │                                          └──── probe fails: cool-down × 2 (≤ max) ───────┘ │
//!     └──────────────────────────────────────────────── probe succeeds ────────────────────────────┘
//! ```
//!
//! What a caller may rely on:
//!
//! * **Closed**: every call goes through ([`Permit::Call`]). A success resets the count of consecutive
//!   failures, so scattered errors never open it; `failures` failures in a row open it (1: the first).
//!   What counts as a failure is the caller's business (an outage, not an answer that is an error).
//! * **Open**: calls are refused ([`Permit::Refused`]) for the cool-down, which starts at `backoff`.
//! * **Half-open**: when the cool-down is over, the next caller (and only that one) gets
//!   [`Permit::Probe`]; everyone else is still refused. The probe decides: a success closes the breaker
//!   ([`Transition::Closed`]); a failure opens it again for twice the previous cool-down, up to
//!   `max_backoff` ([`Transition::Reopened`]); the next opening after a close starts from `backoff`
//!   again. With `max_backoff == backoff` the cool-down is fixed.
//! * **A cancelled probe** (its request was dropped before it knew) is neither a success nor a failure:
//!   [`Breaker::cancel`] frees the slot and the next caller probes. A probe that never reports at all
//!   (its task vanished) frees the slot one cool-down after it started, so the breaker can never be stuck
//!   half-open.
//! * **Late results**: once the breaker has left Closed, only the current probe's outcome changes it. A
//!   call admitted before it opened (or a probe that was replaced) that finishes afterwards is ignored:
//!   a late success says nothing about the backend now, a late failure is no news.
//!
//! Pure: no clock, no I/O. "Now" is passed in as a [`Duration`] since any fixed point of a monotonic
//! clock (the same point for every call on one breaker), so the machine is tested here natively and both
//! sides use it the same way.

use std::time::Duration;

/// How a breaker reacts to failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (1 = the first failure; 0 is taken as 1).
    pub failures: u32,
    /// The first cool-down after opening.
    pub backoff: Duration,
    /// The longest cool-down, reached by doubling after each failed probe (below `backoff`: `backoff`).
    pub max_backoff: Duration,
}

impl BreakerSettings {
    /// A cool-down that does not grow: every failed probe waits `backoff` again.
    pub fn fixed(failures: u32, backoff: Duration) -> Self {
        Self {
            failures,
            backoff,
            max_backoff: backoff,
        }
    }
}

/// Where the breaker is in the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    /// Calls are refused (in the cool-down, or past it with no probe taken yet).
    Open,
    /// One probe is in flight.
    HalfOpen,
}

/// The identity of a probe, so that only the current probe's outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeId(u32);

/// What a caller may do with the backend now. Report what happened with [`Breaker::record`] (or
/// [`Breaker::cancel`] if the call was abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call it.
    Call,
    /// The cool-down is over and this caller is the one that tries the backend again.
    Probe(ProbeId),
    /// Open, or another caller is probing: do without the backend.
    Refused,
}

impl Permit {
    pub fn is_refused(self) -> bool {
        self == Permit::Refused
    }

    pub fn is_probe(self) -> bool {
        matches!(self, Permit::Probe(_))
    }
}

/// A change of phase worth a log line or a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: `failures` consecutive failures.
    Opened,
    /// Half-open → open: the probe failed; the cool-down doubled (up to the maximum).
    Reopened,
    /// Half-open → closed: the probe succeeded.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Duration,
        backoff: Duration,
    },
    HalfOpen {
        probe: ProbeId,
        /// When the probe's slot is freed if it has not reported by then.
        lease_until: Duration,
        backoff: Duration,
    },
}

/// One backend's breaker. See the module docs for the semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    settings: BreakerSettings,
    state: State,
    /// Probes handed out so far (wrapping): the next [`ProbeId`].
    probes: u32,
}

impl Breaker {
    /// A closed breaker. `failures` 0 is taken as 1 and a `max_backoff` below `backoff` as `backoff`.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings: BreakerSettings {
                failures: settings.failures.max(1),
                backoff: settings.backoff,
                max_backoff: settings.max_backoff.max(settings.backoff),
            },
            state: State::Closed { failures: 0 },
            probes: 0,
        }
    }

    /// The settings in force (after [`Breaker::new`]'s corrections).
    pub fn settings(&self) -> BreakerSettings {
        self.settings
    }

    /// Asks to use the backend at `now`. A [`Permit::Probe`] moves the breaker to half-open.
    pub fn acquire(&mut self, now: Duration) -> Permit {
        let backoff = match self.state {
            State::Closed { .. } => return Permit::Call,
            State::Open { until, .. } if now < until => return Permit::Refused,
            State::HalfOpen { lease_until, .. } if now < lease_until => return Permit::Refused,
            // Past the cool-down, or a probe that never reported: this caller probes.
            State::Open { backoff, .. } | State::HalfOpen { backoff, .. } => backoff,
        };
        let probe = ProbeId(self.probes);
        self.probes = self.probes.wrapping_add(1);
        self.state = State::HalfOpen {
            probe,
            lease_until: now.saturating_add(backoff),
            backoff,
        };
        Permit::Probe(probe)
    }

    /// Records how a call made under `permit` went (`ok`: the backend answered). Returns the change of
    /// phase it caused, if any.
    pub fn record(&mut self, permit: Permit, ok: bool, now: Duration) -> Option<Transition> {
        if permit.is_refused() {
            return None;
        }
        match self.state {
            State::HalfOpen { probe, backoff, .. } if permit == Permit::Probe(probe) => {
                if ok {
                    self.state = State::Closed { failures: 0 };
                    Some(Transition::Closed)
                } else {
                    let backoff = backoff
                        .checked_mul(2)
                        .unwrap_or(Duration::MAX)
                        .min(self.settings.max_backoff);
                    self.state = State::Open {
                        until: now.saturating_add(backoff),
                        backoff,
                    };
                    Some(Transition::Reopened)
                }
            }
            State::Closed { .. } if ok => {
                self.state = State::Closed { failures: 0 };
                None
            }
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.settings.failures {
                    self.state = State::Open {
                        until: now.saturating_add(self.settings.backoff),
                        backoff: self.settings.backoff,
                    };
                    Some(Transition::Opened)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            // Open or half-open, and not the current probe: a late result, ignored.
            State::Open { .. } | State::HalfOpen { .. } => None,
        }
    }

    /// The call made under `permit` was abandoned before its outcome was known. Counts as nothing; if
    /// it was the current probe, its slot is freed and the next caller probes.
    pub fn cancel(&mut self, permit: Permit) {
        if let State::HalfOpen { probe, backoff, .. } = self.state
            && permit == Permit::Probe(probe)
        {
            // Open with the cool-down already over: the next `acquire` probes, whatever its `now`.
            self.state = State::Open {
                until: Duration::ZERO,
                backoff,
            };
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Closed { .. } => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::HalfOpen { .. } => Phase::HalfOpen,
        }
    }

    /// Would [`Breaker::acquire`] refuse at `now`? (It does not change anything.)
    pub fn refuses(&self, now: Duration) -> bool {
        !self.retry_in(now).is_zero()
    }

    /// How long until a call may be made again: zero when closed or when the next caller would probe.
    /// The `Retry-After` of an answer the breaker refused.
    pub fn retry_in(&self, now: Duration) -> Duration {
        match self.state {
            State::Closed { .. } => Duration::ZERO,
            State::Open { until, .. }
            | State::HalfOpen {
                lease_until: until, ..
            } => until.saturating_sub(now),
        }
    }

    /// The cool-down in force: the one being waited out while open or half-open, the first one while
    /// closed.
    pub fn backoff(&self) -> Duration {
        match self.state {
            State::Closed { .. } => self.settings.backoff,
            State::Open { backoff, .. } | State::HalfOpen { backoff, .. } => backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn breaker(failures: u32, backoff: u64, max: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            failures,
            backoff: ms(backoff),
            max_backoff: ms(max),
        })
    }

    /// Opens `b` at `at` with calls that fail (it must be closed).
    fn open(b: &mut Breaker, at: Duration) {
        for _ in 0..b.settings().failures {
            assert_eq!(b.acquire(at), Permit::Call);
            b.record(Permit::Call, false, at);
        }
        assert_eq!(b.phase(), Phase::Open);
    }

    #[test]
    fn closed_lets_every_call_through() {
        let mut b = breaker(1, 100, 100);
        for t in [0, 1, 1_000_000] {
            assert_eq!(b.acquire(ms(t)), Permit::Call);
            assert_eq!(b.record(Permit::Call, true, ms(t)), None);
        }
        assert_eq!(b.phase(), Phase::Closed);
        assert!(!b.refuses(ms(5)));
        assert_eq!(b.retry_in(ms(5)), Duration::ZERO);
        assert_eq!(b.backoff(), ms(100));
    }

    #[test]
    fn closed_opens_after_the_threshold_of_consecutive_failures_only() {
        let mut b = breaker(3, 100, 100);
        assert_eq!(b.record(Permit::Call, false, ms(0)), None);
        assert_eq!(b.record(Permit::Call, false, ms(1)), None);
        // A success in between starts the count again.
        assert_eq!(b.record(Permit::Call, true, ms(2)), None);
        assert_eq!(b.record(Permit::Call, false, ms(3)), None);
        assert_eq!(b.record(Permit::Call, false, ms(4)), None);
        assert_eq!(b.phase(), Phase::Closed);
        assert_eq!(b.acquire(ms(4)), Permit::Call);
        assert_eq!(
            b.record(Permit::Call, false, ms(5)),
            Some(Transition::Opened)
        );
        assert_eq!(b.phase(), Phase::Open);
    }

    #[test]
    fn open_refuses_for_the_cool_down_then_one_caller_probes() {
        let mut b = breaker(1, 100, 100);
        open(&mut b, ms(1000));
        assert_eq!(b.acquire(ms(1000)), Permit::Refused);
        assert!(b.refuses(ms(1000)));
        assert_eq!(b.retry_in(ms(1040)), ms(60));
        assert_eq!(b.acquire(ms(1099)), Permit::Refused);
        let probe = b.acquire(ms(1100));
        assert!(probe.is_probe());
        assert_eq!(b.phase(), Phase::HalfOpen);
        // One probe at a time: the others are still refused.
        assert_eq!(b.acquire(ms(1100)), Permit::Refused);
        assert_eq!(b.acquire(ms(1150)), Permit::Refused);
        assert!(b.refuses(ms(1150)));
    }

    #[test]
    fn a_successful_probe_closes_it_and_the_count_starts_again() {
        let mut b = breaker(2, 100, 400);
        open(&mut b, ms(0));
        let probe = b.acquire(ms(100));
        assert_eq!(b.record(probe, true, ms(120)), Some(Transition::Closed));
        assert_eq!(b.phase(), Phase::Closed);
        assert_eq!(b.acquire(ms(120)), Permit::Call);
        // Closed means closed: one failure is not enough to open it again.
        assert_eq!(b.record(Permit::Call, false, ms(130)), None);
        assert_eq!(b.phase(), Phase::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_it_for_twice_the_cool_down_up_to_the_maximum() {
        let mut b = breaker(1, 100, 350);
        open(&mut b, ms(0)); // cool-down 100: open until 100
        // Each failed probe: 200, then 400 capped at 350, then 350 again.
        for (probe_at, next_at) in [(100, 300), (300, 650), (650, 1000)] {
            assert_eq!(b.acquire(ms(probe_at - 1)), Permit::Refused, "{probe_at}");
            let probe = b.acquire(ms(probe_at));
            assert!(probe.is_probe(), "{probe_at}");
            assert_eq!(
                b.record(probe, false, ms(probe_at)),
                Some(Transition::Reopened)
            );
            assert_eq!(b.phase(), Phase::Open);
            assert_eq!(b.backoff(), ms(next_at - probe_at));
            assert_eq!(b.acquire(ms(next_at - 1)), Permit::Refused, "{next_at}");
        }
        let probe = b.acquire(ms(1000));
        assert_eq!(b.record(probe, true, ms(1000)), Some(Transition::Closed));
        // The next opening starts from the first cool-down again.
        open(&mut b, ms(1000));
        assert_eq!(b.acquire(ms(1099)), Permit::Refused);
        assert!(b.acquire(ms(1100)).is_probe());
    }

    #[test]
    fn a_failed_probe_reopens_it_whatever_the_threshold() {
        let mut b = breaker(5, 100, 100);
        open(&mut b, ms(0));
        let probe = b.acquire(ms(104));
        assert_eq!(b.record(probe, false, ms(150)), Some(Transition::Reopened));
        // A fixed cool-down (max = first): from the failure, not from the probe's start.
        assert_eq!(b.acquire(ms(249)), Permit::Refused);
        assert!(b.acquire(ms(250)).is_probe());
    }

    #[test]
    fn a_cancelled_probe_frees_the_slot_without_counting() {
        let mut b = breaker(1, 100, 1000);
        open(&mut b, ms(0));
        let probe = b.acquire(ms(100));
        b.cancel(probe);
        // Neither closed (it proved nothing) nor reopened with a longer cool-down.
        assert_eq!(b.phase(), Phase::Open);
        assert!(!b.refuses(ms(101)));
        assert_eq!(b.retry_in(ms(101)), Duration::ZERO);
        let next = b.acquire(ms(101));
        assert!(next.is_probe(), "the next caller probes at once");
        assert_ne!(next, probe);
        assert_eq!(b.acquire(ms(101)), Permit::Refused);
        // The cool-down was not doubled by the cancelled probe: a failure now doubles it once.
        assert_eq!(b.record(next, false, ms(110)), Some(Transition::Reopened));
        assert_eq!(b.backoff(), ms(200));
    }

    #[test]
    fn cancelling_a_normal_call_or_a_replaced_probe_changes_nothing() {
        let mut b = breaker(2, 100, 100);
        b.cancel(Permit::Call);
        b.cancel(Permit::Refused);
        assert_eq!(b.record(Permit::Call, false, ms(0)), None);
        b.cancel(Permit::Call);
        // The cancelled calls did not reset the count: one more failure opens it.
        assert_eq!(
            b.record(Permit::Call, false, ms(1)),
            Some(Transition::Opened)
        );
        let lost = b.acquire(ms(101));
        let current = b.acquire(ms(201)); // the lost probe's slot was taken over
        assert!(current.is_probe());
        b.cancel(lost);
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert_eq!(b.acquire(ms(202)), Permit::Refused);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_one_cool_down() {
        let mut b = breaker(1, 100, 100);
        open(&mut b, ms(0));
        let lost = b.acquire(ms(100));
        assert!(lost.is_probe());
        assert_eq!(b.acquire(ms(199)), Permit::Refused);
        assert_eq!(b.retry_in(ms(150)), ms(50));
        let next = b.acquire(ms(200));
        assert!(next.is_probe());
        assert_ne!(next, lost);
        // The lost probe turns up after all: it is not the current probe, so it decides nothing.
        assert_eq!(b.record(lost, true, ms(210)), None);
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert_eq!(b.record(lost, false, ms(210)), None);
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert_eq!(b.record(next, true, ms(220)), Some(Transition::Closed));
    }

    #[test]
    fn late_results_of_calls_admitted_while_closed_are_ignored_once_it_opened() {
        let mut b = breaker(1, 100, 100);
        let slow = b.acquire(ms(0));
        assert_eq!(slow, Permit::Call);
        open(&mut b, ms(0));
        // A late success while open does not close it, a late failure does not extend the cool-down.
        assert_eq!(b.record(slow, true, ms(10)), None);
        assert_eq!(b.phase(), Phase::Open);
        assert_eq!(b.record(slow, false, ms(50)), None);
        assert!(b.acquire(ms(100)).is_probe());
        // Nor while half-open: the probe decides.
        assert_eq!(b.record(slow, true, ms(110)), None);
        assert_eq!(b.record(slow, false, ms(110)), None);
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert_eq!(b.acquire(ms(110)), Permit::Refused);
    }

    #[test]
    fn a_refused_permit_records_nothing() {
        let mut b = breaker(1, 100, 100);
        assert_eq!(b.record(Permit::Refused, false, ms(0)), None);
        assert_eq!(b.phase(), Phase::Closed);
        open(&mut b, ms(0));
        let probe = b.acquire(ms(100));
        assert_eq!(b.record(Permit::Refused, true, ms(100)), None);
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert_eq!(b.record(probe, true, ms(100)), Some(Transition::Closed));
    }

    #[test]
    fn zero_settings_are_corrected_and_a_zero_cool_down_never_refuses() {
        let mut b = breaker(0, 0, 0);
        assert_eq!(b.settings().failures, 1);
        assert_eq!(
            b.record(Permit::Call, false, ms(5)),
            Some(Transition::Opened)
        );
        assert!(b.acquire(ms(5)).is_probe());
        assert!(b.acquire(ms(5)).is_probe(), "the slot's lease is zero too");
        let capped = breaker(1, 500, 100);
        assert_eq!(capped.settings().max_backoff, ms(500));
        assert_eq!(BreakerSettings::fixed(2, ms(7)).max_backoff, ms(7));
    }

    #[test]
    fn huge_cool_downs_and_times_saturate() {
        let mut b = Breaker::new(BreakerSettings {
            failures: 1,
            backoff: Duration::MAX / 2 + ms(1),
            max_backoff: Duration::MAX,
        });
        let far = Duration::MAX - ms(1);
        b.record(Permit::Call, false, far);
        assert_eq!(b.acquire(far), Permit::Refused);
        assert!(b.acquire(Duration::MAX).is_probe());
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert!(b.refuses(far));
    }

    /// A random walk through the machine against the rules, with every kind of call, outcome, cancel and
    /// gap in time (a fixed seed, so it is the same walk every run).
    #[test]
    fn random_walks_keep_the_invariants() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            // xorshift64*
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        // Seen: each transition, a record that changed no phase, a freed probe slot. All must occur.
        let mut seen = [0_u32; 5];
        for _ in 0..200 {
            let mut b = breaker(1 + next(3) as u32, 10 * (1 + next(5)), 10 * (1 + next(20)));
            let mut now = ms(0);
            let mut held: Vec<Permit> = Vec::new();
            for _ in 0..200 {
                now += ms(next(30));
                let before = b.clone();
                match next(4) {
                    0 | 1 => {
                        let refuses = b.refuses(now);
                        let permit = b.acquire(now);
                        assert_eq!(permit.is_refused(), refuses, "{before:?} at {now:?}");
                        match before.phase() {
                            Phase::Closed => assert_eq!(permit, Permit::Call),
                            _ if permit.is_probe() => assert_eq!(b.phase(), Phase::HalfOpen),
                            _ => assert_eq!(b, before, "a refusal changes nothing"),
                        }
                        held.push(permit);
                    }
                    2 if !held.is_empty() => {
                        let permit = held.swap_remove(next(held.len() as u64) as usize);
                        let ok = next(2) == 0;
                        let transition = b.record(permit, ok, now);
                        let current_probe = matches!(before.state,
                            State::HalfOpen { probe, .. } if permit == Permit::Probe(probe));
                        seen[transition.map_or(3, |t| t as usize)] += 1;
                        match transition {
                            Some(Transition::Closed) => assert!(current_probe && ok),
                            Some(Transition::Reopened) => {
                                assert!(current_probe && !ok);
                                assert!(b.backoff() >= before.backoff());
                                assert!(b.backoff() <= b.settings().max_backoff);
                            }
                            Some(Transition::Opened) => {
                                assert_eq!(before.phase(), Phase::Closed);
                                assert!(!ok);
                            }
                            None if before.phase() != Phase::Closed => assert_eq!(b, before),
                            None => assert_eq!(b.phase(), Phase::Closed),
                        }
                    }
                    _ if !held.is_empty() => {
                        let permit = held.swap_remove(next(held.len() as u64) as usize);
                        b.cancel(permit);
                        if b != before {
                            seen[4] += 1;
                            // Only the current probe's cancel changes anything: it frees the slot.
                            assert!(permit.is_probe());
                            assert_eq!((before.phase(), b.phase()), (Phase::HalfOpen, Phase::Open));
                            assert!(!b.refuses(now), "a freed slot is taken at once");
                        }
                    }
                    _ => {}
                }
                // Refusing and the time left always agree, and a closed breaker never refuses.
                assert_eq!(b.refuses(now), !b.retry_in(now).is_zero());
                if b.phase() == Phase::Closed {
                    assert!(!b.refuses(now));
                }
                assert!(b.backoff() <= b.settings().max_backoff);
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
