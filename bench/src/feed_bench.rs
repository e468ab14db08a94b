//! Issue 24's scenarios (docs/benchmarks.md, "The invalidation feed"), run after the others on the same
//! stack and written to `report-feed.{json,md}` beside the main report:
//!
//! * **A/B, feed on vs off**: Zipf reads through an edge with Spin's defaults (the feed on, as spin.toml
//!   ships) and through a second edge process with `feed_poll_ms = 0`, then the same pair with the shared
//!   tier on (where the runtime has a key-value store). For each: the share of reads answered at the edge
//!   without Redis (`x-cache` L1 or SHARED), p50/p99, and the Redis commands per edge read (the deltas of
//!   `INFO commandstats` over the run, every client's, divided by the reads).
//! * **Staleness**: under Zipf reads on every feed-on edge process (at least two), writes through the
//!   origin (`PATCH`, ids drawn from the same Zipf, one write per id in flight); after each write's
//!   acknowledgment every edge process is polled until it answers the written version or a newer one.
//!   The time from the acknowledgment until the last edge did is the write's staleness.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aside_bench::keys::{KeyDist, Keys};
use aside_bench::redis_admin::{RedisAdmin, calls_since};
use aside_bench::report;
use indicatif::ProgressBar;
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use crate::catalogue::{Target, runs_under};
use crate::check_stop;
use crate::config::Config;
use crate::http;
use crate::run::{KEY_SEED, loader_args, read_beside, run_loader, write_beside, zipf_reads};
use crate::runtime::Rt;
use crate::stack::{Stack, edge_command, twin};

/// The name `--only` knows these scenarios by.
pub const NAME: &str = crate::catalogue::FEED;
/// The file beside `report.json`.
pub const FILE: &str = "report-feed.json";
/// A write some edge still answers the old version of this long after its acknowledgment is "unseen".
const POLL_LIMIT: Duration = Duration::from_secs(5);
/// Between two polls of one edge.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// The draw seed of the A/B's warm-ups (aside-load's `--draw-seed`; the measured runs keep the default).
const WARMUP_DRAW_SEED: u64 = 0x5eed_f33d;
/// The writes' new departments: the ones the seed draws from, so every write is a valid change.
const DEPARTMENTS: [&str; 6] = aside_shared::Department::SEEDED;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedReport {
    pub runtime: String,
    pub mode: String,
    pub rows: u64,
    pub connections: usize,
    pub duration_s: f64,
    /// The warm-up before each A/B run (`--feed-warmup`).
    #[serde(default)]
    pub warmup_s: f64,
    pub ab: Vec<AbRun>,
    pub staleness: Staleness,
}

