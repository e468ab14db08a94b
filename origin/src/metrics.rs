//! Prometheus metrics, recorded through the `metrics` facade and rendered at `GET /metrics`.
//!
//! Names follow Prometheus conventions: `aside_origin_` prefix, `_total` for counters, base units
//! (seconds) for durations.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
            // Both breakers start closed; the series exist from the first scrape so a dashboard shows 0,
            // not "no data", until one opens.
            breaker_open("redis", false);
            breaker_open("postgres", false);
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
        "aside_origin_feed_heartbeats_total",
        "Heartbeats appended to the invalidation feed, by outcome (sent, error)"
    );
    metrics::describe_counter!(
        "aside_origin_coalesced_requests_total",
        "Reads that waited for another request's PostgreSQL query instead of issuing their own"
    );
    metrics::describe_counter!(
        "aside_origin_redis_errors_total",
        "Redis commands that failed or timed out"
    );
    metrics::describe_counter!(
        "aside_origin_redis_refusals_total",
        "Redis commands Redis answered with an error reply that is not an outage (NOPERM, CROSSSLOT, \
         WRONGTYPE...): a command or permission the origin got wrong; also counted in \
         aside_origin_redis_errors_total"
    );
    metrics::describe_histogram!(
        "aside_origin_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by route, method and status"
    );
    describe_observability();
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

/// A feed heartbeat, by outcome (`sent`, `error`).
pub fn feed_heartbeat(outcome: &'static str) {
    metrics::counter!("aside_origin_feed_heartbeats_total", "outcome" => outcome).increment(1);
}

pub fn coalesced() {
    metrics::counter!("aside_origin_coalesced_requests_total").increment(1);
}

pub fn redis_error(op: &'static str) {
    metrics::counter!("aside_origin_redis_errors_total", "op" => op).increment(1);
}

pub fn redis_refusal(op: &'static str) {
    metrics::counter!("aside_origin_redis_refusals_total", "op" => op).increment(1);
}

fn describe_resilience() {
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
    // Exported from the first scrape (as 0), so dashboards and alerts see the series before it moves.
    metrics::counter!("aside_origin_early_refreshes_total").increment(0);
    metrics::counter!("aside_origin_cache_leases_total", "outcome" => "acquired").increment(0);
}

// ---- observability (docs/observability.md lists every family) ----

fn describe_observability() {
    metrics::describe_counter!(
        "aside_origin_http_requests_total",
        "HTTP requests answered, by route template (never the raw path), method and status"
    );
    metrics::describe_counter!(
        "aside_origin_cache_fills_total",
        "Read-path fills of Redis after a PostgreSQL load, by outcome (written, kept_newer, error)"
    );
    metrics::describe_gauge!(
        "aside_origin_cache_fills_pending",
        "Read-path fills (with their re-check and lease release) still running after their answer went out"
    );
    metrics::describe_counter!(
        "aside_origin_write_throughs_total",
        "Write-throughs to Redis after a committed API write, by outcome (written, kept_newer, error)"
    );
    metrics::describe_gauge!(
        "aside_origin_breaker_open",
        "1 while the circuit breaker in front of a backend (redis, postgres) is open, else 0"
    );
    metrics::describe_gauge!(
        "aside_origin_db_pool_connections",
        "PostgreSQL pool connections by state (idle, in_use), sampled at scrape time"
    );
    metrics::describe_gauge!(
        "aside_origin_db_pool_max_connections",
        "Largest number of connections the PostgreSQL pool opens"
    );
    metrics::describe_gauge!(
        "aside_origin_db_pool_waiting_requests",
        "Requests waiting for a PostgreSQL pool connection, sampled at scrape time"
    );
    metrics::describe_counter!(
        "aside_origin_redis_keyspace_hits_total",
        "Redis INFO keyspace_hits: successful key lookups on the whole Redis server (every client, every database)"
    );
    metrics::describe_counter!(
        "aside_origin_redis_keyspace_misses_total",
        "Redis INFO keyspace_misses: failed key lookups on the whole Redis server"
    );
    metrics::describe_counter!(
        "aside_origin_redis_evicted_keys_total",
        "Redis INFO evicted_keys: keys evicted by maxmemory on the whole Redis server"
    );
    metrics::describe_gauge!(
        "aside_origin_redis_used_memory_bytes",
        metrics::Unit::Bytes,
        "Redis INFO used_memory: bytes allocated by the Redis server"
    );
    metrics::describe_gauge!(
        "aside_origin_redis_used_memory_rss_bytes",
        metrics::Unit::Bytes,
        "Redis INFO used_memory_rss: resident bytes of the Redis server process"
    );
    // ops (issue 14): the memory alert compares used_memory with this.
    metrics::describe_gauge!(
        "aside_origin_redis_maxmemory_bytes",
        metrics::Unit::Bytes,
        "Redis INFO maxmemory: the memory limit of the Redis server in bytes, 0 when it has none"
    );
}

