//! Issue 26's scenario (docs/benchmarks.md, "Redis Cluster"), run after the others on the same stack and
//! written to `report-cluster.{json,md}` beside the main report: the same hits on the bench's single
//! Redis node and on a Redis Cluster of three primaries (each with a replica, as `cargo xtask up
//! --redis-cluster` starts it), in one run:
//!
//! * **the edge's L2 hit**: Zipf reads through an edge with tier 1 off (every read asks Redis; the
//!   cluster edge routes each key to the primary that owns its slot);
//! * **the origin's hit**: the same reads straight to an origin (the cluster origin through the `redis`
//!   crate's cluster client).
//!
//! For each: req/s, p50/p99, the answers by `x-cache`, and the Redis commands per read (the deltas of
//! `INFO commandstats` over the run on every primary, every client's, divided by the reads).
//!
//! Then **the edge during online resharding** ([`ReshardPhase`]): 95 % reads / 5 % writes through the
//! cluster edge, uniform over every profile, for a steady window and then for exactly as long as
//! `redis-cli --cluster reshard` takes to move a third of the slots (a tenth in a quick run) between two
//! primaries: p50/p99 of both windows and their ratio, failed answers, reads the origin answered, and
//! the primaries' `MOVED`/`ASK` replies and slot-map reads in each window.
//!
//! The cluster and its origin and edge are started for this scenario and stopped with the stack.
//! `verify` checks what the scenario claims (every run answered without errors, each read from the
//! tier it measures, the profiles spread over every primary, no failed answer during the resharding),
//! never a speed.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;

use anyhow::Context as _;
use aside_bench::load::LoadResult;
use aside_bench::redis_admin::{RedisAdmin, calls_since};
use aside_bench::report;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use xtask::launch::{EdgeVariables, OriginSettings};
use xtask::redis_cluster::{self, LocalCluster};

use crate::catalogue::Target;
use crate::config::Config;
use crate::run::{fill_through, loader_args, read_beside, run_loader, write_beside, zipf_reads};
use crate::runtime::Rt;
use crate::stack::{Stack, database_url, edge_command, twin};
use crate::{check_stop, workspace_root};

/// The name `--only` knows this scenario by.
pub const NAME: &str = crate::catalogue::CLUSTER;
/// The file beside `report.json`.
pub const FILE: &str = "report-cluster.json";
/// The single node's label in the report.
const SINGLE: &str = "single node";
/// The cluster's label in the report.
const CLUSTER: &str = "cluster (3 primaries)";
/// What each run reads, and the `x-cache` class its reads must have.
const EDGE_L2: (&str, &str) = ("edge L2 hit (tier 1 off)", "L2");
const ORIGIN_HIT: (&str, &str) = ("origin hit", "HIT");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReport {
    pub runtime: String,
    pub mode: String,
    pub rows: u64,
    pub connections: usize,
    pub duration_s: f64,
    /// Keys each primary of the cluster holds after the fill (`DBSIZE`), by port.
    pub keys_per_primary: BTreeMap<u16, u64>,
    pub runs: Vec<ModeRun>,
    /// The edge on the cluster, steady and during an online resharding (absent from reports made
    /// before it was measured).
    #[serde(default)]
    pub reshard: Option<ReshardPhase>,
}

/// The edge's load on the cluster for a steady window, then again while `redis-cli --cluster reshard`
/// moves [`ReshardPhase::slots`] slots from one primary to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReshardPhase {
    /// What the load was (reads and writes, key choice, connections).
    pub load: String,
    pub slots: u32,
    pub from_port: u16,
    pub to_port: u16,
    /// How long `redis-cli --cluster reshard` took (the second window's length).
    pub reshard_s: f64,
    pub steady: Window,
    pub resharding: Window,
}

