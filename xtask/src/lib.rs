//! Shared by `cargo xtask`, the benchmark driver and the test harness: how the project runs Redis and
//! PostgreSQL locally, and the settings of the origin and the edge (`launch`).
//! Kept free of heavy dependencies so `cargo xtask` builds in seconds.

pub mod launch;
pub mod local;
pub mod prereq;
pub mod redis_ha;
pub mod redis_server;
pub mod spin;
pub mod stack;
pub mod supervise;
pub mod token;
