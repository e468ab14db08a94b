//! The origin's OpenAPI document against the service it describes. Schemathesis, a property-based API
//! tester (pinned in `xtask::prereq::API_TESTER`, installed from PyPI on first use), reads the document,
//! generates requests from it (valid ones, and invalid ones that break one rule of it) and checks every
//! answer: valid requests are accepted, invalid ones refused with a 4xx, every status, content type,
//! header and body is one the document gives for that operation. Against a real origin (real PostgreSQL
//! and Redis) and a real edge (under `spin up` when Spin is found, which serves the same `/users` API);
//! and, so that the test can fail, against documents loosened on purpose, each of which must be caught.
//!
//! A red run prints Schemathesis's own report: which operation, which check, the request (as `curl`)
//! and the answer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use aside_tests::harness::{
    EdgeOptions, Origin, Stack, TestEnv, TestIssuer, generate_secret, temp_dir, workspace_root,
};
use serde_json::{Value, json};

/// The checks run on every answer (Schemathesis 4's names).
const CHECKS: &[&str] = &[
    // No 5xx to any request.
    "not_a_server_error",
    // The status is one the operation documents.
    "status_code_conformance",
    // The content type is the one documented for that status.
    "content_type_conformance",
    // The body matches the schema documented for that status and content type.
    "response_schema_conformance",
    // Documented response headers are present and match their schemas.
    "response_headers_conformance",
    // A request the document allows is not refused (no 400 or 422 to a valid body, id or `?fields`).
    "positive_data_acceptance",
    // A request the document forbids is refused with a 4xx.
    "negative_data_rejection",
    // A missing required header (the bearer token) is refused.
    "missing_required_header",
    // A request without the bearer token is refused (the operations document a security scheme).
    "ignored_auth",
    // A method a path does not list gets 405, with an `allow` header naming the ones it does.
    "unsupported_method",
    "allow_header_conformance",
    // Stateful: a deleted user is gone; a created one can be read.
    "use_after_free",
    "ensure_resource_availability",
];

/// The run's settings that the command line cannot give: the bearer token, read from the environment
/// (never on a command line, never in a file); no example database (each run starts from the seed
/// alone, so a run is reproducible); short stateful scenarios (create, then read, change or delete).
const CONFIG: &str = r#"
[generation]
database = "none"

[phases.stateful]
max-steps = 4

[phases.stateful.generation]
max-examples = 5
"#;

/// With a token: every request carries it.
const WITH_TOKEN: &str = r#"
[headers]
Authorization = "Bearer ${ASIDE_CONFORMANCE_TOKEN}"
"#;

/// Without a token, at the edge: every request, valid or not, must be answered 401 (the edge refuses
/// before it looks at the request), and that 401 must be one the operation documents.
const EVERY_ANSWER_401: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["401"]

[checks.negative_data_rejection]
expected-statuses = ["401"]
"#;

/// Test cases per operation and phase: enough to cover every documented status (and to find a
/// `?fields` list longer than the document's `maxItems` being accepted, which 10 did not), small
/// enough to keep a run to seconds.
const MAX_EXAMPLES: &str = "30";

/// The `bin/` of the pinned Schemathesis venv, installed (from PyPI) on first use.
fn api_tester() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        xtask::prereq::api_tester(&workspace_root().join("target"))
            .expect("the API tester (PyPI: schemathesis)")
    })
}

/// One Schemathesis run: what it printed and its JSON report.
struct Run {
    exit_code: Option<i32>,
    output: String,
    report: Value,
}

