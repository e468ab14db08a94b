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

use aside_shared::Freshness;
use aside_shared::cache::{CacheEntry, CachedProfile, Projection};
use aside_shared::headers::{
    CacheControl, CacheStatus, ETAG, NO_CACHE, SERVER_TIMING, ServerTiming, X_CACHE, format_etag,
};
use aside_shared::{
    ApiError, ErrorBody, FieldSelection, ProfileInput, ProfilePatch, UserId, UserProfile,
};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::openapi::schemas::{BodyErrors, ProfileAnswer, Unauthorized, Unavailable};
use super::refresh::{self, Seen};
use super::{AppState, Error, Limits, LoadResult, auth};
use crate::cache::fill::Stored;
use crate::cache::{Lookup, Ttls};
use crate::db::DbError;
use crate::db::writes::{self, WriteError};
use crate::singleflight::Role;

/// Seconds a client should wait after a 503 caused by PostgreSQL.
const DB_RETRY_AFTER_SECS: u32 = 1;

/// A profile as the request found it in Redis: the answer's body (whole or projected), its version and
/// its freshness.
struct ProfileCopy {
    body: serde_json::Value,
    version: i64,
    freshness: Option<Freshness>,
}

/// What a Redis read found.
enum Found {
    Profile(ProfileCopy),
    /// A "missing" marker or a tombstone: 404.
    Absent,
}

/// Why the request asks for a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Redis has nothing (or something unusable).
    Miss,
    /// Redis could not be read.
    NoRedis,
    /// A soft-expired copy: refresh it; serve it STALE if PostgreSQL cannot answer.
    Stale,
    /// A fresh copy chosen by XFetch: refresh it now; serve the copy if the refresh fails.
    Early,
    /// `cache-control: no-cache` on the request.
    Reload,
}

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
    let reload = wants_reload(&headers);
    let mut timing = ServerTiming::new();

    let started = Instant::now();
    let cached = match &selection {
        Some(sel) => state.cache.get_fields(id, sel).await.map(|p| match p {
            Projection::Present {
                body,
                version,
                freshness,
            } => Found::Profile(ProfileCopy {
                body,
                version,
                freshness,
            }),
            Projection::Absent => Found::Absent,
        }),
        None => state.cache.get(id).await.map(|entry| match entry {
            CacheEntry::Present(c) => Found::Profile(ProfileCopy {
                body: profile_json(&c),
                version: c.version,
                freshness: c.freshness,
            }),
            CacheEntry::Missing(_) | CacheEntry::Deleted(_) => Found::Absent,
        }),
    };
    timing.add("redis", ms_since(started));
    let now = crate::db::now_ms();
    let (reason, copy) = match cached {
        Lookup::Hit(Found::Absent) => {
            crate::metrics::cache_result("hit");
            let mut response = Error(ApiError::user_not_found(id)).into_response();
            mark(&mut response, CacheStatus::Hit, &timing);
            return Ok(response);
        }
        Lookup::Hit(Found::Profile(copy)) => {
            let fresh = copy.freshness.is_none_or(|f| f.is_fresh(now));
            if reload {
                (Reason::Reload, copy)
            } else if !fresh {
                (Reason::Stale, copy)
            } else if !state.db.rejects_now()
                && due_early(copy.freshness, now, state.read.xfetch_beta)
            {
                crate::metrics::early_refresh();
                (Reason::Early, copy)
            } else {
                crate::metrics::cache_result("hit");
                return Ok(profile_response(&state, copy, CacheStatus::Hit, &timing));
            }
        }
        Lookup::Miss => {
            crate::metrics::cache_result("miss");
            return load_uncached(&state, id, selection.as_ref(), Reason::Miss, timing).await;
        }
        Lookup::Unavailable(_) => {
            crate::metrics::cache_result("error");
            return load_uncached(&state, id, selection.as_ref(), Reason::NoRedis, timing).await;
        }
    };

    // PostgreSQL's breaker is open: answer the copy now rather than wait behind a load that started
    // before it opened.
    if state.db.rejects_now() {
        return Ok(cached_fallback(&state, copy, &timing));
    }
    // A copy in hand: wait for its refresh only so long, then answer the copy.
    let seen = Seen::Profile {
        version: copy.version,
        fresh_until_ms: copy.freshness.map(|f| f.fresh_until_ms),
    };
    let started = Instant::now();
    let refreshed = tokio::time::timeout(
        state.read.refresh_wait,
        coalesced_load(&state, id, seen, true),
    )
    .await;
    timing.add("db", ms_since(started));
    match refreshed {
        Ok(Ok(Some(loaded))) => {
            crate::metrics::cache_result(if reason == Reason::Early {
                "hit"
            } else {
                "refreshed"
            });
            let status = if reason == Reason::Early {
                CacheStatus::Hit
            } else {
                CacheStatus::Miss
            };
            Ok(profile_response(
                &state,
                loaded_copy(&loaded, selection.as_ref()),
                status,
                &timing,
            ))
        }
        // Deleted meanwhile: PostgreSQL (or a tombstone written since) says so.
        Ok(Ok(None)) => Err(ApiError::user_not_found(id).into()),
        Ok(Err(e)) => {
            tracing::debug!(%id, ?reason, error = ?e.code, "refresh failed; answering the cached copy");
            Ok(cached_fallback(&state, copy, &timing))
        }
        Err(_) => {
            tracing::debug!(%id, ?reason, "refresh still running; answering the cached copy");
            Ok(cached_fallback(&state, copy, &timing))
        }
    }
}

