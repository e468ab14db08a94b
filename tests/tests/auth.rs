//! Client authentication and authorization at the edge (docs/security.md, "Clients"), end to end: the
//! release component under the harness's Spin host with `auth = "on"`, real Redis, PostgreSQL and
//! origin, and a throwaway identity provider ([`TestIssuer`]: RS256, ES256 and EdDSA keys made at
//! test time).
//!
//! Needs `cargo build -p aside-origin && cargo build -p aside-edge --target wasm32-wasip2 --release`
//! (`cargo xtask test` does both).

use std::time::Duration;

use aside_tests::harness::{
    Edge, EdgeOptions, Origin, Stack, TestEnv, TestIssuer, TestKey, generate_secret, http_client,
    now_secs, tier_ms,
};
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

/// A seeded env, its origin, and an edge with authentication on (`issuer`'s keys) and the options
/// `tune` adds.
async fn stack_with_auth(
    rows: u64,
    issuer: &TestIssuer,
    tune: impl FnOnce(EdgeOptions) -> EdgeOptions,
) -> (&'static Stack, TestEnv, String, Origin, Edge) {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(rows).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let options = EdgeOptions::new(stack, &env, &origin.url(), &token).auth(issuer);
    let edge = tune(options).start().await.unwrap();
    (stack, env, token, origin, edge)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Every way a token can be wrong, each with the `error_description` it must get.
fn bad_tokens(idp: &TestIssuer) -> Vec<(&'static str, String, &'static str)> {
    let now = now_secs();
    let admin = |edit: &dyn Fn(&mut Value)| {
        let mut claims = idp.claims("1", "profiles:read profiles:write profiles:admin");
        edit(&mut claims);
        idp.token("es", &claims)
    };
    let claims = idp.claims("1", "profiles:admin");
    let payload = b64(claims.to_string().as_bytes());
    // HS256 keyed with the RSA key's public JWK: the edge must use RS256 for "rs", whatever the header.
    let rs_public = idp.key("rs").jwk.to_string();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("rs".into());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(rs_public.as_bytes()).unwrap(),
    )
    .unwrap();
    vec![
        (
            "expired",
            admin(&|c| {
                c["exp"] = json!(now - 600);
                c["nbf"] = json!(now - 900);
            }),
            "expired",
        ),
        (
            "not yet valid",
            admin(&|c| c["nbf"] = json!(now + 600)),
            "not valid yet",
        ),
        (
            "wrong issuer",
            admin(&|c| c["iss"] = json!("https://evil.test/")),
            "another issuer",
        ),
        (
            "wrong audience",
            admin(&|c| c["aud"] = json!("someone-else")),
            "another audience",
        ),
        (
            "bad signature",
            TestKey::ec("es").sign(&claims),
            "signature does not verify",
        ),
        (
            "unknown kid",
            TestKey::ed("nobody").sign(&claims),
            "not in the key set",
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(br#"{"alg":"none","kid":"es"}"#)),
            "",
        ),
        (
            "HS256 with the public key",
            hs256,
            "algorithm is not its key's",
        ),
        ("garbage", "not.a.jwt".to_string(), "malformed"),
    ]
}

/// The five routes, on profile `target`; `create` is a valid new profile.
fn routes(target: i64, current: &Value, create: &Value) -> Vec<(Method, String, Option<Value>)> {
    let mut replacement = current.clone();
    replacement.as_object_mut().unwrap().remove("id");
    vec![
        (Method::GET, format!("/users/{target}"), None),
        (Method::POST, "/users".to_string(), Some(create.clone())),
        (Method::PUT, format!("/users/{target}"), Some(replacement)),
        (
            Method::PATCH,
            format!("/users/{target}"),
            Some(json!({"department": "Security"})),
        ),
        (Method::DELETE, format!("/users/{target}"), None),
    ]
}

fn new_profile(n: u32) -> Value {
    json!({
        "full_name": "Teste Autenticação",
        "gender": "F",
        "birth_date": "1990-01-31",
        "department": "DevOps",
        "email": format!("auth.test{n}@fake-devops-db.internal"),
        "username": format!("auth.test{n}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_missing_and_bad_tokens_before_any_tier_and_changes_nothing() {
    let idp = TestIssuer::throwaway();
    let (stack, env, _, _origin, edge) = stack_with_auth(10, &idp, |o| o).await;
    let app = edge.app();
    let before = env.profile_json(stack, 4).await.unwrap();

    for (method, path, body) in routes(4, &before, &new_profile(1)) {
        let none = app.call(method.clone(), &path, body.as_ref()).await;
        assert_eq!(
            none.status, 401,
            "{method} {path} without a token: {none:?}"
        );
        assert_eq!(none.code(), "unauthorized");
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer realm=\"aside\"")
        );
        assert_eq!(none.header("cache-control"), Some("private, no-store"));
        assert_eq!(none.header("vary"), Some("authorization"));

        for (what, token, description) in bad_tokens(&idp) {
            let answer = app
                .with_token(&token)
                .call(method.clone(), &path, body.as_ref())
                .await;
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {what}: {answer:?}"
            );
            assert_eq!(answer.code(), "invalid_token", "{what}");
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer realm=\"aside\", error=\"invalid_token\""),
                "{what}: {challenge}"
            );
            assert!(
                answer.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(description),
                "{what}: {answer:?}"
            );
        }
    }
    // Nothing reached the origin: profile 4 is as it was and nothing was created.
    assert_eq!(env.profile_json(stack, 4).await.unwrap(), before);
    let db = stack.postgres.connect(&env.database).await.unwrap();
    let count: i64 = db
        .query_one("SELECT count(*) FROM devops_api.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 10);
    // Outside the public API no token is needed.
    assert_eq!(app.call(Method::GET, "/healthz", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_ownership_decide_each_route() {
    let idp = TestIssuer::throwaway();
    let (stack, env, _, _origin, edge) =
        stack_with_auth(10, &idp, |o| o.var("write_rate_per_min", 0)).await;
    let app = edge.app();
    let current = env.profile_json(stack, 4).await.unwrap();
    let owner_rw = idp.token("rs", &idp.claims("4", "profiles:read profiles:write"));
    let other_rw = idp.token("ed", &idp.claims("3", "profiles:read profiles:write"));
    let no_scope = idp.token("es", &idp.claims("4", "openid email"));
    let admin = idp.token("es", &idp.claims("ops-admin", "profiles:admin"));

    // Wrong scope: the owner itself, without profiles:* scopes, may do nothing.
    for (method, path, body) in routes(4, &current, &new_profile(1)) {
        let answer = app
            .with_token(&no_scope)
            .call(method.clone(), &path, body.as_ref())
            .await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert_eq!(answer.code(), "insufficient_scope");
        assert!(
            answer
                .header("www-authenticate")
                .unwrap()
                .contains("error=\"insufficient_scope\""),
            "{answer:?}"
        );
    }
    // Another subject's profile: refused, naming the admin scope; creating needs admin too.
    for (method, path, body) in routes(4, &current, &new_profile(2)) {
        let answer = app
            .with_token(&other_rw)
            .call(method.clone(), &path, body.as_ref())
            .await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert!(
            answer
                .header("www-authenticate")
                .unwrap()
                .contains("scope=\"profiles:admin\""),
            "{answer:?}"
        );
    }
    assert_eq!(env.profile_json(stack, 4).await.unwrap(), current);

    // The right subject: reads and changes its own profile, may not create one.
    let expected = [200, 403, 200, 200, 204];
    for ((method, path, body), status) in routes(4, &current, &new_profile(3))
        .into_iter()
        .zip(expected)
    {
        let answer = app
            .with_token(&owner_rw)
            .call(method.clone(), &path, body.as_ref())
            .await;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        if method == Method::GET {
            assert_eq!(answer.json(), current);
        }
    }

    // Admin: everything on anyone's profile, and create.
    let other = env.profile_json(stack, 5).await.unwrap();
    let expected = [200, 201, 200, 200, 204];
    for ((method, path, body), status) in
        routes(5, &other, &new_profile(4)).into_iter().zip(expected)
    {
        let answer = app
            .with_token(&admin)
            .call(method.clone(), &path, body.as_ref())
            .await;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        if method == Method::POST {
            assert_eq!(answer.json()["username"], "auth.test4");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_profile_is_served_only_to_callers_allowed_to_see_it() {
    let idp = TestIssuer::throwaway();
    // The TTL rule alone (no invalidation feed, which would keep the copy fresh past the TTL).
    let (_stack, _env, _, _origin, edge) =
        stack_with_auth(10, &idp, |o| o.l1_ttl_ms(300).var("feed_poll_ms", 0)).await;
    let app = edge.app();
    let alice = idp.token("rs", &idp.claims("5", "profiles:read"));
    let bob = idp.token("ed", &idp.claims("6", "profiles:read"));

    let first = app
        .with_token(&alice)
        .call(Method::GET, "/users/5", None)
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("vary"), Some("authorization"));
    // What the client check cost is on the answer, beside the tiers'.
    let timing = first.header("server-timing").unwrap();
    assert!(tier_ms(timing, "auth").is_some(), "{timing}");
    let control = first.header("cache-control").unwrap();
    assert!(control.starts_with("private, max-age="), "{control}");
    assert!(control.contains("stale-if-error="), "{control}");

    // In tier 1 now (alice's second read is an L1 hit); bob is still refused.
    let mut saw = Vec::new();
    for _ in 0..5 {
        let again = app
            .with_token(&alice)
            .call(Method::GET, "/users/5", None)
            .await;
        assert_eq!(again.status, 200);
        assert!(
            again
                .header("cache-control")
                .unwrap()
                .starts_with("private")
        );
        saw.push(again.header("x-cache").unwrap().to_string());
        let denied = app
            .with_token(&bob)
            .call(Method::GET, "/users/5", None)
            .await;
        assert_eq!(denied.status, 403, "{denied:?}");
        assert_eq!(denied.header("x-cache"), Some("BYPASS"));
        assert!(
            !denied
                .body
                .contains(&first.json()["email"].as_str().unwrap().to_string())
        );
    }
    assert!(saw.iter().any(|c| c == "L1"), "{saw:?}");

    // After the tier-1 TTL the copy comes from Redis (L2); bob is still refused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let l2 = app
        .with_token(&alice)
        .call(Method::GET, "/users/5", None)
        .await;
    assert_eq!(
        (l2.status, l2.header("x-cache")),
        (200, Some("L2")),
        "{l2:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let denied = app
        .with_token(&bob)
        .call(Method::GET, "/users/5", None)
        .await;
    assert_eq!(denied.status, 403, "{denied:?}");

    // The public projection is open to any reader; other fields are not.
    let public = app
        .with_token(&bob)
        .get("/users/5?fields=full_name,department")
        .await;
    assert_eq!(public.status, 200, "{public:?}");
    let keys: Vec<String> = public.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["id", "full_name", "department"]);
    let private = app
        .with_token(&bob)
        .get("/users/5?fields=full_name,email")
        .await;
    assert_eq!(private.status, 403, "{private:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_through_the_jwks() {
    let idp = TestIssuer::throwaway();
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let secret = generate_secret();
    let origin = env.origin_with_token(stack, &secret).await.unwrap();
    let read = |kid: &str| idp.token(kid, &idp.claims("1", "profiles:read"));

    // Before: rs and es published; tokens of both are accepted.
    let before = EdgeOptions::new(stack, &env, &origin.url(), &secret)
        .auth_jwks(&idp.jwks_of(&["rs", "es"]), &idp.issuer, &idp.audience)
        .start()
        .await
        .unwrap();
    for kid in ["rs", "es"] {
        let answer = before
            .app()
            .with_token(&read(kid))
            .call(Method::GET, "/users/1", None)
            .await;
        assert_eq!(answer.status, 200, "{kid}: {answer:?}");
    }
    assert_eq!(
        before
            .app()
            .with_token(&read("ed"))
            .call(Method::GET, "/users/1", None)
            .await
            .status,
        401
    );
    // After: rs retired, ed added.
    let after = EdgeOptions::new(stack, &env, &origin.url(), &secret)
        .auth_jwks(&idp.jwks_of(&["es", "ed"]), &idp.issuer, &idp.audience)
        .start()
        .await
        .unwrap();
    let retired = after
        .app()
        .with_token(&read("rs"))
        .call(Method::GET, "/users/1", None)
        .await;
    assert_eq!(retired.status, 401, "{retired:?}");
    assert!(retired.body.contains("not in the key set"), "{retired:?}");
    for kid in ["es", "ed"] {
        let answer = after
            .app()
            .with_token(&read(kid))
            .call(Method::GET, "/users/1", None)
            .await;
        assert_eq!(answer.status, 200, "{kid}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_records_who_changed_what() {
    let idp = TestIssuer::throwaway();
    let (stack, env, secret, origin, edge) = stack_with_auth(5, &idp, |o| o).await;
    let app = edge.app();
    let admin = idp.token("ed", &idp.claims("ops:ana", "profiles:admin"));
    let owner = idp.token("rs", &idp.claims("2", "profiles:read profiles:write"));

    let patch = json!({"department": "Security"});
    let by_admin = app
        .with_token(&admin)
        .call(Method::PATCH, "/users/1", Some(&patch))
        .await;
    assert_eq!(by_admin.status, 200, "{by_admin:?}");
    // A client's own x-aside-caller is never believed: the edge sets it from the token.
    let forged = http_client()
        .patch(format!("{}/users/2", edge.url()))
        .bearer_auth(&owner)
        .header("x-aside-caller", "mallory")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 200);
    // A direct caller of the origin, with the origin token and no caller header.
    let direct = origin
        .app()
        .with_token(&secret)
        .call(Method::DELETE, "/users/3", None)
        .await;
    assert_eq!(direct.status, 204, "{direct:?}");

    let db = stack.postgres.connect(&env.database).await.unwrap();
    // A change made straight in PostgreSQL, by the owner role.
    db.execute(
        "UPDATE devops_api.users SET department = 'Sales' WHERE id = 4",
        &[],
    )
    .await
    .unwrap();
    let actor = |id: i32, op: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT actor FROM devops_api.user_changes WHERE user_id = $1 AND op = $2 \
                 ORDER BY id DESC LIMIT 1",
                &[&id, &op],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
        }
    };
    assert_eq!(actor(1, "U").await.as_deref(), Some("ops:ana"));
    assert_eq!(actor(2, "U").await.as_deref(), Some("2"));
    // The origin's pooled connections do not carry an actor over: the setting lives as long as its
    // statement, so the direct caller's delete (after the edge's writes) is not attributed to them.
    assert_eq!(actor(3, "D").await.as_deref(), Some("origin-token"));
    let by_hand = actor(4, "U").await.unwrap();
    assert!(by_hand.starts_with("db:"), "{by_hand}");
    // The seed's inserts were made by the owner role too.
    assert!(actor(5, "I").await.unwrap().starts_with("db:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_the_per_caller_rate_get_429_with_retry_after() {
    let idp = TestIssuer::throwaway();
    let (_stack, _env, _, _origin, edge) = stack_with_auth(5, &idp, |o| {
        o.var("write_rate_per_min", 1).var("write_burst", 2)
    })
    .await;
    let app = edge.app();
    let noisy = idp.token("es", &idp.claims("1", "profiles:read profiles:write"));
    let quiet = idp.token("es", &idp.claims("2", "profiles:read profiles:write"));
    let patch = json!({"department": "Sales"});
    for _ in 0..2 {
        let ok = app
            .with_token(&noisy)
            .call(Method::PATCH, "/users/1", Some(&patch))
            .await;
        assert_eq!(ok.status, 200, "{ok:?}");
    }
    let limited = app
        .with_token(&noisy)
        .call(Method::PATCH, "/users/1", Some(&patch))
        .await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Reads are not limited, and another caller has its own budget.
    assert_eq!(
        app.with_token(&noisy)
            .call(Method::GET, "/users/1", None)
            .await
            .status,
        200
    );
    let other = app
        .with_token(&quiet)
        .call(Method::PATCH, "/users/2", Some(&patch))
        .await;
    assert_eq!(other.status, 200, "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_on_unless_turned_off_and_off_says_so() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(2).await.unwrap();
    let secret = generate_secret();
    let origin = env.origin_with_token(stack, &secret).await.unwrap();

    // Without an issuer the edge does not start (Spin: a required variable).
    let mut unconfigured = EdgeOptions::new(stack, &env, &origin.url(), &secret).var("auth", "on");
    unconfigured.config.variables.remove("auth_issuer");
    let refused = unconfigured.start().await;
    let error = format!(
        "{:#}",
        refused.expect_err("an edge without auth_issuer must not start")
    );
    assert!(error.contains("auth_issuer"), "{error}");

    // Without a JWKS or its URL the keys come from discovery, which needs an issuer that is a URL: the
    // edge answers 500 naming the variable.
    let no_keys = EdgeOptions::new(stack, &env, &origin.url(), &secret)
        .var("auth", "on")
        .var("auth_jwks", "")
        .start()
        .await
        .unwrap();
    let answer = no_keys.app().call(Method::GET, "/users/1", None).await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(answer.body.contains("auth_issuer"), "{answer:?}");

    // A JWKS with a private key is refused by the edge, naming the variable and never the key.
    let idp = TestIssuer::throwaway();
    let mut private = idp.key("ed").jwk.clone();
    private["d"] = json!("c2VjcmV0LWtleS1tYXRlcmlhbA");
    let bad = EdgeOptions::new(stack, &env, &origin.url(), &secret)
        .auth_jwks(
            &json!({"keys": [private]}).to_string(),
            &idp.issuer,
            &idp.audience,
        )
        .start()
        .await
        .unwrap();
    let answer = bad.app().call(Method::GET, "/users/1", None).await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(
        answer.body.contains("auth_jwks") && !answer.body.contains("c2VjcmV0"),
        "{answer:?}"
    );

    // Off, explicitly: open, and every answer says so.
    let open = EdgeOptions::new(stack, &env, &origin.url(), &secret)
        .start()
        .await
        .unwrap();
    for path in ["/users/1", "/healthz"] {
        let answer = open.app().call(Method::GET, path, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("x-aside-auth"), Some("off"), "{path}");
    }
}
