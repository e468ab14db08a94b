//! The answer under construction, and the headers every edge answer carries: where it came from
//! (`x-cache`), what each tier cost (`server-timing`), which instance gave it (`x-edge-instance`) and
//! which of the instance's circuit breakers are not closed (`x-edge-breaker`).

use std::sync::OnceLock;

use aside_shared::ApiError;
use aside_shared::headers::{
    CACHE_CONTROL, CacheStatus, ETAG, RETRY_AFTER, SERVER_TIMING, ServerTiming, X_ASIDE_AUTH,
    X_CACHE, X_EDGE_INSTANCE, format_etag, format_instance_id,
};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, VARY, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use spin_sdk::http::FullBody;

use crate::backoff::Visible;
use crate::clock::{self, Nanos};
use crate::config::Auth;
use crate::forward::OriginAnswer;
use crate::metrics::METRICS;

/// Names the instance's circuit breakers that are not closed: `x-edge-breaker: redis=open`.
pub const X_EDGE_BREAKER: &str = "x-edge-breaker";

/// This instance's `x-edge-instance` value, drawn from the host's `wasi:random` on first use.
fn instance_id() -> &'static HeaderValue {
    static ID: OnceLock<HeaderValue> = OnceLock::new();
    ID.get_or_init(|| {
        let id = spin_sdk::wasip3::random::random::get_random_u64();
        HeaderValue::from_str(&format_instance_id(id)).expect("hex digits are a header value")
    })
}

/// This instance's `x-edge-instance` value, the `edge_instance` label of its metrics.
pub fn instance_label() -> String {
    instance_id().to_str().unwrap_or_default().to_string()
}

/// The 503 the edge answers when the origin is down, too slow, or skipped by its open breaker.
pub fn origin_unavailable(retry_after_secs: u32) -> ApiError {
    ApiError::unavailable("the origin", retry_after_secs)
}

