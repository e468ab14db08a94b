//! `aside-load`: a closed-loop HTTP load generator for one benchmark scenario.
//!
//! N connections (HTTP/1.1 keep-alive, one hyper client connection each) each send a request, wait for
//! the whole answer, and send the next; requests finished during the warm-up are not counted. Every
//! answer's latency goes into an HDR histogram (1 µs to 60 s, 3 significant digits); `x-cache` values of
//! successful reads are counted for the per-tier hit ratio, and each tier's reads get a histogram of their own; non-2xx answers, timeouts and connection
//! failures are errors. The result is one JSON object on stdout ([`aside_bench::load::LoadResult`]).
//!
//! It runs as its own process so that the servers it measures never share its runtime, and on one
//! thread by default, to leave the (few) cores to the servers.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aside_bench::client::{Answer, Conn, Outgoing};
use aside_bench::keys::{KeyDist, Keys};
use aside_bench::load::{Latency, LoadResult, SPECTRUM};
use aside_shared::Department;
use aside_shared::headers::{X_EDGE_INSTANCE, parse_server_timing};
use clap::Parser;
use hdrhistogram::Histogram;
use hyper::Method;
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};

#[derive(Debug, Parser)]
#[command(
    name = "aside-load",
    about = "Closed-loop HTTP load for one aside benchmark scenario; prints JSON"
)]
struct Args {
    /// Base URL (`http://127.0.0.1:3000`); requests go to `<url>/users/{id}`.
    #[arg(long)]
    url: String,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Time before measuring starts (connections open, caches and pools warm up): `2s`, `500ms`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Measured time after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many measured requests instead (no warm-up); for filling caches.
    #[arg(long)]
    requests: Option<u64>,
    /// How ids are chosen.
    #[arg(long, value_enum, default_value = "zipf")]
    keys: KeyDist,
    /// Ids are `1..=ids`.
    #[arg(long)]
    ids: u64,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Uniform choice among this many ids only (a hot set).
    #[arg(long)]
    hot: Option<u64>,
    /// Percentage of requests that are writes (`PATCH /users/{id}` with a new department).
    #[arg(long, default_value_t = 0.0)]
    write_percent: f64,
    /// File holding a bearer token to send: the origin's, or a client JWT for an edge with `auth = "on"`
    /// (e.g. from `cargo xtask token --scope profiles:admin`); never given on the command line. Several
    /// tokens, one per line: connection `n` sends line `n mod lines` (a token per connection).
    #[arg(long)]
    bearer_file: Option<PathBuf>,
    /// Seed of the id order (the same in every process of one benchmark).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seed of the draws from that order [default: --seed]. Two runs with the same draw seed send the
    /// same ids in the same order per connection; a warm-up that must not be the measured run's first
    /// part gives another one.
    #[arg(long)]
    draw_seed: Option<u64>,
    /// A request that takes longer than this is a timeout (and its connection is replaced).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// End the measured window early once this file exists (looked for every 10 ms): a phase whose
    /// length another process decides (the cluster scenario's resharding). Requests in flight then
    /// finish and count; no new one starts.
    #[arg(long)]
    stop_file: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 10s, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// What one connection saw.
struct Tally {
    latency: Histogram<u64>,
    write_latency: Histogram<u64>,
    reads: u64,
    writes: u64,
    errors: BTreeMap<String, u64>,
    x_cache: BTreeMap<String, u64>,
    /// Latency of successful reads per `x-cache` value.
    tiers: BTreeMap<String, Histogram<u64>>,
    /// Per `x-cache` value and `server-timing` metric: (sum of ms, answers that carried it).
    timings: BTreeMap<String, BTreeMap<String, (f64, u64)>>,
    /// Every answer by status code.
    statuses: BTreeMap<String, u64>,
    /// Answers (any status) without `x-cache`.
    no_x_cache: u64,
    /// Completions per second since the measured window opened.
    per_second: Vec<u64>,
    /// Latencies (µs) of the answers of each second.
    per_second_latency: Vec<Vec<u32>>,
    /// Successful reads, and those answered from tier 1, of each second.
    per_second_reads: Vec<u64>,
    per_second_l1: Vec<u64>,
    /// The instances (`x-edge-instance`) that gave the answers of each second.
    per_second_instances: Vec<HashSet<String>>,
    /// When this connection's last measured request finished.
    last_done: Option<Instant>,
    exhausted: bool,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            write_latency: histogram(),
            reads: 0,
            writes: 0,
            errors: BTreeMap::new(),
            x_cache: BTreeMap::new(),
            tiers: BTreeMap::new(),
            timings: BTreeMap::new(),
            statuses: BTreeMap::new(),
            no_x_cache: 0,
            per_second: Vec::new(),
            per_second_latency: Vec::new(),
            per_second_reads: Vec::new(),
            per_second_l1: Vec::new(),
            per_second_instances: Vec::new(),
            last_done: None,
            exhausted: false,
        }
    }

    /// Counts an answer that took `micros` into second `second` of the window (`read`: a successful
    /// read, `l1`: answered from tier 1, `instance`: the `x-edge-instance` that gave it).
    fn second(
        &mut self,
        second: usize,
        micros: Option<u64>,
        read: bool,
        l1: bool,
        instance: Option<String>,
    ) {
        for series in [
            &mut self.per_second,
            &mut self.per_second_reads,
            &mut self.per_second_l1,
        ] {
            if series.len() <= second {
                series.resize(second + 1, 0);
            }
        }
        self.per_second[second] += 1;
        self.per_second_reads[second] += u64::from(read);
        self.per_second_l1[second] += u64::from(l1);
        if let Some(instance) = instance {
            if self.per_second_instances.len() <= second {
                self.per_second_instances
                    .resize_with(second + 1, HashSet::new);
            }
            self.per_second_instances[second].insert(instance);
        }
        if let Some(micros) = micros {
            if self.per_second_latency.len() <= second {
                self.per_second_latency.resize_with(second + 1, Vec::new);
            }
            self.per_second_latency[second].push(micros.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Counts one answer that took `micros`: its status, `x-cache` and, for a successful read, its
    /// tier's latency and `server-timing`. Returns whether it was a successful read, and from tier 1.
    fn answered(&mut self, answer: Answered, write: bool, micros: u64) -> (bool, bool) {
        let Answered {
            status,
            x_cache,
            timing,
            instance: _,
        } = answer;
        self.latency.saturating_record(micros);
        *self.statuses.entry(status.to_string()).or_default() += 1;
        if x_cache.is_none() {
            self.no_x_cache += 1;
        }
        if write {
            self.writes += 1;
            self.write_latency.saturating_record(micros);
        } else {
            self.reads += 1;
        }
        if !(200..300).contains(&status) {
            self.error(format!("status_{status}"));
            return (false, false);
        }
        if write {
            return (false, false);
        }
        let tier = x_cache.unwrap_or_else(|| "none".into());
        if let Some(timing) = timing {
            let metrics = self.timings.entry(tier.clone()).or_default();
            for (name, ms) in parse_server_timing(&timing) {
                let (sum, n) = metrics.entry(name.to_string()).or_default();
                *sum += ms;
                *n += 1;
            }
        }
        self.tiers
            .entry(tier.clone())
            .or_insert_with(histogram)
            .saturating_record(micros);
        let l1 = tier == "L1";
        *self.x_cache.entry(tier).or_default() += 1;
        (true, l1)
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latency.add(&other.latency).expect("same bounds");
        self.write_latency
            .add(&other.write_latency)
            .expect("same bounds");
        self.reads += other.reads;
        self.writes += other.writes;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.x_cache {
            *self.x_cache.entry(k).or_default() += v;
        }
        for (k, h) in other.tiers {
            self.tiers
                .entry(k)
                .or_insert_with(histogram)
                .add(&h)
                .expect("same bounds");
        }
        for (tier, metrics) in other.timings {
            let mine = self.timings.entry(tier).or_default();
            for (name, (sum, n)) in metrics {
                let (s, c) = mine.entry(name).or_default();
                *s += sum;
                *c += n;
            }
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.no_x_cache += other.no_x_cache;
        add_series(&mut self.per_second, other.per_second);
        add_series(&mut self.per_second_reads, other.per_second_reads);
        add_series(&mut self.per_second_l1, other.per_second_l1);
        if self.per_second_instances.len() < other.per_second_instances.len() {
            self.per_second_instances
                .resize_with(other.per_second_instances.len(), HashSet::new);
        }
        for (mine, theirs) in self
            .per_second_instances
            .iter_mut()
            .zip(other.per_second_instances)
        {
            mine.extend(theirs);
        }
        if self.per_second_latency.len() < other.per_second_latency.len() {
            self.per_second_latency
                .resize_with(other.per_second_latency.len(), Vec::new);
        }
        for (i, v) in other.per_second_latency.into_iter().enumerate() {
            self.per_second_latency[i].extend(v);
        }
        self.last_done = self.last_done.max(other.last_done);
        self.exhausted |= other.exhausted;
    }
}

/// Settings every connection shares.
struct Plan {
    host: String,
    /// `Bearer <token>` values; connection `n` sends number `n mod len`.
    bearers: Vec<String>,
    keys: Keys,
    write_percent: f64,
    timeout: Duration,
    measure_from: Instant,
    /// Time-bounded runs end here; request-bounded runs have `None`.
    end: Option<Instant>,
    /// Request-bounded runs: how many requests in all.
    budget: Option<std::sync::atomic::AtomicU64>,
    /// When `--stop-file` appeared, once it has.
    stopped: std::sync::OnceLock<Instant>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string(&result).expect("a result serialises")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aside-load: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.write_percent),
        "--write-percent must be from 0 to 100"
    );
    let host = url_host(&args.url)?;
    let bearers: Vec<String> = match &args.bearer_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|t| format!("Bearer {t}"))
            .collect(),
        None => Vec::new(),
    };
    anyhow::ensure!(
        args.bearer_file.is_none() || !bearers.is_empty(),
        "the bearer file holds no token"
    );
    let keys = Keys::new(args.ids, args.keys, args.zipf_s, args.hot, args.seed)?;
    let start = Instant::now();
    let (measure_from, end, budget) = match args.requests {
        Some(n) => (start, None, Some(std::sync::atomic::AtomicU64::new(n))),
        None => (
            start + args.warmup,
            Some(start + args.warmup + args.duration),
            None,
        ),
    };
    let plan = Arc::new(Plan {
        host,
        bearers,
        keys,
        write_percent: args.write_percent,
        timeout: args.timeout,
        measure_from,
        end,
        budget,
        stopped: std::sync::OnceLock::new(),
    });
    let watcher = args.stop_file.clone().map(|file| {
        let plan = Arc::clone(&plan);
        tokio::spawn(async move {
            while !file.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = plan.stopped.set(Instant::now());
        })
    });
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let plan = Arc::clone(&plan);
        let seed = args
            .draw_seed
            .unwrap_or(args.seed)
            .wrapping_mul(1_000_003)
            .wrapping_add(worker as u64 + 1);
        tasks.push(tokio::spawn(connection(plan, seed, worker)));
    }
    let mut total = Tally::new();
    for task in tasks {
        total.merge(task.await?);
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    // A timed run is measured to its end or its stop file (or its last answer, if later); a walk that ran out of ids and
    // a request-bounded run, to their last answer.
    let end = plan.stopped.get().copied().or(plan.end);
    let window_end = match (end, total.last_done) {
        (Some(end), Some(last)) if !total.exhausted => end.max(last),
        (_, Some(last)) => last,
        (Some(end), None) => end,
        (None, None) => Instant::now(),
    };
    let elapsed = window_end.saturating_duration_since(plan.measure_from);
    Ok(summarise(total, elapsed, args.concurrency))
}

