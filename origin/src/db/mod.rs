//! PostgreSQL: the connection pool and the profile queries. Writes live in [`writes`], the change
//! outbox in [`changes`], migrations in [`migrations`].

pub mod changes;
pub mod grants;
pub mod guard;
pub mod migrations;
pub mod settings;
pub mod writes;

use std::time::Duration;

use aside_shared::cache::CachedProfile;
use aside_shared::{
    BirthDate, Department, Email, FullName, Gender, UserId, UserProfile, Username, ValidationError,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::secret::Secret;
pub use settings::DatabaseArgs;

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL is down, too slow, or the pool is exhausted: the caller answers 503.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// A row that breaks the domain rules (written by some other tool): a server-side problem.
    #[error("row {id} is invalid: {source}")]
    InvalidRow { id: UserId, source: ValidationError },
    /// Any other database error (a bug, a missing migration).
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    /// Logs a failed query for profile `id` at the level it deserves: a call skipped by the open
    /// circuit breaker is routine while PostgreSQL is away, an outage is a warning, anything else an
    /// error.
    pub fn log(&self, id: UserId) {
        match self {
            DbError::Unavailable(detail) if detail == guard::SKIPPED => {
                tracing::debug!(%id, "PostgreSQL skipped (circuit breaker open)");
            }
            DbError::Unavailable(detail) => {
                tracing::warn!(%id, error = %detail, "PostgreSQL unavailable");
            }
            other => tracing::error!(%id, error = %other, "profile query failed"),
        }
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => DbError::Unavailable(error_chain(&other)),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let timed_out = e.code() == Some(&SqlState::QUERY_CANCELED);
        let down = e.is_closed()
            || e.code().is_none()
            || e.code().is_some_and(|c| {
                c.code().starts_with("08") // connection exceptions
                    || c.code().starts_with("57") // operator intervention (shutdown, cancel)
                    || c == &SqlState::TOO_MANY_CONNECTIONS
            });
        if timed_out || down {
            DbError::Unavailable(error_chain(&e))
        } else {
            DbError::Other(error_chain(&e))
        }
    }
}

/// An error with its causes, `outer: inner: ...`. tokio-postgres's own message is only the kind ("db
/// error", "error connecting to server"); what PostgreSQL said (e.g. "password authentication failed
/// for user ...", never the password) is in its source.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Builds the pool. Connections are made lazily, so the service starts even while PostgreSQL is down;
/// each one carries `statement_timeout` and `application_name`.
pub fn pool(url: &Secret, args: &DatabaseArgs) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(|_| {
        anyhow::anyhow!("the database URL is not a valid PostgreSQL connection string")
    })?;
    config.connect_timeout(args.pool_timeout());
    config.application_name("aside-origin");
    config.options(format!(
        "-c statement_timeout={}",
        args.statement_timeout().as_millis()
    ));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(args.pool_timeout());
    Ok(Pool::builder(manager)
        .max_size(args.db_pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()?)
}

/// One plain connection (for migrations and seeding), with the pool's connect timeout.
pub async fn connect(
    url: &Secret,
    connect_timeout: Duration,
) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(|_| {
        anyhow::anyhow!("the database URL is not a valid PostgreSQL connection string")
    })?;
    config.connect_timeout(connect_timeout);
    config.application_name("aside-origin");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL: {}", error_chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The columns [`profile_from_row`] reads, in its order.
pub(crate) const PROFILE_COLUMNS: &str =
    "full_name, gender, birth_date, department, email, username, version";

const PROFILE_BY_ID: &str = "SELECT full_name, gender, birth_date, department, email, username, version \
     FROM devops_api.users WHERE id = $1";

/// Loads one profile with its row version; `None` when no row has that id.
pub async fn profile_by_id(pool: &Pool, id: UserId) -> Result<Option<CachedProfile>, DbError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(PROFILE_BY_ID).await?;
    crate::metrics::db_query("profile_by_id");
    let Some(row) = client.query_opt(&statement, &[&id.get()]).await? else {
        return Ok(None);
    };
    profile_from_row(id, &row, 0).map(Some)
}

/// Parses [`PROFILE_COLUMNS`], starting at column `first`, with the domain parsers.
pub(crate) fn profile_from_row(
    id: UserId,
    row: &tokio_postgres::Row,
    first: usize,
) -> Result<CachedProfile, DbError> {
    let invalid = |source| DbError::InvalidRow { id, source };
    let gender: String = row.try_get(first + 1)?;
    let profile = UserProfile {
        id,
        full_name: FullName::parse(row.try_get(first)?).map_err(invalid)?,
        gender: Gender::parse(gender.trim_end()).map_err(invalid)?,
        birth_date: BirthDate::from_date(row.try_get(first + 2)?).map_err(invalid)?,
        department: Department::parse(row.try_get(first + 3)?).map_err(invalid)?,
        email: Email::parse(row.try_get(first + 4)?).map_err(invalid)?,
        username: Username::parse(row.try_get(first + 5)?).map_err(invalid)?,
    };
    Ok(CachedProfile {
        profile,
        version: row.try_get(first + 6)?,
        filled_at_ms: crate::clock::now_ms(),
        freshness: None,
    })
}

/// `SELECT 1` within the pool's timeouts: is PostgreSQL answering?
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
