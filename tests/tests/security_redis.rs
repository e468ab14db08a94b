//! Redis least privilege and TLS.
//!
//! * The ACL file rendered from `deploy/users.acl.template` is the only way in: `default` cannot
//!   authenticate, and `edge` and `origin` are refused (`NOPERM`) one command of every class their
//!   role does not need. Each command goes over a raw RESP connection, as a compromised client would
//!   send it, with no client library in between to refuse or rewrite anything. That server runs with
//!   `DEBUG`, `MODULE` and protected configs enabled, so the ACLs alone stand in the way, and canary
//!   data, scripts, functions, configuration, users and replication role are compared before and
//!   after: nothing may change, not even in part.
//! * What each role needs works, through the same client library the services use.
//! * Normal operation (origin fills, write-through, missing markers, the edge component reading tier 2)
//!   causes no ACL denial, and the edge component's connection is the `edge` user's.
//! * TLS: the origin and the edge (under the bundled host) use Redis over `rediss://` with a
//!   throwaway CA; a client that does not trust the CA is refused, and the origin then serves from
//!   PostgreSQL; Redis can require client certificates, which the origin can present.
//!
//! Needs `cargo build -p aside-origin --features aside-origin/test-hooks` and
//! `cargo build -p aside-edge --target wasm32-wasip2 --release` (`cargo xtask test` does both).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aside_tests::harness::{
    EdgeOptions, Origin, OriginOptions, RedisServer, RedisUser, Stack, TestCa, TlsOptions, bin_dir,
    free_port, generate_secret, http_client, metric, temp_dir,
};
use redis::AsyncCommands as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

/// The canary profile hash: the one key both services may touch.
const PROFILE: &str = "user:profile:{1}";
/// A lease key: the origin's, not the edge's.
const LEASE: &str = "user:lease:{1}";
/// Keys outside both services' prefixes.
const OTHER: &str = "other:key";
/// The invalidation feed's stream and counter (the edge reads the stream, the origin's script writes both).
const FEED: &str = aside_shared::feed::FEED_KEY;
const FEED_SEQ: &str = aside_shared::feed::FEED_SEQ_KEY;
/// One stream entry as `XREAD` returns it: its id and its field/value list.
type StreamEntry = (String, Vec<String>);
const OTHER_HASH: &str = "other:hash";
/// A function library loaded by the admin, that no service may call, list or delete.
const FUNCTION_LIBRARY: &str =
    "#!lua name=canarylib\nredis.register_function('canary_fn', function() return 1 end)";

// ---------------------------------------------------------------------------------------------
// A raw RESP connection: what a client that ignores every library convention can send.
// ---------------------------------------------------------------------------------------------

/// The first line of a reply: `Err` holds an error's text (`NOPERM ...`), `Ok` anything else.
type Reply = Result<String, String>;

struct Raw {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to redis-server");
        Raw {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Logs in as `user` and selects `db`; both must succeed.
    async fn login(port: u16, user: &str, password: &str, db: u32) -> Raw {
        let mut raw = Raw::connect(port).await;
        let auth = raw.call(&["AUTH", user, password]).await;
        assert_eq!(auth, Ok("+OK".to_string()), "AUTH as {user}");
        let select = raw.call(&["SELECT", &db.to_string()]).await;
        assert_eq!(select, Ok("+OK".to_string()), "SELECT {db} as {user}");
        raw
    }

    /// Sends one command and reads the first line of its reply (enough to tell an error from a
    /// success; the connection is not reused after a success).
    async fn call(&mut self, args: &[&str]) -> Reply {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg.as_bytes());
            frame.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&frame).await.expect("send");
        let line = tokio::time::timeout(Duration::from_secs(10), self.line())
            .await
            .unwrap_or_else(|_| Err(format!("no reply to {args:?} within 10 s")))?;
        match line.strip_prefix('-') {
            Some(error) => Err(error.to_string()),
            None => Ok(line),
        }
    }

    async fn line(&mut self) -> Reply {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Err("connection closed by the server".to_string()),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }
}

/// Whether an error is an ACL refusal: `NOPERM` for a command or its keys; inside a script, Redis 7.0
/// reports the same refusal as `ERR The user executing the script can't ...`.
fn is_acl_denial(error: &str) -> bool {
    error.starts_with("NOPERM ") || error.contains("The user executing the script can't")
}

// ---------------------------------------------------------------------------------------------
// What each user must be refused.
// ---------------------------------------------------------------------------------------------

/// One forbidden command and the class of abuse it stands for.
struct Case {
    class: &'static str,
    args: Vec<String>,
}

