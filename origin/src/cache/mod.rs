//! The Redis side of the origin: one [`ProfileCache`] per process.
//!
//! * [`read`]: `HGETALL` / `HMGET` of a profile hash, parsed with the shared crate into a profile, a
//!   "missing" marker or a tombstone.
//! * [`fill`]: every write (read-path fill, write-through, change capture) as one compare-and-set Lua
//!   script that never replaces a newer version with an older one.
//! * [`feed`]: the invalidation feed those writes announce changes on, and its heartbeat.
//! * [`lease`]: the per-id fill lease (`SET NX PX`) that makes origins filling the same key cost one
//!   PostgreSQL query.
//! * the Redis circuit breaker ([`crate::breaker`]): after repeated Redis failures, Redis is skipped
//!   for a back-off so requests go straight to PostgreSQL instead of each paying a timeout.
//! * [`stats`]: key count and memory of the profile keys (`SCAN`, `MEMORY USAGE`) and Redis's `INFO`.
//!
//! Every Redis call is bounded by the command timeout; a Redis that is down, slow or returns garbage never
//! fails a read, it only makes it a miss.

pub mod connect;
pub mod feed;
pub mod fill;
pub mod lease;
pub mod read;
pub mod read_through;
pub mod replication;
pub mod settings;
pub mod stats;
pub mod topology;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::breaker::{Breaker, BreakerSettings};
use settings::{RedisArgs, RedisTarget};
use topology::{RedisConn, Topology};

/// Why a Redis operation gave no answer. Always recoverable by falling back to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis is being skipped after recent failures")]
    Skipped,
    #[error("Redis command timed out")]
    Timeout,
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis gave a reply of an unexpected shape")]
    UnexpectedReply,
    #[error("the cache is disabled (ASIDE_CACHE=off)")]
    Disabled,
    #[error("no Redis primary is known yet (the Sentinels have not named a reachable one)")]
    NoPrimary,
}

impl CacheError {
    /// Does the error say that Redis is down, unreachable or too slow (as opposed to Redis answering
    /// with an error reply)? Only outages count towards the circuit breaker, so that, say, a command
    /// missing from the ACL does not make the origin stop using Redis altogether.
    pub fn is_outage(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            CacheError::Skipped | CacheError::Timeout | CacheError::NoPrimary => true,
            CacheError::UnexpectedReply | CacheError::Disabled => false,
            CacheError::Redis(e) => match e.kind() {
                // READONLY: the node was demoted to a replica by a failover; the primary is elsewhere.
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly,
                ) => true,
                ErrorKind::Server(_)
                | ErrorKind::Extension
                | ErrorKind::UnexpectedReturnType
                | ErrorKind::Parse => false,
                _ => true,
            },
        }
    }
}

/// How long each kind of entry lives.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    /// A profile, before jitter.
    pub profile: Duration,
    /// Random spread of a profile's TTL, in percent.
    pub jitter_percent: u8,
    /// A "missing" marker (negative cache).
    pub missing: Duration,
    /// A tombstone left by a delete.
    pub tombstone: Duration,
    /// How long a profile is kept after its soft expiry (the jittered `profile` TTL), for
    /// stale-if-error: Redis expires the key at soft + stale (the hard expiry).
    pub stale: Duration,
}

/// The outcome of a cache read.
#[derive(Debug)]
pub enum Lookup<T> {
    Hit(T),
    /// Absent or unusable (malformed hash).
    Miss,
    /// Redis did not answer; the caller goes to PostgreSQL.
    Unavailable(CacheError),
}

impl<T> Lookup<T> {
    /// Transforms a hit, keeping misses and failures as they are.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Hit(v) => Lookup::Hit(f(v)),
            Lookup::Miss => Lookup::Miss,
            Lookup::Unavailable(e) => Lookup::Unavailable(e),
        }
    }
}