/// One measured window of [`ReshardPhase`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    /// Failed answers: non-2xx, timeouts, connection failures.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub rps: f64,
    /// Every answer's (reads and writes).
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// The reads from the cluster (`x-cache: L2`) alone.
    pub l2_p99_us: u64,
    /// The writes (through the origin) alone.
    pub write_p99_us: u64,
    pub x_cache: BTreeMap<String, u64>,
    /// Reads the origin answered (every `x-cache` but `L2`).
    pub origin_reads: u64,
    /// Error replies of the primaries by kind (`MOVED`, `ASK`, ...), every client's: the edge's, the
    /// origin's and `redis-cli`'s.
    pub redis_errors: BTreeMap<String, u64>,
    /// `CLUSTER SLOTS`/`CLUSTER SHARDS` calls on the primaries (slot-map reads; the origin's poll too).
    pub slot_map_reads: u64,
    /// Every `server-timing` metric's mean (ms) over the reads from the cluster.
    pub l2_server_timing_ms: BTreeMap<String, f64>,
}

impl ReshardPhase {
    /// The resharding window's p99 over the steady one's (the goal: at most 3).
    pub fn p99_ratio(&self) -> f64 {
        self.resharding.p99_us as f64 / self.steady.p99_us.max(1) as f64
    }
}

/// One run: one target on one Redis mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeRun {
    /// [`SINGLE`] or [`CLUSTER`].
    pub redis: String,
    /// What was read ([`EDGE_L2`] or [`ORIGIN_HIT`]).
    pub target: String,
    /// The `x-cache` class every read should have.
    pub expected: String,
    pub reads: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub x_cache: BTreeMap<String, u64>,
    /// Share of the reads answered with [`ModeRun::expected`].
    pub expected_share: f64,
    /// Redis commands (every client's, summed over the primaries) per read.
    pub redis_per_read: f64,
    pub redis_calls: BTreeMap<String, u64>,
}

/// Where a mode's reads go and which Redis servers count them.
struct Mode {
    label: &'static str,
    edge_url: String,
    origin_url: String,
    /// The primaries, as `admin`.
    primaries: Vec<RedisAdmin>,
}

pub fn run(config: &Config, stack: &mut Stack, rt: Rt) -> anyhow::Result<ClusterReport> {
    let bar = ProgressBar::hidden();
    let cluster = start_cluster(config, stack)?;
    eprintln!(
        "aside-bench: Redis Cluster up for the cluster scenario:\n{}",
        cluster.describe()
    );
    let origin_url = start_cluster_origin(config, stack, &cluster)?;
    check_stop()?;
    fill_through(config, stack, origin_url.clone(), "fill-cluster", &bar)?;
    let edge_url = start_cluster_edge(config, stack, rt, &cluster, &origin_url)?;

    let admin = &stack.secrets.redis_admin;
    let nodes = redis_cluster::cluster_nodes(cluster.ports[0], admin)?;
    let mut keys_per_primary = BTreeMap::new();
    let mut primaries = Vec::new();
    for node in nodes.iter().filter(|n| n.slot_count() > 0) {
        let mut primary = RedisAdmin::connect(node.port, admin)?;
        keys_per_primary.insert(node.port, primary.db_size()?);
        primaries.push(primary);
    }
    let mut modes = [
        Mode {
            label: SINGLE,
            edge_url: stack.ports.url(Target::EdgeL1Off(rt)),
            origin_url: stack.ports.url(Target::Origin),
            primaries: vec![RedisAdmin::connect(stack.ports.redis, admin)?],
        },
        Mode {
            label: CLUSTER,
            edge_url,
            origin_url,
            primaries,
        },
    ];
    let mut runs = Vec::new();
    // Target by target, the two modes back to back: the closest conditions for the comparison.
    for (what, target) in [
        (EDGE_L2, Target::EdgeL1Off(rt)),
        (ORIGIN_HIT, Target::Origin),
    ] {
        for mode in &mut modes {
            check_stop()?;
            let url = match target {
                Target::Origin => mode.origin_url.clone(),
                _ => mode.edge_url.clone(),
            };
            runs.push(measure(config, stack, mode, what, target, url, &bar)?);
        }
    }
    // Last: it moves slots, so the runs above read the cluster as `create` laid it out.
    check_stop()?;
    let [_, cluster_mode] = &mut modes;
    let reshard = Some(reshard_phase(
        config,
        stack,
        rt,
        &cluster,
        cluster_mode,
        &bar,
    )?);
    let report = ClusterReport {
        runtime: rt.name().to_string(),
        mode: if config.quick { "quick" } else { "full" }.into(),
        rows: config.rows,
        connections: config.concurrency,
        duration_s: config.duration,
        keys_per_primary,
        runs,
        reshard,
    };
    write_beside(config, FILE, &report, &report.markdown())?;
    Ok(report)
}