impl Run {
    /// Panics, with Schemathesis's report, unless the run found nothing, warned of nothing, and had
    /// requests to every `/users` operation accepted (so their success answers were checked too).
    fn assert_clean(&self, what: &str) {
        let warnings: Vec<(&String, &Value)> = self.report["warnings"]
            .as_object()
            .map(|w| {
                w.iter()
                    .filter(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            self.exit_code == Some(0)
                && self.report["exit_code"] == json!(0)
                && self.report["complete"] == json!(true)
                && self.failures().is_empty()
                && self.report["errors"].as_array().is_some_and(Vec::is_empty)
                && warnings.is_empty(),
            "{what}: Schemathesis (exit status {:?}) found the service and its document disagreeing \
             ({:?}; warnings: {warnings:?}):\n{}",
            self.exit_code,
            self.failures(),
            self.output
        );
        for operation in USER_OPERATIONS {
            assert!(
                self.accepted(operation) > 0,
                "{what}: no request to {operation} was accepted, so its success answers went \
                 unchecked:\n{}",
                self.output
            );
        }
    }

    /// Panics unless the run found nothing (with [`EVERY_ANSWER_401`]: every answer, to valid and
    /// invalid requests alike, was a documented 401) and Schemathesis saw every `/users` operation
    /// answer nothing but 401/403 (its `missing_auth` warning names each).
    fn assert_all_refused(&self, what: &str) {
        assert!(
            self.exit_code == Some(0)
                && self.report["complete"] == json!(true)
                && self.failures().is_empty()
                && self.report["errors"].as_array().is_some_and(Vec::is_empty),
            "{what}: Schemathesis (exit status {:?}) found answers other than the documented 401 \
             ({:?}):\n{}",
            self.exit_code,
            self.failures(),
            self.output
        );
        let refused = &self.report["warnings"]["missing_auth"];
        for operation in USER_OPERATIONS {
            assert!(
                refused
                    .as_array()
                    .is_some_and(|ops| ops.contains(&json!(operation))),
                "{what}: {operation} was not seen answering 401 alone ({refused}):\n{}",
                self.output
            );
        }
    }

    /// `(code, operation)` of every failure found (`ST108`, `GET /users/{id}`, say).
    fn failures(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for failure in self.report["failures"].as_array().into_iter().flatten() {
            let code = failure["code"].as_str().unwrap_or("?").to_string();
            for operation in failure["operations"].as_array().into_iter().flatten() {
                found.push((code.clone(), operation.as_str().unwrap_or("?").to_string()));
            }
        }
        found
    }

    /// How many of `operation`'s generated requests were accepted (2xx) over every phase: proof
    /// that its success answers were checked, not only its errors.
    fn accepted(&self, operation: &str) -> u64 {
        self.report["valid_rates"][operation]
            .as_object()
            .into_iter()
            .flat_map(|phases| phases.values())
            .filter_map(|phase| phase["accepted"].as_u64())
            .sum()
    }
}

/// Runs `st run <document> --url <base_url>` with [`CHECKS`] and [`CONFIG`], `token` as the bearer
/// token (none when empty: [`EVERY_ANSWER_401`] then, and no check that needs a token to pass), a fixed
/// seed and `args`, in a temporary folder of its own (where it keeps its caches).
fn schemathesis(document: &str, base_url: &str, token: &str, args: &[&str]) -> Run {
    let dir = temp_dir("aside-schemathesis");
    let config = dir.join("schemathesis.toml");
    let (extra, checks) = if token.is_empty() {
        let without_token: Vec<&str> = CHECKS
            .iter()
            .copied()
            // 405 to a method not listed, and resources created then read: both need a token first.
            .filter(|c| {
                !matches!(
                    *c,
                    "unsupported_method"
                        | "allow_header_conformance"
                        | "use_after_free"
                        | "ensure_resource_availability"
                        | "ignored_auth"
                )
            })
            .collect();
        (EVERY_ANSWER_401, without_token.join(","))
    } else {
        (WITH_TOKEN, CHECKS.join(","))
    };
    std::fs::write(&config, format!("{CONFIG}{extra}")).unwrap();
    let report = dir.join("report.json");
    let output = Command::new(api_tester().join("st"))
        .arg("--config-file")
        .arg(&config)
        .args(["run", document, "--url", base_url])
        .args(["--checks", &checks])
        .args([
            "--seed",
            "1",
            "--max-examples",
            MAX_EXAMPLES,
            "--workers",
            "1",
        ])
        .args(["--no-color", "--report", "json", "--report-json-path"])
        .arg(&report)
        .args(args)
        .env("ASIDE_CONFORMANCE_TOKEN", token)
        .current_dir(&dir)
        .output()
        .expect("run schemathesis's `st`");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("Schemathesis wrote no JSON report:\n{printed}"));
    println!(
        "schemathesis {document} at {base_url}: {} test cases in {:.1} s",
        report["test_cases"]["generated"],
        report["running_time"].as_f64().unwrap_or(0.0)
    );
    Run {
        exit_code: output.status.code(),
        output: printed,
        report,
    }
}

/// [`schemathesis`] off the test's runtime threads.
async fn schemathesis_async(
    document: String,
    base_url: String,
    token: String,
    args: &[&str],
) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        schemathesis(&document, &base_url, &token, &args)
    })
    .await
    .unwrap()
}