/// The address to connect to, from a base URL without a path.
fn url_host(url: &str) -> anyhow::Result<String> {
    let (host, path) = aside_bench::client::split_url(url).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        path == "/",
        "the URL must be http://host:port with no path: {url}"
    );
    Ok(host)
}

/// One closed-loop connection: request, whole answer, next request.
async fn connection(plan: Arc<Plan>, seed: u64, number: usize) -> Tally {
    let bearer =
        (!plan.bearers.is_empty()).then(|| plan.bearers[number % plan.bearers.len()].as_str());
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tally = Tally::new();
    let mut conn = Conn::new(plan.host.as_str());
    loop {
        if plan.end.is_some_and(|end| Instant::now() >= end) || plan.stopped.get().is_some() {
            break;
        }
        if let Some(budget) = &plan.budget {
            let left = budget.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            );
            if left.is_err() {
                break;
            }
        }
        let Some(id) = plan.keys.pick(&mut rng) else {
            tally.exhausted = true;
            break;
        };
        let write = plan.write_percent > 0.0 && rng.random_range(0.0..100.0) < plan.write_percent;
        let request = build_request(bearer, id, write, &mut rng);
        let started = Instant::now();
        let outcome = conn
            .send(&request, plan.timeout)
            .await
            .map(Answered::from)
            .map_err(|failure| failure.as_str());
        let done = Instant::now();
        let measured = started >= plan.measure_from;
        if !measured {
            continue;
        }
        // For the per-second series: the answer's latency, a successful read, from tier 1.
        let (answered, read_ok, l1, instance) = match outcome {
            Ok(mut answer) => {
                let micros = (done - started).as_micros().clamp(1, 60_000_000) as u64;
                let instance = answer.instance.take();
                let (read_ok, l1) = tally.answered(answer, write, micros);
                (Some(micros), read_ok, l1, instance)
            }
            Err(kind) => {
                tally.error(kind);
                // A refused connection must not turn into a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                (None, false, false, None)
            }
        };
        tally.second(
            (done - plan.measure_from).as_secs() as usize,
            answered,
            read_ok,
            l1,
            instance,
        );
        tally.last_done = Some(done);
    }
    tally
}

