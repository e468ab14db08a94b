//! Reading the runs against each other: the baselines, the share answered at the edge, the goals, the
//! bundled host against Spin.

use super::*;

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
    let runs = Runs(runs);
    let vs_hello: Vec<VsHello> = runs
        .0
        .iter()
        .filter(|r| r.scenario != HELLO)
        .filter_map(|r| runs.against(r, HELLO, None))
        .collect();
    let l2_vs_binding = runs
        .0
        .iter()
        .filter(|r| r.scenario == "edge-l2")
        .filter_map(|r| runs.against(r, HELLO_REDIS, Some(&r.keys)))
        .collect();
    let edge_share = edge_shares(runs.0);
    let goals = RUNTIMES
        .iter()
        .flat_map(|runtime| {
            let mut goals = Goals {
                runtime,
                list: Vec::new(),
            };
            goals.issue_11(&vs_hello, hgetall);
            goals.auth(runs);
            goals.edge_share(&edge_share);
            goals.list
        })
        .collect();
    Comparison {
        vs_hello,
        edge_share,
        goals,
        host_vs_spin: host_vs_spin(runs),
        l2_vs_binding,
    }
}

/// The runs of a report, to find one by scenario, keys and runtime.
#[derive(Clone, Copy)]
struct Runs<'a>(&'a [Run]);

impl<'a> Runs<'a> {
    /// The run of `scenario` with `keys` (any keys when `None`) under `runtime`.
    fn find(self, scenario: &str, keys: Option<&str>, runtime: &str) -> Option<&'a Run> {
        self.0.iter().find(|r| {
            r.scenario == scenario
                && keys.is_none_or(|k| r.keys == k)
                && r.runtime.as_deref() == Some(runtime)
        })
    }

    /// `run` against `base`'s run of `keys` (any keys when `None`) under the run's runtime.
    fn against(self, run: &Run, base: &str, keys: Option<&str>) -> Option<VsHello> {
        let runtime = run.runtime.as_deref()?;
        let baseline = &self.find(base, keys, runtime)?.result;
        let (rps_ratio, _, p99_ratio) = ratios(&run.result, baseline)?;
        Some(VsHello {
            scenario: run.scenario.clone(),
            keys: run.keys.clone(),
            runtime: runtime.to_string(),
            rps_ratio,
            p50_minus_hello_us: run.result.latency_us.p50 as i64 - baseline.latency_us.p50 as i64,
            p99_ratio,
        })
    }
}

/// Every edge run with Zipf keys (not the baselines): the share of its reads answered at the edge.
fn edge_shares(runs: &[Run]) -> Vec<EdgeShare> {
    runs.iter()
        .filter(|run| {
            ![HELLO, HELLO_REDIS].contains(&run.scenario.as_str())
                && run.keys == "zipf"
                && !run.result.x_cache.is_empty()
        })
        .filter_map(|run| {
            let runtime = run.runtime.as_deref()?;
            let (l1, shared) = (
                share_of(&run.result, &["L1"]),
                share_of(&run.result, &["SHARED"]),
            );
            Some(EdgeShare {
                scenario: run.scenario.clone(),
                keys: run.keys.clone(),
                runtime: runtime.to_string(),
                l1,
                shared,
                share: l1 + shared,
            })
        })
        .collect()
}

/// The goals of one runtime, as they are read.
struct Goals<'a> {
    runtime: &'a str,
    list: Vec<Goal>,
}

