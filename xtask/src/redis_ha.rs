//! A replicated Redis watched by Sentinel, as `deploy/` describes it: every node runs `redis.conf` plus
//! `replica.conf`, with the same ACL users (`users.acl.template` with its `replica` and `sentinel`
//! users: ACLs are not replicated), and each Sentinel runs `sentinel.conf`. Shared by
//! `cargo xtask up --redis-ha` and the test harness, so both run the committed files.

/// The name the Sentinels monitor the primary under (`sentinel monitor aside ...`, and the origin's
/// ASIDE_REDIS_SENTINEL_MASTER default).
pub const MASTER_NAME: &str = "aside";

/// The settings of a replicated node: `deploy/redis.conf` (see [`crate::local::render_redis_config`])
/// followed by `deploy/replica.conf` without its `include` line (the file is inlined instead). The
/// primary runs the same file: a replica may be promoted, and the old primary demoted.
pub fn render_node_config(redis_conf: &str, replica_conf: &str, no_active_defrag: bool) -> String {
    let mut out = crate::local::render_redis_config(redis_conf, no_active_defrag);
    out.push_str("\n# ---- deploy/replica.conf ----\n");
    for line in replica_conf.lines() {
        if line.trim_start().starts_with("include ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Sentinel timings, when not `deploy/sentinel.conf`'s (tests fail over in about a second).
#[derive(Debug, Clone, Copy)]
pub struct SentinelTimings {
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
}

/// What a Sentinel's configuration needs besides the template.
#[derive(Debug, Clone, Copy)]
pub struct SentinelSetup<'a> {
    pub primary_host: &'a str,
    pub primary_port: u16,
    /// The `sentinel` user's password (on the Redis nodes and on the Sentinels).
    pub sentinel_password: &'a str,
    /// The `origin` user's password on the Sentinels.
    pub origin_password: &'a str,
    pub timings: Option<SentinelTimings>,
}

/// `deploy/sentinel.conf` with its placeholders filled in (and `timings` applied). Write it mode 0600
/// to a file of its own per Sentinel: Sentinel rewrites it.
pub fn render_sentinel_config(template: &str, setup: &SentinelSetup<'_>) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let mut line = line
            .replace("<primary_host>", setup.primary_host)
            .replace("<primary_port>", &setup.primary_port.to_string())
            .replace("<sentinel_password>", setup.sentinel_password)
            .replace("<origin_password>", setup.origin_password);
        if let Some(t) = setup.timings {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["sentinel", "down-after-milliseconds", name, _] => {
                    line = format!(
                        "sentinel down-after-milliseconds {name} {}",
                        t.down_after_ms
                    );
                }
                ["sentinel", "failover-timeout", name, _] => {
                    line = format!("sentinel failover-timeout {name} {}", t.failover_timeout_ms);
                }
                _ => {}
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn deploy(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn the_sentinel_file_is_filled_in_and_timed() {
        let conf = render_sentinel_config(
            &deploy("sentinel.conf"),
            &SentinelSetup {
                primary_host: "127.0.0.1",
                primary_port: 7001,
                sentinel_password: "s1",
                origin_password: "o1",
                timings: Some(SentinelTimings {
                    down_after_ms: 1000,
                    failover_timeout_ms: 2000,
                }),
            },
        );
        assert!(
            !conf.lines().any(|l| !l.starts_with('#') && l.contains('<')),
            "{conf}"
        );
        assert!(conf.contains(&format!("sentinel monitor {MASTER_NAME} 127.0.0.1 7001 2")));
        assert!(conf.contains("sentinel down-after-milliseconds aside 1000\n"));
        assert!(conf.contains("sentinel failover-timeout aside 2000\n"));
        assert!(conf.contains("sentinel auth-pass aside s1\n"));
        assert!(conf.contains("user origin on >o1 "));
        assert!(conf.contains("user default off"));
    }

    #[test]
    fn a_node_runs_redis_conf_then_replica_conf() {
        let conf = render_node_config(&deploy("redis.conf"), &deploy("replica.conf"), true);
        assert!(!conf.lines().any(|l| l.starts_with("include ")));
        assert!(conf.contains("\nreplica-read-only yes\n"));
        assert!(conf.contains("\nmasteruser replica\n"));
        assert!(conf.contains("\nactivedefrag no\n"));
        assert!(conf.find("maxmemory ").unwrap() < conf.find("replica-read-only").unwrap());
    }
}
