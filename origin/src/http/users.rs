//! `/users`: the cache-aside read path and the writes.
//!
//! Reads: Redis first (a profile, or a cached "missing"/"deleted" answered 404 without PostgreSQL);
//! on a miss, PostgreSQL (one query however many requests miss the same id at once), then a
//! compare-and-set fill for the next reader.
//!
//! Writes: validated with the shared parsers, committed in PostgreSQL (one autocommitted statement),
//! then written through to Redis with the same compare-and-set. A write is acknowledged once it is
//! committed: if the write-through fails, change capture applies the change from the outbox.

use std::sync::Arc;
use std::time::Instant;

use aside_shared::cache::{CacheEntry, CachedProfile, Projection};
use aside_shared::headers::{CacheStatus, ETAG, SERVER_TIMING, ServerTiming, X_CACHE, format_etag};
use aside_shared::{ApiError, FieldSelection, ProfileInput, ProfilePatch, UserId};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::openapi::schemas::{
    BodyErrors, ErrorBody, ProfileInput as ProfileInputDoc, ProfilePatch as ProfilePatchDoc,
    Unauthorized, Unavailable, UserProfile as UserProfileDoc,
};
use super::{AppState, Error, Limits, LoadResult};
use crate::cache::Lookup;
use crate::cache::fill::Stored;
use crate::db::DbError;
use crate::db::writes::{self, WriteError};
use crate::singleflight::Role;

/// Seconds a client should wait after a 503 caused by PostgreSQL.
const DB_RETRY_AFTER_SECS: u32 = 1;

