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
//! The compare-and-set script is loaded per node: `redis::Script` sends `EVALSHA`, and on a `NOSCRIPT`
//! (a new primary that never saw it) `SCRIPT LOAD`s it and sends `EVALSHA` again, so nothing needs
//! reloading by hand after a switch.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo};
use tokio::sync::{Notify, watch};

use super::settings::SentinelTarget;

/// Shortest time between two questions to the Sentinels, however many failures ask for one.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for the Sentinels' answer (including the `ROLE` check on the primary).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before subscribing again after the `+switch-master` subscription broke.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The connection to the node the origin writes to, and what tells change capture it changed.
pub struct Topology {
    current: RwLock<Option<Primary>>,
    /// Primary changes followed since start (0 until the first failover).
    epoch: watch::Sender<u64>,
    /// Woken when a call suggests the primary moved (only with Sentinels).
    suspect: Arc<Notify>,
    following: bool,
}

struct Primary {
    address: String,
    conn: ConnectionManager,
}

impl Topology {
    /// A fixed node (`ASIDE_REDIS_URL`).
    pub fn fixed(conn: ConnectionManager) -> Self {
        Self {
            current: RwLock::new(Some(Primary {
                address: String::new(),
                conn,
            })),
            epoch: watch::Sender::new(0),
            suspect: Arc::new(Notify::new()),
            following: false,
        }
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
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.current
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|p| p.conn.clone())
    }

    /// `host:port` of the current primary (empty with a fixed URL, or before one is known).
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

    /// A call failed in a way that a failover explains: ask the Sentinels now.
    pub fn suspect(&self) {
        if self.following {
            self.suspect.notify_one();
        }
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
            conn,
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
}