/// Six nodes (three primaries, a replica each) of this machine's `redis-server` in cluster mode, as
/// services of the stack, with the project's configuration and ACL users.
fn start_cluster(config: &Config, stack: &mut Stack) -> anyhow::Result<LocalCluster> {
    let count = redis_cluster::LOCAL_PRIMARIES * 2;
    let first = free_run(count)?;
    let state = stack.state.join("cluster");
    std::fs::create_dir_all(state.join("secrets"))?;
    redis_cluster::start_local(
        &workspace_root(),
        first,
        &state,
        &config.logs,
        &stack.secrets,
        &mut stack.services,
    )
}

/// An origin with its cache on the cluster (PostgreSQL and tokens as the bench's origin).
fn start_cluster_origin(
    config: &Config,
    stack: &mut Stack,
    cluster: &LocalCluster,
) -> anyhow::Result<String> {
    let port = free_port()?;
    let secrets = &stack.secrets;
    let settings = OriginSettings::new(
        format!("127.0.0.1:{port}"),
        database_url(secrets, stack.ports.postgres),
    )
    .origin_tokens(&[&secrets.origin_token])
    .cache(true);
    let command = cluster
        .origin_settings(settings, &secrets.redis_origin)
        .serve(&config.bin);
    stack
        .services
        .spawn("origin-cluster", command, &config.logs, libc::SIGTERM)?;
    stack.services.wait_for_port(port, &config.logs)?;
    Ok(format!("http://127.0.0.1:{port}"))
}

/// An edge with tier 1 off (the bench's L1-off edge's command, its own port and state) reading the
/// cluster from the first node's slot map.
fn start_cluster_edge(
    config: &Config,
    stack: &mut Stack,
    rt: Rt,
    cluster: &LocalCluster,
    origin_url: &str,
) -> anyhow::Result<String> {
    let port = free_port()?;
    let target = Target::EdgeL1Off(rt);
    let upstreams = (cluster.ports[0], origin_url.to_string());
    let base = edge_command(config, stack, target, port, &upstreams);
    let mut edge = twin(&base, &config.logs.join("edge-cluster-state"));
    EdgeVariables::new()
        .set("redis_mode", "cluster")
        .set("redis_cluster_hosts", cluster.allowed_hosts())
        .apply(&mut edge);
    stack
        .services
        .spawn("edge-cluster", edge, &config.logs, libc::SIGTERM)?;
    stack.services.wait_for_port(port, &config.logs)?;
    Ok(format!("http://127.0.0.1:{port}"))
}

