//! `ASIDE_CACHE=off` (the benchmark's PostgreSQL-only baseline, and a diagnostic mode): every read is a
//! PostgreSQL query, and nothing is read from or written to Redis, by reads, writes or change capture.

use std::time::Duration;

use aside_tests::harness::{Stack, http_client, metric, read_url as get};
use redis::AsyncCommands as _;
use serde_json::json;

#[tokio::test]
async fn with_the_cache_off_every_read_is_a_query_and_redis_is_never_touched() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(10).await.unwrap();
    let origin =
        aside_tests::harness::Origin::start(env.origin_options(stack).env("ASIDE_CACHE", "off"))
            .await
            .unwrap();
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let url = origin.url();
    let queries = || {
        metric(
            &url,
            "aside_origin_db_queries_total{query=\"profile_by_id\"}",
        )
    };

    let expected = env.profile_json(stack, 4).await.unwrap();
    let before = queries().await;
    for _ in 0..3 {
        let (status, x_cache, body) = get(&format!("{}/users/4", origin.url())).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")));
        assert_eq!(body, expected);
    }
    assert!(
        queries().await >= before + 3.0,
        "each read must query PostgreSQL"
    );
    let (status, _, _) = get(&format!("{}/users/999", origin.url())).await;
    assert_eq!(status, 404);

    // A write is committed and answered, and neither it nor change capture fills Redis.
    let patched = http_client()
        .patch(format!("{}/users/4", origin.url()))
        .json(&json!({"department": "Security"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let (_, _, body) = get(&format!("{}/users/4", origin.url())).await;
    assert_eq!(body["department"], "Security");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys: Vec<String> = redis.keys("*").await.unwrap();
    assert!(keys.is_empty(), "Redis was written: {keys:?}");
}
