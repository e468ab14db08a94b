//! The edge, end to end: the release component under the bundled Spin-compatible host, real Redis,
//! PostgreSQL and origin. Every request goes through the edge URL (the origin is asked directly only
//! to compare answers or to read its metrics).
//!
//! Needs `cargo build -p aside-origin && cargo build -p aside-edge --target wasm32-wasip2 --release`
//! (`cargo xtask test` does both).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aside_tests::harness::{
    Answer, Edge, EdgeOptions, Origin, Stack, TestEnv, generate_secret, http_client,
    manifest_with_allowed_hosts, metric, tier_ms, wait_until,
};
use redis::AsyncCommands as _;
use reqwest::Method;
use serde_json::Value;

/// The origin's counter of PostgreSQL profile reads.
const PROFILE_QUERIES: &str = "aside_origin_db_queries_total{query=\"profile_by_id\"}";

/// What every answer is checked against: 2 s is the edge's budget (origin and Redis timeouts are
/// below it), far above what a healthy local request takes.
const BUDGET: Duration = Duration::from_secs(2);

/// `GET` through the edge; the answer is checked for `x-cache` and `server-timing`.
async fn get(edge: &Edge, path: &str) -> Answer {
    let answer = edge.app().get(path).await;
    answer.assert_edge_tagged();
    answer
}

/// `GET` straight to the origin with the token.
async fn origin_get(origin: &Origin, token: &str, path: &str) -> Answer {
    origin.app().with_token(token).get(path).await
}

/// A seeded env and an origin that accepts only a fresh token.
async fn origin_for(stack: &Stack, rows: u64) -> (TestEnv, String, Origin) {
    let env = stack.env().await.unwrap();
    env.seed(rows).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    (env, token, origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_read_misses_then_hits_tier_one_then_tier_two_after_the_ttl() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 20).await;
    // The TTL rule alone (no invalidation feed, which would keep the copy fresh past the TTL).
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .l1_ttl_ms(200)
        .var("feed_poll_ms", 0)
        .start()
        .await
        .unwrap();
    let expected = env.profile_json(stack, 5).await.unwrap();

    let first = get(&edge, "/users/5").await;
    assert_eq!((first.status, first.cache()), (200, "MISS"), "{first:?}");
    assert_eq!(first.json(), expected);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let timing = first.header("server-timing").unwrap();
    assert!(
        timing.contains("l1;dur=") && timing.contains("l2;dur=") && timing.contains("origin;dur="),
        "{timing}"
    );
    // The origin's own time is passed on, prefixed: its load (the lease with a look at Redis and
    // PostgreSQL; its fill follows the answer), and no first look of its own: the edge told it Redis
    // had no entry.
    assert!(
        tier_ms(timing, "origin-db").is_some() && tier_ms(timing, "origin-redis").is_none(),
        "{timing}"
    );

    origin.fills_settled().await;
    // The instance that answered keeps the profile: the next request it serves is an L1 hit. (Spin's
    // handler may start a second instance when the first is busy for a moment, e.g. on a loaded
    // machine; that one reads Redis, which the origin filled, and then has it in its tier 1 too.)
    let seen = Observed::default();
    let l1 = wait_until(BUDGET, || seen.next(&edge, "/users/5", &expected, "L1")).await;
    assert!(l1, "no L1 hit: {:?}", seen.take());
    let sources = seen.take();
    assert!(
        sources.iter().all(|c| c == "L1" || c == "L2"),
        "{sources:?}"
    );
    // Once the 200 ms tier-1 TTL has passed, the instance asks Redis again.
    let l2 = wait_until(Duration::from_secs(3), || {
        seen.next(&edge, "/users/5", &expected, "L2")
    })
    .await;
    assert!(l2, "no L2 answer after the tier-1 TTL: {:?}", seen.take());
    let sources = seen.take();
    assert!(
        sources.iter().all(|c| c == "L1" || c == "L2"),
        "{sources:?}"
    );

    let queries = metric(&origin.url(), PROFILE_QUERIES).await;
    assert_eq!(queries, 1.0, "one PostgreSQL read for all of the above");
}

/// The answers of a series of `GET`s, for [`wait_until`] polls.
#[derive(Default)]
struct Observed(std::sync::Mutex<Vec<Answer>>);

impl Observed {
    /// One `GET`: checks the status and body, keeps the answer, says whether `x-cache` is `wanted`.
    async fn next(&self, edge: &Edge, path: &str, body: &Value, wanted: &str) -> bool {
        let answer = get(edge, path).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(&answer.json(), body, "{path}");
        let found = answer.cache() == wanted;
        self.0.lock().unwrap().push(answer);
        found
    }

    /// The answers so far (and forgets them).
    fn take_answers(&self) -> Vec<Answer> {
        std::mem::take(&mut self.0.lock().unwrap())
    }

