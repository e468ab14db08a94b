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

/// So that clap parses secret flags and environment variables straight into a [`Secret`]: the parsed
/// arguments (`Cli`, `ServeArgs`) derive `Debug`, and must print no secret either.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Reads a secret given directly or through a file; the file wins if both are set.
fn secret_from(
    value: Option<&Secret>,
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
    Ok(value.filter(|v| !v.expose().is_empty()).cloned())
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

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL with the `origin` ACL user (`redis://origin:password@host:port`). Holds a password, so
    /// prefer --redis-url-file in production. Never logged.
    #[arg(long, env = "ASIDE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

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

    /// PEM file of the certificate authority (or authorities) that signed the Redis server's TLS
    /// certificate, for a private CA. Only with a `rediss://` URL; without it the system's roots are
    /// trusted (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`). When given, only it is trusted.
    #[arg(long, env = "ASIDE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM certificate (chain) the origin presents to Redis, for a Redis that requires client
    /// certificates (`tls-auth-clients yes`). Needs --redis-client-key-file and a `rediss://` URL.
    #[arg(long, env = "ASIDE_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,

    /// PEM private key of --redis-client-cert-file. A secret: mount it, mode 0600.
    #[arg(long, env = "ASIDE_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,

    /// Redis Sentinels (`host:port,host:port,...`) to ask for the primary, instead of ASIDE_REDIS_URL.
    /// The origin follows a failover (`+switch-master`, a `READONLY` reply, a lost connection).
    #[arg(long, env = "ASIDE_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The name the Sentinels monitor the primary under (`sentinel monitor <name> ...`).
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_MASTER", default_value = "aside")]
    pub redis_sentinel_master: String,

    /// The ACL user the origin logs in to the Sentinels as.
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_USERNAME")]
    pub redis_sentinel_username: Option<String>,

    /// Its password. Never logged; prefer --redis-sentinel-password-file.
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<Secret>,

    /// File holding the Sentinel password.
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_PASSWORD_FILE")]
    pub redis_sentinel_password_file: Option<PathBuf>,

    /// With Sentinels: the ACL user the origin logs in to the Redis nodes as.
    #[arg(long, env = "ASIDE_REDIS_USERNAME", default_value = "origin")]
    pub redis_username: String,

    /// With Sentinels: the password of --redis-username on the Redis nodes. Never logged; prefer
    /// --redis-password-file.
    #[arg(long, env = "ASIDE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// File holding the Redis password (with Sentinels).
    #[arg(long, env = "ASIDE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// After each write-through, wait up to this many ms for one replica to acknowledge it (`WAIT 1
    /// <ms>`); 0 (the default) does not wait. It narrows what a failover can lose of the last
    /// write-throughs (change capture's replay repairs it anyway, see docs/operations.md) at the cost of a
    /// replica round trip per write, and the whole wait while no replica is connected.
    #[arg(long, env = "ASIDE_REDIS_WAIT_REPLICAS_MS", default_value_t = 0)]
    pub redis_wait_replicas_ms: u64,

    /// With Sentinels: the logical database on the Redis nodes (with a URL, its path says it).
    #[arg(long, env = "ASIDE_REDIS_DB", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub redis_db: i64,

    /// With Sentinels: how often the origin asks them for the primary even without a sign of a
    /// failover, in ms (a `+switch-master` event, a `READONLY` reply or a failure asks at once).
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub redis_sentinel_poll_ms: u64,
}

/// Where the origin's Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis node (ASIDE_REDIS_URL).
    Url(Secret),
    /// The primary Sentinel names (ASIDE_REDIS_SENTINELS).
    Sentinel(SentinelTarget),
}

#[derive(Debug, Clone)]
pub struct SentinelTarget {
    /// `host:port` of each Sentinel.
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<Secret>,
    pub username: String,
    pub password: Option<Secret>,
    pub db: i64,
    pub poll: Duration,
}

