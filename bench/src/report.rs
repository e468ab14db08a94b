//! The results of one benchmark: `report.json` (everything), `report.md` (a page to read), the table
//! printed at the end, [`compare`] (each edge run against the hello-world baseline of its runtime, the
//! share of reads answered at the edge without Redis, the goals of issues 11 and 12, the bundled host
//! against Spin), and [`verify`], the check the test suite runs on a quick report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
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

/// `a ÷ b` in req/s, p50 and p99, when `b` measured all three.
fn ratios(a: &LoadResult, b: &LoadResult) -> Option<(f64, f64, f64)> {
    let ratio = |a: f64, b: f64| (b > 0.0 && a.is_finite()).then(|| a / b);
    let (la, lb) = (&a.latency_us, &b.latency_us);
    Some((
        ratio(a.rps, b.rps)?,
        ratio(la.p50 as f64, lb.p50 as f64)?,
        ratio(la.p99 as f64, lb.p99 as f64)?,
    ))
}

/// Reads the runs against each other: every run of [`RUNTIME_SCENARIOS`] (but the baseline) against the
/// `hello` run of its runtime, the goals of issue 11 per runtime (L1 from `edge-l1-hot / uniform-hot`,
/// L2 from `edge-l2 / uniform`, the same key choice as the baseline), and, when both runtimes ran, each
/// host run against its Spin twin. Runs without a baseline (or with nothing measured) are left out.
pub fn compare(runs: &[Run], hgetall: Option<&RoundTrip>) -> Comparison {
    let find = |scenario: &str, keys: Option<&str>, runtime: &str| {
        runs.iter().find(|r| {
            r.scenario == scenario
                && keys.is_none_or(|k| r.keys == k)
                && r.runtime.as_deref() == Some(runtime)
        })
    };
    let mut out = Comparison::default();
    // `run` against `base`'s run of `keys` (any keys when `None`) under the run's runtime.
    let against = |run: &Run, base: &str, keys: Option<&str>| {
        let runtime = run.runtime.as_deref()?;
        let baseline = &find(base, keys, runtime)?.result;
        let (rps_ratio, _, p99_ratio) = ratios(&run.result, baseline)?;
        Some(VsHello {
            scenario: run.scenario.clone(),
            keys: run.keys.clone(),
            runtime: runtime.to_string(),
            rps_ratio,
            p50_minus_hello_us: run.result.latency_us.p50 as i64 - baseline.latency_us.p50 as i64,
            p99_ratio,
        })
    };
    out.vs_hello = runs
        .iter()
        .filter(|r| r.scenario != HELLO)
        .filter_map(|r| against(r, HELLO, None))
        .collect();
    out.l2_vs_binding = runs
        .iter()
        .filter(|r| r.scenario == "edge-l2")
        .filter_map(|r| against(r, HELLO_REDIS, Some(&r.keys)))
        .collect();
    for run in runs {
        let Some(runtime) = run.runtime.as_deref() else {
            continue;
        };
        if [HELLO, HELLO_REDIS].contains(&run.scenario.as_str())
            || run.keys != "zipf"
            || run.result.x_cache.is_empty()
        {
            continue;
        }
        let (l1, shared) = (
            share_of(&run.result, &["L1"]),
            share_of(&run.result, &["SHARED"]),
        );
        out.edge_share.push(EdgeShare {
            scenario: run.scenario.clone(),
            keys: run.keys.clone(),
            runtime: runtime.to_string(),
            l1,
            shared,
            share: l1 + shared,
        });
    }
    for runtime in RUNTIMES {
        let vs = |scenario: &str, keys: &str| {
            out.vs_hello
                .iter()
                .find(|v| v.scenario == scenario && v.keys == keys && v.runtime == *runtime)
                .cloned()
        };
        let new_goal =
            |goal: String, run: &str, measured: f64, limit: f64, unit: &str, at_most| Goal {
                runtime: runtime.to_string(),
                goal,
                run: run.to_string(),
                measured,
                limit,
                unit: unit.to_string(),
                met: if at_most {
                    measured <= limit
                } else {
                    measured >= limit
                },
            };
        let mut goals = Vec::new();
        if let Some(l1) = vs("edge-l1-hot", "uniform-hot") {
            let run = "edge-l1-hot / uniform-hot";
            goals.push(new_goal(
                format!("L1 hit: req/s ÷ hello req/s ≥ {}", goal::L1_RPS_RATIO),
                run,
                l1.rps_ratio,
                goal::L1_RPS_RATIO,
                "×",
                false,
            ));
            goals.push(new_goal(
                format!("L1 hit: p99 ÷ hello p99 ≤ {}", goal::P99_RATIO),
                run,
                l1.p99_ratio,
                goal::P99_RATIO,
                "×",
                true,
            ));
        }
        if let Some(l2) = vs("edge-l2", "uniform") {
            let run = "edge-l2 / uniform";
            if let Some(rt) = hgetall {
                goals.push(new_goal(
                    format!(
                        "L2 hit: p50 − hello p50 ≤ {} × Redis HGETALL p50",
                        goal::L2_ROUND_TRIPS
                    ),
                    run,
                    l2.p50_minus_hello_us as f64 / 1000.0,
                    goal::L2_ROUND_TRIPS * rt.p50_us / 1000.0,
                    "ms",
                    true,
                ));
            }
            goals.push(new_goal(
                format!("L2 hit: p99 ÷ hello p99 ≤ {}", goal::P99_RATIO),
                run,
                l2.p99_ratio,
                goal::P99_RATIO,
                "×",
                true,
            ));
        }
        // Issue 25: auth on (every edge scenario) against the same L1 reads with auth off.
        if let (Some(on), Some(off)) = (
            find("edge-l1-hot", Some("uniform-hot"), runtime),
            find(EDGE_AUTH_OFF, Some("uniform-hot"), runtime),
        ) && let Some((rps_ratio, _, _)) = ratios(&on.result, &off.result)
        {
            let run = "edge-l1-hot / uniform-hot vs edge-l1-auth-off";
            goals.push(new_goal(
                format!(
                    "auth on: L1 req/s ÷ auth off L1 req/s ≥ {}",
                    goal::AUTH_RPS_RATIO
                ),
                run,
                rps_ratio,
                goal::AUTH_RPS_RATIO,
                "×",
                false,
            ));
            goals.push(new_goal(
                format!(
                    "auth on: L1 p50 − auth off L1 p50 ≤ {} ms",
                    goal::AUTH_P50_ADDED_MS
                ),
                run,
                (on.result.latency_us.p50 as f64 - off.result.latency_us.p50 as f64) / 1000.0,
                goal::AUTH_P50_ADDED_MS,
                "ms",
                true,
            ));
        }
        let shared = out
            .edge_share
            .iter()
            .find(|e| e.scenario == EDGE_SHARED && e.runtime == *runtime);
        if let Some(e) = shared {
            goals.push(new_goal(
                format!(
                    "edge without Redis (L1 + SHARED), shared tier on: share of reads ≥ {:.0} %",
                    goal::EDGE_SHARE * 100.0
                ),
                "edge-shared / zipf",
                e.share,
                goal::EDGE_SHARE,
                "%",
                false,
            ));
        }
        out.goals.extend(goals);
    }
    for host in runs.iter().filter(|r| r.runtime.as_deref() == Some("host")) {
        let Some(spin) = find(&host.scenario, Some(&host.keys), "spin") else {
            continue;
        };
        let Some((rps_ratio, p50_ratio, p99_ratio)) = ratios(&host.result, &spin.result) else {
            continue;
        };
        out.host_vs_spin.push(HostVsSpin {
            scenario: host.scenario.clone(),
            keys: host.keys.clone(),
            rps_ratio,
            p50_ratio,
            p99_ratio,
            within: (rps_ratio - 1.0).abs() <= goal::HOST_VS_SPIN,
        });
    }
    out
}

