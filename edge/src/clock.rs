//! Time at the edge: the WASI monotonic clock, and timeouts that really wait on the host.
//!
//! Readings come from `wasi:clocks/monotonic-clock` (p3) and are plain nanoseconds ([`Nanos`]), the unit
//! tier 1 and the Redis back-off take as "now". A timeout races its future against
//! `spin_sdk::time::sleep`, a p3 `wait-for` on the host clock: the component yields to the host while it
//! waits, and when the timer wins, the other future is dropped, which cancels its host call.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};

use crate::l1::Nanos;

/// Now, on the instance's monotonic clock.
pub fn now() -> Nanos {
    spin_sdk::wasip3::clocks::monotonic_clock::now()
}

/// Milliseconds since `start`, for `server-timing`.
pub fn millis_since(start: Nanos) -> f64 {
    now().saturating_sub(start) as f64 / 1e6
}

/// `future`'s output, or `None` if `limit` passes first.
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let future = pin!(future);
    let timer = pin!(spin_sdk::time::sleep(limit));
    match select(future, timer).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(((), _)) => None,
    }
}