/// `GET /users/{id}[?fields=a,b]`.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    summary = "Read a profile",
    description = "From Redis when cached (`x-cache: HIT`), else from PostgreSQL (`x-cache: MISS`), \
                   which also fills the cache; concurrent misses for one id share one query. A 404 \
                   may be answered from the cache too (a recently missing or deleted user).",
    params(
        ("id" = i64, Path, minimum = 1, maximum = 2147483647,
         description = "The user id, canonical decimal (no sign, no leading zero)"),
        ("fields" = Option<String>, Query, example = "email,department",
         description = "Comma-separated subset of full_name, gender, birth_date, department, email, \
                        username; the answer then has `id` and those fields only"),
    ),
    responses(
        (status = 200, description = "The profile (or the chosen fields)", body = UserProfileDoc,
         headers(
             ("x-cache" = String, description = "`HIT` (Redis) or `MISS` (PostgreSQL)"),
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
pub async fn get_user(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Error> {
    let id = path_id(&uri)?;
    let selection = FieldSelection::from_query(uri.query()).map_err(ApiError::invalid_query)?;
    let mut timing = ServerTiming::new();

    let started = Instant::now();
    // `Some((body, version))` for a profile, `None` for a cached "missing" or "deleted".
    let cached = match &selection {
        Some(sel) => state.cache.get_fields(id, sel).await.map(|p| match p {
            Projection::Present { body, version, .. } => Some((body, version)),
            Projection::Absent => None,
        }),
        None => state.cache.get(id).await.map(|entry| match entry {
            CacheEntry::Present(c) => Some((profile_json(&c), c.version)),
            CacheEntry::Missing(_) | CacheEntry::Deleted(_) => None,
        }),
    };
    timing.add("redis", ms_since(started));
    match cached {
        Lookup::Hit(found) => {
            crate::metrics::cache_result("hit");
            return Ok(match found {
                Some((body, version)) => with_etag(
                    json_response(StatusCode::OK, body, CacheStatus::Hit, &timing),
                    version,
                ),
                None => {
                    let mut response = Error(ApiError::user_not_found(id)).into_response();
                    mark(&mut response, CacheStatus::Hit, &timing);
                    response
                }
            });
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
                None => profile_json(&cached),
            };
            Ok(with_etag(
                json_response(StatusCode::OK, body, CacheStatus::Miss, &timing),
                cached.version,
            ))
        }
        None => Err(ApiError::user_not_found(id).into()),
    }
}

/// One PostgreSQL read for `id`, then the fill: the row, or a "missing" marker. A failed fill is
/// logged and counted, never returned: the reader still gets its answer.
async fn load_and_fill(state: &AppState, id: UserId) -> LoadResult {
    // A request that missed Redis just before another request's load filled it arrives here after
    // that load has finished and left the single-flight: look once more before querying, so a burst of
    // misses for one id costs one PostgreSQL query however the requests interleave.
    if let Lookup::Hit(entry) = state.cache.get(id).await {
        return Ok(match entry {
            CacheEntry::Present(cached) => Some(cached),
            CacheEntry::Missing(_) | CacheEntry::Deleted(_) => None,
        });
    }
    let row = crate::db::profile_by_id(&state.pool, id)
        .await
        .map_err(|e| db_error(id, e))?;
    #[cfg(feature = "test-hooks")]
    if let Some(delay) = crate::test_hooks::fill_delay() {
        tokio::time::sleep(delay).await;
    }
    let entry = match &row {
        Some(cached) => CacheEntry::Present(cached.clone()),
        None => CacheEntry::missing(crate::db::now_ms()),
    };
    let stored = state.cache.store_if_newer(id, &entry).await;
    crate::metrics::cache_fill(store_outcome(&stored));
    match stored {
        Ok(Stored::Written) if row.is_none() => recheck_after_missing(state, id).await,
        Ok(_) => {}
        Err(e) => tracing::debug!(%id, error = %e, "cache fill skipped"),
    }
    Ok(row)
}

/// Closes the race between caching "missing" and a row created meanwhile outside the API: change
/// capture writes a created row only over an existing entry, so a marker written after it looked would
/// hide the row for the marker's TTL. Reading again after the marker is in place catches any row
/// committed before now; any row committed later finds the marker and replaces it.
async fn recheck_after_missing(state: &AppState, id: UserId) {
    match crate::db::profile_by_id(&state.pool, id).await {
        Ok(Some(created)) => {
            if let Err(e) = state
                .cache
                .store_if_newer(id, &CacheEntry::Present(created))
                .await
            {
                tracing::debug!(%id, error = %e, "cache fill skipped");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(%id, error = %e, "re-check after caching missing failed"),
    }
}

/// `POST /users`: 201, `Location: /users/{id}`, the new profile.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    summary = "Create a profile",
    description = "Committed in PostgreSQL, then written through to Redis.",
    request_body(content = ProfileInputDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = UserProfileDoc,
         headers(
             ("x-cache" = String, description = "`BYPASS`: writes are not answered from a cache"),
             ("etag" = String, description = "The new row version, `\"<version>\"`"),
             ("cache-control" = String, description = "`no-store`"),
             ("location" = String, description = "`/users/{id}`"),
         )),
        BodyErrors,
        Unauthorized,
        Unavailable,
    ),
    security(("origin_token" = []))
)]
pub async fn create_user(
    State(state): State<Arc<AppState>>,
    Extension(limits): Extension<Limits>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = json_body(&headers, body, limits)?;
    let input = ProfileInput::from_json(&body, today()).map_err(ApiError::from)?;
    let created = writes::create(&state.pool, input)
        .await
        .map_err(|e| write_error("create", None, e))?;
    crate::metrics::write("create", "ok");
    let id = created.profile.id;
    write_through(&state, id, CacheEntry::Present(created.clone())).await;
    let mut response = with_etag(
        json_response(
            StatusCode::CREATED,
            profile_json(&created),
            CacheStatus::Bypass,
            &ServerTiming::new(),
        ),
        created.version,
    );
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/users/{id}")).expect("a path is a header value"),
    );
    Ok(response)
}

/// `PUT /users/{id}`: replaces every field; 200 and the profile.
#[utoipa::path(
    put,
    path = "/users/{id}",
    tag = "users",
    summary = "Replace a profile",
    description = "Every field is replaced; committed in PostgreSQL, then written through to Redis.",
    params(("id" = i64, Path, minimum = 1, maximum = 2147483647, description = "The user id")),
    request_body(content = ProfileInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = UserProfileDoc,
         headers(
             ("x-cache" = String, description = "`BYPASS`: writes are not answered from a cache"),
             ("etag" = String, description = "The new row version, `\"<version>\"`"),
             ("cache-control" = String, description = "`no-store`"),
         )),
        BodyErrors,
        Unauthorized,
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody),
        Unavailable,
    ),
    security(("origin_token" = []))
)]
pub async fn replace_user(
    State(state): State<Arc<AppState>>,
    Extension(limits): Extension<Limits>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let id = path_id(&uri)?;
    let body = json_body(&headers, body, limits)?;
    let input = ProfileInput::from_json(&body, today()).map_err(ApiError::from)?;
    let replaced = writes::replace(&state.pool, id, input)
        .await
        .map_err(|e| write_error("replace", Some(id), e))?;
    crate::metrics::write("replace", "ok");
    write_through(&state, id, CacheEntry::Present(replaced.clone())).await;
    Ok(written(&replaced))
}

