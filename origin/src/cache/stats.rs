//! Cache statistics for operators (`GET /admin/cache/stats`, `aside-origin cache-stats`) and Redis's
//! own figures for `/metrics`.
//!
//! Two scopes, reported apart because they measure different things:
//!
//! * **database**: the profile keys of the logical database the origin uses, counted with `SCAN MATCH
//!   user:profile:* COUNT n` (never `KEYS`, which blocks Redis for the whole key space; the origin's ACL
//!   user may not even run it) and weighed with pipelined `MEMORY USAGE`. The walk is bounded by a key
//!   count and a time budget, and says whether it saw the whole database (`complete`). Markers of
//!   missing users and tombstones are profile keys too (`user:profile:{id}` hashes).
//! * **server**: `INFO memory` and `INFO stats`, which Redis keeps for the whole server: every
//!   database, every client (the edge's reads included), since its start or `CONFIG RESETSTAT`.
//!
//! On a Redis Cluster both cover every primary: the walk runs on each primary in turn (within the
//! same limits), and the server figures are the primaries' sums (ratios recomputed from them).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aside_shared::cache::PROFILE_KEY_PREFIX;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{CacheError, ProfileCache};

/// The keys counted: every profile hash (profiles, "missing" markers, tombstones).
pub const PATTERN: &str = "user:profile:*";

/// One walk of the key space at a time per process: a second caller waits for the first to finish
/// rather than doubling the load on Redis.
static WALKS: Semaphore = Semaphore::const_new(1);

/// How far one statistics walk may go.
#[derive(Debug, Clone, Copy)]
pub struct StatsLimits {
    /// Stop after this many distinct keys.
    pub max_keys: usize,
    /// Stop starting new `SCAN` steps after this long (a step in flight finishes, within the command
    /// timeout).
    pub budget: Duration,
    /// `SCAN ... COUNT`: how much of the key space one step looks at (a hint to Redis, not a limit).
    pub scan_count: u32,
}

impl Default for StatsLimits {
    fn default() -> Self {
        Self {
            max_keys: 100_000,
            budget: Duration::from_millis(1000),
            scan_count: 1000,
        }
    }
}

/// Both scopes together.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    pub database: DatabaseStats,
    pub server: ServerInfo,
}

/// The profile keys of one logical database.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatabaseStats {
    /// Always `database`: these figures cover only the logical database below.
    #[schema(example = "database")]
    pub scope: String,
    /// The logical database (`SELECT n`) the origin uses.
    pub db: i64,
    /// The `SCAN MATCH` pattern.
    #[schema(example = "user:profile:*")]
    pub pattern: String,
    /// Profile keys found (that still existed when weighed).
    pub keys: u64,
    /// Their total `MEMORY USAGE`, in bytes.
    pub memory_bytes: u64,
    /// `memory_bytes / keys`; null when there are no keys.
    pub average_bytes: Option<f64>,
    /// True when the walk covered the whole database; false when a limit stopped it first, and then
    /// `keys` and `memory_bytes` count only what was seen.
    pub complete: bool,
    /// What stopped an incomplete walk: `max_keys` or `time_budget`; null when complete.
    pub stopped_by: Option<String>,
    /// How long the walk took, in ms.
    pub elapsed_ms: u64,
    /// The limits it ran with.
    pub max_keys: usize,
    pub budget_ms: u64,
}

/// Redis's own figures for the whole server (`INFO memory`, `INFO stats`). A field Redis did not
/// report is null.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ServerInfo {
    /// Always `server`: these figures cover every database and every client of the Redis server.
    #[schema(example = "server")]
    pub scope: String,
    /// `used_memory`: bytes Redis's allocator handed out.
    pub used_memory_bytes: Option<u64>,
    /// `used_memory_rss`: bytes of the process resident in RAM.
    pub used_memory_rss_bytes: Option<u64>,
    /// `mem_fragmentation_ratio` (about rss / used_memory): well above 1 means memory lost to
    /// fragmentation (or a nearly empty server), below 1 means swapping.
    pub mem_fragmentation_ratio: Option<f64>,
    /// `maxmemory` (0: no limit).
    pub maxmemory_bytes: Option<u64>,
    /// `maxmemory_policy`.
    pub maxmemory_policy: Option<String>,
    /// `evicted_keys`: keys dropped to stay under `maxmemory`.
    pub evicted_keys: Option<u64>,
    /// `expired_keys`: keys removed when their TTL ran out.
    pub expired_keys: Option<u64>,
    /// `keyspace_hits`: key lookups that found the key.
    pub keyspace_hits: Option<u64>,
    /// `keyspace_misses`: key lookups that did not.
    pub keyspace_misses: Option<u64>,
    /// `keyspace_hits / (keyspace_hits + keyspace_misses)`; null before any lookup.
    pub hit_ratio: Option<f64>,
}

