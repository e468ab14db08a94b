//! Which Redis node the origin writes to: the one of `ASIDE_REDIS_URL`, or the primary Redis Sentinel
//! names (`ASIDE_REDIS_SENTINELS`).
//!
//! With Sentinels, a background task ([`follow`]) asks them for the primary through the `redis` crate's
//! Sentinel support (`SENTINEL MASTERS`, then `ROLE` on the node to confirm it is a primary), and
//! switches the origin's connection when the answer changes. It asks
//!
//! * at start-up, until some Sentinel answers;
//! * at once when a Sentinel publishes `+switch-master` (a failover finished);
//! * at once when a Redis call fails as an outage or with `READONLY` (the node was demoted), see
//!   [`Topology::suspect`];
//! * and every `ASIDE_REDIS_SENTINEL_POLL_MS` regardless, in case an event was missed.
//!
//! Each switch to a new primary (not the first one found) bumps the [`Topology::epoch`], which change
//! capture watches to replay the outbox onto the new primary: with asynchronous replication the
//! promoted replica may lack the old primary's last writes. So does Redis found holding an older state
//! than before ([`Topology::lost_writes`], with a fixed URL too: a restart that lost data).
//!
//! On a Redis Cluster (`ASIDE_REDIS_CLUSTER_NODES`) the connection is the `redis` crate's cluster
//! client, which routes each command to the node owning its key's slot and follows `MOVED`/`ASK` by
//! itself. A task ([`follow_cluster`]) reads the slot map (`CLUSTER SLOTS`) every
//! `ASIDE_REDIS_CLUSTER_POLL_MS` (at once after a failed call): when a slot's new owner is a node that
//! was its replica, a failover happened, and the epoch is bumped as with Sentinel. A slot moved to
//! another primary (resharding) is not a failover: `MIGRATE` loses nothing.
//!
//! The compare-and-set script is loaded per node: `redis::Script` sends `EVALSHA`, and on a `NOSCRIPT`
//! (a new primary that never saw it) `SCRIPT LOAD`s it and sends `EVALSHA` again, so nothing needs
//! reloading by hand after a switch.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo};
use tokio::sync::{Notify, watch};

use super::settings::{ClusterTarget, SentinelTarget};

/// Shortest time between two questions to the Sentinels, however many failures ask for one.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for the Sentinels' answer (including the `ROLE` check on the primary).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before subscribing again after the `+switch-master` subscription broke.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// Failed slot-map reads in a row after which the cluster's nodes are asked directly, each on a
/// connection of its own (see [`follow_cluster`]).
const CLUSTER_STREAK_BEFORE_PROBE: u32 = 2;
/// Shortest time between two replacements of the cluster client.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_secs(2);

/// The connection to the node the origin writes to, and what tells change capture it changed.
pub struct Topology {
    current: RwLock<Option<Primary>>,
    /// Primary changes followed since start (0 until the first failover).
    epoch: watch::Sender<u64>,
    /// Woken when a call suggests the primary moved (only with Sentinels).
    suspect: Arc<Notify>,
    following: bool,
    /// The cluster's slot map as last read (empty unless on a cluster, or before the first read).
    slots: RwLock<Vec<SlotRange>>,
    /// What a new cluster connection is made from, when the current one stops answering.
    cluster: Option<ClusterSetup>,
}

/// The cluster client and its settings, kept to replace a connection that stopped answering.
struct ClusterSetup {
    client: redis::cluster::ClusterClient,
    config: redis::cluster::ClusterConfig,
    target: ClusterTarget,
    connect_timeout: Duration,
}

impl ClusterSetup {
    fn connect(&self) -> ClusterConnection {
        self.client
            .get_pending_async_connection_with_config(self.config.clone())
    }
}

struct Primary {
    address: String,
    conn: RedisConn,
}

