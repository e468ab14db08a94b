//! Issue 29's scenario (docs/benchmarks.md, "Overload"), run after the others on the same stack and
//! written to `report-overload.{json,md}` beside the main report: a traffic spike through the edge
//! (client authentication on, as users run it), then the same load on two baselines: hello-world (the
//! runtime alone) and hello-redis (the runtime and one `HGETALL` through its Redis binding per request:
//! what any component that reads Redis pays under the same spike).
//!
//! * **The edge**: Zipf reads over every profile (Redis holds them all) from 16 connections, then
//!   from 1,024 at once (the spike), then from 16 again for 5 s (the recovery). Each phase is measured
//!   from its first request (no warm-up: a spike's first second is part of it): goodput (2xx answers
//!   a second), the answers by status, answers without `x-cache`, p50/p99, the tier mix, the answers
//!   that waited for a new instance (`server-timing: start`), and the origin's reads of `/users/{id}`
//!   by the origin's own `/metrics` (what the phase cost it).
//! * **The edge with the shared tier on** (full runs under a runtime with a key-value store: Spin): the
//!   same three phases on the edge whose instances share Spin's in-memory key-value store, which the
//!   spike's new instances find warm; its goals on their own line (recovery by p50 alone).
//! * **Memory**: the resident memory (VmRSS) of the runtime's process and its children, sampled every
//!   200 ms during each phase (its peak), for the edge and for hello-world under the same spike.
//!
//! `--quick` (what the test suite runs) keeps it to a few seconds with a 128-connection spike; `verify`
//! checks what the scenario claims (every phase answered; no `500` and no answer without `x-cache`
//! from the edge; the figures present), never a speed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use aside_bench::load::LoadResult;
use aside_bench::report;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::catalogue::Target;
use crate::config::Config;
use crate::run::{loader_args, read_beside, run_loader, write_beside, zipf_reads};
use crate::runtime::Rt;
use crate::stack::Stack;
use aside_bench::redis_admin::RedisAdmin;

/// The name `--only` knows this scenario by.
pub const NAME: &str = crate::catalogue::OVERLOAD;
/// The file beside `report.json`.
pub const FILE: &str = "report-overload.json";
/// Connections before and after the spike (the issue's "16").
const CALM: usize = 16;
/// Connections during the spike: the issue's 1,024; fewer in `--quick`.
const SPIKE: usize = 1024;
const SPIKE_QUICK: usize = 128;
/// The issue's recovery bound: the phase after the spike lasts this long.
const RECOVERY_S: f64 = 10.0;
/// The phases' target names: the edge as users run it by default, and with the shared tier on.
const EDGE: &str = "edge";
const EDGE_SHARED: &str = "edge-shared";
/// How often the runtime's memory is read during a phase.
const RSS_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverloadReport {
    pub runtime: String,
    pub mode: String,
    pub rows: u64,
    /// The edge's client authentication (the edge target runs with it on).
    pub auth: String,
    pub calm_connections: usize,
    pub spike_connections: usize,
    /// Length of the calm and spike phases, in seconds.
    pub phase_s: f64,
    pub phases: Vec<Phase>,
    /// The issue's goals, computed from the phases.
    pub goals: Goals,
}

/// One phase of the load on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    /// `edge` or `hello`.
    pub target: String,
    /// `calm`, `spike` or `after`.
    pub phase: String,
    pub connections: usize,
    pub elapsed_s: f64,
    /// Answers of any status.
    pub answers: u64,
    /// 2xx answers a second.
    pub goodput: f64,
    /// Answers by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no answer: timeouts and connection failures, by kind.
    pub unanswered: BTreeMap<String, u64>,
    /// Answers (any status) without `x-cache`.
    pub no_x_cache: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Successful reads per `x-cache` value.
    pub x_cache: BTreeMap<String, u64>,
    /// Successful reads that waited for a new instance (`server-timing: start`) and their mean wait.
    pub instance_starts: u64,
    pub instance_start_mean_ms: Option<f64>,
    /// Reads of `/users/{id}` the origin answered during the phase (its own `/metrics`), and a second.
    pub origin_reads: f64,
    pub origin_rps: f64,
    /// The runtime's resident memory (its process and children), peak over the phase, in MiB.
    pub rss_peak_mib: f64,
    /// Answers (any status) and failed requests in each whole second of the phase.
    pub per_second: Vec<u64>,
    /// The p50 (µs) of each whole second's answers, and its share of successful reads from tier 1.
    #[serde(default)]
    pub per_second_p50_us: Vec<u64>,
    #[serde(default)]
    pub per_second_l1_share: Vec<f64>,
    /// Distinct instances (`x-edge-instance`) that answered during the phase, and in each whole
    /// second of it (none for a target without the header): how many instances share the load.
    #[serde(default)]
    pub instances: u64,
    #[serde(default)]
    pub per_second_instances: Vec<u64>,
    /// CPU time (user + system) of the runtime's process tree during the phase, in ms per answer.
    #[serde(default)]
    pub cpu_ms_per_answer: Option<f64>,
    /// The same for the load generator (its own process), and how busy the machine's cores were
    /// with the two together (100 % = every core for the whole phase).
    #[serde(default)]
    pub loader_cpu_ms_per_answer: Option<f64>,
    #[serde(default)]
    pub cores_busy: Option<f64>,
    /// Commands Redis ran during the phase (`INFO commandstats`), by name, a thousand answers:
    /// `auth` is one per connection opened.
    #[serde(default)]
    pub redis_calls_per_1k: BTreeMap<String, f64>,
    /// Every `server-timing` metric of the phase's successful reads: how many carried it, and its
    /// mean (ms). The instance's start by part (`start_vars`, `start_parse`, `start_setup`), Redis
    /// connections opened (`redis_open`), signatures checked (`auth_verify`).
    #[serde(default)]
    pub server_timing: BTreeMap<String, (u64, f64)>,
}

