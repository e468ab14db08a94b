//! The aside origin: the native service that owns PostgreSQL and the Redis cache.
//!
//! * [`cli`]: the `aside-origin` command line (`migrate`, `seed`, `serve`).
//! * [`config`]: settings from flags and `ASIDE_*` environment variables; secrets that never print.
//! * [`db`]: the PostgreSQL pool, the profile queries and the versioned migrations.
//! * [`cache`]: the Redis side: reading hashes, filling them, the Redis circuit breaker.
//! * [`singleflight`]: concurrent misses for one id share one PostgreSQL query.
//! * [`http`]: the axum router, its handlers and the error-to-response mapping.
//! * [`seed`]: realistic pt_PT profiles loaded with binary COPY.

pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod seed;
pub mod singleflight;
pub mod telemetry;
