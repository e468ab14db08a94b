//! The HTTP API: router, shared state, middleware and the error-to-response mapping.

mod admin;
mod auth;
mod health;
pub mod openapi;
pub mod server;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aside_shared::ApiError;
use aside_shared::headers::{CacheStatus, RETRY_AFTER, X_CACHE};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::ProfileCache;
use crate::cache::read_through::{ReadPath, ReadThrough};
use crate::db::guard::DbGuard;
use crate::secret::Secret;

/// Everything a handler needs; one per process.
pub struct AppState {
    pub pool: Pool,
    pub cache: Arc<ProfileCache>,
    pub tokens: Vec<Secret>,
    pub metrics: PrometheusHandle,
    /// PostgreSQL's circuit breaker and client-side deadline (the reads share it).
    pub db: Arc<DbGuard>,
    /// The read path of `GET /users/{id}`: lookup, refresh, coalescing, lease, load and fill.
    pub reads: ReadThrough,
    /// Bearer tokens of the admin routes; empty: the admin routes are not mounted.
    pub admin_tokens: Vec<Secret>,
}

impl AppState {
    pub fn new(
        pool: Pool,
        cache: Arc<ProfileCache>,
        tokens: Vec<Secret>,
        metrics: PrometheusHandle,
        db: DbGuard,
        read: ReadPath,
    ) -> Self {
        let db = Arc::new(db);
        let reads = ReadThrough::new(Arc::clone(&cache), pool.clone(), Arc::clone(&db), read);
        Self {
            pool,
            cache,
            tokens,
            metrics,
            db,
            reads,
            admin_tokens: Vec::new(),
        }
    }

    /// Mounts the admin routes, guarded by these tokens (none: not mounted).
    pub fn with_admin_tokens(mut self, tokens: Vec<Secret>) -> Self {
        self.admin_tokens = tokens;
        self
    }
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>, limits: Limits) -> Router {
    let (routes, doc) = api_router(&state).split_for_parts();
    routes
        .fallback(|| async { Error(ApiError::route_not_found()) })
        .method_not_allowed_fallback(|| async { Error(ApiError::method_not_allowed()) })
        .layer(Extension(openapi::Document::new(&doc)))
        .layer(Extension(limits))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        // Outside the body limit and the timeout, so their bare answers get the JSON error body too.
        .layer(axum::middleware::map_response(move |response| {
            json_error_bodies(response, limits)
        }))
        .layer(axum::middleware::map_response(default_cache_header))
        .layer(CatchPanicLayer::custom(|_| {
            Error(ApiError::internal()).into_response()
        }))
        .layer(TraceLayer::new_for_http())
        // Outermost, so it counts what the client gets: timeouts, panics and fallbacks included.
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

/// Every route with its OpenAPI operation, registered together by `routes!` so that neither can exist
/// without the other: `/openapi.json` lists exactly what the router serves.
pub fn api_router(state: &Arc<AppState>) -> OpenApiRouter<Arc<AppState>> {
    let users = user_routes().route_layer(axum::middleware::from_fn_with_state(
        Arc::clone(state),
        auth::require_token,
    ));
    let mut api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(users)
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::edge_openapi_json));
    if !state.admin_tokens.is_empty() {
        api = api.merge(
            OpenApiRouter::new()
                .routes(routes!(admin::cache_stats))
                .route_layer(axum::middleware::from_fn_with_state(
                    Arc::clone(state),
                    auth::require_admin_token,
                )),
        );
    }
    api
}

/// The `/users` routes with their operations, before any layer.
pub(crate) fn user_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(users::write::create_user))
        .routes(routes!(
            users::read::get_user,
            users::write::replace_user,
            users::write::update_user,
            users::write::delete_user
        ))
}

/// Counts each request and its latency by route template (`/users/{id}`, never the raw path, so ids do
/// not multiply the series; `unmatched` for the fallback), method and status.
async fn count_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    crate::metrics::http_request(
        route.as_deref().unwrap_or("unmatched"),
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The method as a label; anything unusual is `other`, so a client cannot add series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Every response says whether the cache answered it; anything a handler did not mark is a MISS.
async fn default_cache_header(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(X_CACHE)
        .or_insert(HeaderValue::from_static(CacheStatus::Miss.as_str()));
    response
}

/// The layers' own answers (413 from the body limit, 503 from the timeout) carry no body; give them the
/// API's JSON error like every other error.
async fn json_error_bodies(response: Response, limits: Limits) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            Error(ApiError::payload_too_large(limits.max_body_bytes)).into_response()
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            let mut error = ApiError::new(
                aside_shared::ErrorCode::Unavailable,
                "the request took too long, retry later",
            );
            error.retry_after_secs = Some(1);
            Error(error).into_response()
        }
        _ => response,
    }
}

/// An [`ApiError`] as an HTTP response: its status, the JSON body and `Retry-After` for 503.
pub struct Error(pub ApiError);

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0.to_json(),
        )
            .into_response();
        if let Some(secs) = self.0.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