fn case(class: &'static str, args: &[&str]) -> Case {
    Case {
        class,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

/// The scripts the admin loads before the denial runs (the script cache is server-wide, so a user
/// can `EVALSHA` them without `SCRIPT LOAD`): each tries what its name says.
struct Scripts {
    harmless: String,
    writes_other_key: String,
    flushes: String,
    publishes: String,
    writes_other_hash: String,
    lists_keys: String,
}

/// Classes both services are refused.
fn common_cases(db: u32, scripts: &Scripts, dead_port: u16) -> Vec<Case> {
    let other_db = (db + 1).to_string();
    let db = db.to_string();
    let dead_port = dead_port.to_string();
    vec![
        // Writes neither service needs, on their own keys and on others.
        case("write", &["HDEL", PROFILE, "full_name"]),
        case("write", &["HSETNX", PROFILE, "x", "y"]),
        case("write", &["HINCRBY", PROFILE, "_version", "1"]),
        case("write", &["UNLINK", PROFILE]),
        case("write", &["EXPIRE", PROFILE, "1"]),
        case("write", &["PERSIST", PROFILE]),
        case("write", &["RENAME", PROFILE, "user:profile:{2}"]),
        case("write", &["COPY", PROFILE, "user:profile:{2}"]),
        case("write", &["GETDEL", LEASE]),
        case("write", &["MSET", PROFILE, "x", OTHER, "y"]),
        case("write", &["APPEND", LEASE, "x"]),
        case("write", &["INCR", LEASE]),
        case("write", &["SETEX", "user:profile:{2}", "10", "x"]),
        case("write", &["LPUSH", "user:profile:{3}", "x"]),
        case("write", &["XADD", "user:profile:{3}", "*", "f", "v"]),
        case("write", &["RESTORE", "user:profile:{2}", "0", "garbage"]),
        case("write", &["SET", OTHER, "x"]),
        case("write", &["HSET", OTHER_HASH, "f", "v"]),
        case("write", &["DEL", OTHER]),
        case("write", &["PEXPIRE", OTHER, "1"]),
        case("transaction", &["MULTI"]),
        // Flushes.
        case("flush", &["FLUSHALL"]),
        case("flush", &["FLUSHALL", "ASYNC"]),
        case("flush", &["FLUSHDB"]),
        case("flush", &["FLUSHDB", "SYNC"]),
        // Ad-hoc scripts and functions.
        case("script", &["EVAL", "return 1", "0"]),
        case("script", &["EVAL_RO", "return 1", "0"]),
        case("script", &["EVALSHA_RO", &scripts.harmless, "0"]),
        case("script", &["SCRIPT", "FLUSH"]),
        case("script", &["SCRIPT", "KILL"]),
        case("script", &["SCRIPT", "EXISTS", &scripts.harmless]),
        case("script", &["FUNCTION", "LOAD", "REPLACE", FUNCTION_LIBRARY]),
        case("script", &["FUNCTION", "FLUSH"]),
        case("script", &["FUNCTION", "DELETE", "canarylib"]),
        case("script", &["FUNCTION", "LIST"]),
        case("script", &["FUNCTION", "DUMP"]),
        case("script", &["FCALL", "canary_fn", "0"]),
        case("script", &["FCALL_RO", "canary_fn", "0"]),
        // Enumeration.
        case("enumeration", &["KEYS", "*"]),
        case("enumeration", &["RANDOMKEY"]),
        case("enumeration", &["DBSIZE"]),
        // Keys outside the prefixes, with commands the user does have.
        case("foreign key", &["HGETALL", OTHER_HASH]),
        case("foreign key", &["HMGET", OTHER_HASH, "f"]),
        case("foreign key", &["HGETALL", "user:profile"]),
        case("foreign key", &["HGETALL", "xuser:profile:1"]),
        case("foreign key", &["HGETALL", "USER:PROFILE:1"]),
        case("foreign key", &["GET", OTHER]),
        // Pub/sub.
        case("pub/sub", &["SUBSCRIBE", "aside"]),
        case("pub/sub", &["PSUBSCRIBE", "*"]),
        case("pub/sub", &["SSUBSCRIBE", "aside"]),
        case("pub/sub", &["PUBLISH", "aside", "x"]),
        case("pub/sub", &["SPUBLISH", "aside", "x"]),
        case("pub/sub", &["PUBSUB", "CHANNELS"]),
        // Administration.
        case("admin", &["CONFIG", "GET", "*"]),
        case("admin", &["CONFIG", "SET", "maxmemory", "1mb"]),
        case("admin", &["CONFIG", "SET", "dir", "/tmp"]),
        case("admin", &["CONFIG", "REWRITE"]),
        case("admin", &["CONFIG", "RESETSTAT"]),
        case("admin", &["DEBUG", "SLEEP", "0"]),
        case("admin", &["DEBUG", "OBJECT", PROFILE]),
        case("admin", &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]),
        case("admin", &["SHUTDOWN", "NOSAVE"]),
        case("admin", &["ACL", "LIST"]),
        case("admin", &["ACL", "GETUSER", "admin"]),
        case(
            "admin",
            &["ACL", "SETUSER", "intruder", "on", ">pw", "~*", "+@all"],
        ),
        case("admin", &["ACL", "SETUSER", "edge", "+@all"]),
        case("admin", &["ACL", "DELUSER", "admin"]),
        case("admin", &["ACL", "LOAD"]),
        case("admin", &["ACL", "SAVE"]),
        case("admin", &["ACL", "LOG"]),
        case("admin", &["MONITOR"]),
        case("admin", &["CLIENT", "LIST"]),
        case("admin", &["CLIENT", "KILL", "USER", "admin"]),
        case("admin", &["CLIENT", "PAUSE", "1000"]),
        case("admin", &["CLIENT", "SETNAME", "admin-console"]),
        case("admin", &["SAVE"]),
        case("admin", &["BGSAVE"]),
        case("admin", &["BGREWRITEAOF"]),
        case("admin", &["LASTSAVE"]),
        case("admin", &["REPLICAOF", "127.0.0.1", &dead_port]),
        case("admin", &["REPLICAOF", "NO", "ONE"]),
        case("admin", &["SLAVEOF", "NO", "ONE"]),
        case("admin", &["SYNC"]),
        case("admin", &["PSYNC", "?", "-1"]),
        case("admin", &["FAILOVER", "ABORT"]),
        case(
            "admin",
            &["MIGRATE", "127.0.0.1", &dead_port, PROFILE, "0", "100"],
        ),
        case("admin", &["MODULE", "LIST"]),
        case("admin", &["MODULE", "LOAD", "/nonexistent/module.so"]),
        case("admin", &["SWAPDB", &db, &other_db]),
        case("admin", &["MOVE", PROFILE, &other_db]),
        case("admin", &["SLOWLOG", "RESET"]),
        case("admin", &["LATENCY", "RESET"]),
        case("admin", &["MEMORY", "PURGE"]),
        case("admin", &["MEMORY", "STATS"]),
        case("admin", &["OBJECT", "ENCODING", PROFILE]),
        // The origin may read the slot map and `CLUSTER INFO` (a cluster's coverage), nothing else.
        case("admin", &["CLUSTER", "NODES"]),
        case("admin", &["CLUSTER", "RESET"]),
        // Scripts the admin loaded run with the caller's permissions.
        case("script", &["EVALSHA", &scripts.writes_other_key, "0"]),
        case("script", &["EVALSHA", &scripts.flushes, "0"]),
        case("script", &["EVALSHA", &scripts.publishes, "0"]),
        case("script", &["EVALSHA", &scripts.writes_other_hash, "0"]),
        case("script", &["EVALSHA", &scripts.lists_keys, "0"]),
    ]
}

/// The edge reads profile hashes and nothing else.
fn edge_cases(db: u32, scripts: &Scripts, dead_port: u16) -> Vec<Case> {
    let mut cases = common_cases(db, scripts, dead_port);
    cases.extend([
        case("write", &["SET", PROFILE, "x"]),
        case("write", &["SET", LEASE, "edge", "NX", "PX", "1000"]),
        case("write", &["HSET", PROFILE, "full_name", "x"]),
        case("write", &["DEL", PROFILE]),
        case("write", &["PEXPIRE", PROFILE, "1"]),
        case("script", &["EVALSHA", &scripts.harmless, "0"]),
        case("script", &["SCRIPT", "LOAD", "return 1"]),
        case("enumeration", &["SCAN", "0"]),
        case("enumeration", &["SCAN", "0", "MATCH", "*", "COUNT", "1000"]),
        case("foreign key", &["HGET", OTHER_HASH, "f"]),
        case("foreign key", &["HGETALL", LEASE]),
        case("read", &["EXISTS", PROFILE]),
        case("read", &["TYPE", PROFILE]),
        case("read", &["DUMP", PROFILE]),
        case("admin", &["INFO"]),
        case("admin", &["MEMORY", "USAGE", PROFILE]),
        // The feed: read with XREAD, nothing else.
        case("write", &["XADD", FEED, "*", "s", "1", "k", "h"]),
        case("write", &["XTRIM", FEED, "MAXLEN", "0"]),
        case("write", &["XDEL", FEED, "1-0"]),
        case("write", &["DEL", FEED]),
        case("write", &["INCR", FEED_SEQ]),
        case("read", &["XRANGE", FEED, "-", "+"]),
        case("read", &["XINFO", "STREAM", FEED]),
        case("read", &["GET", FEED_SEQ]),
        case("foreign key", &["HGETALL", FEED]),
        case("foreign key", &["XREAD", "STREAMS", PROFILE, "0"]),
        case("foreign key", &["XREAD", "STREAMS", OTHER, "0"]),
    ]);
    cases
}

/// The origin writes its prefixes through its own script, takes leases, reads statistics.
fn origin_cases(db: u32, scripts: &Scripts, dead_port: u16) -> Vec<Case> {
    let mut cases = common_cases(db, scripts, dead_port);
    cases.extend([
        case("write", &["SET", "user:lock:1", "x", "NX", "PX", "1000"]),
        case("write", &["HSET", "user:profile", "f", "v"]),
        // One allowed key and one foreign key: the whole command is refused, the allowed key too.
        case("write", &["DEL", PROFILE, OTHER]),
        case("foreign key", &["EXISTS", OTHER]),
        case("foreign key", &["MEMORY", "USAGE", OTHER]),
        case("foreign key", &["HGETALL", "user:leases:1"]),
        // A key outside the prefixes named as a script key is refused before the script runs.
        case(
            "script",
            &["EVALSHA", &scripts.writes_other_key, "1", OTHER],
        ),
        case("read", &["DUMP", PROFILE]),
        case("read", &["TYPE", PROFILE]),
        case("read", &["HGET", PROFILE, "full_name"]),
        // The feed: written by its scripts (XADD, INCR), never trimmed, deleted or read by hand.
        case("write", &["XTRIM", FEED, "MAXLEN", "0"]),
        case("write", &["DEL", FEED]),
        case("write", &["XDEL", FEED, "1-0"]),
        case("write", &["INCR", PROFILE]),
        case("write", &["XADD", OTHER, "*", "f", "v"]),
        case("read", &["XRANGE", FEED, "-", "+"]),
        case("read", &["XREAD", "STREAMS", FEED, "0"]),
    ]);
    cases
}

// ---------------------------------------------------------------------------------------------
// The server the denial tests attack, and what must survive them.
// ---------------------------------------------------------------------------------------------

static DENIAL_SERVER: OnceCell<RedisServer> = OnceCell::const_new();

/// A server for the denial tests alone, with the switches that would otherwise refuse `DEBUG`,
/// `MODULE` and protected `CONFIG SET`s turned on: a refusal can then only come from the ACLs.
async fn denial_server() -> &'static RedisServer {
    DENIAL_SERVER
        .get_or_init(|| async {
            RedisServer::start_with_args(&[
                "--enable-debug-command",
                "yes",
                "--enable-module-command",
                "yes",
                "--enable-protected-configs",
                "yes",
            ])
            .await
            .expect("start the denial-test redis-server")
        })
        .await
}