/// One Zipf run (a warm-up first, unmeasured) with the Redis commands it caused on `mode`'s primaries.
fn measure(
    config: &Config,
    stack: &Stack,
    mode: &mut Mode,
    (what, expected): (&str, &str),
    target: Target,
    url: String,
    bar: &ProgressBar,
) -> anyhow::Result<ModeRun> {
    let label = format!(
        "cluster-{}-{}",
        if mode.label == SINGLE {
            "single"
        } else {
            "cluster"
        },
        if target == Target::Origin {
            "origin"
        } else {
            "edge"
        }
    );
    let args = |seconds: f64| {
        let mut args = loader_args(url.clone(), target, stack);
        args.extend(zipf_reads(config, config.concurrency, seconds));
        args
    };
    if config.warmup > 0.0 {
        let log = config.logs.join(format!("load-{label}-warmup.log"));
        run_loader(
            &config.bin,
            &args(config.warmup),
            &log,
            Some(config.warmup),
            bar,
        )?;
    }
    let before = command_calls(&mut mode.primaries)?;
    let log = config.logs.join(format!("load-{label}.log"));
    let result = run_loader(
        &config.bin,
        &args(config.duration),
        &log,
        Some(config.duration),
        bar,
    )?;
    let after = command_calls(&mut mode.primaries)?;
    let redis_calls = calls_since(&before, &after);
    let total: u64 = redis_calls.values().sum();
    let run = ModeRun {
        redis: mode.label.to_string(),
        target: what.to_string(),
        expected: expected.to_string(),
        reads: result.reads,
        errors: result.errors,
        rps: result.rps,
        p50_us: result.latency_us.p50,
        p99_us: result.latency_us.p99,
        expected_share: report::share_of(&result, &[expected]),
        x_cache: result.x_cache.clone(),
        redis_per_read: total as f64 / result.reads.max(1) as f64,
        redis_calls,
    };
    log_run(&run, &result);
    Ok(run)
}

fn log_run(run: &ModeRun, result: &LoadResult) {
    eprintln!(
        "cluster {:<24} {:<22} {:>8.0} req/s  p50 {:>6} ms  p99 {:>6} ms  {} {:>5.1} %  redis/read {:.3}  \
         errors {}",
        run.target,
        run.redis,
        run.rps,
        report::ms(run.p50_us),
        report::ms(run.p99_us),
        run.expected,
        run.expected_share * 100.0,
        run.redis_per_read,
        result.errors
    );
}

/// Percentage of the reshard phase's requests that are writes (the 95 % reads / 5 % writes).
const RESHARD_WRITE_PERCENT: f64 = 5.0;
/// The longest a resharding may take before the phase gives up on it.
const RESHARD_LIMIT_S: f64 = 600.0;

