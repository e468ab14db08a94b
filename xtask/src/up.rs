//! `cargo xtask up`: the whole stack on this machine, in a state folder (`.aside/`, ignored by git).
//!
//! Order: install what is missing, build (release, or take the binaries of `--bin-dir`), start Redis and
//! PostgreSQL with the project's configuration and generated secrets, migrate, seed (once), start the
//! origin, start the edge (under `spin up` when a Spin CLI is found, else under the bundled
//! Spin-compatible host), print the URLs. Then [`xtask::supervise`] keeps the stack serving: a service
//! that is stopped stays down, one that crashes is restarted; `cargo xtask status|stop|start` talk to it
//! from another terminal. Ctrl-C (or SIGTERM) stops everything in reverse order and waits for each
//! process group to exit.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use xtask::launch::{EdgeVariables, OriginSettings};
use xtask::local;
use xtask::stack::{self, Secrets, Services};
use xtask::supervise::{self, Request, Supervisor};

use crate::cmd::{build_components, cargo, run_cmd, workspace_root};

/// The key-value store label of the process-wide tier: the one runtime-config.toml defines.
const SHARED_TIER_STORE: &str = "default";

/// The state folder option, shared by `up` and the commands that talk to a running `up`.
#[derive(Debug, Args)]
pub struct StateDir {
    /// State folder (data, logs, generated secrets, the control socket). Relative paths are under the
    /// workspace root.
    #[arg(long, env = "ASIDE_STATE_DIR", default_value = ".aside")]
    state_dir: PathBuf,
}

impl StateDir {
    /// ` --state-dir <folder>` when it is not the default, for the commands `up` and `reset` print.
    pub fn flag(&self) -> String {
        if self.state_dir == Path::new(".aside") {
            String::new()
        } else {
            format!(" --state-dir {}", self.path().display())
        }
    }

