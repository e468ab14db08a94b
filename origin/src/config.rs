//! Configuration of `serve`: every setting is a flag with an `ASIDE_*` environment variable, documented
//! in `--help`. Defaults are for local development only; nothing secret has a default.
//!
//! Each piece's own settings live beside it ([`crate::db::settings`], [`crate::cache::settings`],
//! [`crate::changes::settings`], [`crate::cache::read_through::ReadPath`], [`crate::cache::Ttls`]);
//! this module only gathers the flags and assembles them, checking those that depend on each other.
//! Secrets are held in [`Secret`], which never prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::cache::read_through::ReadPath;
use crate::cache::settings::RedisArgs;
use crate::changes::settings::ChangeCaptureArgs;
use crate::db::settings::DatabaseArgs;
use crate::secret::Secret;

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

    #[command(flatten)]
    pub feed: crate::cache::feed::FeedArgs,

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
    pub fn read_path(&self) -> anyhow::Result<ReadPath> {
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
        Ok(ReadPath {
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
