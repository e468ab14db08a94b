//! A Redis Cluster as `deploy/` describes it: every node runs `redis.conf`, `replica.conf` and
//! `cluster.conf`, with the same ACL users (`users.acl.template`, with its `replica` user: replicas log
//! in to their primary as it), and the cluster is formed with `redis-cli --cluster create`. The test
//! harness and `cargo xtask up --redis-cluster` ([`start_local`]) start their nodes from here, so they
//! run the committed files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::launch::OriginSettings;
use crate::local::HaPasswords;
use crate::redis_server::{RedisNode, Replication};
use crate::stack::{Secrets, Services};

/// Redis Cluster's slot count.
pub const SLOTS: u16 = 16384;
/// The cluster bus listens this far above a node's client port (Redis's default `cluster-port 0`).
pub const BUS_PORT_OFFSET: u16 = 10000;

/// The settings of a cluster node: `deploy/redis.conf`, `deploy/replica.conf` (see
/// [`crate::redis_server::render_node_config`]) and `deploy/cluster.conf` without its `include` line.
pub fn render_cluster_config(
    redis_conf: &str,
    replica_conf: &str,
    cluster_conf: &str,
    no_active_defrag: bool,
) -> String {
    let node = crate::redis_server::render_node_config(redis_conf, replica_conf, no_active_defrag);
    with_cluster_conf(node, cluster_conf)
}

/// `node_conf` followed by `cluster_conf` without its `include` line (the file is inlined instead).
fn with_cluster_conf(mut node_conf: String, cluster_conf: &str) -> String {
    node_conf.push_str("\n# ---- deploy/cluster.conf ----\n");
    for line in cluster_conf.lines() {
        if line.trim_start().starts_with("include ") {
            continue;
        }
        node_conf.push_str(line);
        node_conf.push('\n');
    }
    node_conf
}

/// The `redis-server` command of a cluster node: [`RedisNode::command`] (which must be a replicated
/// node: `node.replication` set, `replica_of` none: the cluster assigns roles), with
/// `deploy/cluster.conf` added to the node's `redis.conf`. Its `nodes.conf` lives in the node's folder.
pub fn node_command(node: &RedisNode<'_>, root: &Path) -> anyhow::Result<Command> {
    anyhow::ensure!(
        node.replication.is_some_and(|r| r.replica_of.is_none()),
        "a cluster node is a replicated node without a fixed primary"
    );
    let command = node.command(root)?;
    let path = node.dir.join("redis.conf");
    let config = with_cluster_conf(
        std::fs::read_to_string(&path)?,
        &std::fs::read_to_string(root.join("deploy/cluster.conf"))?,
    );
    crate::local::write_private(&path, &config)?;
    Ok(command)
}

/// `redis-cli --cluster create` of `ports` (on 127.0.0.1) with `replicas` replicas per primary, logged
/// in as `admin` (the password in `REDISCLI_AUTH`, not on the command line). Primaries are the first
/// `ports.len() / (replicas + 1)` ports, in order.
pub fn create_command(ports: &[u16], admin_password: &str, replicas: usize) -> Command {
    let mut command = cluster_cli(admin_password, "create");
    command
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .stdin(Stdio::null());
    command
}

/// `redis-cli --cluster reshard` through the node on `port` (127.0.0.1), moving `slots` slots from the
/// primary `from` to the primary `to` (node ids), logged in as `admin` like [`create_command`]; stdin
/// closed, no question asked.
pub fn reshard_command(
    port: u16,
    admin_password: &str,
    (from, to): (&str, &str),
    slots: u32,
) -> Command {
    let mut command = cluster_cli(admin_password, "reshard");
    command
        .arg(format!("127.0.0.1:{port}"))
        .args(["--cluster-from", from, "--cluster-to", to])
        .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
        .stdin(Stdio::null());
    command
}

/// `redis-cli --user admin --cluster <subcommand>`, the password in `REDISCLI_AUTH` (never on the
/// command line); the caller adds the subcommand's arguments.
pub fn cluster_cli(admin_password: &str, subcommand: &str) -> Command {
    let mut command = Command::new("redis-cli");
    command.env("REDISCLI_AUTH", admin_password).args([
        "--user",
        "admin",
        "--no-auth-warning",
        "--cluster",
        subcommand,
    ]);
    command
}