    pub fn path(&self) -> PathBuf {
        if self.state_dir.is_absolute() {
            self.state_dir.clone()
        } else {
            workspace_root().join(&self.state_dir)
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    state: StateDir,
    /// Redis port.
    #[arg(long, default_value_t = 6390)]
    redis_port: u16,
    /// PostgreSQL port.
    #[arg(long, default_value_t = 5440)]
    postgres_port: u16,
    /// Origin port.
    #[arg(long, default_value_t = 8081)]
    origin_port: u16,
    /// Edge port (the URL to use).
    #[arg(long, default_value_t = 3000)]
    edge_port: u16,
    /// Edge processes to start (regions, each with its own instances and process-wide tier), on
    /// consecutive ports from --edge-port; all read the same Redis and the same invalidation feed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    edges: u16,
    /// Profiles to seed on first start (default: a random count from 300 to 500).
    #[arg(long)]
    count: Option<u64>,
    /// Run the edge under the bundled host even if a Spin CLI is found.
    #[arg(long)]
    bundled_host: bool,
    /// Leave a crashed service down instead of restarting it (a service stopped cleanly always stays
    /// down until `cargo xtask start <service>`).
    #[arg(long)]
    no_restart: bool,
    /// A replicated Redis instead of one node: a primary (--redis-port), a replica (the next port) and
    /// three Sentinels (20000 above); the origin finds the primary through the Sentinels, the edge reads
    /// the replica.
    #[arg(long, conflicts_with = "redis_cluster")]
    redis_ha: bool,
    /// A Redis Cluster instead of one node: three primaries and three replicas on --redis-port and the
    /// next five ports (cluster bus 10000 above each), formed with `redis-cli --cluster create`; the
    /// origin uses the `redis` crate's cluster client; the edges run with `redis_mode = cluster`, the
    /// first node as their seed.
    #[arg(long)]
    redis_cluster: bool,
    /// Give the edge the process-wide tier: Spin's key-value store `default`, kept in memory by the
    /// repository's runtime-config.toml and shared by every instance of the Spin process
    /// (`x-cache: SHARED`). Needs Spin (the bundled host has no key-value store).
    #[arg(long)]
    shared_tier: bool,
    /// Run `aside-origin` (and `aside-host`) from this folder instead of building release binaries, e.g.
    /// `target/debug` after `cargo xtask test`. The edge component is always the release build.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A service of the stack, as `cargo xtask stop|start` name it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ServiceName {
    Redis,
    Postgres,
    Origin,
    Edge,
}

impl ServiceName {
    fn as_str(self) -> &'static str {
        match self {
            ServiceName::Redis => "redis",
            ServiceName::Postgres => "postgres",
            ServiceName::Origin => "origin",
            ServiceName::Edge => "edge",
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print only this service's pid (e.g. `kill $(cargo xtask status --pid redis)`).
    #[arg(long, value_name = "SERVICE")]
    pid: Option<ServiceName>,
    #[command(flatten)]
    state: StateDir,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The service to start again.
    service: ServiceName,
    #[command(flatten)]
    state: StateDir,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The service to stop (it stays down until `cargo xtask start <service>`); none: the whole stack,
    /// like Ctrl-C.
    service: Option<ServiceName>,
    #[command(flatten)]
    state: StateDir,
}

/// `cargo xtask status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let request = match args.pid {
        Some(service) => Request::Pid(service.as_str().into()),
        None => Request::Status,
    };
    let answer = supervise::send(&args.state.path(), &request)?;
    if args.pid.is_some() {
        println!("{answer}");
    } else {
        print!("{answer}");
    }
    Ok(())
}

/// `cargo xtask start <service>`: returns once it accepts connections.
pub fn start(args: StartArgs) -> anyhow::Result<()> {
    let request = Request::Start(args.service.as_str().into());
    println!("{}", supervise::send(&args.state.path(), &request)?);
    Ok(())
}

/// `cargo xtask stop [<service>]`: returns once it has exited (the whole stack: once `up` has ended).
pub fn stop(args: StopArgs) -> anyhow::Result<()> {
    let request = match args.service {
        Some(service) => Request::Stop(service.as_str().into()),
        None => Request::StopAll,
    };
    let state = args.state.path();
    println!("{}", supervise::send(&state, &request)?);
    if request == Request::StopAll {
        // `up` answers at once and then stops its services in order; it stops listening last, so once
        // nothing listens on the socket every service has exited (and `reset` may remove their files).
        let socket = supervise::socket_path(&state);
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            if std::time::Instant::now() > deadline {
                bail!("the stack did not stop within 90 s; see `cargo xtask status` and its logs");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("stopped");
    }
    Ok(())
}

/// What the main loop of `up` waits for.
enum Event {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// A request from `cargo xtask status|stop|start`.
    Control(supervise::Incoming),
}

/// The Redis `up` started: which mode, and what the origin and the edges are given for it.
enum Redis {
    /// One node on `--redis-port`.
    Single(u16),
    /// A primary, a replica and three Sentinels (`--redis-ha`).
    Ha(xtask::redis_ha::LocalHa),
    /// Three primaries and three replicas (`--redis-cluster`).
    Cluster(xtask::redis_cluster::LocalCluster),
}

impl Redis {
    /// The node the edges read: the node itself, the replica, or the cluster's seed.
    fn edge_port(&self, redis_port: u16) -> u16 {
        match self {
            Redis::Ha(ha) => ha.ports.replica,
            Redis::Single(_) | Redis::Cluster(_) => redis_port,
        }
    }

    fn cluster(&self) -> Option<&xtask::redis_cluster::LocalCluster> {
        match self {
            Redis::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }
}

/// What `up` has started, for the banner.
struct Started {
    state: PathBuf,
    logs: PathBuf,
    spin: Option<PathBuf>,
    redis: Redis,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    xtask::prereq::ensure_all()?;
    check_ports_free(&args)?;
    let root = workspace_root();
    let spin = if args.bundled_host { None } else { spin_cli()? };
    if args.shared_tier && spin.is_none() {
        bail!(
            "--shared-tier needs Spin's key-value store, and the edge would run under the bundled host, which has none; install a Spin 4 CLI (`spin` on PATH or ASIDE_SPIN) or leave --shared-tier out"
        );
    }
    let bin = build(&root, args.bin_dir.as_deref(), spin.is_none())?;

    let state = args.state.path();
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let secrets = Secrets::load_or_generate(&state.join("secrets"))?;
    // The edge's clients: a local signing key (secrets/auth-signing-key) and ready tokens beside it.
    let issuer = xtask::token::LocalIssuer::load_or_generate(&state.join("secrets"))?;
    issuer.write_ready_tokens(&state.join("secrets"))?;
    // The issuer's public keys, as an identity provider publishes them: what the README's
    // "Deploying the edge to Spin" gives `spin up` (public, but kept beside the key).
    local::write_private(&state.join("secrets/jwks.json"), &issuer.jwks())?;

    // Ctrl-C and SIGTERM only tell the main thread to stop; children run in their own process groups so
    // the terminal's Ctrl-C reaches xtask alone and the shutdown happens in order. Requests from other
    // terminals arrive on the same channel.
    let (events, incoming) = mpsc::channel::<Event>();
    let on_signal = events.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(Event::Signal);
    })
    .context("install the Ctrl-C handler")?;
    let _control = supervise::listen(&supervise::socket_path(&state), move |request| {
        let _ = events.send(Event::Control(request));
    })?;

    let mut services = Services::new();
    let redis = start_redis(&args, &root, &state, &logs, &secrets, &mut services)?;
    start_postgres(&args, &state, &logs, &secrets, &mut services)?;
    let owner_url = migrate_and_seed(&args, &bin, &secrets)?;
    start_origin(&args, &bin, &logs, &secrets, &redis, &mut services)?;
    for n in 0..args.edges {
        start_edge(
            &args,
            n,
            (&root, &bin, &state, &logs),
            spin.as_deref(),
            (&secrets, &issuer),
            &redis,
            &mut services,
        )?;
    }
    write_env_file(&state, &bin, &owner_url, &args, &secrets, redis.cluster())?;
    print_banner(
        &args,
        &Started {
            state,
            logs: logs.clone(),
            spin,
            redis,
        },
    );
    serve(
        Supervisor::new(services, &logs, !args.no_restart),
        &incoming,
    );
    Ok(())
}

/// Refuses to start when a port `up` would listen on is taken.
fn check_ports_free(args: &UpArgs) -> anyhow::Result<()> {
    for (what, port) in [
        ("Redis", args.redis_port),
        ("PostgreSQL", args.postgres_port),
        ("the origin", args.origin_port),
        ("the edge", args.edge_port),
    ] {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!(
                "port {port} for {what} is already in use (another `cargo xtask up`?); pick another with the flags of `cargo xtask up --help`"
            );
        }
    }
    Ok(())
}