/// The edge on the cluster under 95 % reads / 5 % writes, uniform over every profile (so reads meet
/// every slot, the moving ones too): a steady window, then a window that lasts exactly as long as
/// `redis-cli --cluster reshard` moving a third of the slots (5,461) from the fullest primary to
/// another (a tenth in a quick run, to keep CI short). Each window with the primaries' `MOVED`/`ASK`
/// replies and slot-map reads.
fn reshard_phase(
    config: &Config,
    stack: &Stack,
    rt: Rt,
    cluster: &LocalCluster,
    mode: &mut Mode,
    bar: &ProgressBar,
) -> anyhow::Result<ReshardPhase> {
    let admin = &stack.secrets.redis_admin;
    let load = |seconds: f64| {
        let mut args = loader_args(mode.edge_url.clone(), Target::EdgeL1Off(rt), stack);
        args.extend([
            "--keys".into(),
            "uniform".into(),
            "--ids".into(),
            config.rows.to_string(),
            "--write-percent".into(),
            RESHARD_WRITE_PERCENT.to_string(),
            "--concurrency".into(),
            config.concurrency.to_string(),
            "--warmup".into(),
            "0s".into(),
            "--duration".into(),
            format!("{seconds}s"),
        ]);
        args
    };
    if config.warmup > 0.0 {
        let log = config.logs.join("load-cluster-reshard-warmup.log");
        run_loader(
            &config.bin,
            &load(config.warmup),
            &log,
            Some(config.warmup),
            bar,
        )?;
    }
    let counters = Counters::read(&mut mode.primaries)?;
    let log = config.logs.join("load-cluster-steady.log");
    let result = run_loader(
        &config.bin,
        &load(config.duration),
        &log,
        Some(config.duration),
        bar,
    )?;
    let steady = Window::of(
        &result,
        &Counters::read(&mut mode.primaries)?.since(&counters),
    );
    log_window("steady", &steady);

    // From the primary with the most slots, never all of them (a primary left without slots turns
    // into a replica), to the next fullest.
    let mut primaries: Vec<_> = redis_cluster::cluster_nodes(cluster.ports[0], admin)?
        .into_iter()
        .filter(|n| n.primary && !n.failed)
        .collect();
    primaries.sort_by_key(|n| std::cmp::Reverse(n.slot_count()));
    anyhow::ensure!(
        primaries.len() >= 2,
        "fewer than two primaries: {primaries:?}"
    );
    let (from, to) = (&primaries[0], &primaries[1]);
    let share = if config.quick { 10 } else { 3 };
    let slots = (u32::from(redis_cluster::SLOTS) / share).min(from.slot_count() - 1);

    let stop = config.logs.join("cluster-reshard.stop");
    let _ = std::fs::remove_file(&stop);
    let mut args = load(RESHARD_LIMIT_S);
    args.extend(["--stop-file".into(), stop.display().to_string()]);
    let counters = Counters::read(&mut mode.primaries)?;
    let (result, took) = std::thread::scope(|scope| {
        let loader = scope.spawn(|| {
            let log = config.logs.join("load-cluster-resharding.log");
            run_loader(&config.bin, &args, &log, Some(RESHARD_LIMIT_S), bar)
        });
        let started = std::time::Instant::now();
        let moved = reshard(config, cluster.ports[0], admin, (&from.id, &to.id), slots);
        let took = started.elapsed();
        // The loader stops whether or not the resharding worked.
        std::fs::write(&stop, b"")?;
        let result = loader.join().expect("the loader thread does not panic")?;
        moved?;
        anyhow::Ok((result, took))
    })?;
    let resharding = Window::of(
        &result,
        &Counters::read(&mut mode.primaries)?.since(&counters),
    );
    let now = redis_cluster::cluster_nodes(cluster.ports[0], admin)?;
    let on_target = now
        .iter()
        .find(|n| n.id == to.id)
        .map_or(0, |n| n.slot_count());
    anyhow::ensure!(
        on_target >= to.slot_count() + slots,
        "after the resharding the target primary serves {on_target} slots, expected {} + {slots}",
        to.slot_count()
    );
    log_window(&format!("resharding {slots} slots"), &resharding);
    Ok(ReshardPhase {
        load: format!(
            "{} % reads / {RESHARD_WRITE_PERCENT} % writes, uniform over {} ids, {} connections, auth on",
            100.0 - RESHARD_WRITE_PERCENT,
            config.rows,
            config.concurrency
        ),
        slots,
        from_port: from.port,
        to_port: to.port,
        reshard_s: took.as_secs_f64(),
        steady,
        resharding,
    })
}

/// `redis-cli --cluster reshard` (as the `admin` ACL user) moving `slots` slots between two primaries;
/// its output goes to `cluster-reshard.log`.
fn reshard(
    config: &Config,
    port: u16,
    admin: &str,
    (from, to): (&str, &str),
    slots: u32,
) -> anyhow::Result<()> {
    let log = config.logs.join("cluster-reshard.log");
    let output = xtask::redis_cluster::reshard_command(port, admin, (from, to), slots)
        .output()
        .context("start redis-cli --cluster reshard")?;
    std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat())?;
    anyhow::ensure!(
        output.status.success(),
        "redis-cli --cluster reshard failed ({}); see {}",
        output.status,
        log.display()
    );
    Ok(())
}

