//! A real `redis-server` running the project's `deploy/redis.conf` and ACL template, with generated
//! passwords, on a free port; optionally also on a TLS port with a throwaway CA ([`RedisServer::start_tls`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use super::process::{ManagedChild, StopSignal, log_to, spawn_managed};
use super::tls::{CertFiles, TestCa};
use super::{free_port, generate_secret, port_open, temp_dir, wait_until, workspace_root};

/// Set once a redis-server refused `activedefrag yes` (see [`RedisServer::launch`]).
static NO_ACTIVE_DEFRAG: AtomicBool = AtomicBool::new(false);

/// The ACL users of `deploy/users.acl.template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisUser {
    Origin,
    Edge,
    Admin,
}

impl RedisUser {
    pub fn name(self) -> &'static str {
        match self {
            RedisUser::Origin => "origin",
            RedisUser::Edge => "edge",
            RedisUser::Admin => "admin",
        }
    }
}

pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    origin_password: String,
    edge_password: String,
    admin_password: String,
    child: Option<ManagedChild>,
    /// The TLS listener, when started with [`RedisServer::start_tls`].
    pub tls: Option<RedisTls>,
    /// Settings given after the harness's own (see [`RedisServer::start_with_args`]).
    extra_args: Vec<String>,
}

/// How [`RedisServer::start_tls`] sets up TLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsOptions {
    /// `tls-auth-clients yes`: a TLS client must also present a certificate signed by the test CA
    /// ([`RedisTls::client`]). Otherwise (`no`) the TLS channel is authenticated by the server's
    /// certificate and the client by its ACL password.
    pub require_client_certificates: bool,
}

/// The TLS side of a [`RedisServer`]: its port and the throwaway CA and certificates.
#[derive(Debug)]
pub struct RedisTls {
    pub port: u16,
    /// The CA that signed the server's (and the client) certificate: what a client must trust.
    pub ca: TestCa,
    pub server: CertFiles,
    /// A client certificate signed by the same CA, for `tls-auth-clients yes`.
    pub client: CertFiles,
    pub options: TlsOptions,
}

impl RedisTls {
    /// What a redis-rs client needs to trust this server (and, with `client_certificate`, to present
    /// the client certificate).
    pub fn certificates(&self, client_certificate: bool) -> redis::TlsCertificates {
        let read = |p: &Path| std::fs::read(p).expect("a file the harness wrote");
        redis::TlsCertificates {
            client_tls: client_certificate.then(|| redis::ClientTlsConfig {
                client_cert: read(&self.client.cert),
                client_key: read(&self.client.key),
            }),
            root_cert: Some(read(&self.ca.cert_file)),
        }
    }
}

