//! The results of one benchmark: `report.json` (everything), `report.md` (a page to read), the table
//! printed at the end, [`compare`] (each edge run against the hello-world baseline of its runtime, the
//! share of reads answered at the edge without Redis, the goals of issues 11 and 12, the bundled host
//! against Spin), and [`verify`], the check the test suite runs on a quick report.

use serde::{Deserialize, Serialize};

use crate::load::LoadResult;

/// Bumped when the JSON layout changes incompatibly.
pub const SCHEMA: u32 = 2;

/// The hello-world baseline: `bench/hello`, a spin-sdk 6 component that answers every request with a
/// fixed body, under the same runtime and load as the edge.
pub const HELLO: &str = "hello";

/// The hello-redis baseline: `bench/hello-redis`, one `HGETALL` through the runtime's Redis binding per
/// request and nothing else; `edge-l2` is read against it ([`Comparison::l2_vs_binding`]).
pub const HELLO_REDIS: &str = "hello-redis";

/// The scenarios, in the order the report shows them (the newest last: each keeps its chart colour).
pub const SCENARIOS: &[&str] = &[
    HELLO,
    "edge-l1-hot",
    "edge-l2",
    "edge-miss",
    "origin-hit",
    "origin-miss",
    "postgres-only",
    "mix-95-5",
    EDGE_SHARED,
    EDGE_AUTH_OFF,
    HELLO_REDIS,
];

/// The scenarios run once per edge runtime: the baseline and everything that goes through an edge.
pub const RUNTIME_SCENARIOS: &[&str] = &[
    HELLO,
    "edge-l1-hot",
    "edge-l2",
    "edge-miss",
    "mix-95-5",
    EDGE_SHARED,
    EDGE_AUTH_OFF,
    HELLO_REDIS,
];

/// Every other edge scenario runs with client authentication on (a token per connection, several
/// subjects, the way users run it); this one is `edge-l1-hot` with `auth = "off"`, to read the cost.
pub const EDGE_AUTH_OFF: &str = "edge-l1-auth-off";

/// The edge with its process-wide tier on (Spin's key-value store `default`, in memory).
pub const EDGE_SHARED: &str = "edge-shared";

/// The scenarios that need a key-value store in the runtime: run where it has one, reported as skipped
/// (never silently left out) where it has none.
pub const KEY_VALUE_SCENARIOS: &[&str] = &[EDGE_SHARED];

/// The `x-cache` values of reads answered at the edge without Redis: tier 1 and the shared tier.
pub const EDGE_TIERS: &[&str] = &["L1", "SHARED"];

/// Whether an edge runtime (one of [`RUNTIMES`]) has a key-value store: Spin keeps one per process
/// (runtime-config.toml, in memory); the bundled host answers `no-such-store` for every label.
pub fn has_key_value_store(runtime: &str) -> bool {
    runtime == "spin"
}

/// The edge runtimes, in report order: `spin up` of a Spin 4 CLI, and the bundled host (`aside-host`).
pub const RUNTIMES: &[&str] = &["spin", "host"];

/// The goals of issue 11, as numbers.
pub mod goal {
    /// Edge L1 hit (uniform over the hot set): at least this share of hello-world's req/s.
    pub const L1_RPS_RATIO: f64 = 0.9;
    /// Edge L1 and L2 hits: p99 at most this many times hello-world's p99.
    pub const P99_RATIO: f64 = 2.0;
    /// Edge L2 hit: p50 − hello-world p50 at most this many Redis `HGETALL` round trips (their p50).
    pub const L2_ROUND_TRIPS: f64 = 2.0;
    /// The bundled host's req/s within this fraction of Spin's, on every edge scenario.
    pub const HOST_VS_SPIN: f64 = 0.25;
    /// Issue 12: with the shared tier on, Zipf keys, at least this share of reads answered at the edge
    /// without Redis (L1 + SHARED); measured with 100,000 ids, 16 connections, defaults.
    pub const EDGE_SHARE: f64 = 0.7;
    /// Issue 25: L1 hits with auth on at least this share of the same edge's req/s with auth off.
    pub const AUTH_RPS_RATIO: f64 = 0.9;
    /// Issue 25: what auth adds to an L1 hit's p50, at most, in milliseconds.
    pub const AUTH_P50_ADDED_MS: f64 = 0.15;
}

/// The machine the numbers were measured on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    /// What `/proc` says about this machine (empty fields where it says nothing).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_gib,
            kernel,
        }
    }
}