impl ServerInfo {
    /// The figures [`crate::metrics::redis_server`] exports.
    pub fn figures(&self) -> crate::metrics::RedisServerFigures {
        crate::metrics::RedisServerFigures {
            keyspace_hits: self.keyspace_hits,
            keyspace_misses: self.keyspace_misses,
            evicted_keys: self.evicted_keys,
            used_memory_bytes: self.used_memory_bytes,
            used_memory_rss_bytes: self.used_memory_rss_bytes,
            maxmemory_bytes: self.maxmemory_bytes,
        }
    }

    /// The figures of several servers together (a cluster's primaries): counts and bytes added, the
    /// ratios recomputed from the sums, the policy of the first that reports one.
    pub fn sum<'a>(infos: impl IntoIterator<Item = &'a ServerInfo>) -> Self {
        fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        let mut s = ServerInfo {
            scope: "server".into(),
            ..Default::default()
        };
        let mut count = 0;
        for info in infos {
            count += 1;
            s.used_memory_bytes = add(s.used_memory_bytes, info.used_memory_bytes);
            s.used_memory_rss_bytes = add(s.used_memory_rss_bytes, info.used_memory_rss_bytes);
            s.maxmemory_bytes = add(s.maxmemory_bytes, info.maxmemory_bytes);
            s.evicted_keys = add(s.evicted_keys, info.evicted_keys);
            s.expired_keys = add(s.expired_keys, info.expired_keys);
            s.keyspace_hits = add(s.keyspace_hits, info.keyspace_hits);
            s.keyspace_misses = add(s.keyspace_misses, info.keyspace_misses);
            if s.maxmemory_policy.is_none() {
                s.maxmemory_policy.clone_from(&info.maxmemory_policy);
            }
            s.mem_fragmentation_ratio = info.mem_fragmentation_ratio;
        }
        if count > 1 {
            s.mem_fragmentation_ratio = match (s.used_memory_rss_bytes, s.used_memory_bytes) {
                (Some(rss), Some(used)) if used > 0 => Some(rss as f64 / used as f64),
                _ => None,
            };
        }
        if let (Some(hits), Some(misses)) = (s.keyspace_hits, s.keyspace_misses)
            && hits + misses > 0
        {
            s.hit_ratio = Some(hits as f64 / (hits + misses) as f64);
        }
        s
    }

    /// Reads the fields aside reports from the text of `INFO` (`name:value` lines).
    pub fn parse(info: &str) -> Self {
        let mut s = ServerInfo {
            scope: "server".into(),
            ..Default::default()
        };
        for line in info.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            let int = || value.parse::<u64>().ok();
            match name {
                "used_memory" => s.used_memory_bytes = int(),
                "used_memory_rss" => s.used_memory_rss_bytes = int(),
                "mem_fragmentation_ratio" => s.mem_fragmentation_ratio = value.parse().ok(),
                "maxmemory" => s.maxmemory_bytes = int(),
                "maxmemory_policy" => s.maxmemory_policy = Some(value.to_string()),
                "evicted_keys" => s.evicted_keys = int(),
                "expired_keys" => s.expired_keys = int(),
                "keyspace_hits" => s.keyspace_hits = int(),
                "keyspace_misses" => s.keyspace_misses = int(),
                _ => {}
            }
        }
        if s.mem_fragmentation_ratio.is_none()
            && let (Some(rss), Some(used)) = (s.used_memory_rss_bytes, s.used_memory_bytes)
            && used > 0
        {
            s.mem_fragmentation_ratio = Some(rss as f64 / used as f64);
        }
        if let (Some(hits), Some(misses)) = (s.keyspace_hits, s.keyspace_misses)
            && hits + misses > 0
        {
            s.hit_ratio = Some(hits as f64 / (hits + misses) as f64);
        }
        s
    }
}

