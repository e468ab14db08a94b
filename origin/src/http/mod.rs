//! The HTTP API: router, shared state, middleware and the error-to-response mapping.

mod auth;
mod health;
pub mod server;
mod users;

use std::sync::Arc;
use std::time::Duration;

use aside_shared::cache::CachedProfile;
use aside_shared::headers::{CacheStatus, RETRY_AFTER, X_CACHE};
use aside_shared::{ApiError, UserId};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::cache::ProfileCache;
use crate::config::Secret;
use crate::singleflight::SingleFlight;

/// Result of one coalesced PostgreSQL load, shared between the requests that waited for it.
pub(crate) type LoadResult = Result<Option<CachedProfile>, ApiError>;

/// Everything a handler needs; one per process.
pub struct AppState {
    pub pool: Pool,
    pub cache: Arc<ProfileCache>,
    pub tokens: Vec<Secret>,
    pub metrics: PrometheusHandle,
    pub(crate) loads: SingleFlight<UserId, LoadResult>,
}

impl AppState {
    pub fn new(
        pool: Pool,
        cache: Arc<ProfileCache>,
        tokens: Vec<Secret>,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            pool,
            cache,
            tokens,
            metrics,
            loads: SingleFlight::default(),
        }
    }
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>, limits: Limits) -> Router {
    let api = Router::new()
        .route("/users", post(users::create_user))
        .route(
            "/users/{id}",
            get(users::get_user)
                .put(users::replace_user)
                .patch(users::update_user)
                .delete(users::delete_user),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { Error(ApiError::route_not_found()) })
        .method_not_allowed_fallback(|| async { Error(ApiError::method_not_allowed()) })
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
        .with_state(state)
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