/// Loads the canaries into `db` and `db + 1` and the scripts and function library every user will
/// try; returns the scripts' hashes.
async fn arrange(server: &RedisServer, db: u32) -> Scripts {
    let mut admin = server.admin(db).await.unwrap();
    let _: () = admin
        .hset_multiple(PROFILE, &[("full_name", "Canary"), ("_version", "1")])
        .await
        .unwrap();
    let _: () = admin.set(LEASE, "holder").await.unwrap();
    let _: () = admin.set(OTHER, "secret").await.unwrap();
    let _: () = admin.hset(OTHER_HASH, "f", "secret").await.unwrap();
    let mut next = server.admin(db + 1).await.unwrap();
    let _: () = next.set("canary:db", "next").await.unwrap();

    let load = |body: &'static str| {
        let mut admin = admin.clone();
        async move {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(body)
                .query_async::<String>(&mut admin)
                .await
                .unwrap()
        }
    };
    let scripts = Scripts {
        harmless: load("return 1").await,
        writes_other_key: load("return redis.call('SET', 'other:key', 'owned')").await,
        flushes: load("return redis.call('FLUSHALL')").await,
        // (Not CONFIG: Redis refuses that in any script, so it would prove nothing about ACLs.)
        publishes: load("return redis.call('PUBLISH', 'aside', 'x')").await,
        writes_other_hash: load("return redis.call('HSET', 'other:hash', 'f', 'owned')").await,
        lists_keys: load("return redis.call('KEYS', '*')").await,
    };
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(FUNCTION_LIBRARY)
        .query_async(&mut admin)
        .await
        .unwrap();
    scripts
}

