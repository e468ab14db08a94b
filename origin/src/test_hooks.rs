//! Hooks that let integration tests make races deterministic. Compiled only with the `test-hooks`
//! feature, which release and production builds never enable: without it this module does not exist
//! and the environment variables below are never read.
//!
//! * `ASIDE_TEST_FILL_DELAY_MS`: the read path waits this long between its PostgreSQL read and its
//!   cache fill, so a test can commit a write in between (the "stale set" race).

use std::sync::OnceLock;
use std::time::Duration;

/// The delay before a read-path fill, if one is configured.
pub fn fill_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("ASIDE_TEST_FILL_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}

/// Logs the active hooks once at start-up (tests look for this line to know the hooks are compiled in).
pub fn announce() {
    tracing::warn!(
        fill_delay_ms = fill_delay().map(|d| d.as_millis() as u64),
        "test hooks compiled in: this build is for tests only"
    );
}
