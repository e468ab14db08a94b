//! A replicated Redis watched by Sentinel, as `deploy/` describes it: every node runs `redis.conf` plus
//! `replica.conf`, with the same ACL users (`users.acl.template` with its `replica` and `sentinel`
//! users: ACLs are not replicated), and each Sentinel runs `sentinel.conf`. Shared by
//! `cargo xtask up --redis-ha` and the test harness, so both run the committed files.

use std::path::Path;
use std::process::Command;

use crate::launch::OriginSettings;
use crate::local::HaPasswords;
use crate::redis_server::{RedisNode, Replication};
use crate::stack::{Secrets, Services};

/// The name the Sentinels monitor the primary under (`sentinel monitor aside ...`, and the origin's
/// ASIDE_REDIS_SENTINEL_MASTER default).
pub const MASTER_NAME: &str = "aside";

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

/// Writes `<dir>/sentinel.conf` from `deploy/sentinel.conf` under `root` (mode 0600, a file of its own:
/// Sentinel rewrites it) and returns the `redis-server --sentinel` command that runs it on `port`. The
/// caller adds its own settings, chooses where the output goes, starts it and waits for the port.
pub fn sentinel_command(
    root: &Path,
    dir: &Path,
    port: u16,
    setup: &SentinelSetup<'_>,
) -> anyhow::Result<Command> {
    let template = std::fs::read_to_string(root.join("deploy/sentinel.conf"))?;
    let path = dir.join("sentinel.conf");
    crate::local::write_private(&path, &render_sentinel_config(&template, setup))?;
    let mut command = Command::new("redis-server");
    command
        .arg(&path)
        .arg("--sentinel")
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir)
        .args(["--daemonize", "no"]);
    Ok(command)
}

/// The ports of a local replicated Redis (`cargo xtask up --redis-ha`).
#[derive(Debug, Clone, Copy)]
pub struct LocalPorts {
    pub primary: u16,
    pub replica: u16,
    pub sentinels: [u16; 3],
}

impl LocalPorts {
    /// The primary on `redis_port`, the replica on the next port, the Sentinels 20000 above those.
    pub fn from_redis_port(redis_port: u16) -> Self {
        let s = redis_port.saturating_add(20000);
        Self {
            primary: redis_port,
            replica: redis_port + 1,
            sentinels: [s, s + 1, s + 2],
        }
    }
}

/// A started local replicated Redis: where it is, and the passwords beyond the stack's own.
pub struct LocalHa {
    pub ports: LocalPorts,
    admin_password: String,
    sentinel_password: String,
}

/// Reads secret `name` in `dir`, generating it on first use (mode 0600).
pub(crate) fn secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_string());
    }
    let value = crate::local::generate_secret();
    crate::local::write_private(&path, &value)?;
    Ok(value)
}

/// Starts a primary, a replica and three Sentinels as services, each with the project's configuration
/// (`deploy/`) and the same ACL users, data under `<state>/redis-ha/`, and waits until the replica is
/// in sync and the Sentinels know it.
pub fn start_local(
    root: &Path,
    ports: LocalPorts,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<LocalHa> {
    let replica_password = secret(&state.join("secrets"), "redis-replica")?;
    let sentinel_password = secret(&state.join("secrets"), "redis-sentinel")?;
    let passwords = HaPasswords {
        replica: &replica_password,
        sentinel: &sentinel_password,
    };
    for (name, port, replica_of) in [
        ("redis-primary", ports.primary, None),
        ("redis-replica", ports.replica, Some(ports.primary)),
    ] {
        let dir = state.join("redis-ha").join(format!("node-{port}"));
        std::fs::create_dir_all(&dir)?;
        let node = RedisNode {
            dir: &dir,
            port,
            passwords: secrets.redis_passwords(),
            replication: Some(Replication {
                passwords,
                replica_of,
            }),
        };
        crate::stack::start_redis_node(name, &node, root, logs, services)?;
    }
    for (name, port) in ["sentinel-1", "sentinel-2", "sentinel-3"]
        .into_iter()
        .zip(ports.sentinels)
    {
        let dir = state.join("redis-ha").join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir)?;
        let setup = SentinelSetup {
            primary_host: "127.0.0.1",
            primary_port: ports.primary,
            sentinel_password: &sentinel_password,
            origin_password: &secrets.redis_origin,
            timings: None,
        };
        services.spawn(
            name,
            sentinel_command(root, &dir, port, &setup)?,
            logs,
            libc::SIGTERM,
        )?;
        services.wait_for_port(port, logs)?;
    }
    Ok(LocalHa {
        ports,
        admin_password: secrets.redis_admin.clone(),
        sentinel_password,
    })
}

