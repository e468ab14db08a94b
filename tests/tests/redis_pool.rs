//! The edge's Redis connections (edge/src/l2.rs): one command in flight per connection, a bound per
//! instance, and connections that died in the pool dropped rather than reused. Counted on the Redis
//! server itself (`CLIENT LIST`, the `edge` ACL user), under the runtime the tests use (real Spin when
//! found).
//!
//! Requests are made to overlap in Redis without timing: Redis is frozen (SIGSTOP) while they are sent, so
//! each one has taken its connection and written its command before any is answered, then thawed.
//!
//! Needs `cargo build -p aside-origin --features aside-origin/test-hooks && cargo build -p aside-edge
//! --target wasm32-wasip2 --release` (`cargo xtask test` does both).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aside_tests::harness::{
    Answer, Edge, EdgeOptions, Origin, RedisServer, Stack, TestEnv, generate_secret, wait_until,
};
use futures::future::join_all;

/// Seeded rows, all read once through the edge so that Redis has them.
const ROWS: i32 = 12;
/// Reads sent at once while Redis is frozen.
const CONCURRENT: usize = 8;

/// The connections Redis has open for the edge's ACL user (`CLIENT LIST` lines).
async fn edge_clients(redis: &RedisServer, env: &TestEnv) -> Vec<String> {
    let mut admin = redis.admin(env.redis_db).await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    list.lines()
        .filter(|line| line.split(' ').any(|field| field == "user=edge"))
        .map(String::from)
        .collect()
}

async fn edge_connections(redis: &RedisServer, env: &TestEnv) -> usize {
    edge_clients(redis, env).await.len()
}

/// A seeded env, its origin, and an edge with tier 1 off (every read asks Redis), one long-lived
/// instance (so every request below shares one pool), `redis_max_connections = bound`, and Redis
/// timeouts long enough for a frozen Redis to be thawed before any read gives up.
async fn setup(stack: &Stack, bound: usize) -> (TestEnv, Origin, Edge) {
    let env = stack.env().await.unwrap();
    env.seed(ROWS as u64).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .l1_ttl_ms(0)
        .var("redis_max_connections", bound)
        .var("redis_timeout_ms", 20_000)
        .var("request_budget_ms", 30_000)
        .max_instance_reuse_count(10_000)
        .max_instance_concurrent_reuse_count(16)
        .idle_instance_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    // Fills Redis (through the origin), one read at a time.
    for id in 1..=ROWS {
        let answer = edge.app().get(&format!("/users/{id}")).await;
        assert_eq!(answer.status, 200, "warming {id}: {}", answer.body);
    }
    origin.fills_settled().await;
    (env, origin, edge)
}

/// Sends [`CONCURRENT`] reads of cached ids while Redis is frozen, thaws it, and returns the answers.
async fn overlapping_reads(edge: &Edge, redis: &RedisServer) -> Vec<Answer> {
    redis.pause(true);
    let reads = join_all((0..CONCURRENT).map(|i| {
        let app = edge.app();
        async move { app.get(&format!("/users/{}", 1 + i as i32 % ROWS)).await }
    }));
    let thaw = async {
        // Long enough for every read to reach the component and write its command (or its connect);
        // a read that has not is simply answered later and the count below shows it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.pause(false);
    };
    let (answers, ()) = tokio::join!(reads, thaw);
    answers
}

/// Every answer is an L2 hit; how many each instance (`x-edge-instance`) gave.
fn l2_hits_per_instance(answers: &[Answer]) -> HashMap<String, usize> {
    let mut per_instance = HashMap::new();
    for a in answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.cache(), "L2", "{:?}", a.headers);
        *per_instance
            .entry(a.header("x-edge-instance").unwrap().to_string())
            .or_insert(0) += 1;
    }
    per_instance
}