/// `PATCH /users/{id}`: changes the fields the body has; 200 and the whole profile.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    summary = "Change some fields of a profile",
    description = "Only the fields in the body change; committed in PostgreSQL, then written through \
                   to Redis. Answers the whole profile.",
    params(("id" = i64, Path, minimum = 1, maximum = 2147483647, description = "The user id")),
    request_body(content = ProfilePatchDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = UserProfileDoc,
         headers(
             ("x-cache" = String, description = "`BYPASS`: writes are not answered from a cache"),
             ("etag" = String, description = "The new row version, `\"<version>\"`"),
             ("cache-control" = String, description = "`no-store`"),
         )),
        BodyErrors,
        Unauthorized,
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody),
        Unavailable,
    ),
    security(("origin_token" = []))
)]
pub async fn update_user(
    State(state): State<Arc<AppState>>,
    Extension(limits): Extension<Limits>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let id = path_id(&uri)?;
    let body = json_body(&headers, body, limits)?;
    let patch = ProfilePatch::from_json(&body, today()).map_err(ApiError::from)?;
    let updated = writes::patch(&state.pool, id, &patch)
        .await
        .map_err(|e| write_error("update", Some(id), e))?;
    crate::metrics::write("update", "ok");
    write_through(&state, id, CacheEntry::Present(updated.clone())).await;
    Ok(written(&updated))
}

/// `DELETE /users/{id}`: 204 with `etag` = the version the row had (its tombstone's); leaves a
/// tombstone in Redis.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    summary = "Delete a profile",
    description = "Deleted in PostgreSQL; a tombstone in Redis keeps older copies from coming back.",
    params(("id" = i64, Path, minimum = 1, maximum = 2147483647, description = "The user id")),
    responses(
        (status = 204, description = "Deleted",
         headers(
             ("x-cache" = String, description = "`BYPASS`"),
             ("etag" = String, description = "The version the row had, `\"<version>\"`"),
             ("cache-control" = String, description = "`no-store`"),
         )),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        Unauthorized,
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody),
        Unavailable,
    ),
    security(("origin_token" = []))
)]
pub async fn delete_user(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, Error> {
    let id = path_id(&uri)?;
    let version = writes::delete(&state.pool, id)
        .await
        .map_err(|e| write_error("delete", Some(id), e))?;
    crate::metrics::write("delete", "ok");
    write_through(
        &state,
        id,
        CacheEntry::deleted(version, crate::db::now_ms()),
    )
    .await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    mark(&mut response, CacheStatus::Bypass, &ServerTiming::new());
    Ok(with_etag(response, version))
}

/// The id of `/users/{id}`, taken from the raw path so that percent-escapes and non-UTF-8 get the same
/// JSON 400 as any other bad id (the canonical id has no escapes).
fn path_id(uri: &Uri) -> Result<UserId, ApiError> {
    let raw_id = uri.path().strip_prefix("/users/").unwrap_or_default();
    UserId::parse(raw_id).map_err(ApiError::invalid_id)
}

/// The body of a write: `application/json` (415 otherwise), within the size limit (413).
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limits: Limits,
) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(limits.max_body_bytes)
        } else {
            ApiError::malformed_body("the body could not be read")
        }
    })
}

