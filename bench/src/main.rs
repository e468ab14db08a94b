//! `aside-bench`: the benchmark driver behind `cargo xtask bench` (which builds the binaries and runs
//! this one). See docs/benchmarks.md.
//!
//! It starts a stack of its own (Redis, PostgreSQL, an origin, an origin with the cache off, and per edge
//! runtime an edge, an edge with tier 1 off, the hello-world baseline and, where the runtime has a
//! key-value store, an edge with the shared tier on) on free ports, with its state
//! in a temporary folder that is removed at the end, seeds it, runs every scenario through `aside-load`
//! (a separate process), and writes `report.json`, `report.md` and the charts. Ctrl-C, or any failure,
//! stops the stack and removes its state; the servers' logs stay in `<out>/logs/`.
//!
//! The edge runtime is real Spin (`spin up` of a Spin 4 CLI: `ASIDE_SPIN`, else `spin` on PATH) when
//! one is found, else the bundled host; `--edge-runtime spin|host|both` chooses.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use aside_bench::keys::KeyDist;
use aside_bench::load::LoadResult;
use aside_bench::redis_admin::RedisAdmin;
use aside_bench::report::{
    self, EdgeRuntimes, Machine, Report, RoundTrip, Run, SCHEMA, Settings, Skipped,
};
use aside_bench::topology::{self, Hop, Topologies, Topology, TopologyReport, TopologyRuns};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use xtask::spin::{NotFound, SpinCli};
use xtask::stack::{self, Secrets, Services};

mod feed_bench;

/// Set by Ctrl-C / SIGTERM; checked between steps and while a scenario runs.
static STOP: AtomicBool = AtomicBool::new(false);

/// Seed of the id order every `aside-load` run shares.
const KEY_SEED: u64 = 42;
/// Seed of the generated profiles (a reproducible data set).
const DATA_SEED: u64 = 42;
/// Timed `HGETALL` round trips: the L2 goal is read against their p50.
const HGETALL_SAMPLES: usize = 1000;
/// How long the edges may take to listen: Spin compiles each component on its first start (later
/// starts load it from its cache), several at once, on machines with few cores.
const EDGE_START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(
    name = "aside-bench",
    about = "Benchmark aside on a stack of its own; run it through `cargo xtask bench`"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check a report: every scenario present, every run answered requests and measured what it claims.
    Verify { report: PathBuf },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A few seconds per scenario and 10,000 profiles (what the test suite runs).
    #[arg(long)]
    quick: bool,
    /// Folder with aside-origin, aside-host and aside-load (`cargo xtask bench` passes it).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Cargo profile of those binaries, for the report.
    #[arg(long, default_value = "release")]
    build: String,
    /// Profiles to seed [default: 100000; quick: 10000].
    #[arg(long)]
    rows: Option<u64>,
    /// Connections of the load generator [default: 16; quick: 8].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Warm-up per run, in seconds [default: 3; quick: 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// Warm-up of each feed A/B run (`--only feed`), in seconds [default: --warmup]: long enough for the
    /// edge's tiers to reach steady state (issue 24's share at the edge). Its reads are drawn from the
    /// same Zipf with other draws than the measured run's, so the measured reads are not a replay.
    #[arg(long)]
    feed_warmup: Option<f64>,
    /// Measured time per run, in seconds [default: 20; quick: 2].
    #[arg(long)]
    duration: Option<f64>,
    /// Zipf exponent of the skewed key choice.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Ids in the uniform hot set of the L1-hot scenario.
    #[arg(long, default_value_t = 16)]
    hot_set: u64,
    /// Where the report goes [default: target/bench; quick: target/bench/quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these scenarios (comma-separated), e.g. `--only edge-l1-hot,edge-l2`; `feed`: issue 24's
    /// invalidation-feed scenarios (A/B feed on/off, Redis commands per read, staleness), written to
    /// report-feed.{json,md}.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// What runs the edges and the hello-world baseline: `spin` (`spin up` of a Spin 4 CLI: `ASIDE_SPIN`,
    /// else `spin` on PATH), `host` (the bundled aside-host) or `both` [default: spin when found, else
    /// host]. Every edge scenario runs under each.
    #[arg(long, value_enum)]
    edge_runtime: Option<RuntimeArg>,
    /// Instead of the scenarios: put a latency proxy (aside-delay) on every hop and measure each tier
    /// against the same reads with no cache, in these topologies: `loopback`, `same-dc`, `edge`,
    /// `far-redis` (comma-separated), or `all`. Writes report-topology.{json,md} and topology.svg/png.
    #[arg(long, value_parser = aside_bench::topology::parse, conflicts_with = "only")]
    topology: Option<Topologies>,
    /// With `--topology`: `on` also runs an edge with the shared tier on (Spin's key-value store, in
    /// memory) in each topology, its Zipf and uniform reads beside the edge's; `off` [default] keeps
    /// a topology run short. Needs a runtime with a key-value store (Spin).
    #[arg(long, value_enum, default_value_t = SharedTier::Off, requires = "topology")]
    shared_tier: SharedTier,
    /// A Spin variable for every edge (not the hello-world baseline), `NAME=VALUE`, e.g.
    /// `--edge-var redis_max_connections=1`; repeatable. For A/B runs of one setting; the report lists
    /// them.
    #[arg(long = "edge-var", value_name = "NAME=VALUE", value_parser = parse_edge_var)]
    edge_vars: Vec<(String, String)>,
    /// An experiment: load an LD_PRELOAD shim (bench/nodelay/nodelay.c, built here with gcc) into
    /// every `spin up` process, which turns Nagle's algorithm off on all of Spin's TCP sockets; each
    /// socket it touched is logged, with the option read back, to `<out>/logs/nodelay-<service>.log`.
    /// Spin runtime only (docs/benchmarks.md, "Spin and Nagle").
    #[arg(long)]
    spin_nodelay: bool,
}

/// `NAME=VALUE` of `--edge-var`: a spin.toml variable name (lower-case letters, digits, `_`).
fn parse_edge_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(format!(
            "{name:?} is not a Spin variable name (lower-case letters, digits and _)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SharedTier {
    Off,
    On,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeArg {
    Spin,
    Host,
    Both,
}

/// An edge runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rt {
    /// `spin up` of a Spin 4 CLI.
    Spin,
    /// The bundled Spin-compatible host, `aside-host`.
    Host,
}

impl Rt {
    /// Its name in the report (one of [`report::RUNTIMES`]).
    fn name(self) -> &'static str {
        match self {
            Rt::Spin => "spin",
            Rt::Host => "host",
        }
    }

    /// Whether it has a key-value store, which the edge's shared tier needs.
    fn has_key_value_store(self) -> bool {
        report::has_key_value_store(self.name())
    }
}

/// The edge runtimes of this run and how they were chosen.
struct Runtimes {
    list: Vec<Rt>,
    spin: Option<SpinCli>,
    why: String,
}

impl Runtimes {
    /// `--edge-runtime`, or the default: Spin when a Spin 4 CLI is found (`ASIDE_SPIN`, else `spin` on
    /// PATH), else the bundled host. Asking for Spin without one is an error, and so is a broken
    /// `ASIDE_SPIN` (never silently replaced by the host).
    fn choose(arg: Option<RuntimeArg>, found: Result<SpinCli, NotFound>) -> anyhow::Result<Self> {
        let spin = |found: Result<SpinCli, NotFound>, option: &str| {
            found.map_err(|e| anyhow::anyhow!("--edge-runtime {option}, but {e}"))
        };
        Ok(match (arg, found) {
            (None, Ok(cli)) => Runtimes {
                list: vec![Rt::Spin],
                why: "the default: a Spin 4 CLI was found".into(),
                spin: Some(cli),
            },
            (None, Err(e @ NotFound::BadOverride { .. })) => bail!("{e}"),
            (None, Err(e)) => Runtimes {
                list: vec![Rt::Host],
                why: format!("the default without Spin, NOT Spin: {e}"),
                spin: None,
            },
            (Some(RuntimeArg::Host), _) => Runtimes {
                list: vec![Rt::Host],
                why: "chosen with --edge-runtime host".into(),
                spin: None,
            },
            (Some(RuntimeArg::Spin), found) => Runtimes {
                list: vec![Rt::Spin],
                why: "chosen with --edge-runtime spin".into(),
                spin: Some(spin(found, "spin")?),
            },
            (Some(RuntimeArg::Both), found) => Runtimes {
                list: vec![Rt::Spin, Rt::Host],
                why: "chosen with --edge-runtime both".into(),
                spin: Some(spin(found, "both")?),
            },
        })
    }

    fn report(&self) -> EdgeRuntimes {
        EdgeRuntimes {
            runtimes: self.list.iter().map(|rt| rt.name().to_string()).collect(),
            why: self.why.clone(),
            spin: self.spin.as_ref().map(ToString::to_string),
        }
    }

