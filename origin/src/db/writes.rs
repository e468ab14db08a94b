//! The API's writes: one autocommitted statement each, so a write is committed when its query returns
//! (and the change-capture triggers have recorded it in the same transaction).
//!
//! Each write returns the row as committed, with its new version, for the write-through.

use aside_shared::cache::CachedProfile;
use aside_shared::{ProfileInput, ProfilePatch, UserId};
use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::{DbError, PROFILE_COLUMNS, now_ms, profile_from_row};

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No row has that id.
    #[error("no such user")]
    NotFound,
    /// Another row already has this value of a unique field (`username` or `email`).
    #[error("duplicate {0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let constraint = e.as_db_error().and_then(|d| d.constraint());
            match constraint {
                Some("users_username_key") => return WriteError::Conflict("username"),
                Some("users_email_key") => return WriteError::Conflict("email"),
                _ => {}
            }
        }
        WriteError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for WriteError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        WriteError::Db(e.into())
    }
}

const INSERT: &str = "INSERT INTO devops_api.users \
     (full_name, gender, birth_date, department, email, username) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, version";

const REPLACE: &str = "UPDATE devops_api.users \
     SET full_name = $2, gender = $3, birth_date = $4, department = $5, email = $6, username = $7 \
     WHERE id = $1 RETURNING version";

/// `COALESCE($n, column)`: a NULL parameter (a field the patch leaves out) keeps the column. One
/// statement, so a concurrent writer's change to another field is never lost to a read-modify-write.
const PATCH: &str = "UPDATE devops_api.users \
     SET full_name = COALESCE($2, full_name), gender = COALESCE($3, gender), \
         birth_date = COALESCE($4, birth_date), department = COALESCE($5, department), \
         email = COALESCE($6, email), username = COALESCE($7, username) \
     WHERE id = $1 RETURNING ";

const DELETE: &str = "DELETE FROM devops_api.users WHERE id = $1 RETURNING version";

/// `POST /users`: inserts the row and returns it with its new id and version.
pub async fn create(pool: &Pool, input: ProfileInput) -> Result<CachedProfile, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT).await?;
    crate::metrics::db_query("create_user");
    let row = client
        .query_one(
            &statement,
            &[
                &input.full_name.as_str(),
                &input.gender.as_str(),
                &input.birth_date.date(),
                &input.department.as_str(),
                &input.email.as_str(),
                &input.username.as_str(),
            ],
        )
        .await?;
    let id: i32 = row.try_get(0)?;
    let id = UserId::try_from(i64::from(id)).map_err(|e| DbError::Other(e.to_string()))?;
    Ok(CachedProfile {
        profile: input.into_profile(id),
        version: row.try_get(1)?,
        filled_at_ms: now_ms(),
        freshness: None,
    })
}

/// `PUT /users/{id}`: replaces every field.
pub async fn replace(
    pool: &Pool,
    id: UserId,
    input: ProfileInput,
) -> Result<CachedProfile, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(REPLACE).await?;
    crate::metrics::db_query("replace_user");
    let row = client
        .query_opt(
            &statement,
            &[
                &id.get(),
                &input.full_name.as_str(),
                &input.gender.as_str(),
                &input.birth_date.date(),
                &input.department.as_str(),
                &input.email.as_str(),
                &input.username.as_str(),
            ],
        )
        .await?
        .ok_or(WriteError::NotFound)?;
    Ok(CachedProfile {
        profile: input.into_profile(id),
        version: row.try_get(0)?,
        filled_at_ms: now_ms(),
        freshness: None,
    })
}

/// `PATCH /users/{id}`: changes the fields the patch has. An empty patch changes nothing (no new
/// version) and returns the row as it is.
pub async fn patch(
    pool: &Pool,
    id: UserId,
    patch: &ProfilePatch,
) -> Result<CachedProfile, WriteError> {
    if patch.is_empty() {
        return super::profile_by_id(pool, id)
            .await?
            .ok_or(WriteError::NotFound);
    }
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!("{PATCH}{PROFILE_COLUMNS}"))
        .await?;
    crate::metrics::db_query("patch_user");
    let row = client
        .query_opt(
            &statement,
            &[
                &id.get(),
                &patch.full_name.as_ref().map(|v| v.as_str()),
                &patch.gender.map(|v| v.as_str()),
                &patch.birth_date.map(|v| v.date()),
                &patch.department.as_ref().map(|v| v.as_str()),
                &patch.email.as_ref().map(|v| v.as_str()),
                &patch.username.as_ref().map(|v| v.as_str()),
            ],
        )
        .await?
        .ok_or(WriteError::NotFound)?;
    Ok(profile_from_row(id, &row, 0)?)
}

/// `DELETE /users/{id}`: returns the deleted row's last version (for its tombstone).
pub async fn delete(pool: &Pool, id: UserId) -> Result<i64, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(DELETE).await?;
    crate::metrics::db_query("delete_user");
    let row = client
        .query_opt(&statement, &[&id.get()])
        .await?
        .ok_or(WriteError::NotFound)?;
    Ok(row.try_get(0)?)
}
