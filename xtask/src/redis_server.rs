//! How the project runs one `redis-server`: `deploy/redis.conf` (plus `deploy/replica.conf` for a node of
//! a replicated Redis) and the ACL users of `deploy/users.acl.template`, written with their passwords
//! into the node's own folder, which also holds its data. The one launcher of `cargo xtask up`/`bench`
//! ([`crate::stack::start_redis_node`]) and of the test harness (`tests/src/harness/redis_server.rs`):
//! each supervises the process its own way, but both start it from [`RedisNode::command`].

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::local::{self, HaPasswords, RedisPasswords};

/// Set once a redis-server refused `activedefrag yes` (see [`retry_without_defrag`]): every node
/// prepared after that runs with `activedefrag no`.
static NO_ACTIVE_DEFRAG: AtomicBool = AtomicBool::new(false);

/// One redis-server to start.
#[derive(Clone, Copy)]
pub struct RedisNode<'a> {
    /// Its folder: `redis.conf`, `users.acl` and its data (the AOF) live there.
    pub dir: &'a Path,
    pub port: u16,
    pub passwords: RedisPasswords<'a>,
    /// A node of a replicated Redis watched by Sentinel (see [`crate::redis_ha`]).
    pub replication: Option<Replication<'a>>,
}

/// What a node of a replicated Redis has besides a single one.
#[derive(Clone, Copy)]
pub struct Replication<'a> {
    /// The `replica` user (which every node logs in to its primary as) and the `sentinel` user.
    pub passwords: HaPasswords<'a>,
    /// The primary's port (on 127.0.0.1), for a node that starts as a replica.
    pub replica_of: Option<u16>,
}

impl RedisNode<'_> {
    /// Writes the node's `users.acl` and `redis.conf` (mode 0600) from the templates under `root`
    /// (the workspace) and returns the `redis-server` command that runs them on its port with its
    /// folder. The caller adds its own settings (a command-line setting overrides the file's), chooses
    /// where the output goes, starts it and waits for the port; if it does not start, see
    /// [`retry_without_defrag`].
    pub fn command(&self, root: &Path) -> anyhow::Result<Command> {
        let read = |name: &str| std::fs::read_to_string(root.join("deploy").join(name));
        let acl = local::render_acl_with(
            &read("users.acl.template")?,
            &self.passwords,
            self.replication.map(|r| r.passwords),
        );
        local::write_private(&self.dir.join("users.acl"), &acl)?;
        let no_defrag = NO_ACTIVE_DEFRAG.load(Ordering::Relaxed);
        let config = match self.replication {
            None => local::render_redis_config(&read("redis.conf")?, no_defrag),
            Some(_) => render_node_config(&read("redis.conf")?, &read("replica.conf")?, no_defrag),
        };
        local::write_private(&self.dir.join("redis.conf"), &config)?;
        let mut command = Command::new("redis-server");
        command
            .arg(self.dir.join("redis.conf"))
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir)
            .arg("--aclfile")
            .arg(self.dir.join("users.acl"))
            .args(["--maxmemory", "256mb", "--daemonize", "no"]);
        if let Some(replication) = self.replication {
            // Every node may be (or become) a replica: it logs in to its primary as `replica`.
            command.args(["--masterauth", replication.passwords.replica]);
            if let Some(primary) = replication.replica_of {
                command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
            }
        }
        Ok(command)
    }
}

/// Whether a redis-server that did not start, having printed `log`, should be started once more from
/// a new [`RedisNode::command`]: Debian's and Ubuntu's redis-server are built against the system
/// jemalloc, which cannot defragment, and refuse the production setting `activedefrag yes`. They then
/// run with defragmentation off rather than not at all (this and every later node).
pub fn retry_without_defrag(log: &str) -> bool {
    let refused = log.contains(local::NO_ACTIVE_DEFRAG_MESSAGE);
    if refused {
        NO_ACTIVE_DEFRAG.store(true, Ordering::Relaxed);
    }
    refused
}

/// The settings of a replicated node: `deploy/redis.conf` (see [`local::render_redis_config`])
/// followed by `deploy/replica.conf` without its `include` line (the file is inlined instead). The
/// primary runs the same file: a replica may be promoted, and the old primary demoted.
pub fn render_node_config(redis_conf: &str, replica_conf: &str, no_active_defrag: bool) -> String {
    let mut out = local::render_redis_config(redis_conf, no_active_defrag);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_node_is_written_and_commanded_with_its_primary() {
        let dir = std::env::temp_dir().join(format!("aside-node-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let node = RedisNode {
            dir: &dir,
            port: 7001,
            passwords: RedisPasswords {
                origin: "o1",
                edge: "e1",
                admin: "a1",
            },
            replication: Some(Replication {
                passwords: HaPasswords {
                    replica: "r1",
                    sentinel: "s1",
                },
                replica_of: Some(7000),
            }),
        };
        let command = node.command(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").as_path());
        let args: Vec<String> = command
            .unwrap()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let acl = std::fs::read_to_string(dir.join("users.acl")).unwrap();
        let conf = std::fs::read_to_string(dir.join("redis.conf")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(acl.contains("user replica on >r1 "), "{acl}");
        assert!(conf.contains("\nmasteruser replica\n"), "{conf}");
        let joined = args.join(" ");
        assert!(joined.contains("--port 7001 "), "{joined}");
        assert!(
            joined.contains("--masterauth r1 --replicaof 127.0.0.1 7000"),
            "{joined}"
        );
    }
}