    /// The command that serves `manifest` on `port` under `rt`, with no `SPIN_*` variable of this
    /// process's environment (the caller sets the component's). Spin keeps its state (and the
    /// component's stdout/stderr, in `logs/`) in `state`.
    fn command(&self, rt: Rt, bin: &Path, manifest: &Path, port: u16, state: &Path) -> Command {
        let listen = format!("127.0.0.1:{port}");
        let mut command = match (rt, &self.spin) {
            (Rt::Spin, Some(cli)) => {
                let mut c = Command::new(&cli.path);
                c.arg("up").arg("--state-dir").arg(state);
                // Only the runtime config the caller gives (`--runtime-config-file`).
                c.env_remove("RUNTIME_CONFIG_FILE");
                c
            }
            _ => {
                let mut c = Command::new(bin.join("aside-host"));
                // One cache for both manifests (its default is beside each manifest: bench/hello/target).
                c.arg("--cache-dir")
                    .arg(workspace_root().join("target/aside-host-cache"));
                c
            }
        };
        command
            .arg("--from")
            .arg(manifest)
            .args(["--listen", &listen]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPIN_") {
                command.env_remove(key);
            }
        }
        command
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Verify { report }) => verify_file(&report),
        None => run(cli.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aside-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn verify_file(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no benchmark report at {}", path.display()))?;
    let report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a benchmark report", path.display()))?;
    report::verify(&report)?;
    feed_bench::verify_beside(path)?;
    println!(
        "benchmark report {}: {} runs of {} scenarios, all answered and measured what they claim",
        path.display(),
        report.runs.len(),
        report::SCENARIOS.len()
    );
    println!(
        "edge runtime {} ({})",
        report.edge_runtime.runtimes.join(" and "),
        report.edge_runtime.why
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// What the requests of a scenario go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    /// The edge with Spin's defaults (tier 1 on).
    Edge(Rt),
    /// A second edge with tier 1 off: every read asks Redis.
    EdgeL1Off(Rt),
    /// An edge with the shared tier on as well (Spin's key-value store `default`, in memory; only
    /// under a runtime with a key-value store).
    EdgeShared(Rt),
    /// The edge with client authentication off (every other edge has it on): what auth costs.
    EdgeAuthOff(Rt),
    /// The hello-world component (bench/hello): what the runtime itself allows.
    Hello(Rt),
    /// The hello-redis component (bench/hello-redis): one `HGETALL` through the runtime's Redis binding
    /// per request, nothing else: what an L2 hit costs before the edge adds anything.
    HelloRedis(Rt),
    /// The origin, directly, with its bearer token.
    Origin,
    /// An origin started with `ASIDE_CACHE=off`: every read is a PostgreSQL query.
    OriginCacheOff,
}

impl Target {
    fn describe(self) -> &'static str {
        match self {
            Target::Edge(_) => "edge",
            Target::EdgeL1Off(_) => "edge with tier 1 off",
            Target::EdgeShared(_) => "edge with the shared tier on",
            Target::EdgeAuthOff(_) => "edge with client authentication off",
            Target::Hello(_) => "hello-world component",
            Target::HelloRedis(_) => "hello-redis component",
            Target::Origin => "origin",
            Target::OriginCacheOff => "origin with ASIDE_CACHE=off",
        }
    }

    /// The runtime of an edge or hello-world target.
    fn runtime(self) -> Option<Rt> {
        match self {
            Target::Edge(rt)
            | Target::EdgeL1Off(rt)
            | Target::EdgeShared(rt)
            | Target::EdgeAuthOff(rt)
            | Target::Hello(rt)
            | Target::HelloRedis(rt) => Some(rt),
            Target::Origin | Target::OriginCacheOff => None,
        }
    }

    /// The same target under `rt` (origins have no runtime).
    fn under(self, rt: Rt) -> Self {
        match self {
            Target::Edge(_) => Target::Edge(rt),
            Target::EdgeL1Off(_) => Target::EdgeL1Off(rt),
            Target::EdgeShared(_) => Target::EdgeShared(rt),
            Target::EdgeAuthOff(_) => Target::EdgeAuthOff(rt),
            Target::Hello(_) => Target::Hello(rt),
            Target::HelloRedis(_) => Target::HelloRedis(rt),
            origin => origin,
        }
    }

    /// The service's name (and its log file's).
    fn service(self) -> &'static str {
        match self {
            Target::Edge(Rt::Spin) => "edge-spin",
            Target::Edge(Rt::Host) => "edge-host",
            Target::EdgeL1Off(Rt::Spin) => "edge-l1-off-spin",
            Target::EdgeL1Off(Rt::Host) => "edge-l1-off-host",
            Target::EdgeShared(Rt::Spin) => "edge-shared-spin",
            Target::EdgeShared(Rt::Host) => "edge-shared-host",
            Target::EdgeAuthOff(Rt::Spin) => "edge-auth-off-spin",
            Target::EdgeAuthOff(Rt::Host) => "edge-auth-off-host",
            Target::Hello(Rt::Spin) => "hello-spin",
            Target::Hello(Rt::Host) => "hello-host",
            Target::HelloRedis(Rt::Spin) => "hello-redis-spin",
            Target::HelloRedis(Rt::Host) => "hello-redis-host",
            Target::Origin => "origin",
            Target::OriginCacheOff => "origin-cache-off",
        }
    }
}

/// Before a run: which cache state it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// Redis emptied just before (miss scenarios).
    Empty,
    /// Redis holding every profile.
    Full,
    /// Whatever Redis holds (the hello-world baseline never asks it).
    Any,
}

/// One scenario with one key choice.
#[derive(Clone, Copy)]
struct Plan {
    scenario: &'static str,
    keys: KeyDist,
    /// Uniform over the hot set instead of every id.
    hot: bool,
    target: Target,
    cache: Cache,
    write_percent: f64,
    /// Connections of the load generator, when not `--concurrency`.
    connections: Option<usize>,
    description: &'static str,
    /// The `x-cache` values at least `share` of the successful reads must have, or the run did not
    /// measure what it claims.
    expect: (&'static [&'static str], f64),
}

impl Plan {
    fn keys_label(&self) -> String {
        if self.hot {
            "uniform-hot".into()
        } else {
            self.keys.to_string()
        }
    }
}

/// Every run, in the order they are run: the miss scenarios first (each on an emptied Redis), then
/// Redis is filled once and the rest run on it. An edge scenario (and the baseline) runs once per
/// runtime, the runs of one key choice next to each other.
fn plans(runtimes: &[Rt]) -> Vec<Plan> {
    use KeyDist::{Uniform, Walk, Zipf};
    const ORIGIN_MISS: &str = "every request for an id not asked before (a shuffled walk over all ids, \
        on an emptied Redis) straight to the origin: Redis miss, one PostgreSQL query, a compare-and-set \
        fill. Zipf or uniform choices would repeat ids and turn into hits, so misses use the walk only.";
    const EDGE_MISS: &str = "the same walk of fresh ids through the edge: tier 1 and Redis miss, the \
        edge forwards to the origin, which queries PostgreSQL and fills Redis.";
    const ORIGIN_HIT: &str = "reads straight to the origin (bearer token) with every profile in \
        Redis: one HGETALL per read; what a request costs when the edge is bypassed or its tiers miss.";
    const EDGE_L2: &str = "reads through a second edge whose tier 1 is off (l1_max_entries = 0, \
        l1_ttl_ms = 0), every profile in Redis: each read is a Redis HGETALL from the component.";
    const EDGE_L1: &str = "reads through the edge with Spin's defaults (tier 1 on, 2 s TTL, an instance \
        serves up to 128 requests, 16 at once): Zipf over all ids, and uniform over a hot set small \
        enough to be answered from tier 1 for most of an instance's life. Every profile is in Redis, \
        so what tier 1 misses is an L2 hit.";
    const EDGE_SHARED: &str = "the same reads through an edge with the shared tier on as well \
        (shared_tier_store = default: Spin's key-value store, in memory, runtime-config.toml), which \
        every instance of the Spin process reads and which outlives an instance: what tier 1 misses is \
        a SHARED hit when another instance (or a retired one) read the id within l1_ttl_ms, else an L2 \
        hit. Only under a runtime with a key-value store (Spin).";
    const POSTGRES_ONLY: &str = "reads to an origin started with ASIDE_CACHE=off: every read is a \
        PostgreSQL query (the origin's single-flight still merges concurrent reads of one id). The \
        baseline the cache is measured against.";
    const HELLO: &str = "the hello-world component (bench/hello: a spin-sdk 6 component that answers \
        every request with a fixed body the size of a profile, no x-cache) under the same runtime, keys \
        and load as the edge: what the runtime itself allows, the baseline of every edge run.";
    const HELLO_REDIS: &str = "the hello-redis component (bench/hello-redis: a spin-sdk 6 component \
        that answers GET /users/{id} with one HGETALL of the profile's key through the runtime's Redis \
        binding, on a connection of its own per command like the edge, and nothing else: no tiers, no \
        authentication, no parsing) under the same runtime, keys and load as edge-l2: what an L2 hit \
        costs before the edge adds anything.";
    const AUTH_OFF: &str = "the edge-l1-hot reads (uniform over the hot set) through an edge with \
        client authentication off (auth = off, no token sent). Every other edge scenario runs with it \
        on, as users run it: a client token per connection (8 subjects, signed EdDSA by a local \
        issuer, the keys a static auth_jwks), verified once per token and process, then remembered.";
    const MIX: &str = "95 % reads, 5 % writes (PATCH with a new department, a small valid change) \
        through the edge; writes are forwarded to the origin, committed in PostgreSQL and written \
        through to Redis, and change capture follows them.";
    let p = |scenario, keys, hot, target, cache, write_percent, description, expect| Plan {
        scenario,
        keys,
        hot,
        target,
        cache,
        write_percent,
        connections: None,
        description,
        expect,
    };
    // Each edge target stands for all the runtimes; `Rt::Spin` is a placeholder replaced below.
    let base = vec![
        p(
            "origin-miss",
            Walk,
            false,
            Target::Origin,
            Cache::Empty,
            0.0,
            ORIGIN_MISS,
            (&["MISS"][..], 0.9),
        ),
        p(
            "edge-miss",
            Walk,
            false,
            Target::Edge(Rt::Spin),
            Cache::Empty,
            0.0,
            EDGE_MISS,
            (&["MISS"][..], 0.9),
        ),
        p(
            "origin-hit",
            Zipf,
            false,
            Target::Origin,
            Cache::Full,
            0.0,
            ORIGIN_HIT,
            (&["HIT"][..], 0.9),
        ),
        p(
            "origin-hit",
            Uniform,
            false,
            Target::Origin,
            Cache::Full,
            0.0,
            ORIGIN_HIT,
            (&["HIT"][..], 0.9),
        ),
        p(
            report::HELLO,
            Uniform,
            false,
            Target::Hello(Rt::Spin),
            Cache::Any,
            0.0,
            HELLO,
            (&["none"][..], 0.99),
        ),
        p(
            report::HELLO_REDIS,
            Zipf,
            false,
            Target::HelloRedis(Rt::Spin),
            Cache::Full,
            0.0,
            HELLO_REDIS,
            (&["none"][..], 0.99),
        ),
        p(
            report::HELLO_REDIS,
            Uniform,
            false,
            Target::HelloRedis(Rt::Spin),
            Cache::Full,
            0.0,
            HELLO_REDIS,
            (&["none"][..], 0.99),
        ),
        p(
            "edge-l2",
            Zipf,
            false,
            Target::EdgeL1Off(Rt::Spin),
            Cache::Full,
            0.0,
            EDGE_L2,
            (&["L2"][..], 0.9),
        ),
        p(
            "edge-l2",
            Uniform,
            false,
            Target::EdgeL1Off(Rt::Spin),
            Cache::Full,
            0.0,
            EDGE_L2,
            (&["L2"][..], 0.9),
        ),
        p(
            "edge-l1-hot",
            Zipf,
            false,
            Target::Edge(Rt::Spin),
            Cache::Full,
            0.0,
            EDGE_L1,
            (&["L1", "SHARED", "L2"][..], 0.9),
        ),
        p(
            "edge-l1-hot",
            Uniform,
            true,
            Target::Edge(Rt::Spin),
            Cache::Full,
            0.0,
            EDGE_L1,
            (report::EDGE_TIERS, 0.5),
        ),
        p(
            report::EDGE_SHARED,
            Zipf,
            false,
            Target::EdgeShared(Rt::Spin),
            Cache::Full,
            0.0,
            EDGE_SHARED,
            (&["L1", "SHARED", "L2"][..], 0.9),
        ),
        p(
            report::EDGE_SHARED,
            Uniform,
            true,
            Target::EdgeShared(Rt::Spin),
            Cache::Full,
            0.0,
            EDGE_SHARED,
            (report::EDGE_TIERS, 0.5),
        ),
        p(
            report::EDGE_AUTH_OFF,
            Uniform,
            true,
            Target::EdgeAuthOff(Rt::Spin),
            Cache::Full,
            0.0,
            AUTH_OFF,
            (report::EDGE_TIERS, 0.5),
        ),
        p(
            "postgres-only",
            Zipf,
            false,
            Target::OriginCacheOff,
            Cache::Full,
            0.0,
            POSTGRES_ONLY,
            (&["MISS"][..], 0.9),
        ),
        p(
            "postgres-only",
            Uniform,
            false,
            Target::OriginCacheOff,
            Cache::Full,
            0.0,
            POSTGRES_ONLY,
            (&["MISS"][..], 0.9),
        ),
        p(
            "mix-95-5",
            Zipf,
            false,
            Target::Edge(Rt::Spin),
            Cache::Full,
            5.0,
            MIX,
            (&["L1", "SHARED", "L2"][..], 0.8),
        ),
        p(
            "mix-95-5",
            Uniform,
            false,
            Target::Edge(Rt::Spin),
            Cache::Full,
            5.0,
            MIX,
            (&["L1", "SHARED", "L2"][..], 0.8),
        ),
    ];
    base.into_iter()
        .flat_map(|plan| match plan.target.runtime() {
            None => vec![plan],
            Some(_) => runtimes
                .iter()
                .filter(|rt| runs_under(plan.target, **rt))
                .map(|rt| Plan {
                    target: plan.target.under(*rt),
                    ..plan
                })
                .collect(),
        })
        .collect()
}

