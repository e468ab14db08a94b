//! The `aside-origin` binary as a child process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use xtask::launch::OriginSettings;

use super::process::{
    ManagedChild, START_ATTEMPTS, StopSignal, listens_on, log_to, port_was_taken, spawn_managed,
};
use super::{bin_dir, free_port, metric, temp_dir, wait_until};

/// How long [`fills_settled`] waits for an origin's read-path fills.
pub const FILL_DEADLINE: Duration = Duration::from_secs(10);

/// Waits until the origin at `base_url` has no read-path fill running (a miss is answered before its
/// fill lands: the gauge `aside_origin_cache_fills_pending` counts each from before its answer until it
/// ends), so that what a test reads next (Redis, or the next read's `x-cache`) sees every fill of the
/// requests it has been answered. Fails the test after [`FILL_DEADLINE`].
pub async fn fills_settled(base_url: &str) {
    let settled = wait_until(FILL_DEADLINE, || async {
        metric(base_url, "aside_origin_cache_fills_pending").await == 0.0
    })
    .await;
    assert!(
        settled,
        "{base_url}: read-path fills still pending after {FILL_DEADLINE:?}"
    );
}

/// How to start an origin.
#[derive(Debug, Clone)]
pub struct OriginOptions {
    pub database_url: String,
    pub redis_url: String,
    /// Bearer tokens the origin accepts (empty: open).
    pub tokens: Vec<String>,
    /// Extra `ASIDE_*` environment variables (timeouts, TTL, ...).
    pub env: Vec<(String, String)>,
}

impl OriginOptions {
    pub fn new(database_url: impl Into<String>, redis_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            tokens: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

pub struct Origin {
    pub addr: SocketAddr,
    pub log_dir: PathBuf,
    options: OriginOptions,
    child: Option<ManagedChild>,
}

/// Path of the `aside-origin` binary built beside the tests (`cargo xtask test` builds it first).
pub fn origin_binary() -> PathBuf {
    let path = bin_dir().join("aside-origin");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p aside-origin` (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// Runs `aside-origin <args>` to completion with the given database URL; returns its output.
pub fn run_origin_command(database_url: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(origin_binary())
        .args(args)
        .env("ASIDE_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "aside-origin {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Origin {
    pub async fn start(options: OriginOptions) -> anyhow::Result<Self> {
        let mut origin = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            log_dir: temp_dir("aside-origin"),
            options,
            child: None,
        };
        // A free port can be handed to another server of the run before this one binds it: then
        // this one cannot bind, and it starts again on another port (a few times at most).
        for attempt in 1.. {
            match origin.launch().await {
                Ok(()) => break,
                Err(e) if attempt < START_ATTEMPTS && port_was_taken(&origin.log()) => {
                    eprintln!(
                        "aside-origin: port {} was taken ({e:#}); another one",
                        origin.addr
                    );
                    origin.kill();
                    origin.addr.set_port(free_port());
                    origin.log_dir = temp_dir("aside-origin");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(origin)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let tokens: Vec<&str> = self.options.tokens.iter().map(String::as_str).collect();
        let mut command = OriginSettings::new(self.addr.to_string(), &self.options.database_url)
            .set("ASIDE_REDIS_URL", &self.options.redis_url)
            .origin_tokens(&tokens)
            .serve(&bin_dir());
        command.env("RUST_LOG", "info");
        // Test hooks and the settings a test changes (`ASIDE_TEST_*` are the test-hooks build's).
        for (k, v) in &self.options.env {
            command.env(k, v);
        }
        log_to(&mut command, &self.log_dir, "origin");
        let child = spawn_managed(command, StopSignal::Kill)?;
        let (pid, port) = (child.id(), self.addr.port());
        self.child = Some(child);
        // Listening means this process holds the port, not just that something answers on it.
        let child = self.child.as_mut().expect("just set");
        let mut exited = false;
        let up = wait_until(Duration::from_secs(20), || {
            exited = exited || child.has_exited();
            let done = exited || listens_on(pid, port);
            async move { done }
        })
        .await;
        if !up || exited {
            anyhow::bail!(
                "aside-origin did not start on {}:\n{}",
                self.addr,
                self.log()
            );
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for this origin's read-path fills to land (see [`fills_settled`]).
    pub async fn fills_settled(&self) {
        fills_settled(&self.url()).await;
    }

    /// The origin as a client sees it, without a token ([`super::TestApp::with_token`] adds one).
    pub fn app(&self) -> super::TestApp {
        super::TestApp::new(self.url())
    }

    /// Everything the origin wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("origin.log")).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill_hard();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the origin: it accepts connections but never answers.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            child.signal(if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Starts it again with the same options and address, and `key=value` in its environment.
    pub async fn restart_with_env(
        &mut self,
        key: &str,
        value: impl ToString,
    ) -> anyhow::Result<()> {
        self.options.env.retain(|(k, _)| k != key);
        self.options.env.push((key.to_string(), value.to_string()));
        self.restart().await
    }

    /// Starts it again with the same options and address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    /// Sends SIGTERM (a graceful shutdown) without waiting for the process to exit.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            child.signal(libc::SIGTERM);
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let Some(child) = &mut self.child else {
                return true;
            };
            if child.has_exited() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
