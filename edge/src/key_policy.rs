//! Where the identity provider's keys come from and how long a fetched set is used: the settings of
//! [`crate::keys`], as [`crate::config`] reads them (values only; the fetching is in `keys`).

use std::rc::Rc;
use std::time::Duration;

use crate::auth::Verifier;

/// The freshness of a JWKS answer without `max-age`, before clamping.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// `auth_jwks`: never fetched.
    Static(Rc<Verifier>),
    /// `auth_jwks_url`.
    JwksUrl(String),
    /// OpenID Connect discovery from the issuer (`auth_issuer`).
    Discovery,
}

/// How long fetched keys are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The least a fetched set is fresh, and the least time between two fetch attempts per process.
    pub min_refresh: Duration,
    /// The most a fetched set is fresh.
    pub max_refresh: Duration,
    /// How long after its fetch a set is still used while new ones cannot be fetched.
    pub max_stale: Duration,
}

impl KeyPolicy {
    /// How long a set is fresh, by its answer's `cache-control`.
    pub fn fresh_for(&self, cache_control: Option<&str>) -> Duration {
        max_age(cache_control)
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(self.min_refresh, self.max_refresh.max(self.min_refresh))
    }
}

/// The `max-age` of a `cache-control` value (`no-cache`, `no-store`: 0).
pub fn max_age(cache_control: Option<&str>) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control?.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-cache" | "no-store" => return Some(Duration::ZERO),
            "max-age" => {
                age = value
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
            _ => {}
        }
    }
    age
}