/// Settings of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    /// `quick` (the test suite's few seconds per scenario) or `full`.
    pub mode: String,
    /// Cargo profile of the servers and the load generator (`release` or `debug`).
    pub build: String,
    pub rows: u64,
    pub concurrency: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub zipf_s: f64,
    /// Ids in the L1-hot scenario's uniform hot set.
    pub hot_set: u64,
    /// Edge instance reuse (Spin's defaults, as the bundled host runs them).
    pub edge_instance_reuse: String,
    /// `--edge-var`: Spin variables every edge ran with (`NAME=VALUE`), beyond spin.toml's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edge_vars: Vec<String>,
    /// `--spin-nodelay`: Spin ran with TCP_NODELAY forced on every socket (an experiment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spin_nodelay: bool,
}

impl Settings {
    /// A line naming what this run changed from the defaults (`--edge-var`, `--spin-nodelay`), or
    /// nothing.
    pub fn overrides_markdown(&self) -> String {
        let mut changed: Vec<String> = self.edge_vars.iter().map(|v| format!("`{v}`")).collect();
        if self.spin_nodelay {
            changed.push(
                "`TCP_NODELAY` forced on every socket of `spin up` (`--spin-nodelay`, an experiment)"
                    .into(),
            );
        }
        if changed.is_empty() {
            String::new()
        } else {
            format!("Changed for this run: {}.\n\n", changed.join(", "))
        }
    }
}

/// One scenario with one key distribution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// One of [`SCENARIOS`].
    pub scenario: String,
    /// `zipf`, `uniform`, `uniform-hot` or `walk`.
    pub keys: String,
    /// What the requests went to.
    pub target: String,
    /// The edge runtime (one of [`RUNTIMES`]) for [`RUNTIME_SCENARIOS`]; `None` for the origin's.
    #[serde(default)]
    pub runtime: Option<String>,
    pub description: String,
    pub result: LoadResult,
    /// Why the run did not measure what it claims (e.g. a hits scenario that mostly missed); `None` when
    /// it did.
    pub check_failed: Option<String>,
}

impl Run {
    /// `scenario / keys`, and `/ runtime` for an edge run.
    pub fn label(&self) -> String {
        match &self.runtime {
            Some(rt) => format!("{} / {} / {rt}", self.scenario, self.keys),
            None => format!("{} / {}", self.scenario, self.keys),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub started_at_unix: u64,
    pub machine: Machine,
    pub settings: Settings,
    /// Seconds to start the stack, seed and warm it.
    pub setup_s: f64,
    /// Seconds for the whole benchmark.
    pub total_s: f64,
    /// Which edge runtimes ran, and why those.
    pub edge_runtime: EdgeRuntimes,
    /// One Redis round trip as the bench measured it (absent when no scenario filled Redis).
    pub redis_hgetall: Option<RoundTrip>,
    pub runs: Vec<Run>,
    /// Scenarios not run under a runtime, and why (e.g. [`KEY_VALUE_SCENARIOS`] under the bundled host).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// [`compare`] of the runs (recomputed and checked by [`verify`]).
    pub comparison: Comparison,
}

/// A scenario not run under a runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub scenario: String,
    pub runtime: String,
    pub why: String,
}

impl Skipped {
    /// Every one of [`KEY_VALUE_SCENARIOS`] (of those `wanted` says run) under every runtime without a
    /// key-value store.
    pub fn without_key_value_store<'a>(
        runtimes: impl IntoIterator<Item = &'a str>,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<Skipped> {
        runtimes
            .into_iter()
            .filter(|rt| !has_key_value_store(rt))
            .flat_map(|rt| {
                KEY_VALUE_SCENARIOS
                    .iter()
                    .filter(|s| wanted(s))
                    .map(move |s| Skipped {
                        scenario: s.to_string(),
                        runtime: rt.to_string(),
                        why: format!(
                            "the {rt} runtime has no key-value store (every store is no-such-store), \
                             so the edge's shared tier cannot be on"
                        ),
                    })
            })
            .collect()
    }
}

/// The edge runtimes of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EdgeRuntimes {
    /// `spin` and/or `host` ([`RUNTIMES`]), each running every one of [`RUNTIME_SCENARIOS`].
    pub runtimes: Vec<String>,
    /// How they were chosen: `--edge-runtime`, or the default and what finding Spin gave.
    pub why: String,
    /// `spin --version` and the CLI's path, when Spin ran.
    pub spin: Option<String>,
}

