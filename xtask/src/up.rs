//! `cargo xtask up`: the whole stack on this machine, in a state folder (`.aside/`, ignored by git).
//!
//! Order: install what is missing, build (release), start Redis and PostgreSQL with the project's
//! configuration and generated secrets, migrate, seed (once), start the origin, start the edge (under
//! `spin up` when a Spin CLI is on PATH, else under the bundled Spin-compatible host), print the URLs.
//! Ctrl-C (or SIGTERM) stops everything in reverse order and waits for each process to exit.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use xtask::local::{self, RedisPasswords};

use crate::{cargo, run_cmd, workspace_root};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// State folder (data, logs, generated secrets). Relative paths are under the workspace root.
    #[arg(long, default_value = ".aside")]
    state_dir: PathBuf,
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
    /// Profiles to seed on first start (default: a random count from 300 to 500).
    #[arg(long)]
    count: Option<u64>,
    /// Run the edge under the bundled host even if a `spin` CLI is on PATH.
    #[arg(long)]
    bundled_host: bool,
}

/// The secrets of one local stack, generated on first `up` into `<state>/secrets/` (mode 0600).
struct Secrets {
    redis_origin: String,
    redis_edge: String,
    redis_admin: String,
    /// The cluster superuser `aside` (provisioning only; no service uses it).
    postgres: String,
    /// The owner role: `migrate` and `seed`.
    postgres_owner: String,
    /// The application role: `serve`.
    postgres_app: String,
    origin_token: String,
}

impl Secrets {
    fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let get = |name: &str| -> anyhow::Result<String> {
            let path = dir.join(name);
            if let Ok(existing) = std::fs::read_to_string(&path) {
                return Ok(existing.trim().to_string());
            }
            let secret = local::generate_secret();
            local::write_private(&path, &secret)?;
            Ok(secret)
        };
        Ok(Self {
            redis_origin: get("redis-origin")?,
            redis_edge: get("redis-edge")?,
            redis_admin: get("redis-admin")?,
            postgres: get("postgres")?,
            postgres_owner: get("postgres-owner")?,
            postgres_app: get("postgres-app")?,
            origin_token: get("origin-token")?,
        })
    }
}

/// A started process and how to stop it cleanly.
struct Service {
    name: &'static str,
    child: Child,
    stop_signal: i32,
}

/// Stops the services in reverse start order when dropped (also on an error half-way through `up`).
struct Services(Vec<Service>);