impl RedisServer {
    /// Starts a server in a new temporary folder.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_in(&temp_dir("aside-redis"), free_port()).await
    }

    /// Starts a server whose data (AOF, ACL file) lives in `dir`, listening on `port`.
    pub async fn start_in(dir: &Path, port: u16) -> anyhow::Result<Self> {
        Self::start_with(dir, port, None, &[]).await
    }

    /// Starts a server in a new temporary folder with extra `--name value` settings after the
    /// harness's (e.g. `--enable-debug-command yes`, so that only the ACLs stand between a user and
    /// `DEBUG`).
    pub async fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(&temp_dir("aside-redis"), free_port(), None, args).await
    }

    /// Starts a server that also listens with TLS on a second free port, with a CA and certificates
    /// made for it (the server's for `127.0.0.1` and `localhost`). The plain port stays open on
    /// loopback for the harness's [`RedisServer::admin`]; a production Redis would set `port 0`.
    pub async fn start_tls(options: TlsOptions) -> anyhow::Result<Self> {
        let dir = temp_dir("aside-redis");
        let ca = TestCa::new(&dir, "redis")?;
        let tls = RedisTls {
            port: free_port(),
            server: ca.server_cert("redis-server")?,
            client: ca.client_cert("redis-client")?,
            ca,
            options,
        };
        Self::start_with(&dir, free_port(), Some(tls), &[]).await
    }

    async fn start_with(
        dir: &Path,
        port: u16,
        tls: Option<RedisTls>,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut server = Self {
            port,
            dir: dir.to_path_buf(),
            origin_password: generate_secret(),
            edge_password: generate_secret(),
            admin_password: generate_secret(),
            child: None,
            tls,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        server.write_acl_file()?;
        server.launch().await?;
        Ok(server)
    }

    /// Renders the ACL template with this server's passwords into its folder (mode 0600).
    fn write_acl_file(&self) -> anyhow::Result<()> {
        let template = std::fs::read_to_string(workspace_root().join("deploy/users.acl.template"))?;
        let acl = xtask::local::render_acl(
            &template,
            &xtask::local::RedisPasswords {
                origin: &self.origin_password,
                edge: &self.edge_password,
                admin: &self.admin_password,
            },
        );
        let path = self.dir.join("users.acl");
        std::fs::write(&path, acl)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        if let Err(e) = self.launch_once().await {
            // Debian's and Ubuntu's redis-server are built against the system jemalloc, which cannot
            // defragment: the production setting `activedefrag yes` then refuses to start. Run with
            // defragmentation off on such builds rather than not at all.
            let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
            if log.contains(xtask::local::NO_ACTIVE_DEFRAG_MESSAGE) {
                NO_ACTIVE_DEFRAG.store(true, Ordering::Relaxed);
                return self.launch_once().await;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn launch_once(&mut self) -> anyhow::Result<()> {
        let config = xtask::local::render_redis_config(
            &std::fs::read_to_string(workspace_root().join("deploy/redis.conf"))?,
            NO_ACTIVE_DEFRAG.load(Ordering::Relaxed),
        );
        std::fs::write(self.dir.join("redis.conf"), config)?;
        let mut command = Command::new("redis-server");
        command
            .arg(self.dir.join("redis.conf"))
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--aclfile")
            .arg(self.dir.join("users.acl"))
            .args(["--maxmemory", "256mb"])
            // One logical database per test (see Stack).
            .args(["--databases", "1000"])
            .args(["--daemonize", "no"]);
        if let Some(tls) = &self.tls {
            command
                .args(["--tls-port", &tls.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.server.cert)
                .arg("--tls-key-file")
                .arg(&tls.server.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca.cert_file)
                .args([
                    "--tls-auth-clients",
                    if tls.options.require_client_certificates {
                        "yes"
                    } else {
                        "no"
                    },
                ]);
        }
        command.args(&self.extra_args);
        log_to(&mut command, &self.dir, "redis");
        let child = spawn_managed(command, StopSignal::Kill).map_err(|e| {
            anyhow::anyhow!(
                "cannot start redis-server (is the redis-server package installed?): {e}"
            )
        })?;
        self.child = Some(child);
        let port = self.port;
        let tls_port = self.tls.as_ref().map(|t| t.port);
        let child = self.child.as_mut().expect("just set");
        let mut exited = false;
        let up = wait_until(Duration::from_secs(20), || {
            exited = exited || child.has_exited();
            let done = exited;
            async move {
                done || (port_open(port).await
                    && match tls_port {
                        Some(p) => port_open(p).await,
                        None => true,
                    })
            }
        })
        .await;
        if !up || exited {
            self.child = None;
            let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow::bail!(
                "redis-server did not start on port {port}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// `redis://user:password@127.0.0.1:port/db`
    pub fn url(&self, user: RedisUser, db: u32) -> String {
        let password = match user {
            RedisUser::Origin => &self.origin_password,
            RedisUser::Edge => &self.edge_password,
            RedisUser::Admin => &self.admin_password,
        };
        format!(
            "redis://{}:{password}@127.0.0.1:{}/{db}",
            user.name(),
            self.port
        )
    }

    /// `rediss://user:password@127.0.0.1:tls_port/db`; panics if the server has no TLS port.
    pub fn tls_url(&self, user: RedisUser, db: u32) -> String {
        let tls = self.tls.as_ref().expect("a server started with start_tls");
        format!(
            "rediss://{}:{}@127.0.0.1:{}/{db}",
            user.name(),
            self.password(user),
            tls.port
        )
    }

    pub fn password(&self, user: RedisUser) -> &str {
        match user {
            RedisUser::Origin => &self.origin_password,
            RedisUser::Edge => &self.edge_password,
            RedisUser::Admin => &self.admin_password,
        }
    }

    /// An admin connection to logical database `db`, for a test to inspect or arrange data.
    pub async fn admin(&self, db: u32) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url(RedisUser::Admin, db))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// SIGKILL: no goodbye, no final AOF flush beyond what `appendfsync everysec` already did.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill_hard();
        }
    }

    /// Starts it again on the same port with the same folder (so the AOF is replayed).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    /// Graceful stop: `SHUTDOWN` (Redis flushes and fsyncs the AOF, then exits); waits for the exit.
    /// [`RedisServer::restart`] starts it again on the same folder.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        let mut admin = self.admin(0).await?;
        // The server closes the connection instead of replying.
        let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut admin).await;
        let child = self.child.as_mut().context("redis-server is not running")?;
        let mut exited = false;
        let stopped = wait_until(Duration::from_secs(20), || {
            exited = exited || child.has_exited();
            let done = exited;
            async move { done }
        })
        .await;
        anyhow::ensure!(stopped, "redis-server did not exit after SHUTDOWN");
        self.kill();
        Ok(())
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: a Redis that accepts TCP but never answers.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            child.signal(if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }
}
