//! The Redis settings: where Redis is (one URL, or Sentinels that name the primary), how the origin
//! logs in, and its timeouts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::secret::{Secret, secret_from};

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL with the `origin` ACL user (`redis://origin:password@host:port`). Holds a password, so
    /// prefer --redis-url-file in production. Never logged.
    #[arg(long, env = "ASIDE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// File holding the Redis URL.
    #[arg(long, env = "ASIDE_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,

    /// Timeout for connecting to Redis, in ms.
    #[arg(long, env = "ASIDE_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 250)]
    pub redis_connect_timeout_ms: u64,

    /// Timeout for one Redis command (or pipeline), in ms.
    #[arg(long, env = "ASIDE_REDIS_COMMAND_TIMEOUT_MS", default_value_t = 250)]
    pub redis_command_timeout_ms: u64,

    /// After a Redis failure, skip Redis for this long (ms) before probing it again, so that a dead Redis
    /// costs requests nothing.
    #[arg(long, env = "ASIDE_REDIS_BACKOFF_MS", default_value_t = 1000)]
    pub redis_backoff_ms: u64,

    /// PEM file of the certificate authority (or authorities) that signed the Redis server's TLS
    /// certificate, for a private CA. Only with a `rediss://` URL; without it the system's roots are
    /// trusted (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`). When given, only it is trusted.
    #[arg(long, env = "ASIDE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM certificate (chain) the origin presents to Redis, for a Redis that requires client
    /// certificates (`tls-auth-clients yes`). Needs --redis-client-key-file and a `rediss://` URL.
    #[arg(long, env = "ASIDE_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,

    /// PEM private key of --redis-client-cert-file. A secret: mount it, mode 0600.
    #[arg(long, env = "ASIDE_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,

    /// Redis Sentinels (`host:port,host:port,...`) to ask for the primary, instead of ASIDE_REDIS_URL.
    /// The origin follows a failover (`+switch-master`, a `READONLY` reply, a lost connection).
    #[arg(long, env = "ASIDE_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The name the Sentinels monitor the primary under (`sentinel monitor <name> ...`).
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_MASTER", default_value = "aside")]
    pub redis_sentinel_master: String,

    /// The ACL user the origin logs in to the Sentinels as.
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_USERNAME")]
    pub redis_sentinel_username: Option<String>,

    /// Its password. Never logged; prefer --redis-sentinel-password-file.
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<Secret>,

    /// File holding the Sentinel password.
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_PASSWORD_FILE")]
    pub redis_sentinel_password_file: Option<PathBuf>,

    /// With Sentinels or a cluster: the ACL user the origin logs in to the Redis nodes as.
    #[arg(long, env = "ASIDE_REDIS_USERNAME", default_value = "origin")]
    pub redis_username: String,

    /// With Sentinels or a cluster: the password of --redis-username on the Redis nodes. Never logged; prefer
    /// --redis-password-file.
    #[arg(long, env = "ASIDE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// File holding the Redis password (with Sentinels or a cluster).
    #[arg(long, env = "ASIDE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// After each write-through, wait up to this many ms for one replica to acknowledge it (`WAIT 1
    /// <ms>`); 0 (the default) does not wait. It narrows what a failover can lose of the last
    /// write-throughs (change capture's replay repairs it anyway, see docs/operations.md) at the cost of a
    /// replica round trip per write, and the whole wait while no replica is connected.
    #[arg(long, env = "ASIDE_REDIS_WAIT_REPLICAS_MS", default_value_t = 0)]
    pub redis_wait_replicas_ms: u64,

    /// With Sentinels: the logical database on the Redis nodes (with a URL, its path says it).
    #[arg(long, env = "ASIDE_REDIS_DB", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub redis_db: i64,

    /// With Sentinels: how often the origin asks them for the primary even without a sign of a
    /// failover, in ms (a `+switch-master` event, a `READONLY` reply or a failure asks at once).
    #[arg(long, env = "ASIDE_REDIS_SENTINEL_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub redis_sentinel_poll_ms: u64,

    /// Redis Cluster: some of its nodes (`host:port,host:port,...`; any nodes, primaries or replicas)
    /// to learn the slot map from, instead of ASIDE_REDIS_URL or ASIDE_REDIS_SENTINELS. The origin logs
    /// in as --redis-username with --redis-password on every node, and follows `MOVED`/`ASK`
    /// redirections, resharding and failovers by itself (the `redis` crate's cluster client).
    #[arg(long, env = "ASIDE_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// Redis Cluster: how often the origin reads the slot map (`CLUSTER SLOTS`) to notice a failover
    /// (a replica promoted, which may lack its old primary's last writes: change capture replays the
    /// outbox), in ms. A failed call reads it at once.
    #[arg(long, env = "ASIDE_REDIS_CLUSTER_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub redis_cluster_poll_ms: u64,
}

