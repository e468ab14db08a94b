//! Resilience of the origin under faults injected into real processes while a load runs: PostgreSQL
//! stopped or frozen, Redis frozen or restarted, an origin killed while it holds a fill lease, a hot
//! key expiring under 500 concurrent requests spread over three origins, and early refresh (XFetch).
//!
//! Each scenario prints one line per phase (`cargo test -- --nocapture` shows them): requests sent,
//! failed (no answer or 5xx), served STALE, the slowest answer, and the time to recover after the fault
//! ends. Needs the origin built with `--features test-hooks` (`cargo xtask test` does): several
//! scenarios widen race windows with `ASIDE_TEST_FILL_DELAY_MS`.

use std::time::{Duration, Instant};

use aside_tests::harness::{
    Load, LoadReport, Origin, OriginOptions, Stack, TestEnv, get_url as get, http_client, metric,
    wait_until,
};
use redis::AsyncCommands as _;
use serde_json::Value;

/// The origin's end-to-end budget (ASIDE_REQUEST_TIMEOUT_MS's default).
const BUDGET: Duration = Duration::from_secs(2);
/// What a client may see on top of the budget on a busy 2-core test machine (scheduling, the client).
const SLACK: Duration = Duration::from_millis(600);
const PROFILE_QUERIES: &str = "aside_origin_db_queries_total{query=\"profile_by_id\"}";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until change capture has applied the seed's outbox rows, so it does not rewrite keys (and
/// their freshness) behind a test's back.
async fn change_capture_caught_up(stack: &Stack, env: &TestEnv) {
    let caught_up = env
        .change_capture_caught_up(stack, Duration::from_secs(15))
        .await
        .unwrap();
    assert!(caught_up, "change capture did not apply the seed");
}

/// PostgreSQL profile queries issued by these origins so far.
async fn queries(origins: &[&Origin]) -> f64 {
    let mut total = 0.0;
    for origin in origins {
        total += metric(&origin.url(), PROFILE_QUERIES).await;
    }
    total
}

async fn breaker_open(origin: &Origin, backend: &str) -> bool {
    metric(
        &origin.url(),
        &format!("aside_origin_breaker_open{{backend=\"{backend}\"}}"),
    )
    .await
        == 1.0
}

/// Makes a cached profile soft-expired (as if its soft TTL had passed) without waiting.
async fn expire_softly(stack: &Stack, env: &TestEnv, id: i32) {
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let key = format!("user:profile:{{{id}}}");
    let exists: bool = redis.exists(&key).await.unwrap();
    assert!(exists, "{key} is not cached");
    let _: () = redis
        .hset(&key, "_fresh_until", now_ms() - 1_000)
        .await
        .unwrap();
}

/// Polls `url` until it answers 200; returns how long that took.
async fn time_to_200(url: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let back = wait_until(limit, || async { get(url).await.status == 200 }).await;
    assert!(back, "{url} did not answer 200 within {limit:?}");
    started.elapsed()
}

fn users(origin: &Origin, ids: impl IntoIterator<Item = i32>) -> Vec<String> {
    ids.into_iter()
        .map(|id| format!("{}/users/{id}", origin.url()))
        .collect()
}

/// Every answer for a cached id is a 200 with the profile as it was cached, from the cache (fresh or
/// stale); every answer for an uncached id is a 503 with `Retry-After`; all within the budget.
fn check_outage_answers(report: &LoadReport, cached: &[Value], uncached_from: usize) {
    for s in &report.samples {
        assert!(
            s.latency <= BUDGET + SLACK,
            "answer after {:?}: the budget is {BUDGET:?}",
            s.latency
        );
        if s.target < uncached_from {
            assert_eq!(
                s.status,
                200,
                "cached id {} answered {}",
                s.target + 1,
                s.status
            );
            assert!(
                matches!(s.x_cache.as_deref(), Some("HIT" | "STALE")),
                "cached id from {:?}",
                s.x_cache
            );
            assert_eq!(s.json(), cached[s.target]);
        } else {
            assert_eq!(
                s.status,
                503,
                "uncached id {} answered {}",
                s.target + 1,
                s.status
            );
            assert!(s.retry_after.is_some(), "503 without Retry-After");
            assert_eq!(s.json()["error"]["code"], "unavailable");
        }
    }
}

