//! Fault injection through the edge: real Redis, PostgreSQL and origin processes are killed (SIGKILL),
//! stopped or frozen (SIGSTOP) while a load of reads runs through the edge, then brought back. Each
//! scenario prints (eprintln) the requests sent, failed and served STALE, and the recovery time.
//!
//! What "failed" means differs per scenario and is said in each; in every one, an answer slower than
//! the request budget, or no answer at all, is a failure.
//!
//! Needs `cargo build -p aside-origin --features aside-origin/test-hooks && cargo build -p aside-edge
//! --target wasm32-wasip2 --release` (`cargo xtask test` does both).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aside_tests::harness::{
    Edge, EdgeOptions, Load, Origin, OriginOptions, RedisServer, Sample, Stack, TestEnv,
    generate_secret, http_client_with_timeout,
};
use futures::future::join_all;

/// The edge's default request budget: no answer may take longer (plus this much for the test client
/// and a busy two-core machine, where the host may queue a request before the component runs).
const BUDGET: Duration = Duration::from_secs(2);
const CLIENT_SLACK: Duration = Duration::from_millis(500);
/// When the test client gives up on an answer (recorded as status 0).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Seeded rows; the first [`CACHED`] are read through the edge before the fault (so Redis has them),
/// the others are not.
const ROWS: i32 = 40;
const CACHED: i32 = 20;
/// Of the cached ids, these have their soft expiry moved into the past in Redis: only a stale copy
/// can answer them while the origin cannot.
const SOFT_EXPIRED: std::ops::RangeInclusive<i32> = 11..=20;

/// The id a sample asked for.
fn id(s: &Sample) -> i32 {
    s.target as i32
}

/// Answered, and within the budget.
fn within_budget(s: &Sample) -> bool {
    s.status != 0 && s.latency < BUDGET + CLIENT_SLACK
}

fn url(edge: &str, id: i32, fields: bool) -> String {
    if fields {
        format!("{edge}/users/{id}?fields=email,department")
    } else {
        format!("{edge}/users/{id}")
    }
}

async fn get(client: &reqwest::Client, edge: &str, id: i32, fields: bool) -> Sample {
    Sample::record(
        client.get(url(edge, id, fields)),
        id as usize,
        Instant::now(),
    )
    .await
}

/// The ids a load asks for: only `before` until [`IdPool::widen`] (called by a scenario once its fault
/// is in place), then `after` too. So ids meant to be uncached during the fault are not cached by the
/// load just before it.
struct IdPool {
    before: Vec<i32>,
    after: Vec<i32>,
    widened: AtomicBool,
}

impl IdPool {
    fn new(
        before: impl IntoIterator<Item = i32>,
        after: impl IntoIterator<Item = i32>,
    ) -> Arc<Self> {
        Arc::new(Self {
            before: before.into_iter().collect(),
            after: after.into_iter().collect(),
            widened: AtomicBool::new(false),
        })
    }

    fn fixed(ids: impl IntoIterator<Item = i32>) -> Arc<Self> {
        let pool = Self::new(ids, []);
        pool.widen();
        pool
    }

    fn widen(&self) {
        self.widened.store(true, Ordering::SeqCst);
    }

    fn pick(&self) -> i32 {
        let r = rand::random::<u32>() as usize;
        if self.widened.load(Ordering::SeqCst) && !self.after.is_empty() {
            let n = self.before.len() + self.after.len();
            let i = r % n;
            if i < self.before.len() {
                self.before[i]
            } else {
                self.after[i - self.before.len()]
            }
        } else {
            self.before[r % self.before.len()]
        }
    }
}

/// Runs `clients` concurrent loops of `GET /users/{id}` (every fourth request a `?fields`
/// projection) on ids drawn from `ids`, for `duration`, while `script` runs (it injects and heals the
/// fault). Returns every answer, in the order they arrived, and what `script` returned.
async fn load<T>(
    edge: &Edge,
    ids: &Arc<IdPool>,
    clients: usize,
    duration: Duration,
    script: impl Future<Output = T>,
) -> (Vec<Sample>, T) {
    let base = edge.url();
    let ids = Arc::clone(ids);
    let running = Load::picking(move |n| {
        let id = ids.pick();
        (id as usize, url(&base, id, n % 4 == 3))
    })
    .concurrency(clients)
    .duration(duration)
    .client_timeout(CLIENT_TIMEOUT)
    .spawn();
    let out = script.await;
    let mut samples = running.await.expect("load").samples;
    samples.sort_by_key(|s| s.answered);
    (samples, out)
}

