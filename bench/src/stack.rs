//! The bench stack: ports, Redis and PostgreSQL, the seed, the origins and the edges.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aside_bench::redis_admin::RedisAdmin;
use xtask::launch::{EdgeVariables, OriginSettings};
use xtask::stack::{self, Secrets, Services};

use crate::catalogue::Target;
use crate::config::Config;
use crate::runtime::Rt;
use crate::{check_stop, workspace_root};

/// Seed of the generated profiles (a reproducible data set).
const DATA_SEED: u64 = 42;
/// How long the edges may take to listen: Spin compiles each component on its first start (later
/// starts load it from its cache), several at once, on machines with few cores.
pub(crate) const EDGE_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Ports of the bench stack, all picked free at start.
pub(crate) struct Ports {
    pub(crate) redis: u16,
    pub(crate) postgres: u16,
    /// The origins, and the edges and hello-world of every runtime.
    pub(crate) targets: Vec<(Target, u16)>,
    /// For `--topology`: the latency proxies' ports.
    pub(crate) proxies: Vec<u16>,
}

impl Ports {
    pub(crate) fn pick(runtimes: &[Rt], proxies: usize) -> anyhow::Result<Self> {
        let mut targets = vec![Target::Origin, Target::OriginCacheOff];
        for rt in runtimes {
            targets.extend(Target::served_under(*rt));
            // Started by topology runs only.
            targets.push(Target::HelloOrigin(*rt));
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

    pub(crate) fn port(&self, target: Target) -> u16 {
        self.targets
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, port)| *port)
            .expect("every target of the run has a port")
    }

    pub(crate) fn url(&self, target: Target) -> String {
        format!("http://127.0.0.1:{}", self.port(target))
    }
}

/// Waits until every one of `ports` accepts connections, failing early when a service exits.
pub(crate) fn wait_for_ports(
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
pub(crate) struct TempDirs(Vec<PathBuf>);

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

/// The bench stack while it runs: dropping it stops every service (in reverse start order), then
/// removes its state.
pub(crate) struct Stack {
    /// Declared first, so dropped before the folders they use.
    pub(crate) services: Services,
    pub(crate) _dirs: TempDirs,
    /// The private state folder (removed with the stack): Redis's data, secrets, a scenario's extras.
    pub(crate) state: PathBuf,
    pub(crate) secrets: Secrets,
    /// The origin's bearer token, for `aside-load --bearer-file`.
    pub(crate) token_file: PathBuf,
    /// The edges' clients: the local issuer's JWKS and a file of client tokens, one per line.
    pub(crate) client_auth: ClientAuth,
    pub(crate) ports: Ports,
    pub(crate) database_url: String,
}

/// Step 1: a private state folder, secrets and ports, then Redis and PostgreSQL.
pub(crate) fn start_stack(config: &Config, runs: usize, proxies: usize) -> anyhow::Result<Stack> {
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
        state,
        secrets,
        token_file,
        client_auth,
        ports,
        database_url,
    })
}

/// How many client subjects the edge scenarios use: connection `n` sends subject `n mod CLIENTS`'s token.
pub(crate) const CLIENTS: usize = 8;

/// The edges' client authentication: a local issuer (`xtask token`'s, EdDSA) whose public JWKS the
/// edges get as a static `auth_jwks`, and [`CLIENTS`] tokens with `profiles:admin` (every profile may
/// be read), one per line of `tokens_file`, for `aside-load --bearer-file`.
pub(crate) struct ClientAuth {
    pub(crate) jwks: String,
    pub(crate) tokens_file: PathBuf,
}

impl ClientAuth {
    pub(crate) fn generate(secrets: &Path) -> anyhow::Result<Self> {
        let issuer = xtask::token::LocalIssuer::load_or_generate(secrets)?;
        let tokens = (1..=CLIENTS)
            .map(|n| issuer.token(&format!("bench-client-{n}"), "profiles:admin"))
            .collect::<Vec<_>>();
        let tokens_file = secrets.join("client-tokens");
        xtask::local::write_private(&tokens_file, &(tokens.join("\n") + "\n"))?;
        Ok(Self {
            jwks: issuer.jwks(),
            tokens_file,
        })
    }
}

