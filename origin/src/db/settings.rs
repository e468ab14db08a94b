//! The PostgreSQL settings: where the database is and how the pool treats it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::secret::{Secret, secret_from};

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL (`postgres://user:password@host:port/dbname`). Holds a password, so
    /// prefer --database-url-file in production. Never logged.
    #[arg(long, env = "ASIDE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// File holding the PostgreSQL connection URL (e.g. a mounted secret).
    #[arg(long, env = "ASIDE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "ASIDE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// How long a request waits for a pooled connection (or for a new one to connect), in ms.
    #[arg(long, env = "ASIDE_DB_POOL_TIMEOUT_MS", default_value_t = 1000)]
    pub db_pool_timeout_ms: u64,

    /// PostgreSQL `statement_timeout` for the service's queries, in ms.
    #[arg(long, env = "ASIDE_DB_STATEMENT_TIMEOUT_MS", default_value_t = 1000)]
    pub db_statement_timeout_ms: u64,
}

impl DatabaseArgs {
    pub fn url(&self) -> anyhow::Result<Secret> {
        secret_from(
            self.database_url.as_ref(),
            self.database_url_file.as_ref(),
            "the database URL",
        )?
        .context("no database configured: set ASIDE_DATABASE_URL (or ASIDE_DATABASE_URL_FILE)")
    }

    pub fn pool_timeout(&self) -> Duration {
        Duration::from_millis(self.db_pool_timeout_ms)
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.db_statement_timeout_ms)
    }
}