impl Goals<'_> {
    /// `measured` against `limit`: met when at most `limit` (`at_most`) or at least.
    fn push(
        &mut self,
        goal: String,
        run: &str,
        (measured, limit): (f64, f64),
        unit: &str,
        at_most: bool,
    ) {
        self.list.push(Goal {
            runtime: self.runtime.to_string(),
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
        });
    }

    /// Issue 11: an L1 hit against hello, an L2 hit against hello and one Redis round trip.
    fn issue_11(&mut self, vs_hello: &[VsHello], hgetall: Option<&RoundTrip>) {
        let runtime = self.runtime;
        let vs = |scenario: &str, keys: &str| {
            vs_hello
                .iter()
                .find(|v| v.scenario == scenario && v.keys == keys && v.runtime == runtime)
                .cloned()
        };
        if let Some(l1) = vs("edge-l1-hot", "uniform-hot") {
            let run = "edge-l1-hot / uniform-hot";
            self.push(
                format!("L1 hit: req/s ÷ hello req/s ≥ {}", goal::L1_RPS_RATIO),
                run,
                (l1.rps_ratio, goal::L1_RPS_RATIO),
                "×",
                false,
            );
            self.push(
                format!("L1 hit: p99 ÷ hello p99 ≤ {}", goal::P99_RATIO),
                run,
                (l1.p99_ratio, goal::P99_RATIO),
                "×",
                true,
            );
        }
        if let Some(l2) = vs("edge-l2", "uniform") {
            let run = "edge-l2 / uniform";
            if let Some(rt) = hgetall {
                self.push(
                    format!(
                        "L2 hit: p50 − hello p50 ≤ {} × Redis HGETALL p50",
                        goal::L2_ROUND_TRIPS
                    ),
                    run,
                    (
                        l2.p50_minus_hello_us as f64 / 1000.0,
                        goal::L2_ROUND_TRIPS * rt.p50_us / 1000.0,
                    ),
                    "ms",
                    true,
                );
            }
            self.push(
                format!("L2 hit: p99 ÷ hello p99 ≤ {}", goal::P99_RATIO),
                run,
                (l2.p99_ratio, goal::P99_RATIO),
                "×",
                true,
            );
        }
    }

    /// Issue 25: auth on (every edge scenario) against the same L1 reads with auth off.
    fn auth(&mut self, runs: Runs) {
        let (Some(on), Some(off)) = (
            runs.find("edge-l1-hot", Some("uniform-hot"), self.runtime),
            runs.find(EDGE_AUTH_OFF, Some("uniform-hot"), self.runtime),
        ) else {
            return;
        };
        let Some((rps_ratio, _, _)) = ratios(&on.result, &off.result) else {
            return;
        };
        let run = "edge-l1-hot / uniform-hot vs edge-l1-auth-off";
        self.push(
            format!(
                "auth on: L1 req/s ÷ auth off L1 req/s ≥ {}",
                goal::AUTH_RPS_RATIO
            ),
            run,
            (rps_ratio, goal::AUTH_RPS_RATIO),
            "×",
            false,
        );
        self.push(
            format!(
                "auth on: L1 p50 − auth off L1 p50 ≤ {} ms",
                goal::AUTH_P50_ADDED_MS
            ),
            run,
            (
                (on.result.latency_us.p50 as f64 - off.result.latency_us.p50 as f64) / 1000.0,
                goal::AUTH_P50_ADDED_MS,
            ),
            "ms",
            true,
        );
    }

    /// Issue 12: the share of Zipf reads the edge with the shared tier answers without Redis.
    fn edge_share(&mut self, shares: &[EdgeShare]) {
        let shared = shares
            .iter()
            .find(|e| e.scenario == EDGE_SHARED && e.runtime == self.runtime);
        if let Some(e) = shared {
            self.push(
                format!(
                    "edge without Redis (L1 + SHARED), shared tier on: share of reads ≥ {:.0} %",
                    goal::EDGE_SHARE * 100.0
                ),
                "edge-shared / zipf",
                (e.share, goal::EDGE_SHARE),
                "%",
                false,
            );
        }
    }
}

/// Each run of the bundled host against the same run under Spin, when both ran.
fn host_vs_spin(runs: Runs) -> Vec<HostVsSpin> {
    runs.0
        .iter()
        .filter(|r| r.runtime.as_deref() == Some("host"))
        .filter_map(|host| {
            let spin = runs.find(&host.scenario, Some(&host.keys), "spin")?;
            let (rps_ratio, p50_ratio, p99_ratio) = ratios(&host.result, &spin.result)?;
            Some(HostVsSpin {
                scenario: host.scenario.clone(),
                keys: host.keys.clone(),
                rps_ratio,
                p50_ratio,
                p99_ratio,
                within: (rps_ratio - 1.0).abs() <= goal::HOST_VS_SPIN,
            })
        })
        .collect()
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
}