/// A miss (or no Redis): the request has nothing to fall back on and waits for the load (bounded by
/// the PostgreSQL deadline and the request timeout).
async fn load_uncached(
    state: &Arc<AppState>,
    id: UserId,
    selection: Option<&FieldSelection>,
    reason: Reason,
    mut timing: ServerTiming,
) -> Result<Response, Error> {
    if state.db.rejects_now() {
        return Err(db_error(id, DbError::Unavailable(crate::db::guard::SKIPPED.into())).into());
    }
    let started = Instant::now();
    let loaded = coalesced_load(state, id, Seen::Nothing, reason != Reason::NoRedis).await;
    timing.add("db", ms_since(started));
    match loaded? {
        Some(loaded) => Ok(profile_response(
            state,
            loaded_copy(&loaded, selection),
            CacheStatus::Miss,
            &timing,
        )),
        None => Err(ApiError::user_not_found(id).into()),
    }
}

/// The id's load, shared by every concurrent request of this origin (see [`refresh::load`]).
async fn coalesced_load(
    state: &Arc<AppState>,
    id: UserId,
    seen: Seen,
    via_redis: bool,
) -> LoadResult {
    let loader = Arc::clone(state);
    let (loaded, role) = state
        .loads
        .run(id, move || refresh::load(loader, id, seen, via_redis))
        .await;
    if role == Role::Follower {
        crate::metrics::coalesced();
    }
    loaded
}

/// The cached copy, when its refresh failed or is late: `HIT` if still fresh, else `STALE`.
fn cached_fallback(state: &AppState, copy: ProfileCopy, timing: &ServerTiming) -> Response {
    let fresh = copy
        .freshness
        .is_none_or(|f| f.is_fresh(crate::db::now_ms()));
    if fresh {
        crate::metrics::cache_result("hit");
        profile_response(state, copy, CacheStatus::Hit, timing)
    } else {
        crate::metrics::cache_result("stale");
        profile_response(state, copy, CacheStatus::Stale, timing)
    }
}

/// A loaded profile as an answer body (projected for `?fields`).
fn loaded_copy(loaded: &CachedProfile, selection: Option<&FieldSelection>) -> ProfileCopy {
    ProfileCopy {
        body: match selection {
            Some(sel) => sel.project(&loaded.profile),
            None => profile_json(loaded),
        },
        version: loaded.version,
        freshness: loaded.freshness,
    }
}

/// Is this fresh copy picked for an early refresh (XFetch, see [`Freshness::refresh_early`])?
fn due_early(freshness: Option<Freshness>, now_ms: i64, beta: f64) -> bool {
    // refresh_early wants u in (0, 1]; random() is in [0, 1).
    let unit = 1.0 - rand::random::<f64>();
    freshness.is_some_and(|f| f.refresh_early(now_ms, beta, unit))
}

/// Does the request carry `cache-control: no-cache` (reload from PostgreSQL)?
fn wants_reload(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case(NO_CACHE))
}

/// 200 with a profile: `x-cache`, `etag`, and `cache-control` from the copy's freshness.
fn profile_response(
    state: &AppState,
    copy: ProfileCopy,
    source: CacheStatus,
    timing: &ServerTiming,
) -> Response {
    let control = cache_control(copy.freshness, crate::db::now_ms(), state.cache.ttls());
    with_cache_control(
        with_etag(
            json_response(StatusCode::OK, copy.body, source, timing),
            copy.version,
        ),
        control,
    )
}

/// `max-age`: seconds until the soft expiry (0 once stale); `stale-if-error`: seconds from then until
/// the hard expiry (the soft one plus the stale window). A copy of unknown freshness (straight from
/// PostgreSQL with no fill, or written by an older origin) gets the configured soft TTL and window.
pub(crate) fn cache_control(
    freshness: Option<Freshness>,
    now_ms: i64,
    ttls: &Ttls,
) -> CacheControl {
    match freshness {
        None => CacheControl {
            max_age_secs: ttls.profile.as_secs(),
            stale_if_error_secs: ttls.stale.as_secs(),
        },
        Some(f) => {
            let stale_ms = i64::try_from(ttls.stale.as_millis()).unwrap_or(i64::MAX);
            let hard = f.fresh_until_ms.saturating_add(stale_ms);
            let fresh_left = f.fresh_until_ms.saturating_sub(now_ms).max(0);
            let stale_left = hard.saturating_sub(now_ms.max(f.fresh_until_ms)).max(0);
            CacheControl {
                max_age_secs: (fresh_left / 1000) as u64,
                stale_if_error_secs: (stale_left / 1000) as u64,
            }
        }
    }
}