impl RedisArgs {
    /// The Redis URL, or the Sentinels: one of the two.
    pub fn target(&self) -> anyhow::Result<RedisTarget> {
        let url = secret_from(
            self.redis_url.as_ref(),
            self.redis_url_file.as_ref(),
            "the Redis URL",
        )?;
        let sentinels: Vec<&String> = self
            .redis_sentinels
            .iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        match (url, sentinels.is_empty()) {
            (Some(_), false) => anyhow::bail!(
                "both ASIDE_REDIS_URL and ASIDE_REDIS_SENTINELS are set: give one (the Sentinels find the primary)"
            ),
            (Some(url), true) => Ok(RedisTarget::Url(url)),
            (None, true) => anyhow::bail!(
                "no Redis configured: set ASIDE_REDIS_URL (or ASIDE_REDIS_URL_FILE), or ASIDE_REDIS_SENTINELS"
            ),
            (None, false) => {
                anyhow::ensure!(
                    self.redis_ca_file.is_none() && self.redis_client_cert_file.is_none(),
                    "TLS to Redis (ASIDE_REDIS_CA_FILE, ASIDE_REDIS_CLIENT_CERT_FILE) is not supported \
                     with ASIDE_REDIS_SENTINELS yet: use ASIDE_REDIS_URL with rediss://"
                );
                anyhow::ensure!(
                    !self.redis_sentinel_master.is_empty(),
                    "ASIDE_REDIS_SENTINEL_MASTER is empty"
                );
                let sentinels = sentinels
                    .into_iter()
                    .map(|s| parse_host_port(s.trim()))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(RedisTarget::Sentinel(SentinelTarget {
                    sentinels,
                    master: self.redis_sentinel_master.clone(),
                    sentinel_username: self
                        .redis_sentinel_username
                        .clone()
                        .filter(|u| !u.is_empty()),
                    sentinel_password: secret_from(
                        self.redis_sentinel_password.as_ref(),
                        self.redis_sentinel_password_file.as_ref(),
                        "the Sentinel password",
                    )?,
                    username: self.redis_username.clone(),
                    password: secret_from(
                        self.redis_password.as_ref(),
                        self.redis_password_file.as_ref(),
                        "the Redis password",
                    )?,
                    db: self.redis_db,
                    poll: Duration::from_millis(self.redis_sentinel_poll_ms),
                }))
            }
        }
    }

    pub fn url(&self) -> anyhow::Result<Secret> {
        secret_from(
            self.redis_url.as_ref(),
            self.redis_url_file.as_ref(),
            "the Redis URL",
        )?
        .context("no Redis configured: set ASIDE_REDIS_URL (or ASIDE_REDIS_URL_FILE)")
    }
}

/// `host:port` (a Sentinel's address); the error quotes it (it holds no secret).
fn parse_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("ASIDE_REDIS_SENTINELS: {s:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("ASIDE_REDIS_SENTINELS: {s:?} has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "ASIDE_REDIS_SENTINELS: {s:?} has no host");
    Ok((host.to_string(), port))
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
    pub token: Vec<Secret>,

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

    #[command(flatten)]
    pub resilience: ResilienceArgs,

    /// Bearer token(s) for the admin routes (`/admin/...`, e.g. cache statistics), comma-separated.
    /// Without one the admin routes are not mounted at all (404, and absent from /openapi.json). Must
    /// differ from the origin tokens: the edge holds those and must not reach the admin routes.
    #[arg(
        long,
        env = "ASIDE_ADMIN_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub admin_token: Vec<Secret>,

    /// File holding the admin token(s), one per line.
    #[arg(long, env = "ASIDE_ADMIN_TOKENS_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Most header fields one request may have; more is answered 431 and the connection closed.
    #[arg(long, env = "ASIDE_MAX_HEADERS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1000))]
    pub max_headers: u16,

    /// Largest request head (request line and headers), in bytes; more is answered 431 and the connection
    /// closed. Also bounds the URI, so a `?fields` list can never be longer.
    #[arg(long, env = "ASIDE_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub max_header_bytes: u32,

    /// How long a client may take to send a request head, in ms; also how long an idle keep-alive
    /// connection is kept. A slower client is disconnected.
    #[arg(long, env = "ASIDE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub header_read_timeout_ms: u64,

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

    /// After a Redis failover, the outbox changes of this many seconds back are applied again onto the
    /// new primary (over the keys it holds), before the watermark moves on: with asynchronous
    /// replication the promoted replica may lack the old primary's last writes. Capped by
    /// ASIDE_CHANGE_RETENTION_SECS (what the outbox keeps).
    #[arg(long, env = "ASIDE_CHANGE_REPLAY_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub change_replay_secs: u64,
}

