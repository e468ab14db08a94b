//! A real PostgreSQL 15 cluster: `initdb` into a temporary folder, password (scram-sha-256)
//! authentication on loopback TCP only (`xtask::local::PG_HBA`), started as the `postgres` system user
//! when the tests run as root (PostgreSQL refuses to run as root).
//!
//! Three roles, as in production (docs/security.md): the cluster superuser `aside_admin` (tests use it
//! to create databases and to arrange or inspect data), the owner `aside_owner` (owns each test
//! database, runs `migrate` and `seed`) and the application role `aside_app` (what the origin serves
//! as), each with its own generated password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use xtask::launch::PostgresLaunch;

use super::process::{ManagedChild, StopSignal, log_to, spawn_managed};
use super::{free_port, generate_secret, temp_dir, wait_until};

pub struct PostgresServer {
    pub port: u16,
    pub dir: PathBuf,
    /// How this server is created and started (the project's one PostgreSQL launcher).
    launch: PostgresLaunch,
    /// The superuser (`aside_admin`) password.
    password: String,
    /// The owner role's ([`OWNER_ROLE`]) password.
    owner_password: String,
    /// The application role's ([`APP_ROLE`]) password.
    app_password: String,
    child: Option<ManagedChild>,
}

const SUPERUSER: &str = "aside_admin";

/// The role that owns each test database (see the module documentation).
pub const OWNER_ROLE: &str = xtask::local::OWNER_ROLE;
/// The role the origin serves as.
pub const APP_ROLE: &str = xtask::local::APP_ROLE;

impl PostgresServer {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = temp_dir("aside-pg");
        Self::init_and_start(&dir, free_port()).await
    }

    pub async fn init_and_start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let launch = PostgresLaunch::new(dir, port)?.throwaway();
        let password = generate_secret();
        launch.create(SUPERUSER, &password)?;
        let mut server = Self {
            port,
            dir: dir.to_path_buf(),
            launch,
            password,
            owner_password: generate_secret(),
            app_password: generate_secret(),
            child: None,
        };
        server.launch().await?;
        let admin = server.connect("postgres").await?;
        admin
            .batch_execute(&xtask::local::create_roles_sql(
                &server.owner_password,
                &server.app_password,
            ))
            .await?;
        Ok(server)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = self.launch.command()?;
        xtask::local::run_as(&mut command, self.launch.owner());
        log_to(&mut command, &self.dir, "postgres");
        self.child = Some(spawn_managed(command, StopSignal::Quit)?);
        let url = self.url("postgres");
        let ready = wait_until(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .is_ok()
            }
        })
        .await;
        anyhow::ensure!(
            ready,
            "PostgreSQL did not start on port {}; see {}",
            self.port,
            self.dir.join("postgres.log").display()
        );
        Ok(())
    }

    /// Superuser URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL of the owner role ([`OWNER_ROLE`]) for `database`: what `migrate` and `seed` use.
    pub fn owner_url(&self, database: &str) -> String {
        format!(
            "postgres://{OWNER_ROLE}:{}@127.0.0.1:{}/{database}",
            self.owner_password, self.port
        )
    }

    /// URL of the application role ([`APP_ROLE`]) for `database`: what the origin serves with.
    pub fn app_url(&self, database: &str) -> String {
        format!(
            "postgres://{APP_ROLE}:{}@127.0.0.1:{}/{database}",
            self.app_password, self.port
        )
    }

    /// The application role's password (for tests that look for it where it must not be).
    pub fn app_password(&self) -> &str {
        &self.app_password
    }

    /// The owner role's password.
    pub fn owner_password(&self) -> &str {
        &self.owner_password
    }

    /// A superuser connection to `database`.
    pub async fn connect(&self, database: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Creates an empty database owned by [`OWNER_ROLE`], with `PUBLIC`'s default `CONNECT` and
    /// `TEMPORARY` taken away (as production provisioning does), and returns its superuser URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let admin = self.connect("postgres").await?;
        // Two queries: CREATE DATABASE cannot share a (implicit) transaction with another statement.
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\" OWNER {OWNER_ROLE}"))
            .await?;
        admin
            .batch_execute(&format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC"))
            .await?;
        Ok(self.url(name))
    }

    /// Immediate shutdown (SIGQUIT): connections drop at once, like a crash.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
    }

    /// Starts it again on the same port and data folder.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the postmaster.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            child.signal(if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Freezes or thaws the whole server: the postmaster *and* its backends (freezing only the
    /// postmaster leaves open connections working). A frozen server accepts TCP connections and
    /// answers nothing, and enforces no `statement_timeout`: a stalled host. Returns how many processes
    /// were signalled.
    pub fn pause_all(&self, paused: bool) -> usize {
        let Some(child) = &self.child else { return 0 };
        let postmaster = child.id();
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // The postmaster first when freezing (it forks no new backend meanwhile), last when thawing.
        if paused {
            child.signal(signal);
        }
        let backends = children_of(postmaster);
        for pid in &backends {
            // SAFETY: signalling processes forked by our own child.
            unsafe {
                libc::kill(*pid as i32, signal);
            }
        }
        if !paused {
            child.signal(signal);
        }
        backends.len() + 1
    }
}

/// Pids whose parent is `parent` (from /proc/<pid>/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid ...`: comm may hold spaces, so split after its ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