/// One run of the A/B.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbRun {
    /// `defaults` or `shared tier`.
    pub edge: String,
    pub feed: bool,
    pub reads: u64,
    pub errors: u64,
    pub rps: f64,
    /// Successful reads answered at the edge without Redis (`x-cache` L1 or SHARED), of all successful.
    pub edge_share: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub x_cache: BTreeMap<String, u64>,
    /// `INFO commandstats` calls during the run, per command (every client's; `info` left out).
    pub redis_calls: BTreeMap<String, u64>,
    /// All of `redis_calls` divided by `reads`.
    pub redis_per_read: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staleness {
    /// The edge processes polled (each also under Zipf reads).
    pub edges: Vec<String>,
    pub load_connections_per_edge: usize,
    pub writes_planned: usize,
    /// Writes acknowledged (`200` with an `etag`).
    pub writes: usize,
    /// Writes some edge still answered an older version of `POLL_LIMIT` after the acknowledgment.
    pub unseen: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Runs the A/B and the staleness scenario under `rt` and writes `report-feed.{json,md}`.
pub fn run(
    config: &Config,
    stack: &mut Stack,
    redis: &mut RedisAdmin,
    rt: Rt,
) -> anyhow::Result<FeedReport> {
    let bar = ProgressBar::hidden();
    let upstreams = (stack.ports.redis, stack.ports.url(Target::Origin));
    let mut pairs = vec![("defaults", Target::Edge(rt))];
    if runs_under(Target::EdgeShared(rt), rt) {
        pairs.push(("shared tier", Target::EdgeShared(rt)));
    }
    let mut ab = Vec::new();
    for (edge, target) in pairs {
        // The feed-off twin: the same edge's command with `feed_poll_ms = 0`, its own port and state.
        let port = free_port()?;
        let name = match target {
            Target::EdgeShared(_) => "edge-shared-feed-off",
            _ => "edge-feed-off",
        };
        let base = edge_command(config, stack, target, port, &upstreams);
        let mut twin = twin(&base, &config.logs.join(format!("{name}-state")));
        xtask::launch::EdgeVariables::new()
            .set("feed_poll_ms", 0)
            .apply(&mut twin);
        stack
            .services
            .spawn(name, twin, &config.logs, libc::SIGTERM)?;
        stack.services.wait_for_port(port, &config.logs)?;
        let off_url = format!("http://127.0.0.1:{port}");
        for (feed, url) in [(true, stack.ports.url(target)), (false, off_url)] {
            check_stop()?;
            ab.push(ab_run(
                config,
                stack,
                redis,
                (edge, feed),
                target,
                url,
                &bar,
            )?);
            std::thread::sleep(Duration::from_millis(if config.quick { 200 } else { 1000 }));
        }
    }
    let staleness = staleness(config, stack, rt)?;
    let report = FeedReport {
        runtime: rt.name().to_string(),
        mode: if config.quick { "quick" } else { "full" }.into(),
        rows: config.rows,
        connections: config.concurrency,
        duration_s: config.duration,
        warmup_s: config.feed_warmup,
        ab,
        staleness,
    };
    write_beside(config, FILE, &report, &report.markdown())?;
    Ok(report)
}

/// One Zipf run through `url` (a warm-up first, unmeasured), with the Redis commands it caused.
fn ab_run(
    config: &Config,
    stack: &Stack,
    redis: &mut RedisAdmin,
    (edge, feed): (&str, bool),
    target: Target,
    url: String,
    bar: &ProgressBar,
) -> anyhow::Result<AbRun> {
    let label = format!(
        "feed-{}-{}",
        if feed { "on" } else { "off" },
        edge.replace(' ', "-")
    );
    let args = |seconds: f64| {
        let mut args = loader_args(url.clone(), target, stack);
        args.extend(zipf_reads(config, config.concurrency, seconds));
        args
    };
    let warmup = config.feed_warmup;
    if warmup > 0.0 {
        // Other draws than the measured run's: with the same ones, a warm-up as long as the run would
        // send every measured read's id beforehand, in the same order.
        let mut warmup_args = args(warmup);
        warmup_args.extend(["--draw-seed".to_string(), WARMUP_DRAW_SEED.to_string()]);
        let log = config.logs.join(format!("load-{label}-warmup.log"));
        run_loader(&config.bin, &warmup_args, &log, Some(warmup), bar)?;
    }
    let before = redis.command_calls()?;
    let log = config.logs.join(format!("load-{label}.log"));
    let result = run_loader(
        &config.bin,
        &args(config.duration),
        &log,
        Some(config.duration),
        bar,
    )?;
    let after = redis.command_calls()?;
    let redis_calls = calls_since(&before, &after);
    let total: u64 = redis_calls.values().sum();
    let run = AbRun {
        edge: edge.to_string(),
        feed,
        reads: result.reads,
        errors: result.errors,
        rps: result.rps,
        edge_share: report::share_of(&result, report::EDGE_TIERS),
        p50_us: result.latency_us.p50,
        p99_us: result.latency_us.p99,
        x_cache: result.x_cache.clone(),
        redis_per_read: total as f64 / result.reads.max(1) as f64,
        redis_calls,
    };
    eprintln!(
        "feed A/B {edge:<12} feed {:<3} {:>8.0} req/s  p50 {:>6} ms  p99 {:>6} ms  at the edge {:>5.1} %  \
         redis/read {:.3}  errors {}",
        if feed { "on" } else { "off" },
        run.rps,
        report::ms(run.p50_us),
        report::ms(run.p99_us),
        run.edge_share * 100.0,
        run.redis_per_read,
        run.errors
    );
    Ok(run)
}

/// Writes under Zipf reads on every feed-on edge process, each polled until it answers the write.
fn staleness(config: &Config, stack: &Stack, rt: Rt) -> anyhow::Result<Staleness> {
    let mut edges = vec![Target::Edge(rt)];
    if runs_under(Target::EdgeShared(rt), rt) {
        edges.push(Target::EdgeShared(rt));
    }
    edges.push(Target::EdgeAuthOff(rt));
    let per_edge = (config.concurrency / edges.len()).max(2);
    let loads = background_reads(config, stack, &edges, per_edge)?;
    std::thread::sleep(Duration::from_secs_f64(config.warmup.max(1.0)));
    let planned = if config.quick { 40 } else { 1000 };
    let writes = write_all(config, stack, &edges, planned)?;
    drop(loads);
    check_stop()?;
    let unseen = writes.iter().filter(|d| **d >= POLL_LIMIT).count();
    let mut ms: Vec<f64> = writes.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let staleness = Staleness {
        edges: edges.iter().map(|t| t.service().to_string()).collect(),
        load_connections_per_edge: per_edge,
        writes_planned: planned,
        writes: writes.len(),
        unseen,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
    };
    eprintln!(
        "feed staleness: {} writes over {} edge processes: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  unseen {}",
        staleness.writes,
        staleness.edges.len(),
        staleness.p50_ms,
        staleness.p99_ms,
        staleness.max_ms,
        staleness.unseen
    );
    Ok(staleness)
}

/// Zipf reads on each of `edges` from `per_edge` connections (one `aside-load` each), until dropped.
fn background_reads(
    config: &Config,
    stack: &Stack,
    edges: &[Target],
    per_edge: usize,
) -> anyhow::Result<Loads> {
    let mut loads = Loads(Vec::new());
    for target in edges {
        let mut args = loader_args(stack.ports.url(*target), *target, stack);
        args.extend(zipf_reads(config, per_edge, 3600.0));
        let log = config
            .logs
            .join(format!("load-staleness-{}.log", target.service()));
        loads.0.push(
            Command::new(config.bin.join("aside-load"))
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&log)?))
                .spawn()
                .context("start aside-load")?,
        );
    }
    Ok(loads)
}