    /// The `x-cache` values so far (and forgets them).
    fn take(&self) -> Vec<String> {
        self.take_answers()
            .iter()
            .map(|a| a.cache().to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_per_request_is_served_from_tier_two() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 10).await;
    // Every request gets a new instance, so tier 1 is always empty: a hit must come from Redis.
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .max_instance_reuse_count(1)
        .start()
        .await
        .unwrap();
    let expected = env.profile_json(stack, 3).await.unwrap();

    let first = get(&edge, "/users/3").await;
    assert_eq!((first.status, first.cache()), (200, "MISS"), "{first:?}");
    assert_eq!(first.json(), expected);
    origin.fills_settled().await;
    for _ in 0..5 {
        let answer = get(&edge, "/users/3").await;
        assert_eq!((answer.status, answer.cache()), (200, "L2"), "{answer:?}");
        assert_eq!(answer.body, first.body, "L2 and MISS bodies are identical");
        let timing = answer.header("server-timing").unwrap();
        assert!(
            timing.contains("l2;dur=") && !timing.contains("origin"),
            "{timing}"
        );
    }
    assert_eq!(metric(&origin.url(), PROFILE_QUERIES).await, 1.0);
}

/// The key names of earlier versions (`user:profile:<id>`, `user:lease:<id>`, no hash tag) left in
/// Redis by a running deployment: this version never reads them, so they are misses (never errors),
/// whatever they hold, and it leaves them to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_style_key_names_left_by_an_earlier_version_read_as_misses() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    // An old-style copy of profile 2 that differs from PostgreSQL (another department, a version far
    // ahead, fresh for an hour): were it read, it would be served and would win every compare-and-set.
    assert_eq!(origin_get(&origin, &token, "/users/2").await.status, 200);
    // The origin fills Redis after it answers: wait for the fill before reading it.
    origin.fills_settled().await;
    let mut hash: HashMap<String, String> = redis.hgetall("user:profile:{2}").await.unwrap();
    assert!(
        !hash.is_empty(),
        "the origin's fill of profile 2 is in Redis"
    );
    hash.insert("department".into(), "Planted".into());
    hash.insert("_version".into(), "999999".into());
    let fresh_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000;
    hash.insert("_fresh_until".into(), fresh_until.to_string());
    let pairs: Vec<(String, String)> = hash.into_iter().collect();
    let _: () = redis.hset_multiple("user:profile:2", &pairs).await.unwrap();
    let _: () = redis.del("user:profile:{2}").await.unwrap();
    // Old-style keys of the wrong type, and an old-style fill lease held by an "old origin".
    let _: () = redis.set("user:profile:3", "garbage").await.unwrap();
    let _: () = redis
        .set_ex("user:lease:4", "old-origin", 60)
        .await
        .unwrap();

    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .max_instance_reuse_count(1)
        .start()
        .await
        .unwrap();
    for id in [2, 3, 4] {
        let expected = env.profile_json(stack, id).await.unwrap();
        let path = format!("/users/{id}");
        let first = get(&edge, &path).await;
        assert_eq!(
            (first.status, first.cache()),
            (200, "MISS"),
            "{id}: {first:?}"
        );
        assert_eq!(
            first.json(),
            expected,
            "{id}: PostgreSQL's row, not the old key's"
        );
        origin.fills_settled().await;
        // Filled under the new name: the next instance reads it from tier 2.
        let second = get(&edge, &path).await;
        assert_eq!(
            (second.status, second.cache()),
            (200, "L2"),
            "{id}: {second:?}"
        );
        assert_eq!(second.body, first.body);
        let projected = get(&edge, &format!("{path}?fields=department")).await;
        assert_eq!(projected.status, 200, "{id}: {projected:?}");
        assert_eq!(projected.json()["department"], expected["department"]);
        let direct = origin_get(&origin, &token, &path).await;
        assert_eq!(direct.json(), expected, "{id}: the origin's own read");
    }
    // The old keys are left as they were (they expire by their own TTLs).
    let planted: String = redis.hget("user:profile:2", "department").await.unwrap();
    assert_eq!(planted, "Planted");
    let garbage: String = redis.get("user:profile:3").await.unwrap();
    assert_eq!(garbage, "garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_projections_are_identical_from_the_origin_tier_two_and_tier_one() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 10).await;
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    // A fresh instance per request: tier 1 is always empty there.
    let no_l1 = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .max_instance_reuse_count(1)
        .start()
        .await
        .unwrap();
    let row = env.profile_json(stack, 2).await.unwrap();
    let expected =
        serde_json::json!({"id": 2, "email": row["email"], "department": row["department"]});
    let path = "/users/2?fields=email,department";

    // Cold: the origin answers (and fills Redis).
    let miss = get(&edge, path).await;
    assert_eq!((miss.status, miss.cache()), (200, "MISS"), "{miss:?}");
    assert_eq!(miss.json(), expected);
    origin.fills_settled().await;
    // An instance without the profile in memory reads the fields from Redis (HMGET).
    let l2 = get(&no_l1, path).await;
    assert_eq!((l2.status, l2.cache()), (200, "L2"), "{l2:?}");
    let timing = l2.header("server-timing").unwrap();
    assert!(!timing.contains("origin"), "{timing}");
    // A full read fills tier 1 (a projection never does), which then answers projections too.
    let seen = Observed::default();
    let l1 = wait_until(BUDGET, || async {
        seen.next(&edge, "/users/2", &row, "L1").await
            && seen.next(&edge, path, &expected, "L1").await
    })
    .await;
    assert!(l1, "no L1 projection: {:?}", seen.take());
    let l1 = get(&edge, path).await;
    assert!(["L1", "L2"].contains(&l1.cache()), "{l1:?}");

    // The same bytes from every tier and from the origin asked directly, and another spelling of the
    // same selection is the same answer.
    assert_eq!(l2.body, miss.body);
    assert_eq!(l1.body, miss.body);
    let reordered = get(&edge, "/users/2?fields=department,email,email").await;
    assert_eq!(reordered.body, miss.body);
    let direct = origin_get(&origin, &token, path).await;
    assert_eq!(direct.body, miss.body);
    let id_only = get(&no_l1, "/users/2?fields=id").await;
    assert_eq!(
        (id_only.cache(), id_only.json()),
        ("L2", serde_json::json!({"id": 2}))
    );

    // A full profile, too, has one body at the edge, whichever tier answers it.
    let cold = get(&edge, "/users/7").await;
    assert_eq!(cold.cache(), "MISS");
    origin.fills_settled().await;
    let from_redis = get(&no_l1, "/users/7").await;
    assert_eq!(from_redis.cache(), "L2");
    assert_eq!(
        from_redis.body, cold.body,
        "full profile: L2 and MISS bodies"
    );
    let seen = Observed::default();
    let cold_json = cold.json();
    assert!(wait_until(BUDGET, || seen.next(&edge, "/users/7", &cold_json, "L1")).await);
    for answer in seen.take_answers() {
        assert_eq!(
            answer.body,
            cold.body,
            "full profile: {} and MISS bodies",
            answer.cache()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_the_origin_s_errors() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let long_id = format!("/users/{}", "9".repeat(10 * 1024));
    let cases = [
        // 400: malformed ids.
        "/users/0",
        "/users/-1",
        "/users/1e3",
        "/users/abc",
        "/users/9999999999999999999",
        "/users/2147483648",
        "/users/1;DROP%20TABLE%20users",
        "/users/%31",
        "/users/%FF",
        "/users/%EF%BC%91",
        "/users/007",
        long_id.as_str(),
        // 400: malformed queries.
        "/users/1?fields=password",
        "/users/1?fields=",
        "/users/1?field=email",
        "/users/1?fields=email&fields=gender",
        // 404: unknown id, unknown routes.
        "/users/999",
        "/users/999?fields=email",
        "/nowhere",
        "/users/1/friends",
        "/users/",
    ];
    let queries_before = metric(&origin.url(), PROFILE_QUERIES).await;
    for path in cases {
        let direct = origin_get(&origin, &token, path).await;
        let through = get(&edge, path).await;
        let what = &path[..path.len().min(40)];
        assert!(
            direct.status == 400 || direct.status == 404,
            "{what}: origin said {direct:?}"
        );
        assert_eq!(through.status, direct.status, "{what}");
        assert_eq!(through.body, direct.body, "{what}");
        assert_eq!(
            through.header("content-type"),
            direct.header("content-type"),
            "{what}"
        );
        let code = through.json()["error"]["code"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            ["invalid_id", "invalid_query", "not_found"].contains(&code.as_str()),
            "{what}: {code}"
        );
    }
    origin.fills_settled().await;
    // Only the unknown ids reached PostgreSQL (once each, from the origin's own direct call or
    // the edge's forwarded one: whichever came first).
    let queries = metric(&origin.url(), PROFILE_QUERIES).await - queries_before;
    assert!(queries <= 4.0, "{queries} PostgreSQL reads for error cases");

    // An unknown id stays unknown: the origin cached a "missing" marker (issue 4's negative cache),
    // which the edge answers as a 404 from tier 2 without asking the origin.
    let again = get(&edge, "/users/999").await;
    assert_eq!((again.status, again.cache()), (404, "L2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_edge_answers_through_the_origin_and_recovers() {
    let mut stack = Stack::dedicated().await.unwrap();
    let (env, token, origin) = origin_for(&stack, 10).await;
    // Tier 1 off: every request goes past it, so what happens with Redis shows.
    let edge = EdgeOptions::new(&stack, &env, &origin.url(), &token)
        .l1_ttl_ms(0)
        .redis_backoff_ms(300)
        .start()
        .await
        .unwrap();
    assert_eq!(get(&edge, "/users/1").await.cache(), "MISS");
    origin.fills_settled().await;
    assert_eq!(get(&edge, "/users/1").await.cache(), "L2");

    stack.redis.kill();
    for id in 1..=10 {
        let started = Instant::now();
        let answer = get(&edge, &format!("/users/{id}")).await;
        let elapsed = started.elapsed();
        assert_eq!((answer.status, answer.cache()), (200, "MISS"), "id {id}");
        assert_eq!(answer.json(), env.profile_json(&stack, id).await.unwrap());
        assert!(elapsed < BUDGET, "id {id} took {elapsed:?} with Redis down");
    }
    let projection = get(&edge, "/users/4?fields=email").await;
    assert_eq!((projection.status, projection.cache()), (200, "MISS"));

    stack.redis.restart().await.unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let (edge_ref, seen_ref) = (&edge, &seen);
    let recovered = wait_until(Duration::from_secs(5), || async move {
        let answer = get(edge_ref, "/users/7").await;
        assert_eq!(answer.status, 200);
        seen_ref.lock().unwrap().push(answer.cache().to_string());
        answer.cache() == "L2"
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(
        recovered,
        "no L2 hit within 5 s of Redis coming back: {seen:?}"
    );

    // A Redis that accepts connections but never answers costs at most the Redis timeout.
    stack.redis.pause(true);
    for id in [2, 3, 4] {
        let started = Instant::now();
        let answer = get(&edge, &format!("/users/{id}")).await;
        let elapsed = started.elapsed();
        assert_eq!((answer.status, answer.cache()), (200, "MISS"), "id {id}");
        assert!(
            elapsed < BUDGET,
            "id {id} took {elapsed:?} with Redis frozen"
        );
    }
    stack.redis.pause(false);
    let url_path = "/users/7";
    let back = wait_until(Duration::from_secs(5), || async {
        get(&edge, url_path).await.cache() == "L2"
    })
    .await;
    assert!(back, "no L2 hit within 5 s of Redis thawing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_token_is_enforced_and_a_rejected_edge_caches_nothing() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;

    let anonymous = origin
        .app()
        .send_raw(Method::GET, "/users/1", None, "")
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["code"], "unauthorized");

    let wrong = EdgeOptions::new(stack, &env, &origin.url(), &generate_secret())
        .start()
        .await
        .unwrap();
    for _ in 0..2 {
        let answer = get(&wrong, "/users/1").await;
        assert_eq!((answer.status, answer.cache()), (401, "MISS"), "{answer:?}");
        assert_eq!(answer.body, anonymous.body);
        let projection = get(&wrong, "/users/1?fields=email").await;
        assert_eq!((projection.status, projection.cache()), (401, "MISS"));
    }
    // Forwarded requests (writes) get the origin's 401 too.
    for (method, path, body) in [
        (Method::PUT, "/users/1", "{}"),
        (Method::DELETE, "/users/1", ""),
        (Method::POST, "/users", "{}"),
    ] {
        let what = format!("{method} {path}");
        let direct = origin
            .app()
            .send_raw(method.clone(), path, Some("application/json"), body)
            .await;
        let through = wrong
            .app()
            .send_raw(method, path, Some("application/json"), body)
            .await;
        through.assert_edge_tagged();
        assert_eq!(direct.status, 401, "{what}: {direct:?}");
        assert_eq!((through.status, through.cache()), (401, "BYPASS"), "{what}");
        assert_eq!(through.body, direct.body, "{what}");
    }
    // Nothing reached PostgreSQL and nothing was cached anywhere.
    assert_eq!(metric(&origin.url(), PROFILE_QUERIES).await, 0.0);
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let mut keys: Vec<String> = redis.keys("*").await.unwrap();
    // (The invalidation feed's heartbeats are the origin's own, not a cached answer.)
    keys.retain(|k| !k.starts_with("aside:{feed}"));
    assert!(keys.is_empty(), "{keys:?}");

    // The edge with the right token ignores whatever authorization a client sends: it speaks for
    // itself to the origin.
    let right = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let answer = right
        .app()
        .with_token("not-the-token")
        .send_raw(Method::GET, "/users/1", None, "")
        .await;
    assert_eq!((answer.status, answer.cache()), (200, "MISS"));
    assert!(!origin.log().contains(&token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_allow_redis_gets_no_redis() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    // Redis has the profile (the origin filled it), so an allowed edge would hit it.
    assert_eq!(origin_get(&origin, &token, "/users/3").await.status, 200);
    origin.fills_settled().await;
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    assert!(redis.exists::<_, bool>("user:profile:{3}").await.unwrap());

    let manifest = manifest_with_allowed_hosts(&["{{ origin_url }}"]).unwrap();
    // Spin checks allowed_outbound_hosts when a connection is made, not at start.
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .manifest(&manifest)
        .l1_ttl_ms(0)
        .start()
        .await
        .unwrap();
    for path in ["/users/3", "/users/3", "/users/3?fields=email"] {
        let started = Instant::now();
        let answer = get(&edge, path).await;
        assert_eq!((answer.status, answer.cache()), (200, "MISS"), "{path}");
        assert!(started.elapsed() < BUDGET);
        let timing = answer.header("server-timing").unwrap();
        assert!(timing.contains("origin;dur="), "{timing}");
    }
    // The same manifest with Redis allowed hits it: the refusal above was the allow-list's.
    let allowed =
        manifest_with_allowed_hosts(&["redis://{{ redis_address }}", "{{ origin_url }}"]).unwrap();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .manifest(&allowed)
        .start()
        .await
        .unwrap();
    assert_eq!(get(&edge, "/users/3").await.cache(), "L2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_allow_the_origin_gets_503_from_the_edge() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    assert_eq!(origin_get(&origin, &token, "/users/3").await.status, 200);
    origin.fills_settled().await;
    let queries_before = metric(&origin.url(), PROFILE_QUERIES).await;

    let manifest = manifest_with_allowed_hosts(&["redis://{{ redis_address }}"]).unwrap();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .manifest(&manifest)
        .start()
        .await
        .unwrap();
    // What Redis has is served...
    let cached = get(&edge, "/users/3").await;
    assert_eq!((cached.status, cached.cache()), (200, "L2"));
    // ...what needs the origin is refused by the host, and the edge says so quickly.
    let started = Instant::now();
    let refused = get(&edge, "/users/4").await;
    assert!(started.elapsed() < BUDGET);
    assert_eq!(
        (refused.status, refused.cache()),
        (503, "MISS"),
        "{refused:?}"
    );
    assert_eq!(refused.json()["error"]["code"], "unavailable");
    assert!(refused.header("retry-after").is_some());
    let write = edge
        .app()
        .send_raw(Method::DELETE, "/users/3", None, "")
        .await;
    write.assert_edge_tagged();
    assert_eq!((write.status, write.cache()), (503, "BYPASS"));
    // The origin never saw them.
    assert_eq!(metric(&origin.url(), PROFILE_QUERIES).await, queries_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cold_reads_make_one_postgres_query() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let expected = env.profile_json(stack, 4).await.unwrap();
    let before = metric(&origin.url(), PROFILE_QUERIES).await;

    let client = http_client();
    let url = format!("{}/users/4", edge.url());
    let requests = (0..200).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client.get(&url).send().await.unwrap();
            let status = response.status().as_u16();
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
            (status, x_cache, response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(body, &expected);
    }
    let sources: HashSet<&str> = answers.iter().map(|(_, c, _)| c.as_str()).collect();
    let after = metric(&origin.url(), PROFILE_QUERIES).await;
    assert_eq!(
        after - before,
        1.0,
        "200 concurrent cold reads made {} PostgreSQL queries (sources {sources:?})",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_unknown_routes_are_forwarded_unchanged() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    // Requests that change nothing whatever the origin's write routes are: errors only.
    let json = Some("application/json");
    let cases: [(Method, &str, Option<&str>, &str); 9] = [
        (Method::DELETE, "/healthz", None, ""),
        (Method::POST, "/healthz", json, "{}"),
        (Method::POST, "/nowhere", json, r#"{"a":1}"#),
        (Method::POST, "/users", Some("text/plain"), "hello"),
        (Method::POST, "/users", json, "{not json"),
        (Method::PUT, "/users/abc", json, "{}"),
        (Method::PATCH, "/users/999999", json, r#"{"gender":"X"}"#),
        (Method::DELETE, "/users/999999", None, ""),
        (Method::GET, "/users", None, ""),
    ];
    for (method, path, content_type, body) in cases {
        let what = format!("{method} {path}");
        let direct = origin
            .app()
            .with_token(&token)
            .send_raw(method.clone(), path, content_type, body)
            .await;
        let through = edge.app().send_raw(method, path, content_type, body).await;
        through.assert_edge_tagged();
        assert!(direct.status >= 400, "{what}: {direct:?}");
        assert_eq!(through.cache(), "BYPASS", "{what}");
        assert_eq!(through.status, direct.status, "{what}");
        assert_eq!(through.body, direct.body, "{what}");
        assert_eq!(
            through.header("content-type"),
            direct.header("content-type"),
            "{what}"
        );
        assert_eq!(through.header("allow"), direct.header("allow"), "{what}");
        assert_eq!(
            through.header("location"),
            direct.header("location"),
            "{what}"
        );
    }
    // The edge answers its own liveness check.
    let health = get(&edge, "/healthz").await;
    assert_eq!((health.status, health.cache()), (200, "BYPASS"));
    // The edge's API document is its own, not the origin's (which names the origin's token).
    let document = get(&edge, "/openapi.json").await;
    assert_eq!(document.status, 200, "{document:?}");
    let document = document.json();
    assert_eq!(document["info"]["title"], "aside edge", "{document}");
    assert!(
        document["components"]["securitySchemes"]
            .get("origin_token")
            .is_none(),
        "{document}"
    );
    // The origin's operational routes are not part of the public API: the edge answers 404 itself.
    for path in ["/metrics", "/readyz"] {
        let direct = origin.app().send_raw(Method::GET, path, None, "").await;
        assert_eq!(direct.status, 200, "{path} on the origin");
        let through = get(&edge, path).await;
        assert_eq!(through.status, 404, "{path} through the edge");
        assert!(
            !through.body.contains("aside_origin"),
            "{path}: {}",
            through.body
        );
    }
}

/// A write through the edge with a JSON body; the answer is checked for the edge's headers.
async fn write(edge: &Edge, method: Method, path: &str, body: &Value) -> Answer {
    let answer = edge.app().call(method, path, Some(body)).await;
    answer.assert_edge_tagged();
    answer
}

/// Profile `id` as PostgreSQL has it (the API's JSON) and its `version` column.
async fn row_and_version(stack: &Stack, env: &TestEnv, id: i32) -> (Value, i64) {
    let body = env.profile_json(stack, id).await.unwrap();
    let client = stack.postgres.connect(&env.database).await.unwrap();
    let version = client
        .query_one("SELECT version FROM devops_api.users WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get::<_, i64>(0);
    (body, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_answer_carries_its_version_as_an_etag() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let (_, version) = row_and_version(stack, &env, 3).await;
    assert_eq!(version, 1, "a seeded row");
    // The origin: a miss, a hit, a projection.
    for path in ["/users/3", "/users/3", "/users/3?fields=email"] {
        let direct = origin_get(&origin, &token, path).await;
        assert_eq!(direct.header("etag"), Some("\"1\""), "origin {path}");
    }
    origin.fills_settled().await;
    // The edge, from every tier (L2 now: the origin filled Redis; then L1).
    let seen = Observed::default();
    let body = env.profile_json(stack, 3).await.unwrap();
    assert!(wait_until(BUDGET, || seen.next(&edge, "/users/3", &body, "L1")).await);
    for answer in seen.take_answers() {
        assert_eq!(answer.version(), 1, "{answer:?}");
    }
    let projection = get(&edge, "/users/3?fields=email").await;
    assert_eq!(projection.version(), 1, "{projection:?}");
    let miss = get(&edge, "/users/4?fields=email").await;
    assert_eq!((miss.cache(), miss.version()), ("MISS", 1), "{miss:?}");

    // Writes answer with the written version; a DELETE's 204 with the version it removed.
    let patched = write(
        &edge,
        Method::PATCH,
        "/users/3",
        &serde_json::json!({"department": "Sales"}),
    )
    .await;
    assert_eq!((patched.status, patched.version()), (200, 2), "{patched:?}");
    let deleted = edge
        .app()
        .send_raw(Method::DELETE, "/users/3", None, "")
        .await;
    assert_eq!((deleted.status, deleted.version()), (204, 2), "{deleted:?}");
    let created = write(
        &edge,
        Method::POST,
        "/users",
        &serde_json::json!({
            "full_name": "Beatriz Antunes", "gender": "F", "birth_date": "1988-07-14",
            "department": "Security", "email": "beatriz.antunes@fake-devops-db.internal",
            "username": "beatriz.antunes"
        }),
    )
    .await;
    assert_eq!((created.status, created.version()), (201, 1), "{created:?}");
    // Answers that are not a profile carry none.
    let missing = get(&edge, "/users/999").await;
    assert_eq!((missing.status, missing.header("etag")), (404, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_reads_its_own_writes_from_tier_one_at_once() {
    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, 5).await;
    // The spin.toml tier-1 TTL (2 s): an instance that only dropped its copy would answer from L2, one
    // that kept the old copy would answer the old value.
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let before = env.profile_json(stack, 2).await.unwrap();
    let seen = Observed::default();
    assert!(wait_until(BUDGET, || seen.next(&edge, "/users/2", &before, "L1")).await);
    let old_department = before["department"].as_str().unwrap();
    let department = if old_department == "DevOps" {
        "Sales"
    } else {
        "DevOps"
    };

    for round in 1..=3 {
        let name = format!("Read Your Writes {}", ["One", "Two", "Three"][round - 1]);
        let patched = write(
            &edge,
            Method::PATCH,
            "/users/2",
            &serde_json::json!({"full_name": name, "department": department}),
        )
        .await;
        assert_eq!(patched.status, 200, "{patched:?}");
        let written = patched.json();
        assert_eq!(written["full_name"], name.as_str());
        let (row, version) = row_and_version(stack, &env, 2).await;
        assert_eq!((written.clone(), patched.version()), (row, version));

        // The instance that took the write answers with it at once, from its tier 1. (Another
        // instance, if the host started one, may answer the old value until its tier-1 TTL ends.)
        let mut same_instance = 0;
        for _ in 0..20 {
            let read = get(&edge, "/users/2").await;
            if read.instance() != patched.instance() {
                continue;
            }
            same_instance += 1;
            assert_eq!(read.status, 200, "{read:?}");
            assert_eq!(read.json(), written, "round {round}");
            assert_eq!(read.version(), version, "round {round}");
            assert_eq!(read.cache(), "L1", "round {round}: {read:?}");
            let projection = get(&edge, "/users/2?fields=full_name").await;
            if projection.instance() == patched.instance() {
                assert_eq!(projection.json()["full_name"], name.as_str());
                assert_eq!(projection.version(), version);
            }
            if same_instance == 3 {
                break;
            }
        }
        assert!(
            same_instance > 0,
            "round {round}: no answer from the writing instance"
        );
    }

    // A delete through the instance: its next read is a 404 at once.
    let deleted = edge
        .app()
        .send_raw(Method::DELETE, "/users/2", None, "")
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    for _ in 0..10 {
        let read = get(&edge, "/users/2").await;
        if read.instance() == deleted.instance() {
            assert_eq!(read.status, 404, "{read:?}");
        }
    }
}

/// The randomized test of issue 4: writers and readers through one edge on a few ids. No reader ever
/// sees a version go backwards on one instance; an answer at a version always has that version's
/// values; once writes stop and the tier-1 TTL has passed, the edge answers what PostgreSQL holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_through_the_edge_never_see_a_version_go_back() {
    const IDS: i32 = 5;
    const L1_TTL_MS: u64 = 300;
    const RUN: Duration = Duration::from_secs(3);
    const DEPARTMENTS: [&str; 5] = ["Engineering", "Sales", "DevOps", "Security", "Marketing"];
    const NAMES: [&str; 4] = ["Ana Silva", "Rui Costa", "Marta Sousa", "Nuno Pires"];

    let stack = Stack::shared().await;
    let (env, token, origin) = origin_for(stack, IDS as u64).await;
    let edge = Arc::new(
        EdgeOptions::new(stack, &env, &origin.url(), &token)
            .l1_ttl_ms(L1_TTL_MS)
            .start()
            .await
            .unwrap(),
    );
    let mut rows = HashMap::new();
    for id in 1..=IDS {
        rows.insert(id, env.profile_json(stack, id).await.unwrap());
    }
    let rows = Arc::new(rows);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    // Every (id, version) seen anywhere, with the profile (or the fields) answered at it.
    let at_version: Arc<Mutex<HashMap<(i32, i64), Value>>> = Arc::default();
    let sources: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let instances: Arc<Mutex<HashSet<String>>> = Arc::default();

    /// Checks `answer` (at `version` of `id`) against every other answer at that version: the same
    /// value for each field both have.
    fn same_as_before(
        at_version: &Mutex<HashMap<(i32, i64), Value>>,
        id: i32,
        version: i64,
        body: &Value,
    ) {
        let mut known = at_version.lock().unwrap();
        let entry = known.entry((id, version)).or_insert_with(|| body.clone());
        for (field, value) in body.as_object().unwrap() {
            if let Some(other) = entry.get(field) {
                assert_eq!(other, value, "user {id} version {version}: {field} differs");
            }
        }
        if body.as_object().unwrap().len() > entry.as_object().unwrap().len() {
            *entry = body.clone();
        }
    }

    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (edge, stop, writes, rows, at_version) = (
            Arc::clone(&edge),
            Arc::clone(&stop),
            Arc::clone(&writes),
            Arc::clone(&rows),
            Arc::clone(&at_version),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let id = rand::random_range(1..=IDS);
                let department = DEPARTMENTS[rand::random_range(0..DEPARTMENTS.len())];
                let name = NAMES[rand::random_range(0..NAMES.len())];
                let path = format!("/users/{id}");
                let answer = match rand::random_range(0..3) {
                    0 => {
                        let mut full = rows[&id].clone();
                        let object = full.as_object_mut().unwrap();
                        object.remove("id");
                        object.insert("department".into(), department.into());
                        object.insert("full_name".into(), name.into());
                        write(&edge, Method::PUT, &path, &full).await
                    }
                    1 => {
                        let body = serde_json::json!({"department": department});
                        write(&edge, Method::PATCH, &path, &body).await
                    }
                    _ => {
                        let body = serde_json::json!({"full_name": name});
                        write(&edge, Method::PATCH, &path, &body).await
                    }
                };
                assert_eq!(answer.status, 200, "{answer:?}");
                same_as_before(&at_version, id, answer.version(), &answer.json());
                writes.fetch_add(1, Ordering::Relaxed);
                // Paced, so as not to starve the tests running beside this one.
                tokio::time::sleep(Duration::from_millis(rand::random_range(2..=8))).await;
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..12 {
        let (edge, stop, at_version, sources, instances) = (
            Arc::clone(&edge),
            Arc::clone(&stop),
            Arc::clone(&at_version),
            Arc::clone(&sources),
            Arc::clone(&instances),
        );
        readers.push(tokio::spawn(async move {
            // Per (instance, id): the newest version this reader was answered with.
            let mut newest: HashMap<(String, i32), i64> = HashMap::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = rand::random_range(1..=IDS);
                let path = match rand::random_range(0..4) {
                    0 => format!("/users/{id}?fields=department,full_name"),
                    1 => format!("/users/{id}?fields=full_name"),
                    _ => format!("/users/{id}"),
                };
                let answer = get(&edge, &path).await;
                assert_eq!(answer.status, 200, "{path}: {answer:?}");
                let body = answer.json();
                assert_eq!(body["id"], id, "{path}");
                let version = answer.version();
                same_as_before(&at_version, id, version, &body);
                let key = (answer.instance().to_string(), id);
                let before = newest.get(&key).copied().unwrap_or(0);
                assert!(
                    version >= before,
                    "user {id} went back from version {before} to {version} on instance {} \
                     ({path}, x-cache {})",
                    key.0,
                    answer.cache()
                );
                newest.insert(key, version);
                *sources
                    .lock()
                    .unwrap()
                    .entry(answer.cache().to_string())
                    .or_default() += 1;
                instances
                    .lock()
                    .unwrap()
                    .insert(answer.instance().to_string());
                reads += 1;
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..=4))).await;
            }
            reads
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    let writes = writes.load(Ordering::Relaxed);
    eprintln!(
        "{writes} writes, {reads} reads, sources {:?}, {} instance(s)",
        sources.lock().unwrap(),
        instances.lock().unwrap().len()
    );
    assert!(writes >= 30, "only {writes} writes");
    assert!(reads >= 100, "only {reads} reads");

    // Writes have stopped and nothing is in flight. Once the tier-1 TTL has passed, every instance
    // answers what PostgreSQL holds.
    tokio::time::sleep(Duration::from_millis(L1_TTL_MS + 50)).await;
    for id in 1..=IDS {
        let (row, version) = row_and_version(stack, &env, id).await;
        let path = format!("/users/{id}");
        let last = Mutex::new(None);
        let converged = wait_until(BUDGET, || async {
            let answer = get(&edge, &path).await;
            let ok = answer.status == 200 && answer.json() == row && answer.version() == version;
            *last.lock().unwrap() = Some(answer);
            ok
        })
        .await;
        assert!(
            converged,
            "user {id}: the edge does not answer version {version} {row}: {:?}",
            last.into_inner().unwrap()
        );
        // ...and keeps answering it, whichever instance answers.
        for _ in 0..5 {
            let answer = get(&edge, &path).await;
            assert_eq!(
                (answer.json(), answer.version()),
                (row.clone(), version),
                "user {id}"
            );
        }
    }
}

/// The stale-set race at the edge, made deterministic with the origin's fill-delay test hook: a read
/// misses tier 1 and tier 2 and asks the origin, which reads the old row and is slow to answer; meanwhile
/// a write through the same instance commits and is stored in its tier 1. The late answer must not put
/// the old row back on that instance: after a PATCH it is replaced by the written profile, after a
/// DELETE by a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_of_the_old_row_cannot_go_back_on_the_instance_that_took_the_write() {
    const TRIES: i32 = 20;
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(2 * TRIES as u64).await.unwrap();
    let token = generate_secret();
    let mut options = env
        .origin_options(stack)
        .env("ASIDE_TEST_FILL_DELAY_MS", 400);
    options.tokens = vec![token.clone()];
    let origin = Origin::start(options).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            origin.log().contains("test hooks compiled in")
        })
        .await,
        "the origin was built without test hooks: run `cargo build -p aside-origin --features \
         test-hooks` (cargo xtask test does)"
    );
    // The spin.toml tier-1 TTL (2 s), far longer than the scenario.
    let edge = Arc::new(
        EdgeOptions::new(stack, &env, &origin.url(), &token)
            .start()
            .await
            .unwrap(),
    );

    // The host keeps a spare instance ready while one is busy, and either may take the write; when it
    // is not the one with the slow read, the scenario is tried again on another id.
    let mut exercised = [false, false];
    for id in 1..=2 * TRIES {
        let delete = id % 2 == 0;
        if exercised[usize::from(delete)] {
            continue;
        }
        let path = format!("/users/{id}");
        // A few slow reads, a moment apart, so that most instances have one in flight.
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (edge, path) = (Arc::clone(&edge), path.clone());
            readers.push(tokio::spawn(async move { get(&edge, &path).await }));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written = if delete {
            edge.app().send_raw(Method::DELETE, &path, None, "").await
        } else {
            write(
                &edge,
                Method::PATCH,
                &path,
                &serde_json::json!({"department": "Human Resources", "full_name": "Late Answer"}),
            )
            .await
        };
        assert_eq!(
            written.status,
            if delete { 204 } else { 200 },
            "{written:?}"
        );
        let (row, version) = if delete {
            (Value::Null, written.version())
        } else {
            row_and_version(stack, &env, id).await
        };
        assert_eq!(version, 2 - i64::from(delete), "user {id}");
        let mut late = Vec::new();
        for reader in readers {
            let answer = reader.await.unwrap();
            if answer.instance() == written.instance() {
                late.push(answer);
            }
        }
        if late.is_empty() {
            eprintln!("user {id}: no slow read on the instance that took the write; again");
            continue;
        }
        exercised[usize::from(delete)] = true;
        // The late answers themselves are the write's outcome (they ended after the write).
        for late in late {
            if delete {
                assert_eq!(late.status, 404, "user {id}: {late:?}");
            } else {
                assert_eq!((late.status, late.version()), (200, version), "{late:?}");
                assert_eq!(late.json(), row);
            }
        }
        // And the instance keeps answering it: the old row did not go into its tier 1.
        let mut checked = 0;
        for _ in 0..20 {
            let read = get(&edge, &path).await;
            if read.instance() != written.instance() {
                continue;
            }
            checked += 1;
            if delete {
                assert_eq!(read.status, 404, "user {id}: {read:?}");
            } else {
                assert_eq!(read.cache(), "L1", "user {id}: {read:?}");
                assert_eq!((read.json(), read.version()), (row.clone(), version));
            }
        }
        assert!(
            checked > 0,
            "user {id}: no answer from the writing instance"
        );
    }
    assert_eq!(
        exercised,
        [true, true],
        "the PATCH and the DELETE races were exercised on one instance"
    );
}