/// One answered HTTP request. `route` is the matched path template (`/users/{id}`) or `unmatched`.
pub fn http_request(route: &str, method: &'static str, status: u16, seconds: f64) {
    let route = route.to_string();
    let status = status.to_string();
    metrics::counter!(
        "aside_origin_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => status.clone()
    )
    .increment(1);
    metrics::histogram!(
        "aside_origin_http_request_duration_seconds",
        "route" => route, "method" => method, "status" => status
    )
    .record(seconds);
}

pub fn cache_fill(outcome: &'static str) {
    metrics::counter!("aside_origin_cache_fills_total", "outcome" => outcome).increment(1);
}

/// One read-path fill running after its answer: counted in `aside_origin_cache_fills_pending` from
/// before the answer goes out until dropped.
pub struct PendingFill(());

impl PendingFill {
    pub fn start() -> Self {
        metrics::gauge!("aside_origin_cache_fills_pending").increment(1.0);
        Self(())
    }
}

impl Drop for PendingFill {
    fn drop(&mut self) {
        metrics::gauge!("aside_origin_cache_fills_pending").decrement(1.0);
    }
}

pub fn write_through(outcome: &'static str) {
    metrics::counter!("aside_origin_write_throughs_total", "outcome" => outcome).increment(1);
}

/// The state of the circuit breaker in front of `backend` (`redis`, `postgres`): call on every change.
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

/// The PostgreSQL pool's state, sampled when `/metrics` is scraped.
pub fn db_pool(status: deadpool_postgres::Status) {
    let in_use = status.size.saturating_sub(status.available);
    metrics::gauge!("aside_origin_db_pool_connections", "state" => "idle")
        .set(status.available as f64);
    metrics::gauge!("aside_origin_db_pool_connections", "state" => "in_use").set(in_use as f64);
    metrics::gauge!("aside_origin_db_pool_max_connections").set(status.max_size as f64);
    metrics::gauge!("aside_origin_db_pool_waiting_requests").set(status.waiting as f64);
}

/// The figures of Redis's `INFO` that [`redis_server`] exports (`None`: Redis did not report it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisServerFigures {
    pub keyspace_hits: Option<u64>,
    pub keyspace_misses: Option<u64>,
    pub evicted_keys: Option<u64>,
    pub used_memory_bytes: Option<u64>,
    pub used_memory_rss_bytes: Option<u64>,
    pub maxmemory_bytes: Option<u64>,
}

/// Redis's own server-wide figures (`INFO stats`, `INFO memory`), sampled when `/metrics` is scraped.
///
/// Redis's counters are totals since its start (or `CONFIG RESETSTAT`); each scrape adds what they grew
/// by since the previous one, and after a reset (a smaller value) what they grew by since the reset, so
/// the origin's counters never go backwards and `rate()` sees Redis's real rate.
pub fn redis_server(info: &RedisServerFigures) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    static MISSES: AtomicU64 = AtomicU64::new(0);
    static EVICTED: AtomicU64 = AtomicU64::new(0);
    follow(
        "aside_origin_redis_keyspace_hits_total",
        &HITS,
        info.keyspace_hits,
    );
    follow(
        "aside_origin_redis_keyspace_misses_total",
        &MISSES,
        info.keyspace_misses,
    );
    follow(
        "aside_origin_redis_evicted_keys_total",
        &EVICTED,
        info.evicted_keys,
    );
    if let Some(v) = info.used_memory_bytes {
        metrics::gauge!("aside_origin_redis_used_memory_bytes").set(v as f64);
    }
    if let Some(v) = info.used_memory_rss_bytes {
        metrics::gauge!("aside_origin_redis_used_memory_rss_bytes").set(v as f64);
    }
    if let Some(v) = info.maxmemory_bytes {
        metrics::gauge!("aside_origin_redis_maxmemory_bytes").set(v as f64);
    }
}