impl ChangeCaptureArgs {
    /// How far back a replay after a failover goes.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(self.change_replay_secs.min(self.change_retention_secs))
    }

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
    /// The server's per-connection limits. Shutdown waits at most one request timeout (plus a second)
    /// for requests in flight: none can take longer.
    pub fn connection_limits(&self) -> crate::http::server::ConnectionLimits {
        crate::http::server::ConnectionLimits {
            max_headers: usize::from(self.max_headers),
            max_header_bytes: self.max_header_bytes as usize,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            shutdown_grace: Duration::from_millis(self.request_timeout_ms) + Duration::from_secs(1),
        }
    }

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
            stale: Duration::from_secs(
                self.resilience
                    .cache_stale_ttl_secs
                    .unwrap_or(self.cache_ttl_secs),
            ),
        })
    }

    /// The accepted bearer tokens (empty: no authentication).
    pub fn tokens(&self) -> anyhow::Result<Vec<Secret>> {
        token_list(&self.token, self.token_file.as_ref(), "an origin token")
    }

    /// The admin bearer tokens (empty: no admin routes). None may also be an origin token.
    pub fn admin_tokens(&self) -> anyhow::Result<Vec<Secret>> {
        let admin = token_list(
            &self.admin_token,
            self.admin_token_file.as_ref(),
            "an admin token",
        )?;
        let origin = self.tokens()?;
        anyhow::ensure!(
            !admin.iter().any(|a| origin.contains(a)),
            "an admin token must not also be an origin token (ASIDE_ORIGIN_TOKENS): the edge holds those"
        );
        Ok(admin)
    }
}

/// Tokens given as values and, one per line, in a file; each at least 16 characters.
fn token_list(
    values: &[Secret],
    file: Option<&PathBuf>,
    what: &str,
) -> anyhow::Result<Vec<Secret>> {
    let mut tokens: Vec<Secret> = values
        .iter()
        .map(|t| t.expose().trim())
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .collect();
    if let Some(path) = file {
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
            "{what} must be at least 16 characters"
        );
    }
    Ok(tokens)
}

/// Resilience: stale-if-error, early refresh, fill leases across origins, circuit breakers.
#[derive(Debug, Clone, Args)]
pub struct ResilienceArgs {
    /// How long a profile is kept after its soft expiry (ASIDE_CACHE_TTL_SECS), in seconds: Redis drops
    /// the key at soft + this (the hard expiry). Meanwhile the copy is refreshed on the next read and
    /// served `x-cache: STALE` only when PostgreSQL cannot answer. Default: the soft TTL (hard = 2 ×
    /// soft); 0 never serves stale.
    #[arg(long, env = "ASIDE_CACHE_STALE_TTL_SECS", value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub cache_stale_ttl_secs: Option<u64>,

    /// XFetch early refresh: a fresh hit is refreshed now with a probability that grows as its soft
    /// expiry nears, scaled by this factor (> 1 refreshes earlier). 0 turns early refresh off.
    #[arg(long, env = "ASIDE_XFETCH_BETA", default_value_t = 1.0)]
    pub xfetch_beta: f64,

    /// How long a read holding a cached copy (soft-expired, or due for early refresh) waits for the
    /// refresh from PostgreSQL before it answers the copy, in ms.
    #[arg(long, env = "ASIDE_REFRESH_WAIT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh_wait_ms: u64,

    /// Lifetime of a fill lease (`user:lease:{id}`, SET NX PX), in ms: how long other origins defer to
    /// the holder's PostgreSQL query. Longer than the statement timeout; it also bounds how long a
    /// crashed holder's lease lingers.
    #[arg(long, env = "ASIDE_LEASE_TTL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub lease_ttl_ms: u64,

    /// How long an origin that did not get the lease waits for the holder's fill before it queries
    /// PostgreSQL itself, in ms (0: does not wait).
    #[arg(long, env = "ASIDE_LEASE_WAIT_MS", default_value_t = 500)]
    pub lease_wait_ms: u64,

    /// How often a waiting origin looks for the holder's fill (and whether the lease is free), in ms.
    #[arg(long, env = "ASIDE_LEASE_POLL_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_poll_ms: u64,

    /// Consecutive Redis failures that open its circuit breaker.
    #[arg(long, env = "ASIDE_REDIS_BREAKER_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub redis_breaker_failures: u32,

    /// Longest Redis back-off, in ms: each failed probe doubles ASIDE_REDIS_BACKOFF_MS up to this.
    #[arg(long, env = "ASIDE_REDIS_BACKOFF_MAX_MS", default_value_t = 5000)]
    pub redis_backoff_max_ms: u64,

    /// Consecutive PostgreSQL failures (unreachable, timed out) that open its circuit breaker. While it
    /// is open, misses get 503 at once and soft-expired copies are served STALE.
    #[arg(long, env = "ASIDE_DB_BREAKER_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_breaker_failures: u32,

    /// After the PostgreSQL breaker opens, skip PostgreSQL for this long (ms) before one probe.
    #[arg(long, env = "ASIDE_DB_BACKOFF_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_backoff_ms: u64,