/// Each scenario measures timing (a request's wait against the Redis timeout, a recovery within
/// seconds) on a machine of two cores: run side by side, six edges and their loads measure each other
/// (the frozen-Redis scenario's breaker counted 0-5 skipped reads of 15-24 twice in five runs of the
/// whole file at load 7-10, and passed alone). They take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The figures every scenario prints.
struct Figures<'a> {
    scenario: &'a str,
    samples: &'a [Sample],
    failed: usize,
    recovery: Option<Duration>,
}

impl Figures<'_> {
    fn print(&self) {
        let mut by_cache: BTreeMap<(u16, &str), usize> = BTreeMap::new();
        for s in self.samples {
            *by_cache.entry((s.status, s.cache())).or_default() += 1;
        }
        let slowest = self
            .samples
            .iter()
            .map(|s| s.latency)
            .max()
            .unwrap_or_default();
        let unanswered = self.samples.iter().filter(|s| s.error.is_some()).count();
        eprintln!(
            "faults_edge[{}]: sent={} failed={} stale={} recovery_ms={} slowest_ms={} \
             unanswered={unanswered} answers={:?}",
            self.scenario,
            self.samples.len(),
            self.failed,
            self.samples.iter().filter(|s| s.is_stale()).count(),
            self.recovery
                .map_or("none".to_string(), |d| d.as_millis().to_string()),
            slowest.as_millis(),
            by_cache,
        );
    }
}

/// The first answer at or after `from` that satisfies `ok`, as a delay since `from`.
fn recovery(samples: &[Sample], from: Instant, ok: impl Fn(&Sample) -> bool) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.answered >= from)
        .find(|s| ok(s))
        .map(|s| s.answered - from)
}

fn first_failures(samples: &[Sample], failed: impl Fn(&Sample) -> bool) -> Vec<&Sample> {
    samples.iter().filter(|s| failed(s)).take(5).collect()
}

/// A seeded env, an origin that accepts only a fresh token, and an edge started with `configure`.
async fn setup(
    stack: &Stack,
    configure: impl FnOnce(EdgeOptions) -> EdgeOptions,
) -> (TestEnv, Origin, Edge) {
    let (env, _token, origin, edge) = setup_with_token(stack, configure).await;
    (env, origin, edge)
}

async fn setup_with_token(
    stack: &Stack,
    configure: impl FnOnce(EdgeOptions) -> EdgeOptions,
) -> (TestEnv, String, Origin, Edge) {
    setup_with(stack, |o| o, configure).await
}

/// [`setup_with_token`], with the origin's options changed by `configure_origin` too.
async fn setup_with(
    stack: &Stack,
    configure_origin: impl FnOnce(OriginOptions) -> OriginOptions,
    configure: impl FnOnce(EdgeOptions) -> EdgeOptions,
) -> (TestEnv, String, Origin, Edge) {
    let env = stack.env().await.unwrap();
    env.seed(ROWS as u64).await.unwrap();
    let token = generate_secret();
    let mut options = env.origin_options(stack);
    options.tokens = vec![token.clone()];
    let origin = Origin::start(configure_origin(options)).await.unwrap();
    let edge = configure(EdgeOptions::new(stack, &env, &origin.url(), &token))
        .start()
        .await
        .unwrap();
    (env, token, origin, edge)
}

/// Reads ids `1..=CACHED` through the edge (the origin fills Redis), then moves the soft expiry of
/// [`SOFT_EXPIRED`] into the past in Redis, as if their fresh period had ended.
async fn warm_and_soft_expire(edge: &Edge, origin: &Origin, redis: &RedisServer, env: &TestEnv) {
    warm(edge, origin).await;
    soft_expire(redis, env).await;
}

/// Reads ids `1..=CACHED` through the edge, so the origin fills Redis with them (its fills follow its
/// answers: waits for them to land).
async fn warm(edge: &Edge, origin: &Origin) {
    let client = http_client_with_timeout(CLIENT_TIMEOUT);
    for id in 1..=CACHED {
        let s = get(&client, &edge.url(), id, false).await;
        assert_eq!(s.status, 200, "warming id {id}: {s:?}");
    }
    origin.fills_settled().await;
}

