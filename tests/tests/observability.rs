//! Observability of the origin: `/metrics` families and counters, cache statistics (HTTP and CLI),
//! the OpenAPI document against the running router, and the Grafana dashboard against `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aside_tests::harness::{
    EdgeOptions, Origin, RedisUser, Stack, TestEnv, bin_dir, generate_secret,
    http_client_with_timeout, scrape_text, wait_until, workspace_root,
};
use serde_json::Value;

/// Scrapes and admin routes on a loaded test machine may take longer than a read.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Every sample of `/metrics`: `name{labels}` -> value.
async fn scrape(origin: &Origin) -> BTreeMap<String, f64> {
    let text = http_client_with_timeout(TIMEOUT)
        .get(format!("{}/metrics", origin.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sample names (`aside_origin_x_total`, `..._bucket`) present in a scrape.
fn sample_names(samples: &BTreeMap<String, f64>) -> BTreeSet<String> {
    samples
        .keys()
        .map(|s| s.split('{').next().unwrap().to_string())
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// An origin whose read-path fills wait `fill_delay_ms`, so that concurrent misses coalesce for sure.
async fn origin_for(
    stack: &Stack,
    env: &TestEnv,
    tokens: Vec<String>,
    admin: Option<&str>,
    fill_delay_ms: u64,
) -> Origin {
    let mut options = env.origin_options(stack);
    options.tokens = tokens;
    if let Some(admin) = admin {
        options = options.env("ASIDE_ADMIN_TOKENS", admin);
    }
    if fill_delay_ms > 0 {
        options = options.env("ASIDE_TEST_FILL_DELAY_MS", fill_delay_ms);
    }
    Origin::start(options).await.unwrap()
}

/// Hits, misses, coalesced misses, a write, a 404 route, and a Redis error (a key of the wrong type),
/// then waits until change capture has applied the write.
async fn drive_traffic(stack: &Stack, env: &TestEnv, origin: &Origin) {
    let c = http_client_with_timeout(TIMEOUT);
    let base = origin.url();
    let get = |path: String| {
        let c = c.clone();
        async move { c.get(path).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(format!("{base}/users/1")).await, 200);
    // A miss's fill follows its answer: the second read is a hit once it has landed.
    origin.fills_settled().await;
    assert_eq!(get(format!("{base}/users/1")).await, 200);
    let concurrent =
        futures::future::join_all((0..8).map(|_| get(format!("{base}/users/2")))).await;
    assert!(concurrent.iter().all(|s| *s == 200), "{concurrent:?}");
    assert_eq!(get(format!("{base}/users/999999")).await, 404);
    assert_eq!(get(format!("{base}/no/such/route")).await, 404);
    let patched = c
        .patch(format!("{base}/users/3"))
        .header("content-type", "application/json")
        .body(r#"{"department":"Security"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            value(&scrape(origin).await, "aside_origin_changes_applied_total") > 0.0
        })
        .await,
        "change capture did not apply the write"
    );
    // A string where a profile hash belongs: HGETALL fails with WRONGTYPE, a Redis error (counted), but
    // not an outage: Redis answered, so the breaker stays closed. The read still answers, from
    // PostgreSQL, and its fill replaces the foreign value with the profile hash.
    let mut admin = stack.redis.admin(env.redis_db).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("user:profile:{4}")
        .arg("not a hash")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(get(format!("{base}/users/4")).await, 200);
    origin.fills_settled().await;
}

#[tokio::test]
async fn metrics_expose_every_family_and_move_with_traffic() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(20).await.unwrap();
    let origin = origin_for(stack, &env, Vec::new(), None, 300).await;

    let before = scrape(&origin).await;
    assert_eq!(
        value(&before, r#"aside_origin_breaker_open{backend="redis"}"#),
        0.0
    );
    assert!(before.contains_key(r#"aside_origin_breaker_open{backend="postgres"}"#));
    drive_traffic(stack, &env, &origin).await;
    let after = scrape(&origin).await;
    let names = sample_names(&after);

    for family in [
        "aside_origin_http_requests_total",
        "aside_origin_http_request_duration_seconds_bucket",
        "aside_origin_http_request_duration_seconds_count",
        "aside_origin_cache_requests_total",
        "aside_origin_cache_fills_total",
        "aside_origin_cache_fills_pending",
        "aside_origin_cache_stores_total",
        "aside_origin_coalesced_requests_total",
        "aside_origin_writes_total",
        "aside_origin_write_throughs_total",
        "aside_origin_db_queries_total",
        "aside_origin_changes_applied_total",
        "aside_origin_change_apply_lag_seconds_bucket",
        "aside_origin_change_capture_leader",
        "aside_origin_breaker_open",
        "aside_origin_db_pool_connections",
        "aside_origin_db_pool_max_connections",
        "aside_origin_db_pool_waiting_requests",
        "aside_origin_redis_errors_total",
        "aside_origin_redis_refusals_total",
        "aside_origin_redis_keyspace_hits_total",
        "aside_origin_redis_keyspace_misses_total",
        "aside_origin_redis_evicted_keys_total",
        "aside_origin_redis_used_memory_bytes",
        "aside_origin_redis_used_memory_rss_bytes",
        "aside_origin_redis_maxmemory_bytes",
    ] {
        assert!(names.contains(family), "{family} missing from /metrics");
    }

    let moved = |series: &str| value(&after, series) - value(&before, series);
    // users/1 twice, users/2 eight times at once, users/999999: eleven reads Redis answered (a hit) or
    // not (a miss); users/4 is an error. The second users/1 is a hit; how many of the concurrent users/2
    // coalesce (rather than find the fill done) depends on timing, but with 300 ms fills some do.
    let hits = moved(r#"aside_origin_cache_requests_total{result="hit"}"#);
    let misses = moved(r#"aside_origin_cache_requests_total{result="miss"}"#);
    assert_eq!(
        (hits + misses, hits >= 1.0),
        (11.0, true),
        "hits {hits}, misses {misses}"
    );
    assert_eq!(
        moved(r#"aside_origin_cache_requests_total{result="error"}"#),
        1.0
    );
    let coalesced = moved("aside_origin_coalesced_requests_total");
    assert!((1.0..=7.0).contains(&coalesced), "coalesced {coalesced}");
    // users/1, users/2, the "missing" marker of 999999 and users/4 (over the foreign string) are written.
    assert_eq!(
        moved(r#"aside_origin_cache_fills_total{outcome="written"}"#),
        4.0
    );
    assert_eq!(
        moved(r#"aside_origin_cache_fills_total{outcome="error"}"#),
        0.0
    );
    assert_eq!(
        moved(r#"aside_origin_writes_total{op="update",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"aside_origin_write_throughs_total{outcome="written"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"aside_origin_redis_errors_total{op="hgetall"}"#),
        1.0
    );
    // WRONGTYPE is Redis answering, not an outage: a refusal as well.
    assert_eq!(
        moved(r#"aside_origin_redis_refusals_total{op="hgetall"}"#),
        1.0
    );
    assert_eq!(
        value(&after, r#"aside_origin_breaker_open{backend="redis"}"#),
        0.0,
        "an error reply is not an outage: the Redis breaker stays closed"
    );
    assert!(value(&after, "aside_origin_redis_keyspace_hits_total") >= 1.0);
    assert_eq!(value(&after, "aside_origin_db_pool_max_connections"), 16.0);
    // The harness starts Redis with `--maxmemory 256mb`.
    assert_eq!(
        value(&after, "aside_origin_redis_maxmemory_bytes"),
        256.0 * 1024.0 * 1024.0
    );
    assert_eq!(value(&after, "aside_origin_change_capture_leader"), 1.0);

    // Requests are labelled by route template, never by raw path.
    let users_get_200 =
        r#"aside_origin_http_requests_total{route="/users/{id}",method="GET",status="200"}"#;
    assert_eq!(moved(users_get_200), 11.0);
    assert_eq!(
        moved(r#"aside_origin_http_requests_total{route="/users/{id}",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"aside_origin_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        moved(
            r#"aside_origin_http_requests_total{route="/users/{id}",method="PATCH",status="200"}"#
        ),
        1.0
    );
    for series in after.keys() {
        assert!(
            !series.contains("route=\"/users/1") && !series.contains("/no/such"),
            "a raw path became a label: {series}"
        );
    }
}

async fn stats(origin: &Origin, token: &str, query: &str) -> (u16, Value) {
    let response = http_client_with_timeout(TIMEOUT)
        .get(format!("{}/admin/cache/stats{query}", origin.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Runs `aside-origin cache-stats <args>` against this env's Redis database as the `origin` user.
fn cache_stats_cli(stack: &Stack, env: &TestEnv, args: &[&str]) -> String {
    let output = std::process::Command::new(bin_dir().join("aside-origin"))
        .arg("cache-stats")
        .args(args)
        .env(
            "ASIDE_REDIS_URL",
            stack.redis.url(RedisUser::Origin, env.redis_db),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("run aside-origin cache-stats");
    assert!(
        output.status.success(),
        "cache-stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn cache_stats_count_this_databases_keys_with_scan_never_keys() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(1000).await.unwrap();
    let admin_token = generate_secret();
    let origin_token = generate_secret();
    let origin = origin_for(
        stack,
        &env,
        vec![origin_token.clone()],
        Some(&admin_token),
        0,
    )
    .await;
    let c = http_client_with_timeout(TIMEOUT);
    for id in 1..=100 {
        let status = c
            .get(format!("{}/users/{id}", origin.url()))
            .bearer_auth(&origin_token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    origin.fills_settled().await;

    let (status, body) = stats(&origin, &admin_token, "").await;
    assert_eq!(status, 200, "{body}");
    let db = &body["database"];
    assert_eq!(db["scope"], "database");
    assert_eq!(db["db"], env.redis_db);
    assert_eq!(db["pattern"], "user:profile:*");
    assert_eq!(db["keys"], 100, "{body}");
    assert_eq!(db["complete"], true);
    assert_eq!(db["stopped_by"], Value::Null);
    // The total is exactly what Redis says the 100 hashes take.
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let mut expected = 0_u64;
    for id in 1..=100 {
        let size: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("user:profile:{{{id}}}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        expected += size;
    }
    assert_eq!(db["memory_bytes"], expected);
    let average = db["average_bytes"].as_f64().unwrap();
    assert!((average - expected as f64 / 100.0).abs() < 1e-6);
    let server = &body["server"];
    assert_eq!(server["scope"], "server");
    assert!(server["used_memory_bytes"].as_u64().unwrap() > 0);
    assert!(server["used_memory_rss_bytes"].as_u64().unwrap() > 0);
    assert!(server["mem_fragmentation_ratio"].as_f64().unwrap() > 0.0);
    assert!(server["evicted_keys"].is_u64());
    assert!((0.0..=1.0).contains(&server["hit_ratio"].as_f64().unwrap()));

    // Bounded: a key limit stops the walk, and it says so.
    let (status, body) = stats(&origin, &admin_token, "?max_keys=10").await;
    assert_eq!(status, 200);
    assert_eq!(body["database"]["keys"], 10);
    assert_eq!(body["database"]["complete"], false);
    assert_eq!(body["database"]["stopped_by"], "max_keys");
    let (status, body) = stats(&origin, &admin_token, "?max_keys=0").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &Value::from("invalid_query"))
    );

    // Only the admin token opens it: not the origin token, not nothing.
    for token in [origin_token.as_str(), "", "x"] {
        let (status, body) = stats(&origin, token, "").await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &Value::from("unauthorized"))
        );
    }

    // The command line prints the same figures.
    let json: Value = serde_json::from_str(&cache_stats_cli(stack, &env, &["--json"])).unwrap();
    assert_eq!(json["database"]["keys"], 100);
    assert_eq!(json["database"]["memory_bytes"], expected);
    assert_eq!(json["server"]["scope"], "server");
    let table = cache_stats_cli(stack, &env, &[]);
    assert!(
        table.contains(&format!("Redis logical database {}", env.redis_db)),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("profile keys") && l.trim_end().ends_with(" 100")),
        "{table}"
    );
    assert!(table.contains("scope: server"), "{table}");

    // Redis logged no refused KEYS from the origin's user during all of the above ...
    assert_eq!(refused_keys_by_origin(&mut redis).await, 0);
    // ... because that user cannot run KEYS at all: nothing above could have used it.
    let mut as_origin = redis::Client::open(stack.redis.url(RedisUser::Origin, env.redis_db))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: redis::RedisResult<Vec<String>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut as_origin)
        .await;
    let error = keys.expect_err("the origin user may not run KEYS");
    assert!(
        error.to_string().to_lowercase().contains("noperm"),
        "{error}"
    );
    assert_eq!(refused_keys_by_origin(&mut redis).await, 1);
}

/// Entries of Redis's `ACL LOG` for a `KEYS` the `origin` user was refused. (No other test of this
/// binary sends KEYS.)
async fn refused_keys_by_origin(admin: &mut redis::aio::MultiplexedConnection) -> usize {
    use redis::FromRedisValue as _;
    let log: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(admin)
        .await
        .unwrap();
    let text = |entry: &std::collections::HashMap<String, redis::Value>, field: &str| {
        entry
            .get(field)
            .and_then(|v| String::from_redis_value_ref(v).ok())
            .unwrap_or_default()
    };
    log.iter()
        .filter(|e| {
            text(e, "username") == "origin" && text(e, "object").eq_ignore_ascii_case("keys")
        })
        .count()
}

#[tokio::test]
async fn admin_routes_do_not_exist_without_an_admin_token() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    let origin = origin_for(stack, &env, Vec::new(), None, 0).await;
    let (status, body) = stats(&origin, "anything-at-all-16", "").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "no such route");
    let doc: Value = http_client_with_timeout(TIMEOUT)
        .get(format!("{}/openapi.json", origin.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/users/{id}"));
    assert!(!paths.keys().any(|p| p.starts_with("/admin")), "{paths:?}");
}

/// The router's fallbacks: 404 "no such route" and 405.
fn is_fallback(status: u16, body: &Value) -> bool {
    (status == 404 && body["error"]["message"] == "no such route")
        || status == 405
        || body["error"]["code"] == "method_not_allowed"
}

#[tokio::test]
async fn openapi_lists_every_route_of_the_router_and_each_answers_as_documented() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let admin_token = generate_secret();
    let origin_token = generate_secret();
    let origin = origin_for(
        stack,
        &env,
        vec![origin_token.clone()],
        Some(&admin_token),
        0,
    )
    .await;
    let c = http_client_with_timeout(TIMEOUT);

    let text = c
        .get(format!("{}/openapi.json", origin.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // It parses as OpenAPI (utoipa's typed model), and as plain JSON for walking.
    let typed: utoipa::openapi::OpenApi = serde_json::from_str(&text).expect("an OpenAPI document");
    assert!(typed.paths.paths.len() >= 6);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["origin_token"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    for schema in [
        "UserProfile",
        "ProfileInput",
        "ProfilePatch",
        "ErrorBody",
        "ErrorCode",
        "CacheStats",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }

    const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "options"];
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!("{}{}", origin.url(), path.replace("{id}", "2"));
        for method in METHODS {
            let operation = &item[method];
            let request = c
                .request(method.to_uppercase().parse().unwrap(), &url)
                .header("content-type", "application/json");
            if operation.is_null() {
                // Not documented: the router must refuse the method.
                let response = request.bearer_auth(&origin_token).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    (status, &body["error"]["code"]),
                    (405, &Value::from("method_not_allowed")),
                    "{method} {path} is not documented but answers {status}"
                );
                continue;
            }
            documented.insert(path.clone());
            let security = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let token = if security.iter().any(|s| s.get("admin_token").is_some()) {
                Some(&admin_token)
            } else if security.iter().any(|s| s.get("origin_token").is_some()) {
                Some(&origin_token)
            } else {
                None
            };
            if token.is_some() {
                // A secured operation refuses a request without its token, as documented (401).
                let refused = c
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    refused.status().as_u16(),
                    401,
                    "{method} {path} without a token"
                );
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path}: 401 undocumented"
                );
            }
            let request = match token {
                Some(t) => request.bearer_auth(t),
                None => request,
            };
            let request = if operation["requestBody"].is_object() {
                request.body("{}")
            } else {
                request
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                !is_fallback(status, &body),
                "{method} {path} is documented but the router does not serve it: {status} {body}"
            );
            assert!(
                operation["responses"][status.to_string()].is_object(),
                "{method} {path} answered {status}, which its documentation does not list: {body}"
            );
            if status >= 400 {
                let error: aside_shared::ErrorBody =
                    serde_json::from_value(body.clone()).expect("errors have the JSON error body");
                assert!(!error.error.message.is_empty());
            }
        }
    }
    for expected in [
        "/users",
        "/users/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/admin/cache/stats",
    ] {
        assert!(
            documented.contains(expected),
            "{expected} is not documented"
        );
    }

    // Every route the router matched while serving the requests above (its matched-path labels) is a
    // documented path: no route exists outside the document.
    let samples = scrape(&origin).await;
    let routes: BTreeSet<String> = samples
        .keys()
        .filter(|s| s.starts_with("aside_origin_http_requests_total{"))
        .filter_map(|s| {
            s.split("route=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    for route in &routes {
        assert!(
            route == "unmatched" || documented.contains(route),
            "the router serves {route}, which /openapi.json does not list"
        );
    }
    assert!(routes.len() >= documented.len());
}

/// Every PromQL expression of the dashboard (`expr` of panels, the templating variables' queries).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn exprs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut texts = Vec::new();
    exprs(dashboard, &mut texts);
    texts
}

/// The aside series names a PromQL expression uses: metric names (`aside_origin_x_total`) and recorded
/// series (`job:aside_origin_x:rate5m`, with colons). Quoted label values are skipped.
fn series_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let unquoted: String = expr
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ");
    for token in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.contains("aside_") {
            names.insert(token.to_string());
        }
    }
    names
}

/// A recorded series' name has colons (Prometheus's `level:metric:operations`); a metric's has none.
fn is_recorded(name: &str) -> bool {
    name.contains(':')
}

/// A rule's name (the series it records, or the alert) and its PromQL expression.
type NamedExpr = (String, String);

/// The Prometheus rules in deploy/prometheus/rules: the recording rules and the alerts, in file order.
fn prometheus_rules() -> (Vec<NamedExpr>, Vec<NamedExpr>) {
    let dir = workspace_root().join("deploy/prometheus/rules");
    let (mut records, mut alerts) = (Vec::new(), Vec::new());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in doc["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let expr = rule["expr"].as_str().unwrap().to_string();
                if let Some(record) = rule["record"].as_str() {
                    records.push((record.to_string(), expr));
                } else {
                    alerts.push((rule["alert"].as_str().unwrap().to_string(), expr));
                }
            }
        }
    }
    (records, alerts)
}

/// Series another part of aside exports only in some deployments (the Redis HA metrics of an origin
/// following a Sentinel-managed primary, the Redis Cluster metrics of an origin on a cluster,
/// docs/operations.md): alerts and the dashboard may use them, and stay silent (empty) while they are
/// absent. tests/tests/redis_cluster.rs checks that an origin on a cluster exports the cluster ones.
const OPTIONAL_METRICS: &[&str] = &[
    "aside_origin_redis_primary_reachable",
    "aside_origin_redis_replica_lag_seconds",
    "aside_origin_redis_node_used_memory_bytes",
    "aside_origin_redis_node_maxmemory_bytes",
    "aside_origin_redis_cluster_node_memory_used_ratio_max",
    "aside_origin_redis_cluster_slots",
    "aside_origin_redis_cluster_primaries_unreachable",
];

#[tokio::test]
async fn the_dashboard_charts_only_metrics_the_origin_exports() {
    let path = workspace_root().join("deploy/grafana/aside.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let used: BTreeSet<String> = dashboard_exprs(&dashboard)
        .iter()
        .flat_map(|e| series_names(e))
        .collect();
    assert!(used.len() >= 15, "{used:?}");
    let (records, alerts) = prometheus_rules();
    let recorded: BTreeSet<&str> = records.iter().map(|(name, _)| name.as_str()).collect();
    assert!(records.len() >= 10 && alerts.len() >= 10);

    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(20).await.unwrap();
    let origin = origin_for(stack, &env, Vec::new(), None, 300).await;
    drive_traffic(stack, &env, &origin).await;
    let mut exported = sample_names(&scrape(&origin).await);
    // The edge's invalidation-feed metrics (`GET /edge/feed`, charted and alerted on too).
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &generate_secret())
        .start()
        .await
        .unwrap();
    // ... and its overload counters (`GET /edge/metrics`).
    let text = [
        scrape_text(&format!("{}/edge/feed", edge.url())).await,
        scrape_text(&format!("{}/edge/metrics", edge.url())).await,
    ]
    .concat();
    let edge_names: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    assert!(edge_names.contains("aside_edge_feed_lag_seconds"), "{text}");
    assert!(edge_names.contains("aside_edge_shed_total"), "{text}");
    exported.extend(edge_names);
    edge.shutdown().await;

    // The dashboard charts exported metrics and series the recording rules record ...
    let unknown: Vec<&String> = used
        .iter()
        .filter(|name| {
            if is_recorded(name) {
                !recorded.contains(name.as_str())
            } else {
                !exported.contains(*name) && !OPTIONAL_METRICS.contains(&name.as_str())
            }
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard charts series that are neither exported by the origin nor recorded: {unknown:?}"
    );
    assert!(
        used.iter().filter(|n| is_recorded(n)).count() >= 6,
        "the dashboard should chart the recording rules: {used:?}"
    );
    // ... every recording rule is computed from exported metrics or from series recorded before it ...
    let mut defined = BTreeSet::new();
    for (record, expr) in &records {
        for name in series_names(expr) {
            if is_recorded(&name) {
                assert!(
                    defined.contains(&name),
                    "{record} uses {name}, which no earlier recording rule records"
                );
            } else {
                assert!(
                    exported.contains(&name),
                    "{record} uses {name}, which the origin does not export"
                );
            }
        }
        defined.insert(record.clone());
    }
    // ... and every alert watches exported metrics, recorded series, or the optional HA metrics.
    for (alert, expr) in &alerts {
        for name in series_names(expr) {
            assert!(
                recorded.contains(name.as_str())
                    || exported.contains(&name)
                    || OPTIONAL_METRICS.contains(&name.as_str()),
                "{alert} uses {name}: not exported, not recorded, not a known optional metric"
            );
        }
    }
}
