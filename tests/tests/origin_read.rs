//! The origin's read path against real PostgreSQL and Redis: hit, miss, refill, TTL, projections,
//! errors, single-flight, and what happens when a backend goes away.

use std::time::{Duration, Instant};

use aside_shared::ErrorBody;
use aside_tests::harness::{Stack, http_client, metric, read_url as get, wait_until};
use redis::AsyncCommands as _;

#[tokio::test]
async fn first_read_misses_then_hits_with_the_row_from_postgres() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(20).await.unwrap();
    let origin = env.origin(stack).await.unwrap();

    let expected = env.profile_json(stack, 5).await.unwrap();
    let (status, x_cache, body) = get(&format!("{}/users/5", origin.url())).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")));
    assert_eq!(body, expected);
    // The fill follows the answer.
    origin.fills_settled().await;

    let (status, x_cache, body) = get(&format!("{}/users/5", origin.url())).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("HIT")));
    assert_eq!(body, expected);
}

#[tokio::test]
async fn fill_writes_the_hash_with_a_jittered_ttl_and_a_deleted_key_is_refilled() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(30).await.unwrap();
    let origin = env.origin(stack).await.unwrap();
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();

    let mut ttls = Vec::new();
    for id in 1..=30 {
        let (status, x_cache, _) = get(&format!("{}/users/{id}", origin.url())).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")));
        origin.fills_settled().await;
        let key = format!("user:profile:{{{id}}}");
        let hard_ms: i64 = redis.pttl(&key).await.unwrap();
        let fresh_until: i64 = redis.hget(&key, "_fresh_until").await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let soft_ms = fresh_until - now;
        // The key lives until the soft expiry plus the stale window (by default the soft TTL).
        let window_ms = hard_ms - soft_ms;
        assert!(
            (7_199_000..=7_201_000).contains(&window_ms),
            "hard - soft = {window_ms} ms"
        );
        ttls.push(soft_ms / 1000);
    }
    // Soft expiry: 7200 s ± 10 %.
    for ttl in &ttls {
        assert!(
            (6478..=7920).contains(ttl),
            "soft ttl {ttl} outside 7200 ± 10 %"
        );
    }
    let distinct: std::collections::HashSet<_> = ttls.iter().collect();
    assert!(distinct.len() > 5, "TTLs are not jittered: {ttls:?}");

    let hash: std::collections::HashMap<String, String> =
        redis.hgetall("user:profile:{3}").await.unwrap();
    let expected = env.profile_json(stack, 3).await.unwrap();
    assert_eq!(hash["email"], expected["email"].as_str().unwrap());
    assert_eq!(hash["_version"], "1");
    assert!(hash.contains_key("_filled_at"));
    assert!(hash.contains_key("_delta_ms"));

    let _: () = redis.del("user:profile:{3}").await.unwrap();
    let (_, x_cache, body) = get(&format!("{}/users/3", origin.url())).await;
    assert_eq!(x_cache.as_deref(), Some("MISS"));
    assert_eq!(body, expected);
    origin.fills_settled().await;
    let (_, x_cache, _) = get(&format!("{}/users/3", origin.url())).await;
    assert_eq!(x_cache.as_deref(), Some("HIT"));
}

#[tokio::test]
async fn fields_projection_is_the_same_on_a_miss_and_on_a_hit() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(10).await.unwrap();
    let origin = env.origin(stack).await.unwrap();
    let row = env.profile_json(stack, 2).await.unwrap();
    let expected =
        serde_json::json!({"id": 2, "email": row["email"], "department": row["department"]});

    let url = format!("{}/users/2?fields=email,department", origin.url());
    let (status, x_cache, miss) = get(&url).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")));
    assert_eq!(miss, expected);
    origin.fills_settled().await;
    let (status, x_cache, hit) = get(&url).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("HIT")));
    assert_eq!(hit, expected);

    let (status, _, body) = get(&format!("{}/users/2?fields=password", origin.url())).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_query");
}