impl ProfileCache {
    /// The logical database the origin uses.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// Both scopes: the walk of this database's profile keys and the server's `INFO`.
    pub async fn stats(&self, limits: StatsLimits) -> Result<CacheStats, CacheError> {
        let database = self.database_stats(limits).await?;
        let server = self.server_info().await?;
        Ok(CacheStats { database, server })
    }

    /// `INFO memory stats`, parsed; on a cluster, the sum over every primary.
    pub async fn server_info(&self) -> Result<ServerInfo, CacheError> {
        let nodes = self.server_info_per_node().await?;
        Ok(ServerInfo::sum(nodes.iter().map(|(_, info)| info)))
    }

    /// `INFO memory stats` of each node the origin writes to: the one node (with an empty name), or
    /// each primary of a cluster (by `host:port`).
    pub async fn server_info_per_node(&self) -> Result<Vec<(String, ServerInfo)>, CacheError> {
        let mut out = Vec::new();
        for node in self.nodes().await? {
            let address = node.clone();
            let text: String = self
                .call("info", |mut c| async move {
                    let mut cmd = redis::cmd("INFO");
                    cmd.arg("memory").arg("stats");
                    c.on_node(cmd, address.as_deref()).await
                })
                .await?;
            out.push((node.unwrap_or_default(), ServerInfo::parse(&text)));
        }
        Ok(out)
    }

    /// What `/metrics` reports of a cluster: each primary's `INFO memory stats` (`None` for one that
    /// did not answer) and the slots by state from `CLUSTER INFO`. Empty when not on a cluster.
    pub async fn cluster_figures(&self) -> Result<Vec<(String, Option<ServerInfo>)>, CacheError> {
        let mut out = Vec::new();
        for node in self.nodes().await?.into_iter().flatten() {
            let address = node.clone();
            let info = self
                .call("info", |mut c| async move {
                    let mut cmd = redis::cmd("INFO");
                    cmd.arg("memory").arg("stats");
                    c.on_node::<String>(cmd, Some(&address)).await
                })
                .await
                .ok()
                .map(|text| ServerInfo::parse(&text));
            out.push((node, info));
        }
        Ok(out)
    }

    /// `CLUSTER INFO`'s slots by state (ok, pfail, fail), from any node.
    pub async fn cluster_slots(&self) -> Result<(u64, u64, u64), CacheError> {
        let text: String = self
            .call("cluster_info", |mut c| async move {
                redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await
            })
            .await?;
        parse_cluster_info(&text).ok_or(CacheError::UnexpectedReply)
    }

