//! The API's writes: one autocommitted statement each, so a write is committed when its query returns
//! (and the change-capture triggers have recorded it in the same transaction).
//!
//! Each write returns the row as committed, with its new version, for the write-through.
//!
//! Each write also names its actor (who asked for it, see [`Actor`]) for the outbox's audit column:
//! the statement sets the transaction-local `aside.actor` itself (`FROM (SELECT set_config(...))`), so
//! the name goes with this one statement and no other, with no extra round trip (migration 0004).

use aside_shared::cache::CachedProfile;
use aside_shared::{ProfileInput, ProfilePatch, UserId};
use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::{DbError, PROFILE_COLUMNS, profile_from_row};
use crate::clock::now_ms;

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

/// Who asked for a write, as the audit records it: the edge's verified client (its token's subject),
/// `origin-token` for a direct caller of the origin, or `None` (an origin without tokens: the outbox
/// then records the PostgreSQL login).
pub type Actor<'a> = Option<&'a str>;

/// Sets `aside.actor` for the statement's transaction only; joined into each write below. The last
/// parameter of every write.
const SET_ACTOR: &str = "(SELECT set_config('aside.actor', $ACTOR::text, true)) AS actor";

const INSERT: &str = "INSERT INTO devops_api.users \
     (full_name, gender, birth_date, department, email, username) \
     SELECT $1::text, $2::text, $3::date, $4::text, $5::text, $6::text FROM $SET_ACTOR \
     RETURNING id, version";

const REPLACE: &str = "UPDATE devops_api.users \
     SET full_name = $2, gender = $3, birth_date = $4, department = $5, email = $6, username = $7 \
     FROM $SET_ACTOR WHERE id = $1 RETURNING version";

/// `COALESCE($n, column)`: a NULL parameter (a field the patch leaves out) keeps the column. One
/// statement, so a concurrent writer's change to another field is never lost to a read-modify-write.
const PATCH: &str = "UPDATE devops_api.users \
     SET full_name = COALESCE($2, full_name), gender = COALESCE($3, gender), \
         birth_date = COALESCE($4, birth_date), department = COALESCE($5, department), \
         email = COALESCE($6, email), username = COALESCE($7, username) \
     FROM $SET_ACTOR WHERE id = $1 RETURNING ";

const DELETE: &str =
    "DELETE FROM devops_api.users USING $SET_ACTOR WHERE id = $1 RETURNING version";

/// `statement` with [`SET_ACTOR`] in place, its parameter numbered `actor_param`.
fn with_actor(statement: &str, actor_param: usize) -> String {
    statement.replace(
        "$SET_ACTOR",
        &SET_ACTOR.replace("$ACTOR", &format!("${actor_param}")),
    )
}

/// `POST /users`: inserts the row and returns it with its new id and version.
pub async fn create(
    pool: &Pool,
    input: ProfileInput,
    actor: Actor<'_>,
) -> Result<CachedProfile, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&with_actor(INSERT, 7)).await?;
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
                &actor.unwrap_or(""),
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
    actor: Actor<'_>,
) -> Result<CachedProfile, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&with_actor(REPLACE, 8)).await?;
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
                &actor.unwrap_or(""),
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
    actor: Actor<'_>,
) -> Result<CachedProfile, WriteError> {
    if patch.is_empty() {
        return super::profile_by_id(pool, id)
            .await?
            .ok_or(WriteError::NotFound);
    }
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!("{}{PROFILE_COLUMNS}", with_actor(PATCH, 8)))
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
                &actor.unwrap_or(""),
            ],
        )
        .await?
        .ok_or(WriteError::NotFound)?;
    Ok(profile_from_row(id, &row, 0)?)
}

/// `DELETE /users/{id}`: returns the deleted row's last version (for its tombstone).
pub async fn delete(pool: &Pool, id: UserId, actor: Actor<'_>) -> Result<i64, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&with_actor(DELETE, 2)).await?;
    crate::metrics::db_query("delete_user");
    let row = client
        .query_opt(&statement, &[&id.get(), &actor.unwrap_or("")])
        .await?
        .ok_or(WriteError::NotFound)?;
    Ok(row.try_get(0)?)
}