/// The origin's connection: to one node (a URL, or the primary Sentinel names), or to a cluster.
/// Either runs any command; the cluster one routes it by its keys.
#[derive(Clone)]
pub enum RedisConn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// The cluster connection, if this is one.
    pub fn cluster(&self) -> Option<&ClusterConnection> {
        match self {
            RedisConn::Cluster(c) => Some(c),
            RedisConn::Node(_) => None,
        }
    }
}

impl RedisConn {
    /// `cmd` on the cluster node at `address` (`host:port`); on one node, on that node.
    pub async fn on_node<T: redis::FromRedisValue>(
        &mut self,
        cmd: Cmd,
        address: Option<&str>,
    ) -> redis::RedisResult<T> {
        match (self, address) {
            (RedisConn::Cluster(c), Some(address)) => {
                let value = c.route_command(cmd, by_address(address)?).await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }

    /// `pipe` on the cluster node at `address`; on one node, on that node.
    pub async fn pipeline_on_node<T: redis::FromRedisValue>(
        &mut self,
        pipe: Pipeline,
        address: Option<&str>,
    ) -> redis::RedisResult<T> {
        match (self, address) {
            (RedisConn::Cluster(c), Some(address)) => {
                let RoutingInfo::SingleNode(route) = by_address(address)? else {
                    unreachable!("one node")
                };
                let count = pipe.len();
                let values = c.route_pipeline(pipe, 0, count, route).await?;
                redis::from_redis_value(Value::Array(values)).map_err(Into::into)
            }
            (conn, _) => pipe.query_async(conn).await,
        }
    }
}

/// The route to the node at `host:port`.
fn by_address(address: &str) -> redis::RedisResult<RoutingInfo> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a host:port cluster node address",
            ))
        })?;
    Ok(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host,
        port,
    }))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// One range of slots in the cluster's map, with its primary and replicas (`CLUSTER SLOTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    /// `host:port` and node id of the primary.
    pub primary: ClusterNodeRef,
    pub replicas: Vec<ClusterNodeRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeRef {
    pub host: String,
    pub port: u16,
    pub id: String,
}

impl ClusterNodeRef {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Topology {
    /// A fixed node (`ASIDE_REDIS_URL`).
    pub fn fixed(conn: ConnectionManager) -> Self {
        Self {
            current: RwLock::new(Some(Primary {
                address: String::new(),
                conn: RedisConn::Node(conn),
            })),
            epoch: watch::Sender::new(0),
            suspect: Arc::new(Notify::new()),
            following: false,
            slots: RwLock::new(Vec::new()),
            cluster: None,
        }
    }

    /// A Redis Cluster through the `redis` crate's cluster client, its slot map followed by a task on
    /// the current Tokio runtime until the topology is dropped. Connects lazily: the origin starts
    /// while the cluster is down.
    pub fn cluster(
        target: ClusterTarget,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("a Redis Cluster connection needs a Tokio runtime"))?;
        let nodes: Vec<ConnectionInfo> = target
            .nodes
            .iter()
            .map(|(host, port)| {
                ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .map(|info| info.set_tcp_settings(super::connect::tcp_settings()))
            })
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("ASIDE_REDIS_CLUSTER_NODES holds an invalid address"))?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .username(&target.username)
            .connection_timeout(connect_timeout)
            .response_timeout(command_timeout)
            .tcp_settings(super::connect::tcp_settings())
            // A redirection (MOVED, ASK, TRYAGAIN during a migration) is followed within the
            // command's budget; the origin's own timeout bounds the whole call.
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(100);
        if let Some(password) = &target.password {
            builder = builder.password(password.expose());
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the Redis Cluster settings cannot be used: {e}"))?;
        let setup = ClusterSetup {
            client,
            config: redis::cluster::ClusterConfig::new()
                .set_connection_timeout(connect_timeout)
                .set_response_timeout(command_timeout),
            target: target.clone(),
            connect_timeout,
        };
        let conn = setup.connect();
        let topology = Arc::new(Self {
            current: RwLock::new(Some(Primary {
                address: "redis cluster".to_string(),
                conn: RedisConn::Cluster(conn),
            })),
            epoch: watch::Sender::new(0),
            suspect: Arc::new(Notify::new()),
            following: false,
            slots: RwLock::new(Vec::new()),
            cluster: Some(setup),
        });
        crate::metrics::redis_failovers(0);
        crate::metrics::redis_cluster_client_rebuilds(0);
        runtime.spawn(follow_cluster(Arc::downgrade(&topology), target.poll));
        Ok(topology)
    }

