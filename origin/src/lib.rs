//! The aside origin: the native service that owns PostgreSQL and the Redis cache.
//!
//! * [`cli`]: the `aside-origin` command line (`migrate`, `seed`, `serve`).
//! * [`config`]: gathers the settings (flags and `ASIDE_*` environment variables) of every piece.
//! * [`secret`]: secrets that never print. [`clock`]: the wall clock freshness is measured by.
//! * [`db`]: the PostgreSQL pool, the profile queries and the versioned migrations.
//! * [`cache`]: the Redis side: reading hashes, the compare-and-set writes, the fill lease, and the
//!   read-through policy of `GET /users/{id}` ([`cache::read_through`]).
//! * [`breaker`]: the circuit breaker in front of Redis and of PostgreSQL.
//! * [`changes`]: change capture: the outbox of database changes applied to Redis.
//! * [`singleflight`]: concurrent misses for one id share one PostgreSQL query.
//! * [`http`]: the axum router, its handlers and the error-to-response mapping.
//! * [`seed`]: realistic pt_PT profiles loaded with binary COPY.

pub mod breaker;
pub mod cache;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod secret;
pub mod seed;
pub mod singleflight;
pub mod telemetry;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
