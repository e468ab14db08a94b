//! The settings of one run, with their defaults filled in and checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use aside_bench::report::{self, Skipped};

use crate::catalogue::{EXTRA_SCENARIOS, Plan, plans};
use crate::cli::{RunArgs, SharedTier};
use crate::runtime::{Rt, Runtimes};
use crate::workspace_root;

/// The settings of one run: the command line with its defaults filled in, and where things are.
pub(crate) struct Config {
    pub(crate) quick: bool,
    pub(crate) build: String,
    pub(crate) rows: u64,
    pub(crate) concurrency: usize,
    pub(crate) warmup: f64,
    /// The feed A/B's warm-up (`--feed-warmup`, else `warmup`).
    pub(crate) feed_warmup: f64,
    pub(crate) duration: f64,
    pub(crate) zipf_s: f64,
    pub(crate) hot_set: u64,
    pub(crate) only: Vec<String>,
    /// `--shared-tier`: the topology runs' edge with the shared tier on, too.
    pub(crate) shared_tier: bool,
    /// The folder of aside-origin, aside-host and aside-load.
    pub(crate) bin: PathBuf,
    pub(crate) runtimes: Runtimes,
    /// Where the report goes, and the servers' logs (`<out>/logs`, emptied at start).
    pub(crate) out: PathBuf,
    pub(crate) logs: PathBuf,
    /// `--edge-var`: Spin variables set on every edge.
    pub(crate) edge_vars: Vec<(String, String)>,
    /// `--spin-nodelay`: the shim built for this run, loaded into every `spin up`.
    pub(crate) nodelay_shim: Option<PathBuf>,
}

impl Config {
    /// Fills in the defaults, checks the settings and that every binary is built, and empties the
    /// logs folder.
    pub(crate) fn from_args(args: RunArgs) -> anyhow::Result<Self> {
        let root = workspace_root();
        let quick = args.quick;
        let rows = args.rows.unwrap_or(if quick { 10_000 } else { 100_000 });
        let concurrency = args.concurrency.unwrap_or(if quick { 8 } else { 16 });
        let warmup = args.warmup.unwrap_or(if quick { 0.5 } else { 3.0 });
        let duration = args.duration.unwrap_or(if quick { 2.0 } else { 20.0 });
        anyhow::ensure!(rows >= 100, "--rows must be at least 100");
        anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(
            warmup >= 0.0 && duration > 0.0,
            "--warmup must be >= 0 and --duration > 0"
        );
        let feed_warmup = args.feed_warmup.unwrap_or(warmup);
        anyhow::ensure!(
            feed_warmup.is_finite() && (0.0..=3600.0).contains(&feed_warmup),
            "--feed-warmup must be 0 to 3600 seconds"
        );
        let bin = args
            .bin_dir
            .clone()
            .unwrap_or_else(|| root.join("target/release"));
        let runtimes = Runtimes::choose(args.edge_runtime, xtask::spin::find())?;
        check_built(&root, &bin, &runtimes)?;
        let out = args.out.clone().unwrap_or_else(|| {
            root.join(if quick {
                "target/bench/quick"
            } else {
                "target/bench"
            })
        });
        let out = if out.is_absolute() {
            out
        } else {
            root.join(out)
        };
        let logs = out.join("logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        let nodelay_shim = if args.spin_nodelay {
            anyhow::ensure!(
                runtimes.list == [Rt::Spin],
                "--spin-nodelay is an experiment on Spin's sockets: run it with --edge-runtime spin"
            );
            Some(build_nodelay_shim(&root, &out)?)
        } else {
            None
        };
        Ok(Self {
            quick,
            build: args.build,
            rows,
            concurrency,
            warmup,
            feed_warmup,
            duration,
            zipf_s: args.zipf_s,
            hot_set: args.hot_set,
            only: args.only,
            shared_tier: args.shared_tier == SharedTier::On,
            bin,
            runtimes,
            out,
            logs,
            edge_vars: args.edge_vars,
            nodelay_shim,
        })
    }

    /// The runs of this benchmark, `--only` applied.
    pub(crate) fn plans(&self) -> anyhow::Result<Vec<Plan>> {
        let plans: Vec<Plan> = plans(&self.runtimes.list)
            .into_iter()
            .filter(|p| self.only.is_empty() || self.only.iter().any(|o| o == p.scenario))
            .collect();
        for o in &self.only {
            anyhow::ensure!(
                report::SCENARIOS.contains(&o.as_str()) || EXTRA_SCENARIOS.contains(&o.as_str()),
                "unknown scenario {o:?}; the scenarios are {}",
                report::SCENARIOS
                    .iter()
                    .chain(EXTRA_SCENARIOS)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(plans)
    }

    /// The scenarios (of those `--only` keeps) a runtime of this run cannot run, each with the reason;
    /// the report says so instead of leaving them out silently.
    pub(crate) fn skipped(&self) -> Vec<Skipped> {
        let skipped = Self::skipped_under(&self.runtimes.list, &self.only);
        for s in &skipped {
            eprintln!(
                "aside-bench: not running {} under {}: {}",
                s.scenario, s.runtime, s.why
            );
        }
        skipped
    }

    /// What [`Config::skipped`] gives for these runtimes and `--only`.
    pub(crate) fn skipped_under(runtimes: &[Rt], only: &[String]) -> Vec<Skipped> {
        Skipped::without_key_value_store(runtimes.iter().map(|rt| rt.name()), |s| {
            only.is_empty() || only.iter().any(|o| o == s)
        })
    }

    /// Warm-up and measured time of one run.
    pub(crate) fn per_run(&self) -> f64 {
        self.warmup + self.duration
    }
}

/// Builds bench/nodelay/nodelay.c into `<out>/nodelay.so` with gcc (never committed as a binary).
pub(crate) fn build_nodelay_shim(root: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let source = root.join("bench/nodelay/nodelay.c");
    let shim = out.join("nodelay.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .context("--spin-nodelay needs gcc to build its shim")?;
    anyhow::ensure!(
        status.success(),
        "gcc could not build {} ({status})",
        source.display()
    );
    Ok(shim)
}

/// Every binary and component the run needs is built (`cargo xtask bench` builds them).
fn check_built(root: &Path, bin: &Path, runtimes: &Runtimes) -> anyhow::Result<()> {
    let wasm = root.join("target/wasm32-wasip2/release");
    let needed = [
        bin.join("aside-origin"),
        bin.join("aside-load"),
        wasm.join("aside_edge.wasm"),
        wasm.join("aside_hello.wasm"),
        wasm.join("aside_hello_redis.wasm"),
        wasm.join("aside_hello_origin.wasm"),
    ]
    .into_iter()
    .chain(
        runtimes
            .list
            .contains(&Rt::Host)
            .then(|| bin.join("aside-host")),
    );
    for path in needed {
        anyhow::ensure!(
            path.exists(),
            "{} is missing; run the benchmark through `cargo xtask bench`, which builds it",
            path.display()
        );
    }
    Ok(())
}