/// The instance that answered the warm-up (reads one after another go to one instance).
async fn warm_instance(edge: &Edge) -> String {
    let answer = edge.app().get("/users/1").await;
    assert_eq!(answer.cache(), "L2", "{:?}", answer.headers);
    answer.header("x-edge-instance").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_reads_each_get_a_connection_up_to_the_bound_then_share_the_least_busy() {
    let stack = Stack::dedicated().await.unwrap();
    // Below the bound (16 > 8 reads): one connection per read in flight in an instance. At it (2): two
    // connections per instance carry all its reads, every one still answered from Redis. Spin may
    // spread the reads over several instances (each has a pool of its own): the expectation is per
    // instance, from `x-edge-instance`.
    for bound in [16, 2] {
        let (env, _origin, edge) = setup(&stack, bound).await;
        assert_eq!(
            edge_connections(&stack.redis, &env).await,
            1,
            "reads one after another share one connection (bound {bound})"
        );
        let warm = warm_instance(&edge).await;
        let answers = overlapping_reads(&edge, &stack.redis).await;
        let per_instance = l2_hits_per_instance(&answers);
        // The warm instance keeps its one idle connection even if no read went to it.
        let expected = per_instance
            .values()
            .map(|n| (*n).min(bound))
            .sum::<usize>()
            + usize::from(!per_instance.contains_key(&warm));
        let clients = edge_clients(&stack.redis, &env).await;
        assert_eq!(
            clients.len(),
            expected,
            "{CONCURRENT} overlapping reads, redis_max_connections = {bound}, per instance \
             {per_instance:?}:\n{}\n{}",
            clients.join("\n"),
            edge.log()
        );
        if per_instance.values().any(|n| *n > bound) {
            assert!(
                expected < CONCURRENT,
                "at the bound, reads shared connections"
            );
        }
        // Given back and reused: reads one after another open nothing more in these instances (an
        // instance Spin starts for them opens its one).
        let mut new_instances = HashSet::new();
        for id in 1..=ROWS {
            let answer = edge.app().get(&format!("/users/{id}")).await;
            assert_eq!(answer.cache(), "L2");
            let instance = answer.header("x-edge-instance").unwrap();
            if instance != warm && !per_instance.contains_key(instance) {
                new_instances.insert(instance.to_string());
            }
        }
        assert_eq!(
            edge_connections(&stack.redis, &env).await,
            expected + new_instances.len()
        );
        edge.shutdown().await;
        // The next edge starts from zero connections.
        assert!(
            wait_until(Duration::from_secs(10), || async {
                edge_connections(&stack.redis, &env).await == 0
            })
            .await,
            "the edge's connections outlived it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_a_redis_restart_killed_are_dropped_and_no_read_loses_its_l2_hit() {
    let mut stack = Stack::dedicated().await.unwrap();
    let (env, _origin, edge) = setup(&stack, 16).await;
    let per_instance = l2_hits_per_instance(&overlapping_reads(&edge, &stack.redis).await);
    let pooled = edge_connections(&stack.redis, &env).await;
    assert!(pooled > 1, "{pooled} connections, {per_instance:?}");

    // Every pooled connection dies with the server; the data comes back from the AOF.
    stack.redis.restart().await.unwrap();
    assert_eq!(edge_connections(&stack.redis, &env).await, 0);

    // A dead connection fails at once on its next command; the read is retried on a new one, and the
    // instance's other idle (dead) connections are dropped with it.
    let mut retried = 0;
    for round in 0..3 {
        for id in 1..=ROWS {
            let answer = edge.app().get(&format!("/users/{id}")).await;
            assert_eq!(
                answer.cache(),
                "L2",
                "read {id} (round {round}) after the restart"
            );
            assert!(
                answer.header("x-edge-breaker").is_none(),
                "{:?}",
                answer.headers
            );
        }
        let now = edge.log().matches("retrying on a new one").count();
        if round > 0 {
            assert_eq!(
                now, retried,
                "a dead connection was used again in round {round}"
            );
        }
        retried = now;
    }
    let log = edge.log();
    if edge.is_spin() {
        assert!(retried >= 1, "no read met a dead pooled connection:\n{log}");
        assert!(!log.contains("going to the origin"), "{log}");
    }
    // Nothing dead is left: only live connections, fewer than before the restart.
    let open = edge_connections(&stack.redis, &env).await;
    assert!((1..=pooled).contains(&open), "{open} connections");
}
