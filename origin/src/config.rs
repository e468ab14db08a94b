//! Configuration: every setting is a flag with an `ASIDE_*` environment variable, documented in
//! `--help`. Defaults are for local development only; nothing secret has a default.
//!
//! Secrets (connection URLs that carry passwords, bearer tokens) are held in [`Secret`], whose `Debug`
//! and `Display` print `[redacted]`, and each can also be read from a file (`..._FILE`) so that
//! orchestrators can mount them instead of putting them in the environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads a secret given directly or through a file; the file wins if both are set.
fn secret_from(
    value: Option<&str>,
    file: Option<&PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} from {}", path.display()))?;
        let text = text.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!text.is_empty(), "{what} file {} is empty", path.display());
        return Ok(Some(Secret::new(text)));
    }
    Ok(value.filter(|v| !v.is_empty()).map(Secret::new))
}

/// Where an URL points, without user name or password: `scheme://host:port/path`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path())
        }
        Err(_) => "[unparsable url]".to_string(),
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL (`postgres://user:password@host:port/dbname`). Holds a password, so
    /// prefer --database-url-file in production. Never logged.
    #[arg(long, env = "ASIDE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

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
            self.database_url.as_deref(),
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

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL with the `origin` ACL user (`redis://origin:password@host:port`). Holds a password, so
    /// prefer --redis-url-file in production. Never logged.
    #[arg(long, env = "ASIDE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// File holding the Redis URL.
    #[arg(long, env = "ASIDE_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,

    /// Timeout for connecting to Redis, in ms.
    #[arg(long, env = "ASIDE_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 250)]
    pub redis_connect_timeout_ms: u64,

    /// Timeout for one Redis command (or pipeline), in ms.
    #[arg(long, env = "ASIDE_REDIS_COMMAND_TIMEOUT_MS", default_value_t = 250)]
    pub redis_command_timeout_ms: u64,

    /// After a Redis failure, skip Redis for this long (ms) before probing it again, so that a dead Redis
    /// costs requests nothing.
    #[arg(long, env = "ASIDE_REDIS_BACKOFF_MS", default_value_t = 1000)]
    pub redis_backoff_ms: u64,
}

impl RedisArgs {
    pub fn url(&self) -> anyhow::Result<Secret> {
        secret_from(
            self.redis_url.as_deref(),
            self.redis_url_file.as_ref(),
            "the Redis URL",
        )?
        .context("no Redis configured: set ASIDE_REDIS_URL (or ASIDE_REDIS_URL_FILE)")
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Address to listen on. Loopback by default: put a proxy or the edge in front.
    #[arg(long, env = "ASIDE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Lifetime of a cached profile, in seconds, before jitter.
    #[arg(long, env = "ASIDE_CACHE_TTL_SECS", default_value_t = aside_shared::cache::DEFAULT_TTL_SECS)]
    pub cache_ttl_secs: u64,

    /// Random spread applied to each TTL, in percent (10 = ±10 %), so keys filled together do not
    /// expire together.
    #[arg(long, env = "ASIDE_CACHE_TTL_JITTER_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=50))]
    pub cache_ttl_jitter_percent: u8,

    /// Lifetime of a "missing" marker (a cached 404 for an id with no row), in seconds.
    #[arg(long, env = "ASIDE_MISSING_TTL_SECS", default_value_t = aside_shared::cache::DEFAULT_MISSING_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub missing_ttl_secs: u64,

    /// Lifetime of the tombstone a delete leaves in Redis, in seconds. It must outlast any read-path fill
    /// still in flight when the row is deleted (a fill is bounded by the request timeout).
    #[arg(long, env = "ASIDE_TOMBSTONE_TTL_SECS", default_value_t = aside_shared::cache::DEFAULT_TOMBSTONE_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub tombstone_ttl_secs: u64,

    #[command(flatten)]
    pub changes: ChangeCaptureArgs,

    /// Bearer token(s) required on /users routes, comma-separated (two during a rotation). Without one
    /// the API is open: fine on loopback for development, never in production.
    #[arg(
        long,
        env = "ASIDE_ORIGIN_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub token: Vec<String>,

    /// File holding the bearer token(s), one per line.
    #[arg(long, env = "ASIDE_ORIGIN_TOKENS_FILE")]
    pub token_file: Option<PathBuf>,

    /// Longest time a request may take end to end before it is answered 503, in ms.
    #[arg(long, env = "ASIDE_REQUEST_TIMEOUT_MS", default_value_t = 2000)]
    pub request_timeout_ms: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ASIDE_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Log format.
    #[arg(long, env = "ASIDE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,

    /// `off` is a diagnostic and benchmark mode: every read goes to PostgreSQL, nothing is read from or
    /// written to Redis, and change capture does not run (an origin in this mode must not take the
    /// outbox over from one that fills Redis). The Redis URL is still required, though never used.
    #[arg(long, env = "ASIDE_CACHE", value_enum, default_value = "on")]
    pub cache: CacheMode,
}

/// Whether the origin uses Redis at all (see `ServeArgs::cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheMode {
    On,
    Off,
}