/// The issue's goals, as measured (a ratio is `None` when its denominator is 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goals {
    /// Edge goodput during the spike ÷ at 16 connections (goal ≥ 0.85).
    pub goodput_ratio: f64,
    /// The same for hello-world (what the runtime itself keeps).
    pub hello_goodput_ratio: Option<f64>,
    /// The same for hello-redis (the runtime and one `HGETALL` through its Redis binding per request).
    #[serde(default)]
    pub hello_redis_goodput_ratio: Option<f64>,
    /// Edge answers `500` in all phases (goal 0).
    pub answers_500: u64,
    /// Edge answers without `x-cache` in all phases (goal 0).
    pub answers_without_x_cache: u64,
    /// Origin reads a second during the spike and at 16 connections (goal: spike ≤ 1.2 × calm).
    pub origin_rps_calm: f64,
    pub origin_rps_spike: f64,
    /// The runtime's peak RSS during the spike: the edge's, hello-world's and their ratio (goal ≤ 2).
    pub edge_rss_spike_mib: f64,
    pub hello_rss_spike_mib: Option<f64>,
    pub rss_ratio: Option<f64>,
    /// Recovery: p50/p99 and the share of reads answered from tier 1 in the 5 s after the spike,
    /// against the calm phase before it.
    pub p50_before_us: u64,
    pub p50_after_us: u64,
    pub p99_before_us: u64,
    pub p99_after_us: u64,
    pub l1_share_before: f64,
    pub l1_share_after: f64,
    /// The first second of the phase after the spike from which every second is back within what the
    /// calm phase before it showed second by second (p50 no higher than its slowest second's, tier-1
    /// share no lower than its lowest): 0 if it never left that band, `None` if it did not come back
    /// within the phase (goal: ≤ 5).
    #[serde(default)]
    pub recovered_after_s: Option<u64>,
    /// The baselines' recovery after the same spike, by p50 alone (as [`Goals::recovered_after_s`]),
    /// by target (`hello`, `hello-redis`), for each whose phase after the spike ran: what the runtime
    /// itself takes to come back.
    #[serde(default)]
    pub baseline_recovered_after_s: BTreeMap<String, Option<u64>>,
    /// The same spike on the edge with the shared tier on (full runs under Spin), when it ran.
    #[serde(default)]
    pub edge_shared: Option<SharedTierGoals>,
}

/// The goals for the edge with the shared tier on: what it changes under the same spike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedTierGoals {
    pub goodput_ratio: f64,
    pub answers_500: u64,
    pub answers_without_x_cache: u64,
    pub origin_rps_calm: f64,
    pub origin_rps_spike: f64,
    pub rss_spike_mib: f64,
    pub p50_before_us: u64,
    pub p50_after_us: u64,
    /// The share of reads answered at the edge (tier 1 or the shared tier), before and after.
    pub edge_share_before: f64,
    pub edge_share_after: f64,
    /// As [`Goals::recovered_after_s`], by p50 alone (a new instance's tier 1 is cold whatever the
    /// shared tier holds, so tier 1's share says less here).
    pub recovered_after_s: Option<u64>,
}

/// See [`Goals::recovered_after_s`]; `by_tier`: tier 1's share counts too (else p50 alone).
fn recovery_second(calm: &Phase, after: &Phase, by_tier: bool) -> Option<u64> {
    let slowest = calm.per_second_p50_us.iter().copied().max()?;
    let lowest_l1 = if by_tier {
        calm.per_second_l1_share
            .iter()
            .copied()
            .min_by(f64::total_cmp)?
    } else {
        0.0
    };
    let normal = |second: usize| {
        let p50 = after.per_second_p50_us.get(second).copied().unwrap_or(0);
        let l1 = after
            .per_second_l1_share
            .get(second)
            .copied()
            .unwrap_or(0.0);
        p50 > 0 && p50 <= slowest && l1 >= lowest_l1
    };
    let seconds = after.per_second_p50_us.len();
    let first_of_last_run = (0..seconds).rev().take_while(|s| normal(*s)).last()?;
    Some(first_of_last_run as u64)
}

/// A recovery second in words.
fn recovery_words(second: Option<u64>) -> String {
    match second {
        Some(0) => "throughout".to_string(),
        Some(s) => format!("from second {s} on"),
        None => "not within the phase".to_string(),
    }
}