/// Starts an origin for `env` with a 2 s soft TTL (no jitter) and a long stale window, so cached
/// profiles go stale during a few seconds of load.
async fn short_ttl_origin(stack: &Stack, env: &TestEnv) -> Origin {
    Origin::start(
        env.origin_options(stack)
            .env("ASIDE_CACHE_TTL_SECS", 2)
            .env("ASIDE_CACHE_TTL_JITTER_PERCENT", 0)
            .env("ASIDE_CACHE_STALE_TTL_SECS", 300),
    )
    .await
    .unwrap()
}

/// Warms ids `1..=n`; returns their bodies.
async fn warm(origin: &Origin, n: i32) -> Vec<Value> {
    let mut bodies = Vec::new();
    for url in users(origin, 1..=n) {
        let a = get(&url).await;
        assert_eq!(a.status, 200, "{url}");
        bodies.push(a.json());
    }
    // The fills follow the answers: cached means in Redis.
    origin.fills_settled().await;
    bodies
}

#[tokio::test]
async fn postgres_stopped_cached_ids_are_served_fresh_or_stale_uncached_get_503() {
    let mut stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(40).await.unwrap();
    let origin = short_ttl_origin(&stack, &env).await;
    change_capture_caught_up(&stack, &env).await;
    let cached = warm(&origin, 20).await;

    stack.postgres.stop(); // SIGQUIT: connections drop at once, like a crash
    let report = Load::new(users(&origin, 1..=40)).run().await;
    eprintln!("{}", report.summary("postgres stopped"));
    check_outage_answers(&report, &cached, 20);
    assert!(
        report.with_cache("STALE") > 0,
        "the 2 s soft TTL passed during the load: some answers must be STALE"
    );
    assert!(breaker_open(&origin, "postgres").await);

    // Back to normal without restarting the origin: uncached ids load, stale ones are refreshed.
    stack.postgres.restart().await.unwrap();
    let recovery = time_to_200(
        &format!("{}/users/40", origin.url()),
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "postgres stopped: recovery {} ms after PostgreSQL came back",
        recovery.as_millis()
    );
    let refreshed = get(&format!("{}/users/1", origin.url())).await;
    assert_eq!(refreshed.status, 200);
    assert_ne!(refreshed.header("x-cache"), Some("STALE"));
    assert!(!breaker_open(&origin, "postgres").await);
}

#[tokio::test]
async fn postgres_frozen_trips_the_breaker_instead_of_piling_up_requests() {
    let stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(40).await.unwrap();
    let origin = short_ttl_origin(&stack, &env).await;
    change_capture_caught_up(&stack, &env).await;
    let cached = warm(&origin, 20).await;

    let frozen = stack.postgres.pause_all(true);
    let report = Load::new(users(&origin, 1..=40)).run().await;
    let open = breaker_open(&origin, "postgres").await;
    stack.postgres.pause_all(false);
    eprintln!(
        "{} ({frozen} processes frozen)",
        report.summary("postgres frozen")
    );
    check_outage_answers(&report, &cached, 20);
    assert!(open, "the PostgreSQL breaker did not open");
    // Not a pile-up: only the requests before the breaker opened (and its probes) waited for
    // PostgreSQL; once it is open, uncached ids are refused at once.
    let uncached: Vec<_> = report.samples.iter().filter(|s| s.target >= 20).collect();
    let waited = uncached
        .iter()
        .filter(|s| s.latency >= Duration::from_millis(500))
        .count();
    eprintln!(
        "postgres frozen: {waited} of {} uncached requests waited for PostgreSQL",
        uncached.len()
    );
    assert!(
        waited * 10 < uncached.len(),
        "{waited} of {} uncached requests waited",
        uncached.len()
    );

    let recovery = time_to_200(
        &format!("{}/users/40", origin.url()),
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "postgres frozen: recovery {} ms after PostgreSQL was thawed",
        recovery.as_millis()
    );
}

