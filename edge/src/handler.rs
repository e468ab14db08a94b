//! The HTTP entry point and the instance state it keeps between requests.
//!
//! Spin 4 reuses one instance for many requests (up to 16 at a time, on one thread), so the state that
//! makes the edge fast lives in a thread-local [`Edge`]: the configuration (read once), tier 1, the Redis
//! connection and breaker, the origin breaker, and the lookups in flight. It is created by the first
//! request.
//!
//! Every answer names the instance that gave it (`x-edge-instance`, 16 random hex digits drawn once per
//! instance), so a client can tell instances, and therefore tier 1s, apart. While one of the instance's
//! circuit breakers is not closed, answers also say so: `x-edge-breaker: redis=open, origin=probing`
//! (absent when both are closed). Every request has `request_budget_ms` from its start to its answer.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use aside_shared::headers::{
    CACHE_CONTROL, CacheStatus, ETAG, RETRY_AFTER, SERVER_TIMING, ServerTiming, X_ASIDE_AUTH,
    X_CACHE, X_EDGE_INSTANCE, format_etag, format_instance_id,
};
use aside_shared::{ApiError, ErrorCode, UserId, UserProfile};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, VARY, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use spin_sdk::http::{FullBody, Request};

use crate::auth::{self, Caller, Need};
use crate::backoff::Visible;
use crate::clock::Deadline;
use crate::config::{self, Auth, Config, ConfigError};
use crate::flight::SingleFlight;
use crate::forward::{self, Origin, OriginAnswer, OriginRequest};
use crate::l1::{ProfileEntry, Shelf, Tier1};
use crate::l2::Redis;
use crate::ratelimit::WriteLimiter;
use crate::read::{self, Fetched, FlightKey};
use crate::routes::{self, Route};

/// The largest request body the edge passes to the origin. Far above anything the API accepts (the
/// origin answers 413 well before this); it only keeps the edge from buffering without bound.
const MAX_FORWARDED_BODY: usize = 1024 * 1024;

/// Slack added to the longest a lookup can take (Redis then origin timeouts) for the tier-1 version
/// floors: the host may be slow to run a request whose answer has arrived.
const FLOOR_SLACK: Duration = Duration::from_secs(1);

/// Names the instance's circuit breakers that are not closed: `x-edge-breaker: redis=open`.
pub const X_EDGE_BREAKER: &str = "x-edge-breaker";

/// Everything an instance keeps between requests.
pub struct Edge {
    pub config: Rc<Config>,
    pub l1: RefCell<Tier1>,
    pub redis: Redis,
    pub origin: Origin,
    pub flights: Rc<SingleFlight<FlightKey, Rc<Fetched>>>,
    /// Ids being refreshed early (XFetch) by a request of this instance.
    pub refreshing: RefCell<HashSet<UserId>>,
    /// Each caller's writes (per instance).
    pub writes: RefCell<WriteLimiter>,
}

impl Edge {
    fn new(config: Config) -> Self {
        let config = Rc::new(config);
        let longest_lookup = config.redis_timeout + config.origin_timeout + FLOOR_SLACK;
        // Floors also outlive a lagging Redis replica (the edge's `redis_address` may be one): as long
        // as the instance keeps stale copies, it keeps the versions it answered, so a replica that is
        // behind by less than that can never move this instance's answers back.
        let floor_ttl = longest_lookup.max(config.l1_stale);
        Self {
            l1: RefCell::new(Tier1::new(config.l1, config.l1_stale, floor_ttl)),
            redis: Redis::new(Rc::clone(&config)),
            origin: Origin::new(Rc::clone(&config)),
            flights: Rc::default(),
            refreshing: RefCell::default(),
            writes: RefCell::new(WriteLimiter::new(config.write_limit)),
            config,
        }
    }
}

/// This instance's `x-edge-instance` value, drawn from the host's `wasi:random` on first use.
fn instance_id() -> &'static HeaderValue {
    static ID: OnceLock<HeaderValue> = OnceLock::new();
    ID.get_or_init(|| {
        let id = spin_sdk::wasip3::random::random::get_random_u64();
        HeaderValue::from_str(&format_instance_id(id)).expect("hex digits are a header value")
    })
}

thread_local! {
    /// The instance's state, or the configuration error every request answers with.
    static EDGE: RefCell<Option<Result<Rc<Edge>, ConfigError>>> = const { RefCell::new(None) };
    /// The load of the configuration in progress: the first requests of a new instance (up to 16 arrive
    /// at once under load) share one, instead of each reading every variable from the host.
    static LOADING: Rc<SingleFlight<(), Result<Rc<Edge>, ConfigError>>> = Rc::default();
}