/// `planned` writes through the origin from four writer threads (ids drawn from the reads' Zipf, one
/// write per id in flight), each followed by polling every edge: each acknowledged write's staleness.
fn write_all(
    config: &Config,
    stack: &Stack,
    edges: &[Target],
    planned: usize,
) -> anyhow::Result<Vec<Duration>> {
    const WRITERS: u64 = 4;
    let client_token = std::fs::read_to_string(&stack.client_auth.tokens_file)?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let polled: Vec<(String, u16, Option<String>)> = edges
        .iter()
        .map(|t| {
            let bearer = (!matches!(t, Target::EdgeAuthOff(_))).then(|| client_token.clone());
            (t.service().to_string(), stack.ports.port(*t), bearer)
        })
        .collect();
    let origin = (
        stack.ports.port(Target::Origin),
        stack.secrets.origin_token.clone(),
    );
    let keys = Keys::new(config.rows, KeyDist::Zipf, config.zipf_s, None, KEY_SEED)?;
    let next = AtomicUsize::new(0);
    let busy = Mutex::new(HashSet::new());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (keys, next, busy, results) = (&keys, &next, &busy, &results);
                let (polled, origin) = (&polled, &origin);
                scope.spawn(move || -> anyhow::Result<()> {
                    let agent = http::agent();
                    let mut rng = SmallRng::seed_from_u64(KEY_SEED + 1 + w);
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= planned || crate::STOP.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        let id = loop {
                            let id = keys.pick(&mut rng).expect("zipf always picks");
                            if busy.lock().unwrap().insert(id) {
                                break id;
                            }
                        };
                        let outcome = write_and_poll(&agent, origin, polled, id, n);
                        busy.lock().unwrap().remove(&id);
                        results.lock().unwrap().push(outcome?);
                    }
                })
            })
            .collect();
        writers.into_iter().try_for_each(|writer| {
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))?
        })
    })?;
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect())
}

/// Background load processes, stopped when dropped.
struct Loads(Vec<Child>);