/// Change capture: applying the `devops_api.user_changes` outbox to Redis.
#[derive(Debug, Clone, Args)]
pub struct ChangeCaptureArgs {
    /// Safety re-scan of the outbox when no notification came, in ms (notifications wake the origin at
    /// once; the re-scan catches up after Redis or the listening connection was away).
    #[arg(long, env = "ASIDE_CHANGE_RESCAN_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub change_rescan_ms: u64,

    /// How often an origin that is not applying changes tries to take over from the one that is, in ms.
    #[arg(long, env = "ASIDE_CHANGE_TAKEOVER_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub change_takeover_ms: u64,

    /// Applied outbox rows older than this are deleted, in seconds. At least the tombstone TTL: a row
    /// re-created with a deleted row's id continues that row's versions from the outbox.
    #[arg(long, env = "ASIDE_CHANGE_RETENTION_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub change_retention_secs: u64,

    /// Outbox rows read per batch.
    #[arg(long, env = "ASIDE_CHANGE_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub change_batch: i64,
}

impl ChangeCaptureArgs {
    pub fn rescan(&self) -> Duration {
        Duration::from_millis(self.change_rescan_ms)
    }

    pub fn takeover(&self) -> Duration {
        Duration::from_millis(self.change_takeover_ms)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.change_retention_secs)
    }
}

impl ServeArgs {
    /// How long each kind of cache entry lives.
    pub fn ttls(&self) -> anyhow::Result<crate::cache::Ttls> {
        anyhow::ensure!(
            self.changes.change_retention_secs >= self.tombstone_ttl_secs,
            "ASIDE_CHANGE_RETENTION_SECS ({}) must be at least ASIDE_TOMBSTONE_TTL_SECS ({})",
            self.changes.change_retention_secs,
            self.tombstone_ttl_secs
        );
        Ok(crate::cache::Ttls {
            profile: Duration::from_secs(self.cache_ttl_secs),
            jitter_percent: self.cache_ttl_jitter_percent,
            missing: Duration::from_secs(self.missing_ttl_secs),
            tombstone: Duration::from_secs(self.tombstone_ttl_secs),
        })
    }

    /// The accepted bearer tokens (empty: no authentication).
    pub fn tokens(&self) -> anyhow::Result<Vec<Secret>> {
        let mut tokens: Vec<Secret> = self
            .token
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .collect();
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read tokens from {}", path.display()))?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(Secret::new),
            );
        }
        for t in &tokens {
            anyhow::ensure!(
                t.expose().len() >= 16,
                "an origin token must be at least 16 characters"
            );
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            url: Secret,
        }
        let h = Holder { url: s };
        assert!(!format!("{h:?}").contains("hunter2"));
    }

    #[test]
    fn redacted_urls_keep_only_where_they_point() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5433/aside"),
            "postgres://db.internal:5433/aside"
        );
        assert_eq!(
            redact_url("redis://origin:pw@127.0.0.1:6380"),
            "redis://127.0.0.1:6380"
        );
        assert_eq!(redact_url("host=x password=y"), "[unparsable url]");
    }

    #[test]
    fn secret_files_win_and_lose_their_newline() {
        let dir = std::env::temp_dir().join(format!("aside-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "redis://u:p@h:1\n").unwrap();
        let s = secret_from(Some("ignored"), Some(&file), "x")
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "redis://u:p@h:1");
        std::fs::write(&file, "").unwrap();
        assert!(secret_from(None, Some(&file), "x").is_err());
        assert_eq!(secret_from(Some(""), None, "x").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