fn with_cache_control(mut response: Response, control: CacheControl) -> Response {
    if let Ok(value) = HeaderValue::from_str(&control.format()) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// `POST /users`: 201, `Location: /users/{id}`, the new profile.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    summary = "Create a profile",
    description = "Committed in PostgreSQL, then written through to Redis.",
    request_body(content = ProfileInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = UserProfile,
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
    let started = Instant::now();
    let created = state
        .db
        .run(writes::create(
            &state.pool,
            input,
            auth::actor(&state, &headers).as_deref(),
        ))
        .await
        .map_err(|e| write_error("create", None, e))?;
    crate::metrics::write("create", "ok");
    let created = state.cache.stamp(created, started.elapsed());
    let id = created.profile.id;
    write_through(&state, id, CacheEntry::Present(created.clone())).await;
    let mut response = written(&state, &created);
    *response.status_mut() = StatusCode::CREATED;
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
    params(("id" = UserId, Path, description = "The user id")),
    request_body(content = ProfileInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = UserProfile,
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
    let started = Instant::now();
    let replaced = state
        .db
        .run(writes::replace(
            &state.pool,
            id,
            input,
            auth::actor(&state, &headers).as_deref(),
        ))
        .await
        .map_err(|e| write_error("replace", Some(id), e))?;
    crate::metrics::write("replace", "ok");
    let replaced = state.cache.stamp(replaced, started.elapsed());
    write_through(&state, id, CacheEntry::Present(replaced.clone())).await;
    Ok(written(&state, &replaced))
}

/// `PATCH /users/{id}`: changes the fields the body has; 200 and the whole profile.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    summary = "Change some fields of a profile",
    description = "Only the fields in the body change; committed in PostgreSQL, then written through \
                   to Redis. Answers the whole profile.",
    params(("id" = UserId, Path, description = "The user id")),
    request_body(content = ProfilePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = UserProfile,
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
    let started = Instant::now();
    let updated = state
        .db
        .run(writes::patch(
            &state.pool,
            id,
            &patch,
            auth::actor(&state, &headers).as_deref(),
        ))
        .await
        .map_err(|e| write_error("update", Some(id), e))?;
    crate::metrics::write("update", "ok");
    let updated = state.cache.stamp(updated, started.elapsed());
    write_through(&state, id, CacheEntry::Present(updated.clone())).await;
    Ok(written(&state, &updated))
}

/// `DELETE /users/{id}`: 204 with `etag` = the version the row had (its tombstone's); leaves a
/// tombstone in Redis.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    summary = "Delete a profile",
    description = "Deleted in PostgreSQL; a tombstone in Redis keeps older copies from coming back.",
    params(("id" = UserId, Path, description = "The user id")),
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
pub async fn delete_user(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let id = path_id(&uri)?;
    let actor = auth::actor(&state, &headers);
    let version = state
        .db
        .run(writes::delete(&state.pool, id, actor.as_deref()))
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
    match stored {
        Err(e) => {
            crate::metrics::write("write_through", "error");
            tracing::warn!(%id, error = %e, "write-through failed; change capture will apply the change");
        }
        Ok(_) => {
            let wait = state.cache.wait_for_replica_timeout();
            if !wait.is_zero() {
                match state.cache.wait_for_replica(wait).await {
                    Ok(0) => {
                        tracing::debug!(%id, "no replica acknowledged the write-through in time")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%id, error = %e, "WAIT for a replica failed"),
                }
            }
        }
    }
}

/// The `outcome` label of a fill or a write-through.
pub(super) fn store_outcome(stored: &Result<Stored, crate::cache::CacheError>) -> &'static str {
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

pub(super) fn db_error(id: UserId, e: DbError) -> ApiError {
    match e {
        DbError::Unavailable(detail) => {
            if detail == crate::db::guard::SKIPPED {
                tracing::debug!(%id, "PostgreSQL skipped (circuit breaker open)");
            } else {
                tracing::warn!(%id, error = %detail, "PostgreSQL unavailable");
            }
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

/// 200 with the written profile, its version and its freshness (as written through), `x-cache: BYPASS`.
fn written(state: &AppState, cached: &CachedProfile) -> Response {
    let copy = ProfileCopy {
        body: profile_json(cached),
        version: cached.version,
        freshness: cached.freshness,
    };
    profile_response(state, copy, CacheStatus::Bypass, &ServerTiming::new())
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