    /// Longest PostgreSQL back-off, in ms: each failed probe doubles ASIDE_DB_BACKOFF_MS up to this.
    #[arg(long, env = "ASIDE_DB_BACKOFF_MAX_MS", default_value_t = 5000)]
    pub db_backoff_max_ms: u64,
}

impl ServeArgs {
    /// The read path's resilience settings, checked against each other and the timeouts.
    pub fn read_path(&self) -> anyhow::Result<crate::http::ReadPath> {
        let r = &self.resilience;
        anyhow::ensure!(
            r.xfetch_beta.is_finite() && r.xfetch_beta >= 0.0,
            "ASIDE_XFETCH_BETA must be a number >= 0 (0 turns early refresh off), not {}",
            r.xfetch_beta
        );
        anyhow::ensure!(
            r.lease_ttl_ms > self.database.db_statement_timeout_ms,
            "ASIDE_LEASE_TTL_MS ({}) must be longer than ASIDE_DB_STATEMENT_TIMEOUT_MS ({}): a lease \
             must outlive its holder's query",
            r.lease_ttl_ms,
            self.database.db_statement_timeout_ms
        );
        anyhow::ensure!(
            r.lease_wait_ms < self.request_timeout_ms,
            "ASIDE_LEASE_WAIT_MS ({}) must be shorter than ASIDE_REQUEST_TIMEOUT_MS ({})",
            r.lease_wait_ms,
            self.request_timeout_ms
        );
        anyhow::ensure!(
            r.lease_wait_ms == 0 || r.lease_poll_ms <= r.lease_wait_ms,
            "ASIDE_LEASE_POLL_MS ({}) must not exceed ASIDE_LEASE_WAIT_MS ({})",
            r.lease_poll_ms,
            r.lease_wait_ms
        );
        anyhow::ensure!(
            self.redis.redis_command_timeout_ms + r.refresh_wait_ms < self.request_timeout_ms,
            "ASIDE_REFRESH_WAIT_MS ({}) plus ASIDE_REDIS_COMMAND_TIMEOUT_MS ({}) must be shorter than \
             ASIDE_REQUEST_TIMEOUT_MS ({}), so that a request holding a stale copy answers it in time",
            r.refresh_wait_ms,
            self.redis.redis_command_timeout_ms,
            self.request_timeout_ms
        );
        Ok(crate::http::ReadPath {
            xfetch_beta: r.xfetch_beta,
            refresh_wait: Duration::from_millis(r.refresh_wait_ms),
            lease_ttl: Duration::from_millis(r.lease_ttl_ms),
            lease_wait: Duration::from_millis(r.lease_wait_ms),
            lease_poll: Duration::from_millis(r.lease_poll_ms),
        })
    }

    /// The Redis circuit breaker.
    pub fn redis_breaker(&self) -> anyhow::Result<crate::breaker::BreakerSettings> {
        breaker_settings(
            self.resilience.redis_breaker_failures,
            self.redis.redis_backoff_ms,
            self.resilience.redis_backoff_max_ms,
            "ASIDE_REDIS_BACKOFF_MS",
            "ASIDE_REDIS_BACKOFF_MAX_MS",
        )
    }

    /// The PostgreSQL circuit breaker.
    pub fn db_breaker(&self) -> anyhow::Result<crate::breaker::BreakerSettings> {
        breaker_settings(
            self.resilience.db_breaker_failures,
            self.resilience.db_backoff_ms,
            self.resilience.db_backoff_max_ms,
            "ASIDE_DB_BACKOFF_MS",
            "ASIDE_DB_BACKOFF_MAX_MS",
        )
    }
}

