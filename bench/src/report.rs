//! The results of one benchmark: `report.json` (everything), `report.md` (a page to read), the table
//! printed at the end, and [`verify`], the check the test suite runs on a quick report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

use crate::load::LoadResult;

/// Bumped when the JSON layout changes incompatibly.
pub const SCHEMA: u32 = 1;

/// The scenarios, in the order the report shows them.
pub const SCENARIOS: &[&str] = &[
    "edge-l1-hot",
    "edge-l2",
    "edge-miss",
    "origin-hit",
    "origin-miss",
    "postgres-only",
    "mix-95-5",
];

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
    pub description: String,
    pub result: LoadResult,
    /// Why the run did not measure what it claims (e.g. a hits scenario that mostly missed); `None` when
    /// it did.
    pub check_failed: Option<String>,
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
    pub runs: Vec<Run>,
}

impl Report {
    /// The runs in report order (scenario order, then key distribution).
    pub fn sort_runs(&mut self) {
        let rank = |s: &str| SCENARIOS.iter().position(|x| *x == s).unwrap_or(usize::MAX);
        // The skewed (realistic) choice first, then the uniform one.
        let keys = |k: &str| usize::from(k.starts_with("uniform"));
        self.runs
            .sort_by_key(|r| (rank(&r.scenario), keys(&r.keys)));
    }

    /// The results table, for the terminal.
    pub fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(HEADER);
        for run in &self.runs {
            let cells = row(run);
            table.add_row(cells.into_iter().enumerate().map(|(i, text)| {
                let cell = Cell::new(text);
                if (2..=7).contains(&i) {
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
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(
            out,
            "| {} |",
            HEADER
                .iter()
                .enumerate()
                .map(|(i, _)| if (2..=7).contains(&i) { "---:" } else { "---" })
                .collect::<Vec<_>>()
                .join(" | ")
        );
        for run in &self.runs {
            let _ = writeln!(out, "| {} |", row(run).join(" | "));
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
        out.push_str(&self.markdown_table());
        out.push_str(
            "\nLatencies in milliseconds, measured by the load generator from sending a request to \
             reading the whole answer. Hits: the share of successful reads per `x-cache` value.\n",
        );
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
                    "* {} / {}: {}",
                    r.scenario,
                    r.keys,
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
                let _ = writeln!(out, "* {} / {}: {}", r.scenario, r.keys, notes.join("; "));
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

const HEADER: [&str; 9] = [
    "scenario", "keys", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "hits",
];

fn row(run: &Run) -> Vec<String> {
    let r = &run.result;
    vec![
        run.scenario.clone(),
        run.keys.clone(),
        format!("{:.0}", r.rps),
        ms(r.latency_us.p50),
        ms(r.latency_us.p90),
        ms(r.latency_us.p99),
        ms(r.latency_us.p999),
        r.errors.to_string(),
        hits(r),
    ]
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
    for run in &report.runs {
        *per_scenario.entry(run.scenario.as_str()).or_default() += 1;
        if run.result.requests == 0 {
            problems.push(format!("{} / {}: no requests", run.scenario, run.keys));
        }
        if let Some(why) = &run.check_failed {
            problems.push(format!("{} / {}: {why}", run.scenario, run.keys));
        }
    }
    for s in SCENARIOS {
        if !per_scenario.contains_key(s) {
            problems.push(format!("scenario {s} is missing"));
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the benchmark report has problems:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, requests: u64) -> Run {
        Run {
            scenario: scenario.into(),
            keys: "zipf".into(),
            target: "edge".into(),
            description: "d".into(),
            result: LoadResult {
                requests,
                rps: requests as f64,
                x_cache: [("L1".to_string(), 87), ("L2".to_string(), 13)].into(),
                ..Default::default()
            },
            check_failed: None,
        }
    }

    fn report(runs: Vec<Run>) -> Report {
        Report {
            schema: SCHEMA,
            started_at_unix: 0,
            machine: Machine::default(),
            settings: Settings::default(),
            setup_s: 0.0,
            total_s: 0.0,
            runs,
        }
    }

    #[test]
    fn verify_wants_every_scenario_with_requests() {
        let complete = report(SCENARIOS.iter().map(|s| run(s, 10)).collect());
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

        // And it survives a round trip through JSON.
        let json = serde_json::to_string(&complete).unwrap();
        verify(&serde_json::from_str(&json).unwrap()).unwrap();
    }

    #[test]
    fn tables_show_latency_in_ms_and_hits_by_share() {
        let mut r = report(vec![run("edge-l1-hot", 1000)]);
        r.runs[0].result.latency_us.p50 = 450;
        r.runs[0].result.latency_us.p99 = 12_345;
        let md = r.markdown_table();
        assert!(md.contains("| edge-l1-hot | zipf | 1000 | 0.45 |"), "{md}");
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
}