/// Everything a refused command could have changed.
#[derive(PartialEq)]
struct Snapshot {
    /// `(db, key)` -> (type, `DUMP` payload, has a TTL).
    keys: BTreeMap<(u32, String), (String, Vec<u8>, bool)>,
    config: Vec<String>,
    users: Vec<String>,
    role: String,
    last_save: i64,
    scripts_cached: Vec<bool>,
    functions: Vec<u8>,
}

impl Snapshot {
    async fn take(server: &RedisServer, db: u32, scripts: &Scripts) -> Snapshot {
        let mut keys = BTreeMap::new();
        for db in [db, db + 1] {
            let mut admin = server.admin(db).await.expect("admin connection");
            let names: Vec<String> = admin.keys("*").await.unwrap();
            for name in names {
                let kind: String = redis::cmd("TYPE")
                    .arg(&name)
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                let dump: Vec<u8> = redis::cmd("DUMP")
                    .arg(&name)
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                let pttl: i64 = admin.pttl(&name).await.unwrap();
                keys.insert((db, name), (kind, dump, pttl >= 0));
            }
        }
        let mut admin = server.admin(db).await.unwrap();
        let mut config: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("*")
            .query_async(&mut admin)
            .await
            .unwrap();
        config.sort();
        let users: Vec<String> = redis::cmd("ACL")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut admin).await.unwrap();
        let last_save: i64 = redis::cmd("LASTSAVE")
            .query_async(&mut admin)
            .await
            .unwrap();
        let scripts_cached: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&scripts.harmless)
            .arg(&scripts.writes_other_key)
            .arg(&scripts.flushes)
            .query_async(&mut admin)
            .await
            .unwrap();
        let functions: Vec<u8> = redis::cmd("FUNCTION")
            .arg("DUMP")
            .query_async(&mut admin)
            .await
            .unwrap();
        Snapshot {
            keys,
            config,
            users,
            role: format!("{role:?}"),
            last_save,
            scripts_cached,
            functions,
        }
    }

    /// What differs, by name only: the values may include password hashes.
    fn differences(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (key, before) in &self.keys {
            match after.keys.get(key) {
                None => out.push(format!("key {key:?} is gone")),
                Some(now) if now != before => out.push(format!("key {key:?} changed")),
                Some(_) => {}
            }
        }
        for key in after.keys.keys() {
            if !self.keys.contains_key(key) {
                out.push(format!("key {key:?} appeared"));
            }
        }
        let fields = [
            ("configuration", self.config == after.config),
            ("ACL users", self.users == after.users),
            ("replication role", self.role == after.role),
            ("LASTSAVE", self.last_save == after.last_save),
            ("script cache", self.scripts_cached == after.scripts_cached),
            ("function libraries", self.functions == after.functions),
        ];
        out.extend(
            fields
                .into_iter()
                .filter(|(_, same)| !same)
                .map(|(name, _)| format!("{name} changed")),
        );
        out
    }
}

/// Runs every case as `user` on fresh connections; returns one line per case that was not refused.
async fn refusals(server: &RedisServer, user: RedisUser, db: u32, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for Case { class, args } in cases {
        let mut raw = Raw::login(server.port, user.name(), server.password(user), db).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match raw.call(&args).await {
            Err(error) if is_acl_denial(&error) => {}
            Err(error) => failures.push(format!(
                "{} {class}: {args:?} was refused, but not by the ACLs: {error}",
                user.name()
            )),
            Ok(reply) => failures.push(format!(
                "{} {class}: {args:?} was ACCEPTED (reply {reply:?}); expected NOPERM",
                user.name()
            )),
        }
    }
    failures
}

async fn assert_all_refused(user: RedisUser, db: u32, cases: fn(u32, &Scripts, u16) -> Vec<Case>) {
    let server = denial_server().await;
    let scripts = arrange(server, db).await;
    let cases = cases(db, &scripts, free_port());
    let before = Snapshot::take(server, db, &scripts).await;
    let failures = refusals(server, user, db, &cases).await;
    let after = Snapshot::take(server, db, &scripts).await;
    let changes = before.differences(&after);
    assert!(
        failures.is_empty() && changes.is_empty(),
        "{} of {} forbidden commands were not refused by the ACLs:\n  {}\nchanges on the server:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  "),
        changes.join("\n  ")
    );
    // The server is still up (SHUTDOWN, DEBUG and friends were refused) and the canary intact.
    let mut admin = server.admin(db).await.unwrap();
    let name: String = admin.hget(PROFILE, "full_name").await.unwrap();
    assert_eq!(name, "Canary");
}