/// An answer under construction: status, body, the headers every edge answer carries.
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    /// A JSON body the edge produced itself.
    pub fn json(status: u16, body: Bytes, source: CacheStatus) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Self::new(status, headers, body, source)
    }

    /// A plain-text body the edge produced itself, with its content type.
    pub fn text(status: u16, body: String, content_type: &'static str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        Self::new(status, headers, Bytes::from(body), CacheStatus::Bypass)
    }

    /// The shared error body, with `retry-after` when the error has one.
    pub fn error(error: &ApiError, source: CacheStatus) -> Self {
        let mut reply = Self::json(error.status(), Bytes::from(error.to_json()), source);
        if let Some(secs) = error.retry_after_secs {
            reply.headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        reply
    }

    /// The origin's status, body and [`crate::forward::PASSED_BACK`] headers, and its freshness directives
    /// (`max-age`, `stale-if-error`) made `private`.
    pub fn from_origin(answer: &OriginAnswer, source: CacheStatus) -> Self {
        let mut headers = answer.headers.clone();
        if let Some(control) = answer.cache_control
            && let Ok(value) = HeaderValue::from_str(&format!("private, {}", control.format()))
        {
            headers.insert(CACHE_CONTROL, value);
        }
        Self::new(answer.status.as_u16(), headers, answer.body.clone(), source)
    }

    /// Adds `www-authenticate` (a 401's or 403's challenge).
    pub fn challenge(mut self, challenge: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(challenge) {
            self.headers.insert(WWW_AUTHENTICATE, value);
        }
        self
    }

    /// What a cache between the client and the edge may do with the answer. An answer of the public
    /// API is for this caller only: `cache-control: private` (with the origin's `max-age` and
    /// `stale-if-error` when it gave them; `no-cache` on another read, `no-store` on a write's answer or an
    /// error) and
    /// `vary: authorization`. With authentication off, every answer says `x-aside-auth: off`.
    pub fn client_cache(mut self, auth: &Auth, public_api: bool) -> Self {
        if public_api {
            if !self.headers.contains_key(CACHE_CONTROL) {
                let passed_through = self.headers.get(X_CACHE).map(|v| v.as_bytes())
                    == Some(CacheStatus::Bypass.as_str().as_bytes());
                let value = if self.status.is_success() && !passed_through {
                    "private, no-cache"
                } else {
                    "private, no-store"
                };
                self.headers
                    .insert(CACHE_CONTROL, HeaderValue::from_static(value));
            }
            self.headers
                .insert(VARY, HeaderValue::from_static("authorization"));
        }
        if *auth == Auth::Off {
            self.headers
                .insert(X_ASIDE_AUTH, HeaderValue::from_static("off"));
        }
        self
    }

    fn new(status: u16, mut headers: HeaderMap, body: Bytes, source: CacheStatus) -> Self {
        headers.insert(X_CACHE, HeaderValue::from_static(source.as_str()));
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers,
            body,
        }
    }

    /// Adds `etag: "<version>"`, the row version of the profile answered.
    pub fn etag(mut self, version: i64) -> Self {
        if let Ok(value) = HeaderValue::from_str(&format_etag(version)) {
            self.headers.insert(ETAG, value);
        }
        self
    }

    /// Adds `server-timing` (one metric per tier visited) unless no tier was visited.
    pub fn timing(mut self, timing: ServerTiming) -> Self {
        if !timing.is_empty()
            && let Ok(value) = HeaderValue::from_str(timing.as_str())
        {
            self.headers.insert(SERVER_TIMING, value);
        }
        self
    }

    /// Every answer carries `server-timing`: one that visited no tier (health, a refused request, a
    /// configuration error) reports the time the edge itself spent, as `edge`.
    pub fn edge_timing(self, started: Nanos) -> Self {
        if self.headers.contains_key(SERVER_TIMING) {
            return self;
        }
        let mut timing = ServerTiming::new();
        timing.add("edge", clock::millis_since(started));
        self.timing(timing)
    }

    /// Adds `start;dur=<ms>` to `server-timing` on a request that waited for the instance's start.
    pub fn instance_start(self, start_ms: Option<f64>) -> Self {
        self.also_timing("start", start_ms)
    }

    /// Appends `name;dur=<ms>` to `server-timing` when `ms` is given.
    pub fn also_timing(mut self, name: &str, ms: Option<f64>) -> Self {
        let Some(ms) = ms else { return self };
        let mut value = self
            .headers
            .get(SERVER_TIMING)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("{v}, "))
            .unwrap_or_default();
        value.push_str(&format!("{name};dur={ms:.3}"));
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.headers.insert(SERVER_TIMING, value);
        }
        self
    }

    /// Adds `x-edge-breaker` when a breaker of this instance is open or probing.
    pub fn breakers(mut self, redis: Visible, origin: Visible) -> Self {
        let value = breaker_header(redis, origin);
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            self.headers.insert(X_EDGE_BREAKER, value);
        }
        self
    }

    pub fn into_response(mut self) -> http::Response<FullBody<Bytes>> {
        self.headers.insert(X_EDGE_INSTANCE, instance_id().clone());
        let stale = self
            .headers
            .get(X_CACHE)
            .is_some_and(|v| v.as_bytes() == CacheStatus::Stale.as_str().as_bytes());
        METRICS.answered(self.status.as_u16(), stale);
        // The length is known: say so, and the runtime sends the body in one piece instead of chunks.
        // (An empty body is left alone: a HEAD answer's length is the GET's, and 204 has none.)
        if !self.body.is_empty() {
            self.headers.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(self.body.len()),
            );
        }
        let mut response = http::Response::new(FullBody::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// `redis=open, origin=probing`: the breakers that are not closed, or `None` when all are.
pub fn breaker_header(redis: Visible, origin: Visible) -> Option<String> {
    let parts: Vec<String> = [("redis", redis), ("origin", origin)]
        .into_iter()
        .filter(|(_, state)| *state != Visible::Closed)
        .map(|(name, state)| format!("{name}={}", state.as_str()))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_header_names_only_breakers_that_are_not_closed() {
        assert_eq!(breaker_header(Visible::Closed, Visible::Closed), None);
        assert_eq!(
            breaker_header(Visible::Open, Visible::Closed).as_deref(),
            Some("redis=open")
        );
        assert_eq!(
            breaker_header(Visible::Probing, Visible::Open).as_deref(),
            Some("redis=probing, origin=open")
        );
    }
}
