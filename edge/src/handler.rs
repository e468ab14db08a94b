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
use std::rc::Rc;

use aside_shared::headers::{CacheStatus, ServerTiming};
use aside_shared::{ApiError, ErrorCode};
use bytes::Bytes;
use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use spin_sdk::http::{FullBody, Request};

use crate::auth::{self, Caller, Need};
use crate::clock::{self, Deadline};
use crate::config::{self, Auth, Config, ConfigError};
use crate::flight::SingleFlight;
use crate::forward::{self, Origin, OriginRequest};
use crate::metrics::METRICS;
use crate::process_tier::ProcessTier;
use crate::ratelimit::WriteLimiter;
use crate::read::ReadPath;
use crate::reply::{self, Reply, origin_unavailable};
use crate::routes::{self, Route};
use crate::tokens::{Authenticator, Refusal};

/// The largest request body the edge passes to the origin. Far above anything the API accepts (the
/// origin answers 413 well before this); it only keeps the edge from buffering without bound.
const MAX_FORWARDED_BODY: usize = 1024 * 1024;

/// Everything an instance keeps between requests.
pub struct Edge {
    pub config: Rc<Config>,
    /// Tier 1, Redis, and the lookups in flight.
    pub reads: ReadPath,
    pub origin: Origin,
    /// Each caller's writes (per instance).
    pub writes: RefCell<WriteLimiter>,
    /// The client check, when authentication is on.
    pub auth: Option<Authenticator>,
}

impl Edge {
    fn new(config: Config) -> Self {
        let config = Rc::new(config);
        let shared = Rc::new(ProcessTier::new(Rc::clone(&config)));
        let auth = match &config.auth {
            Auth::Jwt(settings) => {
                Some(Authenticator::new(Rc::clone(settings), Rc::clone(&shared)))
            }
            Auth::Off => None,
        };
        Self {
            auth,
            reads: ReadPath::new(Rc::clone(&config), Rc::clone(&shared)),
            origin: Origin::new(Rc::clone(&config)).sharing(shared),
            writes: RefCell::new(WriteLimiter::new(config.write_limit)),
            config,
        }
    }
}