#[tokio::test]
async fn redis_frozen_costs_at_most_a_timeout_and_reads_go_to_postgres() {
    let stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(20).await.unwrap();
    let origin = env.origin(&stack).await.unwrap();
    change_capture_caught_up(&stack, &env).await;
    let expected = warm(&origin, 20).await;
    assert_eq!(
        get(&format!("{}/users/3", origin.url()))
            .await
            .header("x-cache"),
        Some("HIT")
    );

    stack.redis.pause(true);
    let report = Load::new(users(&origin, 1..=20)).run().await;
    let open = breaker_open(&origin, "redis").await;
    stack.redis.pause(false);
    eprintln!("{}", report.summary("redis frozen"));
    assert_eq!(report.failed(), 0, "PostgreSQL answers every read");
    for s in &report.samples {
        assert_eq!(s.json(), expected[s.target]);
        assert!(s.latency <= BUDGET + SLACK, "answer after {:?}", s.latency);
    }
    assert!(open, "the Redis breaker did not open");
    // Only the calls before the breaker opened (and its probes) waited for the Redis timeout.
    let slow = report
        .samples
        .iter()
        .filter(|s| s.latency >= Duration::from_millis(250))
        .count();
    assert!(
        slow * 4 < report.sent(),
        "{slow} of {} requests waited for Redis",
        report.sent()
    );

    let url = format!("{}/users/7", origin.url());
    let started = Instant::now();
    let back = wait_until(Duration::from_secs(15), || async {
        get(&url).await.header("x-cache") == Some("HIT")
    })
    .await;
    assert!(back, "no cache hit after Redis was thawed");
    eprintln!(
        "redis frozen: {slow} requests paid the Redis timeout; recovery (HIT) {} ms after Redis was thawed",
        started.elapsed().as_millis()
    );
    assert!(!breaker_open(&origin, "redis").await);
}

/// Three origins on one database and Redis, the fill delayed so that their loads overlap: a hot key
/// that expires (softly, then for good) under 500 concurrent requests costs one PostgreSQL query. Without
/// the lease each origin would query once (in-process single-flight only coalesces within one origin).
#[tokio::test]
async fn a_hot_key_expiring_under_500_requests_on_3_origins_costs_one_query() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let options = env
        .origin_options(stack)
        .env("ASIDE_TEST_FILL_DELAY_MS", 300)
        .env("ASIDE_XFETCH_BETA", 0)
        .env("ASIDE_LEASE_WAIT_MS", 1_500)
        .env("ASIDE_REFRESH_WAIT_MS", 1_700);
    let (a, b, c) = tokio::join!(
        Origin::start(options.clone()),
        Origin::start(options.clone()),
        Origin::start(options)
    );
    let origins = [a.unwrap(), b.unwrap(), c.unwrap()];
    let all: Vec<&Origin> = origins.iter().collect();
    change_capture_caught_up(stack, &env).await;
    let expected = env.profile_json(stack, 1).await.unwrap();
    assert_eq!(
        get(&format!("{}/users/1", origins[0].url())).await.status,
        200
    );
    origins[0].fills_settled().await;
    let urls: Vec<String> = origins
        .iter()
        .map(|o| format!("{}/users/1", o.url()))
        .collect();

    for (phase, expire) in [("soft expiry", true), ("hard expiry", false)] {
        if expire {
            expire_softly(stack, &env, 1).await;
        } else {
            let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
            let _: () = redis.del("user:profile:{1}").await.unwrap();
        }
        let before = queries(&all).await;
        let report = Load::new(urls.clone()).burst(500).await;
        // The refresh's fill follows its answers: let it land before the next phase removes the key.
        for origin in &origins {
            origin.fills_settled().await;
        }
        let made = queries(&all).await - before;
        eprintln!(
            "{} → {made} PostgreSQL queries",
            report.summary(&format!("3 origins, {phase}"))
        );
        assert_eq!(report.failed(), 0);
        assert_eq!(report.with_status(200), 500);
        assert_eq!(report.with_cache("STALE"), 0, "PostgreSQL was up");
        assert!(report.samples.iter().all(|s| s.json() == expected));
        assert_eq!(
            made, 1.0,
            "{phase}: 500 requests on 3 origins made {made} queries"
        );
    }
    let mut waited = 0.0;
    for origin in &origins {
        waited += metric(
            &origin.url(),
            "aside_origin_cache_leases_total{outcome=\"waited\"}",
        )
        .await;
    }
    assert!(
        waited >= 2.0,
        "the other origins waited for the fill: {waited}"
    );
}