/// Moves the soft expiry of [`SOFT_EXPIRED`] into the past in Redis, as if their fresh period had
/// ended. Done once the fault is in place: before it, the next read would have the origin refresh them.
async fn soft_expire(redis: &RedisServer, env: &TestEnv) {
    let mut admin = redis.admin(env.redis_db).await.unwrap();
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1000;
    for id in 1..=CACHED {
        let key = format!("user:profile:{{{id}}}");
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(exists, "{key} was not cached by the warm-up");
        if SOFT_EXPIRED.contains(&id) {
            let () = redis::cmd("HSET")
                .arg(&key)
                .arg("_fresh_until")
                .arg(past)
                .arg("_delta_ms")
                .arg(5)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    }
}

fn is_cached(id: i32) -> bool {
    id <= CACHED
}

/// An id that was not cached, answered through the origin (so from PostgreSQL): what "recovered"
/// means once PostgreSQL or the origin is back.
fn answered_by_postgres(s: &Sample) -> bool {
    !is_cached(id(s)) && s.status == 200 && s.cache() == "MISS"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_reads_costs_no_request_and_l2_hits_resume_after_restart() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::dedicated().await.unwrap();
    // Tier 1 off: every read goes to Redis, so Redis's death and return show in every answer.
    let (env, origin, edge) = setup(&stack, |o| o.l1_ttl_ms(0)).await;
    warm_and_soft_expire(&edge, &origin, &stack.redis, &env).await;
    let ids = IdPool::fixed(1..=ROWS);

    let redis = &mut stack.redis;
    let (samples, restarted_at) = load(&edge, &ids, 6, Duration::from_secs(7), async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.restart().await.unwrap();
        Instant::now()
    })
    .await;

    // Every read is answered (200) within the budget: the origin and PostgreSQL stand in for Redis.
    let failed = |s: &Sample| s.status != 200 || !within_budget(s);
    let recovered = recovery(&samples, restarted_at, |s| s.cache() == "L2");
    let figures = Figures {
        scenario: "redis_killed",
        samples: &samples,
        failed: samples.iter().filter(|s| failed(s)).count(),
        recovery: recovered,
    };
    figures.print();
    assert_eq!(figures.failed, 0, "{:#?}", first_failures(&samples, failed));
    assert!(
        samples
            .iter()
            .any(|s| s.answered < restarted_at && s.cache() == "MISS"),
        "no read went to the origin while Redis was down"
    );
    let recovered = recovered.expect("no L2 hit after Redis came back");
    assert!(
        recovered < Duration::from_secs(4),
        "L2 hits resumed only {recovered:?} after Redis came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_cached_ids_are_served_uncached_get_503_and_it_recovers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::dedicated().await.unwrap();
    // Both breakers back off at most 1 s here (defaults: the origin's PostgreSQL breaker doubles up to
    // 5 s, the edge's origin breaker waits 2 s), so recovery shows within the few seconds of load.
    let (env, _token, origin, edge) = setup_with(
        &stack,
        |o| o.env("ASIDE_DB_BACKOFF_MAX_MS", 1000),
        |e| e.var("origin_backoff_ms", 1000),
    )
    .await;
    warm(&edge, &origin).await;
    let ids = IdPool::new(1..=CACHED, CACHED + 1..=ROWS);

    let postgres = &mut stack.postgres;
    let redis = &stack.redis;
    let (samples, restarted_at) = load(&edge, &ids, 6, Duration::from_secs(7), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        postgres.stop();
        soft_expire(redis, &env).await;
        ids.widen();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        postgres.restart().await.unwrap();
        Instant::now()
    })
    .await;

    // A cached id is always answered 200 (fresh, or STALE for a soft-expired one); an uncached one 200
    // or, while PostgreSQL is down, 503 with Retry-After; all within the budget. A fresh copy is never
    // marked STALE.
    let failed = |s: &Sample| {
        let answered = if is_cached(id(s)) {
            s.status == 200
        } else {
            s.status == 200 || (s.status == 503 && s.retry_after.is_some())
        };
        !answered || !within_budget(s) || (s.is_stale() && !SOFT_EXPIRED.contains(&id(s)))
    };
    let recovered = recovery(&samples, restarted_at, answered_by_postgres);
    let figures = Figures {
        scenario: "postgres_stopped",
        samples: &samples,
        failed: samples.iter().filter(|s| failed(s)).count(),
        recovery: recovered,
    };
    figures.print();
    assert_eq!(figures.failed, 0, "{:#?}", first_failures(&samples, failed));
    assert!(
        samples.iter().any(|s| s.status == 503),
        "no uncached id got a 503 while PostgreSQL was down"
    );
    assert!(
        samples.iter().any(Sample::is_stale),
        "no soft-expired id was served STALE while PostgreSQL was down"
    );
    let recovered = recovered.expect("no uncached id was answered after PostgreSQL came back");
    assert!(
        recovered < Duration::from_secs(4),
        "uncached ids answered again only {recovered:?} after PostgreSQL came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_killed_the_edge_serves_what_it_holds_uncached_get_503_and_it_recovers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::dedicated().await.unwrap();
    let (env, mut origin, edge) = setup(&stack, |o| o).await;
    warm(&edge, &origin).await;
    let ids = IdPool::new(1..=CACHED, CACHED + 1..=ROWS);

    let origin_ref = &mut origin;
    // 9 s: the origin is back after 3 s plus its restart (1-2 s on a busy machine), and the edge's
    // breaker may hold misses back for its 2 s back-off after that: the load must outlast both by the
    // 4 s the recovery is allowed (with 6 s, a slow restart left less than the back-off to see it in).
    let (samples, restarted_at) = load(&edge, &ids, 6, Duration::from_secs(9), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        origin_ref.kill();
        soft_expire(&stack.redis, &env).await;
        ids.widen();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        origin_ref.restart().await.unwrap();
        Instant::now()
    })
    .await;

    // Cached ids: 200 from L1, L2, or STALE (the soft-expired ones); uncached: 503 with Retry-After
    // while the origin is gone, 200 otherwise.
    let failed = |s: &Sample| {
        let answered = if is_cached(id(s)) {
            s.status == 200
        } else {
            s.status == 200 || (s.status == 503 && s.retry_after.is_some())
        };
        !answered || !within_budget(s) || (s.is_stale() && !SOFT_EXPIRED.contains(&id(s)))
    };
    let recovered = recovery(&samples, restarted_at, answered_by_postgres);
    eprintln!(
        "faults_edge[origin_killed]: {} answers after the origin was back ({:?})",
        samples
            .iter()
            .filter(|s| s.answered >= restarted_at)
            .count(),
        samples
            .iter()
            .filter(|s| s.answered >= restarted_at && !is_cached(id(s)))
            .take(3)
            .map(|s| (
                s.status,
                s.cache().to_string(),
                s.header("x-edge-breaker").map(str::to_string)
            ))
            .collect::<Vec<_>>()
    );
    let figures = Figures {
        scenario: "origin_killed",
        samples: &samples,
        failed: samples.iter().filter(|s| failed(s)).count(),
        recovery: recovered,
    };
    figures.print();
    assert_eq!(figures.failed, 0, "{:#?}", first_failures(&samples, failed));
    let during = |s: &&Sample| s.answered < restarted_at;
    assert!(
        samples
            .iter()
            .filter(during)
            .any(|s| SOFT_EXPIRED.contains(&id(s)) && s.is_stale()),
        "no soft-expired id was served STALE while the origin was gone"
    );
    assert!(
        samples.iter().filter(during).any(|s| s.status == 503),
        "no uncached id got a 503 while the origin was gone"
    );
    assert!(
        samples.iter().any(|s| s
            .header("x-edge-breaker")
            .is_some_and(|b| b.contains("origin="))),
        "no answer showed the origin breaker open"
    );
    let recovered = recovered.expect("no uncached id was answered after the origin came back");
    assert!(
        recovered < Duration::from_secs(4),
        "uncached ids answered again only {recovered:?} after the origin came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_trips_the_breaker_instead_of_piling_up_requests() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::dedicated().await.unwrap();
    let (env, origin, edge) = setup(&stack, |o| o.l1_ttl_ms(0)).await;
    warm_and_soft_expire(&edge, &origin, &stack.redis, &env).await;
    let ids = IdPool::fixed(1..=CACHED);

    let redis = &stack.redis;
    // Frozen for 4 s: a breaker opens only after its instance's second stall, and with 8 clients an
    // instance may get its second read only a second or two into the freeze (a 2.5 s freeze once saw
    // one instance open its breaker at the very end, and no read reach it after). 4 s after the
    // earliest opening spans at most two back-off windows (redis_backoff_ms, 2 s).
    let (samples, (paused_at, thawed_at)) =
        load(&edge, &ids, 8, Duration::from_millis(7500), async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            redis.pause(true);
            let paused_at = Instant::now();
            tokio::time::sleep(Duration::from_millis(4000)).await;
            redis.pause(false);
            (paused_at, Instant::now())
        })
        .await;

    // Every read is answered 200 within the budget (the origin stands in for Redis).
    let failed = |s: &Sample| s.status != 200 || !within_budget(s);
    let recovered = recovery(&samples, thawed_at, |s| s.cache() == "L2");
    let figures = Figures {
        scenario: "redis_frozen",
        samples: &samples,
        failed: samples.iter().filter(|s| failed(s)).count(),
        recovery: recovered,
    };
    figures.print();
    assert_eq!(figures.failed, 0, "{:#?}", first_failures(&samples, failed));

    // The breaker is per instance, and Spin starts a new instance whenever every request of the others
    // waits on I/O, so how many reads met a closed breaker depends on how many instances Spin started
    // (10 of 48 waited in a quiet run, 21 of 40 in a CI run). What the breaker promises is per instance:
    // once an answer of an instance showed its Redis breaker open, the reads sent to that instance
    // afterwards skip Redis (no `l2` in server-timing), except the probe that each back-off window lets
    // through (one at a time; the freeze spans two windows after an opening, and a probe judged
    // saturated frees its slot for one more).
    let frozen: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.answered > paused_at && s.answered < thawed_at)
        .collect();
    let waited_for_redis = |s: &Sample| s.tier_ms("l2").is_some_and(|ms| ms >= 200.0);
    let waited = frozen.iter().filter(|s| waited_for_redis(s)).count();
    let skipped = frozen.iter().filter(|s| s.tier_ms("l2").is_none()).count();
    let mut opened: BTreeMap<&str, Instant> = BTreeMap::new();
    for s in &frozen {
        if let (Some(instance), true) = (
            s.instance.as_deref(),
            s.header("x-edge-breaker")
                .is_some_and(|b| b.contains("redis=")),
        ) {
            let at = opened.entry(instance).or_insert(s.answered);
            *at = (*at).min(s.answered);
        }
    }
    // Per instance whose breaker was seen open: (reads sent after that, of which waited for Redis).
    let mut after_open: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in &frozen {
        let Some(instance) = s.instance.as_deref() else {
            continue;
        };
        let Some(open_at) = opened.get(instance) else {
            continue;
        };
        if s.answered - s.latency > *open_at {
            let entry = after_open.entry(instance).or_default();
            entry.0 += 1;
            entry.1 += usize::from(waited_for_redis(s));
        }
    }
    let instances = frozen
        .iter()
        .filter_map(|s| s.instance.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    eprintln!(
        "faults_edge[redis_frozen]: while frozen: {} answers from {instances} instances, {waited} \
         waited for the Redis timeout, {skipped} skipped Redis (breaker open); breaker seen open in {} \
         instances; reads sent to them after that (sent, waited): {:?}",
        frozen.len(),
        opened.len(),
        after_open.values().collect::<Vec<_>>()
    );
    // Each back-off window (redis_backoff_ms, 2 s) lets one probe through, and one more when a probe
    // is judged saturated; the 4 s freeze spans two windows after a breaker opens.
    const WINDOWS: usize = 2;
    const PROBES_PER_INSTANCE: usize = 2 * WINDOWS;
    for (instance, (sent, waited)) in &after_open {
        assert!(
            *waited <= PROBES_PER_INSTANCE,
            "instance {instance}: {waited} of the {sent} reads sent after its Redis breaker opened \
             waited for Redis (at most {PROBES_PER_INSTANCE} probes expected)"
        );
    }
    let sent_after_open: usize = after_open.values().map(|(sent, _)| sent).sum();
    assert!(
        sent_after_open > 0,
        "no read reached an instance after its Redis breaker was seen open ({} instances opened it)",
        opened.len()
    );
    assert!(
        frozen.iter().any(|s| s
            .header("x-edge-breaker")
            .is_some_and(|b| b.contains("redis="))),
        "no answer showed the Redis breaker open"
    );
    let recovered = recovered.expect("no L2 hit after Redis thawed");
    assert!(
        recovered < Duration::from_secs(4),
        "L2 hits resumed only {recovered:?} after Redis thawed"
    );
}