impl Report {
    /// The runs in report order (scenario order, then key distribution).
    pub fn sort_runs(&mut self) {
        let rank = |s: &str| SCENARIOS.iter().position(|x| *x == s).unwrap_or(usize::MAX);
        // The skewed (realistic) choice first, then the uniform one.
        let keys = |k: &str| usize::from(k.starts_with("uniform"));
        // Then Spin before the bundled host.
        let runtime = |r: Option<&str>| r.and_then(|r| RUNTIMES.iter().position(|x| *x == r));
        self.runs.sort_by_key(|r| {
            (
                rank(&r.scenario),
                keys(&r.keys),
                runtime(r.runtime.as_deref()),
            )
        });
    }

    /// Sorts the runs and computes [`Report::comparison`] from them.
    pub fn finish(&mut self) {
        self.sort_runs();
        self.comparison = compare(&self.runs, self.redis_hgetall.as_ref());
    }

    /// The results table, for the terminal.
    pub fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(HEADER);
        for run in &self.runs {
            let cells = row(run);
            table.add_row(cells.into_iter().enumerate().map(|(i, text)| {
                let cell = Cell::new(text);
                if NUMERIC.contains(&i) {
                    cell.set_alignment(CellAlignment::Right)
                } else {
                    cell
                }
            }));
        }
        table
    }

    /// The results table in Markdown.
    pub fn markdown_table(&self) -> String {
        md_table(&HEADER, |i| NUMERIC.contains(&i), self.runs.iter().map(row))
    }

    /// The edge runtime line, the runs against the hello-world baseline, the Redis round trip, the
    /// goals, and the bundled host against Spin (when both ran): Markdown, for `report.md` and the
    /// terminal.
    pub fn comparison_markdown(&self) -> String {
        let c = &self.comparison;
        let e = &self.edge_runtime;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Edge runtime: **{}**{} ({}).\n",
            e.runtimes.join(" and "),
            e.spin
                .as_deref()
                .map(|s| format!("; Spin is {s}"))
                .unwrap_or_default(),
            e.why
        );
        if e.runtimes.iter().any(|r| r == "host") && self.settings.build != "release" {
            let _ = writeln!(
                out,
                "The bundled host is a {} build here (Spin is always a release build): its figures \
                 say little about the host's speed, and nothing against Spin's.\n",
                self.settings.build
            );
        }
        out.push_str("### Against the hello-world baseline\n\n");
        out.push_str(
            "Each edge run read against the `hello` run of its runtime (the same load on a component that \
             only answers): req/s as a share of hello's, the p50 it adds, p99 as a multiple of hello's.\n\n",
        );
        out.push_str(&md_table(
            &[
                "scenario",
                "keys",
                "runtime",
                "req/s ÷ hello",
                "p50 − hello p50 ms",
                "p99 ÷ hello p99",
            ],
            |i| i >= 3,
            c.vs_hello.iter().map(|v| {
                vec![
                    v.scenario.clone(),
                    v.keys.clone(),
                    v.runtime.clone(),
                    format!("{:.2}", v.rps_ratio),
                    ms_signed(v.p50_minus_hello_us),
                    format!("{:.1}", v.p99_ratio),
                ]
            }),
        ));
        if !c.l2_vs_binding.is_empty() {
            out.push_str("\n### An L2 hit against Spin's Redis binding\n\n");
            out.push_str(
                "Each `edge-l2` run read against the `hello-redis` run of its keys and runtime (one \
                 `HGETALL` through the same binding per request, nothing else): what the edge adds to \
                 an L2 hit above what the runtime's Redis binding itself costs.\n\n",
            );
            out.push_str(&md_table(
                &[
                    "keys",
                    "runtime",
                    "req/s ÷ hello-redis",
                    "p50 − hello-redis p50 ms",
                    "p99 ÷ hello-redis p99",
                ],
                |i| i >= 2,
                c.l2_vs_binding.iter().map(|v| {
                    vec![
                        v.keys.clone(),
                        v.runtime.clone(),
                        format!("{:.2}", v.rps_ratio),
                        ms_signed(v.p50_minus_hello_us),
                        format!("{:.1}", v.p99_ratio),
                    ]
                }),
            ));
        }
        match &self.redis_hgetall {
            Some(rt) => {
                let _ = writeln!(
                    out,
                    "\nOne Redis round trip: `{}`, {} times in a row on the bench's own connection: p50 \
                     {:.3} ms, p99 {:.3} ms, mean {:.3} ms.",
                    rt.command,
                    rt.samples,
                    rt.p50_us / 1000.0,
                    rt.p99_us / 1000.0,
                    rt.mean_us / 1000.0
                );
            }
            None => {
                out.push_str("\nNo Redis round trip was measured (no scenario filled Redis).\n")
            }
        }
        if !c.edge_share.is_empty() {
            out.push_str(
                "\n### Reads answered at the edge without Redis\n\nEvery edge run with Zipf keys: the \
                 share of its successful reads answered by tier 1 (`L1`, the instance's memory) and by the \
                 shared tier (`SHARED`, Spin's key-value store, on in `edge-shared` only).\n\n",
            );
            out.push_str(&md_table(
                &["scenario", "keys", "runtime", "L1", "SHARED", "at the edge"],
                |i| i >= 3,
                c.edge_share.iter().map(|e| {
                    let pct = |v: f64| format!("{:.1} %", v * 100.0);
                    vec![
                        e.scenario.clone(),
                        e.keys.clone(),
                        e.runtime.clone(),
                        pct(e.l1),
                        pct(e.shared),
                        pct(e.share),
                    ]
                }),
            ));
        }
        if !self.skipped.is_empty() {
            out.push_str("\n### Not run\n\n");
            for s in &self.skipped {
                let _ = writeln!(out, "* {} under {}: {}.", s.scenario, s.runtime, s.why);
            }
        }
        if !c.goals.is_empty() {
            out.push_str("\n### Goals\n\n");
            out.push_str(&md_table(
                &["runtime", "goal", "run", "measured", "limit", "met"],
                |i| i == 3 || i == 4,
                c.goals.iter().map(|g| {
                    let value = |v: f64| match g.unit.as_str() {
                        "ms" => format!("{v:.3} ms"),
                        "%" => format!("{:.1} %", v * 100.0),
                        unit => format!("{v:.2} {unit}"),
                    };
                    vec![
                        g.runtime.clone(),
                        g.goal.clone(),
                        g.run.clone(),
                        value(g.measured),
                        value(g.limit),
                        if g.met { "met" } else { "**not met**" }.to_string(),
                    ]
                }),
            ));
        }
        if !c.host_vs_spin.is_empty() {
            let _ = writeln!(
                out,
                "\n### Bundled host against Spin\n\nEach run under the bundled host divided by the same \
                 run under Spin; the goal is req/s within ±{:.0} % on every edge scenario.\n",
                goal::HOST_VS_SPIN * 100.0
            );
            out.push_str(&md_table(
                &[
                    "scenario",
                    "keys",
                    "host ÷ spin req/s",
                    "host ÷ spin p50",
                    "host ÷ spin p99",
                    "req/s within ±25 %",
                ],
                |i| (2..=4).contains(&i),
                c.host_vs_spin.iter().map(|h| {
                    vec![
                        h.scenario.clone(),
                        h.keys.clone(),
                        format!("{:.2}", h.rps_ratio),
                        format!("{:.2}", h.p50_ratio),
                        format!("{:.2}", h.p99_ratio),
                        match (
                            [HELLO, HELLO_REDIS].contains(&h.scenario.as_str()),
                            h.within,
                        ) {
                            (true, _) => "(baseline)",
                            (false, true) => "yes",
                            (false, false) => "**no**",
                        }
                        .to_string(),
                    ]
                }),
            ));
        }
        out
    }

    /// `report.md`: settings, machine, the table, what each scenario is, the charts.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# aside benchmark ({} run)\n", s.mode);
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), {} GiB, Linux {}. Servers and load generator on the same machine.\n",
            m.cpus,
            if m.cpu_model.is_empty() {
                "unknown model"
            } else {
                &m.cpu_model
            },
            m.memory_gib,
            m.kernel
        );
        let _ = writeln!(
            out,
            "Settings: {} builds, {} profiles, {} connections (closed loop), {} s warm-up + {} s measured \
             per run, Zipf s = {}, L1 hot set {} ids, edge instance reuse {}. Setup {:.0} s, total {:.0} s.\n",
            s.build,
            s.rows,
            s.concurrency,
            s.warmup_s,
            s.duration_s,
            s.zipf_s,
            s.hot_set,
            s.edge_instance_reuse,
            self.setup_s,
            self.total_s
        );
        out.push_str(&s.overrides_markdown());
        out.push_str(&self.markdown_table());
        out.push_str(
            "\nLatencies in milliseconds, measured by the load generator from sending a request to \
             reading the whole answer. Hits: the share of successful reads per `x-cache` value. \
             Runtime: what ran the edge (`spin`: `spin up`; `host`: the bundled `aside-host`).\n",
        );
        out.push_str("\n## Edge runtime and the hello-world baseline\n\n");
        out.push_str(&self.comparison_markdown());
        let failed: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.check_failed.is_some())
            .collect();
        if !failed.is_empty() {
            out.push_str("\n**Runs that did not measure what they claim:**\n\n");
            for r in failed {
                let _ = writeln!(
                    out,
                    "* {}: {}",
                    r.label(),
                    r.check_failed.as_deref().unwrap_or("")
                );
            }
        }
        out.push_str("\n## Scenarios\n\n");
        let mut described = Vec::new();
        for r in &self.runs {
            if !described.contains(&r.scenario) {
                let _ = writeln!(
                    out,
                    "* **{}** ({}): {}",
                    r.scenario, r.target, r.description
                );
                described.push(r.scenario.clone());
            }
        }
        out.push_str("\n## Errors and writes\n\n");
        let mut any = false;
        for r in &self.runs {
            let mut notes = Vec::new();
            if r.result.errors > 0 {
                notes.push(format!("errors {:?}", r.result.error_kinds));
            }
            if let Some(w) = &r.result.write_latency_us {
                notes.push(format!(
                    "{} writes, p50 {} / p99 {} ms",
                    r.result.writes,
                    ms(w.p50),
                    ms(w.p99)
                ));
            }
            if r.result.keys_exhausted {
                notes.push(format!(
                    "ran out of fresh ids: measured over {:.1} s",
                    r.result.elapsed_s
                ));
            }
            if !notes.is_empty() {
                any = true;
                let _ = writeln!(out, "* {}: {}", r.label(), notes.join("; "));
            }
        }
        if !any {
            out.push_str("No errors, no writes.\n");
        }
        out.push_str(
            "\n## Charts\n\n![Latency by percentile](latency.svg)\n\n![Throughput](throughput.svg)\n\n\
             (PNG versions beside them: `latency.png`, `throughput.png`.)\n",
        );
        out
    }
}

