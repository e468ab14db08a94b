//! `cargo xtask up`: the whole stack on this machine, in a state folder (`.aside/`, ignored by git).
//!
//! Order: install what is missing, build (release), start Redis and PostgreSQL with the project's
//! configuration and generated secrets, migrate, seed (once), start the origin, start the edge (under
//! `spin up` when a Spin CLI is on PATH, else under the bundled Spin-compatible host), print the URLs.
//! Ctrl-C (or SIGTERM) stops everything in reverse order and waits for each process to exit.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use xtask::local;
use xtask::stack::{self, Secrets, Services};

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
    /// A replicated Redis instead of one node: a primary (--redis-port), a replica (the next port) and
    /// three Sentinels (20000 above); the origin finds the primary through the Sentinels, the edge reads
    /// the replica.
    #[arg(long)]
    redis_ha: bool,
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

    let mut services = Services::new();
    let ha = match args.redis_ha {
        true => Some(xtask::redis_ha::start_local(
            &root,
            xtask::redis_ha::LocalPorts::from_redis_port(args.redis_port),
            &state,
            &logs,
            &secrets,
            &mut services,
        )?),
        false => {
            stack::start_redis(
                &root,
                args.redis_port,
                &state,
                &logs,
                &secrets,
                &mut services,
            )?;
            None
        }
    };
    stack::start_postgres(
        args.postgres_port,
        &stack::postgres_dir(&state),
        &logs,
        &secrets,
        &mut services,
    )?;

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
    match &ha {
        Some(ha) => ha.origin_env(&mut origin, &secrets.redis_origin),
        None => {
            origin.env(
                "ASIDE_REDIS_URL",
                format!(
                    "redis://origin:{}@127.0.0.1:{}",
                    secrets.redis_origin, args.redis_port
                ),
            );
        }
    }
    origin
        .arg("serve")
        .env("ASIDE_DATABASE_URL", &app_url)
        .env("ASIDE_ORIGIN_TOKENS", &secrets.origin_token)
        .env("ASIDE_ADMIN_TOKENS", &secrets.admin_token)
        .env("ASIDE_LISTEN", format!("127.0.0.1:{}", args.origin_port));
    services.spawn("origin", origin, &logs, libc::SIGTERM)?;
    services.wait_for_port(args.origin_port, &logs)?;

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
    let edge_redis = ha.as_ref().map_or(args.redis_port, |ha| ha.ports.replica);
    edge.env(
        "SPIN_VARIABLE_REDIS_ADDRESS",
        format!("127.0.0.1:{edge_redis}"),
    )
    .env("SPIN_VARIABLE_REDIS_PASSWORD", &secrets.redis_edge)
    .env(
        "SPIN_VARIABLE_ORIGIN_URL",
        format!("http://127.0.0.1:{}", args.origin_port),
    )
    .env("SPIN_VARIABLE_ORIGIN_TOKEN", &secrets.origin_token);
    services.spawn("edge", edge, &logs, libc::SIGTERM)?;
    services.wait_for_port(args.edge_port, &logs)?;

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
  curl -s {origin_url}/openapi.json | head -c 300; echo\n\
  curl -s -H \"authorization: Bearer $(cat {secrets}/admin-token)\" {origin_url}/admin/cache/stats\n\
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
    if let Some(ha) = &ha {
        println!(
            "\nReplicated Redis (the edge reads the replica):\n{}",
            ha.describe()
        );
    }
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
                if let Some(name) = services.first_exited() {
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

/// Is a Spin 4 CLI on PATH?
fn spin_available() -> bool {
    Command::new("spin")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("spin 4."))
        .unwrap_or(false)
}
