//! The report as tables: for the terminal and `report.md`.

use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use super::*;

impl Report {
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
        let mut out = String::new();
        self.runtime_markdown(&mut out);
        self.baselines_markdown(&mut out);
        self.round_trip_markdown(&mut out);
        self.edge_share_markdown(&mut out);
        self.skipped_markdown(&mut out);
        self.goals_markdown(&mut out);
        self.host_vs_spin_markdown(&mut out);
        out
    }

    /// The edge runtime line (and a warning when the bundled host is a debug build).
    fn runtime_markdown(&self, out: &mut String) {
        let e = &self.edge_runtime;
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
    }

    /// The runs against the hello-world baseline, and `edge-l2` against hello-redis.
    fn baselines_markdown(&self, out: &mut String) {
        let c = &self.comparison;
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
    }

    /// The Redis round trip the L2 goal is read against.
    fn round_trip_markdown(&self, out: &mut String) {
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
    }

    /// The share of Zipf reads answered at the edge without Redis.
    fn edge_share_markdown(&self, out: &mut String) {
        let c = &self.comparison;
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
    }

    /// The scenarios a runtime could not run.
    fn skipped_markdown(&self, out: &mut String) {
        if !self.skipped.is_empty() {
            out.push_str("\n### Not run\n\n");
            for s in &self.skipped {
                let _ = writeln!(out, "* {} under {}: {}.", s.scenario, s.runtime, s.why);
            }
        }
    }

    /// The goals, met or not.
    fn goals_markdown(&self, out: &mut String) {
        let c = &self.comparison;
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
    }

    /// The bundled host against Spin, when both ran.
    fn host_vs_spin_markdown(&self, out: &mut String) {
        let c = &self.comparison;
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
    }

    /// `report.md`: settings, machine, the table, what each scenario is, the charts.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.title_markdown(&mut out);
        out.push_str(&self.markdown_table());
        out.push_str(
            "\nLatencies in milliseconds, measured by the load generator from sending a request to \
             reading the whole answer. Hits: the share of successful reads per `x-cache` value. \
             Runtime: what ran the edge (`spin`: `spin up`; `host`: the bundled `aside-host`).\n",
        );
        out.push_str("\n## Edge runtime and the hello-world baseline\n\n");
        out.push_str(&self.comparison_markdown());
        self.failed_markdown(&mut out);
        self.scenarios_markdown(&mut out);
        self.errors_markdown(&mut out);
        out.push_str(
            "\n## Charts\n\n![Latency by percentile](latency.svg)\n\n![Throughput](throughput.svg)\n\n\
             (PNG versions beside them: `latency.png`, `throughput.png`.)\n",
        );
        out
    }

    /// The title, the machine and the settings.
    fn title_markdown(&self, out: &mut String) {
        let s = &self.settings;
        let m = &self.machine;
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
        out.push_str(&self.settings.overrides_markdown());
    }

    /// The runs that did not measure what they claim, if any.
    fn failed_markdown(&self, out: &mut String) {
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
    }

    /// What each scenario is.
    fn scenarios_markdown(&self, out: &mut String) {
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
    }

    /// Errors, writes and runs that ran out of fresh ids.
    fn errors_markdown(&self, out: &mut String) {
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
