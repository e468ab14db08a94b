//! The command line of `aside-bench`.

use std::path::PathBuf;

use aside_bench::topology::Topologies;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "aside-bench",
    about = "Benchmark aside on a stack of its own; run it through `cargo xtask bench`"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Cmd>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Check a report: every scenario present, every run answered requests and measured what it claims.
    Verify { report: PathBuf },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A few seconds per scenario and 10,000 profiles (what the test suite runs).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Folder with aside-origin, aside-host and aside-load (`cargo xtask bench` passes it).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// Cargo profile of those binaries, for the report.
    #[arg(long, default_value = "release")]
    pub(crate) build: String,
    /// Profiles to seed [default: 100000; quick: 10000].
    #[arg(long)]
    pub(crate) rows: Option<u64>,
    /// Connections of the load generator [default: 16; quick: 8].
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Warm-up per run, in seconds [default: 3; quick: 0.5].
    #[arg(long)]
    pub(crate) warmup: Option<f64>,
    /// Warm-up of each feed A/B run (`--only feed`), in seconds [default: --warmup]: long enough for the
    /// edge's tiers to reach steady state (issue 24's share at the edge). Its reads are drawn from the
    /// same Zipf with other draws than the measured run's, so the measured reads are not a replay.
    #[arg(long)]
    pub(crate) feed_warmup: Option<f64>,
    /// Measured time per run, in seconds [default: 20; quick: 2].
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Zipf exponent of the skewed key choice.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) zipf_s: f64,
    /// Ids in the uniform hot set of the L1-hot scenario.
    #[arg(long, default_value_t = 16)]
    pub(crate) hot_set: u64,
    /// Where the report goes [default: target/bench; quick: target/bench/quick].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Only these scenarios (comma-separated), e.g. `--only edge-l1-hot,edge-l2`; `feed`: issue 24's
    /// invalidation-feed scenarios (A/B feed on/off, Redis commands per read, staleness), written to
    /// report-feed.{json,md}; `overload`: issue 29's spike (16 → 1,024 → 16 connections on the edge,
    /// then hello-world), written to report-overload.{json,md}; `cluster`: issue 26's comparison (the
    /// edge's L2 and the origin's hit on a 3-primary Redis Cluster against the single node), written
    /// to report-cluster.{json,md}.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// What runs the edges and the hello-world baseline: `spin` (`spin up` of a Spin 4 CLI: `ASIDE_SPIN`,
    /// else `spin` on PATH), `host` (the bundled aside-host) or `both` [default: spin when found, else
    /// host]. Every edge scenario runs under each.
    #[arg(long, value_enum)]
    pub(crate) edge_runtime: Option<RuntimeArg>,
    /// Instead of the scenarios: put a latency proxy (aside-delay) on every hop and measure each tier
    /// against the same reads with no cache, in these topologies: `loopback`, `same-dc`, `edge`,
    /// `far-redis` (comma-separated), or `all`. Writes report-topology.{json,md} and topology.svg/png.
    #[arg(long, value_parser = aside_bench::topology::parse, conflicts_with = "only")]
    pub(crate) topology: Option<Topologies>,
    /// With `--topology`: `on` also runs an edge with the shared tier on (Spin's key-value store, in
    /// memory) in each topology, its Zipf and uniform reads beside the edge's; `off` [default] keeps
    /// a topology run short. Needs a runtime with a key-value store (Spin).
    #[arg(long, value_enum, default_value_t = SharedTier::Off, requires = "topology")]
    pub(crate) shared_tier: SharedTier,
    /// A Spin variable for every edge (not the hello-world baseline), `NAME=VALUE`, e.g.
    /// `--edge-var redis_max_connections=1`; repeatable. For A/B runs of one setting; the report lists
    /// them.
    #[arg(long = "edge-var", value_name = "NAME=VALUE", value_parser = parse_edge_var)]
    pub(crate) edge_vars: Vec<(String, String)>,
    /// An experiment: load an LD_PRELOAD shim (bench/nodelay/nodelay.c, built here with gcc) into
    /// every `spin up` process, which turns Nagle's algorithm off on all of Spin's TCP sockets; each
    /// socket it touched is logged, with the option read back, to `<out>/logs/nodelay-<service>.log`.
    /// Spin runtime only (docs/benchmarks.md, "Spin and Nagle").
    #[arg(long)]
    pub(crate) spin_nodelay: bool,
}

/// `NAME=VALUE` of `--edge-var`: one of the edge's Spin variables (`aside_shared::settings`).
pub(crate) fn parse_edge_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    if !aside_shared::settings::is_edge_variable(name) {
        return Err(format!(
            "{name:?} is not a Spin variable of the edge (spin.toml lists them)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SharedTier {
    Off,
    On,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RuntimeArg {
    Spin,
    Host,
    Both,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_var_is_a_spin_variable_name_and_a_value() {
        assert_eq!(
            parse_edge_var("redis_max_connections=1"),
            Ok(("redis_max_connections".into(), "1".into()))
        );
        assert_eq!(
            parse_edge_var("l1_ttl_ms="),
            Ok(("l1_ttl_ms".into(), "".into()))
        );
        for bad in [
            "redis_max_connections",
            "=1",
            "Redis=1",
            "a-b=1",
            "a b=1",
            "redis_max_connection=1",
        ] {
            assert!(parse_edge_var(bad).is_err(), "{bad}");
        }
    }
}
