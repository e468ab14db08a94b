//! Hostile HTTP input against the origin and against the edge (under the bundled Spin-compatible host):
//! oversize and never-sent bodies, deeply nested JSON, unknown fields, huge `?fields` lists, path
//! traversal, NUL bytes, header floods, slow heads, odd methods and content types. Each gets its 4xx
//! (or, where hyper answers before any routing, its documented 431 / 400 / closed connection), and the
//! service stays healthy: `/healthz` answers 200 and a normal read works after every one. (docs/security.md)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aside_tests::harness::{EdgeOptions, Origin, Stack, TestEnv, generate_secret};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What came back on a raw connection: the status (if an answer came at all), the head and the body.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends `request` as is on a new connection (writing and reading at once, so an answer sent before the
/// request was fully written is still read) and reads until the server closes, for at most 10 s.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        // Keep the write half open: shutting it down would end the request early.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(writer);
    });
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                received.extend_from_slice(&buf[..n]);
                if complete(&received) {
                    break;
                }
            }
        }
    }
    write.abort();
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let body = if is_chunked(head) {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        head: head.to_string(),
        body,
    }
}

fn is_chunked(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    })
}

/// The data of a chunked body (`<hex size>\r\n<data>\r\n` ... `0\r\n\r\n`).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// True once a whole answer with a `content-length` or chunked body has arrived.
fn complete(received: &[u8]) -> bool {
    let text = String::from_utf8_lossy(received);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    if is_chunked(head) {
        return body.ends_with("0\r\n\r\n");
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    length.is_some_and(|n| body.len() >= n)
}

/// A request head with the given request line and extra header lines, `Connection: close`.
fn request(line: &str, token: Option<&str>, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{line}\r\nhost: localhost\r\nconnection: close\r\n");
    if let Some(token) = token {
        out.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    if !body.is_empty() {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn get(path: &str, token: &str) -> Vec<u8> {
    request(&format!("GET {path} HTTP/1.1"), Some(token), &[], b"")
}

fn json_write(method: &str, path: &str, token: &str, body: &[u8]) -> Vec<u8> {
    request(
        &format!("{method} {path} HTTP/1.1"),
        Some(token),
        &["content-type: application/json".to_string()],
        body,
    )
}

/// `n` nested arrays: `[[[...]]]`.
fn nested(n: usize) -> Vec<u8> {
    let mut v = vec![b'['; n];
    v.extend(std::iter::repeat_n(b']', n));
    v
}

/// The service answers its health check and a normal read.
async fn assert_healthy(addr: SocketAddr, token: &str, after: &str) {
    let health = raw(addr, get("/healthz", token)).await;
    assert_eq!(
        health.status,
        Some(200),
        "healthz after {after}: {health:?}"
    );
    let read = raw(addr, get("/users/1", token)).await;
    assert_eq!(read.status, Some(200), "read after {after}: {read:?}");
    assert_eq!(read.json()["id"], 1, "read after {after}: {read:?}");
}

struct Case {
    what: &'static str,
    request: Vec<u8>,
    /// Acceptable statuses; `None` in the list: the connection may be closed without an answer.
    expect: Vec<Option<u16>>,
    /// The JSON error code, when the answer is the API's JSON error.
    code: Option<&'static str>,
    /// Text the body must contain (e.g. the name of an unknown field).
    body_contains: Option<&'static str>,
}

impl Case {
    fn new(what: &'static str, request: Vec<u8>, status: u16) -> Self {
        Self {
            what,
            request,
            expect: vec![Some(status)],
            code: None,
            body_contains: None,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn mentions(mut self, text: &'static str) -> Self {
        self.body_contains = Some(text);
        self
    }

    fn or_closed(mut self) -> Self {
        self.expect.push(None);
        self
    }

    fn or(mut self, status: u16) -> Self {
        self.expect.push(Some(status));
        self
    }
}

/// Runs every case against `addr`, checking each answer and the service's health after it.
async fn run_cases(addr: SocketAddr, token: &str, cases: Vec<Case>) {
    for case in cases {
        let answer = raw(addr, case.request).await;
        assert!(
            case.expect.contains(&answer.status),
            "{}: expected {:?}, got {:?}",
            case.what,
            case.expect,
            answer
        );
        if let Some(code) = case.code
            && answer.status.is_some()
        {
            assert_eq!(answer.code(), code, "{}: {answer:?}", case.what);
            assert!(
                answer
                    .head
                    .to_ascii_lowercase()
                    .contains("content-type: application/json"),
                "{}: {answer:?}",
                case.what
            );
        }
        if let Some(text) = case.body_contains {
            assert!(answer.body.contains(text), "{}: {answer:?}", case.what);
        }
        // Never another route's data: no metrics text, no profile where none was asked for.
        assert!(
            !answer.body.contains("aside_origin_"),
            "{}: {answer:?}",
            case.what
        );
        assert_healthy(addr, token, case.what).await;
    }
}

fn profile_body(extra: &str) -> Vec<u8> {
    format!(
        r#"{{"full_name":"Ana Silva","gender":"F","birth_date":"1990-01-01","department":"Sales",
            "email":"ana.{n}@example.org","username":"ana.{n}"{extra}}}"#,
        n = generate_secret()
    )
    .into_bytes()
}

/// The abuse both the origin and the edge answer the same way (the edge answers or forwards).
fn common_cases(token: &str) -> Vec<Case> {
    let many_fields = vec!["email"; 10_000].join(",");
    let many_params = vec!["fields=id"; 5_000].join("&");
    vec![
        Case::new(
            "10,000 names in ?fields",
            get(&format!("/users/1?fields={many_fields}"), token),
            400,
        )
        .code("invalid_query"),
        Case::new(
            "5,000 fields parameters",
            get(&format!("/users/1?{many_params}"), token),
            400,
        )
        .code("invalid_query"),
        Case::new(
            "unknown field in a create",
            json_write(
                "POST",
                "/users",
                token,
                &profile_body(r#","is_admin":true"#),
            ),
            400,
        )
        .code("malformed_body")
        .mentions("is_admin"),
        Case::new(
            "unknown field in a patch",
            json_write("PATCH", "/users/2", token, br#"{"role":"admin"}"#),
            400,
        )
        .code("malformed_body")
        .mentions("role"),
        Case::new(
            "a field given twice",
            json_write(
                "PATCH",
                "/users/2",
                token,
                br#"{"department":"Sales","department":"DevOps"}"#,
            ),
            400,
        )
        .code("malformed_body"),
        Case::new(
            "8,000 nested arrays (within the body limit)",
            json_write("POST", "/users", token, &nested(8_000)),
            400,
        )
        .code("malformed_body"),
        Case::new(
            "a field value nested 5,000 deep",
            json_write(
                "PATCH",
                "/users/2",
                token,
                format!(
                    r#"{{"department":{}}}"#,
                    String::from_utf8(nested(5_000)).unwrap()
                )
                .as_bytes(),
            ),
            400,
        )
        .code("malformed_body"),
        Case::new("/users/../metrics", get("/users/../metrics", token), 404).code("not_found"),
        Case::new(
            "/users/%2e%2e/metrics",
            get("/users/%2e%2e/metrics", token),
            404,
        )
        .code("not_found"),
        Case::new("/users/%2e%2e", get("/users/%2e%2e", token), 400).code("invalid_id"),
        Case::new(
            "/users/1%2f..%2fmetrics",
            get("/users/1%2f..%2fmetrics", token),
            400,
        )
        .code("invalid_id"),
        Case::new("//users/1", get("//users/1", token), 404).code("not_found"),
        Case::new("/./users/1", get("/./users/1", token), 404).code("not_found"),
        Case::new("/users/1/../2", get("/users/1/../2", token), 404).code("not_found"),
        Case::new("/users/1%00", get("/users/1%00", token), 400).code("invalid_id"),
        Case::new(
            "a NUL byte in the request line",
            get("/users/1\0", token),
            400,
        )
        .or_closed(),
        Case::new(
            "an unknown method",
            request("BREW /users/1 HTTP/1.1", Some(token), &[], b""),
            405,
        )
        .code("method_not_allowed"),
        Case::new(
            "TRACE",
            request("TRACE /users/1 HTTP/1.1", Some(token), &[], b""),
            405,
        )
        .code("method_not_allowed"),
        Case::new(
            "DELETE on the collection",
            request("DELETE /users HTTP/1.1", Some(token), &[], b""),
            405,
        )
        .code("method_not_allowed"),
        Case::new(
            "a write as text/plain",
            request(
                "POST /users HTTP/1.1",
                Some(token),
                &["content-type: text/plain".to_string()],
                &profile_body(""),
            ),
            415,
        )
        .code("unsupported_media_type"),
        Case::new(
            "a write with no content type",
            request(
                "PATCH /users/2 HTTP/1.1",
                Some(token),
                &[],
                br#"{"department":"X"}"#,
            ),
            415,
        )
        .code("unsupported_media_type"),
        Case::new(
            "a write as application/jsonx",
            request(
                "PATCH /users/2 HTTP/1.1",
                Some(token),
                &["content-type: application/jsonx".to_string()],
                br#"{"department":"X"}"#,
            ),
            415,
        )
        .code("unsupported_media_type"),
        Case::new(
            "a body that is not UTF-8",
            json_write("PATCH", "/users/2", token, b"{\"department\":\"\xff\xfe\"}"),
            400,
        )
        .code("malformed_body"),
        Case::new(
            "a huge content-length and no body",
            request(
                "POST /users HTTP/1.1",
                Some(token),
                &[
                    "content-type: application/json".to_string(),
                    "content-length: 99999999999".to_string(),
                ],
                b"",
            ),
            413,
        )
        .code("payload_too_large"),
        Case::new(
            "two different content-lengths",
            request(
                "POST /users HTTP/1.1",
                Some(token),
                &[
                    "content-type: application/json".to_string(),
                    "content-length: 5".to_string(),
                    "content-length: 6".to_string(),
                ],
                b"",
            ),
            400,
        )
        .or_closed(),
        Case::new(
            "200 headers",
            request(
                "GET /users/1 HTTP/1.1",
                Some(token),
                &(0..200)
                    .map(|i| format!("x-flood-{i}: {i}"))
                    .collect::<Vec<_>>(),
                b"",
            ),
            431,
        )
        .or_closed(),
        Case::new(
            "one 1 MiB header",
            request(
                "GET /users/1 HTTP/1.1",
                Some(token),
                &[format!("x-huge: {}", "a".repeat(1024 * 1024))],
                b"",
            ),
            431,
        )
        .or_closed(),
        Case::new(
            "100,000 names in ?fields (a 600 kB request line)",
            get(
                &format!("/users/1?fields={}", vec!["email"; 100_000].join(",")),
                token,
            ),
            431,
        )
        .or(414)
        .or_closed(),
    ]
}

async fn origin_for(stack: &Stack, env: &TestEnv, token: &str, extra: &[(&str, &str)]) -> Origin {
    let mut options = env.origin_options(stack);
    options.tokens = vec![token.to_string()];
    for (k, v) in extra {
        options = options.env(k, v);
    }
    Origin::start(options).await.unwrap()
}

#[tokio::test]
async fn the_origin_refuses_hostile_requests_and_stays_healthy() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let token = generate_secret();
    let origin = origin_for(stack, &env, &token, &[]).await;
    let mut cases = common_cases(&token);
    cases.extend([
        Case::new(
            "a 17 kB body",
            json_write("POST", "/users", &token, &vec![b' '; 17 * 1024]),
            413,
        )
        .code("payload_too_large"),
        Case::new(
            "100,000 nested arrays (over the body limit)",
            json_write("POST", "/users", &token, &nested(100_000)),
            413,
        )
        .code("payload_too_large"),
        Case::new(
            "/metrics/../users/1",
            get("/metrics/../users/1", &token),
            404,
        )
        .code("not_found"),
        Case::new(
            "an authorization header that is not UTF-8",
            {
                let mut r = b"GET /users/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
                r.extend_from_slice(b"authorization: Bearer \xff\xfe\r\n\r\n");
                r
            },
            401,
        )
        .code("unauthorized"),
        Case::new(
            "a request without the token",
            request("GET /users/1 HTTP/1.1", None, &[], b""),
            401,
        )
        .code("unauthorized"),
    ]);
    run_cases(origin.addr, &token, cases).await;
    let log = origin.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn the_origin_parses_100k_nested_arrays_without_overflowing_its_stack() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(2).await.unwrap();
    let token = generate_secret();
    let origin = origin_for(stack, &env, &token, &[("ASIDE_MAX_BODY_BYTES", "1048576")]).await;
    let deep_object = {
        let mut v = b"{\"full_name\":".to_vec();
        for _ in 0..100_000 {
            v.extend_from_slice(b"{\"a\":");
        }
        v
    };
    run_cases(
        origin.addr,
        &token,
        vec![
            Case::new(
                "100,000 nested arrays",
                json_write("POST", "/users", &token, &nested(100_000)),
                400,
            )
            .code("malformed_body"),
            Case::new(
                "100,000 nested objects, unterminated",
                json_write("PUT", "/users/1", &token, &deep_object),
                400,
            )
            .code("malformed_body"),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_origin_limits_header_count_size_and_time_as_configured() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(2).await.unwrap();
    let token = generate_secret();
    let origin = origin_for(
        stack,
        &env,
        &token,
        &[
            ("ASIDE_MAX_HEADERS", "16"),
            ("ASIDE_MAX_HEADER_BYTES", "4096"),
            ("ASIDE_HEADER_READ_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let headers = |n: usize| (0..n).map(|i| format!("x-h{i}: v")).collect::<Vec<_>>();
    run_cases(
        origin.addr,
        &token,
        vec![
            Case::new(
                "10 extra headers (under the limit)",
                request("GET /users/1 HTTP/1.1", Some(&token), &headers(10), b""),
                200,
            ),
            Case::new(
                "20 extra headers (over the limit)",
                request("GET /users/1 HTTP/1.1", Some(&token), &headers(20), b""),
                431,
            )
            .or_closed(),
            Case::new(
                "a 3 kB header (under the limit)",
                request(
                    "GET /users/1 HTTP/1.1",
                    Some(&token),
                    &[format!("x-big: {}", "b".repeat(3000))],
                    b"",
                ),
                200,
            ),
            Case::new(
                "a 5 kB header (over the limit)",
                request(
                    "GET /users/1 HTTP/1.1",
                    Some(&token),
                    &[format!("x-big: {}", "b".repeat(5000))],
                    b"",
                ),
                431,
            )
            .or_closed(),
        ],
    )
    .await;

    // A head that never completes is cut off at the timeout, with no answer.
    let started = Instant::now();
    let slow = raw(
        origin.addr,
        b"GET /users/1 HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec(),
    )
    .await;
    assert_eq!(slow.status, None, "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the slow head was not cut off: {:?}",
        started.elapsed()
    );
    assert_healthy(origin.addr, &token, "a slow head").await;
}

#[tokio::test]
async fn the_origin_drains_in_flight_requests_on_sigterm() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(2).await.unwrap();
    let token = generate_secret();
    let mut origin = origin_for(stack, &env, &token, &[("ASIDE_TEST_FILL_DELAY_MS", "800")]).await;
    // A miss whose fill is held for 800 ms is in flight when SIGTERM arrives; it still gets its answer.
    let addr = origin.addr;
    let in_flight = tokio::spawn({
        let token = token.clone();
        async move { raw(addr, get("/users/2", &token)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    origin.terminate();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert!(
        origin.wait_exit(Duration::from_secs(10)),
        "the origin did not exit after SIGTERM:\n{}",
        origin.log()
    );
    assert!(
        origin.log().contains("aside-origin stopped"),
        "{}",
        origin.log()
    );
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_edge_answers_hostile_requests_with_4xx_and_keeps_serving() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
        .start()
        .await
        .unwrap();
    let addr: SocketAddr = edge.url().strip_prefix("http://").unwrap().parse().unwrap();
    let mut cases = common_cases(&token);
    cases.extend([
        Case::new(
            "a 300 kB body (the origin's limit)",
            json_write("POST", "/users", &token, &vec![b' '; 300 * 1024]),
            413,
        )
        .code("payload_too_large"),
        Case::new(
            "a 2 MiB body (the edge's limit)",
            json_write("POST", "/users", &token, &vec![b' '; 2 * 1024 * 1024]),
            413,
        )
        .code("payload_too_large")
        .or_closed(),
    ]);
    run_cases(addr, &token, cases).await;
    let _ = origin;
}