/// A seeded env and an origin that takes only the returned bearer token.
async fn origin() -> (&'static Stack, TestEnv, Origin, String) {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    // The documented example id (7) is one of these: the examples phase reads a real profile.
    env.seed(20).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    (stack, env, origin, token)
}

/// The origin's document, as it serves it.
async fn served_document(origin: &Origin) -> Value {
    let response = reqwest::get(format!("{}/openapi.json", origin.url()))
        .await
        .expect("GET /openapi.json");
    assert_eq!(response.status(), 200);
    response.json().await.expect("the document is JSON")
}

/// Writes `document` to a temporary file; its path.
fn document_file(document: &Value) -> String {
    let path = temp_dir("aside-openapi").join("openapi.json");
    std::fs::write(&path, document.to_string()).unwrap();
    path.display().to_string()
}

/// The `/users` operations: what the edge serves (or passes to the origin) and its clients use.
const USER_OPERATIONS: [&str; 5] = [
    "POST /users",
    "GET /users/{id}",
    "PUT /users/{id}",
    "PATCH /users/{id}",
    "DELETE /users/{id}",
];

#[tokio::test]
async fn the_origin_answers_as_its_document_says() {
    let (_stack, _env, origin, token) = origin().await;
    let run = schemathesis_async(
        format!("{}/openapi.json", origin.url()),
        origin.url(),
        token,
        &[],
    )
    .await;
    run.assert_clean("origin");
}

/// An edge with client authentication (a test issuer's static keys) in front of `origin`; the
/// per-caller write limit off unless `write_rate_per_min` is given.
async fn edge(
    stack: &'static Stack,
    env: &TestEnv,
    origin: &Origin,
    origin_token: &str,
    issuer: &TestIssuer,
) -> aside_tests::harness::Edge {
    EdgeOptions::new(stack, env, &origin.url(), origin_token)
        .auth(issuer)
        // Schemathesis writes far faster than the default 60 a minute; the 429 is documented (and
        // checked by the document test in aside-shared), but a run hitting it would not reach the
        // writes' success answers.
        .var("write_rate_per_min", 0)
        // Tier 1 off: Spin runs several instances, each with its own tier 1, and with the invalidation
        // feed off (the default) an instance that kept a profile it created answers it for up to
        // `l1_ttl_ms` after another instance deleted it (docs/architecture.md). Schemathesis's stateful
        // phase reads right after a delete (ST301); the API contract is what is checked here.
        .var("l1_max_entries", 0)
        .start()
        .await
        .unwrap()
}

/// The edge's own document, as it serves it to its clients (no token needed).
async fn edge_document(edge_url: &str) -> Value {
    let response = reqwest::get(format!("{edge_url}/openapi.json"))
        .await
        .expect("GET /openapi.json at the edge");
    assert_eq!(response.status(), 200);
    response.json().await.expect("the edge's document is JSON")
}

/// The edge under its own document (real Spin when found): every `/users` operation, reads from the
/// edge's tiers and writes passed to the origin. With a token that has every scope, everything must
/// conform as at the origin; without a token, every request to every operation must get the 401 its
/// operation documents.
#[tokio::test]
async fn the_edge_answers_as_its_document_says() {
    let (stack, env, origin, origin_token) = origin().await;
    let issuer = TestIssuer::throwaway();
    let edge = edge(stack, &env, &origin, &origin_token, &issuer).await;
    let served = edge_document(&edge.url()).await;
    // The client's scheme and scopes, none of the origin's tokens or operational routes.
    let schemes = served["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(
        schemes.keys().collect::<Vec<_>>(),
        ["client_jwt"],
        "{schemes:?}"
    );
    assert_eq!(schemes["client_jwt"]["bearerFormat"], "JWT");
    assert_eq!(
        served["paths"]["/users"]["post"]["security"],
        json!([{"client_jwt": ["profiles:admin"]}])
    );
    for path in [
        "/readyz",
        "/metrics",
        "/openapi/edge.json",
        "/admin/cache/stats",
    ] {
        assert!(served["paths"][path].is_null(), "{path} is the origin's");
    }
    let client_token = issuer.token(
        "es",
        &issuer.claims("1", "profiles:read profiles:write profiles:admin"),
    );
    let document = format!("{}/openapi.json", edge.url());
    let only_users: &[&str] = &["--include-path-regex", "^/users"];
    let (with_token, without_token) = futures::future::join(
        schemathesis_async(document.clone(), edge.url(), client_token, only_users),
        schemathesis_async(document, edge.url(), String::new(), only_users),
    )
    .await;
    with_token.assert_clean("edge, with a token");
    without_token.assert_all_refused("edge, without a token");
}