/// Adds to counter `name` how much the external total `now` grew since `last` (see [`redis_server`]).
fn follow(name: &'static str, last: &AtomicU64, now: Option<u64>) {
    let Some(now) = now else { return };
    let previous = last.swap(now, Ordering::Relaxed);
    metrics::counter!(name).increment(growth(previous, now));
}

/// How much a total grew from `previous` to `now`; a smaller `now` means it was reset meanwhile.
fn growth(previous: u64, now: u64) -> u64 {
    if now >= previous { now - previous } else { now }
}

/// Describes the Redis high-availability series (only exported with Sentinels, or with replicas).
fn describe_ha() {
    metrics::describe_gauge!(
        "aside_origin_redis_primary",
        "1 for the Redis primary (address=host:port) the origin writes to now, 0 for one it left"
    );
    metrics::describe_gauge!(
        "aside_origin_redis_primary_reachable",
        "1 while the Sentinels name a reachable Redis primary, else 0"
    );
    metrics::describe_counter!(
        "aside_origin_redis_failovers_total",
        "Changes of Redis primary the origin followed"
    );
    metrics::describe_gauge!(
        "aside_origin_redis_replica_lag_seconds",
        metrics::Unit::Seconds,
        "INFO replication lag= of each replica of the primary, seconds since its last acknowledgement"
    );
    metrics::describe_gauge!(
        "aside_origin_redis_replica_lag_bytes",
        metrics::Unit::Bytes,
        "The primary's master_repl_offset minus each replica's acknowledged offset"
    );
    metrics::describe_gauge!(
        "aside_origin_redis_connected_replicas",
        "INFO replication connected_slaves of the primary"
    );
    metrics::describe_counter!(
        "aside_origin_redis_cluster_client_rebuilds_total",
        "Redis Cluster clients replaced because they stopped answering while the cluster's nodes answered"
    );
    metrics::describe_counter!(
        "aside_origin_outbox_replays_total",
        "Outbox replays onto Redis after a failover, or after Redis was found holding an older state"
    );
    metrics::describe_counter!(
        "aside_origin_redis_went_back_total",
        "Times Redis was found holding an older state than before (the feed's numbers went back: a \
         restart that lost data); each starts an outbox replay"
    );
}

/// The primary at `address` is (or is no longer) the one the origin uses.
pub fn redis_primary(address: &str, current: bool) {
    describe_ha_once();
    metrics::gauge!("aside_origin_redis_primary", "address" => address.to_string())
        .set(if current { 1.0 } else { 0.0 });
}

pub fn redis_primary_reachable(reachable: bool) {
    describe_ha_once();
    metrics::gauge!("aside_origin_redis_primary_reachable").set(if reachable { 1.0 } else { 0.0 });
}

/// `n` more primary changes followed (0 makes the series exist).
pub fn redis_failovers(n: u64) {
    describe_ha_once();
    metrics::counter!("aside_origin_redis_failovers_total").increment(n);
}

/// The origin replaced its Redis Cluster client, which had stopped answering (see
/// `cache::topology::follow_cluster`).
pub fn redis_cluster_client_rebuilds(n: u64) {
    describe_ha_once();
    metrics::counter!("aside_origin_redis_cluster_client_rebuilds_total").increment(n);
}

pub fn redis_went_back() {
    describe_ha_once();
    metrics::counter!("aside_origin_redis_went_back_total").increment(1);
}

pub fn outbox_replay() {
    describe_ha_once();
    metrics::counter!("aside_origin_outbox_replays_total").increment(1);
}

/// How far one replica trails the primary.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLag {
    /// `host:port`.
    pub name: String,
    pub seconds: u64,
    pub bytes: u64,
}

/// The primary's `INFO replication`, sampled when `/metrics` is scraped.
pub fn redis_replication(replicas: &[ReplicaLag]) {
    describe_ha_once();
    metrics::gauge!("aside_origin_redis_connected_replicas").set(replicas.len() as f64);
    for replica in replicas {
        metrics::gauge!("aside_origin_redis_replica_lag_seconds", "replica" => replica.name.clone())
            .set(replica.seconds as f64);
        metrics::gauge!("aside_origin_redis_replica_lag_bytes", "replica" => replica.name.clone())
            .set(replica.bytes as f64);
    }
}

