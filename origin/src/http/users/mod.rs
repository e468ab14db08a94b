//! `/users`: the profile API.
//!
//! * [`read`]: `GET /users/{id}`, the read-through path ([`crate::cache::read_through`]) as HTTP.
//! * [`write`]: the writes: validated with the shared parsers, committed in PostgreSQL (one
//!   autocommitted statement), then written through to Redis with the same compare-and-set as the
//!   fills. A write is acknowledged once it is committed: if the write-through fails, change capture
//!   applies the change from the outbox.
//! * [`response`]: the headers every profile answer carries (`x-cache`, `etag`, `cache-control`,
//!   `server-timing`).

pub mod read;
mod response;
pub mod write;

use aside_shared::{ApiError, UserId};
use axum::http::Uri;

use super::Error;
use crate::cache::read_through::ReadError;

/// Seconds a client should wait after a 503 caused by PostgreSQL.
const DB_RETRY_AFTER_SECS: u32 = 1;

/// The id of `/users/{id}`, taken from the raw path so that percent-escapes and non-UTF-8 get the same
/// JSON 400 as any other bad id (the canonical id has no escapes).
fn path_id(uri: &Uri) -> Result<UserId, ApiError> {
    let raw_id = uri.path().strip_prefix("/users/").unwrap_or_default();
    UserId::parse(raw_id).map_err(ApiError::invalid_id)
}

/// 503 with `Retry-After`: PostgreSQL could not answer.
fn postgres_unavailable() -> ApiError {
    ApiError::unavailable("PostgreSQL", DB_RETRY_AFTER_SECS)
}

/// A read that PostgreSQL could not answer (already logged by the read-through): 503 while it is
/// unavailable, 500 when its answer was unusable.
impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        Error(match e {
            ReadError::Unavailable => postgres_unavailable(),
            ReadError::Failed => ApiError::internal(),
        })
    }
}
