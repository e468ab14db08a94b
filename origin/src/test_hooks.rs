//! Hooks that let integration tests make races deterministic. Compiled only with the `test-hooks`
//! feature, which release and production builds never enable: without it this module does not exist
//! and the environment variables below are never read.
//!
//! * `ASIDE_TEST_FILL_DELAY_MS`: the read path waits this long between its PostgreSQL read and its
//!   answer and its cache fill (the fill follows the answer), so a test can commit a write in between
//!   (the "stale set" race) or hold a reader in flight.
//! * `ASIDE_TEST_FILL_LAG_MS`: the read path's fill, which runs after the answer has gone, waits this
//!   long first, so a test can land a write between a miss's answer and its fill.

use std::sync::OnceLock;
use std::time::Duration;

/// The delay before a read-path fill, if one is configured.
pub fn fill_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| millis("ASIDE_TEST_FILL_DELAY_MS"))
}

/// The delay between a read-path answer and its fill, if one is configured.
pub fn fill_lag() -> Option<Duration> {
    static LAG: OnceLock<Option<Duration>> = OnceLock::new();
    *LAG.get_or_init(|| millis("ASIDE_TEST_FILL_LAG_MS"))
}

fn millis(var: &str) -> Option<Duration> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// Logs the active hooks once at start-up (tests look for this line to know the hooks are compiled in).
pub fn announce() {
    tracing::warn!(
        fill_delay_ms = fill_delay().map(|d| d.as_millis() as u64),
        fill_lag_ms = fill_lag().map(|d| d.as_millis() as u64),
        "test hooks compiled in: this build is for tests only"
    );
}
