//! The headers of a profile answer: `x-cache` (where it came from), `etag` (its row version),
//! `cache-control` (from its freshness) and `server-timing` (time per tier).

use aside_shared::Freshness;
use aside_shared::cache::CachedProfile;
use aside_shared::headers::{
    CacheControl, CacheStatus, ETAG, SERVER_TIMING, ServerTiming, X_CACHE, format_etag,
};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::cache::Ttls;
use crate::cache::read_through::ProfileCopy;
use crate::http::AppState;

/// 200 with a profile: `x-cache`, `etag`, and `cache-control` from the copy's freshness.
pub(super) fn profile_response(
    state: &AppState,
    copy: ProfileCopy,
    source: CacheStatus,
    timing: &ServerTiming,
) -> Response {
    let control = cache_control(copy.freshness, crate::clock::now_ms(), state.cache.ttls());
    with_cache_control(
        with_etag(
            json_response(StatusCode::OK, copy.body, source, timing),
            copy.version,
        ),
        control,
    )
}

/// `max-age`: seconds until the soft expiry (0 once stale); `stale-if-error`: seconds from then until
/// the hard expiry (the soft one plus the stale window). A copy of unknown freshness (straight from
/// PostgreSQL with no fill, or written by an older origin) gets the configured soft TTL and window.
pub(crate) fn cache_control(
    freshness: Option<Freshness>,
    now_ms: i64,
    ttls: &Ttls,
) -> CacheControl {
    CacheControl::for_copy(freshness, now_ms, ttls.profile, ttls.stale)
}

pub(super) fn with_cache_control(mut response: Response, control: CacheControl) -> Response {
    if let Ok(value) = HeaderValue::from_str(&control.format()) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// 200 with the written profile, its version and its freshness (as written through), `x-cache: BYPASS`.
pub(super) fn written(state: &AppState, cached: &CachedProfile) -> Response {
    let copy = ProfileCopy::of(cached, None);
    profile_response(state, copy, CacheStatus::Bypass, &ServerTiming::new())
}

/// `etag: "<version>"`: the row version the answer was taken from (see `aside_shared::headers::ETAG`).
pub(super) fn with_etag(mut response: Response, version: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format_etag(version)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

pub(super) fn json_response(
    status: StatusCode,
    body: impl serde::Serialize,
    source: CacheStatus,
    timing: &ServerTiming,
) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    mark(&mut response, source, timing);
    response
}

/// `x-cache`, `server-timing` (when a tier was visited) and `cache-control: no-store`.
pub(super) fn mark(response: &mut Response, source: CacheStatus, timing: &ServerTiming) {
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(source.as_str()));
    if !timing.is_empty()
        && let Ok(v) = HeaderValue::from_str(timing.as_str())
    {
        headers.insert(SERVER_TIMING, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
