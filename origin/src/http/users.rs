//! `/users/{id}`: the cache-aside read path.

use std::sync::Arc;
use std::time::Instant;

use aside_shared::headers::{CacheStatus, SERVER_TIMING, ServerTiming, X_CACHE};
use aside_shared::{ApiError, FieldSelection, UserId};
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Error, LoadResult};
use crate::cache::Lookup;
use crate::db::DbError;
use crate::singleflight::Role;

/// Seconds a client should wait after a 503 caused by PostgreSQL.
const DB_RETRY_AFTER_SECS: u32 = 1;

/// `GET /users/{id}[?fields=a,b]`: Redis first; on a miss, PostgreSQL (one query however many requests
/// miss the same id at once), then the hash is filled for the next reader.
pub async fn get_user(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Error> {
    // The id is taken from the raw path so that percent-escapes and non-UTF-8 get the same JSON 400 as
    // any other bad id (the canonical id has no escapes).
    let raw_id = uri.path().strip_prefix("/users/").unwrap_or_default();
    let id = UserId::parse(raw_id).map_err(ApiError::invalid_id)?;
    let selection = FieldSelection::from_query(uri.query()).map_err(ApiError::invalid_query)?;
    let mut timing = ServerTiming::new();

    let started = Instant::now();
    let cached = match &selection {
        Some(sel) => state.cache.get_fields(id, sel).await,
        None => state
            .cache
            .get(id)
            .await
            .map(|c| serde_json::to_value(&c.profile).expect("profiles serialise")),
    };
    timing.add("redis", ms_since(started));
    match cached {
        Lookup::Hit(body) => {
            crate::metrics::cache_result("hit");
            return Ok(json_response(body, CacheStatus::Hit, &timing));
        }
        Lookup::Miss => crate::metrics::cache_result("miss"),
        Lookup::Unavailable(_) => crate::metrics::cache_result("error"),
    }

    let started = Instant::now();
    let loader = Arc::clone(&state);
    let (loaded, role) = state
        .loads
        .run(id, move || async move { load_and_fill(&loader, id).await })
        .await;
    if role == Role::Follower {
        crate::metrics::coalesced();
    }
    timing.add("db", ms_since(started));
    match loaded? {
        Some(cached) => {
            let body = match &selection {
                Some(sel) => sel.project(&cached.profile),
                None => serde_json::to_value(&cached.profile).expect("profiles serialise"),
            };
            Ok(json_response(body, CacheStatus::Miss, &timing))
        }
        None => Err(ApiError::user_not_found(id).into()),
    }
}

/// One PostgreSQL read for `id`, then the fill. A failed fill is logged and counted, never returned:
/// the reader still gets the row.
async fn load_and_fill(state: &AppState, id: UserId) -> LoadResult {
    let row = crate::db::profile_by_id(&state.pool, id)
        .await
        .map_err(|e| match e {
            DbError::Unavailable(detail) => {
                tracing::warn!(%id, error = %detail, "PostgreSQL unavailable");
                ApiError::unavailable("PostgreSQL", DB_RETRY_AFTER_SECS)
            }
            other => {
                tracing::error!(%id, error = %other, "profile query failed");
                ApiError::internal()
            }
        })?;
    if let Some(cached) = &row
        && let Err(e) = state.cache.fill(cached).await
    {
        tracing::debug!(%id, error = %e, "cache fill skipped");
    }
    Ok(row)
}

fn json_response(
    body: impl serde::Serialize,
    status: CacheStatus,
    timing: &ServerTiming,
) -> Response {
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    if let Ok(v) = HeaderValue::from_str(timing.as_str()) {
        headers.insert(SERVER_TIMING, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