/// The origin holding a fill lease dies mid-load (SIGKILL): the others wait for its fill only until the
/// lease expires, then one of them loads, and every request is answered within the budget.
#[tokio::test]
async fn the_lease_holder_dying_delays_the_others_only_until_the_lease_expires() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let base = |options: OriginOptions| {
        options
            .env("ASIDE_DB_STATEMENT_TIMEOUT_MS", 500)
            .env("ASIDE_LEASE_TTL_MS", 1_000)
            .env("ASIDE_LEASE_WAIT_MS", 1_500)
    };
    // The holder stalls between its query and its fill, long enough to be killed there.
    let mut holder =
        Origin::start(base(env.origin_options(stack)).env("ASIDE_TEST_FILL_DELAY_MS", 5_000))
            .await
            .unwrap();
    let (b, c) = tokio::join!(
        Origin::start(base(env.origin_options(stack))),
        Origin::start(base(env.origin_options(stack)))
    );
    let others = [b.unwrap(), c.unwrap()];
    change_capture_caught_up(stack, &env).await;
    let expected = env.profile_json(stack, 2).await.unwrap();

    let holder_url = format!("{}/users/2", holder.url());
    let held = tokio::spawn(async move {
        http_client()
            .get(holder_url)
            .send()
            .await
            .map(|r| r.status())
    });
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let leased = wait_until(Duration::from_secs(5), || {
        let mut redis = redis.clone();
        async move { redis.exists::<_, bool>("user:lease:{2}").await.unwrap() }
    })
    .await;
    assert!(leased, "the holder did not take the lease");
    holder.kill();
    let killed = Instant::now();
    let _ = held.await;
    let lease_left: i64 = redis.pttl("user:lease:{2}").await.unwrap();
    assert!(lease_left > 0, "the dead holder's lease is still there");

    let before = queries(&others.iter().collect::<Vec<_>>()).await;
    let urls: Vec<String> = others
        .iter()
        .map(|o| format!("{}/users/2", o.url()))
        .collect();
    let load_started = killed.elapsed();
    let report = Load::new(urls).burst(100).await;
    let first_ok = report
        .samples
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.sent_at + s.latency)
        .min()
        .unwrap_or_default();
    let made = queries(&others.iter().collect::<Vec<_>>()).await - before;
    eprintln!(
        "{} → {made} queries; the lease had {lease_left} ms left; first answer {} ms after the kill",
        report.summary("lease holder killed"),
        (load_started + first_ok).as_millis()
    );
    assert_eq!(report.failed(), 0);
    assert!(report.samples.iter().all(|s| s.json() == expected));
    assert!(
        report.max_latency() <= BUDGET + SLACK,
        "{:?}",
        report.max_latency()
    );
    assert_eq!(made, 1.0, "one of the others loaded, once");
    // Released after its fill, which follows the answer.
    for origin in &others {
        origin.fills_settled().await;
    }
    let exists: bool = redis.exists("user:lease:{2}").await.unwrap();
    assert!(!exists, "the new holder released its lease");
}