    /// The nodes a walk or an `INFO` covers: `[None]` (the one node) unless on a cluster, where it is
    /// each primary's `host:port`, as the slot map says (read now if the follower has not yet).
    pub async fn nodes(&self) -> Result<Vec<Option<String>>, CacheError> {
        if !self.topology.is_cluster() {
            return Ok(vec![None]);
        }
        let mut primaries = self.topology.cluster_primaries();
        if primaries.is_empty() {
            let reply: redis::Value = self
                .call("cluster_slots", |mut c| async move {
                    let mut cmd = redis::cmd("CLUSTER");
                    cmd.arg("SLOTS");
                    cmd.query_async(&mut c).await
                })
                .await?;
            let map =
                super::topology::parse_cluster_slots(&reply).ok_or(CacheError::UnexpectedReply)?;
            primaries = map.iter().map(|r| r.primary.address()).collect();
            primaries.sort();
            primaries.dedup();
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    /// Counts and weighs this database's profile keys with `SCAN` and pipelined `MEMORY USAGE`, within
    /// `limits`.
    pub async fn database_stats(&self, limits: StatsLimits) -> Result<DatabaseStats, CacheError> {
        let _one_walk_at_a_time = WALKS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = Instant::now();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut keys = 0_u64;
        let mut memory_bytes = 0_u64;
        let nodes = self.nodes().await?;
        let mut stopped_by = None;
        for node in &nodes {
            stopped_by = self
                .walk_node(
                    node.as_deref(),
                    limits,
                    started,
                    &mut seen,
                    &mut keys,
                    &mut memory_bytes,
                )
                .await?;
            if stopped_by.is_some() {
                break;
            }
        }
        Ok(DatabaseStats {
            scope: "database".into(),
            db: self.db,
            pattern: PATTERN.into(),
            keys,
            memory_bytes,
            average_bytes: (keys > 0).then(|| memory_bytes as f64 / keys as f64),
            complete: stopped_by.is_none(),
            stopped_by: stopped_by.map(str::to_string),
            elapsed_ms: started.elapsed().as_millis() as u64,
            max_keys: limits.max_keys,
            budget_ms: limits.budget.as_millis() as u64,
        })
    }

    /// The walk of one node (`None`: the one node), adding to `keys` and `memory_bytes`; what stopped
    /// it early, if anything.
    async fn walk_node(
        &self,
        node: Option<&str>,
        limits: StatsLimits,
        started: Instant,
        seen: &mut HashSet<Vec<u8>>,
        keys: &mut u64,
        memory_bytes: &mut u64,
    ) -> Result<Option<&'static str>, CacheError> {
        let mut cursor = 0_u64;
        let stopped_by = loop {
            let count = limits.scan_count.max(1);
            let (next, batch): (u64, Vec<Vec<u8>>) = self
                .call("scan", |mut c| async move {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(PATTERN)
                        .arg("COUNT")
                        .arg(count);
                    c.on_node(cmd, node).await
                })
                .await?;
            cursor = next;
            // SCAN may return a key twice (while Redis resizes its table): count each once.
            let room = limits.max_keys.saturating_sub(seen.len());
            let mut fresh = Vec::new();
            let mut truncated = false;
            for key in batch {
                if !key.starts_with(PROFILE_KEY_PREFIX.as_bytes()) || seen.contains(&key) {
                    continue;
                }
                if fresh.len() == room {
                    truncated = true;
                    break;
                }
                seen.insert(key.clone());
                fresh.push(key);
            }
            if !fresh.is_empty() {
                let mut pipe = redis::pipe();
                for key in &fresh {
                    pipe.cmd("MEMORY").arg("USAGE").arg(key);
                }
                // A key that expired since the SCAN step answers nil and is not counted.
                let sizes: Vec<Option<u64>> = self
                    .call("memory_usage", |mut c| async move {
                        c.pipeline_on_node(pipe, node).await
                    })
                    .await?;
                for size in sizes.into_iter().flatten() {
                    *keys += 1;
                    *memory_bytes += size;
                }
            }
            if truncated || (cursor != 0 && seen.len() >= limits.max_keys) {
                break Some("max_keys");
            }
            if cursor == 0 {
                break None;
            }
            if started.elapsed() >= limits.budget {
                break Some("time_budget");
            }
        };
        Ok(stopped_by)
    }
}

/// `cluster_slots_ok`, `cluster_slots_pfail` and `cluster_slots_fail` of `CLUSTER INFO`'s text.
fn parse_cluster_info(text: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.parse().ok())
    };
    Some((
        field("cluster_slots_ok")?,
        field("cluster_slots_pfail")?,
        field("cluster_slots_fail")?,
    ))
}

/// The statistics as a table for people (`aside-origin cache-stats`).
pub fn table(stats: &CacheStats) -> String {
    let d = &stats.database;
    let s = &stats.server;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let walk = match &d.stopped_by {
        None => format!("complete, {} ms", d.elapsed_ms),
        Some(why) => format!(
            "INCOMPLETE: stopped by {why} after {} ms (max {} keys, budget {} ms); figures cover the keys seen",
            d.elapsed_ms, d.max_keys, d.budget_ms
        ),
    };
    let rows_db = [
        ("profile keys", d.keys.to_string()),
        ("memory, total", bytes(d.memory_bytes)),
        (
            "memory, average",
            or_dash(d.average_bytes.map(|a| format!("{a:.0} B"))),
        ),
        ("scan", walk),
    ];
    let policy = s
        .maxmemory_policy
        .as_deref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let rows_server = [
        ("used_memory", or_dash(s.used_memory_bytes.map(bytes))),
        (
            "used_memory_rss",
            or_dash(s.used_memory_rss_bytes.map(bytes)),
        ),
        (
            "fragmentation ratio",
            or_dash(s.mem_fragmentation_ratio.map(|r| format!("{r:.2}"))),
        ),
        (
            "maxmemory",
            or_dash(s.maxmemory_bytes.map(|m| {
                if m == 0 {
                    format!("no limit{policy}")
                } else {
                    format!("{}{policy}", bytes(m))
                }
            })),
        ),
        (
            "evicted keys",
            or_dash(s.evicted_keys.map(|v| v.to_string())),
        ),
        (
            "expired keys",
            or_dash(s.expired_keys.map(|v| v.to_string())),
        ),
        (
            "keyspace hits",
            or_dash(s.keyspace_hits.map(|v| v.to_string())),
        ),
        (
            "keyspace misses",
            or_dash(s.keyspace_misses.map(|v| v.to_string())),
        ),
        (
            "hit ratio",
            or_dash(s.hit_ratio.map(|r| format!("{:.1} %", r * 100.0))),
        ),
    ];
    let mut out = format!(
        "Redis logical database {} (scope: database; keys {})\n",
        d.db, d.pattern
    );
    for (name, value) in rows_db {
        out.push_str(&format!("  {name:<20} {value}\n"));
    }
    out.push_str("Redis server (scope: server; every database and client, since start)\n");
    for (name, value) in rows_server {
        out.push_str(&format!("  {name:<20} {value}\n"));
    }
    out
}

