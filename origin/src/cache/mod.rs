//! The Redis side of the origin: one [`ProfileCache`] per process.
//!
//! * [`read`]: `HGETALL` / `HMGET` of a profile hash, parsed with the shared crate into a profile, a
//!   "missing" marker or a tombstone.
//! * [`fill`]: every write (read-path fill, write-through, change capture) as one compare-and-set Lua
//!   script that never replaces a newer version with an older one.
//! * [`lease`]: the per-id fill lease (`SET NX PX`) that makes origins filling the same key cost one
//!   PostgreSQL query.
//! * the Redis circuit breaker ([`crate::breaker`]): after repeated Redis failures, Redis is skipped
//!   for a back-off so requests go straight to PostgreSQL instead of each paying a timeout.
//! * [`stats`]: key count and memory of the profile keys (`SCAN`, `MEMORY USAGE`) and Redis's `INFO`.
//!
//! Every Redis call is bounded by the command timeout; a Redis that is down, slow or returns garbage never
//! fails a read, it only makes it a miss.

pub mod connect;
pub mod fill;
pub mod lease;
pub mod read;
pub mod stats;

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::breaker::{Breaker, BreakerSettings};
use crate::config::{RedisArgs, Secret};

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
}

impl CacheError {
    /// Does the error say that Redis is down, unreachable or too slow (as opposed to Redis answering
    /// with an error reply)? Only outages count towards the circuit breaker, so that, say, a command
    /// missing from the ACL does not make the origin stop using Redis altogether.
    pub fn is_outage(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            CacheError::Skipped | CacheError::Timeout => true,
            CacheError::UnexpectedReply | CacheError::Disabled => false,
            CacheError::Redis(e) => match e.kind() {
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown,
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
    conn: ConnectionManager,
    breaker: Breaker,
    command_timeout: Duration,
    ttls: Ttls,
    /// The logical database of the Redis URL (statistics are per database).
    db: i64,
    /// `ASIDE_CACHE=off`: every call fails with [`CacheError::Disabled`] without touching Redis.
    disabled: bool,
}

impl ProfileCache {
    /// Prepares the connection without opening it: the origin starts, and serves from PostgreSQL, while
    /// Redis is down; the connection is made on first use and re-made after failures.
    pub fn new(
        url: &Secret,
        args: &RedisArgs,
        ttls: Ttls,
        breaker: BreakerSettings,
    ) -> anyhow::Result<Self> {
        let client = connect::client(url, args)?;
        let db = client.get_connection_info().redis_settings().db();
        let command_timeout = Duration::from_millis(args.redis_command_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(args.redis_connect_timeout_ms)))
            .set_response_timeout(Some(command_timeout))
            // Reconnection is retried on the next use, not in a loop that holds requests.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            breaker: Breaker::new("redis", breaker),
            command_timeout,
            ttls,
            db,
            disabled: false,
        })
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
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.disabled {
            return Err(CacheError::Disabled);
        }
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(CacheError::Skipped);
        };
        let result = match tokio::time::timeout(self.command_timeout, f(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CacheError::Redis(e)),
            Err(_) => Err(CacheError::Timeout),
        };
        match &result {
            Ok(_) => permit.success(),
            Err(e) => {
                crate::metrics::redis_error(op);
                if e.is_outage() {
                    tracing::debug!(op, error = %e, "Redis failed");
                    permit.failure();
                } else {
                    // Redis answered (an error reply such as NOPERM): it is up, the call was wrong.
                    tracing::warn!(op, error = %e, "Redis refused a command");
                    permit.success();
                }
            }
        }
        result
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
