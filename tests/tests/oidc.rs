//! Client authentication against a real OpenID provider (docs/security.md, "Clients"): panva's
//! `oidc-provider` from npm, started once for this test binary ([`OidcProvider`]), issuing RS256 JWT
//! access tokens with the client-credentials grant. The edge finds its keys by discovery from the
//! issuer URL alone, keeps them process-wide (the shared tier's key-value store), refetches them on an
//! unknown `kid` and on expiry, survives the provider's outage up to `auth_keys_max_stale_s` and then
//! answers 503, and remembers verified tokens by the hash of the whole token.
//!
//! The provider is shared, and some tests rotate its keys or stop it: the tests of this file take
//! turns ([`provider`] hands out a lock).
//!
//! Needs `cargo build -p aside-origin && cargo build -p aside-edge --target wasm32-wasip2 --release` and
//! the provider installed (`cargo xtask test` does all three).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aside_tests::harness::{
    Edge, EdgeOptions, JwksMode, OIDC_AUDIENCE, OidcClient, OidcProvider, Origin, Stack, TestEnv,
    generate_secret,
};
use base64::Engine as _;
use reqwest::Method;
use tokio::sync::{Mutex, MutexGuard, OnceCell, RwLock};

/// The provider's clients: the client id is the token's `sub`, the profile it owns.
fn clients() -> Vec<OidcClient> {
    vec![
        OidcClient::new("1", "profiles:read profiles:write"),
        OidcClient::new("2", "profiles:read"),
        OidcClient::new("ops", "profiles:read profiles:write profiles:admin"),
        OidcClient::new("3", "profiles:read").ttl(3),
    ]
}

/// The JWKS's `cache-control: max-age`: long, so that the edge refetches because of a `kid` or a clamp.
const JWKS_MAX_AGE: u64 = 300;

static PROVIDER: OnceCell<Mutex<OidcProvider>> = OnceCell::const_new();

/// The binary's provider, started on first use; the lock makes this file's tests take turns.
async fn provider() -> MutexGuard<'static, OidcProvider> {
    PROVIDER
        .get_or_init(|| async {
            Mutex::new(
                OidcProvider::start(&clients(), JWKS_MAX_AGE)
                    .await
                    .expect("the OpenID provider starts"),
            )
        })
        .await
        .lock()
        .await
}

/// An edge that knows only the provider's issuer URL (and the origin it may fetch from), with the
/// process-wide tier on, and the variables `tune` sets.
async fn edge_for(
    idp: &OidcProvider,
    tune: impl FnOnce(EdgeOptions) -> EdgeOptions,
) -> (&'static Stack, TestEnv, Origin, Edge) {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let secret = generate_secret();
    let origin = env.origin_with_token(stack, &secret).await.unwrap();
    let options = EdgeOptions::new(stack, &env, &origin.url(), &secret)
        .shared_tier()
        .var("auth", "on")
        .var("auth_jwks", "")
        .var("auth_issuer", idp.issuer())
        .var("auth_audience", OIDC_AUDIENCE)
        .var("auth_provider_origin", idp.issuer())
        .var("auth_keys_min_refresh_s", 1);
    let edge = tune(options).start().await.unwrap();
    (stack, env, origin, edge)
}

async fn status(edge: &Edge, token: Option<&str>, path: &str) -> u16 {
    edge.app()
        .with_optional_token(token)
        .call(Method::GET, path, None)
        .await
        .status
}

/// `token` with one character of its `part` (0 header, 1 claims, 2 signature) changed.
fn changed_in_one_byte(token: &str, part: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut chars: Vec<char> = parts[part].chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    parts[part] = chars.into_iter().collect();
    parts.join(".")
}

/// Whether the edge's log says `what` (Spin writes the component's stderr to a file the harness reads;
/// the bundled host logs elsewhere, so there it is not checked).
fn logged(edge: &Edge, what: &str) -> bool {
    !edge.is_spin() || edge.log().contains(what)
}