/// Each loosening of the served document (what the issue found the document once said) must be caught
/// against the same real origin: a limit dropped makes Schemathesis send valid-looking requests the
/// origin refuses (ST202); a projection documented as the whole profile makes `?fields` answers break
/// their schema (ST108). Each run is one operation and the one phase that finds its failure first (the
/// documented examples, the boundary cases of coverage, or random fuzzing), to keep the test short.
#[tokio::test]
async fn a_loosened_document_is_caught() {
    let (_stack, _env, origin, token) = origin().await;
    let served = served_document(&origin).await;
    let loosen = |edit: &dyn Fn(&mut Value)| {
        let mut document = served.clone();
        edit(&mut document["components"]["schemas"]);
        document_file(&document)
    };
    let cases = [
        (
            "birth dates without their bounds",
            loosen(&|s| {
                s["BirthDate"].as_object_mut().unwrap().remove("pattern");
            }),
            &["--include-method", "POST", "--phases", "fuzzing"][..],
            ("ST202", "POST /users"),
        ),
        (
            "?fields names as free strings",
            loosen(&|s| {
                s["FieldSelection"]["items"]
                    .as_object_mut()
                    .unwrap()
                    .remove("enum");
            }),
            &[
                "--include-path",
                "/users/{id}",
                "--include-method",
                "GET",
                "--phases",
                "coverage",
            ][..],
            ("ST202", "GET /users/{id}"),
        ),
        (
            "a projection documented with every field required",
            loosen(&|s| {
                s["ProfileProjection"]["required"] = s["UserProfile"]["required"].clone();
            }),
            &[
                "--include-path",
                "/users/{id}",
                "--include-method",
                "GET",
                "--phases",
                "examples",
            ][..],
            ("ST108", "GET /users/{id}"),
        ),
    ];
    let runs = futures::future::join_all(cases.iter().map(|(_, document, args, _)| {
        let (document, url, token) = (document.clone(), origin.url(), token.clone());
        async move { schemathesis_async(document, url, token, args).await }
    }))
    .await;
    for ((what, _, _, (code, operation)), run) in cases.iter().zip(runs) {
        let expected = (code.to_string(), operation.to_string());
        assert!(
            run.exit_code == Some(1) && run.failures().contains(&expected),
            "{what}: expected Schemathesis to report {expected:?}, got exit status {:?} and {:?}:\n{}",
            run.exit_code,
            run.failures(),
            run.output
        );
    }
}

/// Each loosening of the edge's document must be caught against the same real edge: a GET documented
/// without its 401 (a client without a token gets an answer its document does not list: ST103), and
/// without its 403 (a read-only caller reading another's whole profile is refused with an undocumented
/// status: ST103).
#[tokio::test]
async fn a_loosened_edge_document_is_caught() {
    let (stack, env, origin, origin_token) = origin().await;
    let issuer = TestIssuer::throwaway();
    let edge = edge(stack, &env, &origin, &origin_token, &issuer).await;
    let served = edge_document(&edge.url()).await;
    let without = |status: &str| {
        let mut document = served.clone();
        document["paths"]["/users/{id}"]["get"]["responses"]
            .as_object_mut()
            .unwrap()
            .remove(status)
            .unwrap_or_else(|| panic!("the edge's GET documents {status}"));
        document_file(&document)
    };
    let read_only = issuer.token("es", &issuer.claims("1", "profiles:read"));
    let get: &[&str] = &[
        "--include-path",
        "/users/{id}",
        "--include-method",
        "GET",
        "--phases",
        "examples,coverage,fuzzing",
    ];
    let cases = [
        ("GET without its 401", without("401"), String::new()),
        ("GET without its 403", without("403"), read_only),
    ];
    let runs = futures::future::join_all(cases.iter().map(|(_, document, token)| {
        let (document, url, token) = (document.clone(), edge.url(), token.clone());
        async move { schemathesis_async(document, url, token, get).await }
    }))
    .await;
    for ((what, _, _), run) in cases.iter().zip(runs) {
        let expected = ("ST103".to_string(), "GET /users/{id}".to_string());
        assert!(
            run.exit_code == Some(1) && run.failures().contains(&expected),
            "{what}: expected Schemathesis to report {expected:?}, got exit status {:?} and {:?}:\n{}",
            run.exit_code,
            run.failures(),
            run.output
        );
    }
}