/// Whether `target` (of any runtime) can run under `rt`: the shared tier needs a key-value store.
fn runs_under(target: Target, rt: Rt) -> bool {
    !matches!(target, Target::EdgeShared(_)) || rt.has_key_value_store()
}

/// Ports of the bench stack, all picked free at start.
struct Ports {
    redis: u16,
    postgres: u16,
    /// The origins, and the edges and hello-world of every runtime.
    targets: Vec<(Target, u16)>,
    /// For `--topology`: the latency proxies' ports.
    proxies: Vec<u16>,
}

impl Ports {
    fn pick(runtimes: &[Rt], proxies: usize) -> anyhow::Result<Self> {
        let mut targets = vec![Target::Origin, Target::OriginCacheOff];
        for rt in runtimes {
            targets.extend(
                [
                    Target::Edge(*rt),
                    Target::EdgeL1Off(*rt),
                    Target::EdgeShared(*rt),
                    Target::EdgeAuthOff(*rt),
                    Target::Hello(*rt),
                    Target::HelloRedis(*rt),
                ]
                .into_iter()
                .filter(|t| runs_under(*t, *rt)),
            );
        }
        // Hold every listener until all are picked, so no two are the same.
        let listeners: Vec<std::net::TcpListener> = (0..targets.len() + 2 + proxies)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let p: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        let proxies = p[p.len() - proxies..].to_vec();
        Ok(Self {
            redis: p[0],
            postgres: p[1],
            targets: targets.into_iter().zip(p[2..].iter().copied()).collect(),
            proxies,
        })
    }

    fn port(&self, target: Target) -> u16 {
        self.targets
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, port)| *port)
            .expect("every target of the run has a port")
    }

    fn url(&self, target: Target) -> String {
        format!("http://127.0.0.1:{}", self.port(target))
    }
}

/// Waits until every one of `ports` accepts connections, failing early when a service exits.
fn wait_for_ports(
    services: &mut Services,
    ports: &[(&str, u16)],
    logs: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for (name, port) in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            check_stop()?;
            if let Some(exited) = services.first_exited() {
                bail!("{exited} exited; see {}/{exited}.log", logs.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not open port {port} within {} s; see {}/{name}.log",
                    timeout.as_secs(),
                    logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Folders removed when dropped (after the services, which are declared later and dropped first).
struct TempDirs(Vec<PathBuf>);

impl Drop for TempDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(dir)
            {
                eprintln!("aside-bench: could not remove {}: {e}", dir.display());
            }
        }
    }
}

fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn run(mut args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let topologies = args.topology.take();
    let config = Config::from_args(args)?;
    if let Some(topologies) = topologies {
        return run_topologies(&config, &topologies, started, started_at_unix);
    }
    let plans = config.plans()?;
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("install the Ctrl-C handler")?;

    let mut stack = start_stack(&config, plans.len(), 0)?;
    seed(&config, &stack)?;
    start_servers(&config, &mut stack)?;
    let mut redis = warm(&stack)?;
    let setup_s = started.elapsed().as_secs_f64();
    eprintln!("aside-bench: stack ready in {setup_s:.1} s");

    let route = |ports: &Ports, target| ports.url(target);
    let measured = run_scenarios(&config, &mut stack, &mut redis, &plans, (&route, None))?;
    // Issue 24's scenarios (bench/src/feed_bench.rs): their own report beside this one.
    let feed = if config.only.is_empty() || config.only.iter().any(|o| o == feed_bench::NAME) {
        let rt = config.runtimes.list[0];
        if redis.db_size()? < config.rows {
            let bar = ProgressBar::hidden();
            fill_redis(&config, &stack, &mut redis, &bar)?;
        }
        Some(feed_bench::run(&config, &mut stack, &mut redis, rt)?)
    } else {
        None
    };
    drop(redis);
    drop(stack);

    let mut report = collect(&config, measured, setup_s, started, started_at_unix);
    report.skipped = config.skipped();
    report.finish();
    write_report(&config, &report)?;
    feed.as_ref().map_or(Ok(()), feed_bench::verify)
}

/// The settings of one run: the command line with its defaults filled in, and where things are.
struct Config {
    quick: bool,
    build: String,
    rows: u64,
    concurrency: usize,
    warmup: f64,
    /// The feed A/B's warm-up (`--feed-warmup`, else `warmup`).
    feed_warmup: f64,
    duration: f64,
    zipf_s: f64,
    hot_set: u64,
    only: Vec<String>,
    /// `--shared-tier`: the topology runs' edge with the shared tier on, too.
    shared_tier: bool,
    /// The folder of aside-origin, aside-host and aside-load.
    bin: PathBuf,
    runtimes: Runtimes,
    /// Where the report goes, and the servers' logs (`<out>/logs`, emptied at start).
    out: PathBuf,
    logs: PathBuf,
    /// `--edge-var`: Spin variables set on every edge.
    edge_vars: Vec<(String, String)>,
    /// `--spin-nodelay`: the shim built for this run, loaded into every `spin up`.
    nodelay_shim: Option<PathBuf>,
}

