//! The `aside-origin` command line.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cache::settings::{RedisArgs, RedisTarget};
use crate::config::ServeArgs;
use crate::db::settings::DatabaseArgs;
use crate::secret::redact_url;
use crate::telemetry::{self, LogFormat};

/// The aside origin: serves user profiles from PostgreSQL through a Redis cache, and owns the schema
/// and the cache fill. Every flag can also be set with the environment variable shown in its help.
#[derive(Debug, Parser)]
#[command(name = "aside-origin", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the versioned SQL migrations (idempotent; safe to run from several hosts at once).
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The role `serve` connects as: after migrating, it is granted exactly what the service needs
        /// (and nothing else it held in the schema is kept). The role must exist (see docs/security.md).
        /// Without it, no privileges are changed.
        #[arg(long, env = "ASIDE_APP_ROLE")]
        app_role: Option<String>,
    },
    /// Load realistic Portuguese (pt_PT) profiles with binary COPY.
    Seed {
        #[command(flatten)]
        database: DatabaseArgs,
        /// How many profiles (default: a random count from 300 to 500).
        #[arg(long)]
        count: Option<u64>,
        /// Seed for the generator, for a reproducible data set.
        #[arg(long)]
        seed: Option<u64>,
        /// Empty the table first (TRUNCATE ... RESTART IDENTITY). Without it, a table that already has
        /// rows is left alone.
        #[arg(long)]
        replace: bool,
    },
    /// Serve the HTTP API.
    Serve(Box<ServeArgs>),
    /// Print statistics of the Redis cache: the profile keys of the configured logical database (count,
    /// memory; SCAN and MEMORY USAGE, never KEYS) and the Redis server's memory, evictions and hit
    /// ratio. The same as `GET /admin/cache/stats`.
    CacheStats(Box<CacheStatsArgs>),
}

#[derive(Debug, clap::Args)]
pub struct CacheStatsArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Print JSON (the body of `GET /admin/cache/stats`) instead of a table.
    #[arg(long)]
    json: bool,
    /// Stop after this many keys.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_keys: u64,
    /// Stop starting SCAN steps after this many ms.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    budget_ms: u64,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    telemetry::init(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate { database, app_role } => {
            let app_role = app_role
                .filter(|r| !r.is_empty())
                .map(|r| crate::db::grants::RoleName::parse(&r))
                .transpose()?;
            let url = database.url()?;
            tracing::info!(database = %redact_url(url.expose()), "migrating");
            let mut client = crate::db::connect(&url, database.pool_timeout()).await?;
            let report = crate::db::migrations::migrate(&mut client, app_role.as_ref()).await?;
            println!(
                "migrations: {} applied, {} already applied",
                report.applied.len(),
                report.already_applied.len()
            );
            if let Some(role) = &app_role {
                println!("privileges granted to the application role {role}");
            }
            Ok(())
        }
        Command::Seed {
            database,
            count,
            seed,
            replace,
        } => {
            let url = database.url()?;
            let mut client = crate::db::connect(&url, database.pool_timeout()).await?;
            let options = crate::seed::SeedOptions {
                count,
                seed,
                replace,
                progress: std::io::stderr().is_terminal(),
            };
            let report = crate::seed::seed(&mut client, &options).await?;
            match report.skipped_existing {
                Some(rows) => {
                    println!("already seeded: the table has {rows} rows (use --replace to reseed)")
                }
                None => println!(
                    "seeded {} profiles in {:.2} s",
                    report.inserted,
                    report.elapsed.as_secs_f64()
                ),
            }
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
        Command::CacheStats(args) => cache_stats(*args).await,
    }
}

