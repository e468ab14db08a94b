//! `cargo xtask bench`: builds what the benchmark runs, then hands over to `aside-bench` (bench/), which
//! starts its own stack, runs the scenarios and writes `target/bench/report.{json,md}` and the charts.
//!
//! The full run builds release binaries. `--quick` (what `cargo xtask test` runs) uses the debug binaries
//! the test suite has just built, so CI does not pay for a release build of the wasmtime host.
//!
//! The edges run under real Spin when a Spin 4 CLI is found (`ASIDE_SPIN`, else `spin` on PATH), else
//! under the bundled host; `--edge-runtime spin|host|both` chooses (aside-bench decides and reports it).
//!
//! `--topology NAME` (or a comma-separated list, or `all`) runs the topology benchmark instead: a
//! latency proxy on every hop, each tier against the same reads with no cache (docs/benchmarks.md);
//! `--shared-tier on` adds the edge with the shared tier on to each topology.

use std::path::PathBuf;
use std::process::Command;

use clap::Args;

use crate::cmd::{build_components, build_test_bins, cargo, run_cmd, workspace_root};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A few seconds per scenario and 10,000 profiles, on the debug binaries (the test suite's run).
    #[arg(long)]
    pub quick: bool,
    /// What runs the edges and the hello-world baseline: `spin` (a Spin 4 CLI: ASIDE_SPIN, else `spin`
    /// on PATH), `host` (the bundled aside-host) or `both` [default: spin when found, else host].
    #[arg(long, value_parser = ["spin", "host", "both"])]
    pub edge_runtime: Option<String>,
    /// Instead of the scenarios, the latency of each tier against no cache with a latency proxy on
    /// every hop: `loopback`, `same-dc`, `edge`, `far-redis` (comma-separated), or `all`.
    #[arg(long)]
    pub topology: Option<String>,
    /// With `--topology`: `on` also runs an edge with the shared tier on in each topology (needs Spin).
    #[arg(long, value_parser = ["on", "off"], requires = "topology")]
    pub shared_tier: Option<String>,
    /// Options for the benchmark itself, e.g. `-- --duration 30 --concurrency 32 --only edge-l2`;
    /// `cargo xtask bench -- --help` lists them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    xtask::prereq::ensure_all()?;
    let bin = build(args.quick)?;
    let mut command = bench_command(&bin, args.quick, args.edge_runtime.as_deref());
    if let Some(topology) = &args.topology {
        command.args(["--topology", topology]);
    }
    if let Some(shared_tier) = &args.shared_tier {
        command.args(["--shared-tier", shared_tier]);
    }
    command.args(&args.args);
    // The driver takes over this process: Ctrl-C reaches it directly and it stops its stack in order.
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    Err(anyhow::anyhow!(
        "cannot run {}: {error}",
        bin.join("aside-bench").display()
    ))
}

/// `cargo xtask test`'s last step: the quick benchmark, then the check of its report (every scenario
/// present under the runtime it ran, every run answered requests and measured what it claims). The edges
/// run under the default runtime (Spin when found), or the one `ASIDE_EDGE_RUNTIME` asks the tests for.
pub fn quick_check() -> anyhow::Result<()> {
    let bin = build(true)?;
    let runtime = match std::env::var("ASIDE_EDGE_RUNTIME")
        .unwrap_or_default()
        .as_str()
    {
        "host" | "bundled" => Some("host"),
        "spin" => Some("spin"),
        _ => None,
    };
    run_cmd(&mut bench_command(&bin, true, runtime))?;
    let report = workspace_root().join("target/bench/quick/report.json");
    run_cmd(
        Command::new(bin.join("aside-bench"))
            .arg("verify")
            .arg(report),
    )
}

fn bench_command(bin: &std::path::Path, quick: bool, edge_runtime: Option<&str>) -> Command {
    let mut command = Command::new(bin.join("aside-bench"));
    command
        .current_dir(workspace_root())
        .arg("--bin-dir")
        .arg(bin)
        .args(["--build", if quick { "debug" } else { "release" }]);
    if quick {
        command.arg("--quick");
    }
    if let Some(runtime) = edge_runtime {
        command.args(["--edge-runtime", runtime]);
    }
    command
}

/// Builds the edge component and the hello-world baseline (always release: what Spin runs), the
/// origin, the host and the benchmark's own binaries; returns the folder they are in.
fn build(quick: bool) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    build_components(&[
        "aside-edge",
        "aside-hello",
        "aside-hello-redis",
        "aside-hello-origin",
    ])?;
    if quick {
        // The same commands as `cargo xtask test`, so after a test run nothing is rebuilt.
        build_test_bins()?;
        Ok(root.join("target/debug"))
    } else {
        eprintln!("xtask: building (release)");
        // The same command as `cargo xtask up` without a Spin CLI, so the two share their release build.
        run_cmd(cargo().args([
            "build",
            "--release",
            "-p",
            "aside-origin",
            "-p",
            "aside-host",
            "--bin",
            "aside-origin",
            "--bin",
            "aside-host",
        ]))?;
        run_cmd(cargo().args(["build", "--release", "-p", "aside-bench"]))?;
        Ok(root.join("target/release"))
    }
}