    /// Whether the origin is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.connection().is_some_and(|c| c.cluster().is_some())
    }

    /// The cluster's slot map as last read (empty when not on a cluster or not read yet).
    pub fn slot_map(&self) -> Vec<SlotRange> {
        self.slots.read().expect("not poisoned").clone()
    }

    /// The cluster's primaries (`host:port`, sorted, each once) as the slot map last read says.
    pub fn cluster_primaries(&self) -> Vec<String> {
        let mut primaries: Vec<String> = self
            .slots
            .read()
            .expect("not poisoned")
            .iter()
            .map(|r| r.primary.address())
            .collect();
        primaries.sort();
        primaries.dedup();
        primaries
    }

    /// Takes a newly read slot map; bumps the epoch when a slot's new owner was its replica (a
    /// failover). Returns whether it did.
    fn use_slot_map(&self, new: Vec<SlotRange>) -> bool {
        let mut current = self.slots.write().expect("not poisoned");
        let promoted = failed_over(&current, &new);
        let changed = *current != new;
        *current = new;
        drop(current);
        if !promoted.is_empty() {
            self.epoch.send_modify(|e| *e += 1);
            crate::metrics::redis_failovers(1);
            tracing::warn!(
                promoted = %promoted.join(","),
                "a Redis Cluster replica was promoted (a failover); change capture replays the outbox"
            );
            return true;
        }
        if changed {
            tracing::info!("the Redis Cluster's slot map changed");
        }
        false
    }

    /// Replaces the cluster connection by a new one from the same client (it connects lazily, from the
    /// seed nodes). For a connection that stopped answering while the cluster answers others.
    fn rebuild_cluster_connection(&self) {
        let Some(setup) = &self.cluster else { return };
        let conn = setup.connect();
        if let Some(current) = self.current.write().expect("not poisoned").as_mut() {
            current.conn = RedisConn::Cluster(conn);
        }
        crate::metrics::redis_cluster_client_rebuilds(1);
    }

    /// The primary named by the Sentinels of `target`, followed by a task on the current Tokio runtime
    /// until the topology is dropped. No primary is known until the first answer.
    pub fn follow_sentinels(
        target: SentinelTarget,
        config: ConnectionManagerConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("following Redis Sentinel needs a Tokio runtime"))?;
        let sentinel = Sentinel::build(sentinel_nodes(&target)?)
            .map_err(|_| anyhow::anyhow!("the Redis Sentinel addresses are not valid"))?;
        let topology = Arc::new(Self {
            current: RwLock::new(None),
            epoch: watch::Sender::new(0),
            suspect: Arc::new(Notify::new()),
            following: true,
            slots: RwLock::new(Vec::new()),
            cluster: None,
        });
        crate::metrics::redis_primary_reachable(false);
        crate::metrics::redis_failovers(0);
        runtime.spawn(follow(
            Arc::downgrade(&topology),
            sentinel,
            target.clone(),
            config,
        ));
        for node in sentinel_nodes(&target)? {
            runtime.spawn(watch_switch_master(
                Arc::downgrade(&topology),
                node,
                target.master.clone(),
            ));
        }
        Ok(topology)
    }

    /// The connection to the current primary, if one is known.
    pub fn connection(&self) -> Option<RedisConn> {
        self.current
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|p| p.conn.clone())
    }

    /// `host:port` of the current primary (empty with a fixed URL, or before one is known; `redis
    /// cluster` on a cluster).
    pub fn primary_address(&self) -> String {
        self.current
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|p| p.address.clone())
            .unwrap_or_default()
    }

    /// Primary changes followed: a receiver sees each new epoch.
    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Redis holds an older state than it did: the feed's numbers went back (a restart without
    /// persistence or from an older snapshot, or a failover to a replica without the latest writes; see
    /// [`crate::cache::feed::run_heartbeat`]). Bumps the epoch, so change capture replays the outbox
    /// over what Redis holds, as after a failover: the writes Redis lost are written again.
    pub fn lost_writes(&self) {
        self.epoch.send_modify(|e| *e += 1);
        crate::metrics::redis_went_back();
    }

    /// Whether the primary comes from Sentinels.
    pub fn is_following(&self) -> bool {
        self.following
    }

    /// A call failed in a way that a failover explains: ask the Sentinels (or the cluster) now.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// Switches to `client`'s node if it is not the current primary. Returns whether it switched.
    fn use_primary(&self, client: redis::Client, config: &ConnectionManagerConfig) -> bool {
        let address = address_of(client.get_connection_info());
        let mut current = self.current.write().expect("not poisoned");
        if current.as_ref().is_some_and(|p| p.address == address) {
            return false;
        }
        let conn = match ConnectionManager::new_lazy_with_config(client, config.clone()) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prepare a connection to the Redis primary");
                return false;
            }
        };
        let previous = current.replace(Primary {
            address: address.clone(),
            conn: RedisConn::Node(conn),
        });
        drop(current);
        crate::metrics::redis_primary(&address, true);
        match previous {
            Some(old) => {
                crate::metrics::redis_primary(&old.address, false);
                self.epoch.send_modify(|e| *e += 1);
                crate::metrics::redis_failovers(1);
                tracing::warn!(
                    from = %old.address,
                    to = %address,
                    "the Redis primary moved; following it"
                );
            }
            None => tracing::info!(primary = %address, "found the Redis primary through Sentinel"),
        }
        true
    }
}