/// Under steady traffic, a hot key with a 2 s soft TTL is refreshed before it expires (XFetch, with the
/// load's duration stretched to 200 ms by the fill delay so that the refresh window is wide): no request
/// sees it expired (STALE or MISS).
#[tokio::test]
async fn xfetch_refreshes_a_hot_key_before_it_expires() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let origin = Origin::start(
        env.origin_options(stack)
            .env("ASIDE_CACHE_TTL_SECS", 2)
            .env("ASIDE_CACHE_TTL_JITTER_PERCENT", 0)
            .env("ASIDE_TEST_FILL_DELAY_MS", 200)
            .env("ASIDE_XFETCH_BETA", 2),
    )
    .await
    .unwrap();
    change_capture_caught_up(stack, &env).await;
    let url = format!("{}/users/1", origin.url());
    let first = get(&url).await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    let control = first.header("cache-control").unwrap();
    assert!(
        control.starts_with("max-age=1") || control.starts_with("max-age=2"),
        "{control}"
    );
    origin.fills_settled().await;

    let fills = "aside_origin_cache_stores_total{outcome=\"written\"}";
    let (fills_before, early_before) = (
        metric(&origin.url(), fills).await,
        metric(&origin.url(), "aside_origin_early_refreshes_total").await,
    );
    let report = Load::new([url])
        .concurrency(4)
        .duration(Duration::from_secs(5))
        .run()
        .await;
    let refills = metric(&origin.url(), fills).await - fills_before;
    let early = metric(&origin.url(), "aside_origin_early_refreshes_total").await - early_before;
    eprintln!(
        "{} → {refills} refills, {early} requests picked for early refresh",
        report.summary("xfetch, hot key, 2 s soft TTL")
    );
    assert_eq!(report.failed(), 0);
    assert_eq!(
        report.with_cache("HIT"),
        report.sent(),
        "every answer is a fresh hit"
    );
    assert!(
        refills >= 2.0,
        "5 s of a 2 s TTL: refreshed at least twice, got {refills}"
    );
}

/// `cache-control` follows the copy's freshness: fresh answers count down to the soft expiry, a STALE
/// one says max-age=0 and how long it may still be served.
#[tokio::test]
async fn cache_control_tells_how_long_a_copy_is_fresh_and_usable() {
    let mut stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let origin = Origin::start(
        env.origin_options(&stack)
            .env("ASIDE_CACHE_TTL_SECS", 100)
            .env("ASIDE_CACHE_TTL_JITTER_PERCENT", 0)
            .env("ASIDE_CACHE_STALE_TTL_SECS", 50)
            .env("ASIDE_XFETCH_BETA", 0),
    )
    .await
    .unwrap();
    change_capture_caught_up(&stack, &env).await;
    let url = format!("{}/users/2", origin.url());
    let miss = get(&url).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert!(
        matches!(
            miss.header("cache-control"),
            Some("max-age=99, stale-if-error=50" | "max-age=100, stale-if-error=50")
        ),
        "{:?}",
        miss.header("cache-control")
    );
    origin.fills_settled().await;
    let fields = get(&format!("{url}?fields=email")).await;
    assert_eq!(fields.header("x-cache"), Some("HIT"));
    assert!(
        fields
            .header("cache-control")
            .unwrap()
            .ends_with("stale-if-error=50")
    );

    // A forced reload (the edge's early refresh) goes to PostgreSQL even though the copy is fresh.
    let before = metric(&origin.url(), PROFILE_QUERIES).await;
    let reloaded = http_client()
        .get(&url)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.headers()["x-cache"], "MISS");
    assert_eq!(metric(&origin.url(), PROFILE_QUERIES).await - before, 1.0);
    // Its fill follows the answer; let it land before the copy is aged below.
    origin.fills_settled().await;

    // Soft-expired 10 s ago, PostgreSQL down: STALE, max-age=0, ~40 s of stale use left.
    let mut redis = stack.redis.admin(env.redis_db).await.unwrap();
    let _: () = redis
        .hset("user:profile:{2}", "_fresh_until", now_ms() - 10_000)
        .await
        .unwrap();
    stack.postgres.stop();
    let stale = get(&url).await;
    assert_eq!(
        (stale.status, stale.header("x-cache")),
        (200, Some("STALE"))
    );
    assert!(
        matches!(
            stale.header("cache-control"),
            Some("max-age=0, stale-if-error=39" | "max-age=0, stale-if-error=40")
        ),
        "{:?}",
        stale.header("cache-control")
    );
    let projected = get(&format!("{url}?fields=email,username")).await;
    assert_eq!(
        (projected.status, projected.header("x-cache")),
        (200, Some("STALE"))
    );
    assert_eq!(projected.json().as_object().unwrap().len(), 3);
}

