//! A real Redis Cluster run from the project's files (`deploy/redis.conf`, `replica.conf`,
//! `cluster.conf` and the ACL users), formed by `redis-cli --cluster create`: three primaries, three
//! replicas. One cluster for the whole binary (it is heavy), so everything is checked in one test.
//!
//! Under a 95 % read / 5 % write load through the origin and, at the same time, through an edge under
//! real Spin: steady, online resharding, a node added and rebalanced, a
//! primary paused beyond `cluster-node-timeout`, a primary SIGKILLed; each reports requests, failed
//! reads, writes lost, stale hashes after settle and the time until every slot is served.
//!
//! What is checked is what the key names promise (docs/operations.md, "Key names and Redis Cluster
//! slots"): a record's keys share a slot (the one `aside_shared::slot` computes), the feed's keys share a slot, profiles spread over every
//! primary, and scripts that name keys of one slot run while one that mixes the feed and a profile is
//! refused, as a cluster refuses it.

use std::collections::{BTreeMap, BTreeSet};

use aside_shared::UserId;
use aside_shared::cache::{lease_key, profile_key};
use aside_shared::feed::{FEED_KEY, FEED_SEQ_KEY};
use aside_shared::slot::key_slot;
use std::time::Duration;

use aside_tests::harness::{
    Edge, EdgeOptions, Load, LoadReport, Origin, OriginOptions, RedisCluster, RedisUser, Sample,
    Stack, TestApp, generate_secret, sum_samples, wait_until,
};
use serde_json::json;
use xtask::launch::EdgeVariables;

