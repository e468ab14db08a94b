//! `aside-bench`: the benchmark driver behind `cargo xtask bench` (which builds the binaries and runs
//! this one). See docs/benchmarks.md.
//!
//! It starts a stack of its own (Redis, PostgreSQL, an origin, an origin with the cache off, and per edge
//! runtime an edge, an edge with tier 1 off, the hello-world baseline and, where the runtime has a
//! key-value store, an edge with the shared tier on) on free ports, with its state
//! in a temporary folder that is removed at the end, seeds it, runs every scenario through `aside-load`
//! (a separate process), and writes `report.json`, `report.md` and the charts. Ctrl-C, or any failure,
//! stops the stack and removes its state; the servers' logs stay in `<out>/logs/`.
//!
//! The edge runtime is real Spin (`spin up` of a Spin 4 CLI: `ASIDE_SPIN`, else `spin` on PATH) when
//! one is found, else the bundled host; `--edge-runtime spin|host|both` chooses.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use aside_bench::report::{self, Report};
use clap::Parser as _;

mod catalogue;
mod cli;
mod cluster_bench;
mod config;
mod feed_bench;
mod http;
mod overload_bench;
mod run;
mod runtime;
mod stack;
mod topology_run;

use cli::{Cli, Cmd, RunArgs};
use config::Config;
use indicatif::ProgressBar;
use run::{collect, fill_redis, run_scenarios, write_report};
use stack::{Ports, seed, start_servers, start_stack, warm};
use topology_run::run_topologies;

/// Set by Ctrl-C / SIGTERM; checked between steps and while a scenario runs.
static STOP: AtomicBool = AtomicBool::new(false);

/// An error once Ctrl-C or SIGTERM came.
fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Ctrl-C and SIGTERM set [`STOP`].
fn stop_on_signal() -> anyhow::Result<()> {
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst)).context("install the Ctrl-C handler")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Verify { report }) => verify_file(&report),
        None => run(cli.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aside-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn verify_file(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no benchmark report at {}", path.display()))?;
    let report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a benchmark report", path.display()))?;
    report::verify(&report)?;
    feed_bench::verify_beside(path)?;
    overload_bench::verify_beside(path)?;
    cluster_bench::verify_beside(path)?;
    println!(
        "benchmark report {}: {} runs of {} scenarios, all answered and measured what they claim",
        path.display(),
        report.runs.len(),
        report::SCENARIOS.len()
    );
    println!(
        "edge runtime {} ({})",
        report.edge_runtime.runtimes.join(" and "),
        report.edge_runtime.why
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// The benchmark: `--topology`'s, or the scenarios (and the feed's) on one stack.
fn run(mut args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let topologies = args.topology.take();
    let config = Config::from_args(args)?;
    if let Some(topologies) = topologies {
        return run_topologies(&config, &topologies, started, started_at_unix);
    }
    let plans = config.plans()?;
    stop_on_signal()?;

    let mut stack = start_stack(&config, plans.len(), 0)?;
    seed(&config, &stack)?;
    start_servers(&config, &mut stack)?;
    let mut redis = warm(&stack)?;
    let setup_s = started.elapsed().as_secs_f64();
    eprintln!("aside-bench: stack ready in {setup_s:.1} s");

    let route = |ports: &Ports, target| ports.url(target);
    let measured = run_scenarios(&config, &mut stack, &mut redis, &plans, (&route, None))?;
    // Issue 24's scenarios (bench/src/feed_bench.rs): their own report beside this one.
    let feed = if config.only.is_empty() || config.only.iter().any(|o| o == feed_bench::NAME) {
        let rt = config.runtimes.list[0];
        if redis.db_size()? < config.rows {
            let bar = ProgressBar::hidden();
            fill_redis(&config, &stack, &mut redis, &bar)?;
        }
        Some(feed_bench::run(&config, &mut stack, &mut redis, rt)?)
    } else {
        None
    };
    // Issue 29's spike (bench/src/overload_bench.rs): its own report beside this one.
    let overload =
        if config.only.is_empty() || config.only.iter().any(|o| o == overload_bench::NAME) {
            if redis.db_size()? < config.rows {
                fill_redis(&config, &stack, &mut redis, &ProgressBar::hidden())?;
            }
            Some(overload_bench::run(
                &config,
                &stack,
                config.runtimes.list[0],
            )?)
        } else {
            None
        };
    // Issue 26's comparison (bench/src/cluster_bench.rs): its own cluster and report.
    let cluster = if config.only.is_empty() || config.only.iter().any(|o| o == cluster_bench::NAME)
    {
        if redis.db_size()? < config.rows {
            fill_redis(&config, &stack, &mut redis, &ProgressBar::hidden())?;
        }
        Some(cluster_bench::run(
            &config,
            &mut stack,
            config.runtimes.list[0],
        )?)
    } else {
        None
    };
    drop(redis);
    drop(stack);

    let mut report = collect(&config, measured, setup_s, started, started_at_unix);
    report.skipped = config.skipped();
    report.finish();
    write_report(&config, &report)?;
    feed.as_ref().map_or(Ok(()), feed_bench::verify)?;
    overload.as_ref().map_or(Ok(()), overload_bench::verify)?;
    cluster.as_ref().map_or(Ok(()), cluster_bench::verify)
}