pub struct ProfileCache {
    topology: Arc<Topology>,
    /// `WAIT 1 <this>` after each write-through (zero: no wait).
    wait_for_replica: Duration,
    breaker: Breaker,
    command_timeout: Duration,
    ttls: Ttls,
    /// The logical database of the Redis URL (statistics are per database).
    db: i64,
    /// `ASIDE_CACHE=off`: every call fails with [`CacheError::Disabled`] without touching Redis.
    disabled: bool,
    /// The invalidation feed changes are announced on (off until [`Self::with_feed`]).
    feed: feed::Feed,
}

impl ProfileCache {
    /// Prepares the connection without opening it: the origin starts, and serves from PostgreSQL, while
    /// Redis is down; the connection is made on first use and re-made after failures. With Sentinels
    /// (which needs a Tokio runtime), a task finds the primary and follows it ([`topology`]).
    pub fn new(
        target: &RedisTarget,
        args: &RedisArgs,
        ttls: Ttls,
        breaker: BreakerSettings,
    ) -> anyhow::Result<Self> {
        let command_timeout = Duration::from_millis(args.redis_command_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(args.redis_connect_timeout_ms)))
            .set_response_timeout(Some(command_timeout))
            // Reconnection is retried on the next use, not in a loop that holds requests.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let (topology, db) = match target {
            RedisTarget::Url(url) => {
                let client = connect::client(url, args)?;
                let db = client.get_connection_info().redis_settings().db();
                let conn = ConnectionManager::new_lazy_with_config(client, config)?;
                (Arc::new(Topology::fixed(conn)), db)
            }
            RedisTarget::Sentinel(sentinels) => (
                Topology::follow_sentinels(sentinels.clone(), config)?,
                sentinels.db,
            ),
            RedisTarget::Cluster(cluster) => (
                Topology::cluster(
                    cluster.clone(),
                    Duration::from_millis(args.redis_connect_timeout_ms),
                    command_timeout,
                )?,
                0,
            ),
        };
        Ok(Self {
            topology,
            wait_for_replica: Duration::from_millis(args.redis_wait_replicas_ms),
            breaker: Breaker::new("redis", breaker),
            command_timeout,
            ttls,
            db,
            disabled: false,
            feed: feed::Feed::default(),
        })
    }

    /// Which node the origin writes to, and the failovers it followed.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The same cache, switched off: reads miss, fills and write-throughs are skipped (benchmark
    /// baseline and diagnostics; see `ServeArgs::cache`).
    pub fn disabled(self) -> Self {
        Self {
            disabled: true,
            ..self
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Runs one Redis operation through the breaker and the command timeout.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_with_timeout(op, self.command_timeout, f).await
    }

    /// [`Self::call`] with another timeout (for a command that waits on purpose, like `WAIT`).
    async fn call_with_timeout<T, F, Fut>(
        &self,
        op: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, CacheError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.disabled {
            return Err(CacheError::Disabled);
        }
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(CacheError::Skipped);
        };
        let result = match self.topology.connection() {
            None => Err(CacheError::NoPrimary),
            Some(conn) => match tokio::time::timeout(timeout, f(conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(CacheError::Redis(e)),
                Err(_) => Err(CacheError::Timeout),
            },
        };
        match &result {
            Ok(_) => permit.success(),
            Err(e) => {
                crate::metrics::redis_error(op);
                if e.is_outage() {
                    tracing::debug!(op, error = %e, "Redis failed");
                    // With Sentinels or a cluster, a failover may explain it: look now.
                    self.topology.suspect();
                    permit.failure();
                } else {
                    // Redis answered (an error reply such as NOPERM): it is up, the call was wrong.
                    crate::metrics::redis_refusal(op);
                    tracing::warn!(op, error = %e, "Redis refused a command");
                    permit.success();
                }
            }
        }
        result
    }

    /// How long a write-through waits for a replica (zero: not at all).
    pub fn wait_for_replica_timeout(&self) -> Duration {
        self.wait_for_replica
    }

    /// How long entries live.
    pub fn ttls(&self) -> &Ttls {
        &self.ttls
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.call("ping", |mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(drop)
        })
        .await
    }
}