/// With the process-wide tier on, the Redis breaker is shared by the instances of the process: the
/// instance whose breaker opens (Redis failing) leaves a mark until the end of its back-off, and every
/// instance started before then starts with its breaker open, so its reads skip Redis at once instead
/// of each waiting for the Redis timeout first (what the frozen-Redis test above sees in the instances
/// Spin starts during the freeze). `--max-instance-reuse-count 1` gives every request a new instance:
/// nothing but the mark can carry the breaker from one to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_opens_the_redis_breaker_of_instances_started_after_it_with_the_shared_tier()
{
    const BACKOFF: Duration = Duration::from_secs(8);
    const AFTER_THE_MARK: i32 = 6;
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::dedicated().await.unwrap();
    let (_env, origin, edge) = setup(&stack, |o| {
        // Tier 1's TTL 0: no copy in the process-wide tier is fresh either, so reads ask Redis.
        o.shared_tier()
            .l1_ttl_ms(0)
            .max_instance_reuse_count(1)
            .var("redis_failure_threshold", 1)
            .redis_backoff_ms(BACKOFF.as_millis() as u64)
    })
    .await;
    if !edge.is_spin() {
        eprintln!(
            "faults_edge[redis_breaker_shared]: SKIPPED: the process-wide tier needs Spin's key-value \
             store; the bundled host has none"
        );
        return;
    }
    warm(&edge, &origin).await;
    let client = http_client_with_timeout(CLIENT_TIMEOUT);
    let base = edge.url();
    let redis_open = |s: &Sample| {
        s.header("x-edge-breaker")
            .is_some_and(|b| b.contains("redis=open"))
    };
    let before = get(&client, &base, 1, false).await;
    assert_eq!((before.status, before.cache()), (200, "L2"), "{before:?}");
    assert!(!redis_open(&before), "{before:?}");

    stack.redis.pause(true);
    // The first reads meet the frozen Redis: one of them (the first, unless the machine is so busy
    // that its wait is put down to the edge's saturation, which opens nothing) waits for the Redis
    // timeout, and its instance's breaker opens (threshold 1) and leaves the mark.
    let mut met_it = Vec::new();
    let opener = loop {
        let s = get(&client, &base, 2 + met_it.len() as i32, false).await;
        if redis_open(&s) {
            break s;
        }
        met_it.push(s);
        assert!(
            met_it.len() < 5,
            "no read opened the Redis breaker: {met_it:#?}"
        );
    };
    let marked_at = Instant::now();
    assert_eq!(opener.status, 200, "{opener:?}");
    assert!(
        opener.tier_ms("l2").is_some(),
        "the opener asked Redis: {opener:?}"
    );

    // Every read after it comes to a new instance, which starts with its Redis breaker open: it skips
    // Redis (no `l2` in server-timing) and says so, and the origin answers.
    let mut instances = std::collections::BTreeSet::new();
    instances.extend(opener.instance.clone());
    instances.extend(met_it.iter().filter_map(|s| s.instance.clone()));
    let mut after = Vec::new();
    for id in 10..10 + AFTER_THE_MARK {
        let s = get(&client, &base, id, false).await;
        assert_eq!(s.status, 200, "{s:?}");
        let instance = s.instance.clone().expect("x-edge-instance");
        assert!(
            instances.insert(instance),
            "reuse count 1: a new instance each time: {s:?}"
        );
        assert!(redis_open(&s), "an instance started after the mark: {s:?}");
        assert!(s.tier_ms("l2").is_none(), "skipped Redis: {s:?}");
        after.push(s);
    }
    let sent_for = marked_at.elapsed();
    assert!(
        sent_for < BACKOFF,
        "the reads after the mark took {sent_for:?}, longer than the back-off: nothing was shown"
    );
    stack.redis.pause(false);

    // Once the back-off has passed, the mark is gone: a new instance reads Redis again.
    tokio::time::sleep(BACKOFF.saturating_sub(marked_at.elapsed()) + Duration::from_millis(500))
        .await;
    let healed = get(&client, &base, 3, false).await;
    assert_eq!((healed.status, healed.cache()), (200, "L2"), "{healed:?}");
    assert!(!redis_open(&healed), "{healed:?}");
    let mean = |v: &[Sample]| {
        v.iter()
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .sum::<f64>()
            / v.len().max(1) as f64
    };
    eprintln!(
        "faults_edge[redis_breaker_shared]: the opener waited {:.0} ms for Redis (answer {} ms, {} \
         read(s) before it shed or waited), {AFTER_THE_MARK} reads by new instances after the mark: all \
         skipped Redis, mean answer {:.0} ms; after the back-off: {} in {} ms",
        opener.tier_ms("l2").unwrap_or(0.0),
        opener.latency.as_millis(),
        met_it.len(),
        mean(&after),
        healed.cache(),
        healed.latency.as_millis(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_origin_costs_a_request_its_budget_then_the_breaker_answers_at_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::dedicated().await.unwrap();
    // A budget below origin_timeout_ms (2000): only the budget can end a wait for the frozen origin
    // before 2 s.
    let budget = Duration::from_millis(1000);
    // The feed off: tier 1 keeps a copy for l1_ttl_ms (2 s) only, so the soft-expired id read below,
    // seconds after the warm-up, is answered from the stale copy whichever instance serves it. With
    // the feed on, the instance that warmed it may hold a copy still fresh by the feed's rule (L1, also
    // right, but not the path this test is about), depending on which instance Spin picks.
    let (env, origin, edge) = setup(&stack, |o| {
        o.var("request_budget_ms", budget.as_millis())
            .var("origin_failure_threshold", 3)
            .var("origin_backoff_ms", 1500)
            .var("feed_poll_ms", 0)
    })
    .await;
    warm_and_soft_expire(&edge, &origin, &stack.redis, &env).await;
    let client = http_client_with_timeout(CLIENT_TIMEOUT);
    let base = edge.url();

    origin.pause(true);
    let started = Instant::now();
    // Sequential misses: each waits for the budget (not the 2 s origin timeout), then 503.
    let mut waits = Vec::new();
    for id in 21..=23 {
        let s = get(&client, &base, id, false).await;
        assert_eq!(s.status, 503, "{s:?}");
        assert!(s.retry_after.is_some(), "{s:?}");
        assert!(
            s.latency >= budget - Duration::from_millis(300) && s.latency < Duration::from_secs(2),
            "a miss with the origin frozen took {:?} (budget {budget:?}): {s:?}",
            s.latency
        );
        waits.push(s.latency.as_millis());
    }
    // The breaker of that instance is open now: its misses are refused at once (no `origin` in
    // server-timing, `x-edge-breaker: origin=open`). A burst may also start new instances (the host
    // does when requests arrive together), whose breakers are still closed: those wait their budget
    // like the first three. Either way every answer is a 503 with Retry-After within the budget.
    let burst = join_all((24..=39).map(|id| get(&client, &base, id, false))).await;
    let mut refused_at_once = 0;
    for s in &burst {
        assert_eq!(s.status, 503, "{s:?}");
        assert!(s.latency < Duration::from_secs(2), "{s:?}");
        let retry_after: u64 = s.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "{s:?}");
        if s.tier_ms("origin").is_none() {
            assert_eq!(s.header("x-edge-breaker"), Some("origin=open"), "{s:?}");
            refused_at_once += 1;
        }
    }
    assert!(refused_at_once > 0, "{burst:#?}");
    let burst_slowest = burst.iter().map(|s| s.latency).max().unwrap();
    let waited = burst
        .iter()
        .filter(|s| s.tier_ms("origin").is_some())
        .count();
    let stale = get(&client, &base, 15, false).await;
    assert_eq!((stale.status, stale.cache()), (200, "STALE"), "{stale:?}");
    let fresh = get(&client, &base, 5, true).await;
    assert_eq!(fresh.status, 200, "{fresh:?}");
    assert!(matches!(fresh.cache(), "L1" | "L2"), "{fresh:?}");
    let frozen_for = started.elapsed();

    origin.pause(false);
    let thawed_at = Instant::now();
    let mut samples = Vec::new();
    let recovered = loop {
        let s = get(&client, &base, 40, false).await;
        let ok = s.status == 200;
        samples.push(s);
        if ok {
            break Some(thawed_at.elapsed());
        }
        if thawed_at.elapsed() > Duration::from_secs(6) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "faults_edge[origin_frozen]: sent={} failed=0 stale=1 recovery_ms={} waits_ms={waits:?} \
         burst_of_16: refused_at_once={refused_at_once} waited={waited} slowest_ms={} \
         frozen_for_ms={}",
        3 + burst.len() + 2 + samples.len(),
        recovered.map_or("none".into(), |d| d.as_millis().to_string()),
        burst_slowest.as_millis(),
        frozen_for.as_millis(),
    );
    let recovered = recovered.unwrap_or_else(|| panic!("no recovery: {samples:#?}"));
    assert!(recovered < Duration::from_secs(4), "{recovered:?}");
}

/// Sets the soft expiry (`_fresh_until`, `fresh_for_ms` from now) and load cost of a cached profile.
async fn set_freshness(
    redis: &RedisServer,
    env: &TestEnv,
    id: i32,
    fresh_for_ms: i64,
    delta_ms: u64,
) {
    let mut admin = redis.admin(env.redis_db).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let () = redis::cmd("HSET")
        .arg(format!("user:profile:{{{id}}}"))
        .arg("_fresh_until")
        .arg(now + fresh_for_ms)
        .arg("_delta_ms")
        .arg(delta_ms)
        .query_async(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_near_its_soft_expiry_is_refreshed_early_and_never_served_stale() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::shared().await;
    let (env, token, origin, edge) = setup_with_token(stack, |o| o.l1_ttl_ms(0)).await;
    let another_edge = |configure: fn(EdgeOptions) -> EdgeOptions| {
        configure(EdgeOptions::new(stack, &env, &origin.url(), &token)).start()
    };
    let client = http_client_with_timeout(CLIENT_TIMEOUT);
    let first = get(&client, &edge.url(), 1, false).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    origin.fills_settled().await;

    // Fresh for another minute, but a reload is said to cost 1000 s: XFetch (default beta 1) refreshes
    // it early with probability exp(-60 / 1000) = 94 % per request, so the test asks until one has.
    let eager = &edge;
    set_freshness(&stack.redis, &env, 1, 60_000, 1_000_000).await;
    let mut seen = Vec::new();
    for _ in 0..40 {
        let s = get(&client, &eager.url(), 1, false).await;
        assert_eq!(s.status, 200, "{s:?}");
        assert_ne!(s.cache(), "STALE", "a fresh copy is never STALE: {s:?}");
        seen.push(s.cache().to_string());
        if s.cache() == "MISS" {
            assert!(
                s.tier_ms("l2").is_some() && s.tier_ms("origin").is_some(),
                "an early refresh visits Redis, then the origin: {s:?}"
            );
            break;
        }
    }
    eprintln!("faults_edge[xfetch]: answers until the early refresh: {seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("MISS"), "{seen:?}");
    // The refresh's fill follows its answer: let it land before the copy's freshness is set again.
    origin.fills_settled().await;

    // Off (beta 0), or far from expiry with a cheap reload: a plain L2 hit.
    let off = another_edge(|o| o.l1_ttl_ms(0).var("xfetch_beta", 0))
        .await
        .unwrap();
    set_freshness(&stack.redis, &env, 1, 60_000, 1_000_000).await;
    for _ in 0..10 {
        assert_eq!(get(&client, &off.url(), 1, false).await.cache(), "L2");
    }
    set_freshness(&stack.redis, &env, 1, 3_600_000, 1).await;
    for _ in 0..10 {
        assert_eq!(get(&client, &eager.url(), 1, false).await.cache(), "L2");
    }
    // Past its soft expiry it is not an early refresh but a miss (the origin answers).
    set_freshness(&stack.redis, &env, 1, -1000, 1).await;
    let expired = get(&client, &edge.url(), 1, false).await;
    assert_eq!((expired.status, expired.cache()), (200, "MISS"));
}