/// One line of `CLUSTER NODES`: a node, its role and (a primary) its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    /// The client port.
    pub port: u16,
    pub primary: bool,
    /// `fail`, `fail?` (suspected) or `handshake`/`noaddr` among the flags.
    pub failed: bool,
    /// The id of the primary a replica follows.
    pub primary_id: Option<String>,
    /// Slot ranges, inclusive (a primary's; migrating/importing markers left out).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// How many slots the node serves.
    pub fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
            .sum()
    }
}

/// Parses `CLUSTER NODES`. Lines it cannot read are an error.
pub fn parse_cluster_nodes(text: &str) -> anyhow::Result<Vec<ClusterNode>> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        anyhow::ensure!(words.len() >= 8, "a short CLUSTER NODES line: {line:?}");
        // ip:port@cport[,hostname]
        let address = words[1].split('@').next().unwrap_or_default();
        let port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .with_context(|| format!("no port in {line:?}"))?;
        let flags: Vec<&str> = words[2].split(',').collect();
        let primary = flags.contains(&"master");
        let failed = flags
            .iter()
            .any(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"));
        let primary_id = (words[3] != "-").then(|| words[3].to_string());
        let mut slots = Vec::new();
        for range in &words[8..] {
            if range.starts_with('[') {
                continue;
            }
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a, b),
                None => (*range, *range),
            };
            let a: u16 = a.parse().with_context(|| format!("slot range {range:?}"))?;
            let b: u16 = b.parse().with_context(|| format!("slot range {range:?}"))?;
            anyhow::ensure!(a <= b && b < SLOTS, "slot range {range:?}");
            slots.push((a, b));
        }
        nodes.push(ClusterNode {
            id: words[0].to_string(),
            port,
            primary,
            failed,
            primary_id,
            slots,
        });
    }
    Ok(nodes)
}

/// A blocking connection to `port` on 127.0.0.1 as `admin`, with a 2 s timeout.
fn admin_connection(port: u16, admin_password: &str) -> anyhow::Result<redis::Connection> {
    use redis::IntoConnectionInfo as _;
    let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), port)
        .into_connection_info()?
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username("admin")
                .set_password(admin_password),
        );
    let timeout = Duration::from_secs(2);
    let connection = redis::Client::open(info)?.get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    Ok(connection)
}

/// `CLUSTER NODES` as node `port` sees the cluster.
pub fn cluster_nodes(port: u16, admin_password: &str) -> anyhow::Result<Vec<ClusterNode>> {
    let mut c = admin_connection(port, admin_password)?;
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c)?;
    parse_cluster_nodes(&text)
}

/// A field of `CLUSTER INFO` on `port` (e.g. `cluster_state`).
pub fn cluster_info(port: u16, admin_password: &str, field: &str) -> anyhow::Result<String> {
    let mut c = admin_connection(port, admin_password)?;
    let text: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c)?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {field} in CLUSTER INFO"))
}

/// Whether every node in `ports` says `cluster_state:ok` with every slot covered, sees `primaries`
/// primaries that cover all slots and every other node as a replica, and, a replica, has its link to
/// its primary up.
pub fn is_ready(ports: &[u16], admin_password: &str, primaries: usize) -> bool {
    let ready = || -> anyhow::Result<bool> {
        for &port in ports {
            if cluster_info(port, admin_password, "cluster_state")? != "ok"
                || cluster_info(port, admin_password, "cluster_slots_ok")? != SLOTS.to_string()
            {
                return Ok(false);
            }
            let nodes = cluster_nodes(port, admin_password)?;
            let serving: Vec<&ClusterNode> = nodes
                .iter()
                .filter(|n| n.primary && !n.failed && n.slot_count() > 0)
                .collect();
            // Every node in its place: `primaries` primaries serving every slot, the others replicas
            // (a node told to replicate is a slot-less primary until it has handled that).
            let replicas = nodes.iter().filter(|n| !n.primary && !n.failed).count();
            if nodes.len() != ports.len()
                || replicas != ports.len() - primaries
                || serving.len() != primaries
                || serving.iter().map(|n| n.slot_count()).sum::<u32>() != u32::from(SLOTS)
            {
                return Ok(false);
            }
            let mut c = admin_connection(port, admin_password)?;
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c)?;
            if info.contains("role:slave") && !info.contains("master_link_status:up") {
                return Ok(false);
            }
        }
        Ok(true)
    };
    ready().unwrap_or(false)
}

