//! The origin client: one outbound HTTP request (`wasi:http` p3 through `spin_sdk::http::send`).
//!
//! The edge authenticates as itself (`authorization: Bearer {origin_token}`); a client's own
//! `authorization` is never passed on. A forwarded write names the verified client in
//! `x-aside-caller` (the token's subject), for the origin's audit record. The whole exchange, answer body included, is bounded by
//! `origin_timeout_ms` or what is left of the request's budget, whichever is less: the component races
//! it against a host timer ([`clock::within`]) and also asks the host for connect and first-byte
//! timeouts (`wasi:http` request options), so a slow origin costs a request at most that long.
//!
//! Every call goes through the origin's circuit breaker ([`Origin`]): after
//! `origin_failure_threshold` consecutive failures (no answer in time, cannot connect, or a 502, 503 or
//! 504), calls are refused at once for `origin_backoff_ms`, then one request probes the origin.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use aside_shared::headers::{
    CACHE_CONTROL, CacheControl, CacheStatus, NO_CACHE, REDIS_MISSED, SERVER_TIMING,
    X_ASIDE_CALLER, X_ASIDE_REDIS, X_CACHE,
};
use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION, RETRY_AFTER,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use spin_sdk::http::FullBody;
use spin_sdk::http::body::IncomingBodyExt;

use crate::backoff::{Attempt, Breaker, Transition, Visible};
use crate::clock::{self, Deadline};
use crate::config::Config;
use crate::metrics::{Backend, METRICS};
pub use crate::outcome::{OriginAnswer, Unavailable};
use crate::process_tier::{ORIGIN_BREAKER_KEY, ProcessTier};

/// The origin's headers the edge passes back to the client; the edge sets its own `x-cache`,
/// `server-timing` and `x-edge-instance`, and the transport headers are the host's business. `etag` is
/// the row version of a profile answer (and of a deleted row on a `DELETE`'s 204).
pub const PASSED_BACK: [HeaderName; 5] = [CONTENT_TYPE, LOCATION, RETRY_AFTER, ALLOW, ETAG];

/// The longest origin `server-timing` value the edge reads (the origin sends about 40 bytes).
const MAX_ORIGIN_TIMING: usize = 512;

/// One call to the origin.
pub struct OriginRequest<'a> {
    pub method: Method,
    pub path_and_query: &'a str,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    /// Ask for a reload from PostgreSQL (`cache-control: no-cache`): an early refresh.
    pub no_cache: bool,
    /// The verified client (`x-aside-caller`), on a forwarded request. Never a client's own header:
    /// the request to the origin is built here from nothing but these fields.
    pub caller: Option<String>,
    /// This read found no entry in Redis just before (`x-aside-redis: miss`): the origin may skip its
    /// own first look.
    pub redis_missed: bool,
}

impl<'a> OriginRequest<'a> {
    pub fn get(path_and_query: &'a str) -> Self {
        Self {
            method: Method::GET,
            path_and_query,
            content_type: None,
            body: Bytes::new(),
            no_cache: false,
            caller: None,
            redis_missed: false,
        }
    }
}

/// The instance's origin client: the configuration and the breaker.
pub struct Origin {
    config: Rc<Config>,
    breaker: RefCell<Breaker>,
    /// Where the breaker's open-until is kept for the process's other instances, when the process-wide tier
    /// is on.
    shared: Option<Rc<ProcessTier>>,
}

impl Origin {
    pub fn new(config: Rc<Config>) -> Self {
        let settings = config.origin_breaker;
        Self {
            breaker: RefCell::new(Breaker::new(settings.threshold, settings.backoff)),
            config,
            shared: None,
        }
    }

    /// Shares the breaker through the process-wide tier: when it opens, every instance started before
    /// the back-off ends skips the origin too ([`Origin::restore`]), instead of spending its own request
    /// budget finding out that the origin is frozen.
    pub fn sharing(self, shared: Rc<ProcessTier>) -> Self {
        Self {
            shared: Some(shared).filter(|s| s.is_on()),
            ..self
        }
    }

    /// A new instance's breaker: open for what is left of the back-off another instance of the process
    /// started, if one is running.
    pub async fn restore(&self) {
        let Some(shared) = &self.shared else { return };
        if let Some(left) = shared
            .breaker_left(ORIGIN_BREAKER_KEY, self.config.redis_timeout)
            .await
        {
            self.breaker.borrow_mut().open_for(left, clock::now());
            eprintln!(
                "aside-edge: origin breaker open for {} ms more: another instance found the origin down",
                left.as_millis()
            );
        }
    }

    /// The breaker's state, for `x-edge-breaker`.
    pub fn breaker(&self) -> Visible {
        self.breaker.borrow().visible()
    }

    /// Sends `request` under the breaker, within `origin_timeout_ms` and what is left before
    /// `deadline`. A 502/503/504 answer is returned (the caller may pass it on) but counts as a failure.
    pub async fn call(
        &self,
        request: OriginRequest<'_>,
        deadline: Deadline,
    ) -> Result<OriginAnswer, Unavailable> {
        let limit = deadline.cap(self.config.origin_timeout);
        if limit.is_zero() {
            return Err(Unavailable::TimedOut);
        }
        let Some(permit) = Attempt::start(&self.breaker, clock::now()) else {
            let left = self.breaker.borrow().remaining(clock::now());
            return Err(Unavailable::BreakerOpen(left));
        };
        let result = send(&self.config, request, limit).await;
        let ok = result.as_ref().is_ok_and(|answer| !answer.is_unavailable());
        let transition = permit.finish(ok, clock::now());
        if let Some(t) = transition {
            METRICS.transition(Backend::Origin, t == Transition::Opened);
        }
        match transition {
            Some(Transition::Opened) => eprintln!(
                "aside-edge: origin breaker open after {} consecutive failure(s): misses answer 503 \
                 (or a stale copy) for {} ms, then one request probes the origin",
                self.breaker.borrow().threshold(),
                self.config.origin_breaker.backoff.as_millis()
            ),
            Some(Transition::Closed) => {
                eprintln!("aside-edge: origin breaker closed: the probe succeeded")
            }
            None => {}
        }
        if let (Some(shared), Some(transition)) = (&self.shared, transition) {
            let limit = deadline.cap(self.config.redis_timeout);
            shared
                .publish_breaker(
                    ORIGIN_BREAKER_KEY,
                    transition == Transition::Opened,
                    self.config.origin_breaker.backoff,
                    limit,
                )
                .await;
        }
        result
    }
}