#[tokio::test]
async fn the_edge_user_is_refused_everything_but_reading_profiles() {
    assert_all_refused(RedisUser::Edge, 10, edge_cases).await;
}

#[tokio::test]
async fn the_origin_user_is_refused_everything_outside_its_role() {
    assert_all_refused(RedisUser::Origin, 20, origin_cases).await;
}

#[tokio::test]
async fn the_default_user_cannot_log_in_and_unauthenticated_clients_can_do_nothing() {
    let server = denial_server().await;
    let db = 30;
    arrange(server, db).await;
    let mut failures = Vec::new();

    // Without AUTH every command is refused.
    for args in [
        &["PING"][..],
        &["HGETALL", PROFILE],
        &["GET", OTHER],
        &["SET", OTHER, "x"],
        &["FLUSHALL"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "*"],
        &["EVAL", "return 1", "0"],
        &["SUBSCRIBE", "aside"],
        &["SELECT", "1"],
    ] {
        let mut raw = Raw::connect(server.port).await;
        match raw.call(args).await {
            Err(e) if e.starts_with("NOAUTH ") => {}
            other => failures.push(format!(
                "unauthenticated {args:?}: {other:?}, expected NOAUTH"
            )),
        }
    }

    // `default` is off: no password works, nor does HELLO's AUTH.
    for args in [
        &["AUTH", "default", ""][..],
        &["AUTH", "default", "nopass"],
        &["AUTH", "default", &generate_secret()],
        &["HELLO", "2", "AUTH", "default", "x"],
        &["HELLO", "3", "AUTH", "default", "x"],
        &["AUTH", "edge", "not-the-password"],
        &["AUTH", "origin", server.password(RedisUser::Edge)],
        &["AUTH", "admin", server.password(RedisUser::Origin)],
    ] {
        let mut raw = Raw::connect(server.port).await;
        match raw.call(args).await {
            Err(e) if e.starts_with("WRONGPASS ") => {
                // Still unauthenticated afterwards.
                match raw.call(&["GET", OTHER]).await {
                    Err(e) if e.starts_with("NOAUTH ") => {}
                    other => failures.push(format!("after {args:?}: GET gave {other:?}")),
                }
            }
            other => failures.push(format!("{args:?}: {other:?}, expected WRONGPASS")),
        }
    }

    // The client library's view: a URL without a user, or with `default`, does not connect.
    for url in [
        format!("redis://127.0.0.1:{}/0", server.port),
        format!("redis://default:x@127.0.0.1:{}/0", server.port),
        format!(
            "redis://:{}@127.0.0.1:{}/0",
            server.password(RedisUser::Admin),
            server.port
        ),
    ] {
        let client = redis::Client::open(url.as_str()).unwrap();
        let result = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        }
        .await;
        if let Ok(pong) = result {
            failures.push(format!(
                "a client without a valid user got {pong:?} from PING (url without password: {})",
                url.split('@').next_back().unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut admin = server.admin(db).await.unwrap();
    let name: String = admin.hget(PROFILE, "full_name").await.unwrap();
    assert_eq!(name, "Canary");
}

// ---------------------------------------------------------------------------------------------
// What each role needs.
// ---------------------------------------------------------------------------------------------

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

#[tokio::test]
async fn the_edge_user_reads_profile_hashes() {
    let stack = Stack::shared().await;
    let db = stack.env().await.unwrap().redis_db;
    let mut admin = stack.redis.admin(db).await.unwrap();
    let _: () = admin
        .hset_multiple(PROFILE, &[("full_name", "Ana"), ("_version", "3")])
        .await
        .unwrap();

    let mut edge = connect(&stack.redis.url(RedisUser::Edge, db)).await;
    let pong: String = redis::cmd("PING").query_async(&mut edge).await.unwrap();
    assert_eq!(pong, "PONG");
    let all: BTreeMap<String, String> = edge.hgetall(PROFILE).await.unwrap();
    assert_eq!(all["full_name"], "Ana");
    let some: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(PROFILE)
        .arg("_version")
        .arg("email")
        .query_async(&mut edge)
        .await
        .unwrap();
    assert_eq!(some, vec![Some("3".to_string()), None]);
    let one: String = edge.hget(PROFILE, "full_name").await.unwrap();
    assert_eq!(one, "Ana");
    // An absent profile reads as empty, not as a refusal.
    let none: BTreeMap<String, String> = edge.hgetall("user:profile:{404}").await.unwrap();
    assert!(none.is_empty());
    // The invalidation feed: a non-blocking XREAD (nothing yet: nil).
    let nothing: redis::Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(FEED)
        .arg("0")
        .query_async(&mut edge)
        .await
        .unwrap();
    assert_eq!(nothing, redis::Value::Nil);
    let _: String = redis::cmd("XADD")
        .arg(FEED)
        .arg("*")
        .arg("s")
        .arg(1)
        .arg("k")
        .arg("h")
        .query_async(&mut admin)
        .await
        .unwrap();
    let read: Vec<(String, Vec<StreamEntry>)> = redis::cmd("XREAD")
        .arg("STREAMS")
        .arg(FEED)
        .arg("0")
        .query_async(&mut edge)
        .await
        .unwrap();
    assert_eq!(read[0].1.len(), 1, "{read:?}");
}

#[tokio::test]
async fn the_origin_user_fills_with_its_script_takes_leases_and_reads_statistics() {
    let stack = Stack::shared().await;
    let db = stack.env().await.unwrap().redis_db;
    let mut admin = stack.redis.admin(db).await.unwrap();
    let _: () = admin.set(OTHER, "not the origin's").await.unwrap();
    let mut origin = connect(&stack.redis.url(RedisUser::Origin, db)).await;

    // The compare-and-set script the origin runs for every write: SCRIPT LOAD, then EVALSHA.
    let script = redis::Script::new(include_str!("../../origin/src/cache/store_if_newer.lua"));
    let written: Vec<i64> = script
        .key(FEED)
        .key(FEED_SEQ)
        .key(PROFILE)
        .arg(100) // the feed's cap
        .arg(2) // the feed's keys come first (one node, not a cluster)
        .arg(5) // version
        .arg(1) // rank: a profile
        .arg(60_000) // ttl_ms
        .arg(0) // only_if_cached
        .arg(1) // announce on the feed
        .arg(2) // field/value pairs
        .arg("_version")
        .arg(5)
        .arg("full_name")
        .arg("Rui")
        .invoke_async(&mut origin)
        .await
        .unwrap();
    assert_eq!(written, vec![1]);
    let all: BTreeMap<String, String> = origin.hgetall(PROFILE).await.unwrap();
    assert_eq!(all["full_name"], "Rui");
    let ttl: i64 = admin.pttl(PROFILE).await.unwrap();
    assert!(ttl > 0, "the script set a TTL: {ttl}");
    let exists: bool = origin.exists(PROFILE).await.unwrap();
    assert!(exists);
    // The same step announced it on the feed, numbered by the counter.
    let announced: i64 = redis::cmd("XLEN")
        .arg(FEED)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(announced, 1);
    let seq: i64 = admin.get(FEED_SEQ).await.unwrap();
    assert_eq!(seq, 1);
    // The heartbeat script.
    let beat: i64 = redis::Script::new(include_str!("../../origin/src/cache/feed_heartbeat.lua"))
        .key(FEED)
        .key(FEED_SEQ)
        .arg(100)
        .invoke_async(&mut origin)
        .await
        .unwrap();
    assert_eq!(beat, 2);

    // A lease: SET NX PX takes it once.
    let taken: Option<String> = redis::cmd("SET")
        .arg(LEASE)
        .arg("token-1")
        .arg("NX")
        .arg("PX")
        .arg(5_000)
        .query_async(&mut origin)
        .await
        .unwrap();
    assert_eq!(taken.as_deref(), Some("OK"));
    let again: Option<String> = redis::cmd("SET")
        .arg(LEASE)
        .arg("token-2")
        .arg("NX")
        .arg("PX")
        .arg(5_000)
        .query_async(&mut origin)
        .await
        .unwrap();
    assert_eq!(again, None, "a held lease is not taken twice");
    let _: () = origin.pexpire(LEASE, 1_000).await.unwrap();
    let released: i64 = origin.del(LEASE).await.unwrap();
    assert_eq!(released, 1);

    // Statistics: INFO, SCAN, MEMORY USAGE.
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut origin)
        .await
        .unwrap();
    assert!(info.contains("used_memory:"), "{info}");
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(&mut origin)
            .await
            .unwrap();
        seen.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(seen.contains(&PROFILE.to_string()), "{seen:?}");
    // SCAN is not restricted by key patterns: the origin sees the name of a key it cannot read.
    // (docs/security.md: only names, never values, of other keys in the databases it can SELECT.)
    assert!(seen.contains(&OTHER.to_string()), "{seen:?}");
    let denied = origin.get::<_, String>(OTHER).await.unwrap_err();
    assert_eq!(denied.code(), Some("NOPERM"), "{denied}");
    let bytes: Option<i64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(PROFILE)
        .query_async(&mut origin)
        .await
        .unwrap();
    assert!(bytes.is_some_and(|b| b > 0), "{bytes:?}");
}

// ---------------------------------------------------------------------------------------------
// Normal operation stays within the ACLs; the edge component connects as `edge`.
// ---------------------------------------------------------------------------------------------

/// `CLIENT LIST` lines of the clients in logical database `db`, but the caller's own.
async fn clients_in_db(admin: &mut redis::aio::MultiplexedConnection, db: u32) -> Vec<String> {
    let own: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(admin)
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == format!("db={db}")))
        .filter(|l| !l.split(' ').any(|f| f == format!("id={own}")))
        .map(str::to_string)
        .collect()
}

