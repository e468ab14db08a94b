//! The Redis side of the origin: one [`ProfileCache`] per process.
//!
//! * [`read`]: `HGETALL` / `HMGET` of a profile hash, parsed with the shared crate into a profile, a
//!   "missing" marker or a tombstone.
//! * [`fill`]: every write (read-path fill, write-through, change capture) as one compare-and-set Lua
//!   script that never replaces a newer version with an older one.
//! * [`breaker`]: after a Redis failure, Redis is skipped for a back-off so requests go straight to
//!   PostgreSQL instead of each paying a timeout.
//!
//! Every Redis call is bounded by the command timeout; a Redis that is down, slow or returns garbage never
//! fails a read, it only makes it a miss.

pub mod breaker;
pub mod fill;
pub mod read;

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{RedisArgs, Secret};
use breaker::Breaker;

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
    /// `ASIDE_CACHE=off`: every call fails with [`CacheError::Disabled`] without touching Redis.
    disabled: bool,
}

impl ProfileCache {
    /// Prepares the connection without opening it: the origin starts, and serves from PostgreSQL, while
    /// Redis is down; the connection is made on first use and re-made after failures.
    pub fn new(url: &Secret, args: &RedisArgs, ttls: Ttls) -> anyhow::Result<Self> {
        let client = redis::Client::open(url.expose())
            .map_err(|_| anyhow::anyhow!("the Redis URL is not valid"))?;
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
            breaker: Breaker::new(Duration::from_millis(args.redis_backoff_ms)),
            command_timeout,
            ttls,
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
        if !self.breaker.allow() {
            return Err(CacheError::Skipped);
        }
        let result = match tokio::time::timeout(self.command_timeout, f(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CacheError::Redis(e)),
            Err(_) => Err(CacheError::Timeout),
        };
        match &result {
            Ok(_) => self.breaker.record_success(),
            Err(e) => {
                crate::metrics::redis_error(op);
                if self.breaker.record_failure() {
                    tracing::warn!(op, error = %e, "Redis failed; skipping it for the back-off period");
                }
            }
        }
        result
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
