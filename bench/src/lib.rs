//! `cargo xtask bench`: a throw-away stack (Redis, PostgreSQL, origins, edges) on free ports, load
//! scenarios run by a separate load-generator process (`aside-load`), and a report (JSON, Markdown,
//! charts, a table).
//!
//! * [`client`]: the one load client connection, used by `aside-load` and the test harness's `Load`.
//! * [`load`]: what `aside-load` measures and prints (JSON on stdout), and how it picks keys.
//! * [`report`]: the whole run's results, `report.json` / `report.md`, the terminal table, and the check
//!   the test suite runs on a quick report.
//! * [`delay`]: the latency proxy `aside-delay` that `--topology` puts on each hop.
//! * [`topology`]: the `--topology` presets (the one-way delay of each hop) and their report.
//! * [`charts`]: latency distribution and throughput charts, SVG and PNG.
//! * [`redis_admin`]: the few admin commands the bench sends to Redis (flush, key count, a timed `HGETALL`).

pub mod charts;
pub mod client;
pub mod delay;
pub mod keys;
pub mod load;
pub mod redis_admin;
pub mod report;
pub mod topology;