fn field<'a>(client_line: &'a str, name: &str) -> &'a str {
    client_line
        .split(' ')
        .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

/// `ACL LOG` entries about clients in logical database `db`, as text. `CLIENT SETINFO` (sent and
/// ignored by redis-rs on connect, granted to nobody: Redis 7.0 does not know it, so an ACL file that
/// must load on 7.0 cannot grant it) is left out.
async fn acl_denials(admin: &mut redis::aio::MultiplexedConnection, db: u32) -> Vec<String> {
    let log: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(admin)
        .await
        .unwrap();
    let text = |entry: &std::collections::HashMap<String, redis::Value>, name: &str| {
        entry
            .get(name)
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .unwrap_or_default()
    };
    log.iter()
        .filter(|entry| field(&text(entry, "client-info"), "db") == db.to_string())
        .filter(|entry| text(entry, "object") != "client|setinfo")
        .map(|entry| {
            format!(
                "{} was refused {} {:?} ({})",
                text(entry, "username"),
                text(entry, "reason"),
                text(entry, "object"),
                text(entry, "context")
            )
        })
        .collect()
}

#[tokio::test]
async fn normal_operation_needs_no_denied_command_and_the_edge_connects_as_edge() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .l1_ttl_ms(0)
        .start()
        .await
        .unwrap();
    let http = http_client();
    let get = |path: &str| {
        let request = http.get(format!("{}{path}", edge.url()));
        async move {
            let response = request.send().await.unwrap();
            let cache = response
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), cache)
        }
    };

    assert_eq!(get("/users/1").await, (200, Some("MISS".into())));
    // The origin fills Redis after it answers.
    origin.fills_settled().await;
    assert_eq!(get("/users/1").await, (200, Some("L2".into())));
    assert_eq!(get("/users/999999").await.0, 404);
    let patch = http
        .patch(format!("{}/users/2", edge.url()))
        .header("content-type", "application/json")
        .body(r#"{"department":"Security"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status().as_u16(), 200);
    assert_eq!(get("/users/2").await, (200, Some("L2".into())));
    let ready = http
        .get(format!("{}/readyz", origin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    let mut admin = stack.redis.admin(env.redis_db).await.unwrap();
    let clients = clients_in_db(&mut admin, env.redis_db).await;
    let users: Vec<&str> = clients.iter().map(|c| field(c, "user")).collect();
    assert!(
        users.contains(&"edge") && users.contains(&"origin"),
        "the edge component and the origin each have a connection: {users:?}"
    );
    assert!(
        users.iter().all(|u| *u == "edge" || *u == "origin"),
        "only the service users connect: {users:?}"
    );
    let denials = acl_denials(&mut admin, env.redis_db).await;
    assert!(
        denials.is_empty(),
        "ACL denials during normal operation:\n{}",
        denials.join("\n")
    );
    edge.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// TLS.
// ---------------------------------------------------------------------------------------------

static TLS_SERVER: OnceCell<RedisServer> = OnceCell::const_new();

/// A Redis that also listens with TLS (server certificate from a throwaway CA; no client certificates).
async fn tls_server() -> &'static RedisServer {
    TLS_SERVER
        .get_or_init(|| async {
            RedisServer::start_tls(TlsOptions::default())
                .await
                .expect("start a redis-server with TLS (is redis-server built with TLS support?)")
        })
        .await
}

async fn origin_get(origin: &Origin, id: u32) -> (u16, Option<String>) {
    let response = reqwest::Client::new()
        .get(format!("{}/users/{id}", origin.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), cache)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn origin_and_edge_use_redis_over_tls() {
    let stack = Stack::shared().await;
    let server = tls_server().await;
    let tls = server.tls.as_ref().unwrap();
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let token = generate_secret();
    let mut options = OriginOptions::new(
        env.database_url.clone(),
        server.tls_url(RedisUser::Origin, env.redis_db),
    )
    .env("ASIDE_REDIS_CA_FILE", path(&tls.ca.cert_file));
    options.tokens = vec![token.clone()];
    let origin = Origin::start(options).await.unwrap();

    // The origin fills Redis over TLS, then reads it back.
    let response = reqwest::Client::new()
        .get(format!("{}/users/1", origin.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-cache"], "MISS");
    origin.fills_settled().await;
    let mut admin = server.admin(env.redis_db).await.unwrap();
    let filled: bool = admin.exists("user:profile:{1}").await.unwrap();
    assert!(
        filled,
        "the origin filled Redis over TLS:\n{}",
        origin.log()
    );
    let response = reqwest::Client::new()
        .get(format!("{}/users/1", origin.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "HIT");

    // The edge, under the host trusting the test CA, reads tier 2 over TLS.
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .redis_server(server)
        .l1_ttl_ms(0)
        .start()
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/users/1", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-cache"], "L2");

    // Both connections are on the TLS port, as their users.
    let clients = clients_in_db(&mut admin, env.redis_db).await;
    let on_tls: Vec<&str> = clients
        .iter()
        .filter(|c| field(c, "laddr").ends_with(&format!(":{}", tls.port)))
        .map(|c| field(c, "user"))
        .collect();
    assert!(
        on_tls.contains(&"origin") && on_tls.contains(&"edge"),
        "clients on the TLS port: {on_tls:?}\n{clients:#?}"
    );
    let errors = metric(&origin.url(), "aside_origin_redis_errors_total").await;
    assert_eq!(
        errors,
        0.0,
        "Redis errors at the origin:\n{}",
        aside_tests::harness::scrape_text(&format!("{}/metrics", origin.url()))
            .await
            .lines()
            .filter(|l| l.contains("redis_errors") || l.contains("cache_fills"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
            + &origin.log()
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused_and_postgres_still_serves() {
    let stack = Stack::shared().await;
    let server = tls_server().await;
    let tls = server.tls.as_ref().unwrap();
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let db = env.redis_db;

    // redis-rs directly: the system's roots, another CA, and plain TCP on the TLS port all fail.
    let stranger = TestCa::new(&temp_dir("aside-stranger-ca"), "stranger").unwrap();
    let url = server.tls_url(RedisUser::Origin, db);
    let system_roots = redis::Client::open(url.as_str()).unwrap();
    let other_ca = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&stranger.cert_file).unwrap()),
        },
    )
    .unwrap();
    let plain_on_tls_port = redis::Client::open(format!(
        "redis://origin:{}@127.0.0.1:{}/{db}",
        server.password(RedisUser::Origin),
        tls.port
    ))
    .unwrap();
    let trusted = redis::Client::build_with_tls(url.as_str(), tls.certificates(false)).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)));
    for (what, client) in [
        ("the system's roots", &system_roots),
        ("another CA", &other_ca),
        ("plain TCP", &plain_on_tls_port),
    ] {
        let result = async {
            let mut c = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        }
        .await;
        let error = result.expect_err(what);
        if what != "plain TCP" {
            let text = format!("{error}");
            assert!(
                text.contains("certificate") || text.contains("UnknownIssuer"),
                "{what}: {text}"
            );
        }
    }
    let mut ok = trusted.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut ok).await.unwrap();
    assert_eq!(pong, "PONG");

    // The origin without the CA: Redis fails at the TLS handshake, PostgreSQL answers.
    let origin = Origin::start(OriginOptions::new(env.database_url.clone(), url.clone()))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(origin_get(&origin, 1).await, (200, Some("MISS".into())));
    }
    // The fills (which fail) follow the answers.
    origin.fills_settled().await;
    let mut admin = server.admin(db).await.unwrap();
    let filled: bool = admin.exists("user:profile:{1}").await.unwrap();
    assert!(
        !filled,
        "nothing reached Redis without a trusted certificate"
    );
    assert!(metric(&origin.url(), "aside_origin_redis_errors_total").await >= 1.0);
    let log = origin.log();
    assert!(!log.contains(server.password(RedisUser::Origin)), "{log}");

    // The edge under a host that trusts only the system's roots: tier 2 is skipped, the origin answers.
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let mut edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .redis_server(server)
        .l1_ttl_ms(0);
    edge.config.redis_ca_file = None;
    let edge = edge.start().await.unwrap();
    let mut stack_admin = stack.redis.admin(db).await.unwrap();
    for expected in ["MISS", "MISS"] {
        let response = reqwest::Client::new()
            .get(format!("{}/users/2", edge.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["x-cache"], expected);
    }
    // (The origin filled the stack's plain Redis; the edge could not read the TLS one.)
    origin.fills_settled().await;
    let filled: bool = stack_admin.exists("user:profile:{2}").await.unwrap();
    assert!(filled);
    edge.shutdown().await;
}