/// An admin connection to the env's logical database once Redis has loaded its data.
async fn loaded_admin(stack: &Stack, env: &TestEnv) -> redis::aio::MultiplexedConnection {
    let admin = stack.redis.admin_when_loaded(env.redis_db).await;
    admin.expect("Redis did not finish loading")
}

/// `deploy/redis.conf` persists the cache: AOF with an RDB preamble, fsynced every second. Keys (and
/// their TTLs) survive a graceful restart and a SIGKILL taken after the fsync second.
#[tokio::test]
async fn a_redis_restart_keeps_the_cache() {
    let mut stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(30).await.unwrap();
    let origin = env.origin(&stack).await.unwrap();
    change_capture_caught_up(&stack, &env).await;
    warm(&origin, 10).await;

    let mut admin = stack.redis.admin(env.redis_db).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(info.contains("aof_enabled:1"), "{info}");
    // A rewrite starts the AOF with an RDB snapshot (the "preamble"): the base file is an .rdb.
    assert!(stack.redis.rewrite_aof().await.unwrap());
    let aof_dir = stack.redis.dir.join("appendonlydir");
    let files: Vec<String> = std::fs::read_dir(&aof_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".base.rdb")),
        "no RDB preamble in {files:?}"
    );
    // Ids 1-10 are in the RDB base, 11-20 only in the AOF tail (the compare-and-set script's writes,
    // which Redis logs as MULTI/EXEC blocks).
    for id in 11..=20 {
        assert_eq!(
            get(&format!("{}/users/{id}", origin.url())).await.status,
            200
        );
    }
    origin.fills_settled().await;

    let count = |admin: redis::aio::MultiplexedConnection, range: std::ops::RangeInclusive<i32>| async move {
        let mut admin = admin;
        let mut n = 0;
        for id in range {
            let ttl: i64 = admin.pttl(format!("user:profile:{{{id}}}")).await.unwrap();
            n += usize::from(ttl > 0);
        }
        n
    };
    let ttl_before: i64 = admin.pttl("user:profile:{5}").await.unwrap();

    let started = Instant::now();
    stack.redis.shutdown().await.unwrap();
    stack.redis.restart().await.unwrap();
    let admin = loaded_admin(&stack, &env).await;
    let graceful = started.elapsed();
    let kept = count(admin.clone(), 1..=20).await;
    let ttl_after: i64 = admin.clone().pttl("user:profile:{5}").await.unwrap();
    eprintln!(
        "redis graceful restart: {kept}/20 keys kept, restart took {} ms, TTL {ttl_before} → {ttl_after} ms",
        graceful.as_millis()
    );
    assert_eq!(kept, 20);
    assert!(ttl_after > 0 && ttl_after <= ttl_before, "the TTL survives");

    // The origin reads them again as hits, without PostgreSQL, once it reconnects.
    let before = metric(&origin.url(), PROFILE_QUERIES).await;
    let url = format!("{}/users/5", origin.url());
    let started = Instant::now();
    let hit = wait_until(Duration::from_secs(15), || async {
        get(&url).await.header("x-cache") == Some("HIT")
    })
    .await;
    assert!(hit, "the origin did not read the kept keys");
    let recovery = started.elapsed();
    for id in 1..=20 {
        let a = get(&format!("{}/users/{id}", origin.url())).await;
        assert_eq!(a.header("x-cache"), Some("HIT"), "id {id}");
    }
    let made = metric(&origin.url(), PROFILE_QUERIES).await - before;
    eprintln!(
        "redis graceful restart: origin hits again after {} ms, {made} queries",
        recovery.as_millis()
    );

    // New fills, then a crash one fsync period later: they are in the AOF too.
    for id in 21..=30 {
        let a = get(&format!("{}/users/{id}", origin.url())).await;
        assert_eq!(a.status, 200);
    }
    origin.fills_settled().await;
    assert_eq!(count(admin.clone(), 21..=30).await, 10, "filled");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stack.redis.kill();
    stack.redis.restart().await.unwrap();
    let admin = loaded_admin(&stack, &env).await;
    let kept = count(admin.clone(), 1..=30).await;
    eprintln!("redis SIGKILL after the fsync second: {kept}/30 keys kept");
    assert_eq!(kept, 30);
}