/// Runs the spike on the edge, hello-world and hello-redis under `rt`, and writes `report-overload.{json,md}`.
pub fn run(config: &Config, stack: &Stack, rt: Rt) -> anyhow::Result<OverloadReport> {
    let bar = ProgressBar::hidden();
    let spike = if config.quick { SPIKE_QUICK } else { SPIKE };
    let phase_s = if config.quick { 2.0 } else { 10.0 };
    let after_s = if config.quick { 2.0 } else { RECOVERY_S };
    let origin_port = stack.ports.port(Target::Origin);
    let edge = Target::Edge(rt);
    let hello = Target::Hello(rt);
    let hello_redis = Target::HelloRedis(rt);

    // The edge as users run it by default; in full runs under a runtime with a key-value store, then
    // the edge with the shared tier on (the store in memory): the tier every instance of the process
    // reads, which a spike's new instances find warm.
    let mut edges = vec![(edge, EDGE)];
    if !config.quick && rt.has_key_value_store() {
        edges.push((Target::EdgeShared(rt), EDGE_SHARED));
    }
    let mut phases = Vec::new();
    for (target, who) in edges {
        std::thread::sleep(Duration::from_secs(u64::from(!phases.is_empty())));
        // Warm the edge's instances and tier 1 (unmeasured), as before any other scenario.
        if config.warmup > 0.0 {
            load(config, stack, target, "warmup", CALM, config.warmup, &bar)?;
        }
        for (name, connections, seconds) in [
            ("calm", CALM, phase_s),
            ("spike", spike, phase_s),
            ("after", CALM, after_s),
        ] {
            crate::check_stop()?;
            phases.push(phase(
                config,
                stack,
                (target, who, name),
                connections,
                seconds,
                origin_port,
                &bar,
            )?);
        }
    }
    // The baselines under the same load: hello-world (the runtime alone) and hello-redis (the runtime
    // and one `HGETALL` through its Redis binding per request, which is what an L2 hit cannot avoid).
    for (baseline, who) in [(hello, "hello"), (hello_redis, "hello-redis")] {
        std::thread::sleep(Duration::from_secs(1));
        for (name, connections, seconds) in [
            ("calm", CALM, phase_s),
            ("spike", spike, phase_s),
            ("after", CALM, after_s),
        ] {
            crate::check_stop()?;
            phases.push(phase(
                config,
                stack,
                (baseline, who, name),
                connections,
                seconds,
                origin_port,
                &bar,
            )?);
        }
    }
    let report = OverloadReport {
        runtime: rt.name().to_string(),
        mode: if config.quick { "quick" } else { "full" }.into(),
        rows: config.rows,
        auth: "on".into(),
        calm_connections: CALM,
        spike_connections: spike,
        phase_s,
        goals: Goals::of(&phases),
        phases,
    };
    write_beside(config, FILE, &report, &report.markdown())?;
    Ok(report)
}

/// One `aside-load` run of Zipf reads through `target` (no warm-up of its own).
fn load(
    config: &Config,
    stack: &Stack,
    target: Target,
    label: &str,
    connections: usize,
    seconds: f64,
    bar: &ProgressBar,
) -> anyhow::Result<LoadResult> {
    let mut args = loader_args(stack.ports.url(target), target, stack);
    args.extend(zipf_reads(config, connections, seconds));
    args.extend(
        [
            // Longer than the edge's request budget (2 s) and Spin's queue under the spike: an answer
            // that comes is counted as the answer it is, not as a timeout.
            "--timeout",
            "20s",
        ]
        .map(String::from),
    );
    let log = config
        .logs
        .join(format!("load-overload-{}-{label}.log", target.service()));
    run_loader(&config.bin, &args, &log, Some(seconds), bar)
}

/// One measured phase: the load, the origin's reads around it and the runtime's memory during it.
/// (Long: the phase's record, built field by field from what was measured.)
fn phase(
    config: &Config,
    stack: &Stack,
    (target, who, name): (Target, &str, &str),
    connections: usize,
    seconds: f64,
    origin_port: u16,
    bar: &ProgressBar,
) -> anyhow::Result<Phase> {
    let pid = stack
        .services
        .0
        .iter()
        .find(|s| s.name == target.service())
        .map(|s| s.child.id())
        .with_context(|| format!("{} is not running", target.service()))?;
    let before = origin_reads(origin_port)?;
    let mut redis = RedisAdmin::connect(stack.ports.redis, &stack.secrets.redis_admin)?;
    let calls_before = redis.command_calls()?;
    let cpu_before = tree_cpu_ticks(pid);
    let (result, peak_kib) = with_peak_rss(pid, || {
        load(config, stack, target, name, connections, seconds, bar)
    });
    let result = result?;
    let origin = origin_reads(origin_port)? - before;
    let cpu_ticks = tree_cpu_ticks(pid).saturating_sub(cpu_before);
    let calls_after = redis.command_calls()?;
    let per_1k = 1000.0 / (result.requests.max(1) as f64);
    let redis_calls_per_1k = calls_after
        .iter()
        .filter_map(|(name, n)| {
            let ran = n.saturating_sub(calls_before.get(name).copied().unwrap_or(0));
            (ran > 0).then(|| (name.clone(), ran as f64 * per_1k))
        })
        .collect();
    let server_timing = timing_over_tiers(&result);
    let ok: u64 = result
        .statuses
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    let elapsed = result.elapsed_s.max(f64::EPSILON);
    let runtime_cpu_ms = cpu_ticks as f64 * 1000.0 / clock_ticks_per_s();
    let (starts, start_mean_ms) = server_timing
        .get("start")
        .map_or((0, None), |(n, mean)| (*n, Some(*mean)));
    let phase = Phase {
        target: who.to_string(),
        phase: name.to_string(),
        connections,
        elapsed_s: result.elapsed_s,
        answers: result.requests,
        goodput: ok as f64 / elapsed,
        statuses: result.statuses.clone(),
        unanswered: result
            .error_kinds
            .iter()
            .filter(|(k, _)| !k.starts_with("status_"))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        no_x_cache: result.no_x_cache,
        p50_us: result.latency_us.p50,
        p99_us: result.latency_us.p99,
        x_cache: result.x_cache.clone(),
        instance_starts: starts,
        instance_start_mean_ms: start_mean_ms.filter(|_| starts > 0),
        origin_reads: origin,
        origin_rps: origin / elapsed,
        rss_peak_mib: peak_kib as f64 / 1024.0,
        per_second: result.per_second.clone(),
        per_second_p50_us: result.per_second_p50_us.clone(),
        per_second_l1_share: result
            .per_second_l1
            .iter()
            .zip(&result.per_second_reads)
            .map(|(l1, reads)| *l1 as f64 / (*reads).max(1) as f64)
            .collect(),
        instances: result.instances,
        per_second_instances: result.per_second_instances.clone(),
        cpu_ms_per_answer: (result.requests > 0).then(|| runtime_cpu_ms / result.requests as f64),
        loader_cpu_ms_per_answer: result
            .cpu_ms
            .filter(|_| result.requests > 0)
            .map(|ms| ms / result.requests as f64),
        cores_busy: result
            .cpu_ms
            .map(|loader_ms| (runtime_cpu_ms + loader_ms) / (elapsed * 1000.0 * cores())),
        redis_calls_per_1k,
        server_timing,
    };
    eprintln!(
        "overload {who:<5} {name:<5} {connections:>5} conns: goodput {:>7.0}/s  p50 {:>7} ms  p99 {:>7} ms  \
         statuses {:?}  no x-cache {}  origin reads {}  RSS peak {:.0} MiB",
        phase.goodput,
        report::ms(phase.p50_us),
        report::ms(phase.p99_us),
        phase.statuses,
        phase.no_x_cache,
        phase.origin_reads,
        phase.rss_peak_mib
    );
    Ok(phase)
}

