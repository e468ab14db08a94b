//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// The process is up and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when PostgreSQL answers (the origin cannot answer a miss without it). Redis is reported but is
/// not required: without it the origin still serves, from PostgreSQL. Both go through their circuit
/// breakers: while one is open it is reported unavailable without being asked.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (db, redis) = tokio::join!(
        state.db.run(crate::db::ping(&state.pool)),
        state.cache.ping()
    );
    let status = if db.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({"postgres": word(db.is_ok()), "redis": word(redis.is_ok())})),
    )
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
