//! The check the test suite runs on a report.

use std::collections::BTreeMap;

use serde::Serialize;

use super::*;

/// Checks a report the way the test suite does: it lists every scenario, every run answered requests,
/// and every run measured what it claims.
pub fn verify(report: &Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        report.schema == SCHEMA,
        "report schema {} (expected {SCHEMA})",
        report.schema
    );
    let mut problems = runtime_problems(report);
    problems.extend(run_problems(report));
    problems.extend(scenario_problems(report));
    problems.extend(comparison_problems(report));
    anyhow::ensure!(
        problems.is_empty(),
        "the benchmark report has problems:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// The report names its edge runtimes, each a known one.
fn runtime_problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
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
    problems
}

/// Each run answered requests, measured what it claims, and has a runtime exactly when its scenario
/// runs on the edge.
fn run_problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    let runtimes = &report.edge_runtime.runtimes;
    for run in &report.runs {
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
    problems
}

/// Every scenario ran (under each runtime, for the edge's), unless the runtime cannot run it and the
/// report says so.
fn scenario_problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    let runtimes = &report.edge_runtime.runtimes;
    let mut per_scenario: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &report.runs {
        *per_scenario.entry(run.scenario.as_str()).or_default() += 1;
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
    problems
}

/// The Redis round trip was measured when an L2 run needs it, and the comparison is the one the runs
/// give, every edge run in it.
fn comparison_problems(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    let ran_l2 = report.runs.iter().any(|r| r.scenario == "edge-l2");
    let measured_hgetall = report
        .redis_hgetall
        .as_ref()
        .is_some_and(|rt| rt.samples > 0 && rt.p50_us > 0.0);
    if ran_l2 && !measured_hgetall {
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
    problems
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
