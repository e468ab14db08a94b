//! The edge, end to end: the release component under the bundled Spin-compatible host, real Redis,
//! PostgreSQL and origin. Every request goes through the edge URL (the origin is asked directly only
//! to compare answers or to read its metrics).
//!
//! Needs `cargo build -p aside-origin && cargo build -p aside-edge --target wasm32-wasip2 --release`
//! (`cargo xtask test` does both).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aside_tests::harness::{
    Edge, EdgeOptions, Origin, Stack, TestEnv, generate_secret, manifest_with_allowed_hosts,
    metric, wait_until,
};
use redis::AsyncCommands as _;
use reqwest::Method;
use serde_json::Value;

/// The origin's counter of PostgreSQL profile reads.
const PROFILE_QUERIES: &str = "aside_origin_db_queries_total{query=\"profile_by_id\"}";

/// What every answer is checked against: 2 s is the edge's budget (origin and Redis timeouts are
/// below it), far above what a healthy local request takes.
const BUDGET: Duration = Duration::from_secs(2);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One answer, with the headers the tests look at and the raw body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    x_cache: Option<String>,
    server_timing: Option<String>,
    content_type: Option<String>,
    retry_after: Option<String>,
    allow: Option<String>,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn cache(&self) -> &str {
        self.x_cache.as_deref().unwrap_or("<none>")
    }

    /// Every edge answer says where it came from and what each tier cost.
    fn assert_tagged(&self) {
        assert!(
            matches!(
                self.x_cache.as_deref(),
                Some("L1" | "L2" | "MISS" | "STALE" | "BYPASS")
            ),
            "x-cache {:?} on {self:?}",
            self.x_cache
        );
        let timing = self
            .server_timing
            .as_deref()
            .unwrap_or_else(|| panic!("no server-timing on {self:?}"));
        assert!(
            timing.split(", ").all(|m| m.contains(";dur=")),
            "server-timing {timing:?}"
        );
    }
}

async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if !body.is_empty() {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: response.status().as_u16(),
        x_cache: header("x-cache"),
        server_timing: header("server-timing"),
        content_type: header("content-type"),
        retry_after: header("retry-after"),
        allow: header("allow"),
        location: header("location"),
        body: response.text().await.expect("body"),
    }
}

/// `GET` through the edge; the answer is checked for `x-cache` and `server-timing`.
async fn get(edge: &Edge, path: &str) -> Answer {
    let answer = send(
        Method::GET,
        &format!("{}{path}", edge.url()),
        None,
        None,
        "",
    )
    .await;
    answer.assert_tagged();
    answer
}

/// `GET` straight to the origin with the token.
async fn origin_get(origin: &Origin, token: &str, path: &str) -> Answer {
    send(
        Method::GET,
        &format!("{}{path}", origin.url()),
        Some(token),
        None,
        "",
    )
    .await
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
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .l1_ttl_ms(200)
        .start()
        .await
        .unwrap();
    let expected = env.profile_json(stack, 5).await.unwrap();

    let first = get(&edge, "/users/5").await;
    assert_eq!((first.status, first.cache()), (200, "MISS"), "{first:?}");
    assert_eq!(first.json(), expected);
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    let timing = first.server_timing.as_deref().unwrap();
    assert!(
        timing.contains("l1;dur=") && timing.contains("l2;dur=") && timing.contains("origin;dur="),
        "{timing}"
    );

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
    for _ in 0..5 {
        let answer = get(&edge, "/users/3").await;
        assert_eq!((answer.status, answer.cache()), (200, "L2"), "{answer:?}");
        assert_eq!(answer.body, first.body, "L2 and MISS bodies are identical");
        let timing = answer.server_timing.as_deref().unwrap();
        assert!(
            timing.contains("l2;dur=") && !timing.contains("origin"),
            "{timing}"
        );
    }
    assert_eq!(metric(&origin.url(), PROFILE_QUERIES).await, 1.0);
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
    // An instance without the profile in memory reads the fields from Redis (HMGET).
    let l2 = get(&no_l1, path).await;
    assert_eq!((l2.status, l2.cache()), (200, "L2"), "{l2:?}");
    let timing = l2.server_timing.as_deref().unwrap();
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
        assert_eq!(through.content_type, direct.content_type, "{what}");
        let code = through.json()["error"]["code"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            ["invalid_id", "invalid_query", "not_found"].contains(&code.as_str()),
            "{what}: {code}"
        );
    }
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

    let anonymous = send(
        Method::GET,
        &format!("{}/users/1", origin.url()),
        None,
        None,
        "",
    )
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
        let direct = send(
            method.clone(),
            &format!("{}{path}", origin.url()),
            None,
            Some("application/json"),
            body,
        )
        .await;
        let through = send(
            method,
            &format!("{}{path}", wrong.url()),
            None,
            Some("application/json"),
            body,
        )
        .await;
        through.assert_tagged();
        assert_eq!(direct.status, 401, "{what}: {direct:?}");
        assert_eq!((through.status, through.cache()), (401, "BYPASS"), "{what}");
        assert_eq!(through.body, direct.body, "{what}");
    }
    // Nothing reached PostgreSQL and nothing was cached anywhere.
    assert_eq!(metric(&origin.url(), PROFILE_QUERIES).await, 0.0);
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let keys: Vec<String> = redis.keys("*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    // The edge with the right token ignores whatever authorization a client sends: it speaks for
    // itself to the origin.
    let right = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let answer = send(
        Method::GET,
        &format!("{}/users/1", right.url()),
        Some("not-the-token"),
        None,
        "",
    )
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
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    assert!(redis.exists::<_, bool>("user:profile:3").await.unwrap());

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
        let timing = answer.server_timing.unwrap();
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
    assert!(refused.retry_after.is_some());
    let write = send(
        Method::DELETE,
        &format!("{}/users/3", edge.url()),
        None,
        None,
        "",
    )
    .await;
    write.assert_tagged();
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

    let client = client();
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
        let direct = send(
            method.clone(),
            &format!("{}{path}", origin.url()),
            Some(&token),
            content_type,
            body,
        )
        .await;
        let through = send(
            method,
            &format!("{}{path}", edge.url()),
            None,
            content_type,
            body,
        )
        .await;
        through.assert_tagged();
        assert!(direct.status >= 400, "{what}: {direct:?}");
        assert_eq!(through.cache(), "BYPASS", "{what}");
        assert_eq!(through.status, direct.status, "{what}");
        assert_eq!(through.body, direct.body, "{what}");
        assert_eq!(through.content_type, direct.content_type, "{what}");
        assert_eq!(through.allow, direct.allow, "{what}");
        assert_eq!(through.location, direct.location, "{what}");
    }
    // The edge answers its own liveness check.
    let health = get(&edge, "/healthz").await;
    assert_eq!((health.status, health.cache()), (200, "BYPASS"));
}