/// Runs `work` while reading the resident memory of `pid`'s process tree every [`RSS_EVERY`]; its
/// result and the peak (KiB).
fn with_peak_rss<T: Send>(pid: u32, work: impl FnOnce() -> T) -> (T, u64) {
    let sampling = AtomicBool::new(true);
    let peak_kib = AtomicU64::new(0);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                peak_kib.fetch_max(tree_rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(RSS_EVERY);
            }
        });
        let result = work();
        sampling.store(false, Ordering::Relaxed);
        result
    });
    (result, peak_kib.load(Ordering::Relaxed))
}

/// Every `server-timing` metric over all tiers: how many answers carried it, and its mean (ms).
fn timing_over_tiers(result: &LoadResult) -> BTreeMap<String, (u64, f64)> {
    let mut server_timing: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (tier, counts) in &result.server_timing_n {
        for (metric, n) in counts {
            let mean = result
                .server_timing_ms
                .get(tier)
                .and_then(|m| m.get(metric))
                .copied()
                .unwrap_or(0.0);
            let (total_n, total_ms) = server_timing.entry(metric.clone()).or_default();
            *total_ms += mean * *n as f64;
            *total_n += n;
        }
    }
    for (n, total_ms) in server_timing.values_mut() {
        *total_ms /= (*n).max(1) as f64;
    }
    server_timing
}