thread_local! {
    /// The instance's state, or the configuration error every request answers with.
    static EDGE: RefCell<Option<Result<Rc<Edge>, ConfigError>>> = const { RefCell::new(None) };
    /// The load of the configuration in progress: the first requests of a new instance (up to 16 arrive
    /// at once under load) share one, instead of each reading every variable from the host.
    static LOADING: Rc<SingleFlight<(), Result<Rc<Edge>, ConfigError>>> = Rc::default();
    /// What the instance's start cost, by part (ms): the variables read from the host, their parsing
    /// (a static JWKS included), and setting up the tiers (the process-wide breaker mark read).
    static START: std::cell::Cell<[f64; 3]> = const { std::cell::Cell::new([0.0; 3]) };
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
            let (loaded, cost) = config::load().await;
            let setting_up = clock::now();
            let loaded = loaded.map(|c| Rc::new(Edge::new(c)));
            if let Ok(edge) = &loaded {
                // Both breakers' marks at once (two reads of the process-wide store, when it is on).
                futures::join!(edge.origin.restore(), edge.reads.redis().restore());
            }
            START.with(|s| s.set([cost.vars_ms, cost.parse_ms, clock::millis_since(setting_up)]));
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
    let started = clock::now();
    let fresh_instance = EDGE.with(|e| e.borrow().is_none());
    let edge = match edge().await {
        Ok(edge) => edge,
        Err(e) => {
            let error = ApiError::new(ErrorCode::Internal, e.to_string());
            return Reply::error(&error, CacheStatus::Bypass)
                .edge_timing(started)
                .into_response();
        }
    };
    // The instance's start (its configuration and keys), on the requests that waited for it: what a
    // new instance costs (`server-timing: start`; docs/operations.md, "Overload").
    let start_ms = fresh_instance.then(|| clock::millis_since(started));
    let [vars_ms, parse_ms, setup_ms] = START.with(|s| s.get());
    let deadline = Deadline::after(started, edge.config.request_budget);
    let uri = request.uri();
    let route = routes::route(request.method(), uri.path(), uri.query());
    let protected = routes::is_public_api(uri.path());
    // What the client check cost (`server-timing: auth`), on the requests it ran for.
    let admitting = clock::now();
    let caller = if protected {
        match admit(&edge, &request, &route, deadline).await {
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
    let auth_ms = (protected && edge.auth.is_some()).then(|| clock::millis_since(admitting));
    let reply = match route {
        Route::Health => Reply::json(
            200,
            Bytes::from_static(br#"{"status":"ok"}"#),
            CacheStatus::Bypass,
        ),
        Route::Refuse(error) => Reply::error(&error, CacheStatus::Bypass),
        Route::FeedState => edge.reads.feed_metrics(deadline).await,
        Route::Metrics => Reply::text(
            200,
            METRICS.prometheus(&reply::instance_label(), edge.reads.budget_tokens()),
            "text/plain; version=0.0.4",
        ),
        Route::ApiDocument => api_document(&edge, deadline).await,
        Route::ReadProfile { id, selection } => {
            edge.reads
                .serve(&edge.origin, id, selection, deadline)
                .await
        }
        Route::Forward => pass_through(&edge, request, caller, deadline).await,
    };
    reply
        .edge_timing(started)
        .instance_start(start_ms)
        .also_timing("start_vars", start_ms.map(|_| vars_ms))
        .also_timing("start_parse", start_ms.map(|_| parse_ms))
        .also_timing("start_setup", start_ms.map(|_| setup_ms))
        .also_timing("auth", auth_ms)
        .also_timing(
            "auth_verify",
            edge.auth.as_ref().and_then(|a| a.take_verified()),
        )
        .also_timing("redis_open", edge.reads.redis().take_open())
        .breakers(edge.reads.redis().breaker(), edge.origin.breaker())
        .client_cache(&edge.config.auth, protected)
        .into_response()
}

/// The client check of a request to the public API, before any tier or the origin is asked: who the
/// caller is (401 without a token the verifier accepts), whether it may do this (403), and, for a
/// write, whether it is within its write rate (429). `Ok(None)` when authentication is off.
async fn admit(
    edge: &Edge,
    request: &Request,
    route: &Route,
    deadline: Deadline,
) -> Result<Option<Rc<Caller>>, Box<Reply>> {
    let Some(authenticator) = &edge.auth else {
        return Ok(None);
    };
    let checked =
        match auth::bearer_token(request.headers().get(AUTHORIZATION).map(|v| v.as_bytes())) {
            Ok(token) => authenticator.check(token, deadline).await,
            Err(rejected) => Err(Refusal::Token(rejected)),
        };
    let caller = match checked {
        Ok(caller) => caller,
        Err(Refusal::Token(rejected)) => {
            return Err(Box::new(
                Reply::error(&rejected.error(), CacheStatus::Bypass)
                    .challenge(&rejected.challenge()),
            ));
        }
        Err(Refusal::NoKeys(unavailable)) => {
            return Err(Box::new(Reply::error(
                &unavailable.error(),
                CacheStatus::Bypass,
            )));
        }
    };
    let need = match route {
        Route::ReadProfile { id, selection } => Need::read(*id, selection.as_ref()),
        Route::Forward => Need::forwarded(request.method(), request.uri().path()),
        Route::Health
        | Route::FeedState
        | Route::Metrics
        | Route::ApiDocument
        | Route::Refuse(_) => Need::Authenticated,
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
            .allow(&caller.subject, clock::now())
    {
        return Err(Box::new(Reply::error(
            &ApiError::rate_limited(retry_after),
            CacheStatus::Bypass,
        )));
    }
    Ok(Some(caller))
}

/// Forwards the request to the origin and passes its answer back (`x-cache: BYPASS`), by `deadline`
/// and through the origin's breaker (an open breaker answers 503 at once).
async fn pass_through(
    edge: &Edge,
    request: Request,
    caller: Option<Rc<Caller>>,
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
    let started = clock::now();
    // The feed position before the write: the written copy is vouched for from there on.
    let tag = edge.reads.feed_tag();
    let request = OriginRequest {
        method: parts.method.clone(),
        path_and_query,
        content_type,
        body,
        no_cache: false,
        caller: caller.map(|c| c.header_value()),
        redis_missed: false,
    };
    let result = edge.origin.call(request, deadline).await;
    if !matches!(result, Err(forward::Unavailable::BreakerOpen(_))) {
        timing.add("origin", clock::millis_since(started));
    }
    if let Some(upstream) = result.as_ref().ok().and_then(|a| a.timing.as_deref()) {
        timing.add_prefixed("origin", upstream);
    }
    match result {
        // Read-your-writes: the tiers keep what this instance wrote, then the answer is passed on.
        Ok(answer) => edge
            .reads
            .written(
                &edge.origin,
                &parts.method,
                parts.uri.path(),
                answer,
                tag,
                deadline,
            )
            .await
            .timing(timing),
        Err(why) => Reply::error(
            &origin_unavailable(why.retry_after_secs()),
            CacheStatus::Bypass,
        )
        .timing(timing),
    }
}

/// The edge's API document, as the origin renders it for the edge's clients (`x-cache: BYPASS`);
/// 503 while the origin cannot be asked.
async fn api_document(edge: &Edge, deadline: Deadline) -> Reply {
    match edge
        .origin
        .call(OriginRequest::get(routes::API_DOCUMENT_AT_ORIGIN), deadline)
        .await
    {
        Ok(answer) => Reply::from_origin(&answer, CacheStatus::Bypass),
        Err(why) => Reply::error(
            &origin_unavailable(why.retry_after_secs()),
            CacheStatus::Bypass,
        ),
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