/// `{origin_url}{path}{?query}`. `origin_url` has no trailing slash (see `config`), and an HTTP
/// request's path and query always start with `/`.
pub fn origin_uri(origin_url: &str, path_and_query: &str) -> String {
    if path_and_query.starts_with('/') {
        format!("{origin_url}{path_and_query}")
    } else {
        format!("{origin_url}/{path_and_query}")
    }
}

/// Sends the request to the origin and reads the whole answer, within `limit`.
///
/// Long (about 100 lines) on purpose: the request's headers, the send and the answer's headers are one
/// exchange read top to bottom, each step a few lines under one time limit.
async fn send(
    config: &Config,
    origin_request: OriginRequest<'_>,
    limit: Duration,
) -> Result<OriginAnswer, Unavailable> {
    let OriginRequest {
        method,
        path_and_query,
        content_type,
        body,
        no_cache,
        caller,
        redis_missed,
    } = origin_request;
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(origin_uri(&config.origin_url, path_and_query))
        .header(AUTHORIZATION, format!("Bearer {}", config.origin_token));
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    if no_cache {
        request = request.header(CACHE_CONTROL, NO_CACHE);
    }
    if let Some(caller) = caller {
        request = request.header(X_ASIDE_CALLER, caller);
    }
    if redis_missed {
        request = request.header(X_ASIDE_REDIS, REDIS_MISSED);
    }
    if let Some(options) = host_timeouts(limit) {
        request = request.extension(options);
    }
    // The body is sent as a stream of known length: saying so spares the origin a chunked body (and
    // lets it check its limit first). GET and HEAD without a body carry no length, as usual.
    if !body.is_empty() || !matches!(method, Method::GET | Method::HEAD) {
        request = request.header(CONTENT_LENGTH, body.len());
    }
    let request = match request.body(FullBody::new(body)) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("aside-edge: cannot build the origin request: {e}");
            return Err(Unavailable::Unreachable);
        }
    };

    let exchange = async {
        let answer = spin_sdk::http::send(request).await?;
        let (parts, body) = answer.into_parts();
        let body = body.bytes().await?;
        let mut headers = HeaderMap::new();
        for name in PASSED_BACK {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let cache_control = parts
            .headers
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(CacheControl::parse);
        let stale = parts
            .headers
            .get(X_CACHE)
            .is_some_and(|v| v.as_bytes() == CacheStatus::Stale.as_str().as_bytes());
        let timing = parts
            .headers
            .get(SERVER_TIMING)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_ORIGIN_TIMING)
            .map(str::to_string);
        Ok::<_, spin_sdk::wasip3::http::types::ErrorCode>(OriginAnswer {
            status: parts.status,
            headers,
            body,
            cache_control,
            stale,
            timing,
        })
    };
    match clock::within(limit, exchange).await {
        Some(Ok(answer)) => Ok(answer),
        Some(Err(e)) => {
            eprintln!(
                "aside-edge: origin request failed: {}",
                config.scrub(&e.to_string())
            );
            Err(Unavailable::Unreachable)
        }
        None => {
            eprintln!(
                "aside-edge: origin took longer than {} ms",
                limit.as_millis()
            );
            Err(Unavailable::TimedOut)
        }
    }
}

/// `wasi:http` request options asking the host itself to give up on connecting, and on waiting for the
/// first byte, after `limit`: a second line of defence behind the component's own timer. A host that
/// does not support an option refuses to set it; the timer still holds then.
fn host_timeouts(
    limit: Duration,
) -> Option<spin_sdk::wasip3::http_compat::RequestOptionsExtension> {
    #[cfg(target_arch = "wasm32")]
    {
        use spin_sdk::wasip3::http::types::RequestOptions;
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let options = RequestOptions::new();
        let connect = options.set_connect_timeout(Some(nanos)).is_ok();
        let first_byte = options.set_first_byte_timeout(Some(nanos)).is_ok();
        (connect || first_byte)
            .then(|| spin_sdk::wasip3::http_compat::RequestOptionsExtension(options))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = limit;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_url_is_base_then_path_and_query() {
        assert_eq!(
            origin_uri("http://127.0.0.1:8080", "/users/1?fields=email"),
            "http://127.0.0.1:8080/users/1?fields=email"
        );
        assert_eq!(
            origin_uri("https://o.internal", "/users"),
            "https://o.internal/users"
        );
        assert_eq!(origin_uri("http://o", "metrics"), "http://o/metrics");
    }

    #[test]
    fn the_origin_uri_is_a_valid_http_uri() {
        let uri: http::Uri = origin_uri("http://[::1]:8080", "/users/7?fields=gender,email")
            .parse()
            .unwrap();
        assert_eq!(uri.path(), "/users/7");
        assert_eq!(uri.query(), Some("fields=gender,email"));
        assert_eq!(uri.port_u16(), Some(8080));
    }
}