/// The instance's state, created on first use by one load that concurrent first requests share. A
/// configuration error is kept too (and logged once), except a variables-provider failure, which the
/// next request retries.
async fn edge() -> Result<Rc<Edge>, ConfigError> {
    if let Some(loaded) = EDGE.with(|e| e.borrow().clone()) {
        return loaded;
    }
    let loading = LOADING.with(Rc::clone);
    let (loaded, _) = loading
        .run((), || async {
            let loaded = config::load().await.map(|c| Rc::new(Edge::new(c)));
            match &loaded {
                Err(e) if e.is_transient() => {
                    eprintln!("aside-edge: {e}; will retry on the next request");
                }
                Err(e) => {
                    eprintln!("aside-edge: {e}; every request answers 500 until it is fixed");
                    EDGE.with(|slot| *slot.borrow_mut() = Some(loaded.clone()));
                }
                Ok(edge) => {
                    if edge.config.auth == Auth::Off {
                        eprintln!(
                            "aside-edge: client authentication is OFF (auth = \"off\"): every client \
                             may read and change every profile; answers say x-aside-auth: off"
                        );
                    }
                    EDGE.with(|slot| *slot.borrow_mut() = Some(loaded.clone()));
                }
            }
            loaded
        })
        .await;
    loaded
}

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_service)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> http::Response<FullBody<Bytes>> {
    let started = crate::clock::now();
    let edge = match edge().await {
        Ok(edge) => edge,
        Err(e) => {
            let error = ApiError::new(ErrorCode::Internal, e.to_string());
            return Reply::error(&error, CacheStatus::Bypass)
                .edge_timing(started)
                .into_response();
        }
    };
    let deadline = Deadline::after(started, edge.config.request_budget);
    let uri = request.uri();
    let route = routes::route(request.method(), uri.path(), uri.query());
    let protected = routes::is_public_api(uri.path());
    let caller = if protected {
        match admit(&edge, &request, &route) {
            Ok(caller) => caller,
            Err(refused) => {
                return refused
                    .edge_timing(started)
                    .client_cache(&edge.config.auth, true)
                    .into_response();
            }
        }
    } else {
        None
    };
    let reply = match route {
        Route::Health => Reply::json(
            200,
            Bytes::from_static(br#"{"status":"ok"}"#),
            CacheStatus::Bypass,
        ),
        Route::Refuse(error) => Reply::error(&error, CacheStatus::Bypass),
        Route::ReadProfile { id, selection } => read::serve(&edge, id, selection, deadline).await,
        Route::Forward => pass_through(&edge, request, caller, deadline).await,
    };
    reply
        .edge_timing(started)
        .breakers(&edge)
        .client_cache(&edge.config.auth, protected)
        .into_response()
}

/// The client check of a request to the public API, before any tier or the origin is asked: who the
/// caller is (401 without a token the verifier accepts), whether it may do this (403), and, for a
/// write, whether it is within its write rate (429). `Ok(None)` when authentication is off.
fn admit(edge: &Edge, request: &Request, route: &Route) -> Result<Option<Caller>, Box<Reply>> {
    let Auth::Jwt(verifier) = &edge.config.auth else {
        return Ok(None);
    };
    let token = auth::bearer_token(request.headers().get(AUTHORIZATION).map(|v| v.as_bytes()));
    let caller = match token.and_then(|t| verifier.verify(t)) {
        Ok(caller) => caller,
        Err(rejected) => {
            return Err(Box::new(
                Reply::error(&rejected.error(), CacheStatus::Bypass)
                    .challenge(&rejected.challenge()),
            ));
        }
    };
    let need = match route {
        Route::ReadProfile { id, selection } => Need::read(*id, selection.as_ref()),
        Route::Forward => Need::forwarded(request.method(), request.uri().path()),
        Route::Health | Route::Refuse(_) => Need::Authenticated,
    };
    if let Err(denied) = auth::authorize(&caller, &need) {
        return Err(Box::new(
            Reply::error(&denied.error(), CacheStatus::Bypass).challenge(&denied.challenge()),
        ));
    }
    if need.is_write()
        && let Err(retry_after) = edge
            .writes
            .borrow_mut()
            .allow(&caller.subject, crate::clock::now())
    {
        return Err(Box::new(Reply::error(
            &ApiError::rate_limited(retry_after),
            CacheStatus::Bypass,
        )));
    }
    Ok(Some(caller))
}

/// Keeps tier 1 in step with a write this instance forwarded, so that its next read of the profile is
/// the written one (read-your-writes) and no slower lookup can bring an older one back: a written
/// profile (200/201 with its version in `etag`) is stored in tier 1; a `DELETE` leaves a floor at the
/// deleted version (the 204's `etag`); any other successful write, or a 404, drops the copy.
fn remember_write(edge: &Edge, method: &Method, path: &str, answer: &OriginAnswer) {
    let path_id = routes::user_id_of(path);
    let is_write = match *method {
        Method::PUT | Method::PATCH | Method::DELETE => path_id.is_some(),
        Method::POST => path == "/users",
        _ => false,
    };
    if !is_write || !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND) {
        return;
    }
    let now = crate::clock::now();
    let mut l1 = edge.l1.borrow_mut();
    if *method == Method::DELETE && answer.status.is_success() {
        if let Some(id) = path_id {
            l1.deleted(id, answer.version(), now);
        }
        return;
    }
    let written = match answer.status {
        StatusCode::OK | StatusCode::CREATED => answer
            .version()
            .zip(serde_json::from_slice::<UserProfile>(&answer.body).ok())
            .filter(|(_, profile)| path_id.is_none_or(|id| id == profile.id)),
        _ => None,
    };
    match (written, path_id) {
        (Some((version, profile)), _) => {
            let shelf = Shelf::default();
            l1.fill(
                ProfileEntry::new(profile, version),
                shelf,
                now,
                crate::clock::wall_ms(),
            );
        }
        (None, Some(id)) => l1.remove(&id),
        (None, None) => {}
    }
}

