//! Overload (issue 29): a traffic spike through the edge under the tests' runtime (real `spin up` when a
//! Spin 4 CLI is found), with client authentication on.
//!
//! * [`a_spike_is_answered_cleanly_and_never_floods_the_origin`]: 16 → 1,024 connections for a few
//!   seconds, then back to 16. Every answer is a 200, a 503 or a 429, with `x-cache`; the origin gets
//!   no more reads during the spike than during the same time at 16 connections plus what the spike's
//!   new ids need (none: every id is cached before); and 5 s after the spike the edge answers from
//!   its tiers again, with no breaker open.
//!
//! * [`dropping_pending_host_calls_exhausts_spin_s_fibers_and_detaching_them_does_not`]: the cause of
//!   the `500`s Spin answered under a spike (`Error processing request: oneshot canceled`), with the
//!   smallest component that shows it (bench/wait): a pending host call that is dropped (a timeout's
//!   loser) is cancelled with a blocking `subtask.cancel` that holds one of Spin's 1,000 fibers until
//!   the busy host has stopped it; under 1,024 connections the pool runs out, the next instance cannot
//!   start a call, and Spin answers all of that instance's requests `500`. Left to finish instead
//!   (what the edge's timeouts do now, edge/src/clock.rs), none.
//!
//! Needs `cargo build -p aside-origin --features aside-origin/test-hooks && cargo build -p aside-edge
//! -p aside-wait --target wasm32-wasip2 --release` (`cargo xtask test` does both).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aside_tests::harness::{
    Edge, EdgeOptions, EdgeRuntime, Load, LoadReport, Origin, Sample, Stack, TestIssuer,
    edge_instances, edge_metrics, generate_secret, metric_sum, sum_samples, workspace_root,
};

/// Seeded rows, every one read once before the spike (so Redis holds them all).
const ROWS: usize = 300;
const CALM: usize = 16;
const SPIKE: usize = 1024;
const PHASE: Duration = Duration::from_secs(4);
/// The issue's recovery bound: after this long past the spike, answers are back to normal.
const RECOVERY: Duration = Duration::from_secs(5);