/// The origin's answered reads of `/users/{id}` so far (every status), from its `/metrics`.
fn origin_reads(port: u16) -> anyhow::Result<f64> {
    let text = crate::http::get_ok(&crate::http::agent(), port, "/metrics")?;
    Ok(sum_samples(
        &text,
        "aside_origin_http_requests_total",
        &[r#"route="/users/{id}""#, r#"method="GET""#],
    ))
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sum_samples(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// VmRSS of `root` and every process below it, in KiB (0 for processes gone meanwhile).
fn tree_rss_kib(root: u32) -> u64 {
    tree_sum(root, rss_kib)
}

/// CPU time (user + system, in clock ticks) of `root` and every process below it, including the
/// children they have waited for.
fn tree_cpu_ticks(root: u32) -> u64 {
    tree_sum(root, cpu_ticks)
}

/// `of(pid)` summed over `root` and every process below it (from `/proc`'s parent links).
fn tree_sum(root: u32, of: fn(u32) -> u64) -> u64 {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut total = 0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += of(pid);
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    total
}

/// utime + stime + cutime + cstime of `pid` (fields 14-17 of `/proc/<pid>/stat`), 0 if gone.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(4)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0)
}

/// The cores this process may run on.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// The kernel's clock ticks a second (`USER_HZ`): 100 on Linux.
fn clock_ticks_per_s() -> f64 {
    100.0
}

/// The parent of `pid` (from `/proc/<pid>/stat`, after the command's closing parenthesis).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

impl Goals {
    fn of(phases: &[Phase]) -> Self {
        let get = |target: &str, phase: &str| {
            phases
                .iter()
                .find(|p| p.target == target && p.phase == phase)
        };
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let (calm, spike, after) = (
            get("edge", "calm"),
            get("edge", "spike"),
            get("edge", "after"),
        );
        let (hello_calm, hello_spike) = (get("hello", "calm"), get("hello", "spike"));
        let (hello_redis_calm, hello_redis_spike) =
            (get("hello-redis", "calm"), get("hello-redis", "spike"));
        let edge = phases.iter().filter(|p| p.target == "edge");
        let l1 = |p: Option<&Phase>| {
            p.map_or(0.0, |p| {
                let all: u64 = p.x_cache.values().sum();
                p.x_cache.get("L1").copied().unwrap_or(0) as f64 / all.max(1) as f64
            })
        };
        let edge_rss = spike.map_or(0.0, |p| p.rss_peak_mib);
        let hello_rss = hello_spike.map(|p| p.rss_peak_mib);
        Self {
            goodput_ratio: ratio(
                spike.map_or(0.0, |p| p.goodput),
                calm.map_or(0.0, |p| p.goodput),
            )
            .unwrap_or(0.0),
            hello_goodput_ratio: hello_spike
                .zip(hello_calm)
                .and_then(|(s, c)| ratio(s.goodput, c.goodput)),
            hello_redis_goodput_ratio: hello_redis_spike
                .zip(hello_redis_calm)
                .and_then(|(s, c)| ratio(s.goodput, c.goodput)),
            answers_500: edge
                .clone()
                .map(|p| p.statuses.get("500").copied().unwrap_or(0))
                .sum(),
            answers_without_x_cache: edge.map(|p| p.no_x_cache).sum(),
            origin_rps_calm: calm.map_or(0.0, |p| p.origin_rps),
            origin_rps_spike: spike.map_or(0.0, |p| p.origin_rps),
            edge_rss_spike_mib: edge_rss,
            hello_rss_spike_mib: hello_rss,
            rss_ratio: hello_rss.and_then(|h| ratio(edge_rss, h)),
            p50_before_us: calm.map_or(0, |p| p.p50_us),
            p50_after_us: after.map_or(0, |p| p.p50_us),
            p99_before_us: calm.map_or(0, |p| p.p99_us),
            p99_after_us: after.map_or(0, |p| p.p99_us),
            l1_share_before: l1(calm),
            l1_share_after: l1(after),
            recovered_after_s: calm
                .zip(after)
                .and_then(|(c, a)| recovery_second(c, a, true)),
            baseline_recovered_after_s: ["hello", "hello-redis"]
                .into_iter()
                .filter_map(|target| {
                    let (c, a) = (get(target, "calm")?, get(target, "after")?);
                    Some((target.to_string(), recovery_second(c, a, false)))
                })
                .collect(),
            edge_shared: SharedTierGoals::of(phases),
        }
    }
}

impl SharedTierGoals {
    fn of(phases: &[Phase]) -> Option<Self> {
        let get = |phase: &str| {
            phases
                .iter()
                .find(|p| p.target == EDGE_SHARED && p.phase == phase)
        };
        let (calm, spike, after) = (get("calm")?, get("spike")?, get("after")?);
        let all = phases.iter().filter(|p| p.target == EDGE_SHARED);
        let at_edge = |p: &Phase| {
            let total: u64 = p.x_cache.values().sum();
            let edge: u64 = ["L1", "SHARED"]
                .iter()
                .filter_map(|t| p.x_cache.get(*t))
                .sum();
            edge as f64 / total.max(1) as f64
        };
        Some(Self {
            goodput_ratio: if calm.goodput > 0.0 {
                spike.goodput / calm.goodput
            } else {
                0.0
            },
            answers_500: all
                .clone()
                .map(|p| p.statuses.get("500").copied().unwrap_or(0))
                .sum(),
            answers_without_x_cache: all.map(|p| p.no_x_cache).sum(),
            origin_rps_calm: calm.origin_rps,
            origin_rps_spike: spike.origin_rps,
            rss_spike_mib: spike.rss_peak_mib,
            p50_before_us: calm.p50_us,
            p50_after_us: after.p50_us,
            edge_share_before: at_edge(calm),
            edge_share_after: at_edge(after),
            recovered_after_s: recovery_second(calm, after, false),
        })
    }
}

impl OverloadReport {
    pub fn markdown(&self) -> String {
        let mut out = self.phases_table();
        out.push_str(&self.instances_table());
        out.push_str(&self.goals_line());
        out.push_str(&self.shared_tier_line());
        out.push_str(&self.where_time_goes());
        out
    }

    /// The seconds of the phase after the spike.
    fn after_s(&self) -> f64 {
        self.phases
            .iter()
            .find(|p| p.phase == "after")
            .map_or(0.0, |p| p.elapsed_s.round())
    }

    /// The heading and one row per phase.
    fn phases_table(&self) -> String {
        let mut out = format!(
            "## Overload ({}, {} run: {} profiles, Zipf reads, client authentication {}; {} → {} → {} \
             connections, {} s per phase, {} s after)\n\n\
             | target | phase | connections | goodput (2xx/s) | answers by status | no x-cache | unanswered \
             | p50 ms | p99 ms | tiers | instance starts (mean ms) | origin reads (/s) | RSS peak MiB |\n\
             | --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |\n",
            self.runtime,
            self.mode,
            self.rows,
            self.auth,
            self.calm_connections,
            self.spike_connections,
            self.calm_connections,
            self.phase_s,
            self.after_s(),
        );
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        for p in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.0} ({:.1}) | {:.0} |\n",
                p.target,
                p.phase,
                p.connections,
                p.goodput,
                list(&p.statuses),
                p.no_x_cache,
                list(&p.unanswered),
                report::ms(p.p50_us),
                report::ms(p.p99_us),
                list(&p.x_cache),
                match p.instance_start_mean_ms {
                    Some(ms) => format!("{} ({ms:.1})", p.instance_starts),
                    None => "0".into(),
                },
                p.origin_reads,
                p.origin_rps,
                p.rss_peak_mib
            ));
        }
        out
    }

    /// Per phase of each target whose answers name their instance: how many instances answered,
    /// in all and second by second, with the p50 and tier-1 share of the same seconds.
    fn instances_table(&self) -> String {
        let named: Vec<&Phase> = self.phases.iter().filter(|p| p.instances > 0).collect();
        if named.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\nInstances that answered (`x-edge-instance`), in the phase and second by second, beside each \
             second's p50 (ms) and tier-1 share: Spin hands each request to the instance that has waited \
             longest for one, so after a spike the calm load is spread over every instance the spike \
             started until they reach their reuse count.\n\n\
             | target | phase | instances | per second | p50 ms per second | L1 share per second |\n\
             | --- | --- | ---: | --- | --- | --- |\n",
        );
        let join = |v: Vec<String>| v.join(" · ");
        for p in named {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                p.target,
                p.phase,
                p.instances,
                join(p.per_second_instances.iter().map(u64::to_string).collect()),
                join(
                    p.per_second_p50_us
                        .iter()
                        .map(|us| report::ms(*us))
                        .collect()
                ),
                join(
                    p.per_second_l1_share
                        .iter()
                        .map(|s| format!("{:.0} %", s * 100.0))
                        .collect()
                ),
            ));
        }
        out
    }

    /// The issue's goals, computed.
    fn goals_line(&self) -> String {
        let g = &self.goals;
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        format!(
            "\nGoals (issue 29): goodput spike ÷ calm {:.2} (goal ≥ 0.85; hello-world {}, hello-redis {}); answers 500: {} \
             (goal 0); answers without x-cache: {} (goal 0); origin reads/s calm {:.1}, spike {:.1} (goal \
             ≤ 1.2 × calm); RSS during the spike: edge {:.0} MiB, hello-world {} MiB, ratio {} (goal ≤ 2); \
             recovery (the {} s after the spike vs before): p50 {} → {} ms, p99 {} → {} ms, L1 share \
             {:.1} % → {:.1} %; back within the calm phase's second-by-second band {} (goal ≤ 5 s){}.\n",
            g.goodput_ratio,
            opt(g.hello_goodput_ratio, 2),
            opt(g.hello_redis_goodput_ratio, 2),
            g.answers_500,
            g.answers_without_x_cache,
            g.origin_rps_calm,
            g.origin_rps_spike,
            g.edge_rss_spike_mib,
            opt(g.hello_rss_spike_mib, 0),
            opt(g.rss_ratio, 2),
            self.after_s(),
            report::ms(g.p50_before_us),
            report::ms(g.p50_after_us),
            report::ms(g.p99_before_us),
            report::ms(g.p99_after_us),
            g.l1_share_before * 100.0,
            g.l1_share_after * 100.0,
            recovery_words(g.recovered_after_s),
            if g.baseline_recovered_after_s.is_empty() {
                String::new()
            } else {
                format!(
                    "; the baselines after the same spike, p50 back within their own calm band: {}",
                    g.baseline_recovered_after_s
                        .iter()
                        .map(|(target, s)| format!("{target} {}", recovery_words(*s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )
    }

    /// The edge with the shared tier on, under the same spike (when it ran).
    fn shared_tier_line(&self) -> String {
        let Some(g) = &self.goals.edge_shared else {
            return String::new();
        };
        format!(
            "\nThe edge with the shared tier on (Spin's key-value store in memory), the same spike: \
             goodput spike ÷ calm {:.2}; answers 500: {}; answers without x-cache: {}; origin reads/s \
             calm {:.1}, spike {:.1}; RSS during the spike {:.0} MiB; recovery: p50 {} → {} ms, reads \
             answered at the edge (L1 or SHARED) {:.1} % → {:.1} %; p50 back within the calm phase's \
             band {}.\n",
            g.goodput_ratio,
            g.answers_500,
            g.answers_without_x_cache,
            g.origin_rps_calm,
            g.origin_rps_spike,
            g.rss_spike_mib,
            report::ms(g.p50_before_us),
            report::ms(g.p50_after_us),
            g.edge_share_before * 100.0,
            g.edge_share_after * 100.0,
            recovery_words(g.recovered_after_s),
        )
    }

    /// Per phase: CPU per answer, Redis commands per 1,000 answers, server-timing.
    fn where_time_goes(&self) -> String {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let mut out = String::new();
        out.push_str(
            "\nWhere the time goes, per phase: the runtime's CPU (user + system, its whole process tree) \
             per answer, the load generator's, and how busy the machine's cores were with both (when \
             they were all busy in both phases, goodput spike ÷ calm is about the calm phase's CPU per \
             answer ÷ the spike's); Redis commands per 1,000 answers (`auth`: one per connection \
             opened); the `server-timing` metrics of the successful reads (answers that carried it, \
             mean ms).\n\n\
             | target | phase | CPU ms/answer: runtime | load generator | cores busy | Redis calls per 1k answers | server-timing (n, mean ms) |\n\
             | --- | --- | ---: | ---: | ---: | --- | --- |\n",
        );
        for p in &self.phases {
            let calls = p
                .redis_calls_per_1k
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ");
            let timing = p
                .server_timing
                .iter()
                .map(|(k, (n, ms))| format!("{k} {n} ({ms:.2})"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                p.target,
                p.phase,
                opt(p.cpu_ms_per_answer, 3),
                opt(p.loader_cpu_ms_per_answer, 3),
                p.cores_busy
                    .map_or("-".to_string(), |b| format!("{:.0} %", b * 100.0)),
                if calls.is_empty() { "-".into() } else { calls },
                if timing.is_empty() {
                    "-".into()
                } else {
                    timing
                },
            ));
        }
        out
    }
}

/// What the scenario claims, checked (behaviour, not speed): every phase of the edge (calm, spike,
/// after) and hello-world's spike answered; the edge answered no `500`, nothing but 200/503/429, and
/// `x-cache` on every answer; the origin's reads and the memory were measured.
pub fn verify(report: &OverloadReport) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (target, phase) in [
        ("edge", "calm"),
        ("edge", "spike"),
        ("edge", "after"),
        ("hello", "spike"),
        ("hello", "after"),
    ] {
        match report
            .phases
            .iter()
            .find(|p| p.target == target && p.phase == phase)
        {
            None => problems.push(format!("no {target} {phase} phase")),
            Some(p) if p.answers == 0 => problems.push(format!("{target} {phase}: no answers")),
            Some(p) if p.rss_peak_mib <= 0.0 => problems.push(format!(
                "{target} {phase}: the runtime's memory was not read"
            )),
            Some(_) => {}
        }
    }
    for p in report
        .phases
        .iter()
        .filter(|p| [EDGE, EDGE_SHARED].contains(&p.target.as_str()))
    {
        let label = format!("{} {}", p.target, p.phase);
        let others: Vec<_> = p
            .statuses
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "200" | "503" | "429"))
            .collect();
        if !others.is_empty() {
            problems.push(format!(
                "{label}: answers other than 200/503/429: {others:?}"
            ));
        }
        if p.no_x_cache > 0 {
            problems.push(format!("{label}: {} answers without x-cache", p.no_x_cache));
        }
        if p.answers > 0 && p.instances == 0 {
            problems.push(format!(
                "{label}: no answer named its instance (x-edge-instance)"
            ));
        }
        if p.statuses.get("200").copied().unwrap_or(0) == 0 {
            problems.push(format!("{label}: no 200"));
        }
        if !p.origin_reads.is_finite() || p.origin_reads < 0.0 {
            problems.push(format!("{label}: the origin's reads were not measured"));
        }
    }
    if report.spike_connections <= report.calm_connections {
        problems.push(format!(
            "the spike ({} connections) is no more than the calm phase ({})",
            report.spike_connections, report.calm_connections
        ));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the overload scenario did not measure what it claims:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// `verify` of the `report-overload.json` beside `main` (a report of a whole run must have one).
pub fn verify_beside(main: &Path) -> anyhow::Result<()> {
    let (path, report): (_, OverloadReport) = read_beside(main, FILE, "overload")?;
    verify(&report)?;
    println!(
        "overload report {}: {} phases, goodput spike ÷ calm {:.2}, {} answers 500, {} without x-cache",
        path.display(),
        report.phases.len(),
        report.goals.goodput_ratio,
        report.goals.answers_500,
        report.goals.answers_without_x_cache
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(target: &str, name: &str, statuses: &[(&str, u64)], no_x_cache: u64) -> Phase {
        Phase {
            target: target.into(),
            phase: name.into(),
            connections: if name == "spike" { 128 } else { 16 },
            elapsed_s: 2.0,
            answers: statuses.iter().map(|(_, n)| n).sum(),
            goodput: statuses
                .iter()
                .filter(|(s, _)| s.starts_with('2'))
                .map(|(_, n)| *n as f64 / 2.0)
                .sum(),
            statuses: statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            unanswered: BTreeMap::new(),
            no_x_cache,
            p50_us: 1000,
            p99_us: 5000,
            x_cache: [("L1".to_string(), 90), ("L2".to_string(), 10)].into(),
            instance_starts: 0,
            instance_start_mean_ms: None,
            origin_reads: 0.0,
            origin_rps: 0.0,
            rss_peak_mib: 100.0,
            per_second: vec![],
            per_second_p50_us: vec![],
            per_second_l1_share: vec![],
            // The edge's answers name their instance.
            instances: if target.starts_with("edge") { 3 } else { 0 },
            per_second_instances: vec![],
            cpu_ms_per_answer: None,
            loader_cpu_ms_per_answer: None,
            cores_busy: None,
            redis_calls_per_1k: BTreeMap::new(),
            server_timing: BTreeMap::new(),
        }
    }

    fn seconds(mut p: Phase, p50_ms: &[u64], l1: &[f64]) -> Phase {
        p.per_second_p50_us = p50_ms.iter().map(|ms| ms * 1000).collect();
        p.per_second_l1_share = l1.to_vec();
        p
    }

    #[test]
    fn recovery_is_the_first_second_from_which_every_second_is_back_in_the_calm_band() {
        let calm = seconds(
            phase("edge", "calm", &[("200", 1)], 0),
            &[3, 4, 3],
            &[0.3, 0.25, 0.3],
        );
        let after = |p50: &[u64], l1: &[f64]| seconds(phase("edge", "after", &[], 0), p50, l1);
        // Slow for two seconds, then within the band.
        let a = after(&[40, 9, 4, 3, 4], &[0.0, 0.1, 0.26, 0.3, 0.3]);
        assert_eq!(recovery_second(&calm, &a, true), Some(2));
        // Back, then out again at the end: only the last run counts.
        let a = after(&[3, 3, 9], &[0.3, 0.3, 0.3]);
        assert_eq!(recovery_second(&calm, &a, true), None);
        // Fast but tier 1 still empty is not back.
        let a = after(&[3, 3, 3], &[0.3, 0.1, 0.3]);
        assert_eq!(recovery_second(&calm, &a, true), Some(2));
        // Never left.
        let a = after(&[3, 4], &[0.3, 0.3]);
        assert_eq!(recovery_second(&calm, &a, true), Some(0));
        // A second without answers is not normal.
        let a = after(&[3, 0, 3], &[0.3, 0.3, 0.3]);
        assert_eq!(recovery_second(&calm, &a, true), Some(2));
        // By p50 alone (the shared tier's edge), a cold tier 1 does not keep it out of the band.
        let a = after(&[3, 3, 3], &[0.3, 0.1, 0.3]);
        assert_eq!(recovery_second(&calm, &a, false), Some(0));
        let a = after(&[40, 3, 3], &[0.3, 0.3, 0.3]);
        assert_eq!(recovery_second(&calm, &a, false), Some(1));
    }

    #[test]
    fn the_instances_table_shows_each_second_only_for_targets_that_name_their_instance() {
        let mut none = clean();
        for p in &mut none {
            p.instances = 0;
        }
        assert!(report(none).instances_table().is_empty());
        let mut phases = clean();
        phases[2] = seconds(phases[2].clone(), &[9, 4], &[0.1, 0.5]);
        phases[2].instances = 412;
        phases[2].per_second_instances = vec![400, 12];
        let table = report(phases).instances_table();
        assert!(
            table.contains("| edge | after | 412 | 400 · 12 | 9.00 · 4.00 | 10 % · 50 % |"),
            "{table}"
        );
        // A phase whose answers named no instance: no row.
        assert!(!table.contains("| hello |"), "{table}");
    }

    #[test]
    fn the_baselines_recovery_is_reported_only_for_those_whose_after_phase_ran() {
        let mut phases = clean();
        phases.retain(|p| p.phase != "after" || p.target == "edge");
        assert!(Goals::of(&phases).baseline_recovered_after_s.is_empty());
        let calm = phases
            .iter()
            .position(|p| p.target == "hello" && p.phase == "calm");
        let calm = calm.expect("hello calm");
        phases[calm] = seconds(phases[calm].clone(), &[1, 1], &[0.0, 0.0]);
        phases.push(seconds(
            phase("hello", "after", &[("200", 10)], 10),
            &[30, 1, 1],
            &[0.0; 3],
        ));
        let goals = Goals::of(&phases);
        assert_eq!(
            goals.baseline_recovered_after_s,
            [("hello".to_string(), Some(1))].into()
        );
        assert!(
            report(phases).markdown().contains("hello from second 1 on"),
            "the goals line names the baseline's recovery"
        );
    }

    #[test]
    fn the_shared_tier_edge_has_its_own_goals_when_it_ran() {
        assert!(Goals::of(&clean()).edge_shared.is_none());
        let mut phases = clean();
        let mut shared = |phase_name: &str, statuses: &[(&str, u64)], tiers: &[(&str, u64)]| {
            let mut p = phase(EDGE_SHARED, phase_name, statuses, 0);
            p.x_cache = tiers.iter().map(|(t, n)| (t.to_string(), *n)).collect();
            phases.push(p);
        };
        shared(
            "calm",
            &[("200", 1000)],
            &[("L1", 50), ("SHARED", 40), ("L2", 10)],
        );
        shared(
            "spike",
            &[("200", 500), ("500", 2)],
            &[("SHARED", 60), ("L2", 40)],
        );
        shared(
            "after",
            &[("200", 1000)],
            &[("L1", 20), ("SHARED", 60), ("L2", 20)],
        );
        let goals = Goals::of(&phases);
        let shared = goals.edge_shared.expect("edge-shared ran");
        assert_eq!(shared.answers_500, 2);
        assert!((shared.edge_share_before - 0.9).abs() < 1e-9);
        assert!((shared.edge_share_after - 0.8).abs() < 1e-9);
        // The default edge's goals are its own.
        assert_eq!(goals.answers_500, 0);
    }

    fn report(phases: Vec<Phase>) -> OverloadReport {
        OverloadReport {
            runtime: "spin".into(),
            mode: "quick".into(),
            rows: 100,
            auth: "on".into(),
            calm_connections: 16,
            spike_connections: 128,
            phase_s: 2.0,
            goals: Goals::of(&phases),
            phases,
        }
    }

    fn clean() -> Vec<Phase> {
        vec![
            phase("edge", "calm", &[("200", 1000)], 0),
            phase("edge", "spike", &[("200", 900), ("503", 10)], 0),
            phase("edge", "after", &[("200", 1000)], 0),
            phase("hello", "calm", &[("200", 3000)], 3000),
            phase("hello", "spike", &[("200", 2700)], 2700),
            phase("hello", "after", &[("200", 3000)], 3000),
            phase("hello-redis", "calm", &[("200", 2000)], 2000),
            phase("hello-redis", "spike", &[("200", 1000)], 1000),
        ]
    }

    #[test]
    fn a_clean_spike_passes_and_its_goals_are_computed() {
        let r = report(clean());
        verify(&r).unwrap();
        assert_eq!(r.goals.goodput_ratio, 0.9);
        assert_eq!(r.goals.hello_goodput_ratio, Some(0.9));
        assert_eq!(r.goals.hello_redis_goodput_ratio, Some(0.5));
        assert_eq!(r.goals.answers_500, 0);
        // hello-world sets no x-cache: only the edge's answers are counted.
        assert_eq!(r.goals.answers_without_x_cache, 0);
        assert_eq!(r.goals.rss_ratio, Some(1.0));
        assert_eq!(r.goals.l1_share_before, 0.9);
        assert!(
            r.markdown()
                .contains("| edge | spike | 128 | 450 | 200 900, 503 10 |")
        );
    }

    #[test]
    fn a_500_an_answer_without_x_cache_or_a_missing_phase_fails() {
        let mut phases = clean();
        phases[1] = phase("edge", "spike", &[("200", 900), ("500", 3)], 2);
        let r = report(phases);
        assert_eq!(r.goals.answers_500, 3);
        let e = verify(&r).unwrap_err().to_string();
        assert!(e.contains("answers other than 200/503/429"), "{e}");
        assert!(e.contains("2 answers without x-cache"), "{e}");

        let mut phases = clean();
        phases.remove(2);
        let e = verify(&report(phases)).unwrap_err().to_string();
        assert!(e.contains("no edge after phase"), "{e}");
    }

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# HELP x\n\
                    aside_origin_http_requests_total{method=\"GET\",route=\"/users/{id}\",status=\"200\"} 7\n\
                    aside_origin_http_requests_total{method=\"GET\",route=\"/users/{id}\",status=\"404\"} 2\n\
                    aside_origin_http_requests_total{method=\"PATCH\",route=\"/users/{id}\",status=\"200\"} 5\n\
                    aside_origin_http_requests_total_other{method=\"GET\",route=\"/users/{id}\"} 100\n";
        assert_eq!(
            sum_samples(
                text,
                "aside_origin_http_requests_total",
                &[r#"route="/users/{id}""#, r#"method="GET""#]
            ),
            9.0
        );
    }

    #[test]
    fn the_memory_of_this_process_is_read() {
        let me = std::process::id();
        assert!(tree_rss_kib(me) > 0);
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }
}
