//! The HTTP entry point and the instance state it keeps between requests.
//!
//! Spin 4 reuses one instance for many requests (up to 16 at a time, on one thread), so the state that
//! makes the edge fast lives in a thread-local [`Edge`]: the configuration (read once), tier 1, the Redis
//! connection and back-off, and the lookups in flight. It is created by the first request.

use std::cell::RefCell;
use std::rc::Rc;

use aside_shared::headers::{CacheStatus, RETRY_AFTER, SERVER_TIMING, ServerTiming, X_CACHE};
use aside_shared::{ApiError, ErrorCode};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use spin_sdk::http::{FullBody, Request};

use crate::config::{self, Config, ConfigError};
use crate::flight::SingleFlight;
use crate::forward::{self, OriginAnswer};
use crate::l1::ProfileCache;
use crate::l2::Redis;
use crate::read::{self, Fetched, FlightKey};
use crate::routes::{self, Route};

/// The largest request body the edge passes to the origin. Far above anything the API accepts (the
/// origin answers 413 well before this); it only keeps the edge from buffering without bound.
const MAX_FORWARDED_BODY: usize = 1024 * 1024;

/// Everything an instance keeps between requests.
pub struct Edge {
    pub config: Rc<Config>,
    pub l1: RefCell<ProfileCache>,
    pub redis: Redis,
    pub flights: Rc<SingleFlight<FlightKey, Rc<Fetched>>>,
}

impl Edge {
    fn new(config: Config) -> Self {
        let config = Rc::new(config);
        Self {
            l1: RefCell::new(ProfileCache::new(config.l1)),
            redis: Redis::new(Rc::clone(&config)),
            flights: Rc::default(),
            config,
        }
    }
}

thread_local! {
    /// The instance's state, or the configuration error every request answers with.
    static EDGE: RefCell<Option<Result<Rc<Edge>, ConfigError>>> = const { RefCell::new(None) };
}

/// The instance's state, created on first use. A configuration error is kept too (and logged once),
/// except a variables-provider failure, which the next request retries.
async fn edge() -> Result<Rc<Edge>, ConfigError> {
    if let Some(loaded) = EDGE.with(|e| e.borrow().clone()) {
        return loaded;
    }
    let loaded = config::load().await.map(|c| Rc::new(Edge::new(c)));
    if let Err(e) = &loaded
        && e.is_transient()
    {
        eprintln!("aside-edge: {e}; will retry on the next request");
        return loaded;
    }
    // Two first requests may both have loaded; the first to get here wins and logs.
    EDGE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            if let Err(e) = &loaded {
                eprintln!("aside-edge: {e}; every request answers 500 until it is fixed");
            }
            *slot = Some(loaded);
        }
        slot.clone().expect("just set")
    })
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
    let uri = request.uri();
    let reply = match routes::route(request.method(), uri.path(), uri.query()) {
        Route::Health => Reply::json(
            200,
            Bytes::from_static(br#"{"status":"ok"}"#),
            CacheStatus::Bypass,
        ),
        Route::Refuse(error) => Reply::error(&error, CacheStatus::Bypass),
        Route::ReadProfile { id, selection } => read::serve(&edge, id, selection).await,
        Route::Forward => pass_through(&edge, request).await,
    };
    reply.edge_timing(started).into_response()
}

/// Forwards the request to the origin and passes its answer back (`x-cache: BYPASS`).
async fn pass_through(edge: &Edge, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let body = match Limited::new(body, MAX_FORWARDED_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let error = ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {MAX_FORWARDED_BODY} bytes"),
            );
            return Reply::error(&error, CacheStatus::Bypass);
        }
        Err(_) => {
            let error = ApiError::new(ErrorCode::MalformedBody, "could not read the request body");
            return Reply::error(&error, CacheStatus::Bypass);
        }
    };
    let content_type = parts.headers.get(CONTENT_TYPE).cloned();

    let mut timing = ServerTiming::new();
    let started = crate::clock::now();
    let result = forward::send(
        &edge.config,
        parts.method.clone(),
        path_and_query,
        content_type,
        body,
    )
    .await;
    timing.add("origin", crate::clock::millis_since(started));
    match result {
        Ok(answer) => {
            // This instance reads its own writes: a changed or deleted profile leaves its tier 1 now
            // rather than when its TTL ends.
            let write = matches!(parts.method, Method::PUT | Method::PATCH | Method::DELETE);
            if write
                && (answer.status.is_success() || answer.status == StatusCode::NOT_FOUND)
                && let Some(id) = routes::user_id_of(parts.uri.path())
            {
                edge.l1.borrow_mut().remove(&id);
            }
            Reply::from_origin(&answer, CacheStatus::Bypass).timing(timing)
        }
        Err(_) => Reply::error(&read::origin_unavailable(), CacheStatus::Bypass).timing(timing),
    }
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

    /// The origin's status, body and [`forward::PASSED_BACK`] headers.
    pub fn from_origin(answer: &OriginAnswer, source: CacheStatus) -> Self {
        Self::new(
            answer.status.as_u16(),
            answer.headers.clone(),
            answer.body.clone(),
            source,
        )
    }

    fn new(status: u16, mut headers: HeaderMap, body: Bytes, source: CacheStatus) -> Self {
        headers.insert(X_CACHE, HeaderValue::from_static(source.as_str()));
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers,
            body,
        }
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
    fn edge_timing(self, started: crate::l1::Nanos) -> Self {
        if self.headers.contains_key(SERVER_TIMING) {
            return self;
        }
        let mut timing = ServerTiming::new();
        timing.add("edge", crate::clock::millis_since(started));
        self.timing(timing)
    }

    fn into_response(self) -> http::Response<FullBody<Bytes>> {
        let mut response = http::Response::new(FullBody::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}