/// Writes a committed change to Redis. A failure is logged, not returned: the write is committed, and
/// change capture applies it from the outbox when Redis answers again.
async fn write_through(state: &AppState, id: UserId, entry: CacheEntry) {
    let stored = state.cache.store_if_newer(id, &entry).await;
    crate::metrics::write_through(store_outcome(&stored));
    if let Err(e) = stored {
        crate::metrics::write("write_through", "error");
        tracing::warn!(%id, error = %e, "write-through failed; change capture will apply the change");
    }
}

/// The `outcome` label of a fill or a write-through.
fn store_outcome(stored: &Result<Stored, crate::cache::CacheError>) -> &'static str {
    match stored {
        Ok(Stored::Written) => "written",
        Ok(Stored::KeptNewer) => "kept_newer",
        Ok(Stored::NotCached) => "not_cached",
        Err(_) => "error",
    }
}

fn write_error(op: &'static str, id: Option<UserId>, e: WriteError) -> ApiError {
    match e {
        WriteError::NotFound => {
            crate::metrics::write(op, "not_found");
            match id {
                Some(id) => ApiError::user_not_found(id),
                None => ApiError::internal(),
            }
        }
        WriteError::Conflict(field) => {
            crate::metrics::write(op, "conflict");
            ApiError::conflict(field)
        }
        WriteError::Db(e) => {
            crate::metrics::write(op, "error");
            match id {
                Some(id) => db_error(id, e),
                None => {
                    tracing::error!(op, error = %e, "write failed");
                    match e {
                        DbError::Unavailable(_) => {
                            ApiError::unavailable("PostgreSQL", DB_RETRY_AFTER_SECS)
                        }
                        _ => ApiError::internal(),
                    }
                }
            }
        }
    }
}

fn db_error(id: UserId, e: DbError) -> ApiError {
    match e {
        DbError::Unavailable(detail) => {
            tracing::warn!(%id, error = %detail, "PostgreSQL unavailable");
            ApiError::unavailable("PostgreSQL", DB_RETRY_AFTER_SECS)
        }
        other => {
            tracing::error!(%id, error = %other, "profile query failed");
            ApiError::internal()
        }
    }
}

/// Today's date (UTC) for the birth-date check.
fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

fn profile_json(cached: &CachedProfile) -> serde_json::Value {
    serde_json::to_value(&cached.profile).expect("profiles serialise")
}

/// 200 with the written profile and its version, `x-cache: BYPASS`.
fn written(cached: &CachedProfile) -> Response {
    with_etag(
        json_response(
            StatusCode::OK,
            profile_json(cached),
            CacheStatus::Bypass,
            &ServerTiming::new(),
        ),
        cached.version,
    )
}

/// `etag: "<version>"`: the row version the answer was taken from (see `aside_shared::headers::ETAG`).
fn with_etag(mut response: Response, version: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format_etag(version)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

fn json_response(
    status: StatusCode,
    body: impl serde::Serialize,
    source: CacheStatus,
    timing: &ServerTiming,
) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    mark(&mut response, source, timing);
    response
}

/// `x-cache`, `server-timing` (when a tier was visited) and `cache-control: no-store`.
fn mark(response: &mut Response, source: CacheStatus, timing: &ServerTiming) {
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(source.as_str()));
    if !timing.is_empty()
        && let Ok(v) = HeaderValue::from_str(timing.as_str())
    {
        headers.insert(SERVER_TIMING, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
