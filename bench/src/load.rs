//! What one `aside-load` run measured: printed as JSON on stdout, read back by the driver.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Latency summary of one run, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The quantiles written out for the latency distribution chart (the classic HDR "percentile spectrum").
pub const SPECTRUM: &[f64] = &[
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.965, 0.975, 0.98,
    0.985, 0.99, 0.9925, 0.995, 0.9965, 0.9975, 0.998, 0.9985, 0.999, 0.99925, 0.9995, 0.99965,
    0.99975, 0.9999, 1.0,
];

/// One run of the load generator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadResult {
    /// Requests answered (any status) in the measured window, warm-up excluded.
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    /// Length of the measured window, in seconds.
    pub elapsed_s: f64,
    /// `requests / elapsed_s`.
    pub rps: f64,
    /// All answered requests (reads and writes).
    pub latency_us: Latency,
    /// Writes alone, when there were any.
    pub write_latency_us: Option<Latency>,
    /// Non-2xx answers, timeouts and connection failures in the measured window.
    pub errors: u64,
    /// `errors` by kind: `status_404`, `status_503`, `timeout`, `connect`, `io`.
    pub error_kinds: BTreeMap<String, u64>,
    /// `x-cache` values of successful reads (`L1`, `L2`, `MISS`, `HIT`, `STALE`, `none` when absent).
    pub x_cache: BTreeMap<String, u64>,
    /// Latency of the successful reads of each `x-cache` value: what one tier costs.
    #[serde(default)]
    pub tier_latency_us: BTreeMap<String, Latency>,
    /// Per `x-cache` value, the mean of each `server-timing` metric (ms) over the successful reads that
    /// carried it: where a tier's time went (the edge's `l2`, `origin`, and the origin's own
    /// `origin-redis`, `origin-db`), beside [`Self::tier_latency_us`]'s mean as the client saw it.
    #[serde(default)]
    pub server_timing_ms: BTreeMap<String, BTreeMap<String, f64>>,
    /// How many successful reads carried each `server-timing` metric, per `x-cache` value (the counts
    /// behind [`Self::server_timing_ms`]'s means; e.g. `start`: answers that waited for a new instance).
    #[serde(default)]
    pub server_timing_n: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every answer (reads and writes, any status) by status code.
    #[serde(default)]
    pub statuses: BTreeMap<String, u64>,
    /// Answers of any status without an `x-cache` header (the edge puts one on every answer it gives).
    #[serde(default)]
    pub no_x_cache: u64,
    /// `(quantile, latency in µs)` at each of [`SPECTRUM`].
    pub spectrum: Vec<(f64, u64)>,
    /// Requests per second in each whole second of the measured window.
    pub per_second: Vec<u64>,
    /// The p50 and p99 (µs) of the answers (any status) that finished in each whole second of the
    /// measured window, 0 for a second without one: how latency moved over the run (e.g. how fast it
    /// came back after a spike).
    #[serde(default)]
    pub per_second_p50_us: Vec<u64>,
    #[serde(default)]
    pub per_second_p99_us: Vec<u64>,
    /// Successful reads answered from tier 1 (`x-cache: L1`) in each whole second.
    #[serde(default)]
    pub per_second_l1: Vec<u64>,
    /// Successful reads in each whole second (the denominator of [`Self::per_second_l1`]).
    #[serde(default)]
    pub per_second_reads: Vec<u64>,
    /// Distinct edge instances (`x-edge-instance`) that answered in each whole second, and in the
    /// whole run: how many instances share the load (0 for a target that sends no such header).
    #[serde(default)]
    pub per_second_instances: Vec<u64>,
    #[serde(default)]
    pub instances: u64,
    /// CPU time (user + system) the load generator itself used over its whole run, in ms (Linux:
    /// `/proc/self/stat`; `None` elsewhere): on a machine it shares with the target, what the load
    /// cost beside what it measured.
    #[serde(default)]
    pub cpu_ms: Option<f64>,
    /// A key walk ran out of ids before the time was up (the window is then shorter).
    pub keys_exhausted: bool,
    pub concurrency: usize,
}

impl LoadResult {
    /// The share of successful reads per `x-cache` value.
    pub fn hit_ratio(&self) -> BTreeMap<String, f64> {
        let total: u64 = self.x_cache.values().sum();
        self.x_cache
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if total == 0 {
                        0.0
                    } else {
                        *v as f64 / total as f64
                    },
                )
            })
            .collect()
    }
}