#[tokio::test]
async fn redis_can_require_client_certificates_and_the_origin_presents_one() {
    let stack = Stack::shared().await;
    let server = RedisServer::start_tls(TlsOptions {
        require_client_certificates: true,
    })
    .await
    .unwrap();
    let tls = server.tls.as_ref().unwrap();
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let url = server.tls_url(RedisUser::Origin, env.redis_db);

    let without = redis::Client::build_with_tls(url.as_str(), tls.certificates(false)).unwrap();
    let refused = async {
        let mut c = without.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    }
    .await;
    assert!(
        refused.is_err(),
        "a TLS client without a certificate is refused"
    );
    let with = redis::Client::build_with_tls(url.as_str(), tls.certificates(true)).unwrap();
    let mut c = with.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");

    let origin = Origin::start(
        OriginOptions::new(env.database_url.clone(), url)
            .env("ASIDE_REDIS_CA_FILE", path(&tls.ca.cert_file))
            .env("ASIDE_REDIS_CLIENT_CERT_FILE", path(&tls.client.cert))
            .env("ASIDE_REDIS_CLIENT_KEY_FILE", path(&tls.client.key)),
    )
    .await
    .unwrap();
    assert_eq!(origin_get(&origin, 1).await, (200, Some("MISS".into())));
    origin.fills_settled().await;
    assert_eq!(origin_get(&origin, 1).await, (200, Some("HIT".into())));
}