/// A token naming a `kid` the provider never published (its signature is junk): the edge looks for
/// newer keys before refusing it.
fn token_with_unknown_kid() -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"never-published"}"#),
        b64(r#"{"sub":"1"}"#),
        b64("junk")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_from_the_issuer_alone_then_scopes_and_ownership() {
    let idp = provider().await;
    let before = idp.stats().await.unwrap();
    let (_stack, _env, _origin, edge) = edge_for(&idp, |o| o).await;

    let own = idp
        .token("1", "profiles:read profiles:write")
        .await
        .unwrap();
    let reader = idp.token("2", "profiles:read").await.unwrap();
    let admin = idp.token("ops", "profiles:admin").await.unwrap();
    assert_eq!(status(&edge, Some(&own), "/users/1").await, 200);
    assert_eq!(status(&edge, Some(&own), "/users/2").await, 403);
    assert_eq!(status(&edge, Some(&reader), "/users/2").await, 200);
    assert_eq!(status(&edge, Some(&reader), "/users/1").await, 403);
    assert_eq!(
        status(&edge, Some(&reader), "/users/1?fields=full_name,department").await,
        200
    );
    assert_eq!(status(&edge, Some(&admin), "/users/3").await, 200);
    assert_eq!(status(&edge, None, "/users/1").await, 401);
    let patch = serde_json::json!({"department": "Security"});
    let write = edge
        .app()
        .with_token(&reader)
        .call(Method::PATCH, "/users/2", Some(&patch))
        .await;
    assert_eq!(write.status, 403, "{write:?}");
    assert!(
        write
            .header("www-authenticate")
            .is_some_and(|c| c.contains("profiles:write")),
        "{write:?}"
    );

    // Under load with several subjects, the keys are fetched once for the process (one discovery, one
    // JWKS), and the tokens are verified from memory after their first use.
    let tokens = [own.clone(), reader.clone(), admin.clone()];
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = edge.app().with_token(&tokens[worker % 3]);
        let path = ["/users/1", "/users/2", "/users/4"][worker % 3];
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..50 {
                statuses.push(app.call(Method::GET, path, None).await.status);
            }
            statuses
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().iter().all(|s| *s == 200));
    }
    let after = idp.stats().await.unwrap();
    assert_eq!(
        after.discovery - before.discovery,
        1,
        "{before:?} {after:?}"
    );
    assert_eq!(after.jwks - before.jwks, 1, "{before:?} {after:?}");
    assert!(logged(&edge, "signing key(s)"), "{}", edge.log());

    // `auth_jwks_url` names the JWKS directly: no discovery.
    let (_s, _e, _o, direct) = edge_for(&idp, |o| {
        o.var("auth_jwks_url", format!("{}/jwks", idp.issuer()))
    })
    .await;
    assert_eq!(status(&direct, Some(&own), "/users/1").await, 200);
    let last = idp.stats().await.unwrap();
    assert_eq!(last.discovery, after.discovery, "no discovery with a URL");
    assert_eq!(last.jwks, after.jwks + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_under_load_fails_no_valid_request() {
    let idp = provider().await;
    let (_stack, _env, _origin, edge) = edge_for(&idp, |o| o).await;
    let old = idp.token("1", "profiles:read").await.unwrap();
    assert_eq!(status(&edge, Some(&old), "/users/1").await, 200);

    // Clients keep reading with whatever token is current; every answer must be a 200.
    let current = Arc::new(RwLock::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (app, current, stop) = (edge.app(), current.clone(), stop.clone());
        let (ok, failed) = (ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let token = current.read().await.clone();
                let answer = app
                    .with_token(&token)
                    .call(Method::GET, "/users/1", None)
                    .await;
                if answer.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.push(format!("{} {}", answer.status, answer.body));
                }
            }
            failures
        }));
    }
    // Past the refetch interval (1 s) since the edge's first fetch, so that the new key's first token
    // may look for it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let jwks_before = idp.stats().await.unwrap().jwks;

    // 1. A new key, published beside the old one, signs from now on.
    let kids = idp.add_key().await.unwrap();
    assert_eq!(kids.len(), 2);
    let new = idp.token("1", "profiles:read").await.unwrap();
    assert_ne!(new, old);
    *current.write().await = new.clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let jwks_after = idp.stats().await.unwrap().jwks;
    // Once for the process: the instances that miss the kid in the same moments claim the fetch in
    // the store, and one of them makes it (docs/security.md, "Key fetches").
    assert_eq!(
        jwks_after - jwks_before,
        1,
        "the new kid was fetched once for the process"
    );
    // The old key is still published: its tokens are good.
    assert_eq!(status(&edge, Some(&old), "/users/1").await, 200);

    // 2. The old key is removed at the provider.
    assert_eq!(idp.retire_old_keys().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    assert!(ok.load(Ordering::Relaxed) > 50, "load ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "valid tokens refused during the rotation: {failures:?}"
    );

    // Until the edge fetches the keys again it still has the old one; a token with an unknown kid
    // makes it look (the interval has passed), and from then on the old key's tokens are refused,
    // remembered or not.
    assert_eq!(
        status(&edge, Some(&token_with_unknown_kid()), "/users/1").await,
        401
    );
    // Every instance of the process takes the new set up within a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refused = edge
        .app()
        .with_token(&old)
        .call(Method::GET, "/users/1", None)
        .await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.contains("kid")),
        "{refused:?}"
    );
    assert_eq!(status(&edge, Some(&new), "/users/1").await, 200);
}