async fn keyslot(cluster: &RedisCluster, key: &str) -> u16 {
    let mut c = cluster.nodes[0].admin(0).await.unwrap();
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

fn id(n: i32) -> UserId {
    UserId::parse(&n.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_s_cluster_serves_every_slot_and_keeps_each_script_s_keys_in_one_slot() {
    let mut cluster = RedisCluster::start(3, 1).await.unwrap();

    // Three primaries sharing the 16384 slots, each followed by one replica.
    let view = cluster.cluster_nodes().await.unwrap();
    assert_eq!(view.len(), 6, "{view:?}");
    let primaries: Vec<_> = view.iter().filter(|n| n.primary).collect();
    assert_eq!(primaries.len(), 3, "{view:?}");
    assert!(primaries.iter().all(|p| p.slot_count() > 0 && !p.failed));
    assert_eq!(primaries.iter().map(|p| p.slot_count()).sum::<u32>(), 16384);
    let followed: BTreeSet<&str> = view
        .iter()
        .filter(|n| !n.primary)
        .filter_map(|n| n.primary_id.as_deref())
        .collect();
    let primary_ids: BTreeSet<&str> = primaries.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(followed, primary_ids, "one replica per primary");

    // A record's keys share its slot; 200 ids spread over all three primaries.
    let mut owners = BTreeSet::new();
    for n in 1..=200 {
        let slot = keyslot(&cluster, &profile_key(id(n))).await;
        assert_eq!(slot, keyslot(&cluster, &lease_key(id(n))).await, "id {n}");
        assert_eq!(
            slot,
            key_slot(profile_key(id(n)).as_bytes()),
            "aside_shared's slot of {n}"
        );
        owners.insert(cluster.owner_of(slot).await.unwrap());
    }
    assert_eq!(owners.len(), 3, "profiles on every primary: {owners:?}");
    // The feed's two keys share the `feed` tag's slot.
    let feed_slot = keyslot(&cluster, FEED_KEY).await;
    assert_eq!(feed_slot, keyslot(&cluster, FEED_SEQ_KEY).await);
    assert_eq!(feed_slot, key_slot(FEED_KEY.as_bytes()));

    // The node that owns a profile's slot takes the origin's writes and the edge's reads, with the
    // project's ACL users; another primary answers MOVED (a cluster client follows it).
    let profile = profile_key(id(7));
    let owner = cluster
        .owner_of(keyslot(&cluster, &profile).await)
        .await
        .unwrap();
    let origin = redis::Client::open(cluster.nodes[owner].url(RedisUser::Origin, 0)).unwrap();
    let mut origin = origin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&profile)
        .arg("_version")
        .arg(3)
        .query_async(&mut origin)
        .await
        .unwrap();
    let edge = redis::Client::open(cluster.nodes[owner].url(RedisUser::Edge, 0)).unwrap();
    let mut edge = edge.get_multiplexed_async_connection().await.unwrap();
    let version: String = redis::cmd("HGET")
        .arg(&profile)
        .arg("_version")
        .query_async(&mut edge)
        .await
        .unwrap();
    assert_eq!(version, "3");
    let other = primaries
        .iter()
        .find_map(|p| {
            cluster
                .nodes
                .iter()
                .position(|n| n.port == p.port && n.port != cluster.nodes[owner].port)
        })
        .unwrap();
    let mut elsewhere = cluster.nodes[other].admin(0).await.unwrap();
    let moved = redis::cmd("HGET")
        .arg(&profile)
        .arg("_version")
        .query_async::<Option<String>>(&mut elsewhere)
        .await
        .unwrap_err();
    assert_eq!(
        moved.redirect_node().map(|(_, slot)| slot),
        Some(keyslot(&cluster, &profile).await),
        "MOVED to the slot's owner: {moved:?}"
    );
    let (address, _) = moved.redirect_node().unwrap();
    assert_eq!(address, format!("127.0.0.1:{}", cluster.nodes[owner].port));

    // A script over one record's keys runs (the lease and the profile, as the origin's lease does) ...
    let mut admin = cluster.nodes[owner].admin(0).await.unwrap();
    let lease_and_look = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 1000) then \
                          return redis.call('HGET', KEYS[2], '_version') end return false";
    let looked: String = redis::cmd("EVAL")
        .arg(lease_and_look)
        .arg(2)
        .arg(lease_key(id(7)))
        .arg(&profile)
        .arg("token")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(looked, "3");
    // ... and so does the feed's heartbeat on the feed's node ...
    let feed_owner = cluster.owner_of(feed_slot).await.unwrap();
    let mut feed_admin = cluster.nodes[feed_owner].admin(0).await.unwrap();
    let heartbeat = "local n = redis.call('INCR', KEYS[2]) \
                     redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100, '*', 's', n, 'k', 'h') return n";
    let n: i64 = redis::cmd("EVAL")
        .arg(heartbeat)
        .arg(2)
        .arg(FEED_KEY)
        .arg(FEED_SEQ_KEY)
        .query_async(&mut feed_admin)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // ... while one naming the feed and a profile is refused by the cluster whatever node is asked:
    // why the compare-and-set that announces a write needs two calls on a cluster.
    let mut refused = 0;
    for node in &cluster.nodes[..3] {
        let mut c = node.admin(0).await.unwrap();
        let answer = redis::cmd("EVAL")
            .arg("return redis.call('EXISTS', KEYS[2])")
            .arg(3)
            .arg(FEED_KEY)
            .arg(FEED_SEQ_KEY)
            .arg(&profile)
            .query_async::<i64>(&mut c)
            .await;
        if let Err(e) = answer {
            let text = e.to_string().to_uppercase();
            assert!(
                text.contains("CROSSSLOT") || text.contains("MOVED"),
                "{text}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 3, "a cross-slot script runs nowhere");

    let on_cluster = the_origin_on_the_cluster(&cluster).await;
    under_load(&cluster, &on_cluster).await;
    node_added(&mut cluster, &on_cluster).await;
    primary_paused(&cluster, &on_cluster).await;
    primary_killed(&mut cluster, &on_cluster).await;
}

/// Seeded rows, read through the origin: enough for every primary to hold some, and the issue's 200 ids
/// under load (every row but 4, which an earlier check deletes).
const ROWS: i32 = 201;

/// `HGET <profile key of id> <field>` on the node that owns the key now, as the admin.
async fn cached(cluster: &RedisCluster, n: i32, field: &str) -> Option<String> {
    let key = profile_key(id(n));
    let owner = cluster.owner_of(key_slot(key.as_bytes())).await.unwrap();
    let mut c = cluster.nodes[owner].admin(0).await.unwrap();
    redis::cmd("HGET")
        .arg(&key)
        .arg(field)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// The feed's change entries (id, version, rank), from the node that owns the feed's slot.
async fn feed_changes(cluster: &RedisCluster) -> Vec<(i32, i64, u8)> {
    let owner = cluster
        .owner_of(key_slot(FEED_KEY.as_bytes()))
        .await
        .unwrap();
    let mut c = cluster.nodes[owner].admin(0).await.unwrap();
    let reply: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(FEED_KEY)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    reply
        .into_iter()
        .filter_map(|(_, flat)| {
            let fields: std::collections::HashMap<&str, &str> = flat
                .chunks(2)
                .map(|kv| (kv[0].as_str(), kv[1].as_str()))
                .collect();
            (fields.get("k") == Some(&"c")).then(|| {
                (
                    fields["id"].parse().unwrap(),
                    fields["v"].parse().unwrap(),
                    fields["r"].parse().unwrap(),
                )
            })
        })
        .collect()
}

/// Moves `slot` from its owner to another primary as `redis-cli --cluster reshard` does (importing,
/// migrating, `MIGRATE` of its keys, then the new owner everywhere). Returns the new owner's index.
async fn move_slot(cluster: &RedisCluster, slot: u16) -> usize {
    let view = cluster.cluster_nodes().await.unwrap();
    let from = cluster.owner_of(slot).await.unwrap();
    let from_id = view
        .iter()
        .find(|n| n.port == cluster.nodes[from].port)
        .unwrap()
        .id
        .clone();
    let to_node = view
        .iter()
        .find(|n| n.primary && !n.failed && n.port != cluster.nodes[from].port)
        .unwrap();
    let to = cluster
        .nodes
        .iter()
        .position(|n| n.port == to_node.port)
        .unwrap();
    let mut source = cluster.nodes[from].admin(0).await.unwrap();
    let mut target = cluster.nodes[to].admin(0).await.unwrap();
    let setslot = |state: &str, node: &str| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
        cmd
    };
    let _: () = setslot("IMPORTING", &from_id)
        .query_async(&mut target)
        .await
        .unwrap();
    let _: () = setslot("MIGRATING", &to_node.id)
        .query_async(&mut source)
        .await
        .unwrap();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut source)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(cluster.nodes[to].port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("AUTH2")
            .arg("admin")
            .arg(cluster.nodes[0].password(RedisUser::Admin))
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut source)
            .await
            .unwrap();
    }
    // The new owner first, then the old one, then the other primaries (replicas learn it by gossip).
    let mut primaries = vec![to, from];
    primaries.extend(
        view.iter()
            .filter(|n| n.primary && !n.failed)
            .filter_map(|n| cluster.nodes.iter().position(|x| x.port == n.port))
            .filter(|i| *i != to && *i != from),
    );
    for i in primaries {
        let mut c = cluster.nodes[i].admin(0).await.unwrap();
        let _: () = setslot("NODE", &to_node.id)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    to
}

/// The origin on the cluster (ASIDE_REDIS_CLUSTER_NODES, the `redis` crate's cluster client): fills,
/// leases, write-through, a delete's tombstone and change capture land on each key's owner and are
/// announced on the feed's node; the statistics cover every primary; a slot moved under the origin
/// (`MOVED`) costs it nothing.
async fn the_origin_on_the_cluster(cluster: &RedisCluster) -> OnCluster {
    // What the checks above left: id 7's hand-written hash (version 3, no profile) and its lease.
    let seven = profile_key(id(7));
    let owner = cluster.owner_of(key_slot(seven.as_bytes())).await.unwrap();
    let mut c = cluster.nodes[owner].admin(0).await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&seven)
        .arg(lease_key(id(7)))
        .query_async(&mut c)
        .await
        .unwrap();
    let stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(ROWS as u64).await.unwrap();
    let token = generate_secret();
    let admin_token = generate_secret();
    let mut options = OriginOptions::new(env.app_database_url.clone(), "")
        .env("ASIDE_REDIS_CLUSTER_NODES", cluster.addresses())
        .env(
            "ASIDE_REDIS_PASSWORD",
            cluster.nodes[0].password(RedisUser::Origin),
        )
        .env("ASIDE_REDIS_CLUSTER_POLL_MS", 200)
        .env("ASIDE_ADMIN_TOKENS", &admin_token);
    options.tokens = vec![token.clone()];
    let origin = Origin::start(options).await.unwrap();
    assert!(
        env.change_capture_caught_up(&stack, Duration::from_secs(20))
            .await
            .unwrap(),
        "{}",
        origin.log()
    );
    let api = TestApp::new(origin.url()).with_token(&token);
    let db = stack.postgres.connect(&env.database).await.unwrap();
    let version_of = |n: i32| {
        let db = &db;
        async move {
            db.query_one("SELECT version FROM devops_api.users WHERE id = $1", &[&n])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };

    // Fills: a miss, then a hit, every id on its slot's owner; the ids span every primary.
    for n in 1..=ROWS {
        let first = api.get(&format!("/users/{n}")).await;
        assert_eq!((first.status, first.cache()), (200, "MISS"), "id {n}");
    }
    // The fills follow the answers.
    origin.fills_settled().await;
    let mut owners = BTreeSet::new();
    for n in 1..=ROWS {
        let again = api.get(&format!("/users/{n}")).await;
        assert_eq!((again.status, again.cache()), (200, "HIT"), "id {n}");
        let version = version_of(n).await;
        assert_eq!(again.version(), version, "id {n}");
        assert_eq!(
            cached(cluster, n, "_version").await,
            Some(version.to_string()),
            "id {n}"
        );
        owners.insert(
            cluster
                .owner_of(key_slot(profile_key(id(n)).as_bytes()))
                .await
                .unwrap(),
        );
    }
    assert_eq!(owners.len(), 3, "{owners:?}");

    // Write-through and a delete's tombstone, each announced on the feed's node after the write.
    let patched = api
        .patch("/users/3", &json!({"department": "Security"}))
        .await;
    assert_eq!(patched.status, 200);
    let v3 = version_of(3).await;
    assert_eq!(cached(cluster, 3, "_version").await, Some(v3.to_string()));
    assert_eq!(api.get("/users/3").await.cache(), "HIT");
    assert_eq!(api.delete("/users/4").await.status, 204);
    assert_eq!(
        cached(cluster, 4, "_state").await.as_deref(),
        Some("deleted")
    );
    assert_eq!(api.get("/users/4").await.status, 404);
    // Change capture of a change made in SQL, out of band.
    let v5: i64 = db
        .query_one(
            "UPDATE devops_api.users SET department = 'Sales' WHERE id = 5 RETURNING version",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let applied = wait_until(Duration::from_secs(10), || async {
        cached(cluster, 5, "_version").await == Some(v5.to_string())
    })
    .await;
    assert!(applied, "change capture: {}", origin.log());
    let announced = wait_until(Duration::from_secs(10), || async {
        let changes = feed_changes(cluster).await;
        changes.contains(&(3, v3, 1))
            && changes.contains(&(5, v5, 1))
            && changes.iter().any(|&(n, _, rank)| n == 4 && rank == 2)
    })
    .await;
    assert!(announced, "{:?}", feed_changes(cluster).await);

    // Leases taken on each id's own slot, and no Redis command refused.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", origin.url()))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sum_samples(
            &metrics,
            "aside_origin_cache_leases_total",
            &["outcome=\"acquired\""]
        ) >= ROWS as f64,
        "{metrics}"
    );
    // A command whose keys span slots is refused (CROSSSLOT): none may be. Timeouts are not refusals
    // (a loaded machine can time out a fill at the origin's start); they are shown, not failed on.
    assert_eq!(
        sum_samples(&metrics, "aside_origin_redis_refusals_total", &[]),
        0.0,
        "{metrics}\n{}",
        origin.log()
    );
    eprintln!(
        "redis_cluster checks: Redis errors at the origin (timeouts, none refused) {}",
        sum_samples(&metrics, "aside_origin_redis_errors_total", &[])
    );
    // Redis's own figures add up every primary.
    let used = sum_samples(&metrics, "aside_origin_redis_used_memory_bytes", &[]);
    let mut per_node = 0.0;
    for node in cluster
        .cluster_nodes()
        .await
        .unwrap()
        .iter()
        .filter(|n| n.primary)
    {
        let info = cluster.node_info(node.port, "memory").await.unwrap();
        per_node += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse::<f64>()
            .unwrap();
    }
    assert!(
        (used - per_node).abs() < per_node * 0.2,
        "used_memory {used} vs the primaries' {per_node}"
    );
    // ... and each primary is reported on its own, with the cluster's slot coverage.
    let nodes = metrics
        .lines()
        .filter(|l| l.starts_with("aside_origin_redis_node_used_memory_bytes{"))
        .count();
    assert_eq!(nodes, 3, "{metrics}");
    assert_eq!(
        sum_samples(
            &metrics,
            "aside_origin_redis_cluster_slots",
            &["state=\"ok\""]
        ),
        16384.0,
        "{metrics}"
    );
    assert_eq!(
        sum_samples(
            &metrics,
            "aside_origin_redis_cluster_primaries_unreachable",
            &[]
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("aside_origin_redis_cluster_node_memory_used_ratio_max "),
        "{metrics}"
    );

    // The statistics walk every primary: every id's key (profiles and the tombstone) is counted.
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/admin/cache/stats", origin.url()))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["database"]["complete"], true, "{stats}");
    assert_eq!(stats["database"]["keys"], ROWS, "{stats}");

    // A slot moved to another primary under the origin: it follows MOVED, reads and writes there.
    let slot = key_slot(profile_key(id(7)).as_bytes());
    let before = cluster.owner_of(slot).await.unwrap();
    let after = move_slot(cluster, slot).await;
    assert_ne!(before, after);
    let read = api.get("/users/7").await;
    assert_eq!((read.status, read.cache()), (200, "HIT"));
    let patched = api.patch("/users/7", &json!({"department": "Legal"})).await;
    assert_eq!(patched.status, 200);
    let v7 = version_of(7).await;
    let mut on_new_owner = cluster.nodes[after].admin(0).await.unwrap();
    let moved: Option<String> = redis::cmd("HGET")
        .arg(profile_key(id(7)))
        .arg("_version")
        .query_async(&mut on_new_owner)
        .await
        .unwrap();
    assert_eq!(moved, Some(v7.to_string()));
    let again = api.get("/users/7").await;
    assert_eq!(
        (again.status, again.cache(), again.version()),
        (200, "HIT", v7)
    );

    // The write comes before its announcement, and a change whose announcement failed (here: the feed's
    // node refuses the origin, as if it had died between the two steps) is announced by change capture
    // once the feed's node takes it again.
    let feed_owner = cluster
        .owner_of(key_slot(FEED_KEY.as_bytes()))
        .await
        .unwrap();
    let mut n = 8;
    while cluster
        .owner_of(key_slot(profile_key(id(n)).as_bytes()))
        .await
        .unwrap()
        == feed_owner
    {
        n += 1;
    }
    let mut feed_admin = cluster.nodes[feed_owner].admin(0).await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("origin")
        .arg("clearselectors")
        .query_async(&mut feed_admin)
        .await
        .unwrap();
    let patched = api
        .patch(&format!("/users/{n}"), &json!({"department": "Finance"}))
        .await;
    assert_eq!(
        patched.status, 200,
        "the write is committed whatever the feed"
    );
    let vn = version_of(n).await;
    assert_eq!(cached(cluster, n, "_version").await, Some(vn.to_string()));
    assert!(!feed_changes(cluster).await.contains(&(n, vn, 1)));
    let _: () = redis::cmd("ACL")
        .arg("LOAD")
        .query_async(&mut feed_admin)
        .await
        .unwrap();
    let announced = wait_until(Duration::from_secs(10), || async {
        feed_changes(cluster).await.contains(&(n, vn, 1))
    })
    .await;
    assert!(announced, "id {n} v{vn}: {}", origin.log());
    drop(db);
    // An edge on the cluster (`redis_mode = cluster`), allowed every port of the cluster's nodes and
    // those after (a node added later), tier 1 off so that every read asks the cluster.
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let (low, high) = (*ports.iter().min().unwrap(), *ports.iter().max().unwrap());
    let edge = EdgeOptions::new(&stack, &env, &origin.url(), &token)
        .vars(&EdgeVariables::new().redis(
            &format!("127.0.0.1:{}", cluster.nodes[0].port),
            RedisUser::Edge.name(),
            cluster.nodes[0].password(RedisUser::Edge),
        ))
        .var("redis_database", 0)
        .var("redis_mode", "cluster")
        .var(
            "redis_cluster_hosts",
            format!("127.0.0.1:{low}..{}", high + 1),
        )
        .l1_ttl_ms(0)
        .start()
        .await
        .unwrap();
    OnCluster {
        stack,
        env,
        token,
        admin_token,
        origin,
        edge,
    }
}

/// The origin on the cluster, and what it serves.
struct OnCluster {
    stack: Stack,
    env: aside_tests::harness::TestEnv,
    token: String,
    admin_token: String,
    origin: Origin,
    /// An edge (real Spin) reading tier 2 from the cluster, in front of `origin`.
    edge: Edge,
}

/// The ids the load reads and writes: every seeded row but 4, which an earlier check deleted.
fn loaded_ids() -> Vec<i32> {
    (1..=ROWS).filter(|&n| n != 4).collect()
}

/// The edge's request budget; no read through the origin may take longer (slack for a busy machine).
const BUDGET: Duration = Duration::from_millis(2500);

impl OnCluster {
    /// 95 % reads, 5 % writes over every id, through the edge (3 clients).
    fn edge_load(&self, duration: Duration) -> Load {
        let urls: Vec<String> = loaded_ids()
            .iter()
            .map(|n| format!("{}/users/{n}", self.edge.url()))
            .collect();
        Load::new(urls)
            .concurrency(3)
            .duration(duration)
            .writes(5)
            .header("authorization", &format!("Bearer {}", self.token))
    }

    /// Checks the edge's share of a scenario: no read failed (non-200), every write it acknowledged
    /// is in PostgreSQL; prints the figures.
    async fn check_edge(&self, scenario: &str, report: &LoadReport) {
        let failed: Vec<&Sample> = report
            .samples
            .iter()
            .filter(|s| !s.write && s.status != 200)
            .collect();
        let versions = self.versions().await;
        let (mut acknowledged, mut lost) = (0, Vec::new());
        for s in report.samples.iter().filter(|s| s.write) {
            if let (200..=299, Some(version)) = (s.status, s.version) {
                acknowledged += 1;
                let n = loaded_ids()[s.target];
                if versions.get(&n).copied().unwrap_or(0) < version {
                    lost.push(format!("id {n} version {version}"));
                }
            }
        }
        let mut by_cache: BTreeMap<&str, usize> = BTreeMap::new();
        for s in report.samples.iter().filter(|s| !s.write) {
            *by_cache.entry(s.cache()).or_default() += 1;
        }
        eprintln!(
            "redis_cluster {scenario} at the edge: requests {} (writes {}, acknowledged \
             {acknowledged}), failed reads {}, writes lost {}, reads by x-cache {by_cache:?}; {}",
            report.sent(),
            report.samples.iter().filter(|s| s.write).count(),
            failed.len(),
            lost.len(),
            report.summary("edge")
        );
        assert!(lost.is_empty(), "{scenario} at the edge: {lost:?}");
        assert!(
            failed.is_empty(),
            "{scenario} at the edge: {:#?}\n{}",
            &failed[..failed.len().min(5)],
            self.edge.component_log()
        );
        assert!(report.sent() > 0, "{scenario}: no request through the edge");
    }

    /// 95 % reads, 5 % writes over every id, through the origin.
    fn load(&self, duration: Duration) -> Load {
        let urls: Vec<String> = loaded_ids()
            .iter()
            .map(|n| format!("{}/users/{n}", self.origin.url()))
            .collect();
        Load::new(urls)
            .concurrency(6)
            .duration(duration)
            .writes(5)
            .header("authorization", &format!("Bearer {}", self.token))
    }

    /// Each row's version in PostgreSQL.
    async fn versions(&self) -> BTreeMap<i32, i64> {
        let db = self
            .stack
            .postgres
            .connect(&self.env.database)
            .await
            .unwrap();
        db.query("SELECT id, version FROM devops_api.users", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
            .collect()
    }

    /// Every profile hash on the primary that owns it now, against PostgreSQL, until none is older
    /// (or `timeout`): (hashes compared, stale ones).
    async fn settle(&self, cluster: &RedisCluster, timeout: Duration) -> (usize, Vec<String>) {
        let until = std::time::Instant::now() + timeout;
        loop {
            let versions = self.versions().await;
            let (mut compared, mut stale) = (0, Vec::new());
            for (&n, &version) in &versions {
                if let Some(cached) = cached(cluster, n, "_version").await {
                    compared += 1;
                    let cached: i64 = cached.parse().unwrap();
                    if cached < version {
                        stale.push(format!("id {n}: {cached} < {version}"));
                    }
                }
            }
            if stale.is_empty() || std::time::Instant::now() > until {
                return (compared, stale);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks a load's report: no read failed or overran the budget, every acknowledged write is in
    /// PostgreSQL, and after settling no hash on any primary is older than its row. Prints the figures.
    async fn check(
        &self,
        cluster: &RedisCluster,
        scenario: &str,
        report: &LoadReport,
        extra: &str,
    ) {
        let failed: Vec<&Sample> = report
            .samples
            .iter()
            .filter(|s| !s.write && (s.status != 200 || s.latency > BUDGET))
            .collect();
        let versions = self.versions().await;
        let (mut acknowledged, mut lost) = (0, Vec::new());
        for s in report.samples.iter().filter(|s| s.write) {
            if let (200..=299, Some(version)) = (s.status, s.version) {
                acknowledged += 1;
                let n = loaded_ids()[s.target];
                if versions.get(&n).copied().unwrap_or(0) < version {
                    lost.push(format!("id {n} version {version}"));
                }
            }
        }
        let (compared, stale) = self.settle(cluster, Duration::from_secs(15)).await;
        eprintln!(
            "redis_cluster {scenario}: requests {} (writes {}, acknowledged {acknowledged}), failed \
             reads {}, writes lost {}, stale hashes after settle {} of {compared}, {extra}; {}",
            report.sent(),
            report.samples.iter().filter(|s| s.write).count(),
            failed.len(),
            lost.len(),
            stale.len(),
            report.summary("origin")
        );
        assert!(
            failed.is_empty(),
            "{scenario}: {:#?}",
            &failed[..failed.len().min(5)]
        );
        assert!(lost.is_empty(), "{scenario}: {lost:?}");
        assert!(acknowledged > 0, "{scenario}: no write acknowledged");
        assert!(stale.is_empty(), "{scenario}: {stale:?}");
        assert!(
            compared >= ROWS as usize / 2,
            "{scenario}: {compared} hashes compared"
        );
    }
}

/// Until `done` says so, runs the load in slices of `slice` and gathers their samples.
async fn load_until(on: &OnCluster, slice: Duration, done: impl Fn() -> bool) -> LoadReport {
    let load = on.load(slice);
    let mut all = LoadReport::default();
    loop {
        append(&mut all, load.clone().run().await);
        if done() {
            return all;
        }
    }
}

/// `report`'s samples after `all`'s, their times counted from the start of `all`.
fn append(all: &mut LoadReport, report: LoadReport) {
    let offset = all.elapsed;
    all.samples.extend(report.samples.into_iter().map(|mut s| {
        s.sent_at += offset;
        s
    }));
    all.elapsed += report.elapsed;
}

/// The load in slices of `slice` on a task of its own until `stop` is set.
fn load_in_background(
    on: &OnCluster,
    slice: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<LoadReport> {
    in_background(on.load(slice), stop)
}

/// `load` in slices on a task of its own until `stop` is set.
fn in_background(
    load: Load,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(async move {
        let mut all = LoadReport::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            append(&mut all, load.clone().run().await);
        }
        all
    })
}

/// Whether node `from` (index in `cluster.nodes`) sees every slot served by a primary not failed,
/// none of them the node `gone` (its id).
async fn every_slot_served(cluster: &RedisCluster, from: usize, gone: &str) -> bool {
    cluster.cluster_nodes_from(from).await.is_ok_and(|view| {
        view.iter()
            .filter(|n| n.primary && !n.failed && n.id != gone)
            .map(|n| n.slot_count())
            .sum::<u32>()
            == u32::from(xtask::redis_cluster::SLOTS)
    })
}

/// A sum of the origin's metric `name` (with `labels`).
async fn origin_metric(on: &OnCluster, name: &str, labels: &[&str]) -> f64 {
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", on.origin.url()))
        .bearer_auth(&on.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sum_samples(&metrics, name, labels)
}

/// 95 % reads / 5 % writes over 200 ids through the origin on the cluster: steady, and during an online
/// resharding of a third of the slots (`redis-cli --cluster reshard`).
async fn under_load(cluster: &RedisCluster, on: &OnCluster) {
    // Steady: the ids on all three primaries, through the origin and the edge at once.
    let (report, at_edge) = tokio::join!(
        on.load(Duration::from_secs(3)).run(),
        on.edge_load(Duration::from_secs(3)).run()
    );
    on.check(cluster, "steady", &report, "3 primaries").await;
    on.check_edge("steady", &at_edge).await;
    // The edge read tier 2 from the cluster (its tier 1 is off): most reads are L2 hits.
    let reads = at_edge.samples.iter().filter(|s| !s.write).count();
    let l2 = at_edge
        .samples
        .iter()
        .filter(|s| !s.write && s.cache() == "L2")
        .count();
    assert!(
        l2 * 2 > reads,
        "steady at the edge: {l2} of {reads} reads from the cluster"
    );

    // Online resharding: a third of the slots from one primary to another, under the load.
    let view = cluster.cluster_nodes().await.unwrap();
    // From the primary with the most slots, never all of them: a primary left without slots becomes
    // a replica (replica migration), and two primaries are no majority to fail one over later.
    let mut primaries: Vec<_> = view.iter().filter(|n| n.primary && !n.failed).collect();
    primaries.sort_by_key(|n| std::cmp::Reverse(n.slot_count()));
    let (from, to) = (primaries[0], primaries[1]);
    let slots = (u32::from(xtask::redis_cluster::SLOTS) / 3).min(from.slot_count() - 1);
    let (from_id, to_id, port) = (from.id.clone(), to.id.clone(), cluster.nodes[0].port);
    let admin = cluster.nodes[0].password(RedisUser::Admin).to_string();
    let started = std::time::Instant::now();
    let reshard = std::thread::spawn(move || {
        xtask::redis_cluster::reshard_command(port, &admin, (&from_id, &to_id), slots)
            .output()
            .unwrap()
    });
    let stop_edge = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let at_edge = in_background(
        on.edge_load(Duration::from_secs(1)),
        std::sync::Arc::clone(&stop_edge),
    );
    let report = load_until(on, Duration::from_secs(2), || reshard.is_finished()).await;
    stop_edge.store(true, std::sync::atomic::Ordering::Relaxed);
    let at_edge = at_edge.await.unwrap();
    let output = reshard.join().unwrap();
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "reshard: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let moved = cluster
        .cluster_nodes()
        .await
        .unwrap()
        .iter()
        .find(|n| n.id == to.id)
        .unwrap()
        .slot_count();
    assert!(
        moved >= to.slot_count() + slots,
        "{moved} slots on the target"
    );
    on.check(
        cluster,
        "reshard",
        &report,
        &format!("{slots} slots moved in {took:?}"),
    )
    .await;
    on.check_edge("reshard", &at_edge).await;
}

/// The primary with the most slots among those with a live replica.
fn fullest_with_replica(
    view: &[xtask::redis_cluster::ClusterNode],
) -> xtask::redis_cluster::ClusterNode {
    view.iter()
        .filter(|n| n.primary && !n.failed)
        .filter(|p| {
            view.iter()
                .any(|r| !r.failed && r.primary_id.as_deref() == Some(p.id.as_str()))
        })
        .max_by_key(|n| n.slot_count())
        .unwrap_or_else(|| panic!("no primary with a replica: {view:?}"))
        .clone()
}

/// A fourth primary added under the load (`redis-cli --cluster add-node`) and the slots rebalanced
/// onto it (`--cluster rebalance --cluster-use-empty-masters`, the new node weighted a quarter so the
/// load lasts seconds, not half a minute): keys move by `MIGRATE`, the origin
/// follows `ASK` and `MOVED`. The node stays (a primary without a replica) for the scenarios after.
async fn node_added(cluster: &mut RedisCluster, on: &OnCluster) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_in_background(on, Duration::from_secs(1), std::sync::Arc::clone(&stop));
    let at_edge = in_background(
        on.edge_load(Duration::from_secs(1)),
        std::sync::Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let added = cluster.add_node().await.unwrap();
    let added_id = cluster
        .cluster_nodes()
        .await
        .unwrap()
        .iter()
        .find(|n| n.port == cluster.nodes[added].port)
        .unwrap()
        .id
        .clone();
    // A quarter of an old primary's weight: about 1,260 slots move (all of a fair share, 4,096,
    // takes some 30 s here; the moves are the same, only fewer).
    let output = cluster
        .redis_cli(&[
            "rebalance".to_string(),
            format!("127.0.0.1:{}", cluster.nodes[0].port),
            "--cluster-use-empty-masters".to_string(),
            "--cluster-weight".to_string(),
            format!("{added_id}=0.25"),
        ])
        .await
        .unwrap();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.await.unwrap();
    let at_edge = at_edge.await.unwrap();
    assert!(
        output.status.success(),
        "rebalance: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let view = cluster.cluster_nodes().await.unwrap();
    let on_added = view
        .iter()
        .find(|n| n.port == cluster.nodes[added].port)
        .unwrap()
        .slot_count();
    assert!(on_added > 0, "no slot on the added node: {view:?}");
    on.check(
        cluster,
        "node_added",
        &report,
        &format!("add-node and rebalance took {took:?}, {on_added} slots on the added node"),
    )
    .await;
    on.check_edge("node_added", &at_edge).await;
}

/// A primary paused (SIGSTOP: it keeps its sockets and answers nothing, as behind a partition) beyond
/// `cluster-node-timeout` under the load: the others fail it over to its replica; resumed, it learns
/// it lost its slots and follows the new primary.
async fn primary_paused(cluster: &RedisCluster, on: &OnCluster) {
    let view = cluster.cluster_nodes().await.unwrap();
    let victim = fullest_with_replica(&view);
    let victim_index = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim.port)
        .unwrap();
    let survivor = (0..cluster.nodes.len())
        .find(|&i| i != victim_index)
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_in_background(on, Duration::from_secs(1), std::sync::Arc::clone(&stop));
    let at_edge = in_background(
        on.edge_load(Duration::from_secs(1)),
        std::sync::Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused = std::time::Instant::now();
    cluster.nodes[victim_index].pause(true);
    let served = wait_until(Duration::from_secs(60), || async {
        every_slot_served(cluster, survivor, &victim.id).await
    })
    .await;
    let failover = paused.elapsed();
    cluster.nodes[victim_index].pause(false);
    // Resumed, it turns into a replica of the promoted node and syncs from it.
    let rejoined = wait_until(Duration::from_secs(60), || async {
        cluster
            .node_info(victim.port, "replication")
            .await
            .is_ok_and(|info| info.contains("role:slave") && info.contains("master_link_status:up"))
    })
    .await;
    let back = paused.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.await.unwrap();
    let at_edge = at_edge.await.unwrap();
    assert!(served, "no failover of the paused {}", victim.port);
    assert!(
        rejoined,
        "the resumed {} did not follow the new primary: {:?}",
        victim.port,
        cluster.node_info(victim.port, "replication").await
    );
    on.check(
        cluster,
        "primary_paused",
        &report,
        &format!(
            "{} slots on the paused primary, every slot served again {failover:?} after the pause, \
             resumed and a replica again {back:?} after it",
            victim.slot_count()
        ),
    )
    .await;
    on.check_edge("primary_paused", &at_edge).await;
}

/// A primary SIGKILLed under the load: the cluster promotes its replica (after `cluster-node-timeout`
/// and the election); the origin answers from PostgreSQL meanwhile, follows the promotion and replays
/// the outbox onto the new primary.
async fn primary_killed(cluster: &mut RedisCluster, on: &OnCluster) {
    let view = cluster.cluster_nodes().await.unwrap();
    let victim = fullest_with_replica(&view);
    let victim_index = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim.port)
        .unwrap();
    let replicas: BTreeSet<String> = view
        .iter()
        .filter(|n| n.primary_id.as_deref() == Some(victim.id.as_str()))
        .map(|n| n.id.clone())
        .collect();
    assert!(!replicas.is_empty(), "{view:?}");
    let survivor = (0..cluster.nodes.len())
        .find(|&i| i != victim_index)
        .unwrap();
    let failovers_before = origin_metric(on, "aside_origin_redis_failovers_total", &[]).await;
    let replays_before = origin_metric(on, "aside_origin_outbox_replays_total", &[]).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_in_background(on, Duration::from_secs(1), std::sync::Arc::clone(&stop));
    let at_edge = in_background(
        on.edge_load(Duration::from_secs(1)),
        std::sync::Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = std::time::Instant::now();
    cluster.nodes[victim_index].kill();
    let served = wait_until(Duration::from_secs(60), || async {
        every_slot_served(cluster, survivor, &victim.id).await
    })
    .await;
    let failover = killed.elapsed();
    // Two more seconds of load on the promoted primary.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.await.unwrap();
    let at_edge = at_edge.await.unwrap();
    let after = cluster.cluster_nodes_from(survivor).await.unwrap();
    assert!(
        served
            && after
                .iter()
                .any(|n| n.primary && !n.failed && replicas.contains(&n.id) && n.slot_count() > 0),
        "no replica of {} took over its slots: {after:?}",
        victim.port
    );
    let rebuilds = origin_metric(on, "aside_origin_redis_cluster_client_rebuilds_total", &[]).await;
    on.check(
        cluster,
        "primary_killed",
        &report,
        &format!(
            "{} slots on the killed primary, every slot served again {failover:?} after the kill, \
             origin: cluster client replaced {rebuilds} times",
            victim.slot_count()
        ),
    )
    .await;
    on.check_edge("primary_killed", &at_edge).await;
    // The origin saw the promotion and replayed the outbox onto the new primary (change capture
    // waits for that before applying new changes, so a settled cache implies it; checked anyway).
    let failovers = origin_metric(on, "aside_origin_redis_failovers_total", &[]).await;
    let replays = origin_metric(on, "aside_origin_outbox_replays_total", &[]).await;
    assert!(
        failovers > failovers_before,
        "the origin saw no failover: {}",
        on.origin.log()
    );
    assert!(
        replays > replays_before,
        "no outbox replay: {}",
        on.origin.log()
    );
}