/// `host:port` of a node.
fn address_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other:?}"),
    }
}

/// The Sentinels' connection details, with the origin's Sentinel credentials.
fn sentinel_nodes(target: &SentinelTarget) -> anyhow::Result<Vec<ConnectionInfo>> {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(user) = &target.sentinel_username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &target.sentinel_password {
        settings = settings.set_password(password.expose());
    }
    target
        .sentinels
        .iter()
        .map(|(host, port)| {
            let info = ConnectionAddr::Tcp(host.clone(), *port)
                .into_connection_info()
                .map_err(|_| anyhow::anyhow!("the Sentinel address {host}:{port} is not valid"))?;
            Ok(info
                .set_redis_settings(settings.clone())
                .set_tcp_settings(super::connect::tcp_settings()))
        })
        .collect()
}

/// The credentials the origin logs in to the Redis nodes with.
fn node_connection(target: &SentinelTarget) -> SentinelNodeConnectionInfo {
    let mut settings = RedisConnectionInfo::default()
        .set_skip_set_lib_name()
        .set_db(target.db)
        .set_username(&target.username);
    if let Some(password) = &target.password {
        settings = settings.set_password(password.expose());
    }
    SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(settings)
        .set_tcp_settings(super::connect::tcp_settings())
}

/// Asks the Sentinels for the primary whenever [`Topology::suspect`] or the poll interval says so,
/// until the topology is dropped.
async fn follow(
    topology: Weak<Topology>,
    mut sentinel: Sentinel,
    target: SentinelTarget,
    config: ConnectionManagerConfig,
) {
    let node = node_connection(&target);
    let Some(suspect) = topology.upgrade().map(|t| Arc::clone(&t.suspect)) else {
        return;
    };
    let mut reported_failure = false;
    loop {
        let started = Instant::now();
        let answer = tokio::time::timeout(
            CHECK_TIMEOUT,
            sentinel.async_master_for(&target.master, Some(&node)),
        )
        .await;
        let Some(topology_now) = topology.upgrade() else {
            return;
        };
        match answer {
            Ok(Ok(client)) => {
                topology_now.use_primary(client, &config);
                crate::metrics::redis_primary_reachable(true);
                reported_failure = false;
            }
            outcome => {
                crate::metrics::redis_primary_reachable(false);
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_string(),
                };
                // Once per outage at warn level; repeated failures are debug.
                if !reported_failure {
                    tracing::warn!(error = %why, master = %target.master, "the Sentinels name no reachable Redis primary");
                    reported_failure = true;
                } else {
                    tracing::debug!(error = %why, "still no reachable Redis primary");
                }
            }
        }
        drop(topology_now);
        let poll = if reported_failure {
            MIN_CHECK_INTERVAL.max(target.poll / 4)
        } else {
            target.poll
        };
        let _ = tokio::time::timeout(poll, suspect.notified()).await;
        let since = started.elapsed();
        if since < MIN_CHECK_INTERVAL {
            tokio::time::sleep(MIN_CHECK_INTERVAL - since).await;
        }
    }
}

