//! Header names and values the edge and the origin emit.

use std::fmt::Write as _;

/// Where an answer came from. The edge sends `L1 | L2 | MISS | STALE | BYPASS`; the origin, which has
/// one cache tier, sends `HIT | MISS`.
pub const X_CACHE: &str = "x-cache";
/// Time spent per tier, W3C Server-Timing syntax: `l1;dur=0.01, l2;dur=0.52, origin;dur=3.1`.
pub const SERVER_TIMING: &str = "server-timing";
/// Seconds to wait before retrying a 503.
pub const RETRY_AFTER: &str = "retry-after";

/// The value of `x-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Edge: served from the instance's memory.
    L1,
    /// Edge: served from Redis.
    L2,
    /// Origin: served from Redis.
    Hit,
    /// Not cached: the answer was computed (edge: by the origin; origin: from PostgreSQL).
    Miss,
    /// Served from an expired copy because the source could not answer.
    Stale,
    /// Not cacheable (writes, health checks): passed straight through.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::L1 => "L1",
            CacheStatus::L2 => "L2",
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Builds a `server-timing` value, one metric per tier visited, durations in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct ServerTiming {
    value: String,
}

impl ServerTiming {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name;dur=ms` (three decimals). `name` must be a token: lower-case letters, digits, `-`, `_`.
    pub fn add(&mut self, name: &str, millis: f64) -> &mut Self {
        debug_assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        );
        if !self.value.is_empty() {
            self.value.push_str(", ");
        }
        let millis = if millis.is_finite() && millis >= 0.0 {
            millis
        } else {
            0.0
        };
        let _ = write!(self.value, "{name};dur={millis:.3}");
        self
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_lists_tiers_in_order() {
        let mut t = ServerTiming::new();
        t.add("l1", 0.0123).add("l2", 1.5).add("origin", f64::NAN);
        assert_eq!(t.as_str(), "l1;dur=0.012, l2;dur=1.500, origin;dur=0.000");
    }

    #[test]
    fn cache_status_values() {
        let all = [
            CacheStatus::L1,
            CacheStatus::L2,
            CacheStatus::Hit,
            CacheStatus::Miss,
            CacheStatus::Stale,
            CacheStatus::Bypass,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["L1", "L2", "HIT", "MISS", "STALE", "BYPASS"]);
    }
}