/// What an origin on a Redis Cluster reports of it at each scrape (docs/operations.md, "Redis Cluster").
#[derive(Debug, Clone, Default)]
pub struct RedisClusterFigures {
    /// Each primary of the slot map (`host:port`) with its `used_memory` and `maxmemory`, or `None`
    /// when it did not answer `INFO`.
    pub primaries: Vec<(String, Option<(u64, u64)>)>,
    /// `CLUSTER INFO`'s `cluster_slots_ok`, `_pfail`, `_fail`, when a node answered it.
    pub slots: Option<(u64, u64, u64)>,
}

impl RedisClusterFigures {
    /// The highest `used_memory / maxmemory` among the primaries with a limit (0 when none has one).
    pub fn memory_used_ratio_max(&self) -> f64 {
        self.primaries
            .iter()
            .filter_map(|(_, figures)| *figures)
            .filter(|(_, max)| *max > 0)
            .map(|(used, max)| used as f64 / max as f64)
            .fold(0.0, f64::max)
    }

    /// Primaries of the slot map that did not answer.
    pub fn unreachable(&self) -> usize {
        self.primaries.iter().filter(|(_, f)| f.is_none()).count()
    }
}

pub fn redis_cluster(figures: &RedisClusterFigures) {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_gauge!(
            "aside_origin_redis_node_used_memory_bytes",
            metrics::Unit::Bytes,
            "Redis Cluster: used_memory of each primary (label node)"
        );
        metrics::describe_gauge!(
            "aside_origin_redis_node_maxmemory_bytes",
            metrics::Unit::Bytes,
            "Redis Cluster: maxmemory of each primary (label node; 0: no limit)"
        );
        metrics::describe_gauge!(
            "aside_origin_redis_cluster_node_memory_used_ratio_max",
            "Redis Cluster: the highest used_memory / maxmemory among the primaries"
        );
        metrics::describe_gauge!(
            "aside_origin_redis_cluster_primaries_unreachable",
            "Redis Cluster: primaries of the slot map that did not answer INFO at the last scrape"
        );
        metrics::describe_gauge!(
            "aside_origin_redis_cluster_slots",
            "Redis Cluster: hash slots by state (ok, pfail, fail) as CLUSTER INFO reports them"
        );
    });
    for (node, figures) in &figures.primaries {
        if let Some((used, max)) = figures {
            metrics::gauge!("aside_origin_redis_node_used_memory_bytes", "node" => node.clone())
                .set(*used as f64);
            metrics::gauge!("aside_origin_redis_node_maxmemory_bytes", "node" => node.clone())
                .set(*max as f64);
        }
    }
    metrics::gauge!("aside_origin_redis_cluster_node_memory_used_ratio_max")
        .set(figures.memory_used_ratio_max());
    metrics::gauge!("aside_origin_redis_cluster_primaries_unreachable")
        .set(figures.unreachable() as f64);
    if let Some((ok, pfail, fail)) = figures.slots {
        for (state, n) in [("ok", ok), ("pfail", pfail), ("fail", fail)] {
            metrics::gauge!("aside_origin_redis_cluster_slots", "state" => state).set(n as f64);
        }
    }
}

fn describe_ha_once() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(describe_ha);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fullest_primary_and_the_silent_ones_are_counted() {
        let figures = RedisClusterFigures {
            primaries: vec![
                ("a:1".into(), Some((50, 100))),
                ("b:2".into(), Some((90, 100))),
                ("c:3".into(), Some((500, 0))),
                ("d:4".into(), None),
            ],
            slots: Some((16384, 0, 0)),
        };
        assert_eq!(figures.memory_used_ratio_max(), 0.9);
        assert_eq!(figures.unreachable(), 1);
        assert_eq!(RedisClusterFigures::default().memory_used_ratio_max(), 0.0);
    }

    #[test]
    fn followed_totals_grow_by_the_difference_and_survive_a_reset() {
        assert_eq!(growth(0, 10), 10);
        assert_eq!(growth(10, 15), 5);
        assert_eq!(growth(15, 15), 0);
        assert_eq!(growth(15, 4), 4, "Redis restarted: 4 since the restart");
    }
}
