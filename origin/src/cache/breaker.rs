//! A minimal circuit breaker: closed until a failure, then open (calls skipped) for a back-off, then
//! the next call is let through as a probe; a success closes it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Breaker {
    backoff: Duration,
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    pub fn new(backoff: Duration) -> Self {
        Self {
            backoff,
            open_until: Mutex::new(None),
        }
    }

    /// May a call go through now?
    pub fn allow(&self) -> bool {
        let guard = self.open_until.lock().expect("breaker lock poisoned");
        match *guard {
            Some(until) => Instant::now() >= until,
            None => true,
        }
    }

    /// Opens the breaker for the back-off. Returns true if it was closed before (to log once).
    pub fn record_failure(&self) -> bool {
        let mut guard = self.open_until.lock().expect("breaker lock poisoned");
        let was_closed = guard.is_none();
        *guard = Some(Instant::now() + self.backoff);
        was_closed
    }

    pub fn record_success(&self) {
        let mut guard = self.open_until.lock().expect("breaker lock poisoned");
        if guard.take().is_some() {
            tracing::info!("Redis answered again; cache re-enabled");
            crate::metrics::breaker_open("redis", false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_and_lets_a_probe_through_after_the_backoff() {
        let b = Breaker::new(Duration::from_millis(30));
        assert!(b.allow());
        assert!(b.record_failure());
        assert!(!b.allow());
        assert!(!b.record_failure(), "already open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "probe after back-off");
        b.record_success();
        assert!(b.allow());
    }
}