impl Drop for Services {
    fn drop(&mut self) {
        while let Some(mut service) = self.0.pop() {
            // SAFETY: signalling a child we started.
            unsafe {
                libc::kill(service.child.id() as i32, service.stop_signal);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match service.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("xtask: {} did not stop in 15 s; killing it", service.name);
                        let _ = service.child.kill();
                        let _ = service.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            eprintln!("xtask: stopped {}", service.name);
        }
    }
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    xtask::prereq::ensure_all()?;
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

    eprintln!("xtask: building (release)");
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "aside-edge",
        "--target",
        xtask::prereq::WASM_TARGET,
    ]))?;
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "aside-origin",
        "-p",
        "aside-tests",
        "--bin",
        "aside-origin",
        "--bin",
        "aside-host",
    ]))?;

    let root = workspace_root();
    let state = if args.state_dir.is_absolute() {
        args.state_dir.clone()
    } else {
        root.join(&args.state_dir)
    };
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let secrets = Secrets::load_or_generate(&state.join("secrets"))?;

    // Ctrl-C and SIGTERM only tell the main thread to stop; children run in their own process groups so
    // the terminal's Ctrl-C reaches xtask alone and the shutdown happens in order.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("install the Ctrl-C handler")?;

    let mut services = Services(Vec::new());
    start_redis(&args, &state, &logs, &secrets, &mut services)?;
    start_postgres(&args, &state, &logs, &secrets, &mut services)?;

    let release = root.join("target/release");
    // The owner migrates and seeds; the origin serves as the application role (docs/security.md).
    let owner_url = format!(
        "postgres://{}:{}@127.0.0.1:{}/aside",
        local::OWNER_ROLE,
        secrets.postgres_owner,
        args.postgres_port
    );
    let app_url = format!(
        "postgres://{}:{}@127.0.0.1:{}/aside",
        local::APP_ROLE,
        secrets.postgres_app,
        args.postgres_port
    );
    let origin_bin = release.join("aside-origin");
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

    let mut origin = Command::new(&origin_bin);
    origin
        .arg("serve")
        .env("ASIDE_DATABASE_URL", &app_url)
        .env(
            "ASIDE_REDIS_URL",
            format!(
                "redis://origin:{}@127.0.0.1:{}",
                secrets.redis_origin, args.redis_port
            ),
        )
        .env("ASIDE_ORIGIN_TOKENS", &secrets.origin_token)
        .env("ASIDE_LISTEN", format!("127.0.0.1:{}", args.origin_port));
    spawn(&mut services, "origin", origin, &logs, libc::SIGTERM)?;
    wait_for_port(&mut services, args.origin_port, &logs)?;

    let spin_cli = !args.bundled_host && spin_available();
    let mut edge = if spin_cli {
        let mut c = Command::new("spin");
        c.args(["up", "--from"])
            .arg(root.join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{}", args.edge_port)]);
        c
    } else {
        let mut c = Command::new(release.join("aside-host"));
        c.arg("--from")
            .arg(root.join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{}", args.edge_port)]);
        c
    };
    edge.env(
        "SPIN_VARIABLE_REDIS_ADDRESS",
        format!("127.0.0.1:{}", args.redis_port),
    )
    .env("SPIN_VARIABLE_REDIS_PASSWORD", &secrets.redis_edge)
    .env(
        "SPIN_VARIABLE_ORIGIN_URL",
        format!("http://127.0.0.1:{}", args.origin_port),
    )
    .env("SPIN_VARIABLE_ORIGIN_TOKEN", &secrets.origin_token);
    spawn(&mut services, "edge", edge, &logs, libc::SIGTERM)?;
    wait_for_port(&mut services, args.edge_port, &logs)?;

    let edge_url = format!("http://127.0.0.1:{}", args.edge_port);
    let origin_url = format!("http://127.0.0.1:{}", args.origin_port);
    let runtime = if spin_cli {
        "spin up"
    } else {
        "the bundled Spin-compatible host"
    };
    println!(
        "\n\
aside is up. Edge ({runtime}): {edge_url}\n\
\n\
  curl -i {edge_url}/users/1                         # MISS, then L1 on the next call\n\
  curl -i '{edge_url}/users/1?fields=email,department'\n\
  curl -i {edge_url}/users/abc                       # 400, JSON error\n\
  curl -i {edge_url}/users/999999                    # 404\n\
\n\
Origin (needs the token): {origin_url}\n\
  curl -i -H \"authorization: Bearer $(cat {token})\" {origin_url}/users/1\n\
  curl -s {origin_url}/metrics | grep aside_origin\n\
\n\
Redis: 127.0.0.1:{redis}  (admin password in {secrets}/redis-admin)\n\
  redis-cli -p {redis} --user admin --pass \"$(cat {secrets}/redis-admin)\" hgetall user:profile:1\n\
PostgreSQL: postgres://127.0.0.1:{pg}/aside  as {owner} (owner; password in {secrets}/postgres-owner),\n\
  {app} (the origin's; {secrets}/postgres-app) or aside (superuser; {secrets}/postgres)\n\
Logs: {logs}\n\
\n\
Press Ctrl-C to stop everything.",
        token = state.join("secrets/origin-token").display(),
        secrets = state.join("secrets").display(),
        redis = args.redis_port,
        pg = args.postgres_port,
        owner = local::OWNER_ROLE,
        app = local::APP_ROLE,
        logs = logs.display(),
    );
    let _ = std::io::stdout().flush();

    // Wait for Ctrl-C, or for a service to die on its own (then stop the rest and say which).
    loop {
        match stop_rx.recv_timeout(Duration::from_millis(500)) {
            Ok(()) => {
                eprintln!("\nxtask: stopping");
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(name) = services
                    .0
                    .iter_mut()
                    .find_map(|s| (!matches!(s.child.try_wait(), Ok(None))).then_some(s.name))
                {
                    drop(services);
                    bail!(
                        "{name} exited unexpectedly; see {}/{name}.log",
                        logs.display()
                    );
                }
            }
        }
    }
    drop(services);
    Ok(())
}

fn start_redis(
    args: &UpArgs,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<()> {
    let root = workspace_root();
    let dir = state.join("redis");
    std::fs::create_dir_all(&dir)?;
    let acl = local::render_acl(
        &std::fs::read_to_string(root.join("deploy/users.acl.template"))?,
        &RedisPasswords {
            origin: &secrets.redis_origin,
            edge: &secrets.redis_edge,
            admin: &secrets.redis_admin,
        },
    );
    local::write_private(&dir.join("users.acl"), &acl)?;
    let deploy_conf = std::fs::read_to_string(root.join("deploy/redis.conf"))?;
    for no_defrag in [false, true] {
        std::fs::write(
            dir.join("redis.conf"),
            local::render_redis_config(&deploy_conf, no_defrag),
        )?;
        let _ = std::fs::remove_file(logs.join("redis.log"));
        let mut command = Command::new("redis-server");
        command
            .arg(dir.join("redis.conf"))
            .args(["--port", &args.redis_port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .arg("--aclfile")
            .arg(dir.join("users.acl"))
            .args(["--maxmemory", "256mb", "--daemonize", "no"]);
        spawn(services, "redis", command, logs, libc::SIGTERM)?;
        if wait_for_port(services, args.redis_port, logs).is_ok() {
            return Ok(());
        }
        let log = std::fs::read_to_string(logs.join("redis.log")).unwrap_or_default();
        services.0.pop();
        if !no_defrag && log.contains(local::NO_ACTIVE_DEFRAG_MESSAGE) {
            eprintln!(
                "xtask: this redis-server build cannot defragment; running it with activedefrag no"
            );
            continue;
        }
        bail!(
            "redis-server did not start; see {}/redis.log",
            logs.display()
        );
    }
    unreachable!("the loop returns or bails")
}

fn start_postgres(
    args: &UpArgs,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<()> {
    let pg_bin = local::pg_bin_dir().context("PostgreSQL server binaries not found")?;
    let owner = local::postgres_owner();
    // As root, PostgreSQL runs as `postgres`, which must be able to reach its folder: keep it outside
    // the (possibly private) checkout, under /var/tmp, keyed by the state folder.
    let dir = match owner {
        Some(_) => PathBuf::from(format!(
            "/var/tmp/aside-postgres-{}",
            short_hash(&state.to_string_lossy())
        )),
        None => state.join("postgres"),
    };
    let data = dir.join("data");
    if !data.join("PG_VERSION").exists() {
        eprintln!(
            "xtask: creating the PostgreSQL cluster in {}",
            data.display()
        );
        std::fs::create_dir_all(&dir)?;
        let pwfile = dir.join("pwfile");
        local::write_private(&pwfile, &secrets.postgres)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let mut initdb = local::initdb_command(&pg_bin, &data, "aside", &pwfile);
        local::run_as(&mut initdb, owner);
        let output = initdb.output().context("run initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    // Rewritten on every start, so a cluster made by an older version loses any looser rules too.
    local::write_pg_hba(&data, owner)?;
    let mut command = Command::new(pg_bin.join("postgres"));
    command
        .arg("-D")
        .arg(&data)
        .args(["-p", &args.postgres_port.to_string()])
        .arg("-k")
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1"]);
    local::run_as(&mut command, owner);
    // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    spawn(services, "postgres", command, logs, libc::SIGINT)?;
    wait_for_port(services, args.postgres_port, logs)?;
    local::provision_postgres(
        &local::Provisioning {
            pg_bin: &pg_bin,
            port: args.postgres_port,
            superuser: "aside",
            superuser_password: &secrets.postgres,
            owner_password: &secrets.postgres_owner,
            app_password: &secrets.postgres_app,
        },
        "aside",
    )
}

fn spawn(
    services: &mut Services,
    name: &'static str,
    mut command: Command,
    logs: &Path,
    stop_signal: i32,
) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec. If xtask itself
    // is killed, the kernel stops the child too: no orphans.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    services.0.push(Service {
        name,
        child,
        stop_signal,
    });
    Ok(())
}

/// Waits until the service started last accepts connections on `port`, or has exited.
fn wait_for_port(services: &mut Services, port: u16, logs: &Path) -> anyhow::Result<()> {
    let service = services.0.last_mut().expect("a service was just started");
    let name = service.name;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if !matches!(service.child.try_wait(), Ok(None)) {
            bail!("{name} exited; see {}/{name}.log", logs.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{name} did not open port {port}; see {}/{name}.log",
        logs.display()
    )
}

/// Is a Spin 4 CLI on PATH?
fn spin_available() -> bool {
    Command::new("spin")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("spin 4."))
        .unwrap_or(false)
}

fn short_hash(s: &str) -> String {
    // FNV-1a: a stable folder name, not a security measure.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