fn build_request(bearer: Option<&str>, id: u64, write: bool, rng: &mut SmallRng) -> Outgoing {
    let path = format!("/users/{id}");
    let request = if write {
        let department = Department::SEEDED[rng.random_range(0..Department::SEEDED.len())];
        Outgoing::json(
            Method::PATCH,
            path,
            &serde_json::json!({ "department": department }),
        )
    } else {
        Outgoing::get(path)
    };
    match bearer {
        Some(bearer) => request
            .header("authorization", bearer)
            .expect("a bearer token is a valid header value"),
        None => request,
    }
}

/// What one answer said.
struct Answered {
    status: u16,
    x_cache: Option<String>,
    /// `server-timing`, as sent.
    timing: Option<String>,
    /// `x-edge-instance`: which of the edge's instances answered.
    instance: Option<String>,
}

impl From<Answer> for Answered {
    fn from(answer: Answer) -> Self {
        Self {
            status: answer.status,
            x_cache: answer.header("x-cache").map(str::to_string),
            timing: answer.header("server-timing").map(str::to_string),
            instance: answer.header(X_EDGE_INSTANCE).map(str::to_string),
        }
    }
}

/// A histogram of latencies in µs, 1 µs to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        min: h.min(),
        mean: h.mean(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

fn summarise(mut t: Tally, elapsed: Duration, concurrency: usize) -> LoadResult {
    // Timeouts and connection failures got no answer: they are in `errors`, not in `requests`.
    let requests = t.latency.len();
    let errors: u64 = t.errors.values().sum();
    let secs = elapsed.as_secs_f64();
    // Every instance of the run, partial seconds included (before the series are cut to whole ones).
    let instances = t
        .per_second_instances
        .iter()
        .flatten()
        .collect::<HashSet<_>>()
        .len() as u64;
    let series = PerSecond::of(&mut t, secs.floor() as usize);
    let (server_timing_n, server_timing_ms) = server_timing(std::mem::take(&mut t.timings));
    LoadResult {
        requests,
        reads: t.reads,
        writes: t.writes,
        elapsed_s: secs,
        rps: if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        },
        latency_us: if requests > 0 {
            latency(&t.latency)
        } else {
            Latency::default()
        },
        write_latency_us: (t.writes > 0).then(|| latency(&t.write_latency)),
        errors,
        error_kinds: t.errors,
        x_cache: t.x_cache,
        tier_latency_us: t
            .tiers
            .iter()
            .map(|(k, h)| (k.clone(), latency(h)))
            .collect(),
        spectrum: if requests > 0 {
            SPECTRUM
                .iter()
                .map(|q| (*q, t.latency.value_at_quantile(*q)))
                .collect()
        } else {
            Vec::new()
        },
        server_timing_n,
        statuses: t.statuses,
        no_x_cache: t.no_x_cache,
        server_timing_ms,
        per_second: series.answers,
        per_second_p50_us: series.p50_us,
        per_second_p99_us: series.p99_us,
        per_second_l1: series.l1,
        per_second_reads: series.reads,
        per_second_instances: series.instances,
        instances,
        cpu_ms: own_cpu_ms(),
        keys_exhausted: t.exhausted,
        concurrency,
    }
}