/// Runs `aside-origin serve` with these settings, expecting it to refuse to start; returns its stderr.
async fn origin_refuses_to_start(
    database_url: &str,
    redis_url: &str,
    env: &[(&str, String)],
) -> String {
    let mut command = tokio::process::Command::new(bin_dir().join("aside-origin"));
    command
        .arg("serve")
        .env("ASIDE_LISTEN", "127.0.0.1:0")
        .env("ASIDE_DATABASE_URL", database_url)
        .env("ASIDE_REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the origin should stop at once on TLS settings it cannot use")
        .expect("run aside-origin");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the origin started:\n{stderr}");
    stderr
}

#[tokio::test]
async fn the_origin_refuses_tls_settings_it_cannot_use() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    let server = tls_server().await;
    let tls = server.tls.as_ref().unwrap();
    let tls_url = server.tls_url(RedisUser::Origin, env.redis_db);
    let plain_url = stack.redis.url(RedisUser::Origin, env.redis_db);
    let ca = path(&tls.ca.cert_file);
    for (url, settings, expected) in [
        (
            &plain_url,
            vec![("ASIDE_REDIS_CA_FILE", ca.clone())],
            "rediss://",
        ),
        (&format!("{tls_url}#insecure"), vec![], "#insecure"),
        (
            &tls_url,
            vec![("ASIDE_REDIS_CA_FILE", "/nonexistent/ca.pem".to_string())],
            "cannot read",
        ),
        (
            &tls_url,
            vec![("ASIDE_REDIS_CA_FILE", path(&tls.server.key))],
            "no PEM certificate",
        ),
        (
            &tls_url,
            vec![("ASIDE_REDIS_CLIENT_CERT_FILE", path(&tls.client.cert))],
            "go together",
        ),
        (
            &tls_url,
            vec![
                ("ASIDE_REDIS_CLIENT_CERT_FILE", path(&tls.client.cert)),
                ("ASIDE_REDIS_CLIENT_KEY_FILE", path(&tls.client.cert)),
            ],
            "no usable PEM private key",
        ),
    ] {
        let stderr = origin_refuses_to_start(&env.database_url, url, &settings).await;
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        assert!(
            !stderr.contains(server.password(RedisUser::Origin)),
            "{stderr}"
        );
    }
}
