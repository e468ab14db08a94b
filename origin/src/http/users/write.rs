//! The writes: `POST`, `PUT`, `PATCH` and `DELETE /users[/{id}]`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use aside_shared::cache::{CacheEntry, CachedProfile};
use aside_shared::headers::{CacheStatus, ServerTiming};
use aside_shared::{
    ApiError, BodyError, ErrorBody, ProfileInput, ProfilePatch, UserId, UserProfile,
};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;

use super::response::{mark, with_etag, written};
use super::{path_id, postgres_unavailable};
use crate::cache::fill::Stored;
use crate::db::DbError;
use crate::db::writes::{self, Actor, WriteError};
use crate::http::openapi::schemas::{BodyErrors, Changed, Unauthorized, Unavailable};
use crate::http::{AppState, Error, Limits, auth};

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
    request: WriteRequest,
) -> Result<Response, Error> {
    let (_, headers, body) = request.into_json();
    let input = ProfileInput::from_json(&body?, today()).map_err(ApiError::from)?;
    let actor = auth::actor(&state, &headers);
    let write = writes::create(&state.pool, input, actor.as_deref());
    let created = commit(&state, "create", None, write).await?;
    let id = created.profile.id;
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
    responses(Changed, BodyErrors, Unauthorized, Unavailable),
    security(("origin_token" = []))
)]
pub async fn replace_user(
    State(state): State<Arc<AppState>>,
    request: WriteRequest,
) -> Result<Response, Error> {
    change_user(
        &state,
        request,
        "replace",
        ProfileInput::from_json,
        writes::replace,
    )
    .await
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
    responses(Changed, BodyErrors, Unauthorized, Unavailable),
    security(("origin_token" = []))
)]
pub async fn update_user(
    State(state): State<Arc<AppState>>,
    request: WriteRequest,
) -> Result<Response, Error> {
    let patch = async |pool: &Pool, id, patch: ProfilePatch, actor: Actor<'_>| {
        writes::patch(pool, id, &patch, actor).await
    };
    change_user(&state, request, "update", ProfilePatch::from_json, patch).await
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
        .map_err(|e| failed("delete", Some(id), e))?;
    crate::metrics::write("delete", "ok");
    write_through(
        &state,
        id,
        CacheEntry::deleted(version, crate::clock::now_ms()),
    )
    .await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    mark(&mut response, CacheStatus::Bypass, &ServerTiming::new());
    Ok(with_etag(response, version))
}

/// `PUT` and `PATCH /users/{id}`: the id, the body as `parse` reads it, then `write` committed as `op`;
/// 200 and the whole profile.
async fn change_user<P>(
    state: &AppState,
    request: WriteRequest,
    op: &'static str,
    parse: impl FnOnce(&[u8], time::Date) -> Result<P, BodyError>,
    write: impl AsyncFnOnce(&Pool, UserId, P, Actor<'_>) -> Result<CachedProfile, WriteError>,
) -> Result<Response, Error> {
    let (uri, headers, body) = request.into_json();
    let id = path_id(&uri)?;
    let change = parse(&body?, today()).map_err(ApiError::from)?;
    let actor = auth::actor(state, &headers);
    let write = write(&state.pool, id, change, actor.as_deref());
    Ok(written(state, &commit(state, op, Some(id), write).await?))
}

/// Commits one create, replace or update in PostgreSQL (through its breaker and deadline), gives the
/// new row its freshness and writes it through to Redis.
async fn commit(
    state: &AppState,
    op: &'static str,
    id: Option<UserId>,
    write: impl Future<Output = Result<CachedProfile, WriteError>>,
) -> Result<CachedProfile, ApiError> {
    let started = Instant::now();
    let committed = state.db.run(write).await.map_err(|e| failed(op, id, e))?;
    crate::metrics::write(op, "ok");
    let committed = state.cache.stamp(committed, started.elapsed());
    let entry = CacheEntry::Present(committed.clone());
    write_through(state, committed.profile.id, entry).await;
    Ok(committed)
}

/// What a write reads from its request: the path (for the id), the headers (content type, caller),
/// the body or why it could not be read, and the body limits.
pub struct WriteRequest {
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limits: Limits,
}

impl<S: Send + Sync> FromRequest<S> for WriteRequest {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let Extension(limits) = Extension::<Limits>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (uri, headers) = (parts.uri.clone(), parts.headers.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await;
        Ok(Self {
            uri,
            headers,
            body,
            limits,
        })
    }
}

impl WriteRequest {
    /// The path, the headers and the body as JSON ([`json_body`]), whose error the caller reports
    /// after the path's.
    fn into_json(self) -> (Uri, HeaderMap, Result<Bytes, ApiError>) {
        let body = json_body(&self.headers, self.body, self.limits);
        (self.uri, self.headers, body)
    }
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
    let stored = state.cache.store_change(id, &entry).await;
    crate::metrics::write_through(Stored::label(&stored));
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

/// A failed write: counted and logged ([`record_failure`]), then answered ([`write_error`]).
fn failed(op: &'static str, id: Option<UserId>, e: WriteError) -> ApiError {
    record_failure(op, id, &e);
    write_error(id, e)
}

/// The one place a failed write is counted and logged.
fn record_failure(op: &'static str, id: Option<UserId>, e: &WriteError) {
    match e {
        WriteError::NotFound => crate::metrics::write(op, "not_found"),
        WriteError::Conflict(_) => crate::metrics::write(op, "conflict"),
        WriteError::Db(e) => {
            crate::metrics::write(op, "error");
            match id {
                Some(id) => e.log(id),
                None => tracing::error!(op, error = %e, "write failed"),
            }
        }
    }
}

/// A failed write as the API's error: 404, 409, 503 while PostgreSQL is unavailable, else 500.
fn write_error(id: Option<UserId>, e: WriteError) -> ApiError {
    match e {
        WriteError::NotFound => id.map_or_else(ApiError::internal, ApiError::user_not_found),
        WriteError::Conflict(field) => ApiError::conflict(field),
        WriteError::Db(DbError::Unavailable(_)) => postgres_unavailable(),
        WriteError::Db(_) => ApiError::internal(),
    }
}

/// Today's date (UTC) for the birth-date check.
fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}