#[tokio::test]
async fn unknown_and_malformed_ids_get_json_errors_without_touching_the_database() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let origin = env.origin(stack).await.unwrap();

    let (status, _, body) = get(&format!("{}/users/999", origin.url())).await;
    assert_eq!(status, 404);
    let body: ErrorBody = serde_json::from_value(body).unwrap();
    assert_eq!(body.error.code, aside_shared::ErrorCode::NotFound);
    // The "missing" marker's fill re-reads PostgreSQL after the answer: let it end before counting.
    origin.fills_settled().await;

    let queries_before = metric(&origin.url(), "aside_origin_db_queries_total").await;
    for bad in [
        "0",
        "-1",
        "1e3",
        "abc",
        "9999999999999999999",
        "2147483648",
        "1;DROP%20TABLE%20users",
        "%31",
        "%FF",
        "%EF%BC%91", // full-width 1
        "007",
        &"9".repeat(10 * 1024),
    ] {
        let (status, x_cache, body) = get(&format!("{}/users/{bad}", origin.url())).await;
        assert_eq!(status, 400, "id {bad:.20}");
        assert_eq!(body["error"]["code"], "invalid_id", "id {bad:.20}");
        assert!(x_cache.is_some(), "every response carries x-cache");
    }
    let queries_after = metric(&origin.url(), "aside_origin_db_queries_total").await;
    assert_eq!(queries_before, queries_after);

    let (status, _, body) = get(&format!("{}/nowhere", origin.url())).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let response = http_client()
        .delete(format!("{}/healthz", origin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn concurrent_misses_for_one_id_share_one_postgres_query() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let origin = env.origin(stack).await.unwrap();
    let url = format!("{}/users/4", origin.url());
    let metric_name = "aside_origin_db_queries_total{query=\"profile_by_id\"}";
    let before = metric(&origin.url(), metric_name).await;

    let client = http_client();
    let requests = (0..100).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = metric(&origin.url(), metric_name).await;
    assert_eq!(
        after - before,
        1.0,
        "100 concurrent misses made {} queries",
        after - before
    );
}

#[tokio::test]
async fn a_malformed_hash_is_a_miss_and_gets_repaired() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let origin = env.origin(stack).await.unwrap();
    // Change capture applies the seed's inserts over existing keys: let it finish first, so the hash
    // below is repaired by the read path, not by change capture.
    let caught_up = env
        .change_capture_caught_up(stack, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(caught_up, "change capture did not apply the seed");
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let _: () = redis
        .hset_multiple(
            "user:profile:{1}",
            &[("full_name", "X"), ("gender", "Q"), ("_version", "zz")],
        )
        .await
        .unwrap();

    let (status, x_cache, body) = get(&format!("{}/users/1", origin.url())).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")));
    assert_eq!(body, env.profile_json(stack, 1).await.unwrap());
    origin.fills_settled().await;
    let (_, x_cache, _) = get(&format!("{}/users/1", origin.url())).await;
    assert_eq!(x_cache.as_deref(), Some("HIT"));
}

#[tokio::test]
async fn the_token_is_required_when_configured() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let token = aside_tests::harness::generate_secret();
    let old_token = aside_tests::harness::generate_secret();
    let mut options = env.origin_options(stack);
    options.tokens = vec![token.clone(), old_token.clone()];
    let origin = aside_tests::harness::Origin::start(options).await.unwrap();
    let url = format!("{}/users/1", origin.url());

    let anonymous = http_client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: ErrorBody = anonymous.json().await.unwrap();
    assert_eq!(body.error.code, aside_shared::ErrorCode::Unauthorized);
    let wrong = http_client()
        .get(&url)
        .bearer_auth("x".repeat(32))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    for t in [&token, &old_token] {
        let ok = http_client().get(&url).bearer_auth(t).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 200);
    }
    // Health stays open for load balancers.
    let health = http_client()
        .get(format!("{}/healthz", origin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(
        !origin.log().contains(&token),
        "the token must never be logged"
    );
}

#[tokio::test]
async fn postgres_down_gives_a_quick_503_for_uncached_ids_and_hits_for_cached_ones() {
    let mut stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(10).await.unwrap();
    let origin = env.origin(&stack).await.unwrap();
    let (_, x_cache, cached) = get(&format!("{}/users/1", origin.url())).await;
    assert_eq!(x_cache.as_deref(), Some("MISS"));
    origin.fills_settled().await;

    stack.postgres.stop();
    let started = Instant::now();
    let response = http_client()
        .get(format!("{}/users/2", origin.url()))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status().as_u16(), 503);
    assert!(elapsed < Duration::from_secs(2), "503 took {elapsed:?}");
    assert!(response.headers().get("retry-after").is_some());
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code, aside_shared::ErrorCode::Unavailable);
    assert!(
        !body.error.message.contains("127.0.0.1"),
        "no backend address in errors"
    );

    let (status, x_cache, body) = get(&format!("{}/users/1", origin.url())).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("HIT")));
    assert_eq!(body, cached);
    let ready = http_client()
        .get(format!("{}/readyz", origin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    stack.postgres.restart().await.unwrap();
    let url = format!("{}/users/2", origin.url());
    assert!(
        wait_until(Duration::from_secs(10), || async {
            get(&url).await.0 == 200
        })
        .await,
        "the origin did not recover after PostgreSQL came back"
    );
}

#[tokio::test]
async fn redis_down_serves_from_postgres_and_recovers_when_redis_returns() {
    let mut stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(10).await.unwrap();
    let origin = env.origin(&stack).await.unwrap();
    let (_, x_cache, _) = get(&format!("{}/users/1", origin.url())).await;
    assert_eq!(x_cache.as_deref(), Some("MISS"));

    stack.redis.kill();
    for id in 1..=10 {
        let started = Instant::now();
        let (status, x_cache, body) = get(&format!("{}/users/{id}", origin.url())).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")), "id {id}");
        assert_eq!(body, env.profile_json(&stack, id).await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let ready = http_client()
        .get(format!("{}/readyz", origin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "Redis is not needed to be ready"
    );

    stack.redis.restart().await.unwrap();
    let url = format!("{}/users/7", origin.url());
    let recovered = wait_until(Duration::from_secs(10), || async {
        get(&url).await.1.as_deref() == Some("HIT")
    })
    .await;
    assert!(recovered, "no cache hit within 10 s of Redis coming back");
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let exists: bool = redis.exists("user:profile:{7}").await.unwrap();
    assert!(exists);
}