impl Drop for Loads {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One write of `id` through the origin, then every edge polled until it answers that version (or a
/// newer one): the time from the acknowledgment until the last edge did (`POLL_LIMIT` if one never
/// did); `None` when the origin did not acknowledge the write.
fn write_and_poll(
    agent: &ureq::Agent,
    (origin, token): &(u16, String),
    edges: &[(String, u16, Option<String>)],
    id: u64,
    n: usize,
) -> anyhow::Result<Option<Duration>> {
    let body = format!(
        r#"{{"department":"{}"}}"#,
        DEPARTMENTS[n % DEPARTMENTS.len()]
    );
    let written = http::patch_json(agent, *origin, &format!("/users/{id}"), token, &body)?;
    let (200, Some(written)) = (written.status, written.version) else {
        return Ok(None);
    };
    let acknowledged = Instant::now();
    let mut waiting: Vec<&(String, u16, Option<String>)> = edges.iter().collect();
    while !waiting.is_empty() {
        if acknowledged.elapsed() >= POLL_LIMIT {
            return Ok(Some(POLL_LIMIT));
        }
        let mut still = Vec::new();
        for edge in waiting {
            let (status, version) =
                http::get(agent, edge.1, &format!("/users/{id}"), edge.2.as_deref())
                    .map_or((0, None), |a| (a.status, a.version));
            if status != 200 || version.is_none_or(|v| v < written) {
                still.push(edge);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            std::thread::sleep(POLL_EVERY);
        }
    }
    Ok(Some(acknowledged.elapsed()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl FeedReport {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "## The invalidation feed ({}, {} run: {} profiles, Zipf {} connections, {} s warm-up + {} s per run)\n\n\
             | edge | feed | reads | at the edge (L1, SHARED) | p50 ms | p99 ms | Redis commands / read | errors |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            self.runtime, self.mode, self.rows, self.connections, self.warmup_s, self.duration_s
        );
        for r in &self.ab {
            out.push_str(&format!(
                "| {} | {} | {} | {:.1} % | {} | {} | {:.3} ({}) | {} |\n",
                r.edge,
                if r.feed { "on" } else { "off" },
                r.reads,
                r.edge_share * 100.0,
                report::ms(r.p50_us),
                report::ms(r.p99_us),
                r.redis_per_read,
                r.redis_calls
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.errors
            ));
        }
        let s = &self.staleness;
        out.push_str(&format!(
            "\nStaleness: {} of {} writes through the origin under Zipf reads on {} edge processes ({}, {} \
             connections each); from each write's acknowledgment until every edge process answered it: \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; unseen after {} s: {}.\n",
            s.writes,
            s.writes_planned,
            s.edges.len(),
            s.edges.join(", "),
            s.load_connections_per_edge,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            POLL_LIMIT.as_secs(),
            s.unseen
        ));
        out
    }
}

/// What the scenarios claim, checked (behaviour, not thresholds): each A/B run answered reads; the
/// feed-on runs read the feed (`XREAD` calls) and the feed-off runs did not; the staleness scenario
/// polled at least two edge processes and every planned write was acknowledged and seen by all of them.
pub fn verify(report: &FeedReport) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for feed in [true, false] {
        if !report
            .ab
            .iter()
            .any(|r| r.feed == feed && r.edge == "defaults")
        {
            problems.push(format!("no A/B run of the defaults with the feed {feed}"));
        }
    }
    for r in &report.ab {
        let label = format!("{} / feed {}", r.edge, if r.feed { "on" } else { "off" });
        if r.reads == 0 {
            problems.push(format!("{label}: no reads"));
        }
        let xread = r.redis_calls.get("xread").copied().unwrap_or(0);
        if r.feed && xread == 0 {
            problems.push(format!("{label}: the edge never read the feed (no XREAD)"));
        }
        if !r.feed && xread > 0 {
            problems.push(format!("{label}: {xread} XREADs with the feed off"));
        }
        if r.redis_calls.is_empty() {
            problems.push(format!("{label}: no Redis command counted"));
        }
    }
    let s = &report.staleness;
    if s.edges.len() < 2 {
        problems.push(format!(
            "staleness: {} edge process(es), not 2 or more",
            s.edges.len()
        ));
    }
    if s.writes != s.writes_planned {
        problems.push(format!(
            "staleness: {} of {} writes acknowledged",
            s.writes, s.writes_planned
        ));
    }
    if s.unseen > 0 {
        problems.push(format!(
            "staleness: {} writes not answered by every edge within {} s",
            s.unseen,
            POLL_LIMIT.as_secs()
        ));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the feed scenarios did not measure what they claim:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// `verify` of the `report-feed.json` beside `main` (a report of a whole run must have one).
pub fn verify_beside(main: &Path) -> anyhow::Result<()> {
    let (path, report): (_, FeedReport) = read_beside(main, FILE, "feed")?;
    verify(&report)?;
    println!(
        "feed report {}: {} A/B runs, {} writes seen by {} edge processes",
        path.display(),
        report.ab.len(),
        report.staleness.writes,
        report.staleness.edges.len()
    );
    Ok(())
}