/// The primaries' counters a window is measured by: commands and error replies.
struct Counters {
    calls: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Counters {
    fn read(servers: &mut [RedisAdmin]) -> anyhow::Result<Self> {
        let mut errors = BTreeMap::new();
        for server in servers.iter_mut() {
            for (name, count) in server.error_counts()? {
                *errors.entry(name).or_insert(0) += count;
            }
        }
        Ok(Self {
            calls: command_calls(servers)?,
            errors,
        })
    }

    fn since(&self, before: &Counters) -> Counters {
        Counters {
            calls: calls_since(&before.calls, &self.calls),
            errors: calls_since(&before.errors, &self.errors),
        }
    }
}

impl Window {
    fn of(result: &LoadResult, counters: &Counters) -> Self {
        let l2 = result.tier_latency_us.get(EDGE_L2.1);
        Window {
            requests: result.requests,
            reads: result.reads,
            writes: result.writes,
            errors: result.errors,
            error_kinds: result.error_kinds.clone(),
            elapsed_s: result.elapsed_s,
            rps: result.rps,
            p50_us: result.latency_us.p50,
            p99_us: result.latency_us.p99,
            max_us: result.latency_us.max,
            l2_p99_us: l2.map_or(0, |l| l.p99),
            write_p99_us: result.write_latency_us.as_ref().map_or(0, |l| l.p99),
            x_cache: result.x_cache.clone(),
            origin_reads: result
                .x_cache
                .iter()
                .filter(|(tier, _)| *tier != EDGE_L2.1)
                .map(|(_, n)| n)
                .sum(),
            redis_errors: counters.errors.clone(),
            slot_map_reads: counters
                .calls
                .iter()
                .filter(|(name, _)| matches!(name.as_str(), "cluster|slots" | "cluster|shards"))
                .map(|(_, n)| n)
                .sum(),
            l2_server_timing_ms: result
                .server_timing_ms
                .get(EDGE_L2.1)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

fn log_window(what: &str, w: &Window) {
    eprintln!(
        "cluster edge {what:<22} {:>8.0} req/s  p50 {:>6} ms  p99 {:>6} ms  origin reads {}  \
         redis errors {:?}  slot-map reads {}  errors {}",
        w.rps,
        report::ms(w.p50_us),
        report::ms(w.p99_us),
        w.origin_reads,
        w.redis_errors,
        w.slot_map_reads,
        w.errors
    );
}

/// `INFO commandstats` calls by command, summed over `servers`.
fn command_calls(servers: &mut [RedisAdmin]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut sum = BTreeMap::new();
    for server in servers {
        for (name, calls) in server.command_calls()? {
            *sum.entry(name).or_insert(0) += calls;
        }
    }
    Ok(sum)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first of `count` consecutive free ports whose cluster-bus ports (each + 10000) are free too.
fn free_run(count: usize) -> anyhow::Result<u16> {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    // Below the kernel's ephemeral range (32768 and up by default), so no client socket takes one
    // between this check and the nodes' start; the bus ports land at 30000-30999.
    let start = 20_000 + (std::process::id() % 50) as u16 * 20;
    (start..21_000)
        .step_by(count)
        .find(|&first| {
            (first..first + count as u16)
                .all(|p| free(p) && free(p + redis_cluster::BUS_PORT_OFFSET))
        })
        .context("no run of free ports for the cluster's six nodes in 20000-20999")
}

impl ClusterReport {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## Redis Cluster ({} run, {})\n\n{} profiles, {} connections, {} s per run; keys per \
             primary after the fill: {}.\n\n",
            self.mode,
            self.runtime,
            self.rows,
            self.connections,
            self.duration_s,
            self.keys_per_primary
                .iter()
                .map(|(port, keys)| format!("{port}: {keys}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        md.push_str(
            "| read | Redis | req/s | p50 | p99 | expected x-cache | Redis commands / read | errors |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for run in &self.runs {
            md.push_str(&format!(
                "| {} | {} | {:.0} | {} ms | {} ms | {} {:.1} % | {:.3} | {} |\n",
                run.target,
                run.redis,
                run.rps,
                report::ms(run.p50_us),
                report::ms(run.p99_us),
                run.expected,
                run.expected_share * 100.0,
                run.redis_per_read,
                run.errors
            ));
        }
        if let Some(phase) = &self.reshard {
            md.push_str(&phase.markdown());
        }
        md
    }
}

impl ReshardPhase {
    fn markdown(&self) -> String {
        let mut md = format!(
            "\n### The edge during online resharding\n\n{}; the edge with tier 1 off. `redis-cli \
             --cluster reshard` moved {} slots from the primary on port {} to the one on {} in {:.1} s. \
             **p99 during the resharding ÷ steady p99: {:.2}** (the goal: at most 3).\n\n\
             | window | s | req/s | p50 | p99 | max | p99 L2 reads | p99 writes | errors | origin \
             reads | MOVED | ASK | slot-map reads | x-cache |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
            self.load,
            self.slots,
            self.from_port,
            self.to_port,
            self.reshard_s,
            self.p99_ratio()
        );
        for (name, w) in [("steady", &self.steady), ("resharding", &self.resharding)] {
            let count = |kind: &str| w.redis_errors.get(kind).copied().unwrap_or(0);
            md.push_str(&format!(
                "| {name} | {:.1} | {:.0} | {} ms | {} ms | {} ms | {} ms | {} ms | {} | {} | {} | {} | {} | {:?} |\n",
                w.elapsed_s,
                w.rps,
                report::ms(w.p50_us),
                report::ms(w.p99_us),
                report::ms(w.max_us),
                report::ms(w.l2_p99_us),
                report::ms(w.write_p99_us),
                w.errors,
                w.origin_reads,
                count("MOVED"),
                count("ASK"),
                w.slot_map_reads,
                w.x_cache
            ));
        }
        md
    }
}

/// What the scenario claims: four runs (two reads on two modes), each answered without errors and
/// from the tier it measures, and the profiles on every primary.
pub fn verify(report: &ClusterReport) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for what in [EDGE_L2.0, ORIGIN_HIT.0] {
        for redis in [SINGLE, CLUSTER] {
            match report
                .runs
                .iter()
                .find(|r| r.target == what && r.redis == redis)
            {
                None => problems.push(format!("no run of {what} on the {redis}")),
                Some(r) if r.reads == 0 => {
                    problems.push(format!("{what} on the {redis}: no reads"))
                }
                Some(r) if r.errors > 0 => {
                    problems.push(format!("{what} on the {redis}: {} errors", r.errors))
                }
                // The catalogue's bound for its hit scenarios: an early refresh (XFetch) may answer
                // a read otherwise; far fewer means the run did not read the tier it names.
                Some(r) if r.expected_share < 0.9 => problems.push(format!(
                    "{what} on the {redis}: {:.1} % {} (x-cache {:?})",
                    r.expected_share * 100.0,
                    r.expected,
                    r.x_cache
                )),
                Some(r) if r.redis_per_read <= 0.0 => {
                    problems.push(format!("{what} on the {redis}: no Redis command counted"))
                }
                Some(_) => {}
            }
        }
    }
    if let Some(phase) = &report.reshard {
        for (name, w) in [("steady", &phase.steady), ("resharding", &phase.resharding)] {
            if w.requests == 0 {
                problems.push(format!("the edge {name} on the cluster: no requests"));
            }
            if w.errors > 0 {
                problems.push(format!(
                    "the edge {name} on the cluster: {} failed answers {:?}",
                    w.errors, w.error_kinds
                ));
            }
        }
        if phase.slots == 0 {
            problems.push("the resharding moved no slot".into());
        }
    } else {
        problems.push("no resharding phase".into());
    }
    let primaries = report.keys_per_primary.len();
    if primaries != redis_cluster::LOCAL_PRIMARIES {
        problems.push(format!(
            "{primaries} primaries, expected {}",
            redis_cluster::LOCAL_PRIMARIES
        ));
    }
    if let Some((port, _)) = report.keys_per_primary.iter().find(|(_, keys)| **keys == 0) {
        problems.push(format!("the primary on port {port} holds no key"));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the cluster scenario did not measure what it claims:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

pub fn verify_beside(main: &Path) -> anyhow::Result<()> {
    let (path, report): (_, ClusterReport) = read_beside(main, FILE, "cluster")?;
    verify(&report)?;
    println!(
        "cluster report {}: {} runs, keys on {} primaries",
        path.display(),
        report.runs.len(),
        report.keys_per_primary.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: (&str, &str), redis: &str) -> ModeRun {
        ModeRun {
            redis: redis.into(),
            target: target.0.into(),
            expected: target.1.into(),
            reads: 1000,
            errors: 0,
            rps: 1000.0,
            p50_us: 2000,
            p99_us: 9000,
            x_cache: BTreeMap::from([(target.1.to_string(), 1000)]),
            expected_share: 1.0,
            redis_per_read: 1.0,
            redis_calls: BTreeMap::from([("hgetall".to_string(), 1000)]),
        }
    }

    fn report() -> ClusterReport {
        ClusterReport {
            runtime: "spin".into(),
            mode: "quick".into(),
            rows: 1000,
            connections: 16,
            duration_s: 2.0,
            keys_per_primary: BTreeMap::from([(7000, 330), (7001, 340), (7002, 330)]),
            runs: [EDGE_L2, ORIGIN_HIT]
                .into_iter()
                .flat_map(|t| [run(t, SINGLE), run(t, CLUSTER)])
                .collect(),
            reshard: Some(ReshardPhase {
                load: "95 % reads / 5 % writes".into(),
                slots: 5461,
                from_port: 7001,
                to_port: 7000,
                reshard_s: 14.0,
                steady: window(4000),
                resharding: window(10_000),
            }),
        }
    }

    fn window(p99_us: u64) -> Window {
        Window {
            requests: 1000,
            reads: 950,
            writes: 50,
            errors: 0,
            error_kinds: BTreeMap::new(),
            elapsed_s: 2.0,
            rps: 500.0,
            p50_us: 1000,
            p99_us,
            max_us: p99_us * 2,
            l2_p99_us: p99_us,
            write_p99_us: p99_us,
            x_cache: BTreeMap::from([("L2".to_string(), 940), ("MISS".to_string(), 10)]),
            origin_reads: 10,
            redis_errors: BTreeMap::from([("MOVED".to_string(), 7), ("ASK".to_string(), 2)]),
            slot_map_reads: 3,
            l2_server_timing_ms: BTreeMap::new(),
        }
    }

    #[test]
    fn a_complete_report_verifies_and_its_table_has_a_row_per_run() {
        let report = report();
        verify(&report).unwrap();
        let md = report.markdown();
        assert_eq!(md.lines().filter(|l| l.starts_with("| edge L2")).count(), 2);
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| origin hit")).count(),
            2
        );
        assert!(md.contains("steady p99: 2.50**"), "{md}");
        assert!(
            md.lines()
                .any(|l| l.starts_with("| resharding |") && l.contains("| 10 | 7 | 2 | 3 |")),
            "{md}"
        );
    }

    #[test]
    fn a_failed_answer_or_no_load_during_the_resharding_fails_verify() {
        let mut failed = report();
        failed.reshard.as_mut().unwrap().resharding.errors = 2;
        assert!(
            verify(&failed)
                .unwrap_err()
                .to_string()
                .contains("resharding on the cluster: 2 failed answers")
        );

        let mut idle = report();
        idle.reshard.as_mut().unwrap().steady.requests = 0;
        assert!(
            verify(&idle)
                .unwrap_err()
                .to_string()
                .contains("steady on the cluster: no requests")
        );

        let mut missing = report();
        missing.reshard = None;
        assert!(
            verify(&missing)
                .unwrap_err()
                .to_string()
                .contains("no resharding phase")
        );
    }

    #[test]
    fn a_missing_run_errors_a_wrong_tier_or_an_empty_primary_fails_verify() {
        let mut missing = report();
        missing.runs.pop();
        assert!(
            verify(&missing)
                .unwrap_err()
                .to_string()
                .contains("no run of origin hit")
        );

        let mut errors = report();
        errors.runs[1].errors = 3;
        assert!(
            verify(&errors)
                .unwrap_err()
                .to_string()
                .contains("3 errors")
        );

        let mut wrong_tier = report();
        wrong_tier.runs[0].expected_share = 0.5;
        assert!(
            verify(&wrong_tier)
                .unwrap_err()
                .to_string()
                .contains("50.0 % L2")
        );

        let mut empty = report();
        empty.keys_per_primary.insert(7001, 0);
        assert!(
            verify(&empty)
                .unwrap_err()
                .to_string()
                .contains("7001 holds no key")
        );
    }
}