impl LocalHa {
    /// The origin's settings for this Redis: the Sentinels instead of ASIDE_REDIS_URL.
    pub fn origin_settings(&self, origin: OriginSettings, origin_password: &str) -> OriginSettings {
        let sentinels: Vec<String> = self
            .ports
            .sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        origin
            .set("ASIDE_REDIS_SENTINELS", sentinels.join(","))
            .set("ASIDE_REDIS_SENTINEL_MASTER", MASTER_NAME)
            .set("ASIDE_REDIS_SENTINEL_USERNAME", "origin")
            .set("ASIDE_REDIS_SENTINEL_PASSWORD", origin_password)
            .set("ASIDE_REDIS_USERNAME", "origin")
            .set("ASIDE_REDIS_PASSWORD", origin_password)
    }

    /// One line per node: its role (asked with `ROLE`) and port.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for port in [self.ports.primary, self.ports.replica] {
            let role = role(port, "admin", &self.admin_password)
                .unwrap_or_else(|e| format!("not answering ({e})"));
            lines.push(format!("  redis-server 127.0.0.1:{port}  role {role}"));
        }
        for port in self.ports.sentinels {
            let role = role(port, "sentinel", &self.sentinel_password)
                .unwrap_or_else(|e| format!("not answering ({e})"));
            lines.push(format!("  sentinel     127.0.0.1:{port}  role {role}"));
        }
        lines.join("\n")
    }
}

/// The first word of `ROLE` on `port` (`master`, `slave`, `sentinel`), as `user`.
fn role(port: u16, user: &str, password: &str) -> anyhow::Result<String> {
    use redis::IntoConnectionInfo as _;
    let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), port)
        .into_connection_info()?
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username(user)
                .set_password(password),
        );
    let timeout = std::time::Duration::from_secs(2);
    let mut connection = redis::Client::open(info)?.get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection)?;
    match reply.first() {
        Some(redis::Value::BulkString(role)) => Ok(String::from_utf8_lossy(role).into_owned()),
        Some(redis::Value::SimpleString(role)) => Ok(role.clone()),
        other => anyhow::bail!("unexpected ROLE reply {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `role` logs in as an ACL user and reads `ROLE` from a real redis-server; a wrong password is an
    /// error, not a role.
    #[test]
    fn role_reads_the_role_of_a_real_server() {
        let port = crate::stack::free_port().expect("a free port");
        let mut server = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--user", "default", "off", "--user", "admin", "on", ">s3cret", "~*", "+@all",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by `cargo xtask test`)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let role = role(port, "admin", "s3cret");
        let refused = role_of_wrong_password(port);
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(role.expect("ROLE"), "master");
        assert!(refused, "a wrong password gave a role");
    }

    fn role_of_wrong_password(port: u16) -> bool {
        role(port, "admin", "wrong").is_err()
    }

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
        let conf = crate::redis_server::render_node_config(
            &deploy("redis.conf"),
            &deploy("replica.conf"),
            true,
        );
        assert!(!conf.lines().any(|l| l.starts_with("include ")));
        assert!(conf.contains("\nreplica-read-only yes\n"));
        assert!(conf.contains("\nmasteruser replica\n"));
        assert!(conf.contains("\nactivedefrag no\n"));
        assert!(conf.find("maxmemory ").unwrap() < conf.find("replica-read-only").unwrap());
    }
}