fn breaker_settings(
    failures: u32,
    backoff_ms: u64,
    max_ms: u64,
    backoff_name: &str,
    max_name: &str,
) -> anyhow::Result<crate::breaker::BreakerSettings> {
    anyhow::ensure!(
        max_ms >= backoff_ms,
        "{max_name} ({max_ms}) must be at least {backoff_name} ({backoff_ms})"
    );
    Ok(crate::breaker::BreakerSettings {
        failures,
        backoff: Duration::from_millis(backoff_ms),
        max_backoff: Duration::from_millis(max_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_args(extra: &[&str]) -> RedisArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            redis: RedisArgs,
        }
        let mut argv = vec!["test"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().redis
    }

    #[test]
    fn sentinels_or_a_url_but_not_both() {
        let target = redis_args(&[
            "--redis-sentinels",
            "s1:26379,[::1]:26380",
            "--redis-sentinel-password",
            "sentinel-secret-5",
            "--redis-password",
            "node-secret-6",
            "--redis-db",
            "3",
        ])
        .target()
        .unwrap();
        let RedisTarget::Sentinel(s) = target else {
            panic!("sentinel")
        };
        assert_eq!(
            s.sentinels,
            vec![("s1".to_string(), 26379), ("::1".to_string(), 26380)]
        );
        assert_eq!(
            (s.master.as_str(), s.username.as_str(), s.db),
            ("aside", "origin", 3)
        );
        assert_eq!(s.password.unwrap().expose(), "node-secret-6");
        let printed = format!("{:?}", redis_args(&["--redis-password", "node-secret-6"]));
        assert!(!printed.contains("node-secret-6"), "{printed}");

        let both = redis_args(&["--redis-url", "redis://h:1", "--redis-sentinels", "s:2"]);
        assert!(format!("{:#}", both.target().unwrap_err()).contains("both"));
        let none = redis_args(&[]);
        assert!(format!("{:#}", none.target().unwrap_err()).contains("no Redis configured"));
        for bad in ["nohost", "h:0", "h:x", ":26379"] {
            let e = redis_args(&["--redis-sentinels", bad])
                .target()
                .unwrap_err();
            assert!(
                format!("{e:#}").contains("ASIDE_REDIS_SENTINELS"),
                "{bad}: {e:#}"
            );
        }
        let url = redis_args(&["--redis-url", "redis://h:1"])
            .target()
            .unwrap();
        assert!(matches!(url, RedisTarget::Url(_)));
    }

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
    fn parsed_arguments_print_no_secret() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::parse_from([
            "aside-origin",
            "serve",
            "--database-url",
            "postgres://app:pg-secret-1@db:5432/aside",
            "--redis-url",
            "redis://origin:redis-secret-2@cache:6379",
            "--token",
            "token-secret-3-0123456789,token-secret-4-0123456789",
        ]);
        let printed = format!("{cli:?} {cli:#?}");
        for secret in [
            "pg-secret-1",
            "redis-secret-2",
            "token-secret-3",
            "token-secret-4",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.tokens().unwrap().len(), 2);
        assert_eq!(
            args.database.url().unwrap().expose(),
            "postgres://app:pg-secret-1@db:5432/aside"
        );
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
        let s = secret_from(Some(&Secret::new("ignored")), Some(&file), "x")
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "redis://u:p@h:1");
        std::fs::write(&file, "").unwrap();
        assert!(secret_from(None, Some(&file), "x").is_err());
        assert_eq!(
            secret_from(Some(&Secret::new("")), None, "x").unwrap(),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn serve(args: &[&str]) -> ServeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut argv = vec!["aside-origin"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn resilience_defaults_are_consistent() {
        let args = serve(&[]);
        let ttls = args.ttls().unwrap();
        assert_eq!(
            ttls.stale, ttls.profile,
            "hard expiry = 2 × soft by default"
        );
        let read = args.read_path().unwrap();
        assert_eq!(read.xfetch_beta, 1.0);
        assert!(read.lease_ttl > args.database.statement_timeout());
        assert!(read.lease_poll <= read.lease_wait);
        assert_eq!(args.redis_breaker().unwrap().failures, 3);
        assert_eq!(
            args.db_breaker().unwrap().max_backoff,
            Duration::from_secs(5)
        );
        let stale = serve(&["--cache-ttl-secs", "60", "--cache-stale-ttl-secs", "0"]);
        assert_eq!(stale.ttls().unwrap().stale, Duration::ZERO);
    }

    #[test]
    fn inconsistent_resilience_settings_are_refused_with_the_setting_named() {
        let cases: [(&[&str], &str); 6] = [
            (&["--xfetch-beta=-1"], "ASIDE_XFETCH_BETA"),
            (&["--xfetch-beta", "NaN"], "ASIDE_XFETCH_BETA"),
            (&["--lease-ttl-ms", "1000"], "ASIDE_LEASE_TTL_MS"),
            (&["--lease-wait-ms", "2000"], "ASIDE_LEASE_WAIT_MS"),
            (
                &["--lease-wait-ms", "10", "--lease-poll-ms", "20"],
                "ASIDE_LEASE_POLL_MS",
            ),
            (&["--refresh-wait-ms", "1800"], "ASIDE_REFRESH_WAIT_MS"),
        ];
        for (args, setting) in cases {
            let error = serve(args).read_path().unwrap_err().to_string();
            assert!(error.contains(setting), "{args:?}: {error}");
        }
        let error = serve(&["--db-backoff-max-ms", "10"])
            .db_breaker()
            .unwrap_err()
            .to_string();
        assert!(error.contains("ASIDE_DB_BACKOFF_MAX_MS"), "{error}");
    }
}
