//! The process-wide tier (`edge/src/process_tier/`) under real `spin up`: copies in Spin's key-value
//! store, shared by every instance of the process. `--max-instance-reuse-count 1` gives every request
//! a fresh instance, so tier 1 (instance memory) never answers and what one request left is seen by the
//! next only through the store.
//!
//! The bundled host has no key-value store (the tier is off there), so the tests that need the tier
//! say so and stop when the edge does not run under Spin; those about a missing or failing store run
//! under both.
//!
//! Needs `cargo build -p aside-origin && cargo build -p aside-edge --target wasm32-wasip2 --release`
//! (`cargo xtask test` does both).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aside_tests::harness::{
    Edge, EdgeOptions, Origin, RedisServer, RedisUser, Stack, TestEnv, generate_secret, http_client,
};
use serde_json::{Value, json};

/// One answer: what these tests look at.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    cache: String,
    timing: String,
    instance: String,
    /// `x-edge-breaker` (empty when every breaker is closed).
    breaker: String,
    version: Option<i64>,
    body: Value,
    started: Instant,
    ended: Instant,
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Seen {
    let started = Instant::now();
    let client = http_client();
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map_or(String::new(), |v| v.to_str().unwrap().to_string())
    };
    let (cache, timing, instance, breaker) = (
        header("x-cache"),
        header("server-timing"),
        header("x-edge-instance"),
        header("x-edge-breaker"),
    );
    let version = aside_shared::headers::parse_etag(&header("etag"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    Seen {
        status,
        cache,
        timing,
        instance,
        breaker,
        version,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        started,
        ended: Instant::now(),
    }
}

async fn get(edge: &Edge, path: &str) -> Seen {
    send(
        reqwest::Method::GET,
        &format!("{}{path}", edge.url()),
        None,
        None,
    )
    .await
}

async fn patch(url: &str, token: Option<&str>, department: &str) -> Seen {
    let body = json!({ "department": department });
    let answer = send(reqwest::Method::PATCH, url, token, Some(body)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
}

/// A seeded env, an origin that accepts only a fresh token, and edge options for them.
async fn setup(stack: &Stack, rows: u64) -> (TestEnv, String, Origin, EdgeOptions) {
    let env = stack.env().await.unwrap();
    env.seed(rows).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let options = EdgeOptions::new(stack, &env, &origin.url(), &token);
    (env, token, origin, options)
}

/// The shared tier on, in Spin's key-value store `default` backed by a redis-server of its own (Spin's
/// `type = "redis"` store), which the test can inspect or freeze.
async fn redis_store(options: EdgeOptions) -> (RedisServer, EdgeOptions) {
    let kv = RedisServer::start().await.unwrap();
    let runtime = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
        kv.url(RedisUser::Admin, 0)
    );
    let options = options
        .runtime_config(runtime)
        .var("shared_tier_store", "default");
    (kv, options)
}

/// Starts the edge; `None` (the test stops, saying why) when it does not run under Spin: the shared
/// tier needs Spin's key-value store, and the bundled host has none.
async fn start_on_spin(options: EdgeOptions, test: &str) -> Option<Edge> {
    let edge = options.start().await.unwrap();
    if !edge.is_spin() {
        eprintln!(
            "{test}: SKIPPED: the shared tier needs Spin's key-value store; the bundled host has none"
        );
        edge.shutdown().await;
        return None;
    }
    Some(edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_left_by_one_instance_is_answered_by_the_next() {
    let stack = Stack::shared().await;
    let (env, _token, _origin, options) = setup(stack, 10).await;
    let Some(edge) = start_on_spin(
        options.shared_tier().max_instance_reuse_count(1),
        "a_copy_left_by_one_instance_is_answered_by_the_next",
    )
    .await
    else {
        return;
    };
    let expected = env.profile_json(stack, 3).await.unwrap();
    let first = get(&edge, "/users/3").await;
    assert_eq!(
        (first.status, first.cache.as_str()),
        (200, "MISS"),
        "{first:?}"
    );
    assert!(first.timing.contains("shared;dur="), "{first:?}");

    let second = get(&edge, "/users/3").await;
    assert_eq!(
        (second.status, second.cache.as_str()),
        (200, "SHARED"),
        "{second:?}\n{}",
        edge.log()
    );
    assert_ne!(
        second.instance, first.instance,
        "reuse count 1: another instance"
    );
    assert_eq!(second.body, expected);
    assert_eq!(second.version, first.version);
    assert!(
        second.timing.contains("shared;dur=") && !second.timing.contains("l2;"),
        "answered without Redis: {second:?}"
    );
    // A projection is cut from the shared full profile.
    let fields = get(&edge, "/users/3?fields=email,username").await;
    assert_eq!(
        (fields.status, fields.cache.as_str()),
        (200, "SHARED"),
        "{fields:?}"
    );
    assert_eq!(
        fields.body,
        json!({"id": 3, "email": expected["email"], "username": expected["username"]})
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_keeps_one_copy_per_slot_in_a_fixed_number_of_keys() {
    let stack = Stack::shared().await;
    let (_env, _token, _origin, options) = setup(stack, 40).await;
    // A Redis of its own as the key-value store, so the test can count the keys Spin holds.
    let (kv, options) = redis_store(options).await;
    let Some(edge) = start_on_spin(
        options
            .var("shared_tier_slots", 8)
            .max_instance_reuse_count(1),
        "the_tier_keeps_one_copy_per_slot_in_a_fixed_number_of_keys",
    )
    .await
    else {
        return;
    };
    for id in 1..=40 {
        let answer = get(&edge, &format!("/users/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let mut admin = kv.admin(0).await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    // The invalidation feed's state and reader lease: two more keys, also fixed.
    keys.retain(|k| !k.starts_with("aside:feed:"));
    assert!(
        !keys.is_empty() && keys.len() <= 8 && keys.iter().all(|k| k.starts_with("aside:l1:")),
        "40 profiles read, 8 slots: {keys:?}"
    );
    // Direct-mapped: ids 33..=40 went last into slots 1..=7 and 0, so they are there and 1..=8 are not.
    for id in 33..=40 {
        let answer = get(&edge, &format!("/users/{id}")).await;
        assert_eq!(answer.cache, "SHARED", "id {id}: {answer:?}");
    }
    let evicted = get(&edge, "/users/1").await;
    assert_eq!(evicted.cache, "L2", "{evicted:?}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_copy_is_fresh_for_tier_one_s_ttl_only() {
    let stack = Stack::shared().await;
    let (_env, _token, _origin, options) = setup(stack, 5).await;
    let ttl = Duration::from_millis(1500);
    let Some(edge) = start_on_spin(
        options
            .shared_tier()
            .l1_ttl_ms(ttl.as_millis() as u64)
            // The TTL rule alone: with the invalidation feed current, a copy lives to its soft expiry.
            .var("feed_poll_ms", 0)
            .max_instance_reuse_count(1),
        "a_shared_copy_is_fresh_for_tier_one_s_ttl_only",
    )
    .await
    else {
        return;
    };
    let first = get(&edge, "/users/2").await;
    assert_eq!(first.cache, "MISS", "{first:?}");
    // The copy was taken while the first request ran: fresh from then for the TTL.
    let mut shared = 0;
    loop {
        let answer = get(&edge, "/users/2").await;
        if answer.started.duration_since(first.ended) >= ttl {
            assert_eq!(answer.cache, "L2", "past the TTL: {answer:?}");
            break;
        }
        if answer.ended.duration_since(first.started) < ttl {
            assert_eq!(answer.cache, "SHARED", "within the TTL: {answer:?}");
            shared += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared > 0, "no answer came within the TTL");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_read_by_the_next() {
    let stack = Stack::shared().await;
    let (_env, _token, _origin, options) = setup(stack, 5).await;
    let Some(edge) = start_on_spin(
        options.shared_tier().max_instance_reuse_count(1),
        "a_write_through_one_instance_is_read_by_the_next",
    )
    .await
    else {
        return;
    };
    let before = get(&edge, "/users/4").await;
    assert_eq!(before.cache, "MISS", "{before:?}");
    let written = patch(&format!("{}/users/4", edge.url()), None, "Shared Tier Team").await;
    assert!(written.version > before.version, "{written:?}");
    // The shared copy (fresh for 2 s) was replaced by the written one: no instance reads the old one.
    for _ in 0..3 {
        let after = get(&edge, "/users/4").await;
        assert_eq!(after.cache, "SHARED", "{after:?}");
        assert_eq!(after.version, written.version, "{after:?}");
        assert_eq!(after.body["department"], "Shared Tier Team");
    }
    // A delete empties the slot: the next instance asks Redis, which holds the tombstone.
    let deleted = send(
        reqwest::Method::DELETE,
        &format!("{}/users/4", edge.url()),
        None,
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let gone = get(&edge, "/users/4").await;
    assert_eq!((gone.status, gone.cache.as_str()), (404, "L2"), "{gone:?}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_behind_the_edge_is_seen_within_the_ttl_and_versions_never_go_back_per_instance() {
    let stack = Stack::shared().await;
    let (_env, token, origin, options) = setup(stack, 5).await;
    let ttl = Duration::from_millis(1000);
    // Spin's instance reuse as in production: instances of up to 128 requests, several at once.
    let Some(edge) = start_on_spin(
        options.shared_tier().l1_ttl_ms(ttl.as_millis() as u64),
        "a_write_behind_the_edge_is_seen_within_the_ttl",
    )
    .await
    else {
        return;
    };
    let path = "/users/1";
    assert_eq!(get(&edge, path).await.status, 200);
    let readers = 4;
    let rounds = 4;
    let mut writes = Vec::new();
    let mut answers: Vec<Seen> = Vec::new();
    for round in 0..rounds {
        // A write straight to the origin: no edge instance is told.
        let written = patch(
            &format!("{}{path}", origin.url()),
            Some(&token),
            &format!("Round {round}"),
        )
        .await;
        writes.push((written.ended, written.version.unwrap()));
        let until = Instant::now() + ttl + Duration::from_millis(600);
        let tasks: Vec<_> = (0..readers)
            .map(|_| {
                let url = edge.url();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while Instant::now() < until {
                        seen.push(
                            send(reqwest::Method::GET, &format!("{url}/users/1"), None, None).await,
                        );
                    }
                    seen
                })
            })
            .collect();
        for task in tasks {
            answers.extend(task.await.unwrap());
        }
    }
    let failed: Vec<&Seen> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "every read answered: {failed:?}\n{}",
        edge.log()
    );
    // Staleness: an answer that started more than the TTL (plus the time the write's copy can take to
    // reach tier 1: one lookup) after a write holds that write's version or a newer one.
    let slack = Duration::from_millis(500);
    let mut late = 0;
    for a in &answers {
        let newest_due = writes
            .iter()
            .filter(|(at, _)| a.started.duration_since(*at) > ttl + slack)
            .map(|(_, v)| *v)
            .max();
        if let Some(due) = newest_due {
            late += 1;
            assert!(
                a.version.unwrap() >= due,
                "stale beyond the TTL: {a:?} (due {due})"
            );
        }
    }
    assert!(late > 0, "some reads came after the TTL");
    // Monotonic per instance: an answer that started after another of the same instance ended is not
    // older than it.
    let mut by_instance: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for a in &answers {
        by_instance.entry(a.instance.as_str()).or_default().push(a);
    }
    for (instance, seen) in &by_instance {
        for a in seen {
            for b in seen {
                if b.started > a.ended {
                    assert!(
                        b.version >= a.version,
                        "instance {instance} went back: {a:?} then {b:?}"
                    );
                }
            }
        }
    }
    let shared = answers.iter().filter(|a| a.cache == "SHARED").count();
    eprintln!(
        "{} answers from {} instances: {shared} SHARED",
        answers.len(),
        by_instance.len()
    );
    edge.shutdown().await;
}

/// Reads `id` twice through `edge` (every request a fresh instance) and checks they are answered as
/// without the tier: the origin, then Redis.
async fn answered_as_without_the_tier(edge: &Edge, origin: &Origin, id: u32) {
    let first = get(edge, &format!("/users/{id}")).await;
    assert_eq!(
        (first.status, first.cache.as_str()),
        (200, "MISS"),
        "{first:?}"
    );
    // The origin's fill follows its answer.
    origin.fills_settled().await;
    let second = get(edge, &format!("/users/{id}")).await;
    assert_eq!(
        (second.status, second.cache.as_str()),
        (200, "L2"),
        "{second:?}"
    );
    assert_eq!(second.body, first.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_store_the_edge_works_as_before() {
    let stack = Stack::shared().await;
    let (_env, _token, origin, options) = setup(stack, 5).await;
    // Off (the default), and a label the component may not use (not in its key_value_stores).
    for (what, options) in [
        ("off", options.clone()),
        (
            "unknown label",
            options
                .clone()
                .shared_tier()
                .var("shared_tier_store", "other"),
        ),
    ] {
        let edge = options.max_instance_reuse_count(1).start().await.unwrap();
        eprintln!("{what}");
        answered_as_without_the_tier(&edge, &origin, if what == "off" { 1 } else { 2 }).await;
        edge.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_skipped_and_the_edge_answers_in_time() {
    let stack = Stack::shared().await;
    let (_env, _token, _origin, options) = setup(stack, 5).await;
    let (kv, options) = redis_store(options).await;
    let Some(edge) = start_on_spin(
        options,
        "a_failing_store_is_skipped_and_the_edge_answers_in_time",
    )
    .await
    else {
        return;
    };
    let warm = get(&edge, "/users/3").await;
    assert_eq!(warm.status, 200, "{warm:?}");
    // The store accepts connections and never answers.
    kv.pause(true);
    let mut caches = Vec::new();
    for id in 1..=5 {
        let answer = get(&edge, &format!("/users/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        // Within the request budget (2 s by default): the store's calls time out at
        // redis_timeout_ms, then its breaker skips it.
        assert!(
            answer.ended.duration_since(answer.started) < Duration::from_secs(2),
            "answered within the budget: {answer:?}"
        );
        caches.push(answer.cache);
    }
    kv.pause(false);
    assert!(
        caches
            .iter()
            .all(|c| ["L1", "L2", "MISS"].contains(&c.as_str())),
        "{caches:?}"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_found_frozen_by_one_instance_is_skipped_by_the_next() {
    let stack = Stack::shared().await;
    let (_env, _token, origin, options) = setup(stack, 5).await;
    let Some(edge) = start_on_spin(
        options
            .shared_tier()
            .var("origin_failure_threshold", 1)
            .var("origin_backoff_ms", 30_000)
            .var("origin_timeout_ms", 500)
            .max_instance_reuse_count(1),
        "an_origin_found_frozen_by_one_instance_is_skipped_by_the_next",
    )
    .await
    else {
        return;
    };
    // The origin accepts connections and never answers; ids 1 and 2 are in no cache yet.
    origin.pause(true);
    let first = get(&edge, "/users/1").await;
    let next = get(&edge, "/users/2").await;
    origin.pause(false);
    assert_eq!(first.status, 503, "{first:?}");
    assert!(
        first.timing.contains("origin;dur="),
        "the first instance asked: {first:?}"
    );
    assert_ne!(next.instance, first.instance);
    // The next instance did not ask: its breaker was open from the start.
    assert_eq!(next.status, 503, "{next:?}");
    assert!(!next.timing.contains("origin;"), "{next:?}\n{}", edge.log());
    assert_eq!(next.breaker, "origin=open", "{next:?}");
    edge.shutdown().await;
}