/// Sequential round trips of one Redis command on one connection, measured by the bench itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoundTrip {
    /// The command, e.g. `HGETALL user:profile:1`.
    pub command: String,
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl RoundTrip {
    /// The summary of `samples_ns` (nanoseconds, any order; at least one).
    pub fn from_samples(command: impl Into<String>, mut samples_ns: Vec<u64>) -> Self {
        samples_ns.sort_unstable();
        let n = samples_ns.len();
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
            samples_ns
                .get(rank - 1)
                .map_or(0.0, |ns| *ns as f64 / 1000.0)
        };
        let mean_us = if n == 0 {
            0.0
        } else {
            samples_ns.iter().sum::<u64>() as f64 / n as f64 / 1000.0
        };
        Self {
            command: command.into(),
            samples: n,
            p50_us: at(0.50),
            p99_us: at(0.99),
            mean_us,
        }
    }
}

/// The runs read against each other (see [`compare`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// Every edge run against the hello-world run of its runtime.
    pub vs_hello: Vec<VsHello>,
    /// Every edge run with Zipf keys: the share of its reads answered at the edge without Redis.
    #[serde(default)]
    pub edge_share: Vec<EdgeShare>,
    /// The goals of issues 11 and 12, per runtime.
    pub goals: Vec<Goal>,
    /// Each run of the bundled host against the same run under Spin, when both ran.
    pub host_vs_spin: Vec<HostVsSpin>,
    /// Every `edge-l2` run against the [`HELLO_REDIS`] run of its keys and runtime (`hello` there
    /// meaning hello-redis): what the edge adds to an L2 hit above Spin's Redis binding itself.
    #[serde(default)]
    pub l2_vs_binding: Vec<VsHello>,
}

/// One edge run against the hello-world baseline of its runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VsHello {
    pub scenario: String,
    pub keys: String,
    pub runtime: String,
    /// req/s ÷ hello-world req/s.
    pub rps_ratio: f64,
    /// p50 − hello-world p50, in µs (negative when faster).
    pub p50_minus_hello_us: i64,
    /// p99 ÷ hello-world p99.
    pub p99_ratio: f64,
}

/// The reads of one edge run answered at the edge without Redis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeShare {
    pub scenario: String,
    pub keys: String,
    pub runtime: String,
    /// Share of successful reads answered by tier 1 (`L1`).
    pub l1: f64,
    /// Share answered by the shared tier (`SHARED`).
    pub shared: f64,
    /// `l1 + shared`.
    pub share: f64,
}

/// The share of `result`'s successful reads answered by each of `tiers` (`x-cache` values), summed.
pub fn share_of(result: &LoadResult, tiers: &[&str]) -> f64 {
    let ratio = result.hit_ratio();
    tiers
        .iter()
        .map(|t| ratio.get(*t).copied().unwrap_or(0.0))
        .sum()
}

/// One goal of issue 11 or 12 for one runtime, met or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Goal {
    pub runtime: String,
    /// What is measured and the bound, e.g. `L1 hit: req/s ÷ hello req/s ≥ 0.9`.
    pub goal: String,
    /// The run it is read from, e.g. `edge-l1-hot / uniform-hot`.
    pub run: String,
    pub measured: f64,
    pub limit: f64,
    /// The unit of `measured` and `limit`: `×`, `ms` or `%` (a share: 0.7 is 70 %).
    pub unit: String,
    pub met: bool,
}

/// One run of the bundled host against the same scenario and keys under Spin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostVsSpin {
    pub scenario: String,
    pub keys: String,
    /// host req/s ÷ Spin req/s.
    pub rps_ratio: f64,
    /// host p50 ÷ Spin p50.
    pub p50_ratio: f64,
    /// host p99 ÷ Spin p99.
    pub p99_ratio: f64,
    /// req/s within ±[`goal::HOST_VS_SPIN`] of Spin's.
    pub within: bool,
}

/// A signed difference in microseconds as milliseconds: `+2.10`, `-0.05`.
pub fn ms_signed(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "+" };
    format!("{sign}{}", ms(us.unsigned_abs()))
}

/// Microseconds as milliseconds with enough digits for sub-millisecond values.
pub fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `L1 87% · L2 13%`, tiers by share.
pub fn hits(r: &LoadResult) -> String {
    let mut shares: Vec<(String, f64)> = r.hit_ratio().into_iter().collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
        .iter()
        .filter(|(_, v)| *v >= 0.0005)
        .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
        .collect::<Vec<_>>()
        .join(" · ")
}

mod compare;
mod markdown;
mod verify;

pub use compare::compare;
pub(crate) use markdown::md_table;
pub use verify::verify;

#[cfg(test)]
mod tests;