impl Config {
    /// Fills in the defaults, checks the settings and that every binary is built, and empties the
    /// logs folder.
    fn from_args(args: RunArgs) -> anyhow::Result<Self> {
        let root = workspace_root();
        let quick = args.quick;
        let rows = args.rows.unwrap_or(if quick { 10_000 } else { 100_000 });
        let concurrency = args.concurrency.unwrap_or(if quick { 8 } else { 16 });
        let warmup = args.warmup.unwrap_or(if quick { 0.5 } else { 3.0 });
        let duration = args.duration.unwrap_or(if quick { 2.0 } else { 20.0 });
        anyhow::ensure!(rows >= 100, "--rows must be at least 100");
        anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(
            warmup >= 0.0 && duration > 0.0,
            "--warmup must be >= 0 and --duration > 0"
        );
        let feed_warmup = args.feed_warmup.unwrap_or(warmup);
        anyhow::ensure!(
            feed_warmup.is_finite() && (0.0..=3600.0).contains(&feed_warmup),
            "--feed-warmup must be 0 to 3600 seconds"
        );
        let bin = args
            .bin_dir
            .clone()
            .unwrap_or_else(|| root.join("target/release"));
        let runtimes = Runtimes::choose(args.edge_runtime, xtask::spin::find())?;
        let wasm = root.join("target/wasm32-wasip2/release");
        let needed = [
            bin.join("aside-origin"),
            bin.join("aside-load"),
            wasm.join("aside_edge.wasm"),
            wasm.join("aside_hello.wasm"),
            wasm.join("aside_hello_redis.wasm"),
        ]
        .into_iter()
        .chain(
            runtimes
                .list
                .contains(&Rt::Host)
                .then(|| bin.join("aside-host")),
        );
        for path in needed {
            anyhow::ensure!(
                path.exists(),
                "{} is missing; run the benchmark through `cargo xtask bench`, which builds it",
                path.display()
            );
        }
        let out = args.out.clone().unwrap_or_else(|| {
            root.join(if quick {
                "target/bench/quick"
            } else {
                "target/bench"
            })
        });
        let out = if out.is_absolute() {
            out
        } else {
            root.join(out)
        };
        let logs = out.join("logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        let nodelay_shim = if args.spin_nodelay {
            anyhow::ensure!(
                runtimes.list == [Rt::Spin],
                "--spin-nodelay is an experiment on Spin's sockets: run it with --edge-runtime spin"
            );
            Some(build_nodelay_shim(&root, &out)?)
        } else {
            None
        };
        Ok(Self {
            quick,
            build: args.build,
            rows,
            concurrency,
            warmup,
            feed_warmup,
            duration,
            zipf_s: args.zipf_s,
            hot_set: args.hot_set,
            only: args.only,
            shared_tier: args.shared_tier == SharedTier::On,
            bin,
            runtimes,
            out,
            logs,
            edge_vars: args.edge_vars,
            nodelay_shim,
        })
    }

    /// The runs of this benchmark, `--only` applied.
    fn plans(&self) -> anyhow::Result<Vec<Plan>> {
        let plans: Vec<Plan> = plans(&self.runtimes.list)
            .into_iter()
            .filter(|p| self.only.is_empty() || self.only.iter().any(|o| o == p.scenario))
            .collect();
        for o in &self.only {
            anyhow::ensure!(
                report::SCENARIOS.contains(&o.as_str()) || o == feed_bench::NAME,
                "unknown scenario {o:?}; the scenarios are {}",
                report::SCENARIOS.join(", ")
            );
        }
        Ok(plans)
    }

    /// The scenarios (of those `--only` keeps) a runtime of this run cannot run, each with the reason;
    /// the report says so instead of leaving them out silently.
    fn skipped(&self) -> Vec<Skipped> {
        let skipped = Self::skipped_under(&self.runtimes.list, &self.only);
        for s in &skipped {
            eprintln!(
                "aside-bench: not running {} under {}: {}",
                s.scenario, s.runtime, s.why
            );
        }
        skipped
    }

    /// What [`Config::skipped`] gives for these runtimes and `--only`.
    fn skipped_under(runtimes: &[Rt], only: &[String]) -> Vec<Skipped> {
        Skipped::without_key_value_store(runtimes.iter().map(|rt| rt.name()), |s| {
            only.is_empty() || only.iter().any(|o| o == s)
        })
    }

    /// Warm-up and measured time of one run.
    fn per_run(&self) -> f64 {
        self.warmup + self.duration
    }
}

