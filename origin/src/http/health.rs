//! Liveness, readiness and metrics.

use std::sync::Arc;

use super::AppState;
use super::openapi::schemas::{BackendState, Health, Readiness};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Serving", body = Health))
)]
pub async fn healthz() -> impl IntoResponse {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready when PostgreSQL answers (the origin cannot answer a miss without it). Redis is reported but is
/// not required: without it the origin still serves, from PostgreSQL. Both go through their circuit
/// breakers: while one is open it is reported unavailable without being asked.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "PostgreSQL answers (Redis may not)", body = Readiness),
        (status = 503, description = "PostgreSQL does not answer", body = Readiness),
    )
)]
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
    (
        status,
        Json(Readiness {
            postgres: BackendState::of(db.is_ok()),
            redis: BackendState::of(redis.is_ok()),
        }),
    )
}

/// Prometheus text exposition (docs/observability.md lists the families). The PostgreSQL pool and
/// Redis's own figures (`INFO`) are sampled at each scrape; when Redis does not answer, its figures keep
/// their last values.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String,
               content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    crate::metrics::db_pool(state.pool.status());
    if state.cache.topology().is_cluster() {
        // Every primary's INFO once: the sums for the server-wide figures, each for the per-node ones.
        match state.cache.cluster_figures().await {
            Ok(nodes) => {
                let answered = nodes.iter().filter_map(|(_, info)| info.as_ref());
                if nodes.iter().any(|(_, info)| info.is_some()) {
                    let sum = crate::cache::stats::ServerInfo::sum(answered);
                    crate::metrics::redis_server(&sum.figures());
                }
                let primaries = nodes
                    .iter()
                    .map(|(node, info)| {
                        let figures = info.as_ref().map(|i| {
                            (
                                i.used_memory_bytes.unwrap_or(0),
                                i.maxmemory_bytes.unwrap_or(0),
                            )
                        });
                        (node.clone(), figures)
                    })
                    .collect();
                let slots = state.cache.cluster_slots().await.ok();
                crate::metrics::redis_cluster(&crate::metrics::RedisClusterFigures {
                    primaries,
                    slots,
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "the Redis Cluster's figures for /metrics failed")
            }
        }
    } else {
        match state.cache.server_info().await {
            Ok(info) => crate::metrics::redis_server(&info.figures()),
            Err(e) => tracing::debug!(error = %e, "Redis INFO for /metrics failed"),
        }
    }
    // Replica lag: only where there is more than one node to speak of.
    if state.cache.topology().is_following() {
        match state.cache.replication().await {
            Ok(info) => crate::metrics::redis_replication(&info.lags()),
            Err(e) => tracing::debug!(error = %e, "Redis INFO replication for /metrics failed"),
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
