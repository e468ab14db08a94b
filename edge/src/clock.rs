//! Time at the edge: the WASI monotonic clock, and timeouts that really wait on the host.
//!
//! Readings come from `wasi:clocks/monotonic-clock` (p3) and are plain nanoseconds ([`Nanos`]), the unit
//! tier 1 and the Redis back-off take as "now". A timeout races its future against
//! `spin_sdk::time::sleep`, a p3 `wait-for` on the host clock: the component yields to the host while it
//! waits.
//!
//! **A timeout never cancels a host call.** Whichever of the two loses (the timer, on nearly every
//! request; the call, when it is late) is not dropped but left to finish on its own in the background of
//! the request's component-model task ([`detach`]). Dropping a pending host call makes wit-bindgen
//! cancel it with a *blocking* `subtask.cancel`: the task then waits, on one of the host's fibers, until
//! the host has stopped the call. Spin 4.0.2 has 1,000 fibers per process (`SPIN_WASMTIME_TOTAL_STACKS`);
//! under a spike every in-flight request was holding one while its cancellation waited for a busy host,
//! the next instance could not get one ("maximum concurrent limit of 1000 for fibers reached"), and Spin
//! answered every request of that instance `500` (`Error processing request: oneshot canceled`).
//! `bench/wait` reproduces it with nothing but two timers (tests/tests/overload.rs).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::future::{Either, select};

/// A point on the instance's monotonic clock, in nanoseconds.
pub type Nanos = u64;

/// Now, on the instance's monotonic clock.
pub fn now() -> Nanos {
    spin_sdk::wasip3::clocks::monotonic_clock::now()
}

/// Milliseconds since `start`, for `server-timing`.
pub fn millis_since(start: Nanos) -> f64 {
    now().saturating_sub(start) as f64 / 1e6
}

/// `future`'s output, or `None` if `limit` passes first; then `future` is left to finish in the
/// background ([`detach`]), never cancelled.
pub async fn within<F>(limit: Duration, future: F) -> Option<F::Output>
where
    F: Future + 'static,
{
    match race(limit, Box::pin(future)).await {
        Ok(output) => Some(output),
        Err(late) => {
            detach(async move {
                late.await;
            });
            None
        }
    }
}

/// `call`'s output, or `call` itself, still pending, if `limit` passes first: the caller waits more or
/// [`detach`]es it. The timer, when it loses, is detached.
pub async fn race<F: Future>(
    limit: Duration,
    mut call: Pin<Box<F>>,
) -> Result<F::Output, Pin<Box<F>>> {
    let timer = Box::pin(spin_sdk::time::sleep(limit));
    match select(call.as_mut(), timer).await {
        Either::Left((output, timer)) => {
            detach(timer);
            Ok(output)
        }
        Either::Right(((), _)) => Err(call),
    }
}

/// Leaves `work` (a pending host call) to finish in the background of the current request's task
/// instead of dropping it, which would cancel the call with a blocking `subtask.cancel` (see the
/// module docs). The task exits once its background work has finished: at most the timer's `limit`,
/// or the call's own end, after the answer.
pub fn detach(work: impl Future<Output = ()> + 'static) {
    #[cfg(target_arch = "wasm32")]
    wit_bindgen::spawn(work);
    #[cfg(not(target_arch = "wasm32"))]
    drop(work);
}

/// Now, on the wall clock, in milliseconds since the Unix epoch: the unit of the soft expiry the origin
/// writes into Redis (`_fresh_until`), which every edge compares with its own wall clock.
pub fn wall_ms() -> i64 {
    let now = spin_sdk::wasip3::clocks::system_clock::now();
    now.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(now.nanoseconds / 1_000_000))
}

/// Now, on the wall clock, in microseconds since the Unix epoch: the unit of the process-wide origin
/// budget ([`crate::budget::SharedBucket`]), which instances compare with each other.
pub fn wall_us() -> i64 {
    let now = spin_sdk::wasip3::clocks::system_clock::now();
    now.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(now.nanoseconds / 1_000))
}

/// A number drawn uniformly from (0, 1], from the host's `wasi:random`: XFetch's `u`.
pub fn unit_random() -> f64 {
    let bits = spin_sdk::wasip3::random::random::get_random_u64() >> 11;
    // 53 random bits: [0, 1) in steps of 2^-53, turned into (0, 1].
    1.0 - bits as f64 / (1u64 << 53) as f64
}

/// The point by which a request must be answered: its start plus `request_budget_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Nanos);

impl Deadline {
    pub fn after(start: Nanos, budget: Duration) -> Self {
        Self(start.saturating_add(u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// What is left at `now` (zero once it has passed).
    pub fn remaining_at(&self, now: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(now))
    }

    /// What is left now.
    pub fn remaining(&self) -> Duration {
        self.remaining_at(now())
    }

    /// `limit`, or less if less of the budget is left.
    pub fn cap(&self, limit: Duration) -> Duration {
        limit.min(self.remaining())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_caps_timeouts_by_what_is_left() {
        let d = Deadline::after(1_000, Duration::from_millis(2));
        assert_eq!(d.remaining_at(1_000), Duration::from_millis(2));
        assert_eq!(d.remaining_at(1_000_000), Duration::from_nanos(1_001_000));
        assert_eq!(d.remaining_at(5_000_000), Duration::ZERO);
        assert_eq!(
            Deadline::after(u64::MAX - 1, Duration::from_secs(1)).remaining_at(0),
            Duration::from_nanos(u64::MAX)
        );
    }
}