/// Redis in the mode the flags ask for.
fn start_redis(
    args: &UpArgs,
    root: &Path,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<Redis> {
    Ok(if args.redis_cluster {
        Redis::Cluster(xtask::redis_cluster::start_local(
            root,
            args.redis_port,
            state,
            logs,
            secrets,
            services,
        )?)
    } else if args.redis_ha {
        Redis::Ha(xtask::redis_ha::start_local(
            root,
            xtask::redis_ha::LocalPorts::from_redis_port(args.redis_port),
            state,
            logs,
            secrets,
            services,
        )?)
    } else {
        stack::start_redis(root, args.redis_port, state, logs, secrets, services)?;
        Redis::Single(args.redis_port)
    })
}

/// PostgreSQL with the stack's cluster; a cluster of another state folder is refused, naming the flag.
fn start_postgres(
    args: &UpArgs,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<()> {
    stack::start_postgres(
        args.postgres_port,
        &stack::postgres_dir(state),
        logs,
        secrets,
        services,
    )
    .map_err(|e| match e.downcast::<stack::ForeignCluster>() {
        Ok(foreign) => anyhow::anyhow!(
            "{foreign}{}",
            match args.state.flag() {
                flag if flag.is_empty() => String::new(),
                flag => format!(" (both with{flag})"),
            }
        ),
        Err(e) => e,
    })
}

fn database_url(role: &str, password: &str, port: u16) -> String {
    format!("postgres://{role}:{password}@127.0.0.1:{port}/aside")
}

/// The owner migrates and seeds (the origin serves as the application role, docs/security.md); returns
/// the owner's URL.
fn migrate_and_seed(args: &UpArgs, bin: &Path, secrets: &Secrets) -> anyhow::Result<String> {
    let owner_url = database_url(
        local::OWNER_ROLE,
        &secrets.postgres_owner,
        args.postgres_port,
    );
    let origin_bin = bin.join("aside-origin");
    run_cmd(
        Command::new(&origin_bin)
            .args(["migrate", "--app-role", local::APP_ROLE])
            .env("ASIDE_DATABASE_URL", &owner_url),
    )?;
    let mut seed = Command::new(&origin_bin);
    seed.arg("seed").env("ASIDE_DATABASE_URL", &owner_url);
    if let Some(count) = args.count {
        seed.args(["--count", &count.to_string()]);
    }
    run_cmd(&mut seed)?;
    Ok(owner_url)
}

/// The origin, serving as the application role, on the Redis of `redis`'s mode.
fn start_origin(
    args: &UpArgs,
    bin: &Path,
    logs: &Path,
    secrets: &Secrets,
    redis: &Redis,
    services: &mut Services,
) -> anyhow::Result<()> {
    let app_url = database_url(local::APP_ROLE, &secrets.postgres_app, args.postgres_port);
    let origin = OriginSettings::new(format!("127.0.0.1:{}", args.origin_port), &app_url)
        .origin_tokens(&[&secrets.origin_token])
        .admin_tokens(&[&secrets.admin_token]);
    let origin = match redis {
        Redis::Ha(ha) => ha.origin_settings(origin, &secrets.redis_origin),
        Redis::Cluster(cluster) => cluster.origin_settings(origin, &secrets.redis_origin),
        Redis::Single(port) => origin.redis(&format!("127.0.0.1:{port}"), &secrets.redis_origin),
    };
    services.spawn("origin", origin.serve(bin), logs, libc::SIGTERM)?;
    services.wait_for_port(args.origin_port, logs)
}

/// Edge `n` (0: `edge` on `--edge-port`; then `edge-2`, `edge-3`, ... on the next ports) under Spin, or
/// the bundled host when `spin` is `None`.
fn start_edge(
    args: &UpArgs,
    n: u16,
    (root, bin, state, logs): (&Path, &Path, &Path, &Path),
    spin: Option<&Path>,
    (secrets, issuer): (&Secrets, &xtask::token::LocalIssuer),
    redis: &Redis,
    services: &mut Services,
) -> anyhow::Result<()> {
    let port = args
        .edge_port
        .checked_add(n)
        .context("--edge-port + --edges is past 65535")?;
    // (Leaked: a handful of names that live as long as `up`.)
    let name: &'static str = if n == 0 {
        "edge"
    } else {
        Box::leak(format!("edge-{}", n + 1).into_boxed_str())
    };
    let mut edge = if let Some(spin) = spin {
        let mut c = Command::new(spin);
        c.args(["up", "--from"])
            .arg(root.join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // Spin's logs and stores in the state folder, not in a `.spin/` beside spin.toml.
            .arg("--state-dir")
            .arg(state.join(if n == 0 {
                "spin".to_string()
            } else {
                format!("spin-{}", n + 1)
            }));
        if args.shared_tier {
            c.arg("--runtime-config-file")
                .arg(root.join("runtime-config.toml"));
        }
        c
    } else {
        let mut c = Command::new(bin.join("aside-host"));
        c.arg("--from")
            .arg(root.join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{port}")]);
        c
    };
    let mut vars = EdgeVariables::new()
        .set(
            "redis_address",
            format!("127.0.0.1:{}", redis.edge_port(args.redis_port)),
        )
        .set("redis_password", &secrets.redis_edge)
        .origin(
            &format!("http://127.0.0.1:{}", args.origin_port),
            &secrets.origin_token,
        )
        .auth_jwks(&issuer.jwks(), xtask::token::ISSUER, xtask::token::AUDIENCE);
    if args.shared_tier && spin.is_some() {
        vars = vars.shared_tier(SHARED_TIER_STORE);
    }
    if let Redis::Cluster(cluster) = redis {
        // The first node is the seed; the edge may reach every node's port and no other.
        vars = vars
            .set("redis_mode", "cluster")
            .set("redis_cluster_hosts", cluster.allowed_hosts());
    }
    vars.apply(&mut edge);
    services.spawn(name, edge, logs, libc::SIGTERM)?;
    services.wait_for_port(port, logs)
}

/// What is up, where, and what to try. (Long: one text, kept whole so that it reads as it prints.)
fn print_banner(args: &UpArgs, started: &Started) {
    let Started {
        state,
        logs,
        spin,
        redis,
    } = started;
    let edge_url = format!("http://127.0.0.1:{}", args.edge_port);
    let origin_url = format!("http://127.0.0.1:{}", args.origin_port);
    let runtime = match &spin {
        Some(spin) => format!("spin up, {}", spin.display()),
        None => {
            "the bundled Spin-compatible host; no Spin CLI found (`spin` on PATH or ASIDE_SPIN)"
                .to_string()
        }
    };
    let edge_redis = redis.edge_port(args.redis_port);
    let shared_tier = match args.shared_tier {
        true => format!(
            "process-wide (Spin's key-value store `{SHARED_TIER_STORE}`, in memory: runtime-config.toml), "
        ),
        false => String::new(),
    };
    let more_edges = if args.edges > 1 {
        format!(
            " and {} more edge processes on ports {}-{}",
            args.edges - 1,
            args.edge_port + 1,
            args.edge_port + args.edges - 1
        )
    } else {
        String::new()
    };
    println!(
        "\n\
aside is up. Edge ({runtime}): {edge_url}{more_edges}\n\
Edge tiers: instance memory (L1), {shared_tier}Redis 127.0.0.1:{edge_redis} (L2), then the origin{no_shared}\n\
\n\
Clients need a token (docs/security.md): ready ones are in {secrets}/token-admin (every profile),\n\
token-user-1 (user 1's own profile, read and write) and token-reader (read: own profile and the public\n\
fields); more with `cargo xtask token --sub 7 --scope profiles:read,profiles:write`.\n\
  curl -i -H \"authorization: Bearer $(cat {secrets}/token-user-1)\" {edge_url}/users/1   # MISS, then L1\n\
  curl -i -H \"authorization: Bearer $(cat {secrets}/token-reader)\" '{edge_url}/users/2?fields=full_name,department'\n\
  curl -i -H \"authorization: Bearer $(cat {secrets}/token-reader)\" {edge_url}/users/2   # 403\n\
  curl -i {edge_url}/users/1                         # 401 without a token\n\
\n\
Origin (needs the token): {origin_url}\n\
  curl -i -H \"authorization: Bearer $(cat {token})\" {origin_url}/users/1\n\
  curl -s {origin_url}/metrics | grep aside_origin\n\
  curl -s {origin_url}/openapi.json | head -c 300; echo\n\
  curl -s -H \"authorization: Bearer $(cat {secrets}/admin-token)\" {origin_url}/admin/cache/stats\n\
\n\
Redis: 127.0.0.1:{redis}  (admin password in {secrets}/redis-admin)\n\
  redis-cli -p {redis} --user admin --pass \"$(cat {secrets}/redis-admin)\" hgetall 'user:profile:{{1}}'\n\
PostgreSQL: postgres://127.0.0.1:{pg}/aside  as {owner} (owner; password in {secrets}/postgres-owner),\n\
  {app} (the origin's; {secrets}/postgres-app) or aside (superuser; {secrets}/postgres)\n\
Logs: {logs}\n\
Settings for a shell (aside-origin commands against this stack): . {state}/env\n\
\n\
Break things (docs/operations.md), from another terminal{state_flag}:\n\
  cargo xtask status               # each service: running (pid, port) or down, and its log\n\
  cargo xtask stop redis           # stays down until: cargo xtask start redis\n\
  A service that crashes (kill -9) is restarted after a back-off{no_restart}.\n\
  Start over: cargo xtask stop, then cargo xtask reset (removes the data, secrets and PostgreSQL cluster)\n\
\n\
Press Ctrl-C (or run `cargo xtask stop`) to stop everything.",
        state = state.display(),
        no_shared = if args.shared_tier {
            ""
        } else {
            " (--shared-tier adds the process-wide tier)"
        },
        state_flag = if args.state.state_dir == Path::new(".aside") {
            String::new()
        } else {
            format!(" (with --state-dir {})", state.display())
        },
        no_restart = if args.no_restart {
            " (not now: --no-restart)"
        } else {
            ""
        },
        token = state.join("secrets/origin-token").display(),
        secrets = state.join("secrets").display(),
        redis = args.redis_port,
        pg = args.postgres_port,
        owner = local::OWNER_ROLE,
        app = local::APP_ROLE,
        logs = logs.display(),
    );
    if let Redis::Ha(ha) = redis {
        println!(
            "\nReplicated Redis (the edge reads the replica):\n{}",
            ha.describe()
        );
    }
    if let Redis::Cluster(cluster) = redis {
        println!(
            "\nRedis Cluster (the origin: ASIDE_REDIS_CLUSTER_NODES={}; the edges: redis_mode cluster \
             with 127.0.0.1:{} as their seed, each read sent to its key's primary):\n{}\n  \
             redis-cli -c -p {} --user admin --pass \"$(cat {}/redis-admin)\" cluster shards\n  \
             The nodes are services redis-1 .. redis-6 (`cargo xtask status`); a crashed one is \
             restarted within seconds, before the cluster fails it over: to see a failover, freeze a \
             primary for longer than cluster-node-timeout (5 s): kill -STOP <pid>, later kill -CONT.",
            cluster.seed_nodes(),
            args.redis_port,
            cluster.describe(),
            args.redis_port,
            state.join("secrets").display(),
        );
    }
    let _ = std::io::stdout().flush();
}

/// Serves until Ctrl-C or `cargo xtask stop`; meanwhile keeps the services up (see xtask::supervise).
fn serve(mut supervisor: Supervisor, incoming: &mpsc::Receiver<Event>) {
    loop {
        match incoming.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Signal) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                eprintln!("\nxtask: stopping");
                break;
            }
            Ok(Event::Control((request, reply))) => {
                let answer = match &request {
                    Request::Status => Ok(supervisor.status()),
                    Request::Pid(name) => supervisor.pid(name),
                    Request::Start(name) => supervisor.start(name),
                    Request::Stop(name) => supervisor.stop(name),
                    Request::StopAll => Ok("stopping the stack".to_string()),
                };
                let _ = reply.send(answer.map_err(|e| format!("{e:#}")));
                if request == Request::StopAll {
                    eprintln!("\nxtask: stopping (cargo xtask stop)");
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        supervisor.tick();
    }
    drop(supervisor);
}

/// Builds what `up` runs and returns the folder of the native binaries: the edge component (always
/// release: spin.toml names it), then release `aside-origin` and, when the bundled host will run the
/// edge, `aside-host`; or, with `--bin-dir`, that folder's binaries as they are.
fn build(root: &Path, bin_dir: Option<&Path>, bundled_host: bool) -> anyhow::Result<PathBuf> {
    build_components(&["aside-edge"])?;
    if let Some(dir) = bin_dir {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            root.join(dir)
        };
        let mut needed = vec!["aside-origin"];
        if bundled_host {
            needed.push("aside-host");
        }
        for name in needed {
            anyhow::ensure!(
                dir.join(name).exists(),
                "--bin-dir {}: no {name} there (build it first, e.g. `cargo xtask test` builds target/debug)",
                dir.display()
            );
        }
        return Ok(dir);
    }
    eprintln!("xtask: building (release)");
    let mut command = cargo();
    command.args([
        "build",
        "--release",
        "-p",
        "aside-origin",
        "--bin",
        "aside-origin",
    ]);
    if bundled_host {
        command.args(["-p", "aside-host", "--bin", "aside-host"]);
    }
    run_cmd(&mut command)?;
    Ok(root.join("target/release"))
}

/// Writes `<state>/env` (mode 0600): the stack's settings as shell exports, so that `. .aside/env` lets
/// `aside-origin` commands (and scripts) run against this stack.
fn write_env_file(
    state: &Path,
    bin: &Path,
    owner_url: &str,
    args: &UpArgs,
    secrets: &Secrets,
    cluster: Option<&xtask::redis_cluster::LocalCluster>,
) -> anyhow::Result<()> {
    let exports = [
        (
            "ASIDE_EDGE_URL",
            format!("http://127.0.0.1:{}", args.edge_port),
        ),
        (
            "ASIDE_ORIGIN_URL",
            format!("http://127.0.0.1:{}", args.origin_port),
        ),
        ("ASIDE_DATABASE_URL", owner_url.to_string()),
        ("ASIDE_STATE_DIR", state.display().to_string()),
    ];
    // Where the origin's Redis is: the cluster's nodes, or the one node.
    let redis: Vec<(&str, String)> = match cluster {
        Some(cluster) => vec![
            ("ASIDE_REDIS_CLUSTER_NODES", cluster.seed_nodes()),
            ("ASIDE_REDIS_USERNAME", "origin".to_string()),
            ("ASIDE_REDIS_PASSWORD", secrets.redis_origin.clone()),
        ],
        None => vec![(
            "ASIDE_REDIS_URL",
            format!(
                "redis://origin:{}@127.0.0.1:{}",
                secrets.redis_origin, args.redis_port
            ),
        )],
    };
    let mut text = String::from(
        "# Written by `cargo xtask up`: this stack's settings for a shell (`. .aside/env`). It holds\n\
         # passwords: keep it private.\n",
    );
    for (name, value) in exports.into_iter().chain(redis) {
        text.push_str(&format!("export {name}={}\n", shell_quote(&value)));
    }
    text.push_str(&format!(
        "export PATH={}:\"$PATH\"\n",
        shell_quote(&bin.display().to_string())
    ));
    local::write_private(&state.join("env"), &text)?;
    Ok(())
}

/// `value` in single quotes for sh.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The Spin 4 CLI to run the edge with (`ASIDE_SPIN`, else `spin` on PATH; see [`xtask::spin`]); `None`
/// when there is none, said on stderr. A set but broken `ASIDE_SPIN` is an error, not a fallback.
fn spin_cli() -> anyhow::Result<Option<PathBuf>> {
    match xtask::spin::find() {
        Ok(cli) => Ok(Some(cli.path)),
        Err(e @ xtask::spin::NotFound::BadOverride { .. }) => anyhow::bail!("{e}"),
        Err(e) => {
            eprintln!("xtask: {e}; the edge runs under the bundled host instead");
            Ok(None)
        }
    }
}
