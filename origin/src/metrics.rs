//! Prometheus metrics, recorded through the `metrics` facade and rendered at `GET /metrics`.
//!
//! Names follow Prometheus conventions: `aside_origin_` prefix, `_total` for counters, base units
//! (seconds) for durations.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle `/metrics` renders.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets are valid")
                .install_recorder()
                .unwrap_or_else(|_| {
                    // Another recorder is installed (only possible in tests): keep a detached one.
                    PrometheusBuilder::new().build_recorder().handle()
                });
            describe();
            describe_resilience();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "aside_origin_db_queries_total",
        "PostgreSQL queries issued, by query"
    );
    metrics::describe_counter!(
        "aside_origin_cache_requests_total",
        "Profile reads by cache result (hit, miss, error, refreshed, stale)"
    );
    metrics::describe_counter!(
        "aside_origin_cache_stores_total",
        "Compare-and-set writes to Redis by outcome (written, kept_newer, error)"
    );
    metrics::describe_counter!(
        "aside_origin_writes_total",
        "API writes by operation (create, replace, update, delete) and outcome"
    );
    metrics::describe_counter!(
        "aside_origin_changes_applied_total",
        "Outbox changes applied to Redis by change capture"
    );
    metrics::describe_histogram!(
        "aside_origin_change_apply_lag_seconds",
        metrics::Unit::Seconds,
        "Time from a change's commit-time stamp in the outbox to its application to Redis"
    );
    metrics::describe_gauge!(
        "aside_origin_change_capture_leader",
        "1 while this origin holds the change-capture lock and applies changes, else 0"
    );
    metrics::describe_counter!(
        "aside_origin_coalesced_requests_total",
        "Reads that waited for another request's PostgreSQL query instead of issuing their own"
    );
    metrics::describe_counter!(
        "aside_origin_redis_errors_total",
        "Redis commands that failed or timed out"
    );
    metrics::describe_histogram!(
        "aside_origin_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by route, method and status"
    );
}

pub fn db_query(query: &'static str) {
    metrics::counter!("aside_origin_db_queries_total", "query" => query).increment(1);
}

pub fn cache_result(result: &'static str) {
    metrics::counter!("aside_origin_cache_requests_total", "result" => result).increment(1);
}

pub fn cache_store(outcome: &'static str) {
    metrics::counter!("aside_origin_cache_stores_total", "outcome" => outcome).increment(1);
}

pub fn write(op: &'static str, outcome: &'static str) {
    metrics::counter!("aside_origin_writes_total", "op" => op, "outcome" => outcome).increment(1);
}

pub fn changes_applied(count: usize, lag_seconds: f64) {
    metrics::counter!("aside_origin_changes_applied_total").increment(count as u64);
    metrics::histogram!("aside_origin_change_apply_lag_seconds").record(lag_seconds.max(0.0));
}

pub fn change_capture_leader(leader: bool) {
    metrics::gauge!("aside_origin_change_capture_leader").set(if leader { 1.0 } else { 0.0 });
}

pub fn coalesced() {
    metrics::counter!("aside_origin_coalesced_requests_total").increment(1);
}

pub fn redis_error(op: &'static str) {
    metrics::counter!("aside_origin_redis_errors_total", "op" => op).increment(1);
}

fn describe_resilience() {
    metrics::describe_gauge!(
        "aside_origin_breaker_open",
        "1 while the circuit breaker of a backend (redis, postgres) is open or probing, else 0"
    );
    metrics::describe_counter!(
        "aside_origin_cache_leases_total",
        "Fill leases by outcome: acquired (this origin loaded), waited (another origin's fill was \
         used), fallback (waited in vain, loaded without the lease), unavailable (Redis could not be \
         asked)"
    );
    metrics::describe_counter!(
        "aside_origin_early_refreshes_total",
        "Fresh cached profiles refreshed before their soft expiry (XFetch)"
    );
}

pub fn breaker_open(backend: &'static str, open: bool) {
    metrics::gauge!("aside_origin_breaker_open", "backend" => backend).set(if open {
        1.0
    } else {
        0.0
    });
}

pub fn lease(outcome: &'static str) {
    metrics::counter!("aside_origin_cache_leases_total", "outcome" => outcome).increment(1);
}

pub fn early_refresh() {
    metrics::counter!("aside_origin_early_refreshes_total").increment(1);
}