/// The CPU time (user + system) this process has used so far, in ms, from `/proc/self/stat` (fields
/// 14 and 15, in clock ticks of 1/100 s on Linux); `None` where there is no such file.
fn own_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Some(ticks as f64 * 10.0)
}

/// The per-second series of a run, over its whole seconds only.
struct PerSecond {
    answers: Vec<u64>,
    p50_us: Vec<u64>,
    p99_us: Vec<u64>,
    reads: Vec<u64>,
    l1: Vec<u64>,
    /// Distinct instances that answered in each second.
    instances: Vec<u64>,
}

impl PerSecond {
    /// Takes `t`'s series, cut or padded to `whole` seconds.
    fn of(t: &mut Tally, whole: usize) -> Self {
        let mut answers = std::mem::take(&mut t.per_second);
        answers.truncate(whole);
        let mut latency = std::mem::take(&mut t.per_second_latency);
        latency.resize_with(whole, Vec::new);
        for second in &mut latency {
            second.sort_unstable();
        }
        let quantile = |q: f64| -> Vec<u64> {
            latency
                .iter()
                .map(|v| match v.len() {
                    0 => 0,
                    n => u64::from(v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]),
                })
                .collect()
        };
        let (mut reads, mut l1) = (
            std::mem::take(&mut t.per_second_reads),
            std::mem::take(&mut t.per_second_l1),
        );
        reads.resize(whole, 0);
        l1.resize(whole, 0);
        let mut instances: Vec<u64> = std::mem::take(&mut t.per_second_instances)
            .iter()
            .map(|set| set.len() as u64)
            .collect();
        instances.resize(whole, 0);
        Self {
            answers,
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            reads,
            l1,
            instances,
        }
    }
}