/// Waits until [`is_ready`]; an error naming the state after `timeout`.
pub fn wait_ready(
    ports: &[u16],
    admin_password: &str,
    primaries: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if is_ready(ports, admin_password, primaries) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the Redis Cluster on ports {ports:?} is not ready after {timeout:?}:\n{}",
        describe(ports, admin_password)
    )
}

/// The cluster of `cargo xtask up --redis-cluster`: three primaries and three replicas on consecutive
/// ports.
pub struct LocalCluster {
    pub ports: Vec<u16>,
    admin_password: String,
}

/// Primaries of the local cluster, each with one replica.
pub const LOCAL_PRIMARIES: usize = 3;

/// Starts six nodes on `first_port` and the next five as services (data under
/// `<state>/redis-cluster/node-<port>/`, with its `nodes.conf`), forms the cluster with `redis-cli
/// --cluster create` on the first start (a later `up` finds it formed from the nodes' `nodes.conf`),
/// and waits until every slot is served and every replica in sync.
pub fn start_local(
    root: &Path,
    first_port: u16,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<LocalCluster> {
    let replica_password = crate::redis_ha::secret(&state.join("secrets"), "redis-replica")?;
    // Sentinel is not part of a cluster: a password no one is given.
    let sentinel_password = crate::redis_ha::secret(&state.join("secrets"), "redis-sentinel")?;
    let passwords = HaPasswords {
        replica: &replica_password,
        sentinel: &sentinel_password,
    };
    let count = LOCAL_PRIMARIES * 2;
    let ports: Vec<u16> = (0..count)
        .map(|i| {
            first_port
                .checked_add(i as u16)
                .filter(|p| p.checked_add(BUS_PORT_OFFSET).is_some())
                .context("--redis-port is too high for six cluster nodes and their bus ports")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut formed = false;
    for (i, &port) in ports.iter().enumerate() {
        let dir = state.join("redis-cluster").join(format!("node-{port}"));
        std::fs::create_dir_all(&dir)?;
        formed |= dir.join("nodes.conf").exists();
        let node = RedisNode {
            dir: &dir,
            port,
            passwords: secrets.redis_passwords(),
            replication: Some(Replication {
                passwords,
                replica_of: None,
            }),
        };
        let name: &'static str = Box::leak(format!("redis-{}", i + 1).into_boxed_str());
        crate::stack::start_node_with(name, port, || node_command(&node, root), logs, services)?;
    }
    let known = cluster_info(ports[0], &secrets.redis_admin, "cluster_known_nodes")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    if !formed || known < count {
        let output = create_command(&ports, &secrets.redis_admin, 1)
            .output()
            .context("run redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    wait_ready(
        &ports,
        &secrets.redis_admin,
        LOCAL_PRIMARIES,
        Duration::from_secs(60),
    )?;
    Ok(LocalCluster {
        ports,
        admin_password: secrets.redis_admin.clone(),
    })
}

impl LocalCluster {
    /// The origin's settings for this cluster: its nodes instead of ASIDE_REDIS_URL.
    pub fn origin_settings(&self, origin: OriginSettings, origin_password: &str) -> OriginSettings {
        origin
            .set("ASIDE_REDIS_CLUSTER_NODES", self.seed_nodes())
            .set("ASIDE_REDIS_USERNAME", "origin")
            .set("ASIDE_REDIS_PASSWORD", origin_password)
    }

    /// `127.0.0.1:port,...` of every node.
    pub fn seed_nodes(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The edge's `redis_cluster_hosts`: every node's port on 127.0.0.1 (Spin's range excludes its end).
    pub fn allowed_hosts(&self) -> String {
        let low = self.ports.iter().min().copied().unwrap_or_default();
        let high = self.ports.iter().max().copied().unwrap_or_default();
        format!("127.0.0.1:{low}..{}", u32::from(high) + 1)
    }

    /// One line per node: its port, role and slots (see [`describe`]).
    pub fn describe(&self) -> String {
        describe(&self.ports, &self.admin_password)
    }
}

/// One line per node: its port, role, and slots (a primary) or primary (a replica), as the first node
/// that answers sees the cluster.
pub fn describe(ports: &[u16], admin_password: &str) -> String {
    let nodes = ports
        .iter()
        .find_map(|&p| cluster_nodes(p, admin_password).ok());
    let Some(mut nodes) = nodes else {
        return "  (no node answers CLUSTER NODES)".into();
    };
    nodes.sort_by_key(|n| n.port);
    let port_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| "?".to_string(), |n| n.port.to_string())
    };
    let mut lines = Vec::new();
    for n in &nodes {
        let state = if n.failed { "  FAILED" } else { "" };
        let what = if n.primary {
            let ranges: Vec<String> = n
                .slots
                .iter()
                .map(|(a, b)| match a == b {
                    true => a.to_string(),
                    false => format!("{a}-{b}"),
                })
                .collect();
            format!(
                "primary  slots {} ({} slots)",
                if ranges.is_empty() {
                    "none".to_string()
                } else {
                    ranges.join(",")
                },
                n.slot_count()
            )
        } else {
            format!(
                "replica  of 127.0.0.1:{}",
                n.primary_id.as_deref().map_or("?".into(), port_of)
            )
        };
        lines.push(format!(
            "  redis-server 127.0.0.1:{}  {what}{state}",
            n.port
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read_with_roles_and_slots() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,h1 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000
";
        let nodes = parse_cluster_nodes(text).unwrap();
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].port, 30004);
        assert!(!nodes[0].primary);
        assert_eq!(
            nodes[0].primary_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert!(nodes[2].failed && nodes[2].primary);
        assert_eq!(
            nodes[2].slots,
            vec![(10923, 16383)],
            "the migration marker is skipped"
        );
        assert_eq!(nodes[3].slots, vec![(0, 5460), (7000, 7000)]);
        assert_eq!(nodes[3].slot_count(), 5462);
        assert!(parse_cluster_nodes("abc 127.0.0.1:1@2 master").is_err());
        assert!(
            parse_cluster_nodes("a 127.0.0.1:1@2 master - 0 0 1 connected 9-3").is_err(),
            "a backwards range"
        );
    }

    #[test]
    fn a_cluster_node_runs_redis_conf_replica_conf_then_cluster_conf() {
        let read = |name: &str| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy")
                    .join(name),
            )
            .unwrap()
        };
        let conf = render_cluster_config(
            &read("redis.conf"),
            &read("replica.conf"),
            &read("cluster.conf"),
            false,
        );
        assert!(!conf.lines().any(|l| l.starts_with("include ")));
        assert!(conf.contains("\ncluster-enabled yes\n"));
        assert!(conf.contains("\nmasteruser replica\n"));
        assert!(conf.contains("\ncluster-require-full-coverage no\n"));
        assert!(conf.find("maxmemory ").unwrap() < conf.find("cluster-enabled").unwrap());
    }

    #[test]
    fn the_create_command_names_every_node_and_keeps_the_password_off_the_command_line() {
        let command = create_command(&[7000, 7001, 7002, 7003, 7004, 7005], "pw-1", 1);
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a.contains("pw-1")), "{args:?}");
        assert!(args.join(" ").contains("127.0.0.1:7000 127.0.0.1:7001"));
        assert!(
            args.join(" ")
                .ends_with("--cluster-replicas 1 --cluster-yes")
        );
        let auth = command
            .get_envs()
            .find(|(k, _)| *k == "REDISCLI_AUTH")
            .and_then(|(_, v)| v);
        assert_eq!(
            auth.map(|v| v.to_string_lossy().into_owned()),
            Some("pw-1".into())
        );
    }
}
