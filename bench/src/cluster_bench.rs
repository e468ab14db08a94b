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
//! `INFO commandstats` over the run on every primary, every client's, divided by the reads). The cluster
//! and its origin and edge are started for this scenario and stopped with the stack. `verify` checks
//! what the scenario claims (every run answered without errors, each read from the tier it measures,
//! the profiles spread over every primary), never a speed.

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
    let report = ClusterReport {
        runtime: rt.name().to_string(),
        mode: if config.quick { "quick" } else { "full" }.into(),
        rows: config.rows,
        connections: config.concurrency,
        duration_s: config.duration,
        keys_per_primary,
        runs,
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