/// Forwards the request to the origin and passes its answer back (`x-cache: BYPASS`), by `deadline`
/// and through the origin's breaker (an open breaker answers 503 at once).
async fn pass_through(
    edge: &Edge,
    request: Request,
    caller: Option<Caller>,
    deadline: Deadline,
) -> Reply {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // A body announced larger than the limit is refused before waiting for any of it (a client may
    // announce gigabytes and send nothing).
    if declared_length(&parts.headers).is_some_and(|n| n > MAX_FORWARDED_BODY as u64) {
        return Reply::error(&body_too_large(), CacheStatus::Bypass);
    }
    let body = match Limited::new(body, MAX_FORWARDED_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Reply::error(&body_too_large(), CacheStatus::Bypass);
        }
        Err(_) => {
            let error = ApiError::new(ErrorCode::MalformedBody, "could not read the request body");
            return Reply::error(&error, CacheStatus::Bypass);
        }
    };
    let content_type = parts.headers.get(CONTENT_TYPE).cloned();

    let mut timing = ServerTiming::new();
    let started = crate::clock::now();
    let request = OriginRequest {
        method: parts.method.clone(),
        path_and_query,
        content_type,
        body,
        no_cache: false,
        caller: caller.map(|c| c.header_value()),
    };
    let result = edge.origin.call(request, deadline).await;
    if !matches!(result, Err(forward::Unavailable::BreakerOpen(_))) {
        timing.add("origin", crate::clock::millis_since(started));
    }
    match result {
        Ok(answer) => {
            remember_write(edge, &parts.method, parts.uri.path(), &answer);
            Reply::from_origin(&answer, CacheStatus::Bypass).timing(timing)
        }
        Err(why) => Reply::error(
            &read::origin_unavailable(why.retry_after_secs()),
            CacheStatus::Bypass,
        )
        .timing(timing),
    }
}

/// The request's `content-length`, when it has one that parses.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn body_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {MAX_FORWARDED_BODY} bytes"),
    )
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

    /// The shared error body, with `retry-after` when the error has one.
    pub fn error(error: &ApiError, source: CacheStatus) -> Self {
        let mut reply = Self::json(error.status(), Bytes::from(error.to_json()), source);
        if let Some(secs) = error.retry_after_secs {
            reply.headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        reply
    }

    /// The origin's status, body and [`forward::PASSED_BACK`] headers, and its freshness directives
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
    fn challenge(mut self, challenge: &str) -> Self {
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
    fn client_cache(mut self, auth: &Auth, public_api: bool) -> Self {
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
    fn edge_timing(self, started: crate::clock::Nanos) -> Self {
        if self.headers.contains_key(SERVER_TIMING) {
            return self;
        }
        let mut timing = ServerTiming::new();
        timing.add("edge", crate::clock::millis_since(started));
        self.timing(timing)
    }

    /// Adds `x-edge-breaker` when a breaker of this instance is open or probing.
    fn breakers(mut self, edge: &Edge) -> Self {
        let value = breaker_header(edge.redis.breaker(), edge.origin.breaker());
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            self.headers.insert(X_EDGE_BREAKER, value);
        }
        self
    }

    fn into_response(mut self) -> http::Response<FullBody<Bytes>> {
        self.headers.insert(X_EDGE_INSTANCE, instance_id().clone());
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
