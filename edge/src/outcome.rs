//! What the I/O modules hand back: an origin answer or why there is none ([`crate::forward`]), a tier-2
//! read ([`crate::l2`]), a process-wide tier lookup ([`crate::process_tier`]). Plain values, no I/O, so
//! that the read plan ([`crate::plan`]) takes them without depending on the modules that produce them.

use std::time::Duration;

use aside_shared::headers::CacheControl;
use bytes::Bytes;
use http::header::ETAG;
use http::{HeaderMap, StatusCode};

use crate::copy::Stored;

/// A complete answer from the origin.
#[derive(Debug, Clone)]
pub struct OriginAnswer {
    pub status: StatusCode,
    /// Only the [`crate::forward::PASSED_BACK`] headers.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The origin's `cache-control` on a profile answer (`max-age`, `stale-if-error`), if it sent one.
    pub cache_control: Option<CacheControl>,
    /// The origin answered with a soft-expired copy (`x-cache: STALE`: PostgreSQL could not answer).
    pub stale: bool,
    /// The origin's own `server-timing` (its Redis and PostgreSQL time), which the edge passes on with
    /// each metric prefixed `origin-` ([`ServerTiming::add_prefixed`]): where a miss's time went.
    ///
    /// [`ServerTiming::add_prefixed`]: aside_shared::headers::ServerTiming::add_prefixed
    pub timing: Option<String>,
}

impl OriginAnswer {
    /// The row version the origin's `etag` says, if it sent one aside writes.
    pub fn version(&self) -> Option<i64> {
        self.headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(aside_shared::headers::parse_etag)
    }
}

impl OriginAnswer {
    /// Whether this answer counts as a failure of the origin (for the breaker, and for serving a stale
    /// copy instead): the statuses that mean "cannot answer now". A 404 or a 4xx is an answer.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        )
    }
}

/// Why there is no answer: the caller serves a stale copy or answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Connection refused, reset, DNS, TLS, a broken body, ...
    Unreachable,
    TimedOut,
    /// The breaker is open (or another request is probing): not asked. `Retry-After` is this long.
    BreakerOpen(Duration),
    /// The origin budget for misses is spent (see [`crate::budget`]): not asked. `Retry-After` is the
    /// time until the next request may go.
    BudgetSpent(Duration),
    /// Not asked: the edge is saturated and the request could not be answered within its budget
    /// (see [`crate::backoff::Verdict`]).
    Overloaded,
}

impl Unavailable {
    /// The `Retry-After` of the 503 answered instead, in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u32 {
        match self {
            Unavailable::BreakerOpen(left) | Unavailable::BudgetSpent(left) => {
                u32::try_from(left.as_millis().div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1)
            }
            Unavailable::Unreachable | Unavailable::TimedOut | Unavailable::Overloaded => 1,
        }
    }
}

/// The outcome of one tier-2 read.
#[derive(Debug)]
pub enum Read<T> {
    Hit(T),
    /// Not cached, or cached in a shape the edge cannot use.
    Miss,
    /// Redis says the id has no profile: a "missing" marker or a tombstone (answered 404).
    Absent,
    /// Redis was not asked (breaker open, or no budget left).
    Skipped,
    /// Redis failed or was too slow; the back-off has started.
    Failed,
    /// No answer within the request's budget while the edge was saturated (see
    /// [`crate::backoff::Verdict`]): Redis is not blamed, and the request is not passed to the origin.
    Shed,
}

impl<T> Read<T> {
    /// Whether Redis was visited (for `server-timing`).
    pub fn visited(&self) -> bool {
        !matches!(self, Read::Skipped)
    }

    /// The same outcome with the hit's value mapped by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        match self {
            Read::Hit(value) => Read::Hit(f(value)),
            Read::Miss => Read::Miss,
            Read::Absent => Read::Absent,
            Read::Skipped => Read::Skipped,
            Read::Failed => Read::Failed,
            Read::Shed => Read::Shed,
        }
    }
}

/// What a lookup in the process-wide tier found.
#[derive(Debug)]
pub enum Found {
    /// A fresh copy of the id.
    Fresh(Stored),
    /// A copy of the id past its soft expiry, kept as a stale-if-error fallback.
    Stale(Stored),
    /// Nothing usable (empty slot, another id, a corrupt value, expired).
    Miss,
    /// The tier was not asked: off, unavailable, skipped after failures, or no budget left.
    Skipped,
}

impl Found {
    /// Whether the store was visited (for `server-timing`).
    pub fn visited(&self) -> bool {
        !matches!(self, Found::Skipped)
    }

    /// The version of the id this lookup saw in its slot, fresh or not.
    pub fn version(&self) -> Option<i64> {
        match self {
            Found::Fresh(c) | Found::Stale(c) => Some(c.entry.version),
            Found::Miss | Found::Skipped => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_breaker_s_remaining_back_off_rounded_up() {
        assert_eq!(Unavailable::TimedOut.retry_after_secs(), 1);
        assert_eq!(Unavailable::Unreachable.retry_after_secs(), 1);
        assert_eq!(
            Unavailable::BreakerOpen(Duration::ZERO).retry_after_secs(),
            1
        );
        assert_eq!(
            Unavailable::BreakerOpen(Duration::from_millis(1001)).retry_after_secs(),
            2
        );
        assert_eq!(
            Unavailable::BreakerOpen(Duration::from_secs(30)).retry_after_secs(),
            30
        );
    }

    #[test]
    fn only_gateway_statuses_count_as_the_origin_being_unavailable() {
        let answer = |status: u16| OriginAnswer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            cache_control: None,
            stale: false,
            timing: None,
        };
        for status in [502, 503, 504] {
            assert!(answer(status).is_unavailable(), "{status}");
        }
        for status in [200, 404, 400, 422, 500] {
            assert!(!answer(status).is_unavailable(), "{status}");
        }
    }
}