/// Where the origin's Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis node (ASIDE_REDIS_URL).
    Url(Secret),
    /// The primary Sentinel names (ASIDE_REDIS_SENTINELS).
    Sentinel(SentinelTarget),
    /// A Redis Cluster (ASIDE_REDIS_CLUSTER_NODES).
    Cluster(ClusterTarget),
}

#[derive(Debug, Clone)]
pub struct ClusterTarget {
    /// `host:port` of each seed node.
    pub nodes: Vec<(String, u16)>,
    pub username: String,
    pub password: Option<Secret>,
    /// How often the slot map is read.
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct SentinelTarget {
    /// `host:port` of each Sentinel.
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<Secret>,
    pub username: String,
    pub password: Option<Secret>,
    pub db: i64,
    pub poll: Duration,
}

impl RedisArgs {
    /// The Redis URL, the Sentinels or the cluster's nodes: one of the three.
    pub fn target(&self) -> anyhow::Result<RedisTarget> {
        let url = secret_from(
            self.redis_url.as_ref(),
            self.redis_url_file.as_ref(),
            "the Redis URL",
        )?;
        let sentinels: Vec<&String> = self
            .redis_sentinels
            .iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        let cluster: Vec<&String> = self
            .redis_cluster_nodes
            .iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        if !cluster.is_empty() {
            anyhow::ensure!(
                url.is_none() && sentinels.is_empty(),
                "ASIDE_REDIS_CLUSTER_NODES is set with ASIDE_REDIS_URL or ASIDE_REDIS_SENTINELS: give one \
                 (a cluster's nodes name the others)"
            );
            anyhow::ensure!(
                self.redis_ca_file.is_none() && self.redis_client_cert_file.is_none(),
                "TLS to Redis (ASIDE_REDIS_CA_FILE, ASIDE_REDIS_CLIENT_CERT_FILE) is not supported \
                 with ASIDE_REDIS_CLUSTER_NODES yet"
            );
            anyhow::ensure!(
                self.redis_db == 0,
                "ASIDE_REDIS_DB is {}: Redis Cluster has only database 0",
                self.redis_db
            );
            let nodes = cluster
                .into_iter()
                .map(|s| parse_host_port(s.trim(), "ASIDE_REDIS_CLUSTER_NODES"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(RedisTarget::Cluster(ClusterTarget {
                nodes,
                username: self.redis_username.clone(),
                password: secret_from(
                    self.redis_password.as_ref(),
                    self.redis_password_file.as_ref(),
                    "the Redis password",
                )?,
                poll: Duration::from_millis(self.redis_cluster_poll_ms),
            }));
        }
        match (url, sentinels.is_empty()) {
            (Some(_), false) => anyhow::bail!(
                "both ASIDE_REDIS_URL and ASIDE_REDIS_SENTINELS are set: give one (the Sentinels find the primary)"
            ),
            (Some(url), true) => Ok(RedisTarget::Url(url)),
            (None, true) => anyhow::bail!(
                "no Redis configured: set ASIDE_REDIS_URL (or ASIDE_REDIS_URL_FILE), ASIDE_REDIS_SENTINELS \
                 or ASIDE_REDIS_CLUSTER_NODES"
            ),
            (None, false) => {
                anyhow::ensure!(
                    self.redis_ca_file.is_none() && self.redis_client_cert_file.is_none(),
                    "TLS to Redis (ASIDE_REDIS_CA_FILE, ASIDE_REDIS_CLIENT_CERT_FILE) is not supported \
                     with ASIDE_REDIS_SENTINELS yet: use ASIDE_REDIS_URL with rediss://"
                );
                anyhow::ensure!(
                    !self.redis_sentinel_master.is_empty(),
                    "ASIDE_REDIS_SENTINEL_MASTER is empty"
                );
                let sentinels = sentinels
                    .into_iter()
                    .map(|s| parse_host_port(s.trim(), "ASIDE_REDIS_SENTINELS"))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(RedisTarget::Sentinel(SentinelTarget {
                    sentinels,
                    master: self.redis_sentinel_master.clone(),
                    sentinel_username: self
                        .redis_sentinel_username
                        .clone()
                        .filter(|u| !u.is_empty()),
                    sentinel_password: secret_from(
                        self.redis_sentinel_password.as_ref(),
                        self.redis_sentinel_password_file.as_ref(),
                        "the Sentinel password",
                    )?,
                    username: self.redis_username.clone(),
                    password: secret_from(
                        self.redis_password.as_ref(),
                        self.redis_password_file.as_ref(),
                        "the Redis password",
                    )?,
                    db: self.redis_db,
                    poll: Duration::from_millis(self.redis_sentinel_poll_ms),
                }))
            }
        }
    }

    pub fn url(&self) -> anyhow::Result<Secret> {
        secret_from(
            self.redis_url.as_ref(),
            self.redis_url_file.as_ref(),
            "the Redis URL",
        )?
        .context("no Redis configured: set ASIDE_REDIS_URL (or ASIDE_REDIS_URL_FILE)")
    }
}

/// `host:port` (a Sentinel's or a cluster node's address, from `setting`); the error quotes it (it holds
/// no secret).
fn parse_host_port(s: &str, setting: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{setting}: {s:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("{setting}: {s:?} has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "{setting}: {s:?} has no host");
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_args(extra: &[&str]) -> RedisArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            redis: RedisArgs,
        }
        let mut argv = vec!["test"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().redis
    }

    #[test]
    fn sentinels_or_a_url_but_not_both() {
        let target = redis_args(&[
            "--redis-sentinels",
            "s1:26379,[::1]:26380",
            "--redis-sentinel-password",
            "sentinel-secret-5",
            "--redis-password",
            "node-secret-6",
            "--redis-db",
            "3",
        ])
        .target()
        .unwrap();
        let RedisTarget::Sentinel(s) = target else {
            panic!("sentinel")
        };
        assert_eq!(
            s.sentinels,
            vec![("s1".to_string(), 26379), ("::1".to_string(), 26380)]
        );
        assert_eq!(
            (s.master.as_str(), s.username.as_str(), s.db),
            ("aside", "origin", 3)
        );
        assert_eq!(s.password.unwrap().expose(), "node-secret-6");
        let printed = format!("{:?}", redis_args(&["--redis-password", "node-secret-6"]));
        assert!(!printed.contains("node-secret-6"), "{printed}");

        let both = redis_args(&["--redis-url", "redis://h:1", "--redis-sentinels", "s:2"]);
        assert!(format!("{:#}", both.target().unwrap_err()).contains("both"));
        let none = redis_args(&[]);
        assert!(format!("{:#}", none.target().unwrap_err()).contains("no Redis configured"));
        for bad in ["nohost", "h:0", "h:x", ":26379"] {
            let e = redis_args(&["--redis-sentinels", bad])
                .target()
                .unwrap_err();
            assert!(
                format!("{e:#}").contains("ASIDE_REDIS_SENTINELS"),
                "{bad}: {e:#}"
            );
        }
        let url = redis_args(&["--redis-url", "redis://h:1"])
            .target()
            .unwrap();
        assert!(matches!(url, RedisTarget::Url(_)));
    }

    #[test]
    fn cluster_nodes_alone_with_database_0() {
        let target = redis_args(&[
            "--redis-cluster-nodes",
            "10.0.0.1:7000,[::1]:7001",
            "--redis-password",
            "node-secret-7",
        ])
        .target()
        .unwrap();
        let RedisTarget::Cluster(c) = target else {
            panic!("cluster")
        };
        assert_eq!(
            c.nodes,
            vec![("10.0.0.1".to_string(), 7000), ("::1".to_string(), 7001)]
        );
        assert_eq!(c.username, "origin");
        assert_eq!(c.password.unwrap().expose(), "node-secret-7");
        assert_eq!(c.poll, Duration::from_millis(1000));
        for (extra, says) in [
            (&["--redis-url", "redis://h:1"][..], "give one"),
            (&["--redis-sentinels", "s:2"][..], "give one"),
            (&["--redis-db", "2"][..], "only database 0"),
            (&["--redis-ca-file", "/ca.pem"][..], "TLS"),
        ] {
            let mut argv = vec!["--redis-cluster-nodes", "h:7000"];
            argv.extend_from_slice(extra);
            let e = redis_args(&argv).target().unwrap_err();
            assert!(format!("{e:#}").contains(says), "{extra:?}: {e:#}");
        }
        for bad in ["nohost", "h:0", ":7000"] {
            let e = redis_args(&["--redis-cluster-nodes", bad])
                .target()
                .unwrap_err();
            assert!(
                format!("{e:#}").contains("ASIDE_REDIS_CLUSTER_NODES"),
                "{bad}: {e:#}"
            );
        }
    }
}