/// Step 2: the schema and `rows` generated profiles (ids 1..=rows) in PostgreSQL.
pub(crate) fn seed(config: &Config, stack: &Stack) -> anyhow::Result<()> {
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
pub(crate) fn start_servers(config: &Config, stack: &mut Stack) -> anyhow::Result<()> {
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
        for target in Target::served_under(*rt) {
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

/// A second process of `base`'s runtime command (same manifest, arguments and variables) with its own
/// `--state-dir`, so two processes of one target never share Spin's state (the key-value store).
pub(crate) fn twin(base: &Command, state: &Path) -> Command {
    let mut twin = Command::new(base.get_program());
    let mut args: Vec<_> = base.get_args().map(|a| a.to_os_string()).collect();
    if let Some(i) = args.iter().position(|a| a == "--state-dir") {
        args[i + 1] = state.as_os_str().to_os_string();
    }
    twin.args(args);
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => twin.env(key, value),
            None => twin.env_remove(key),
        };
    }
    twin
}

/// `aside-origin serve` for `target` (an origin, its cache on or off) on `port`, reaching Redis and
/// PostgreSQL on the given local ports.
pub(crate) fn origin_command(
    config: &Config,
    stack: &Stack,
    target: Target,
    port: u16,
    (redis, postgres): (u16, u16),
) -> Command {
    let secrets = &stack.secrets;
    OriginSettings::new(format!("127.0.0.1:{port}"), database_url(secrets, postgres))
        .redis(&format!("127.0.0.1:{redis}"), &secrets.redis_origin)
        .origin_tokens(&[&secrets.origin_token])
        .cache(target != Target::OriginCacheOff)
        .serve(&config.bin)
}

/// The edge runtime serving `target` (an edge or the hello-world component) on `port`; an edge reaches
/// Redis on the local port `redis` and forwards to `origin_url`.
pub(crate) fn edge_command(
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
        Target::HelloOrigin(_) => root.join("bench/hello-origin/spin.toml"),
        _ => root.join("spin.toml"),
    };
    let state = config.logs.join(format!("{}-state", target.service()));
    let mut edge = config
        .runtimes
        .command(rt, &config.bin, &manifest, port, &state);
    let redis = format!("127.0.0.1:{redis}");
    let vars = match target {
        Target::Hello(_) => EdgeVariables::new(),
        // The edge's Redis user: the same ACL (HGETALL of profile keys) the edge reads with.
        Target::HelloRedis(_) => EdgeVariables::new().redis(&redis, "edge", &secrets.redis_edge),
        // The origin at `origin_url` (a topology run gives the cache-off origin's) with its token.
        Target::HelloOrigin(_) => EdgeVariables::new().origin(origin_url, &secrets.origin_token),
        // The address is also the `allowed_outbound_hosts` entry spin.toml templates from it, so a
        // proxy's port is allowed like Redis's own. Client authentication as users run it
        // (docs/security.md): on, with the local issuer's key as a static JWKS; aside-load sends a
        // token per connection.
        _ => {
            let mut vars = EdgeVariables::new()
                .redis(&redis, "edge", &secrets.redis_edge)
                .origin(origin_url, &secrets.origin_token)
                .auth_jwks(
                    &stack.client_auth.jwks,
                    xtask::token::ISSUER,
                    xtask::token::AUDIENCE,
                );
            // The store `default` in memory, shared by every instance of this Spin process: for the
            // shared tier's edge, and for any edge an `--edge-var` gives the process-wide origin
            // budget (`origin_budget_store`) under Spin, which must not be Spin's default SQLite file
            // (the bundled host has no store: there the budget stays per instance).
            let budget_store = config
                .edge_vars
                .iter()
                .any(|(name, value)| name == "origin_budget_store" && !value.is_empty());
            if matches!(target, Target::EdgeShared(_)) || (budget_store && matches!(rt, Rt::Spin)) {
                edge.arg("--runtime-config-file")
                    .arg(root.join("runtime-config.toml"));
            }
            match target {
                Target::EdgeAuthOff(_) => vars = vars.auth_off(),
                Target::EdgeL1Off(_) => vars = vars.l1_off(),
                Target::EdgeShared(_) => vars = vars.shared_tier("default"),
                _ => {}
            }
            for (name, value) in &config.edge_vars {
                vars = vars.set(name, value);
            }
            vars
        }
    };
    vars.apply(&mut edge);
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
pub(crate) fn database_url(secrets: &Secrets, port: u16) -> String {
    format!(
        "postgres://aside:{}@127.0.0.1:{port}/aside",
        secrets.postgres
    )
}

/// Step 4: lets the origin work through the seed's inserts in the change-capture outbox now rather
/// than during the first scenario; returns the admin connection to Redis.
pub(crate) fn warm(stack: &Stack) -> anyhow::Result<RedisAdmin> {
    wait_for_change_capture(stack.ports.postgres, &stack.secrets.postgres)?;
    RedisAdmin::connect(stack.ports.redis, &stack.secrets.redis_admin)
}

/// Runs a setup command with its output appended to `log`.
pub(crate) fn run_logged(command: &mut Command, log: &Path) -> anyhow::Result<()> {
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
pub(crate) fn psql(port: u16, password: &str, sql: &str) -> anyhow::Result<String> {
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
pub(crate) fn wait_for_change_capture(port: u16, password: &str) -> anyhow::Result<()> {
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
pub(crate) fn remove_stale_state() {
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