/// Builds bench/nodelay/nodelay.c into `<out>/nodelay.so` with gcc (never committed as a binary).
fn build_nodelay_shim(root: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let source = root.join("bench/nodelay/nodelay.c");
    let shim = out.join("nodelay.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .context("--spin-nodelay needs gcc to build its shim")?;
    anyhow::ensure!(
        status.success(),
        "gcc could not build {} ({status})",
        source.display()
    );
    Ok(shim)
}

/// The bench stack while it runs: dropping it stops every service (in reverse start order), then
/// removes its state.
struct Stack {
    /// Declared first, so dropped before the folders they use.
    services: Services,
    _dirs: TempDirs,
    secrets: Secrets,
    /// The origin's bearer token, for `aside-load --bearer-file`.
    token_file: PathBuf,
    /// The edges' clients: the local issuer's JWKS and a file of client tokens, one per line.
    client_auth: ClientAuth,
    ports: Ports,
    database_url: String,
}

/// Step 1: a private state folder, secrets and ports, then Redis and PostgreSQL.
fn start_stack(config: &Config, runs: usize, proxies: usize) -> anyhow::Result<Stack> {
    remove_stale_state();
    let state = std::env::temp_dir().join(format!("aside-bench-{}", std::process::id()));
    let pg_dir = stack::postgres_dir(&state);
    let dirs = TempDirs(vec![state.clone(), pg_dir.clone()]);
    std::fs::create_dir_all(&state)?;
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let secrets = Secrets::load_or_generate(&state.join("secrets"))?;
    let token_file = state.join("secrets/origin-token");
    let client_auth = ClientAuth::generate(&state.join("secrets"))?;
    let ports = Ports::pick(&config.runtimes.list, proxies)?;

    let Config {
        rows,
        concurrency,
        warmup,
        duration,
        ..
    } = config;
    eprintln!(
        "aside-bench: {} run: {rows} profiles, {concurrency} connections, {warmup} s warm-up + {duration} s per run, {runs} runs; logs in {}",
        if config.quick { "quick" } else { "full" },
        config.logs.display()
    );
    let runtimes = &config.runtimes;
    eprintln!(
        "aside-bench: edges and the hello-world baseline run under {} ({}{})",
        runtimes
            .list
            .iter()
            .map(|rt| match rt {
                Rt::Spin => "real Spin (`spin up`)",
                Rt::Host => "the bundled host (aside-host)",
            })
            .collect::<Vec<_>>()
            .join(" and "),
        runtimes.why,
        runtimes
            .spin
            .as_ref()
            .map(|cli| format!("; {cli}"))
            .unwrap_or_default()
    );
    let mut services = Services::new();
    let logs = &config.logs;
    stack::start_redis(
        &workspace_root(),
        ports.redis,
        &state,
        logs,
        &secrets,
        &mut services,
    )?;
    stack::start_postgres(ports.postgres, &pg_dir, logs, &secrets, &mut services)?;
    check_stop()?;
    let database_url = database_url(&secrets, ports.postgres);
    Ok(Stack {
        services,
        _dirs: dirs,
        secrets,
        token_file,
        client_auth,
        ports,
        database_url,
    })
}

/// How many client subjects the edge scenarios use: connection `n` sends subject `n mod CLIENTS`'s token.
const CLIENTS: usize = 8;

/// The edges' client authentication: a local issuer (`xtask token`'s, EdDSA) whose public JWKS the
/// edges get as a static `auth_jwks`, and [`CLIENTS`] tokens with `profiles:admin` (every profile may
/// be read), one per line of `tokens_file`, for `aside-load --bearer-file`.
struct ClientAuth {
    jwks: String,
    tokens_file: PathBuf,
}

impl ClientAuth {
    fn generate(secrets: &Path) -> anyhow::Result<Self> {
        let issuer = xtask::token::LocalIssuer::load_or_generate(secrets)?;
        let tokens = (1..=CLIENTS)
            .map(|n| issuer.token(&format!("bench-client-{n}"), "profiles:admin"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tokens_file = secrets.join("client-tokens");
        xtask::local::write_private(&tokens_file, &(tokens.join("\n") + "\n"))?;
        Ok(Self {
            jwks: issuer.jwks(),
            tokens_file,
        })
    }
}

/// Step 2: the schema and `rows` generated profiles (ids 1..=rows) in PostgreSQL.
fn seed(config: &Config, stack: &Stack) -> anyhow::Result<()> {
    let rows = config.rows;
    let origin_bin = config.bin.join("aside-origin");
    let setup_log = config.logs.join("setup.log");
    run_logged(
        Command::new(&origin_bin)
            .arg("migrate")
            .env("ASIDE_DATABASE_URL", &stack.database_url),
        &setup_log,
    )?;
    let seeding = Instant::now();
    run_logged(
        Command::new(&origin_bin)
            .args(["seed", "--replace", "--count", &rows.to_string()])
            .args(["--seed", &DATA_SEED.to_string()])
            .env("ASIDE_DATABASE_URL", &stack.database_url),
        &setup_log,
    )?;
    let counted = psql(
        stack.ports.postgres,
        &stack.secrets.postgres,
        &format!(
            "SELECT count(*) = {rows} AND min(id) = 1 AND max(id) = {rows} FROM devops_api.users"
        ),
    )?;
    anyhow::ensure!(
        counted == "t",
        "the seeded table does not hold ids 1..={rows}"
    );
    eprintln!(
        "aside-bench: seeded {rows} profiles in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    check_stop()
}

/// Step 3: the two origins, then every edge and hello-world at once (Spin compiles each component on
/// its first start), and waits until all listen.
fn start_servers(config: &Config, stack: &mut Stack) -> anyhow::Result<()> {
    let ports = &stack.ports;
    let logs = &config.logs;
    for target in [Target::Origin, Target::OriginCacheOff] {
        let port = ports.port(target);
        let origin = origin_command(config, stack, target, port, (ports.redis, ports.postgres));
        stack
            .services
            .spawn(target.service(), origin, logs, libc::SIGTERM)?;
        stack.services.wait_for_port(port, logs)?;
    }
    let upstreams = (ports.redis, ports.url(Target::Origin));
    let mut listening = Vec::new();
    for rt in &config.runtimes.list {
        for target in [
            Target::Edge(*rt),
            Target::EdgeL1Off(*rt),
            Target::EdgeShared(*rt),
            Target::EdgeAuthOff(*rt),
            Target::Hello(*rt),
            Target::HelloRedis(*rt),
        ]
        .into_iter()
        .filter(|t| runs_under(*t, *rt))
        {
            let port = ports.port(target);
            let edge = edge_command(config, stack, target, port, &upstreams);
            // SIGTERM to its process group: `spin up` and its trigger (a child process) both stop.
            stack
                .services
                .spawn(target.service(), edge, logs, libc::SIGTERM)?;
            listening.push((target.service(), port));
        }
    }
    wait_for_ports(&mut stack.services, &listening, logs, EDGE_START_TIMEOUT)
}

/// `aside-origin serve` for `target` (an origin, its cache on or off) on `port`, reaching Redis and
/// PostgreSQL on the given local ports.
fn origin_command(
    config: &Config,
    stack: &Stack,
    target: Target,
    port: u16,
    (redis, postgres): (u16, u16),
) -> Command {
    let secrets = &stack.secrets;
    let mut origin = Command::new(config.bin.join("aside-origin"));
    origin
        .arg("serve")
        .env("ASIDE_DATABASE_URL", database_url(secrets, postgres))
        .env(
            "ASIDE_REDIS_URL",
            format!("redis://origin:{}@127.0.0.1:{redis}", secrets.redis_origin),
        )
        .env("ASIDE_ORIGIN_TOKENS", &secrets.origin_token)
        .env("ASIDE_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "ASIDE_CACHE",
            if target == Target::OriginCacheOff {
                "off"
            } else {
                "on"
            },
        );
    origin
}

/// The edge runtime serving `target` (an edge or the hello-world component) on `port`; an edge reaches
/// Redis on the local port `redis` and forwards to `origin_url`.
fn edge_command(
    config: &Config,
    stack: &Stack,
    target: Target,
    port: u16,
    (redis, origin_url): &(u16, String),
) -> Command {
    let root = workspace_root();
    let secrets = &stack.secrets;
    let rt = target.runtime().expect("an edge or hello-world target");
    let manifest = match target {
        Target::Hello(_) => root.join("bench/hello/spin.toml"),
        Target::HelloRedis(_) => root.join("bench/hello-redis/spin.toml"),
        _ => root.join("spin.toml"),
    };
    let state = config.logs.join(format!("{}-state", target.service()));
    let mut edge = config
        .runtimes
        .command(rt, &config.bin, &manifest, port, &state);
    if matches!(target, Target::HelloRedis(_)) {
        // The edge's Redis user: the same ACL (HGETALL of profile keys) the edge reads with.
        edge.env("SPIN_VARIABLE_REDIS_ADDRESS", format!("127.0.0.1:{redis}"))
            .env("SPIN_VARIABLE_REDIS_USER", "edge")
            .env("SPIN_VARIABLE_REDIS_PASSWORD", &secrets.redis_edge);
    }
    if !matches!(target, Target::Hello(_) | Target::HelloRedis(_)) {
        // The address is also the `allowed_outbound_hosts` entry spin.toml templates from it, so a
        // proxy's port is allowed like Redis's own.
        edge.env("SPIN_VARIABLE_REDIS_ADDRESS", format!("127.0.0.1:{redis}"))
            .env("SPIN_VARIABLE_REDIS_PASSWORD", &secrets.redis_edge)
            .env("SPIN_VARIABLE_ORIGIN_URL", origin_url)
            .env("SPIN_VARIABLE_ORIGIN_TOKEN", &secrets.origin_token)
            // Client authentication as users run it (docs/security.md): on, with the local
            // issuer's key as a static JWKS; aside-load sends a token per connection.
            .env("SPIN_VARIABLE_AUTH", "on")
            .env("SPIN_VARIABLE_AUTH_JWKS", &stack.client_auth.jwks)
            .env("SPIN_VARIABLE_AUTH_ISSUER", xtask::token::ISSUER)
            .env("SPIN_VARIABLE_AUTH_AUDIENCE", xtask::token::AUDIENCE);
    }
    if matches!(target, Target::EdgeAuthOff(_)) {
        edge.env("SPIN_VARIABLE_AUTH", "off");
    }
    if matches!(target, Target::EdgeL1Off(_)) {
        edge.env("SPIN_VARIABLE_L1_MAX_ENTRIES", "0")
            .env("SPIN_VARIABLE_L1_TTL_MS", "0");
    }
    if matches!(target, Target::EdgeShared(_)) {
        // The store `default` in memory, shared by every instance of this Spin process.
        edge.arg("--runtime-config-file")
            .arg(root.join("runtime-config.toml"))
            .env("SPIN_VARIABLE_SHARED_TIER_STORE", "default");
    }
    if !matches!(target, Target::Hello(_) | Target::HelloRedis(_)) {
        for (name, value) in &config.edge_vars {
            edge.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
    }
    if let (Some(shim), Rt::Spin) = (&config.nodelay_shim, rt) {
        edge.env("LD_PRELOAD", shim).env(
            "NODELAY_SHIM_LOG",
            config
                .logs
                .join(format!("nodelay-{}.log", target.service())),
        );
    }
    edge
}

/// The PostgreSQL URL of the `aside` user on a local port (PostgreSQL's own, or a proxy's).
fn database_url(secrets: &Secrets, port: u16) -> String {
    format!(
        "postgres://aside:{}@127.0.0.1:{port}/aside",
        secrets.postgres
    )
}

/// Step 4: lets the origin work through the seed's inserts in the change-capture outbox now rather
/// than during the first scenario; returns the admin connection to Redis.
fn warm(stack: &Stack) -> anyhow::Result<RedisAdmin> {
    wait_for_change_capture(stack.ports.postgres, &stack.secrets.postgres)?;
    RedisAdmin::connect(stack.ports.redis, &stack.secrets.redis_admin)
}

/// What the scenarios measured.
struct Measured {
    runs: Vec<Run>,
    redis_hgetall: Option<RoundTrip>,
}

/// The URL a scenario's load goes to for a target.
type Route<'a> = dyn Fn(&Ports, Target) -> String + 'a;

/// Step 5: every plan in order, each on the cache state it needs; `route` gives the URL the load goes to
/// for a target, `topology` names the topology the plans run in.
fn run_scenarios(
    config: &Config,
    stack: &mut Stack,
    redis: &mut RedisAdmin,
    plans: &[Plan],
    (route, topology): (&Route, Option<&str>),
) -> anyhow::Result<Measured> {
    let bar = ProgressBar::new(((config.per_run() + 1.0) * plans.len() as f64 * 10.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut measured = Measured {
        runs: Vec::new(),
        redis_hgetall: None,
    };
    let mut filled = false;
    for plan in plans {
        check_stop()?;
        if let Some(name) = stack.services.first_exited() {
            bail!(
                "{name} exited during the benchmark; see {}/{name}.log",
                config.logs.display()
            );
        }
        match plan.cache {
            Cache::Empty => {
                redis.flush_all()?;
                filled = false;
            }
            Cache::Full if !filled => {
                fill_redis(config, stack, redis, &bar)?;
                filled = true;
                if measured.redis_hgetall.is_none() {
                    measured.redis_hgetall = Some(time_hgetall(redis, &bar)?);
                }
            }
            Cache::Full | Cache::Any => {}
        }
        let url = route(&stack.ports, plan.target);
        measured
            .runs
            .push(run_scenario(config, stack, plan, (url, topology), &bar)?);
        // Let the servers settle (background work of the previous run: fills, change capture).
        std::thread::sleep(Duration::from_millis(if config.quick { 200 } else { 1000 }));
    }
    bar.finish_and_clear();
    Ok(measured)
}

/// Reads every profile once through the origin, so that Redis holds them all.
fn fill_redis(
    config: &Config,
    stack: &Stack,
    redis: &mut RedisAdmin,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    bar.set_message("filling Redis with every profile");
    let fill = Instant::now();
    let rows = config.rows;
    let args = loader_args(stack.ports.url(Target::Origin), Target::Origin, stack)
        .into_iter()
        .chain([
            "--keys".into(),
            "walk".into(),
            "--ids".into(),
            rows.to_string(),
            "--requests".into(),
            rows.to_string(),
            "--concurrency".into(),
            config.concurrency.to_string(),
        ])
        .collect::<Vec<_>>();
    let result = run_loader(
        &config.bin,
        &args,
        &config.logs.join("load-fill.log"),
        None,
        bar,
    )?;
    anyhow::ensure!(
        result.errors == 0,
        "filling Redis failed: {:?}",
        result.error_kinds
    );
    let keys = redis.db_size()?;
    anyhow::ensure!(
        keys >= rows,
        "Redis holds {keys} keys after the fill, expected {rows}"
    );
    bar.suspend(|| {
        eprintln!(
            "aside-bench: Redis filled with {keys} profiles in {:.1} s",
            fill.elapsed().as_secs_f64()
        )
    });
    Ok(())
}

/// What one L2 hit costs in Redis, to read the edge-l2 runs against.
fn time_hgetall(redis: &mut RedisAdmin, bar: &ProgressBar) -> anyhow::Result<RoundTrip> {
    let id = aside_shared::UserId::parse("1").expect("a valid id");
    let key = aside_shared::cache::profile_key(id);
    let rt = redis.time_hgetall(&key, HGETALL_SAMPLES)?;
    bar.suspend(|| {
        eprintln!(
            "aside-bench: one Redis round trip ({}, {} in a row): p50 {:.3} ms, p99 {:.3} ms",
            rt.command,
            rt.samples,
            rt.p50_us / 1000.0,
            rt.p99_us / 1000.0
        )
    });
    Ok(rt)
}

/// One scenario with one key choice through `aside-load`, its line printed. The requests go to `url`
/// (the target's own port, or the proxy in front of it), `topology` names the topology it runs in.
fn run_scenario(
    config: &Config,
    stack: &Stack,
    plan: &Plan,
    (url, topology): (String, Option<&str>),
    bar: &ProgressBar,
) -> anyhow::Result<Run> {
    let label = plan.keys_label();
    let runtime = plan.target.runtime().map(Rt::name);
    let scenario = match topology {
        Some(t) => format!("{t}/{}", plan.scenario),
        None => plan.scenario.to_string(),
    };
    bar.set_message(format!(
        "{scenario} / {label}{}",
        runtime.map(|r| format!(" / {r}")).unwrap_or_default()
    ));
    let mut args = loader_args(url, plan.target, stack);
    args.extend(
        [
            "--keys",
            &plan.keys.to_string(),
            "--ids",
            &config.rows.to_string(),
            "--zipf-s",
            &config.zipf_s.to_string(),
            "--concurrency",
            &plan.connections.unwrap_or(config.concurrency).to_string(),
            "--warmup",
            &format!("{}s", config.warmup),
            "--duration",
            &format!("{}s", config.duration),
            "--write-percent",
            &plan.write_percent.to_string(),
        ]
        .map(String::from),
    );
    if plan.hot {
        args.extend(["--hot".to_string(), config.hot_set.to_string()]);
    }
    let log = config.logs.join(format!(
        "load-{}-{label}{}.log",
        scenario.replace('/', "-"),
        runtime.map(|r| format!("-{r}")).unwrap_or_default()
    ));
    let result = run_loader(&config.bin, &args, &log, Some(config.per_run()), bar)?;
    let check_failed = check(plan, &result);
    bar.suspend(|| {
        eprintln!(
            "{:<14} {:<12} {:<5} {:>9.0} req/s  p50 {:>6} ms  p99 {:>6} ms  errors {:<4} {}{}",
            scenario,
            label,
            runtime.unwrap_or("-"),
            result.rps,
            report::ms(result.latency_us.p50),
            report::ms(result.latency_us.p99),
            result.errors,
            report::hits(&result),
            check_failed
                .as_deref()
                .map(|w| format!("  <- {w}"))
                .unwrap_or_default()
        )
    });
    Ok(Run {
        scenario: plan.scenario.to_string(),
        keys: label,
        target: plan.target.describe().to_string(),
        runtime: runtime.map(String::from),
        description: plan.description.to_string(),
        result,
        check_failed,
    })
}

/// Step 6: the report of the whole run.
fn collect(
    config: &Config,
    measured: Measured,
    setup_s: f64,
    started: Instant,
    started_at_unix: u64,
) -> Report {
    let mut report = Report {
        schema: SCHEMA,
        started_at_unix,
        machine: Machine::detect(),
        settings: collect_settings(config),
        setup_s,
        total_s: started.elapsed().as_secs_f64(),
        edge_runtime: config.runtimes.report(),
        redis_hgetall: measured.redis_hgetall,
        runs: measured.runs,
        skipped: Vec::new(),
        comparison: Default::default(),
    };
    report.finish();
    report
}

/// The settings of the run, as the report gives them.
fn collect_settings(config: &Config) -> Settings {
    Settings {
        mode: if config.quick { "quick" } else { "full" }.into(),
        build: config.build.clone(),
        rows: config.rows,
        concurrency: config.concurrency,
        warmup_s: config.warmup,
        duration_s: config.duration,
        zipf_s: config.zipf_s,
        hot_set: config.hot_set,
        edge_instance_reuse: "Spin's defaults: 128 requests per instance, 16 at once, 1 s idle"
            .into(),
        edge_vars: config
            .edge_vars
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect(),
        spin_nodelay: config.nodelay_shim.is_some(),
    }
}

/// Step 7: `report.json`, `report.md` and the charts written, the tables printed, and the check: of
/// the whole report, or with `--only` of each run that was made.
fn write_report(config: &Config, report: &Report) -> anyhow::Result<()> {
    let out = &config.out;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("report.md"), report.markdown())?;
    aside_bench::charts::write_all(out, &report.runs)?;
    println!("{}", report.table());
    println!("{}", report.comparison_markdown());
    println!(
        "report: {}  (and report.json, latency.svg/png, throughput.svg/png); {:.0} s in all",
        out.join("report.md").display(),
        report.total_s
    );
    if config.only.is_empty() {
        report::verify(report)
    } else {
        let failed: Vec<String> = report
            .runs
            .iter()
            .filter_map(|r| {
                r.check_failed
                    .as_ref()
                    .map(|w| format!("{} / {}: {w}", r.scenario, r.keys))
            })
            .collect();
        all_measured(failed)
    }
}

/// A latency proxy of `--topology`: its service name, the hop whose delay it adds, its own port
/// (an index into [`Ports::proxies`]) and where it relays.
struct Proxy {
    name: &'static str,
    hop: Hop,
    port: u16,
    upstream: u16,
}

/// The proxies of a topology, by the step they start in: each step's upstreams are up before it.
struct Proxies {
    /// In front of Redis and PostgreSQL, for both origins.
    origin_side: [Proxy; 2],
    /// In front of Redis and the origin, for the edge; and the origin with its cache off as seen from
    /// the edge's place.
    edge_side: [Proxy; 3],
    /// In front of the edge, and of the previous proxy: the client's way to each.
    client_side: [Proxy; 2],
    /// With `--shared-tier on`: in front of the edge with the shared tier on.
    client_shared: Option<Proxy>,
}

/// How many proxy ports a topology run needs (the last one only with `--shared-tier on`).
const PROXY_COUNT: usize = 8;

impl Proxies {
    fn new(ports: &Ports, rt: Rt, shared_tier: bool) -> Self {
        let p = &ports.proxies;
        let proxy = |name, hop, i: usize, upstream| Proxy {
            name,
            hop,
            port: p[i],
            upstream,
        };
        Proxies {
            origin_side: [
                proxy("delay-origin-redis", Hop::OriginRedis, 0, ports.redis),
                proxy(
                    "delay-origin-postgres",
                    Hop::OriginPostgres,
                    1,
                    ports.postgres,
                ),
            ],
            edge_side: [
                proxy("delay-edge-redis", Hop::EdgeRedis, 2, ports.redis),
                proxy(
                    "delay-edge-origin",
                    Hop::EdgeOrigin,
                    3,
                    ports.port(Target::Origin),
                ),
                proxy(
                    "delay-no-cache-edge-origin",
                    Hop::EdgeOrigin,
                    4,
                    ports.port(Target::OriginCacheOff),
                ),
            ],
            client_side: [
                proxy(
                    "delay-client-edge",
                    Hop::ClientEdge,
                    5,
                    ports.port(Target::Edge(rt)),
                ),
                proxy("delay-no-cache-client-edge", Hop::ClientEdge, 6, p[4]),
            ],
            client_shared: shared_tier.then(|| {
                proxy(
                    "delay-client-edge-shared",
                    Hop::ClientEdge,
                    7,
                    ports.port(Target::EdgeShared(rt)),
                )
            }),
        }
    }

    /// Where a client's requests for `target` go in the topology: through the client-side proxies.
    fn route(&self, target: Target) -> String {
        let [edge, no_cache] = &self.client_side;
        let port = match (target, &self.client_shared) {
            (Target::OriginCacheOff, _) => no_cache.port,
            (Target::EdgeShared(_), Some(shared)) => shared.port,
            _ => edge.port,
        };
        format!("http://127.0.0.1:{port}")
    }
}

/// The runs of one topology: misses through the origin (a walk on an emptied Redis), then the edge
/// with every profile in Redis (and, with `shared_tier`, the edge with the shared tier on), then the
/// same reads with no cache.
fn topology_plans(rt: Rt, shared_tier: bool) -> Vec<Plan> {
    use KeyDist::{Uniform, Walk, Zipf};
    const EDGE_MISS: &str = "a walk of fresh ids through the edge on an emptied Redis: every read \
        crosses client→edge, edge→Redis (a miss) and edge→origin, where the origin asks Redis and \
        PostgreSQL.";
    const EDGE: &str = "reads through the edge with Spin's defaults, every profile in Redis: tier 1 \
        answers what it holds, Redis (across edge→Redis) the rest.";
    const NO_CACHE: &str = "the same reads with no cache at all: the client calls an origin started \
        with ASIDE_CACHE=off across client→edge and edge→origin; every read is a PostgreSQL query.";
    const EDGE_SHARED: &str = "the same reads through an edge with the shared tier on as well \
        (Spin's key-value store, in memory): tier 1, then the shared tier, then Redis across \
        edge→Redis.";
    const EDGE_ONE: &str = "the edge's Zipf reads from one connection, one request at a time: an L2 \
        hit's cost with nothing else in flight, beside the same reads from every connection.";
    let p = |scenario, keys, target, cache, description, expect| Plan {
        scenario,
        keys,
        hot: false,
        target,
        cache,
        write_percent: 0.0,
        connections: None,
        description,
        expect,
    };
    let edge = Target::Edge(rt);
    let (hits, misses) = (&["L1", "SHARED", "L2"][..], &["MISS"][..]);
    let shared = shared_tier.then(|| {
        [Zipf, Uniform].map(|keys| {
            p(
                topology::EDGE_SHARED,
                keys,
                Target::EdgeShared(rt),
                Cache::Full,
                EDGE_SHARED,
                (hits, 0.9),
            )
        })
    });
    let mut plans = vec![
        p(
            topology::EDGE_MISS,
            Walk,
            edge,
            Cache::Empty,
            EDGE_MISS,
            (misses, 0.9),
        ),
        p(topology::EDGE, Zipf, edge, Cache::Full, EDGE, (hits, 0.9)),
        p(
            topology::EDGE,
            Uniform,
            edge,
            Cache::Full,
            EDGE,
            (hits, 0.9),
        ),
        Plan {
            connections: Some(1),
            ..p(
                topology::EDGE_ONE,
                Zipf,
                edge,
                Cache::Full,
                EDGE_ONE,
                (hits, 0.9),
            )
        },
    ];
    plans.extend(shared.into_iter().flatten());
    plans.extend([
        p(
            topology::NO_CACHE,
            Zipf,
            Target::OriginCacheOff,
            Cache::Any,
            NO_CACHE,
            (misses, 0.9),
        ),
        p(
            topology::NO_CACHE,
            Uniform,
            Target::OriginCacheOff,
            Cache::Any,
            NO_CACHE,
            (misses, 0.9),
        ),
    ]);
    plans
}

/// `--topology`: after Redis and PostgreSQL are up and seeded, per topology its proxies, the two
/// origins and the edge behind them, its runs, then all of them stopped; the report of every topology.
fn run_topologies(
    config: &Config,
    topologies: &Topologies,
    started: Instant,
    started_at_unix: u64,
) -> anyhow::Result<()> {
    let delay = config.bin.join("aside-delay");
    anyhow::ensure!(
        delay.exists(),
        "{} is missing; run the benchmark through `cargo xtask bench`, which builds it",
        delay.display()
    );
    let [rt] = config.runtimes.list[..] else {
        bail!("--topology runs the edge under one runtime: choose --edge-runtime spin or host");
    };
    anyhow::ensure!(
        !config.shared_tier || rt.has_key_value_store(),
        "--shared-tier on needs a runtime with a key-value store (Spin); the {} runtime has none",
        rt.name()
    );
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("install the Ctrl-C handler")?;
    let plans = topology_plans(rt, config.shared_tier);
    let mut stack = start_stack(config, topologies.0.len() * plans.len(), PROXY_COUNT)?;
    seed(config, &stack)?;
    let proxies = Proxies::new(&stack.ports, rt, config.shared_tier);
    let mut redis = None;
    let mut results = Vec::new();
    for topology in &topologies.0 {
        eprintln!(
            "aside-bench: topology {}: {}",
            topology.name, topology.models
        );
        let started = start_topology(config, &mut stack, topology, &proxies, rt)?;
        let redis = match &mut redis {
            Some(redis) => redis,
            None => redis.insert(warm(&stack)?),
        };
        let route = |_: &Ports, target| proxies.route(target);
        let measured = run_scenarios(
            config,
            &mut stack,
            redis,
            &plans,
            (&route, Some(topology.name)),
        )?;
        for name in started.iter().rev() {
            stack.services.stop(name);
        }
        results.push(TopologyRuns::new(topology, measured.runs));
    }
    drop(redis);
    drop(stack);

    let report = TopologyReport {
        started_at_unix,
        machine: Machine::detect(),
        settings: collect_settings(config),
        edge_runtime: config.runtimes.report(),
        total_s: started.elapsed().as_secs_f64(),
        topologies: results,
    };
    let out = &config.out;
    std::fs::write(
        out.join("report-topology.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("report-topology.md"), report.markdown())?;
    aside_bench::charts::write_topology(out, &report.topologies)?;
    println!("{}", report.markdown_table());
    if let Some(table) = report.l2_by_connections_table() {
        println!("L2 hits (Zipf), 1 connection and every connection:\n{table}");
    }
    if let Some(table) = report.miss_breakdown_table() {
        println!("Where a miss through the edge spends its time (means, ms):\n{table}");
    }
    println!(
        "report: {}  (and report-topology.json, topology.svg/png); {:.0} s in all",
        out.join("report-topology.md").display(),
        report.total_s
    );
    let failed: Vec<String> = report
        .topologies
        .iter()
        .flat_map(|t| {
            t.runs.iter().filter_map(move |r| {
                r.check_failed
                    .as_ref()
                    .map(|w| format!("{} / {}: {w}", t.name, r.label()))
            })
        })
        .collect();
    all_measured(failed)
}

/// An error listing the runs that did not measure what they claim, if any.
fn all_measured(failed: Vec<String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        failed.is_empty(),
        "runs that did not measure what they claim:\n  {}",
        failed.join("\n  ")
    );
    Ok(())
}

/// Starts a topology's proxies, origins and edge, each step once its upstreams listen; returns the
/// services' names, in start order.
fn start_topology(
    config: &Config,
    stack: &mut Stack,
    topology: &Topology,
    proxies: &Proxies,
    rt: Rt,
) -> anyhow::Result<Vec<&'static str>> {
    let logs = &config.logs;
    let mut started = Vec::new();
    let mut start_proxies = |stack: &mut Stack, list: &[Proxy]| -> anyhow::Result<()> {
        for proxy in list {
            let mut command = Command::new(config.bin.join("aside-delay"));
            command
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", proxy.port))
                .arg("--upstream")
                .arg(format!("127.0.0.1:{}", proxy.upstream))
                .arg("--delay-ms")
                .arg(topology.delay_ms(proxy.hop).to_string());
            stack
                .services
                .spawn(proxy.name, command, logs, libc::SIGTERM)?;
            stack.services.wait_for_port(proxy.port, logs)?;
            started.push(proxy.name);
        }
        Ok(())
    };
    start_proxies(stack, &proxies.origin_side)?;
    let [redis, postgres] = &proxies.origin_side;
    for target in [Target::Origin, Target::OriginCacheOff] {
        let port = stack.ports.port(target);
        let origin = origin_command(config, stack, target, port, (redis.port, postgres.port));
        stack
            .services
            .spawn(target.service(), origin, logs, libc::SIGTERM)?;
        stack.services.wait_for_port(port, logs)?;
    }
    start_proxies(stack, &proxies.edge_side)?;
    let [redis, origin, _] = &proxies.edge_side;
    let upstreams = (redis.port, format!("http://127.0.0.1:{}", origin.port));
    let mut names = vec![Target::Origin.service(), Target::OriginCacheOff.service()];
    let mut listening = Vec::new();
    let edges = [
        Some(Target::Edge(rt)),
        proxies
            .client_shared
            .as_ref()
            .map(|_| Target::EdgeShared(rt)),
    ];
    for target in edges.into_iter().flatten() {
        let port = stack.ports.port(target);
        let edge = edge_command(config, stack, target, port, &upstreams);
        stack
            .services
            .spawn(target.service(), edge, logs, libc::SIGTERM)?;
        listening.push((target.service(), port));
        names.push(target.service());
    }
    wait_for_ports(&mut stack.services, &listening, logs, EDGE_START_TIMEOUT)?;
    start_proxies(stack, &proxies.client_side)?;
    start_proxies(stack, proxies.client_shared.as_slice())?;
    names.extend(started);
    Ok(names)
}

/// The target and credentials part of an `aside-load` command line.
fn loader_args(url: String, target: Target, stack: &Stack) -> Vec<String> {
    let mut args = vec!["--url".to_string(), url];
    let bearer = match target {
        Target::Origin | Target::OriginCacheOff => Some(&stack.token_file),
        // A client token per connection, as users run the edge.
        Target::Edge(_) | Target::EdgeL1Off(_) | Target::EdgeShared(_) => {
            Some(&stack.client_auth.tokens_file)
        }
        Target::EdgeAuthOff(_) | Target::Hello(_) | Target::HelloRedis(_) => None,
    };
    if let Some(file) = bearer {
        args.extend(["--bearer-file".to_string(), file.display().to_string()]);
    }
    args.extend(["--seed".to_string(), KEY_SEED.to_string()]);
    args
}

/// Why a run did not measure what its scenario claims, if it did not.
fn check(plan: &Plan, result: &LoadResult) -> Option<String> {
    if result.requests == 0 {
        return Some("no requests were answered".into());
    }
    let attempts = result.requests
        + result
            .error_kinds
            .iter()
            .filter(|(k, _)| !k.starts_with("status_"))
            .map(|(_, v)| v)
            .sum::<u64>();
    if result.errors as f64 > attempts as f64 * 0.01 {
        return Some(format!(
            "{} errors in {attempts} requests: {:?}",
            result.errors, result.error_kinds
        ));
    }
    let (tiers, at_least) = plan.expect;
    let share = report::share_of(result, tiers);
    if share < at_least {
        return Some(format!(
            "{} answered {:.0}% of reads, expected at least {:.0}%",
            tiers.join("+"),
            share * 100.0,
            at_least * 100.0
        ));
    }
    if plan.write_percent > 0.0 && result.writes == 0 {
        return Some("no writes were made".into());
    }
    None
}

/// Runs `aside-load` to completion (its stderr to `log`), advancing the progress bar by the time it
/// takes; Ctrl-C stops it.
fn run_loader(
    bin: &Path,
    args: &[String],
    log: &Path,
    planned_secs: Option<f64>,
    bar: &ProgressBar,
) -> anyhow::Result<LoadResult> {
    let mut command = Command::new(bin.join("aside-load"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log)?));
    stack::detach(&mut command);
    let mut child = command.spawn().context("start aside-load")?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let start_pos = bar.position();
    // A timed run that takes far longer than planned is stuck; a fill has a generous bound.
    let limit = Duration::from_secs_f64(planned_secs.map_or(1800.0, |s| s * 3.0 + 60.0));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if STOP.load(Ordering::SeqCst) || started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            check_stop()?;
            bail!(
                "aside-load did not finish within {limit:?}; see {}",
                log.display()
            );
        }
        if let Some(planned) = planned_secs {
            let done = started.elapsed().as_secs_f64().min(planned);
            bar.set_position(start_pos + (done * 10.0) as u64);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(planned) = planned_secs {
        bar.set_position(start_pos + ((planned + 1.0) * 10.0) as u64);
    }
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading aside-load's output failed"))??;
    anyhow::ensure!(
        status.success(),
        "aside-load failed ({status}); see {}",
        log.display()
    );
    serde_json::from_str(text.trim())
        .with_context(|| format!("aside-load printed something else than its result: {text:?}"))
}

/// Runs a setup command with its output appended to `log`.
fn run_logged(command: &mut Command, log: &Path) -> anyhow::Result<()> {
    let shown = format!("{:?}", command.get_args().collect::<Vec<_>>());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .status()
        .with_context(|| format!("cannot run {}", command.get_program().display()))?;
    anyhow::ensure!(
        status.success(),
        "{} {shown} failed ({status}); see {}",
        command.get_program().display(),
        log.display()
    );
    Ok(())
}

/// One value from PostgreSQL.
fn psql(port: u16, password: &str, sql: &str) -> anyhow::Result<String> {
    let pg_bin = xtask::local::pg_bin_dir().context("PostgreSQL client binaries not found")?;
    let output = Command::new(pg_bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "aside", "-d", "aside", "-tAc", sql])
        .env("PGPASSWORD", password)
        .output()
        .context("run psql")?;
    anyhow::ensure!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Waits until change capture has applied the whole outbox (the seed's inserts).
fn wait_for_change_capture(port: u16, password: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        check_stop()?;
        let caught_up = psql(
            port,
            password,
            "SELECT w.last_applied >= (SELECT coalesce(max(id), 0) FROM devops_api.user_changes) \
             FROM devops_api.change_watermark w WHERE w.consumer = 'redis'",
        )?;
        if caught_up == "t" {
            eprintln!(
                "aside-bench: change capture caught up with the seed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            eprintln!("aside-bench: change capture has not caught up after 300 s; going on");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Removes the state of earlier bench runs that were killed before they could clean up.
fn remove_stale_state() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("aside-bench-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let state = entry.path();
        let _ = std::fs::remove_dir_all(stack::postgres_dir(&state));
        let _ = std::fs::remove_dir_all(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> SpinCli {
        SpinCli {
            path: "/usr/local/bin/spin".into(),
            version: "spin 4.0.2 (bfc7543b 2026-06-23)".into(),
        }
    }

    #[test]
    fn the_runtime_is_spin_when_found_unless_chosen() {
        let chosen = |arg, found| Runtimes::choose(arg, found).map(|r| r.list);
        assert_eq!(chosen(None, Ok(cli())).unwrap(), [Rt::Spin]);
        assert_eq!(chosen(None, Err(NotFound::NotOnPath)).unwrap(), [Rt::Host]);
        let why = Runtimes::choose(None, Err(NotFound::NotOnPath))
            .unwrap()
            .why;
        assert!(
            why.contains("NOT Spin") && why.contains("no `spin` on PATH"),
            "{why}"
        );
        assert_eq!(
            chosen(Some(RuntimeArg::Host), Ok(cli())).unwrap(),
            [Rt::Host]
        );
        assert_eq!(
            chosen(Some(RuntimeArg::Both), Ok(cli())).unwrap(),
            [Rt::Spin, Rt::Host]
        );
        // Asking for Spin without one, or a broken ASIDE_SPIN, is an error, never the host instead.
        let e = chosen(Some(RuntimeArg::Both), Err(NotFound::NotOnPath)).unwrap_err();
        assert!(e.to_string().starts_with("--edge-runtime both, but"), "{e}");
        assert!(chosen(Some(RuntimeArg::Spin), Err(NotFound::NotOnPath)).is_err());
        let broken = NotFound::BadOverride {
            path: "/nowhere/spin".into(),
            why: "cannot run it".into(),
        };
        assert!(chosen(None, Err(broken)).is_err());
    }

    #[test]
    fn every_edge_scenario_and_the_baseline_run_under_each_runtime() {
        let both = plans(&[Rt::Spin, Rt::Host]);
        for scenario in report::RUNTIME_SCENARIOS {
            for rt in [Rt::Spin, Rt::Host] {
                // The shared tier needs a key-value store: under the bundled host it is not run.
                let expected = !report::KEY_VALUE_SCENARIOS.contains(scenario) || rt == Rt::Spin;
                assert_eq!(
                    both.iter()
                        .any(|p| p.scenario == *scenario && p.target.runtime() == Some(rt)),
                    expected,
                    "{scenario} under {rt:?}"
                );
            }
        }
        // The shared tier's runs go to the edge with it on, and count SHARED as an edge answer.
        let shared: Vec<&Plan> = both
            .iter()
            .filter(|p| p.scenario == report::EDGE_SHARED)
            .collect();
        assert_eq!(shared.len(), 2);
        for p in &shared {
            assert_eq!(p.target, Target::EdgeShared(Rt::Spin));
            assert!(p.expect.0.contains(&"SHARED"), "{:?}", p.expect);
        }
        let skipped = Config::skipped_under(&[Rt::Spin, Rt::Host], &[]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].scenario.as_str(), skipped[0].runtime.as_str()),
            (report::EDGE_SHARED, "host")
        );
        assert!(Config::skipped_under(&[Rt::Spin], &[]).is_empty());
        assert!(Config::skipped_under(&[Rt::Host], &["edge-l2".into()]).is_empty());
        // The origin's scenarios run once, without a runtime.
        let origin_hit: Vec<&Plan> = both.iter().filter(|p| p.scenario == "origin-hit").collect();
        assert_eq!(origin_hit.len(), 2);
        assert!(origin_hit.iter().all(|p| p.target.runtime().is_none()));
        // One runtime: the plans of the single-runtime layout, each edge run under it (Spin also
        // runs the shared tier's two).
        let host = plans(&[Rt::Host]);
        assert_eq!(
            both.len() - host.len(),
            host.iter().filter(|p| p.target.runtime().is_some()).count() + shared.len()
        );
        assert!(host.iter().all(|p| p.target.runtime() != Some(Rt::Spin)));
        // The baseline needs no cache and reads no x-cache.
        let hello = host.iter().find(|p| p.scenario == report::HELLO).unwrap();
        assert_eq!((hello.cache, hello.expect.0), (Cache::Any, &["none"][..]));
        // Every target has its own port and service name.
        let ports = Ports::pick(&[Rt::Spin, Rt::Host], 0).unwrap();
        let mut seen: Vec<u16> = ports.targets.iter().map(|(_, p)| *p).collect();
        seen.extend([ports.redis, ports.postgres]);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 13 + 2);
        let mut names: Vec<&str> = ports.targets.iter().map(|(t, _)| t.service()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 13);
        assert!(!names.contains(&"edge-shared-host"));
    }

    #[test]
    fn an_edge_var_is_a_spin_variable_name_and_a_value() {
        assert_eq!(
            parse_edge_var("redis_max_connections=1"),
            Ok(("redis_max_connections".into(), "1".into()))
        );
        assert_eq!(
            parse_edge_var("l1_ttl_ms="),
            Ok(("l1_ttl_ms".into(), "".into()))
        );
        for bad in ["redis_max_connections", "=1", "Redis=1", "a-b=1", "a b=1"] {
            assert!(parse_edge_var(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topology_runs_add_the_shared_tier_only_when_asked() {
        let off = topology_plans(Rt::Spin, false);
        assert_eq!(off.len(), 6);
        // One run reads from one connection (an L2 hit alone), the others from `--concurrency`.
        let single: Vec<&Plan> = off.iter().filter(|p| p.connections.is_some()).collect();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].scenario, topology::EDGE_ONE);
        assert_eq!(single[0].connections, Some(1));
        assert_eq!(single[0].target, Target::Edge(Rt::Spin));
        assert!(
            off.iter()
                .all(|p| !matches!(p.target, Target::EdgeShared(_)))
        );
        let on = topology_plans(Rt::Spin, true);
        assert_eq!(on.len(), 8);
        let shared: Vec<&Plan> = on
            .iter()
            .filter(|p| p.scenario == topology::EDGE_SHARED)
            .collect();
        assert_eq!(shared.len(), 2);
        assert!(
            shared
                .iter()
                .all(|p| p.target == Target::EdgeShared(Rt::Spin)
                    && p.cache == Cache::Full
                    && p.expect.0.contains(&"SHARED"))
        );
        // The edge's hits count SHARED too, in either case.
        let edge = off.iter().find(|p| p.scenario == topology::EDGE).unwrap();
        assert!(edge.expect.0.contains(&"SHARED"));
        // Each client-side proxy relays to its own target.
        let ports = Ports::pick(&[Rt::Spin], PROXY_COUNT).unwrap();
        let proxies = Proxies::new(&ports, Rt::Spin, true);
        let shared_url = proxies.route(Target::EdgeShared(Rt::Spin));
        assert_ne!(shared_url, proxies.route(Target::Edge(Rt::Spin)));
        assert_eq!(
            proxies.client_shared.as_ref().map(|p| p.upstream),
            Some(ports.port(Target::EdgeShared(Rt::Spin)))
        );
        assert!(
            Proxies::new(&ports, Rt::Spin, false)
                .client_shared
                .is_none()
        );
    }
}