/// Key fetches stay at one per process per refresh interval under load from enough clients for Spin
/// to run several instances (each takes up to 16 requests at a time), while clients with made-up `kid`s
/// ask for a refetch with every request and the provider adds keys twice. Counted at the provider, and
/// in the edge's log (one line per fetch). The valid clients keep a token of the first key, which stays
/// published: a key first used within the interval after another fetch (here, one the made-up kids
/// caused) waits for the interval's end (docs/security.md, "Key fetches"); the rotation test covers
/// a key's first use on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fetches_stay_one_per_interval_with_several_instances_under_load() {
    const INTERVAL_S: u64 = 2;
    let idp = provider().await;
    let (_stack, _env, _origin, edge) =
        edge_for(&idp, |o| o.var("auth_keys_min_refresh_s", INTERVAL_S)).await;
    let first = idp.token("1", "profiles:read").await.unwrap();
    assert_eq!(status(&edge, Some(&first), "/users/1").await, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let instances = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut workers = Vec::new();
    // 40 clients with valid tokens, 8 with a made-up kid: 48 requests at a time.
    for i in 0..48 {
        let (app, first, stop) = (edge.app(), first.clone(), stop.clone());
        let (ok, failed, instances) = (ok.clone(), failed.clone(), instances.clone());
        let junk = i % 6 == 5;
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let token = if junk {
                    token_with_unknown_kid()
                } else {
                    first.clone()
                };
                let answer = app
                    .with_token(&token)
                    .call(Method::GET, "/users/1", None)
                    .await;
                if let Some(id) = answer.header("x-edge-instance") {
                    instances.lock().unwrap().insert(id.to_string());
                }
                match (junk, answer.status) {
                    (false, 200) | (true, 401) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures.push(format!("{} {}", answer.status, answer.body));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            failures
        }));
    }
    let started = std::time::Instant::now();
    let jwks_before = idp.stats().await.unwrap().jwks;
    let mut published = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        published = idp.add_key().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let jwks_after = idp.stats().await.unwrap().jwks;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    let fetches = jwks_after - jwks_before;
    let instances = instances.lock().unwrap().len();
    println!(
        "{fetches} key fetches in {:.1} s ({INTERVAL_S} s interval), {instances} instances, {} \
         answers as expected, {} not",
        elapsed.as_secs_f64(),
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 200, "load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{failures:?}");
    if edge.is_spin() {
        assert!(
            instances >= 2,
            "the load ran on {instances} instance(s): nothing raced"
        );
    }
    // Fetches start at least INTERVAL_S apart for the process: at most one per interval elapsed, and
    // one at the start of the window.
    let bound = elapsed.as_secs() / INTERVAL_S + 1;
    assert!(
        (2..=bound).contains(&fetches),
        "{fetches} key fetches in {elapsed:?} (at most {bound}; the made-up kids ask every time)"
    );
    if edge.is_spin() {
        // A fetch is logged with the keys it brought: the one that brought the last key added names
        // every published kid. The count of lines is a figure, not a check: under this churn (hundreds
        // of instances started and retired) the provider has served more JWKS requests than the log
        // shows fetch lines (8 against 5 in one run; docs/security.md, "Key fetches"), and Spin writes
        // the component's log file behind the answers, so give it a moment.
        let served = idp.stats().await.unwrap().jwks;
        let names_all = |line: &&str| published.iter().all(|kid| line.contains(kid.as_str()));
        let mut log = edge.component_log();
        for _ in 0..50 {
            if log
                .lines()
                .filter(|l| l.contains("auth: fetched"))
                .any(|l| names_all(&l))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            log = edge.component_log();
        }
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("auth: fetched"))
            .collect();
        println!(
            "{} fetch lines logged, {served} JWKS requests served",
            lines.len()
        );
        assert!(
            lines.iter().any(names_all),
            "no fetch line names every published kid {published:?}:\n{log}"
        );
    }
    // The keys the made-up kids' fetches brought are in use: a token of the newest key is accepted.
    let newest = idp.token("1", "profiles:read").await.unwrap();
    assert_eq!(status(&edge, Some(&newest), "/users/1").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_provider_leaves_the_keys_in_use_until_their_maximum_age_then_503() {
    let mut idp = provider().await;
    // Keys fresh for 2 s (the provider's 300 s clamped), used up to 6 s after their fetch.
    let (_stack, _env, _origin, edge) = edge_for(&idp, |o| {
        o.var("auth_keys_max_refresh_s", 2)
            .var("auth_keys_max_stale_s", 6)
    })
    .await;
    let token = idp.token("1", "profiles:read").await.unwrap();
    let other = idp.token("2", "profiles:read").await.unwrap();
    assert_eq!(status(&edge, Some(&token), "/users/1").await, 200);

    // Garbage from the JWKS endpoint: the last good keys stay in use, and the log says why.
    idp.jwks_mode(JwksMode::Garbage).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&edge, Some(&token), "/users/1").await, 200);
    idp.jwks_mode(JwksMode::Ok).await.unwrap();
    assert!(logged(&edge, "not a usable JWKS"), "{}", edge.log());
    // A good fetch again (fresh for 2 s, so one is due within 2-3 s).
    let good = idp.stats().await.unwrap().jwks;
    assert!(
        aside_tests::harness::wait_until(Duration::from_secs(5), || async {
            let _ = status(&edge, Some(&token), "/users/1").await;
            idp.stats().await.unwrap().jwks > good
        })
        .await
    );

    // The provider stops. The keys fetched last (at most 2 s ago) keep working for at least 4 s.
    let keys = idp.stop().await.unwrap();
    let stopped = std::time::Instant::now();
    let mut statuses = Vec::new();
    while stopped.elapsed() < Duration::from_secs(3) {
        statuses.push(status(&edge, Some(&token), "/users/1").await);
        statuses.push(status(&edge, Some(&other), "/users/2").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "cached keys keep serving: {statuses:?}"
    );
    // Past the maximum age: 503 with Retry-After, for remembered tokens too.
    let mut answer = None;
    while stopped.elapsed() < Duration::from_secs(12) {
        let a = edge
            .app()
            .with_token(&token)
            .call(Method::GET, "/users/1", None)
            .await;
        if a.status != 200 {
            answer = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the keys' maximum age passes");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.code(), "unavailable");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    assert_eq!(status(&edge, Some(&other), "/users/2").await, 503);
    // The next failed attempt says why (at most a second later).
    let said = aside_tests::harness::wait_until(Duration::from_secs(3), || async {
        let _ = status(&edge, Some(&token), "/users/1").await;
        logged(&edge, "older than auth_keys_max_stale_s")
    })
    .await;

    // The provider comes back: the next attempt (at most 1 s apart) fetches, and tokens work again.
    idp.restart(&keys).await.unwrap();
    assert!(said, "{}", edge.log());
    assert!(
        aside_tests::harness::wait_until(Duration::from_secs(5), || async {
            status(&edge, Some(&token), "/users/1").await == 200
        })
        .await,
        "{}",
        edge.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_changed_in_one_byte_or_expired_is_refused() {
    let idp = provider().await;
    let (_stack, _env, _origin, edge) = edge_for(&idp, |o| o.var("auth_leeway_s", 0)).await;
    // Client 3's tokens live 3 s.
    let token = idp.token("3", "profiles:read").await.unwrap();
    for _ in 0..3 {
        assert_eq!(status(&edge, Some(&token), "/users/3").await, 200);
    }
    for part in 0..3 {
        let changed = changed_in_one_byte(&token, part);
        assert_ne!(changed, token);
        assert_eq!(
            status(&edge, Some(&changed), "/users/3").await,
            401,
            "part {part} changed"
        );
    }
    // Still good itself, then past its exp: refused, though remembered.
    assert_eq!(status(&edge, Some(&token), "/users/3").await, 200);
    // `exp` is in whole seconds and a token is good through its `exp` second: 5 s is past it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let expired = edge
        .app()
        .with_token(&token)
        .call(Method::GET, "/users/3", None)
        .await;
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(
        expired
            .header("www-authenticate")
            .is_some_and(|c| c.contains("expired")),
        "{expired:?}"
    );
}