const HEADER: [&str; 10] = [
    "scenario", "keys", "runtime", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors",
    "hits",
];

/// The right-aligned columns of [`HEADER`].
const NUMERIC: std::ops::RangeInclusive<usize> = 3..=8;

fn row(run: &Run) -> Vec<String> {
    let r = &run.result;
    vec![
        run.scenario.clone(),
        run.keys.clone(),
        run.runtime.clone().unwrap_or_else(|| "-".into()),
        format!("{:.0}", r.rps),
        ms(r.latency_us.p50),
        ms(r.latency_us.p90),
        ms(r.latency_us.p99),
        ms(r.latency_us.p999),
        r.errors.to_string(),
        hits(r),
    ]
}

/// A Markdown table; `right(i)` says which columns are right-aligned.
pub(crate) fn md_table(
    header: &[&str],
    right: impl Fn(usize) -> bool,
    rows: impl IntoIterator<Item = Vec<String>>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if right(i) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
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

/// Checks a report the way the test suite does: it lists every scenario, every run answered requests,
/// and every run measured what it claims.
pub fn verify(report: &Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        report.schema == SCHEMA,
        "report schema {} (expected {SCHEMA})",
        report.schema
    );
    let mut problems = Vec::new();
    let mut per_scenario: BTreeMap<&str, usize> = BTreeMap::new();
    let runtimes = &report.edge_runtime.runtimes;
    if runtimes.is_empty() {
        problems.push("the report names no edge runtime".to_string());
    }
    for rt in runtimes {
        if !RUNTIMES.contains(&rt.as_str()) {
            problems.push(format!(
                "unknown edge runtime {rt:?} (expected one of {RUNTIMES:?})"
            ));
        }
    }
    for run in &report.runs {
        *per_scenario.entry(run.scenario.as_str()).or_default() += 1;
        if run.result.requests == 0 {
            problems.push(format!("{}: no requests", run.label()));
        }
        if let Some(why) = &run.check_failed {
            problems.push(format!("{}: {why}", run.label()));
        }
        match (
            &run.runtime,
            RUNTIME_SCENARIOS.contains(&run.scenario.as_str()),
        ) {
            (None, true) => problems.push(format!("{}: no edge runtime", run.label())),
            (Some(rt), true) if !runtimes.contains(rt) => problems.push(format!(
                "{}: runtime {rt} is not one the report names",
                run.label()
            )),
            (Some(_), false) => problems.push(format!(
                "{}: an origin scenario with an edge runtime",
                run.label()
            )),
            _ => {}
        }
    }
    let skipped = |s: &str, rt: &str| {
        report
            .skipped
            .iter()
            .any(|k| k.scenario == s && k.runtime == rt)
    };
    for s in SCENARIOS {
        let all_skipped = !runtimes.is_empty() && runtimes.iter().all(|rt| skipped(s, rt));
        if !per_scenario.contains_key(s) && !all_skipped {
            problems.push(format!("scenario {s} is missing"));
        }
    }
    for rt in runtimes {
        for s in RUNTIME_SCENARIOS {
            let ran = report
                .runs
                .iter()
                .any(|r| r.scenario == *s && r.runtime.as_deref() == Some(rt));
            // Only a scenario the runtime cannot run may be skipped, and then it must be.
            let may_skip = KEY_VALUE_SCENARIOS.contains(s) && !has_key_value_store(rt);
            match (ran, skipped(s, rt)) {
                (false, false) => problems.push(format!("scenario {s} under {rt} is missing")),
                (false, true) if !may_skip => problems.push(format!(
                    "scenario {s} under {rt} was skipped, but {rt} can run it"
                )),
                (true, true) => problems.push(format!(
                    "scenario {s} under {rt} is both run and reported skipped"
                )),
                _ => {}
            }
        }
    }
    let measured_hgetall = report
        .redis_hgetall
        .as_ref()
        .is_some_and(|rt| rt.samples > 0 && rt.p50_us > 0.0);
    if per_scenario.contains_key("edge-l2") && !measured_hgetall {
        problems.push("no Redis HGETALL round trip was measured".to_string());
    }
    let recomputed = compare(&report.runs, report.redis_hgetall.as_ref());
    if !nearly_equal(&report.comparison, &recomputed) {
        problems
            .push("the comparison with the hello-world baseline does not match the runs".into());
    }
    for run in &report.runs {
        let compared = report.comparison.vs_hello.iter().any(|v| {
            v.scenario == run.scenario
                && v.keys == run.keys
                && run.runtime.as_deref() == Some(v.runtime.as_str())
        });
        if run.runtime.is_some() && run.scenario != HELLO && !compared {
            problems.push(format!(
                "{}: not compared with the hello-world baseline",
                run.label()
            ));
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the benchmark report has problems:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// The same values up to float rounding (JSON does not bring every `f64` back bit for bit).
fn nearly_equal<T: Serialize>(a: &T, b: &T) -> bool {
    use serde_json::Value;
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => same(&a, &b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, requests: u64) -> Run {
        Run {
            scenario: scenario.into(),
            keys: "zipf".into(),
            target: "edge".into(),
            runtime: None,
            description: "d".into(),
            result: LoadResult {
                requests,
                rps: requests as f64,
                latency_us: crate::load::Latency {
                    p50: 1000,
                    p99: 2000,
                    ..Default::default()
                },
                x_cache: [("L1".to_string(), 87), ("L2".to_string(), 13)].into(),
                ..Default::default()
            },
            check_failed: None,
        }
    }

    /// A run of `scenario / keys` under `runtime` with these req/s and p50/p99 (µs).
    fn timed(scenario: &str, keys: &str, runtime: &str, rps: f64, p50: u64, p99: u64) -> Run {
        let mut r = run(scenario, 100);
        r.keys = keys.into();
        r.runtime = Some(runtime.into());
        r.result.rps = rps;
        r.result.latency_us.p50 = p50;
        r.result.latency_us.p99 = p99;
        r
    }

    fn hgetall(p50_us: f64) -> RoundTrip {
        RoundTrip {
            command: "HGETALL user:profile:1".into(),
            samples: 1000,
            p50_us,
            p99_us: p50_us * 2.0,
            mean_us: p50_us,
        }
    }

    fn report(runs: Vec<Run>) -> Report {
        let mut report = Report {
            schema: SCHEMA,
            started_at_unix: 0,
            machine: Machine::default(),
            settings: Settings::default(),
            setup_s: 0.0,
            total_s: 0.0,
            edge_runtime: EdgeRuntimes {
                runtimes: vec!["spin".into()],
                why: "default: Spin found".into(),
                spin: Some("spin 4.0.2 (/usr/bin/spin)".into()),
            },
            redis_hgetall: Some(hgetall(100.0)),
            runs,
            skipped: Vec::new(),
            comparison: Comparison::default(),
        };
        report.finish();
        report
    }

    /// Every scenario once, the per-runtime ones under Spin.
    fn complete() -> Report {
        report(
            SCENARIOS
                .iter()
                .map(|s| {
                    let mut r = run(s, 10);
                    if RUNTIME_SCENARIOS.contains(s) {
                        r.runtime = Some("spin".into());
                    }
                    r
                })
                .collect(),
        )
    }

    #[test]
    fn an_l2_hit_is_read_against_the_redis_binding_of_its_keys_and_runtime() {
        let runs = [
            timed(HELLO, "uniform", "spin", 4000.0, 800, 2000),
            timed(HELLO_REDIS, "zipf", "spin", 2000.0, 1000, 3000),
            timed("edge-l2", "zipf", "spin", 1500.0, 1800, 4500),
            // No hello-redis run with these keys: nothing to read it against.
            timed("edge-l2", "uniform", "spin", 1500.0, 1800, 4500),
        ];
        let c = compare(&runs, None);
        assert_eq!(
            c.l2_vs_binding,
            [VsHello {
                scenario: "edge-l2".into(),
                keys: "zipf".into(),
                runtime: "spin".into(),
                rps_ratio: 0.75,
                p50_minus_hello_us: 800,
                p99_ratio: 1.5,
            }]
        );
        // The binding's baseline is no edge: it has no share of reads at the edge.
        assert!(c.edge_share.iter().all(|e| e.scenario == "edge-l2"));
    }

    #[test]
    fn verify_wants_every_scenario_with_requests() {
        let complete = complete();
        verify(&complete).unwrap();

        let mut missing = complete.clone();
        missing.runs.retain(|r| r.scenario != "origin-miss");
        let e = verify(&missing).unwrap_err().to_string();
        assert!(e.contains("origin-miss is missing"), "{e}");

        let mut idle = complete.clone();
        idle.runs[2].result.requests = 0;
        assert!(
            verify(&idle)
                .unwrap_err()
                .to_string()
                .contains("no requests")
        );

        let mut wrong = complete.clone();
        wrong.runs[0].check_failed = Some("L1 12% < 50%".into());
        assert!(verify(&wrong).unwrap_err().to_string().contains("L1 12%"));

        // And it survives a round trip through JSON, with figures that do not come back bit for bit.
        let mut odd = complete;
        for (i, run) in odd.runs.iter_mut().enumerate() {
            run.result.rps = 4_791.123_456_789 + i as f64 / 3.0;
            run.result.latency_us.p99 = 38_711 + i as u64;
        }
        odd.redis_hgetall = Some(hgetall(123.456_789_012_345));
        odd.finish();
        let json = serde_json::to_string(&odd).unwrap();
        verify(&serde_json::from_str(&json).unwrap()).unwrap();
    }

    #[test]
    fn verify_wants_every_edge_scenario_under_every_runtime_named() {
        let complete = complete();

        // The report says the host ran too, but it has no host runs.
        let mut both = complete.clone();
        both.edge_runtime.runtimes.push("host".into());
        let e = verify(&both).unwrap_err().to_string();
        for s in RUNTIME_SCENARIOS {
            assert!(
                e.contains(&format!("scenario {s} under host is missing")),
                "{e}"
            );
        }

        // An edge run without its runtime, and one under a runtime the report does not name.
        let mut unnamed = complete.clone();
        let i = unnamed
            .runs
            .iter()
            .position(|r| r.scenario == "edge-l2")
            .unwrap();
        unnamed.runs[i].runtime = None;
        let e = verify(&unnamed).unwrap_err().to_string();
        assert!(e.contains("edge-l2 / zipf: no edge runtime"), "{e}");
        unnamed.runs[i].runtime = Some("host".into());
        let e = verify(&unnamed).unwrap_err().to_string();
        assert!(
            e.contains("runtime host is not one the report names"),
            "{e}"
        );

        // The baseline is a scenario like the others: without it nothing is compared.
        let mut no_hello = complete.clone();
        no_hello.runs.retain(|r| r.scenario != HELLO);
        no_hello.finish();
        let e = verify(&no_hello).unwrap_err().to_string();
        assert!(e.contains("scenario hello is missing"), "{e}");
        assert!(e.contains("edge-l1-hot / zipf / spin: not compared"), "{e}");

        // The stored comparison must be the one the runs give.
        let mut tampered = complete.clone();
        tampered.comparison.vs_hello[0].rps_ratio = 0.99;
        let e = verify(&tampered).unwrap_err().to_string();
        assert!(e.contains("does not match the runs"), "{e}");

        // An L2 scenario needs the Redis round trip it is read against.
        let mut no_rtt = complete.clone();
        no_rtt.redis_hgetall = None;
        no_rtt.finish();
        let e = verify(&no_rtt).unwrap_err().to_string();
        assert!(e.contains("no Redis HGETALL round trip"), "{e}");

        let mut nothing = complete;
        nothing.edge_runtime.runtimes.clear();
        let e = verify(&nothing).unwrap_err().to_string();
        assert!(e.contains("names no edge runtime"), "{e}");
    }

    /// An edge run with these `x-cache` counts.
    fn answered(scenario: &str, keys: &str, runtime: &str, x_cache: &[(&str, u64)]) -> Run {
        let mut r = timed(scenario, keys, runtime, 1000.0, 1000, 2000);
        r.result.x_cache = x_cache.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r
    }

    #[test]
    fn shared_hits_count_as_answered_at_the_edge() {
        let run = answered(
            EDGE_SHARED,
            "zipf",
            "spin",
            &[("L1", 20), ("SHARED", 55), ("L2", 25)],
        );
        assert!((share_of(&run.result, EDGE_TIERS) - 0.75).abs() < 1e-12);
        assert!((share_of(&run.result, &["L1", "SHARED", "L2"]) - 1.0).abs() < 1e-12);
        assert_eq!(share_of(&run.result, &["MISS"]), 0.0);
        let c = compare(
            &[
                timed(HELLO, "uniform", "spin", 1000.0, 1000, 1000),
                run,
                answered("edge-l1-hot", "zipf", "spin", &[("L1", 21), ("L2", 79)]),
                // Uniform keys and the hello-world baseline are not in the edge-share table.
                answered(
                    EDGE_SHARED,
                    "uniform-hot",
                    "spin",
                    &[("L1", 90), ("SHARED", 10)],
                ),
            ],
            None,
        );
        let share = |s: &str| c.edge_share.iter().find(|e| e.scenario == s).unwrap();
        assert_eq!(c.edge_share.len(), 2);
        let e = share(EDGE_SHARED);
        assert!((e.l1 - 0.2).abs() < 1e-12 && (e.shared - 0.55).abs() < 1e-12);
        assert!((e.share - 0.75).abs() < 1e-12);
        let e = share("edge-l1-hot");
        assert!((e.share - 0.21).abs() < 1e-12 && e.shared == 0.0);
    }

    #[test]
    fn the_edge_share_goal_is_met_or_not_from_edge_shared_zipf() {
        let goal = |x_cache: &[(&str, u64)]| {
            let runs = vec![
                timed(HELLO, "uniform", "spin", 1000.0, 1000, 1000),
                answered(EDGE_SHARED, "zipf", "spin", x_cache),
                // Tier 1 alone answers far more here, but the goal is read from the shared tier's run.
                answered("edge-l1-hot", "zipf", "spin", &[("L1", 99), ("L2", 1)]),
            ];
            let c = compare(&runs, None);
            let found: Vec<&Goal> = c
                .goals
                .iter()
                .filter(|g| g.goal.starts_with("edge without Redis"))
                .collect();
            assert_eq!(found.len(), 1, "{:?}", c.goals);
            found[0].clone()
        };
        // 21 % (issue 12's figure before the shared tier): not met.
        let g = goal(&[("L1", 21), ("L2", 79)]);
        assert!(!g.met && (g.measured - 0.21).abs() < 1e-12, "{g:?}");
        assert_eq!(
            (g.limit, g.unit.as_str(), g.run.as_str()),
            (0.7, "%", "edge-shared / zipf")
        );
        // Tier 1 and the shared tier together: 30 % + 45 % = 75 %, met; the bound itself is met.
        assert!(goal(&[("L1", 30), ("SHARED", 45), ("L2", 25)]).met);
        assert!(goal(&[("L1", 30), ("SHARED", 40), ("L2", 30)]).met);
        assert!(!goal(&[("L1", 30), ("SHARED", 39), ("L2", 31)]).met);
        // Without an edge-shared run (the bundled host), there is no such goal.
        let c = compare(&spin_and_host(), None);
        assert!(
            !c.goals
                .iter()
                .any(|g| g.goal.starts_with("edge without Redis"))
        );

        // The report shows the share table and the goal as a percentage.
        let mut r = report(vec![
            timed(HELLO, "uniform", "spin", 1000.0, 1000, 1000),
            answered(
                EDGE_SHARED,
                "zipf",
                "spin",
                &[("L1", 30), ("SHARED", 45), ("L2", 25)],
            ),
        ]);
        r.finish();
        let md = r.markdown();
        assert!(
            md.contains("| edge-shared | zipf | spin | 30.0 % | 45.0 % | 75.0 % |"),
            "{md}"
        );
        assert!(
            md.contains("| spin | edge without Redis (L1 + SHARED), shared tier on: share of reads ≥ 70 % | edge-shared / zipf | 75.0 % | 70.0 % | met |"),
            "{md}"
        );
    }

    #[test]
    fn shared_tier_scenarios_are_skipped_only_where_there_is_no_key_value_store() {
        assert!(has_key_value_store("spin") && !has_key_value_store("host"));
        let skipped = Skipped::without_key_value_store(["spin", "host"], |_| true);
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].scenario.as_str(), skipped[0].runtime.as_str()),
            (EDGE_SHARED, "host")
        );
        assert!(
            skipped[0].why.contains("no key-value store"),
            "{:?}",
            skipped[0]
        );
        assert!(Skipped::without_key_value_store(["host"], |s| s != EDGE_SHARED).is_empty());

        // A host-only report without edge-shared runs passes when it says why, and only then.
        let mut host = complete();
        host.edge_runtime.runtimes = vec!["host".into()];
        host.runs.retain(|r| r.scenario != EDGE_SHARED);
        for r in host.runs.iter_mut().filter(|r| r.runtime.is_some()) {
            r.runtime = Some("host".into());
        }
        host.finish();
        let e = verify(&host).unwrap_err().to_string();
        assert!(e.contains("scenario edge-shared is missing"), "{e}");
        assert!(
            e.contains("scenario edge-shared under host is missing"),
            "{e}"
        );
        host.skipped = Skipped::without_key_value_store(["host"], |_| true);
        verify(&host).unwrap();
        assert!(
            host.markdown()
                .contains("* edge-shared under host: the host runtime has no key-value store"),
            "{}",
            host.markdown()
        );

        // Spin has a store: skipping there is a problem, and so is running what is reported skipped.
        let mut spin = complete();
        spin.runs.retain(|r| r.scenario != EDGE_SHARED);
        spin.skipped = vec![Skipped {
            scenario: EDGE_SHARED.into(),
            runtime: "spin".into(),
            why: "no reason".into(),
        }];
        spin.finish();
        let e = verify(&spin).unwrap_err().to_string();
        assert!(
            e.contains("under spin was skipped, but spin can run it"),
            "{e}"
        );
        let mut both = complete();
        both.skipped = spin.skipped.clone();
        let e = verify(&both).unwrap_err().to_string();
        assert!(e.contains("both run and reported skipped"), "{e}");
    }

    #[test]
    fn round_trips_summarise_by_nearest_rank() {
        // 1..=100 µs, shuffled.
        let mut samples: Vec<u64> = (1..=100).map(|us| us * 1000).collect();
        samples.reverse();
        samples.swap(3, 70);
        let rt = RoundTrip::from_samples("HGETALL k", samples);
        assert_eq!(rt.samples, 100);
        assert_eq!(rt.p50_us, 50.0);
        assert_eq!(rt.p99_us, 99.0);
        assert_eq!(rt.mean_us, 50.5);
        let one = RoundTrip::from_samples("PING", vec![1500]);
        assert_eq!((one.p50_us, one.p99_us), (1.5, 1.5));
    }

    /// The figures: hello 5,903 req/s, p50 2.69 ms, p99 5.82 ms under Spin.
    fn spin_and_host() -> Vec<Run> {
        vec![
            timed(HELLO, "uniform", "spin", 5903.0, 2690, 5820),
            timed("edge-l1-hot", "uniform-hot", "spin", 4791.0, 3110, 38_700),
            timed("edge-l2", "uniform", "spin", 2893.0, 4820, 47_100),
            timed(HELLO, "uniform", "host", 9000.0, 1500, 4000),
            timed("edge-l1-hot", "uniform-hot", "host", 7864.0, 1900, 7120),
            timed("edge-l2", "uniform", "host", 3500.0, 2500, 7000),
            // An origin run takes no part.
            run("origin-hit", 50_000),
        ]
    }

    #[test]
    fn edge_runs_read_against_the_hello_run_of_their_runtime() {
        let c = compare(&spin_and_host(), Some(&hgetall(120.0)));
        let l1 = &c.vs_hello[0];
        assert_eq!(
            (l1.scenario.as_str(), l1.runtime.as_str()),
            ("edge-l1-hot", "spin")
        );
        assert!((l1.rps_ratio - 4791.0 / 5903.0).abs() < 1e-12);
        assert_eq!(l1.p50_minus_hello_us, 420);
        assert!((l1.p99_ratio - 38_700.0 / 5820.0).abs() < 1e-12);
        let l2_host = c
            .vs_hello
            .iter()
            .find(|v| v.scenario == "edge-l2" && v.runtime == "host")
            .unwrap();
        // Against the host's own baseline, not Spin's.
        assert!((l2_host.rps_ratio - 3500.0 / 9000.0).abs() < 1e-12);
        assert_eq!(l2_host.p50_minus_hello_us, 1000);
        // Four edge runs; neither hello nor the origin is in the table.
        assert_eq!(c.vs_hello.len(), 4);

        // A runtime without its baseline is not compared.
        let no_host_hello: Vec<Run> = spin_and_host()
            .into_iter()
            .filter(|r| !(r.scenario == HELLO && r.runtime.as_deref() == Some("host")))
            .collect();
        let c = compare(&no_host_hello, None);
        assert!(c.vs_hello.iter().all(|v| v.runtime == "spin"));
    }

    #[test]
    fn goals_are_met_or_not_per_runtime() {
        let c = compare(&spin_and_host(), Some(&hgetall(120.0)));
        let goal = |runtime: &str, prefix: &str| {
            c.goals
                .iter()
                .find(|g| g.runtime == runtime && g.goal.starts_with(prefix))
                .unwrap_or_else(|| panic!("no goal {prefix} for {runtime}: {:?}", c.goals))
        };
        // Spin, with the figures: 0.81 × hello req/s, 6.6 × hello p99, +2.13 ms at p50.
        let g = goal("spin", "L1 hit: req/s");
        assert!(!g.met && (g.measured - 0.8116).abs() < 1e-3 && g.limit == 0.9);
        assert!(!goal("spin", "L1 hit: p99").met);
        let g = goal("spin", "L2 hit: p50");
        assert_eq!(g.unit, "ms");
        assert!((g.measured - 2.13).abs() < 1e-9 && (g.limit - 0.24).abs() < 1e-9);
        assert!(!g.met);
        assert!(!goal("spin", "L2 hit: p99").met);
        // The host: 0.87 × req/s (not met), 1.78 × p99 (met); L2 +1.0 ms (not met), 1.75 × p99 (met).
        assert!(!goal("host", "L1 hit: req/s").met);
        assert!(goal("host", "L1 hit: p99").met);
        assert!(!goal("host", "L2 hit: p50").met);
        assert!(goal("host", "L2 hit: p99").met);
        assert_eq!(c.goals.len(), 8);

        // The bounds themselves count as met.
        let at_bounds = vec![
            timed(HELLO, "uniform", "spin", 1000.0, 1000, 1000),
            timed("edge-l1-hot", "uniform-hot", "spin", 900.0, 1000, 2000),
            timed("edge-l2", "uniform", "spin", 1000.0, 1240, 2000),
        ];
        let c = compare(&at_bounds, Some(&hgetall(120.0)));
        assert!(c.goals.iter().all(|g| g.met), "{:?}", c.goals);
        // Without a measured round trip, the L2 p50 goal cannot be read and is left out.
        let c = compare(&at_bounds, None);
        assert!(!c.goals.iter().any(|g| g.goal.starts_with("L2 hit: p50")));
        assert_eq!(c.goals.len(), 3);
    }

    #[test]
    fn the_host_is_read_against_spin_when_both_ran() {
        let c = compare(&spin_and_host(), None);
        assert_eq!(c.host_vs_spin.len(), 3);
        let by = |s: &str| c.host_vs_spin.iter().find(|h| h.scenario == s).unwrap();
        // 7,864 / 4,791 = 1.64: outside ±25 %.
        let l1 = by("edge-l1-hot");
        assert!((l1.rps_ratio - 7864.0 / 4791.0).abs() < 1e-12 && !l1.within);
        assert!((l1.p50_ratio - 1900.0 / 3110.0).abs() < 1e-12);
        // 3,500 / 2,893 = 1.21: within.
        assert!(by("edge-l2").within);
        // Spin alone: nothing to compare.
        let spin_only: Vec<Run> = spin_and_host()
            .into_iter()
            .filter(|r| r.runtime.as_deref() != Some("host"))
            .collect();
        assert!(compare(&spin_only, None).host_vs_spin.is_empty());
    }

    #[test]
    fn tables_show_latency_in_ms_and_hits_by_share() {
        let mut r = report(vec![run("edge-l1-hot", 1000)]);
        r.runs[0].runtime = Some("spin".into());
        r.runs[0].result.latency_us.p50 = 450;
        r.runs[0].result.latency_us.p99 = 12_345;
        let md = r.markdown_table();
        assert!(
            md.contains("| edge-l1-hot | zipf | spin | 1000 | 0.45 |"),
            "{md}"
        );
        assert!(md.contains("| 12.3 |"), "{md}");
        assert!(md.contains("L1 87.0% · L2 13.0%"), "{md}");
        let text = r.table().to_string();
        assert!(
            text.contains("edge-l1-hot") && text.contains("0.45"),
            "{text}"
        );
        assert!(
            r.markdown()
                .contains("![Latency by percentile](latency.svg)")
        );
    }

    #[test]
    fn the_report_shows_the_ratios_goals_and_runtimes() {
        let mut r = report(spin_and_host());
        r.settings.build = "release".into();
        r.edge_runtime.runtimes = vec!["spin".into(), "host".into()];
        r.redis_hgetall = Some(hgetall(120.0));
        r.finish();
        let md = r.markdown();
        assert!(md.contains("Edge runtime: **spin and host**"), "{md}");
        assert!(
            md.contains("| edge-l1-hot | uniform-hot | spin | 0.81 | +0.42 | 6.6 |"),
            "{md}"
        );
        assert!(
            md.contains("| edge-l2 | uniform | host | 0.39 | +1.00 | 1.8 |"),
            "{md}"
        );
        assert!(md.contains("p50 0.120 ms, p99 0.240 ms"), "{md}");
        assert!(
            md.contains(
                "| spin | L1 hit: req/s ÷ hello req/s ≥ 0.9 | edge-l1-hot / uniform-hot | 0.81 × | 0.90 × | **not met** |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| host | L2 hit: p99 ÷ hello p99 ≤ 2 | edge-l2 / uniform | 1.75 × | 2.00 × | met |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| spin | L2 hit: p50 − hello p50 ≤ 2 × Redis HGETALL p50 | edge-l2 / uniform | 2.130 ms | 0.240 ms | **not met** |"),
            "{md}"
        );
        assert!(
            md.contains("| edge-l1-hot | uniform-hot | 1.64 | 0.61 | 0.18 | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| hello | uniform | 1.52 | 0.56 | 0.69 | (baseline) |"),
            "{md}"
        );
        assert!(!md.contains("debug build"), "{md}");
        r.settings.build = "debug".into();
        assert!(
            r.markdown()
                .contains("The bundled host is a debug build here")
        );
    }
}
