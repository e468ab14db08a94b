//! A real `redis-server` running the project's `deploy/redis.conf` and ACL template, with generated
//! passwords, on a free port; optionally also on a TLS port with a throwaway CA ([`RedisServer::start_tls`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use xtask::local::{HaPasswords, RedisPasswords};
use xtask::redis_server::{RedisNode, Replication};

use super::process::{ManagedChild, StopSignal, listens_on, log_to, spawn_managed};
use super::tls::{CertFiles, TestCa};
use super::{free_port, generate_secret, temp_dir, wait_until, workspace_root};

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
    /// A node of a replicated Redis ([`RedisHa`]): the `replica` and `sentinel` users' passwords.
    ha: Option<HaSecrets>,
    /// The primary's port this node replicates from at start.
    replica_of: Option<u16>,
    /// A node of a Redis Cluster ([`RedisCluster`]): also runs `deploy/cluster.conf`.
    cluster: bool,
}

/// The passwords only the nodes of a replicated Redis have.
#[derive(Debug, Clone)]
struct HaSecrets {
    replica_password: String,
    sentinel_password: String,
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
        let mut server = Self::new(dir.to_path_buf(), port, None);
        server.tls = tls;
        server.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        server.launch().await?;
        Ok(server)
    }

    /// A server not started yet, with new passwords (and the replication users' with `ha`).
    fn new(dir: PathBuf, port: u16, ha: Option<HaSecrets>) -> Self {
        Self {
            port,
            dir,
            origin_password: generate_secret(),
            edge_password: generate_secret(),
            admin_password: generate_secret(),
            child: None,
            tls: None,
            extra_args: Vec::new(),
            ha,
            replica_of: None,
            cluster: false,
        }
    }

    /// The first primary of a replicated Redis (see [`RedisHa`]): `deploy/redis.conf` plus
    /// `deploy/replica.conf`, with the `replica` and `sentinel` ACL users.
    async fn start_ha_primary() -> anyhow::Result<Self> {
        let ha = HaSecrets {
            replica_password: generate_secret(),
            sentinel_password: generate_secret(),
        };
        let mut server = Self::new(temp_dir("aside-redis-ha"), free_port(), Some(ha));
        server.launch().await?;
        Ok(server)
    }

    /// A replica of `primary`, with the same users and passwords (ACLs are not replicated).
    async fn start_replica_of(primary: &RedisServer) -> anyhow::Result<Self> {
        let mut server = Self::new(temp_dir("aside-redis-ha"), free_port(), primary.ha.clone());
        server.origin_password = primary.origin_password.clone();
        server.edge_password = primary.edge_password.clone();
        server.admin_password = primary.admin_password.clone();
        server.replica_of = Some(primary.port);
        server.launch().await?;
        Ok(server)
    }

    /// What the project's launcher starts for this server (`xtask::redis_server`).
    fn node(&self) -> RedisNode<'_> {
        RedisNode {
            dir: &self.dir,
            port: self.port,
            passwords: RedisPasswords {
                origin: &self.origin_password,
                edge: &self.edge_password,
                admin: &self.admin_password,
            },
            replication: self.ha.as_ref().map(|ha| Replication {
                passwords: HaPasswords {
                    replica: &ha.replica_password,
                    sentinel: &ha.sentinel_password,
                },
                replica_of: self.replica_of,
            }),
        }
    }

    /// Starts the server; once more with `activedefrag no` if this build cannot defragment.
    async fn launch(&mut self) -> anyhow::Result<()> {
        match self.launch_once().await {
            Err(_) if xtask::redis_server::retry_without_defrag(&self.log()) => {
                self.launch_once().await
            }
            result => result,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    async fn launch_once(&mut self) -> anyhow::Result<()> {
        let mut command = match self.cluster {
            true => xtask::redis_cluster::node_command(&self.node(), &workspace_root())?,
            false => self.node().command(&workspace_root())?,
        };
        command.args(["--bind", "127.0.0.1"]);
        if !self.cluster {
            // One logical database per test (see Stack); a cluster has database 0 only.
            command.args(["--databases", "1000"]);
        }
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
        let pid = child.id();
        let mut exited = false;
        // Listening means this redis-server holds the port(s), not just that something answers there.
        let up = wait_until(Duration::from_secs(20), || {
            exited = exited || child.has_exited();
            let done =
                exited || (listens_on(pid, port) && tls_port.is_none_or(|p| listens_on(pid, p)));
            async move { done }
        })
        .await;
        if !up || exited {
            self.child = None;
            let log = self.log();
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

    /// An admin connection to logical database `db` once Redis has loaded its data (after a restart it
    /// accepts connections while it replays the AOF, answering `LOADING`); `None` after 20 s.
    pub async fn admin_when_loaded(&self, db: u32) -> Option<redis::aio::MultiplexedConnection> {
        let loaded = wait_until(Duration::from_secs(20), || async {
            let Ok(mut admin) = self.admin(db).await else {
                return false;
            };
            // A data command, not only `INFO` (which answers while loading): `LOADING` is an error.
            let size: Result<u64, _> = redis::cmd("DBSIZE").query_async(&mut admin).await;
            let info: Result<String, _> = redis::cmd("INFO")
                .arg("persistence")
                .query_async(&mut admin)
                .await;
            size.is_ok() && info.is_ok_and(|i| i.contains("loading:0"))
        })
        .await;
        if !loaded {
            return None;
        }
        self.admin(db).await.ok()
    }

    /// `BGREWRITEAOF`, waited for (at most 10 s): the append-only file starts again from an RDB base (the
    /// "preamble"), so the changes after it live only in its tail. False if it did not finish in time.
    pub async fn rewrite_aof(&self) -> anyhow::Result<bool> {
        let mut admin = self.admin(0).await?;
        let () = redis::cmd("BGREWRITEAOF").query_async(&mut admin).await?;
        Ok(wait_until(Duration::from_secs(10), || {
            let mut admin = admin.clone();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut admin)
                    .await
                    .unwrap_or_default();
                info.contains("aof_rewrite_in_progress:0")
                    && info.contains("aof_rewrite_scheduled:0")
            }
        })
        .await)
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

/// A replicated Redis as `deploy/` describes it, on free ports: a primary, replicas, and Sentinels
/// watching them (`redis-server --sentinel` running `deploy/sentinel.conf`). Which node is the primary
/// changes with failovers: ask [`RedisHa::primary`] or [`RedisHa::role`].
pub struct RedisHa {
    /// `nodes[0]` is the first primary, the others its replicas.
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<RedisSentinel>,
}

/// One Sentinel process.
pub struct RedisSentinel {
    pub port: u16,
    pub dir: PathBuf,
    password: String,
    child: Option<ManagedChild>,
}

impl RedisHa {
    /// A primary, `replicas` replicas in sync with it, and `sentinels` Sentinels (quorum 2) that all
    /// see the replicas and each other, with `timings` (a test wants a failover within seconds).
    pub async fn start(
        replicas: usize,
        sentinels: usize,
        timings: xtask::redis_ha::SentinelTimings,
    ) -> anyhow::Result<Self> {
        let primary = RedisServer::start_ha_primary().await?;
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let replica = RedisServer::start_replica_of(&nodes[0]).await?;
            nodes.push(replica);
        }
        let mut ha = Self {
            nodes,
            sentinels: Vec::new(),
        };
        anyhow::ensure!(
            ha.wait_synced(Duration::from_secs(20)).await,
            "the replicas did not synchronise with the primary"
        );
        for _ in 0..sentinels {
            let sentinel = RedisSentinel::start(&ha.nodes[0], timings).await?;
            ha.sentinels.push(sentinel);
        }
        // Sentinels learn of the replicas (INFO on the primary) and of each other (the hello channel)
        // within a few seconds; a failover before that would find no replica to promote.
        let want_replicas = replicas;
        let want_peers = sentinels.saturating_sub(1);
        let ready = wait_until(Duration::from_secs(20), || async {
            for s in &ha.sentinels {
                if s.count("REPLICAS").await < want_replicas
                    || s.count("SENTINELS").await < want_peers
                {
                    return false;
                }
            }
            true
        })
        .await;
        anyhow::ensure!(
            ready,
            "the Sentinels did not discover the replicas and each other"
        );
        Ok(ha)
    }

    /// Options for an origin that finds the primary through the Sentinels (no `ASIDE_REDIS_URL`), on
    /// `env`'s database and Redis logical database, accepting `token`; short Sentinel poll and Redis
    /// backoff, so a test's failover is followed within a second.
    pub fn origin_options(&self, env: &super::TestEnv, token: &str) -> super::OriginOptions {
        let password = self.nodes[0].password(RedisUser::Origin);
        let mut options = super::OriginOptions::new(env.app_database_url.clone(), "")
            .env("ASIDE_REDIS_SENTINELS", self.sentinel_addresses())
            .env("ASIDE_REDIS_SENTINEL_MASTER", xtask::redis_ha::MASTER_NAME)
            .env("ASIDE_REDIS_SENTINEL_USERNAME", "origin")
            .env("ASIDE_REDIS_SENTINEL_PASSWORD", password)
            .env("ASIDE_REDIS_USERNAME", "origin")
            .env("ASIDE_REDIS_PASSWORD", password)
            .env("ASIDE_REDIS_DB", env.redis_db)
            .env("ASIDE_REDIS_SENTINEL_POLL_MS", 500)
            .env("ASIDE_REDIS_BACKOFF_MS", 200)
            .env("ASIDE_REDIS_BACKOFF_MAX_MS", 500);
        options.tokens = vec![token.to_string()];
        options
    }

    /// `host:port,...` of the Sentinels (ASIDE_REDIS_SENTINELS).
    pub fn sentinel_addresses(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `ROLE` of node `i` (`master`, `slave`), or `None` if it does not answer within a second.
    pub async fn role(&self, i: usize) -> Option<String> {
        let node = &self.nodes[i];
        let ask = async {
            let mut c = node.admin(0).await.ok()?;
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
            match role.first() {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(redis::Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            }
        };
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()
            .flatten()
    }

    /// The node a majority of the Sentinels name as primary, if any.
    pub async fn primary(&self) -> Option<usize> {
        let mut votes = vec![0; self.nodes.len()];
        for s in &self.sentinels {
            let ask = async {
                let mut c = s.client().await.ok()?;
                let (_, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(xtask::redis_ha::MASTER_NAME)
                    .query_async(&mut c)
                    .await
                    .ok()?;
                self.nodes.iter().position(|n| n.port == port)
            };
            if let Ok(Some(i)) = tokio::time::timeout(Duration::from_secs(1), ask).await {
                votes[i] += 1;
            }
        }
        let majority = self.sentinels.len() / 2 + 1;
        votes.iter().position(|&v| v >= majority)
    }

    /// Waits until the Sentinels name a primary other than node `old` and that node says it is one.
    /// Returns the new primary.
    pub async fn wait_for_failover(&self, old: usize, timeout: Duration) -> Option<usize> {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if let Some(p) = self.primary().await
                && p != old
                && self.role(p).await.as_deref() == Some("master")
            {
                return Some(p);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits until every node that answers is in sync: each replica's link to the one primary is up and
    /// has acknowledged its whole replication stream (a dead node is not waited for). False on timeout.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        // The primary's offset when first seen: Sentinels keep publishing hello messages, so the offset
        // moves on; every replica must acknowledge at least this one.
        let mut target: Option<(usize, u64)> = None;
        while std::time::Instant::now() < until {
            if let Some((p, info)) = self.primary_replication().await {
                let offset = info_field(&info, "master_repl_offset")
                    .and_then(|o| o.parse::<u64>().ok())
                    .unwrap_or(0);
                let wanted = match target {
                    Some((tp, t)) if tp == p => t,
                    _ => {
                        target = Some((p, offset));
                        offset
                    }
                };
                let mut replicas = 0;
                for i in 0..self.nodes.len() {
                    if self.role(i).await.as_deref() == Some("slave") {
                        replicas += 1;
                    }
                }
                let acked = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .filter(|l| {
                        l.split(',')
                            .find_map(|f| f.strip_prefix("offset="))
                            .and_then(|o| o.trim().parse::<u64>().ok())
                            .is_some_and(|o| o >= wanted)
                    })
                    .count();
                if acked >= replicas {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The primary (the only node whose `ROLE` is `master`) and its `INFO replication`.
    async fn primary_replication(&self) -> Option<(usize, String)> {
        let p = self.master_by_role().await?;
        let mut c = self.nodes[p].admin(0).await.ok()?;
        let info = redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut c)
            .await
            .ok()?;
        Some((p, info))
    }

    /// The only node whose `ROLE` is `master`, if exactly one is.
    async fn master_by_role(&self) -> Option<usize> {
        let mut masters = Vec::new();
        for i in 0..self.nodes.len() {
            if self.role(i).await.as_deref() == Some("master") {
                masters.push(i);
            }
        }
        (masters.len() == 1).then(|| masters[0])
    }
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

impl RedisSentinel {
    /// A Sentinel watching `primary`, on a free port, running `deploy/sentinel.conf`.
    async fn start(
        primary: &RedisServer,
        timings: xtask::redis_ha::SentinelTimings,
    ) -> anyhow::Result<Self> {
        let ha = primary.ha.as_ref().context("not a replicated Redis node")?;
        let dir = temp_dir("aside-sentinel");
        let port = free_port();
        let setup = xtask::redis_ha::SentinelSetup {
            primary_host: "127.0.0.1",
            primary_port: primary.port,
            sentinel_password: &ha.sentinel_password,
            origin_password: &primary.origin_password,
            timings: Some(timings),
        };
        let mut command = xtask::redis_ha::sentinel_command(&workspace_root(), &dir, port, &setup)?;
        command.args(["--bind", "127.0.0.1"]);
        log_to(&mut command, &dir, "sentinel");
        let child = spawn_managed(command, StopSignal::Kill)
            .map_err(|e| anyhow::anyhow!("cannot start redis-server --sentinel: {e}"))?;
        let pid = child.id();
        let sentinel = Self {
            port,
            dir,
            password: ha.sentinel_password.clone(),
            child: Some(child),
        };
        anyhow::ensure!(
            wait_until(
                Duration::from_secs(20),
                || async move { listens_on(pid, port) }
            )
            .await,
            "redis-server --sentinel did not start on port {port}:\n{}",
            std::fs::read_to_string(sentinel.dir.join("sentinel.log")).unwrap_or_default()
        );
        Ok(sentinel)
    }

    /// A connection as the Sentinels' `sentinel` user.
    pub async fn client(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!(
            "redis://sentinel:{}@127.0.0.1:{}",
            self.password, self.port
        ))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// How many entries `SENTINEL <what> aside` lists (REPLICAS, SENTINELS); 0 on failure.
    async fn count(&self, what: &str) -> usize {
        let Ok(mut c) = self.client().await else {
            return 0;
        };
        redis::cmd("SENTINEL")
            .arg(what)
            .arg(xtask::redis_ha::MASTER_NAME)
            .query_async::<Vec<redis::Value>>(&mut c)
            .await
            .map_or(0, |v| v.len())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill_hard();
        }
    }
}

/// A Redis Cluster as `deploy/` describes it, on free ports: every node runs `redis.conf`,
/// `replica.conf` and `cluster.conf` with the same ACL users, formed by `redis-cli --cluster create`
/// (three primaries and three replicas with [`RedisCluster::start`]'s defaults). Heavy: a test binary
/// starts one and its tests share it (database 0 only: tests keep to their own ids).
pub struct RedisCluster {
    /// In the order given to `--cluster create`: the first third primaries at first, then replicas.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `INFO section` of the node on `port`, read as the admin user.
    pub async fn node_info(&self, port: u16, section: &str) -> anyhow::Result<String> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .ok_or_else(|| anyhow::anyhow!("no node of this cluster on port {port}"))?;
        let mut admin = node.admin(0).await?;
        Ok(redis::cmd("INFO")
            .arg(section)
            .query_async(&mut admin)
            .await?)
    }

    /// `primaries` primaries with `replicas` replicas each, every slot served and every replica in
    /// sync.
    pub async fn start(primaries: usize, replicas: usize) -> anyhow::Result<Self> {
        let ha = HaSecrets {
            replica_password: generate_secret(),
            // Sentinel is not part of a cluster: a password no one is given.
            sentinel_password: generate_secret(),
        };
        let first = RedisServer::new(temp_dir("aside-redis-cluster"), cluster_port(), Some(ha));
        let mut nodes = vec![first];
        for _ in 1..primaries * (replicas + 1) {
            let mut node = RedisServer::new(
                temp_dir("aside-redis-cluster"),
                cluster_port(),
                nodes[0].ha.clone(),
            );
            node.origin_password = nodes[0].origin_password.clone();
            node.edge_password = nodes[0].edge_password.clone();
            node.admin_password = nodes[0].admin_password.clone();
            nodes.push(node);
        }
        for node in &mut nodes {
            node.cluster = true;
            node.launch().await?;
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let admin = nodes[0].admin_password.clone();
        let output = tokio::task::spawn_blocking({
            let ports = ports.clone();
            let admin = admin.clone();
            move || xtask::redis_cluster::create_command(&ports, &admin, replicas).output()
        })
        .await??;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::task::spawn_blocking(move || {
            xtask::redis_cluster::wait_ready(&ports, &admin, primaries, Duration::from_secs(60))
        })
        .await??;
        Ok(Self { nodes })
    }

    /// A node started like the others (same files, users and passwords) and joined to the cluster as
    /// an empty primary with `redis-cli --cluster add-node`; it serves no slot until slots are moved to
    /// it (`--cluster rebalance --cluster-use-empty-masters`). Returns its index in [`Self::nodes`].
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let mut node = RedisServer::new(
            temp_dir("aside-redis-cluster"),
            cluster_port(),
            self.nodes[0].ha.clone(),
        );
        node.origin_password = self.nodes[0].origin_password.clone();
        node.edge_password = self.nodes[0].edge_password.clone();
        node.admin_password = self.nodes[0].admin_password.clone();
        node.cluster = true;
        node.launch().await?;
        let (new, existing) = (node.port, self.nodes[0].port);
        self.nodes.push(node);
        let output = self
            .redis_cli(&[
                "add-node".to_string(),
                format!("127.0.0.1:{new}"),
                format!("127.0.0.1:{existing}"),
            ])
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster add-node failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Joined when every node that answers knows it.
        let known = wait_until(Duration::from_secs(30), || async {
            let mut everywhere = true;
            for i in 0..self.nodes.len() {
                if let Ok(view) = self.cluster_nodes_from(i).await {
                    everywhere &= view.iter().any(|n| n.port == new && n.primary);
                }
            }
            everywhere
        })
        .await;
        anyhow::ensure!(known, "the added node on {new} is not known to every node");
        Ok(self.nodes.len() - 1)
    }

    /// `redis-cli --cluster <args>` as the admin user (on a blocking thread); its output.
    pub async fn redis_cli(&self, args: &[String]) -> anyhow::Result<std::process::Output> {
        let admin = &self.nodes[0].admin_password;
        let (subcommand, rest) = args
            .split_first()
            .context("redis-cli --cluster needs a subcommand")?;
        let mut command = xtask::redis_cluster::cluster_cli(admin, subcommand);
        command.args(rest).stdin(std::process::Stdio::null());
        Ok(tokio::task::spawn_blocking(move || command.output()).await??)
    }

    /// `CLUSTER NODES` as the first node that answers sees it.
    pub async fn cluster_nodes(&self) -> anyhow::Result<Vec<xtask::redis_cluster::ClusterNode>> {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        let admin = self.nodes[0].admin_password.clone();
        tokio::task::spawn_blocking(move || {
            ports
                .iter()
                .find_map(|&p| xtask::redis_cluster::cluster_nodes(p, &admin).ok())
                .context("no node answers CLUSTER NODES")
        })
        .await?
    }

    /// `CLUSTER NODES` as node `i` (index in [`Self::nodes`]) sees it.
    pub async fn cluster_nodes_from(
        &self,
        i: usize,
    ) -> anyhow::Result<Vec<xtask::redis_cluster::ClusterNode>> {
        let port = self.nodes[i].port;
        let admin = self.nodes[0].admin_password.clone();
        tokio::task::spawn_blocking(move || xtask::redis_cluster::cluster_nodes(port, &admin))
            .await?
    }

    /// The node (index in [`Self::nodes`]) that serves `slot` now, as [`Self::cluster_nodes`] says.
    pub async fn owner_of(&self, slot: u16) -> anyhow::Result<usize> {
        let view = self.cluster_nodes().await?;
        let owner = view
            .iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .with_context(|| format!("no primary serves slot {slot}"))?;
        self.nodes
            .iter()
            .position(|n| n.port == owner.port)
            .context("the owner is not one of ours")
    }

    /// `127.0.0.1:port,...` of every node.
    pub fn addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A free port whose cluster bus port (10000 above) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if let Some(bus) = port.checked_add(xtask::redis_cluster::BUS_PORT_OFFSET)
            && std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok()
        {
            return port;
        }
    }
}