/// Per tier, how many answers carried each `server-timing` metric, and its mean (ms).
type TimingCounts = BTreeMap<String, BTreeMap<String, u64>>;
type TimingMeans = BTreeMap<String, BTreeMap<String, f64>>;

fn server_timing(
    timings: BTreeMap<String, BTreeMap<String, (f64, u64)>>,
) -> (TimingCounts, TimingMeans) {
    let counts = timings
        .iter()
        .map(|(tier, metrics)| {
            let counts = metrics
                .iter()
                .map(|(name, (_, n))| (name.clone(), *n))
                .collect();
            (tier.clone(), counts)
        })
        .collect();
    let means = timings
        .into_iter()
        .map(|(tier, metrics)| {
            let means = metrics
                .into_iter()
                .map(|(name, (sum, n))| (name, sum / n.max(1) as f64))
                .collect();
            (tier, means)
        })
        .collect();
    (counts, means)
}

/// Adds `other` into `series`, element by element.
fn add_series(series: &mut Vec<u64>, other: Vec<u64>) {
    if series.len() < other.len() {
        series.resize(other.len(), 0);
    }
    for (i, v) in other.into_iter().enumerate() {
        series[i] += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("2h").is_err());
        assert_eq!(
            url_host("http://127.0.0.1:3000/").unwrap(),
            "127.0.0.1:3000"
        );
        assert!(url_host("https://x:1").is_err());
        assert!(url_host("http://x:1/api").is_err());
    }
}