/// The tests of this file load the same 2-core machine with 1,024 and 2,048 connections: run side
/// by side, each would measure the other's load too. They take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads of `/users/{id}` the origin has answered so far (every status).
async fn origin_reads(origin: &Origin) -> f64 {
    metric_sum(
        &origin.url(),
        "aside_origin_http_requests_total",
        &[r#"route="/users/{id}""#, r#"method="GET""#],
    )
    .await
}

/// Concurrent scrapes of `/edge/metrics` after a phase: enough to reach most of the instances Spin
/// keeps (each scrape is answered by one).
const SCRAPES: usize = 64;

/// The edge's origin reads by cause, summed over the instances `edge_metrics` reached.
fn origin_reads_by_cause(text: &str) -> BTreeMap<String, f64> {
    [
        "miss",
        "redis_skipped",
        "redis_failed",
        "expired",
        "reload",
        "refresh",
    ]
    .iter()
    .map(|cause| {
        let label = format!("cause=\"{cause}\"");
        (
            cause.to_string(),
            sum_samples(text, "aside_edge_origin_reads_total", &[&label]),
        )
    })
    .collect()
}

/// One phase of the load: `clients` connections reading ids 1..=ROWS at random for `PHASE`, and the
/// origin reads it caused.
async fn phase(
    edge_url: &str,
    token: &str,
    origin: &Origin,
    clients: usize,
    duration: Duration,
) -> (LoadReport, f64) {
    let before = origin_reads(origin).await;
    let base = edge_url.to_string();
    let report = Load::picking(move |_| {
        let id = 1 + rand::random::<u32>() as usize % ROWS;
        (id, format!("{base}/users/{id}"))
    })
    .concurrency(clients)
    .duration(duration)
    .client_timeout(Duration::from_secs(30))
    .header("authorization", &format!("Bearer {token}"))
    .run()
    .await;
    let after = origin_reads(origin).await;
    (report, after - before)
}

fn mix(samples: &[&Sample]) -> BTreeMap<(u16, String), usize> {
    let mut mix = BTreeMap::new();
    for s in samples {
        *mix.entry((s.status, s.cache().to_string())).or_default() += 1;
    }
    mix
}

fn goodput(report: &LoadReport) -> f64 {
    let ok = report
        .samples
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .count();
    ok as f64 / report.elapsed.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spike_is_answered_cleanly_and_never_floods_the_origin() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(ROWS as u64).await.unwrap();
    let origin_token = generate_secret();
    let origin = env.origin_with_token(stack, &origin_token).await.unwrap();
    let issuer = TestIssuer::throwaway();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &origin_token)
        .auth(&issuer)
        .start()
        .await
        .unwrap();
    let token = issuer.token("rs", &issuer.claims("1", "profiles:admin"));

    // Every id through the edge once: the origin fills Redis with all of them.
    let warm = Load::new((1..=ROWS).map(|id| format!("{}/users/{id}", edge.url())))
        .header("authorization", &format!("Bearer {token}"))
        .client_timeout(Duration::from_secs(30))
        .burst(ROWS)
        .await;
    assert_eq!(warm.with_status(200), ROWS, "{}", warm.summary("warm-up"));

    let (calm, calm_origin) = phase(&edge.url(), &token, &origin, CALM, PHASE).await;
    let before_spike = edge_metrics(&edge.url(), SCRAPES).await;
    let (spike, spike_origin) = phase(&edge.url(), &token, &origin, SPIKE, PHASE).await;
    let spike_ended = Instant::now();
    // Which reads went to the origin, by the edge's own count (the instances the scrapes reached;
    // an instance that ended meanwhile is missing from both sides).
    let after_spike = edge_metrics(&edge.url(), SCRAPES).await;
    let (was, now) = (
        origin_reads_by_cause(&before_spike),
        origin_reads_by_cause(&after_spike),
    );
    eprintln!(
        "overload: origin reads by cause (edge metrics, {} then {} instances reached): before the \
         spike {was:?}, after it {now:?}; shed after it: {} (redis_unheard {}, origin_budget {})",
        edge_instances(&before_spike).len(),
        edge_instances(&after_spike).len(),
        sum_samples(&after_spike, "aside_edge_shed_total", &[]),
        sum_samples(
            &after_spike,
            "aside_edge_shed_total",
            &[r#"cause="redis_unheard""#]
        ),
        sum_samples(
            &after_spike,
            "aside_edge_shed_total",
            &[r#"cause="origin_budget""#]
        ),
    );
    // The Redis verdicts by cause (which path each late call took), after the spike.
    let verdicts: BTreeMap<&str, f64> = [
        "error",
        "timeout",
        "saturated:late_start",
        "saturated:late_wake_up",
        "saturated:answered_others",
        "saturated:slow_answers",
    ]
    .into_iter()
    .map(|cause| {
        let label = format!("cause=\"{cause}\"");
        (
            cause,
            sum_samples(&after_spike, "aside_edge_breaker_verdicts_total", &[&label]),
        )
    })
    .collect();
    eprintln!("overload: redis verdicts after the spike: {verdicts:?}");
    let (after, _) = phase(&edge.url(), &token, &origin, CALM, RECOVERY + PHASE).await;

    for (name, report) in [("calm", &calm), ("spike", &spike), ("after", &after)] {
        let samples: Vec<&Sample> = report.samples.iter().collect();
        eprintln!(
            "overload[{name}]: sent={} goodput={:.0}/s max_latency_ms={} answers={:?}",
            report.sent(),
            goodput(report),
            report.max_latency().as_millis(),
            mix(&samples)
        );
    }
    eprintln!(
        "overload: origin reads at {CALM} connections: {calm_origin}, during the spike: {spike_origin}"
    );
    // Why each answer that asked the origin asked it (`server-timing: origin;desc=...`): every
    // origin read of a phase, as the answers that shared it saw it.
    for (name, report) in [("calm", &calm), ("spike", &spike), ("after", &after)] {
        let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &report.samples {
            if let Some(why) = s.tier_desc("origin") {
                *causes.entry(why).or_default() += 1;
            }
        }
        eprintln!("overload[{name}]: answers that asked the origin, by cause: {causes:?}");
    }
    // What a new instance's start cost the requests that waited for it (`server-timing: start`).
    let mut starts: Vec<f64> = [&warm, &calm, &spike, &after]
        .iter()
        .flat_map(|r| r.samples.iter().filter_map(|s| s.tier_ms("start")))
        .collect();
    starts.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (starts.first(), starts.last()) {
        eprintln!(
            "overload: {} answers waited for an instance's start: {first:.2}..{last:.2} ms, median {:.2} ms",
            starts.len(),
            starts[starts.len() / 2]
        );
    }
    // The start's parts beside it, and what a new instance pays later on the answers that paid it
    // (docs/operations.md, "Overload": instance start, by part): a fresh edge opens Redis connections
    // and checks tokens' signatures, so both show.
    let answers: Vec<&Sample> = [&warm, &calm, &spike, &after]
        .iter()
        .flat_map(|r| r.samples.iter())
        .collect();
    for s in answers.iter().filter(|s| s.tier_ms("start").is_some()) {
        for part in ["start_vars", "start_parse", "start_setup"] {
            assert!(s.tier_ms(part).is_some(), "no {part} beside start: {s:?}");
        }
    }
    let opened = answers
        .iter()
        .filter(|s| s.tier_ms("redis_open").is_some())
        .count();
    let verified = answers
        .iter()
        .filter(|s| s.tier_ms("auth_verify").is_some())
        .count();
    eprintln!(
        "overload: answers reporting a Redis connection opened: {opened}, a signature checked: {verified}"
    );
    assert!(
        opened > 0 && verified > 0,
        "server-timing reported {opened} connections opened and {verified} signatures checked"
    );
    let log = edge.log();
    eprintln!("overload: the edge's decisions:\n{}", log_kinds(&log));
    for line in log
        .lines()
        .filter(|l| l.contains("(cause: timeout"))
        .take(20)
    {
        eprintln!("overload: {line}");
    }

    // Every answer is the component's own: 200, 503 (shed, with Retry-After) or 429, with x-cache.
    for report in [&calm, &spike, &after] {
        for s in &report.samples {
            assert!(
                matches!(s.status, 200 | 503 | 429),
                "an answer other than 200/503/429: {s:?}\nedge log:\n{}",
                tail(&edge.log())
            );
            assert!(s.x_cache.is_some(), "an answer without x-cache: {s:?}");
            if s.status == 503 {
                assert!(s.retry_after.is_some(), "a 503 without Retry-After: {s:?}");
            }
        }
    }
    assert!(calm.with_status(200) > 0 && spike.with_status(200) > 0);

    // No stampede (the issue's bound): every id was cached before, so the spike needs no miss, and
    // the origin gets at most 1.2 × the calm phase's reads. A Redis call the edge could not hear in
    // time while Redis was answering (a queue) or that started late in its request's budget is shed,
    // never sent to the origin (docs/operations.md, "Overload"); only a Redis silent for a whole
    // timeout is, and Redis never stops here.
    //
    // One case is left, measured and documented (docs/operations.md, "Overload"): a brand-new
    // instance whose very first Redis connection takes two on-time timeouts has no evidence of its own
    // to tell a slow Redis from a frozen one, and goes to the origin (0-4 reads a spike in this test on
    // a loaded machine, 35 in a full-size bench run). So a quarter of a percent of the spike's requests
    // is tolerated on top: a stampede (every read of a saturated edge going to the origin, hundreds to
    // thousands a spike before issue 29; 16-89 with the breaker's first fix) still fails.
    let new_ids_misses = 0.0;
    let new_instances = (spike.samples.len() as f64 * 0.0025).floor();
    let allowed = 1.2 * calm_origin + new_ids_misses + new_instances;
    assert!(
        spike_origin <= allowed,
        "the spike sent {spike_origin} reads to the origin (allowed {allowed:.0}), the calm phase \
         {calm_origin}; the edge's origin reads by cause after the spike: {now:?}\nedge decisions:\n{}",
        log_kinds(&log)
    );

    // Recovery: RECOVERY after the spike, every answer is a fresh tier hit with no breaker open.
    let settled: Vec<&Sample> = after
        .samples
        .iter()
        .filter(|s| s.answered >= spike_ended + RECOVERY)
        .collect();
    assert!(!settled.is_empty());
    eprintln!("overload[settled]: answers={:?}", mix(&settled));
    for s in &settled {
        assert_eq!(s.status, 200, "{s:?}");
        assert!(matches!(s.cache(), "L1" | "L2"), "{s:?}");
        assert!(s.header("x-edge-breaker").is_none(), "{s:?}");
    }
}

/// The edge's `/edge/metrics` under a spike whose reads must go to the origin (ids never read, so
/// not in Redis) with a small origin budget: the budget grants some and refuses the rest, the refused
/// reads are answered 503 and counted as shed by that cause, and every granted take is one origin read
/// (a miss). Summed over the instances the scrapes reached, the edge's counts can only be at most
/// what the client and the origin saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_metrics_count_shedding_the_budget_and_origin_reads_under_a_spike() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    const NEW_IDS: usize = 5_000;
    env.seed(NEW_IDS as u64).await.unwrap();
    let origin_token = generate_secret();
    let origin = env.origin_with_token(stack, &origin_token).await.unwrap();
    let issuer = TestIssuer::throwaway();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &origin_token)
        .auth(&issuer)
        .var("origin_budget_per_s", 1)
        .var("origin_budget_burst", 1)
        .start()
        .await
        .unwrap();
    let token = issuer.token("rs", &issuer.claims("1", "profiles:admin"));
    let calm = edge_metrics(&edge.url(), SCRAPES).await;
    assert_eq!(
        sum_samples(&calm, "aside_edge_shed_total", &[]),
        0.0,
        "{calm}"
    );
    let origin_before = origin_reads(&origin).await;

    let base = edge.url();
    let report = Load::picking(move |_| {
        let id = 1 + rand::random::<u32>() as usize % NEW_IDS;
        (id, format!("{base}/users/{id}"))
    })
    .concurrency(256)
    .duration(Duration::from_secs(3))
    .client_timeout(Duration::from_secs(30))
    .header("authorization", &format!("Bearer {token}"))
    .run()
    .await;
    let origin_during = origin_reads(&origin).await - origin_before;
    let text = edge_metrics(&edge.url(), SCRAPES).await;
    let instances = edge_instances(&text);
    let sum = |name: &str, labels: &[&str]| sum_samples(&text, name, labels);
    let shed_budget = sum("aside_edge_shed_total", &[r#"cause="origin_budget""#]);
    let granted = sum("aside_edge_origin_budget_total", &[r#"outcome="granted""#]);
    let refused = sum("aside_edge_origin_budget_total", &[r#"outcome="refused""#]);
    let reads = sum("aside_edge_origin_reads_total", &[]);
    let misses = sum("aside_edge_origin_reads_total", &[r#"cause="miss""#]);
    let answered_5xx = sum("aside_edge_answers_total", &[r#"class="5xx""#]);
    let answered_2xx = sum("aside_edge_answers_total", &[r#"class="2xx""#]);
    eprintln!(
        "overload[metrics]: {}; origin reads {origin_during}; edge metrics from {} instances: \
         granted {granted}, refused {refused}, origin reads {reads} (misses {misses}), shed by \
         budget {shed_budget}, answers 2xx {answered_2xx} 5xx {answered_5xx}",
        report.summary("spike"),
        instances.len()
    );
    let client_503 = report.with_status(503) as f64;
    assert!(client_503 > 0.0, "{}", report.summary("spike"));
    // The metrics moved, by the right cause ...
    assert!(
        shed_budget > 0.0 && refused > 0.0 && granted > 0.0,
        "{text}"
    );
    assert!(misses > 0.0, "{text}");
    // ... and agree with each other and with what was seen from outside.
    assert_eq!(
        granted, reads,
        "every granted take is one origin read\n{text}"
    );
    // (No bound between `shed_budget` and `refused`: one refused lookup answers every request that
    // shared it, so one refusal may be several shed answers, and a refusal with a stale copy none.)
    assert!(shed_budget <= client_503, "{text}");
    assert!(answered_5xx >= shed_budget, "{text}");
    assert!(
        reads <= origin_during,
        "the edge counted {reads} origin reads, the origin {origin_during}"
    );
    // The scrapes themselves are answers (2xx) of the instances, so only an upper bound holds here.
    assert!(
        answered_2xx <= (report.with_status(200) + SCRAPES * 2) as f64,
        "{text}"
    );
    edge.shutdown().await;
}

/// How many never-read ids each load of the origin-budget test picks from (one range per edge).
const BUDGET_IDS: usize = 2_000;

/// One load of never-read ids (`first..first + BUDGET_IDS`) through `edge`: 64 connections for 2 s,
/// after one read that creates the process's bucket (instances racing to create it each take from a
/// full one; see edge/src/process_budget.rs). The report, and the origin reads it caused.
async fn budget_load(edge: &Edge, origin: &Origin, first: usize) -> (LoadReport, f64) {
    let before = origin_reads(origin).await;
    let warm = Load::new([format!("{}/users/{first}", edge.url())])
        .burst(1)
        .await;
    assert_eq!(warm.with_status(200), 1, "{}", warm.summary("first read"));
    let base = edge.url();
    let report = Load::picking(move |_| {
        let id = first + rand::random::<u32>() as usize % BUDGET_IDS;
        (id, format!("{base}/users/{id}"))
    })
    .concurrency(64)
    .duration(Duration::from_secs(2))
    .client_timeout(Duration::from_secs(30))
    .run()
    .await;
    (report, origin_reads(origin).await - before)
}

/// The origin budget per process (`origin_budget_store`): every instance of the Spin process takes
/// from one bucket kept in Spin's key-value store, so the instances a load starts cannot multiply it
/// (per instance, each brings a full bucket: the control). And a store the runtime does not have
/// leaves the budget per instance, said once in the log, every read still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_origin_budget_per_process_is_one_bucket_for_every_instance() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(3 * BUDGET_IDS as u64).await.unwrap();
    let origin_token = generate_secret();
    let origin = env.origin_with_token(stack, &origin_token).await.unwrap();
    const RATE: u32 = 5;
    const BURST: u32 = 5;
    let in_memory = std::fs::read_to_string(workspace_root().join("runtime-config.toml")).unwrap();
    let options = || {
        EdgeOptions::new(stack, &env, &origin.url(), &origin_token)
            .runtime_config(in_memory.clone())
            .var("origin_budget_per_s", RATE)
            .var("origin_budget_burst", BURST)
    };

    let edge = options()
        .var("origin_budget_store", "default")
        .start()
        .await
        .unwrap();
    if !edge.is_spin() {
        eprintln!(
            "origin budget per process: SKIPPED: it needs Spin's key-value store; the bundled host has none"
        );
        edge.shutdown().await;
        return;
    }
    let (per_process, process_reads) = budget_load(&edge, &origin, 1).await;
    let text = edge_metrics(&edge.url(), SCRAPES).await;
    let fallbacks = sum_samples(&text, "aside_edge_origin_budget_fallbacks_total", &[]);
    let process_instances = per_process
        .samples
        .iter()
        .filter_map(|s| s.instance.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();
    edge.shutdown().await;

    let edge = options().start().await.unwrap();
    let (per_instance, instance_reads) = budget_load(&edge, &origin, 1 + BUDGET_IDS).await;
    edge.shutdown().await;

    // The bound of one bucket over the load: the burst, the rate over its time, and the first read.
    let bound = f64::from(BURST) + f64::from(RATE) * per_process.elapsed.as_secs_f64() + 2.0;
    eprintln!(
        "overload[budget]: per process: {} from {process_instances} instances, {process_reads} origin \
         reads (one bucket's bound {bound:.1}), {fallbacks} fallbacks; per instance: {}, {instance_reads} \
         origin reads",
        per_process.summary("per process"),
        per_instance.summary("per instance")
    );
    // Per process: one bucket, whatever the instances, and every refusal a 503 with Retry-After.
    assert!(process_instances > 1, "the load ran on one instance only");
    assert!(
        process_reads <= bound,
        "{process_reads} origin reads > {bound:.1}"
    );
    assert_eq!(
        fallbacks, 0.0,
        "every take was the process's bucket's\n{text}"
    );
    let refused: Vec<&Sample> = per_process
        .samples
        .iter()
        .filter(|s| s.status == 503)
        .collect();
    assert!(
        !refused.is_empty(),
        "{}",
        per_process.summary("per process")
    );
    assert!(
        refused
            .iter()
            .all(|s| s.retry_after.is_some() && s.x_cache.is_some())
    );
    assert_eq!(
        per_process.with_status(200) + refused.len(),
        per_process.sent(),
        "{}",
        per_process.summary("per process")
    );
    // Per instance (the control): the instances multiply the budget past one bucket's bound.
    assert!(
        instance_reads > bound,
        "per instance {instance_reads} origin reads: the control did not exceed one bucket ({bound:.1})"
    );

    // A store the component may not use: per instance, logged, every read answered.
    let edge = options()
        .var("origin_budget_store", "nope")
        .start()
        .await
        .unwrap();
    let first = 1 + 2 * BUDGET_IDS;
    let report = Load::new((first..first + 3).map(|id| format!("{}/users/{id}", edge.url())))
        .burst(3)
        .await;
    assert_eq!(
        report.with_status(200),
        3,
        "{}",
        report.summary("store refused")
    );
    let log = edge.log();
    assert!(
        log.contains(
            "origin budget per instance, not per process: cannot open key-value store `nope`"
        ),
        "{}",
        tail(&log)
    );
    edge.shutdown().await;
}

/// bench/wait under `spin up`, hammered with `2 × SPIKE` connections for a few seconds, each request
/// racing two host timers `races` times and (`detach`) leaving each loser to finish or dropping it.
async fn hammer_wait_component(spin: &EdgeRuntime, detach: bool) -> (LoadReport, String) {
    let manifest = workspace_root().join("bench/wait/spin.toml");
    let wasm = workspace_root().join("target/wasm32-wasip2/release/aside_wait.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: `cargo build -p aside-wait --target wasm32-wasip2 --release`",
        wasm.display()
    );
    // The edge's options only for how they start Spin: the manifest is bench/wait's, which reads none
    // of the variables.
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    let component = EdgeOptions::new(stack, &env, "http://127.0.0.1:1", "unused")
        .manifest(manifest)
        .runtime(spin.clone())
        .start()
        .await
        .unwrap();
    let url = format!("{}/?races=20&detach={}", component.url(), u8::from(detach));
    // Twice the spike's connections: the pool holds 1,000 fibers, so more than 1,000 requests must be
    // in Spin at once, and this test's own client (in a process on the same two cores) keeps fewer in
    // flight than a dedicated load generator (`aside-load` shows it at 1,024).
    let report = Load::new([url])
        .concurrency(2 * SPIKE)
        .duration(PHASE)
        .client_timeout(Duration::from_secs(30))
        .run()
        .await;
    let log = component.log();
    component.shutdown().await;
    (report, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_pending_host_calls_exhausts_spin_s_fibers_and_detaching_them_does_not() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(spin) = EdgeRuntime::spin() else {
        eprintln!("no Spin 4 CLI found: the fiber pool is Spin's; nothing to check");
        return;
    };
    let (dropped, dropped_log) = hammer_wait_component(&spin, false).await;
    let (detached, detached_log) = hammer_wait_component(&spin, true).await;
    let canceled = |log: &str| log.matches("oneshot canceled").count();
    eprintln!(
        "overload[wait, losers dropped]: {} (Spin: {} × oneshot canceled)",
        dropped.summary("dropped"),
        canceled(&dropped_log)
    );
    eprintln!(
        "overload[wait, losers detached]: {} (Spin: {} × oneshot canceled)",
        detached.summary("detached"),
        canceled(&detached_log)
    );
    // Before: Spin answers 500 by itself (no x-cache: the component never answered them) and says why.
    // How many depends on how busy the host is (the fibers are held while it stops the calls), so a
    // run on a quiet or slow-to-load machine may see none: it is printed, and asserted only to be
    // Spin's own answer when it happens. It cannot be made to happen on every run by shrinking Spin's
    // pool (`SPIN_WASMTIME_TOTAL_STACKS`, read by Spin 4.0.2's spin-core; tried at 1,024
    // connections): detached losers hold stacks too, only fewer, and which variant runs out depends
    // on the host's load. Measured (dropped / detached 500s): 64 stacks 10,446 / 3,843; 256: 734 /
    // 107; 512, four runs: 374 / 0, 836 / 85, 770 / 0, 0 / 277. With the default 1,000 the detached
    // half was 0 in every run recorded.
    let spin_500s: Vec<&Sample> = dropped.samples.iter().filter(|s| s.status == 500).collect();
    if spin_500s.is_empty() {
        eprintln!(
            "overload[wait]: no 500 this run with the losers dropped (the host kept up): {}",
            dropped.summary("dropped")
        );
    }
    assert_eq!(
        spin_500s.len(),
        canceled(&dropped_log),
        "{}",
        tail(&dropped_log)
    );
    assert!(spin_500s.iter().all(|s| s.x_cache.is_none()));
    // After: every request answered by the component.
    assert_eq!(
        detached.with_status(200),
        detached.sent(),
        "{}\n{}",
        detached.summary("detached"),
        tail(&detached_log)
    );
    assert_eq!(canceled(&detached_log), 0, "{}", tail(&detached_log));
}

/// The edge's log lines, counted by kind (digits dropped), most frequent first: what the edge decided
/// during a phase, by cause.
fn log_kinds(log: &str) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.starts_with("aside-edge:")) {
        let kind: String = line.chars().filter(|c| !c.is_ascii_digit()).collect();
        *kinds.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    kinds
        .iter()
        .map(|(kind, n)| format!("{n:>6} × {kind}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last lines of a log, for assertion messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
