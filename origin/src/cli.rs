//! The `aside-origin` command line.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{DatabaseArgs, ServeArgs, redact_url};
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
        Command::Migrate { database } => {
            let url = database.url()?;
            tracing::info!(database = %redact_url(url.expose()), "migrating");
            let mut client = crate::db::connect(&url, database.pool_timeout()).await?;
            let report = crate::db::migrations::migrate(&mut client).await?;
            println!(
                "migrations: {} applied, {} already applied",
                report.applied.len(),
                report.already_applied.len()
            );
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
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let db_url = args.database.url()?;
    let redis_url = args.redis.url()?;
    let tokens = args.tokens()?;
    let pool = crate::db::pool(&db_url, &args.database)?;
    let mut cache = crate::cache::ProfileCache::new(&redis_url, &args.redis, args.ttls()?)?;
    if args.cache == crate::config::CacheMode::Off {
        tracing::warn!("ASIDE_CACHE=off: Redis is not used, every read goes to PostgreSQL");
        cache = cache.disabled();
    }
    let cache = Arc::new(cache);
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::announce();
    if tokens.is_empty() {
        tracing::warn!("no origin token configured: /users is open to any caller");
    }
    let metrics = crate::metrics::install();
    // Change capture only feeds Redis; without a cache it would hold the outbox and apply nothing.
    let change_capture = (!cache.is_disabled()).then(|| {
        tokio::spawn(crate::changes::run(
            db_url.clone(),
            Arc::clone(&cache),
            args.changes.clone(),
        ))
    });
    let state = Arc::new(crate::http::AppState::new(pool, cache, tokens, metrics));
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
        redis = %redact_url(redis_url.expose()),
        "aside-origin serving"
    );
    println!("aside-origin listening on http://{local}");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    // Whatever change capture was doing is safe to cut short: it resumes from the stored watermark.
    if let Some(task) = change_capture {
        task.abort();
    }
    served?;
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