/// `1536` -> `1.5 KiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 * 1024 * 1024), "256.0 MiB");
    }

    #[test]
    fn info_fields_are_read_and_ratios_derived() {
        let text = "# Memory\r\nused_memory:1000\r\nused_memory_rss:3000\r\nmaxmemory:268435456\r\n\
                    maxmemory_policy:volatile-lfu\r\n\r\n# Stats\r\nexpired_keys:4\r\nevicted_keys:2\r\n\
                    keyspace_hits:90\r\nkeyspace_misses:10\r\n";
        let s = ServerInfo::parse(text);
        assert_eq!(s.scope, "server");
        assert_eq!(s.used_memory_bytes, Some(1000));
        assert_eq!(s.used_memory_rss_bytes, Some(3000));
        assert_eq!(s.mem_fragmentation_ratio, Some(3.0));
        assert_eq!(s.maxmemory_bytes, Some(268_435_456));
        assert_eq!(s.maxmemory_policy.as_deref(), Some("volatile-lfu"));
        assert_eq!((s.evicted_keys, s.expired_keys), (Some(2), Some(4)));
        assert_eq!(s.hit_ratio, Some(0.9));
    }

    #[test]
    fn cluster_info_slots_are_read() {
        let text = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16000\r\n\
                    cluster_slots_pfail:384\r\ncluster_slots_fail:0\r\ncluster_known_nodes:6\r\n";
        assert_eq!(parse_cluster_info(text), Some((16000, 384, 0)));
        assert_eq!(parse_cluster_info("cluster_state:fail\r\n"), None);
    }

    #[test]
    fn a_cluster_s_primaries_add_up() {
        let a = ServerInfo::parse(
            "used_memory:1000\nused_memory_rss:2000\nmaxmemory:4000\nmaxmemory_policy:volatile-lfu\n\
             keyspace_hits:30\nkeyspace_misses:10\nevicted_keys:1\n",
        );
        let b = ServerInfo::parse(
            "used_memory:3000\nused_memory_rss:4000\nmaxmemory:4000\nkeyspace_hits:50\nkeyspace_misses:10\n",
        );
        let s = ServerInfo::sum([&a, &b]);
        assert_eq!(s.used_memory_bytes, Some(4000));
        assert_eq!(s.maxmemory_bytes, Some(8000));
        assert_eq!(s.mem_fragmentation_ratio, Some(1.5));
        assert_eq!(s.hit_ratio, Some(0.8));
        assert_eq!(s.evicted_keys, Some(1));
        assert_eq!(s.maxmemory_policy.as_deref(), Some("volatile-lfu"));
        let one = ServerInfo::sum([&a]);
        assert_eq!(one.mem_fragmentation_ratio, a.mem_fragmentation_ratio);
    }

    #[test]
    fn redis_own_fragmentation_ratio_wins_and_no_lookups_means_no_ratio() {
        let s = ServerInfo::parse(
            "used_memory:1000\nused_memory_rss:3000\nmem_fragmentation_ratio:2.50\n\
             keyspace_hits:0\nkeyspace_misses:0\n",
        );
        assert_eq!(s.mem_fragmentation_ratio, Some(2.5));
        assert_eq!(s.hit_ratio, None);
        assert_eq!(ServerInfo::parse("garbage").used_memory_bytes, None);
    }
}
