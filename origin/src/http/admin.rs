//! `/admin/...`: routes for operators, behind the admin token, mounted only when one is configured.

use std::sync::Arc;
use std::time::Duration;

use aside_shared::{ApiError, ErrorBody, ValidationError};
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::openapi::schemas::Unauthorized;
use super::{AppState, Error, Limits};
use crate::cache::stats::{CacheStats, StatsLimits};

/// The most keys one request may ask to walk.
const MAX_KEYS_LIMIT: usize = 1_000_000;

/// Statistics of the Redis cache: the profile keys of the origin's logical database (count, total and
/// average memory, found with `SCAN` and `MEMORY USAGE`, never `KEYS`) and the Redis server's own
/// memory, eviction and hit figures.
///
/// The walk stops at `max_keys` keys or after `budget_ms`, whichever comes first, and says so
/// (`complete: false`, `stopped_by`). One walk runs at a time; a concurrent request waits for it.
#[utoipa::path(
    get,
    path = "/admin/cache/stats",
    tag = "admin",
    params(
        ("max_keys" = Option<usize>, Query, minimum = 1, maximum = 1000000,
         description = "Stop after this many keys (default 100000)"),
        ("budget_ms" = Option<u64>, Query, minimum = 1,
         description = "Stop starting SCAN steps after this many ms (default 1000; at most half the \
                        request timeout)"),
    ),
    responses(
        (status = 200, description = "The statistics. `database` covers only the origin's logical \
         database; `server` (Redis INFO) covers the whole Redis server.", body = CacheStats),
        (status = 400, description = "`invalid_query`: an unknown or out-of-range parameter", body = ErrorBody),
        Unauthorized,
        (status = 503, description = "`unavailable`: Redis did not answer",
         body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("admin_token" = []))
)]
pub async fn cache_stats(
    State(state): State<Arc<AppState>>,
    Extension(limits): Extension<Limits>,
    uri: Uri,
) -> Result<Response, Error> {
    let walk = stats_limits(uri.query(), limits.request_timeout)?;
    match state.cache.stats(walk).await {
        Ok(stats) => Ok(Json::<CacheStats>(stats).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "cache statistics failed");
            Err(ApiError::unavailable("Redis", 1).into())
        }
    }
}

/// `?max_keys=&budget_ms=`, checked: anything else, or a value out of range, is a 400.
fn stats_limits(query: Option<&str>, request_timeout: Duration) -> Result<StatsLimits, ApiError> {
    let mut walk = StatsLimits::default();
    let longest = request_timeout / 2;
    walk.budget = walk.budget.min(longest);
    let invalid =
        |field, message: String| ApiError::invalid_query(ValidationError::new(field, message));
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "max_keys" => {
                walk.max_keys = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_KEYS_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "max_keys",
                            format!("must be an integer from 1 to {MAX_KEYS_LIMIT}"),
                        )
                    })?;
            }
            "budget_ms" => {
                let most = longest.as_millis() as u64;
                walk.budget = value
                    .parse()
                    .ok()
                    .filter(|ms| (1..=most).contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        invalid("budget_ms", format!("must be an integer from 1 to {most}"))
                    })?;
            }
            _ => {
                return Err(invalid(
                    "query",
                    "only max_keys and budget_ms are accepted".to_string(),
                ));
            }
        }
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_checked() {
        let timeout = Duration::from_secs(2);
        let d = stats_limits(None, timeout).unwrap();
        assert_eq!((d.max_keys, d.budget), (100_000, Duration::from_secs(1)));
        let l = stats_limits(Some("max_keys=10&budget_ms=500"), timeout).unwrap();
        assert_eq!((l.max_keys, l.budget), (10, Duration::from_millis(500)));
        for bad in [
            "max_keys=0",
            "max_keys=x",
            "budget_ms=1001",
            "budget_ms=0",
            "pattern=*",
        ] {
            let e = stats_limits(Some(bad), timeout).unwrap_err();
            assert_eq!(e.code, aside_shared::ErrorCode::InvalidQuery, "{bad}");
        }
        let short = stats_limits(None, Duration::from_millis(600)).unwrap();
        assert_eq!(
            short.budget,
            Duration::from_millis(300),
            "half the request timeout"
        );
    }
}
