//! `GET /users/{id}`: the read-through's answer as HTTP.

use std::sync::Arc;

use aside_shared::headers::{CacheStatus, NO_CACHE, REDIS_MISSED, X_ASIDE_REDIS};
use aside_shared::{ApiError, ErrorBody, FieldSelection, UserId};
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};

use super::path_id;
use super::response::{mark, profile_response};
use crate::cache::read_through::{Answer, ReadMode};
use crate::http::openapi::schemas::{ProfileAnswer, Unauthorized, Unavailable};
use crate::http::{AppState, Error};

/// `GET /users/{id}[?fields=a,b]`.
///
/// Fresh copy in Redis: `HIT`, unless XFetch picks this request to refresh it early (it then answers
/// the refreshed value, still `HIT`). Soft-expired copy: refreshed from PostgreSQL (`MISS`), or served
/// `STALE` if PostgreSQL fails or does not answer within `refresh_wait`. No copy: loaded (`MISS`), or
/// 503 if PostgreSQL cannot answer. Every load is coalesced per id in the origin and, through the fill
/// lease, across origins. Profile answers carry `cache-control: max-age, stale-if-error`.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    summary = "Read a profile",
    description = "From Redis when cached (`x-cache: HIT`), else from PostgreSQL (`x-cache: MISS`), \
                   which also fills the cache; concurrent misses for one id share one query. A 404 \
                   may be answered from the cache too (a recently missing or deleted user).",
    params(
        ("id" = UserId, Path, description = "The user id"),
        ("fields" = Option<FieldSelection>, Query, style = Form, explode = false,
         example = json!(["email", "department"]),
         description = "Comma-separated field names; the answer then has `id` and those fields only \
                        (a `ProfileProjection`)"),
        ("x-aside-redis" = Option<String>, Header,
         description = "`miss` (sent by the edge): the caller found no entry in Redis just before, so \
                        the origin skips its first look; any other value is ignored"),
    ),
    responses(
        (status = 200, description = "The profile (or the chosen fields)", body = ProfileAnswer,
         headers(
             ("x-cache" = String, description = "`HIT` (Redis, fresh), `MISS` (PostgreSQL) or `STALE` (a soft-expired copy served because PostgreSQL could not answer)"),
             ("etag" = String, description = "The row version, `\"<version>\"`"),
             ("cache-control" = String, description = "How long the answer may be reused"),
             ("server-timing" = String, description = "Time per tier: `redis;dur=..`, `db;dur=..`"),
         )),
        (status = 400, description = "`invalid_id` or `invalid_query`", body = ErrorBody),
        Unauthorized,
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody,
         headers(("x-cache" = String, description = "`HIT` when the absence was cached"))),
        Unavailable,
    ),
    security(("origin_token" = []))
)]
pub async fn get_user(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let id = path_id(&uri)?;
    let selection = FieldSelection::from_query(uri.query()).map_err(ApiError::invalid_query)?;
    let read = state
        .reads
        .get(id, selection.as_ref(), read_mode(&headers))
        .await?;
    match read.answer {
        Answer::Profile(copy) => Ok(profile_response(&state, copy, read.status, &read.timing)),
        // A cached absence says it came from the cache, like any cached answer.
        Answer::Absent if read.status == CacheStatus::Hit => {
            let mut response = Error(ApiError::user_not_found(id)).into_response();
            mark(&mut response, CacheStatus::Hit, &read.timing);
            Ok(response)
        }
        Answer::Absent => Err(ApiError::user_not_found(id).into()),
    }
}

/// `cache-control: no-cache` reloads from PostgreSQL; else `x-aside-redis: miss` (the edge found no
/// entry in Redis just before) skips the first look; else a plain read.
fn read_mode(headers: &HeaderMap) -> ReadMode {
    let reload = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case(NO_CACHE));
    let missed = headers
        .get(X_ASIDE_REDIS)
        .is_some_and(|v| v.as_bytes() == REDIS_MISSED.as_bytes());
    match (reload, missed) {
        (true, _) => ReadMode::Reload,
        (false, true) => ReadMode::AfterMiss,
        (false, false) => ReadMode::Plain,
    }
}