/// Subscribes to one Sentinel's `+switch-master` channel and wakes [`follow`] on each event.
async fn watch_switch_master(topology: Weak<Topology>, node: ConnectionInfo, master: String) {
    loop {
        let Some(suspect) = topology.upgrade().map(|t| Arc::clone(&t.suspect)) else {
            return;
        };
        let subscribed = async {
            let client = redis::Client::open(node.clone())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                // `<master name> <old ip> <old port> <new ip> <new port>`
                if payload.split(' ').next() == Some(master.as_str()) {
                    tracing::info!(event = %payload, "Sentinel: +switch-master");
                    suspect.notify_one();
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        if let Err(e) = subscribed.await {
            tracing::debug!(error = %e, "the +switch-master subscription to a Sentinel failed");
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// The slots whose new owner was, in `old`, a replica of their owner: the promoted nodes' `host:port`.
fn failed_over(old: &[SlotRange], new: &[SlotRange]) -> Vec<String> {
    let mut promoted = Vec::new();
    for range in new {
        for old_range in old {
            let overlaps = old_range.start <= range.end && range.start <= old_range.end;
            if overlaps
                && old_range.primary.id != range.primary.id
                && old_range.replicas.iter().any(|r| r.id == range.primary.id)
            {
                let address = range.primary.address();
                if !promoted.contains(&address) {
                    promoted.push(address);
                }
            }
        }
    }
    promoted
}

/// `CLUSTER SLOTS`'s reply: `[[start, end, [host, port, id, ...], [replica host, port, id, ...], ...], ...]`.
pub fn parse_cluster_slots(reply: &Value) -> Option<Vec<SlotRange>> {
    fn int(v: &Value) -> Option<i64> {
        match v {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn node(v: &Value) -> Option<ClusterNodeRef> {
        let Value::Array(fields) = v else { return None };
        Some(ClusterNodeRef {
            host: text(fields.first()?)?,
            port: u16::try_from(int(fields.get(1)?)?).ok()?,
            id: fields.get(2).and_then(text).unwrap_or_default(),
        })
    }
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        map.push(SlotRange {
            start: u16::try_from(int(parts.first()?)?).ok()?,
            end: u16::try_from(int(parts.get(1)?)?).ok()?,
            primary: node(parts.get(2)?)?,
            replicas: {
                // Nodes list a range's replicas in their own order: sorted, two views compare equal.
                let mut replicas: Vec<ClusterNodeRef> =
                    parts[3..].iter().filter_map(node).collect();
                replicas.sort_by(|a, b| a.id.cmp(&b.id));
                replicas
            },
        });
    }
    map.sort_by_key(|r| r.start);
    Some(map)
}

/// `CLUSTER SLOTS` from the first node that answers on a connection of its own (the primaries of the
/// last map read, then the seed nodes), with the origin's credentials: the node and its map.
async fn read_slots_directly(
    setup: &ClusterSetup,
    topology: &Topology,
) -> Option<(String, Vec<SlotRange>)> {
    let mut candidates: Vec<(String, u16)> = topology
        .slot_map()
        .iter()
        .flat_map(|r| std::iter::once(&r.primary).chain(&r.replicas))
        .map(|n| (n.host.clone(), n.port))
        .collect();
    candidates.extend(setup.target.nodes.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(c.clone()));
    let mut settings = RedisConnectionInfo::default()
        .set_skip_set_lib_name()
        .set_username(&setup.target.username);
    if let Some(password) = &setup.target.password {
        settings = settings.set_password(password.expose());
    }
    for (host, port) in candidates {
        let Ok(info) = ConnectionAddr::Tcp(host.clone(), port).into_connection_info() else {
            continue;
        };
        let info = info
            .set_redis_settings(settings.clone())
            .set_tcp_settings(super::connect::tcp_settings());
        let asked = async {
            let client = redis::Client::open(info)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn)
                .await
        };
        let budget = setup.connect_timeout.max(Duration::from_millis(500));
        if let Ok(Ok(reply)) = tokio::time::timeout(budget, asked).await
            && let Some(map) = parse_cluster_slots(&reply).filter(|m| !m.is_empty())
        {
            return Some((format!("{host}:{port}"), map));
        }
    }
    None
}

/// Reads the cluster's slot map every `poll` (and at once after a failed call) until the topology is
/// dropped; see [`Topology::use_slot_map`]. Replaces the cluster client when it stops answering
/// while the cluster's nodes answer connections of their own.
async fn follow_cluster(topology: Weak<Topology>, poll: Duration) {
    let Some(suspect) = topology.upgrade().map(|t| Arc::clone(&t.suspect)) else {
        return;
    };
    let mut reported_failure = false;
    // Failed reads in a row, and when the client was last replaced.
    let mut streak = 0u32;
    let mut rebuilt_at: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let Some(conn) = topology.upgrade().and_then(|t| t.connection()) else {
            return;
        };
        let RedisConn::Cluster(mut conn) = conn else {
            return;
        };
        let answer = tokio::time::timeout(
            CHECK_TIMEOUT,
            conn.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ),
        )
        .await;
        let Some(topology_now) = topology.upgrade() else {
            return;
        };
        match answer.map(|r| r.map(|v| parse_cluster_slots(&v))) {
            Ok(Ok(Some(map))) if !map.is_empty() => {
                topology_now.use_slot_map(map);
                crate::metrics::redis_primary_reachable(true);
                if reported_failure {
                    tracing::info!("the Redis Cluster's slot map is readable again");
                }
                reported_failure = false;
                streak = 0;
            }
            outcome => {
                streak += 1;
                // The client asks one node of its choice, so a read may fail while a node is down.
                // Failing in a row while some node answers a connection of its own means the client
                // itself is stuck (seen with redis 1.8 after a primary was killed: its slot refresh
                // waited forever on its own lock, and every command timed out): replace it.
                if streak >= CLUSTER_STREAK_BEFORE_PROBE
                    && rebuilt_at.is_none_or(|at| at.elapsed() >= MIN_REBUILD_INTERVAL)
                    && let Some(setup) = &topology_now.cluster
                    && let Some((node, map)) = read_slots_directly(setup, &topology_now).await
                {
                    tracing::warn!(
                        node = %node,
                        failed_reads = streak,
                        "the Redis Cluster answers a new connection but not the origin's cluster \
                         client; replacing the client"
                    );
                    topology_now.rebuild_cluster_connection();
                    topology_now.use_slot_map(map);
                    rebuilt_at = Some(Instant::now());
                    streak = 0;
                }
                crate::metrics::redis_primary_reachable(false);
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "an empty or unreadable CLUSTER SLOTS reply".to_string(),
                    Err(_) => "no answer in time".to_string(),
                };
                if !reported_failure {
                    tracing::warn!(error = %why, "cannot read the Redis Cluster's slot map");
                    reported_failure = true;
                } else {
                    tracing::debug!(error = %why, "still cannot read the Redis Cluster's slot map");
                }
            }
        }
        drop(topology_now);
        let wait = if reported_failure {
            MIN_CHECK_INTERVAL.max(poll / 4)
        } else {
            poll
        };
        let _ = tokio::time::timeout(wait, suspect.notified()).await;
        let since = started.elapsed();
        if since < MIN_CHECK_INTERVAL {
            tokio::time::sleep(MIN_CHECK_INTERVAL - since).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SentinelTarget {
        SentinelTarget {
            sentinels: vec![
                ("127.0.0.1".to_string(), 26379),
                ("sentinel-b".to_string(), 26380),
            ],
            master: "aside".to_string(),
            sentinel_username: None,
            sentinel_password: None,
            username: "origin".to_string(),
            password: None,
            db: 0,
            poll: Duration::from_secs(1),
        }
    }

    #[test]
    fn sentinel_and_node_connections_turn_nagle_off() {
        let nodes = sentinel_nodes(&target()).unwrap();
        assert_eq!(nodes.len(), 2);
        for node in &nodes {
            assert!(
                node.tcp_settings().nodelay(),
                "{node:?}: TCP_NODELAY is off"
            );
        }
        // The redis crate has no getter for a node's settings; its Debug form names them.
        let primary = format!("{:?}", node_connection(&target()));
        assert!(
            primary.contains("nodelay: true"),
            "the primary's TCP_NODELAY is off: {primary}"
        );
    }

    fn node(port: u16, id: &str) -> ClusterNodeRef {
        ClusterNodeRef {
            host: "127.0.0.1".into(),
            port,
            id: id.into(),
        }
    }

    fn range(start: u16, end: u16, primary: ClusterNodeRef, replica: ClusterNodeRef) -> SlotRange {
        SlotRange {
            start,
            end,
            primary,
            replicas: vec![replica],
        }
    }

    #[test]
    fn a_replica_taking_its_primary_s_slots_is_a_failover_and_resharding_is_not() {
        let (a, a2, b, b2) = (node(1, "a"), node(2, "a2"), node(3, "b"), node(4, "b2"));
        let before = vec![
            range(0, 8191, a.clone(), a2.clone()),
            range(8192, 16383, b.clone(), b2.clone()),
        ];
        // Slots 0-999 resharded from a to b: no failover.
        let resharded = vec![
            range(0, 999, b.clone(), b2.clone()),
            range(1000, 8191, a.clone(), a2.clone()),
            range(8192, 16383, b.clone(), b2.clone()),
        ];
        assert!(failed_over(&before, &resharded).is_empty());
        assert!(failed_over(&before, &before).is_empty());
        // a2 promoted over a's slots (a gone or now its replica).
        let promoted = vec![
            range(0, 8191, a2.clone(), a.clone()),
            range(8192, 16383, b.clone(), b2.clone()),
        ];
        assert_eq!(failed_over(&before, &promoted), vec!["127.0.0.1:2"]);
        assert!(failed_over(&[], &promoted).is_empty(), "the first map read");
    }

    #[test]
    fn cluster_slots_replies_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id-b")]),
                Value::Array(vec![
                    bulk("127.0.0.1"),
                    Value::Int(7004),
                    bulk("id-b2"),
                    Value::Array(vec![]),
                ]),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id-a")]),
            ]),
        ]);
        let map = parse_cluster_slots(&reply).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!((map[0].start, map[0].end), (0, 5460), "sorted by slot");
        assert_eq!(map[0].primary.address(), "127.0.0.1:7000");
        assert!(map[0].replicas.is_empty());
        assert_eq!(map[1].primary.id, "id-b");
        assert_eq!(map[1].replicas, vec![node(7004, "id-b2")]);
        assert_eq!(parse_cluster_slots(&Value::Int(3)), None);
    }
}