async fn cache_stats(args: CacheStatsArgs) -> anyhow::Result<()> {
    // A cluster's seed nodes (ASIDE_REDIS_CLUSTER_NODES), else the one node's URL.
    let cluster = match args.redis.target() {
        Ok(RedisTarget::Cluster(cluster)) => Some(cluster),
        _ => None,
    };
    let url = match &cluster {
        Some(_) => crate::secret::Secret::new(""),
        None => args.redis.url()?,
    };
    // The TTLs are only used by writes, which this command never makes.
    let ttls = crate::cache::Ttls {
        profile: Duration::from_secs(aside_shared::cache::DEFAULT_TTL_SECS),
        jitter_percent: 0,
        missing: Duration::from_secs(aside_shared::cache::DEFAULT_MISSING_TTL_SECS),
        tombstone: Duration::from_secs(aside_shared::cache::DEFAULT_TOMBSTONE_TTL_SECS),
        stale: Duration::ZERO,
    };
    // One command, no retries worth a breaker: fail on the first error.
    let breaker = crate::breaker::BreakerSettings {
        failures: 1,
        backoff: Duration::from_millis(args.redis.redis_backoff_ms),
        max_backoff: Duration::from_millis(args.redis.redis_backoff_ms),
    };
    let (target, described) = match cluster {
        Some(cluster) => {
            let described = format!("the Redis Cluster of {} seed node(s)", cluster.nodes.len());
            (RedisTarget::Cluster(cluster), described)
        }
        None => (RedisTarget::Url(url.clone()), redact_url(url.expose())),
    };
    let cache = crate::cache::ProfileCache::new(&target, &args.redis, ttls, breaker)?;
    let limits = crate::cache::stats::StatsLimits {
        max_keys: usize::try_from(args.max_keys).unwrap_or(usize::MAX),
        budget: Duration::from_millis(args.budget_ms),
        ..Default::default()
    };
    let stats = cache
        .stats(limits)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read statistics from Redis at {described}: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", crate::cache::stats::table(&stats));
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let db_url = args.database.url()?;
    let redis_target = args.redis.target()?;
    let tokens = args.tokens()?;
    // First, so that what the rest records at start-up (the breakers' state) is exported.
    let metrics = crate::metrics::install();
    let admin_tokens = args.admin_tokens()?;
    let pool = crate::db::pool(&db_url, &args.database)?;
    let mut cache = crate::cache::ProfileCache::new(
        &redis_target,
        &args.redis,
        args.ttls()?,
        args.redis_breaker()?,
    )?;
    cache = cache.with_feed(args.feed.feed());
    if args.cache == crate::config::CacheMode::Off {
        tracing::warn!("ASIDE_CACHE=off: Redis is not used, every read goes to PostgreSQL");
        cache = cache.disabled();
    }
    let cache = Arc::new(cache);
    let heartbeat = tokio::spawn(crate::cache::feed::run_heartbeat(
        Arc::clone(&cache),
        args.feed.heartbeat(),
    ));
    let read_path = args.read_path()?;
    // A call may wait for a pooled connection (or connect), then run its statement; past both, and a
    // margin, PostgreSQL is not answering (a stalled server enforces no statement_timeout).
    let db_guard = crate::db::guard::DbGuard::new(
        args.db_breaker()?,
        args.database.pool_timeout()
            + args.database.statement_timeout()
            + Duration::from_millis(100),
    );
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::announce();
    if tokens.is_empty() {
        tracing::warn!("no origin token configured: /users is open to any caller");
    }
    // Change capture only feeds Redis; without a cache it would hold the outbox and apply nothing.
    let change_capture = (!cache.is_disabled()).then(|| {
        tokio::spawn(crate::changes::run(
            db_url.clone(),
            Arc::clone(&cache),
            args.changes.clone(),
        ))
    });
    if admin_tokens.is_empty() {
        tracing::info!("no admin token configured: the /admin routes are not mounted");
    }
    let state = Arc::new(
        crate::http::AppState::new(pool, cache, tokens, metrics, db_guard, read_path)
            .with_admin_tokens(admin_tokens),
    );
    let limits = crate::http::Limits {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_body_bytes: args.max_body_bytes,
    };
    let app = crate::http::router(state, limits);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        database = %redact_url(db_url.expose()),
        redis = %match &redis_target {
            RedisTarget::Url(url) => redact_url(url.expose()),
            RedisTarget::Sentinel(s) => format!(
                "sentinel master {:?} via {} sentinel(s)",
                s.master,
                s.sentinels.len()
            ),
            RedisTarget::Cluster(c) => format!(
                "cluster via {} seed node(s): {}",
                c.nodes.len(),
                c.nodes
                    .iter()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        },
        "aside-origin serving"
    );
    println!("aside-origin listening on http://{local}");
    crate::http::server::serve(listener, app, args.connection_limits(), shutdown_signal()).await;
    // Whatever change capture was doing is safe to cut short: it resumes from the stored watermark.
    if let Some(task) = change_capture {
        task.abort();
    }
    heartbeat.abort();
    tracing::info!("aside-origin stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM; in-flight requests then finish before the process exits.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parsed_arguments_print_no_secret() {
        use clap::Parser as _;
        let cli = Cli::parse_from([
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
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.tokens().unwrap().len(), 2);
        assert_eq!(
            args.database.url().unwrap().expose(),
            "postgres://app:pg-secret-1@db:5432/aside"
        );
    }
}
