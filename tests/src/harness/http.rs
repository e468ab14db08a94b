//! Talking to a running origin or edge as a client does: a [`TestApp`] (its base URL, one HTTP client,
//! and the bearer token it sends, if any) and the [`Answer`] each request gets. Every test file sends
//! its requests through these, so what a request carries and what an answer offers is said once.
//!
//! ```ignore
//! let app = origin.app().with_token(&token);
//! let answer = app.patch("/users/3", &json!({ "department": "Security" })).await;
//! assert_eq!((answer.status, answer.code()), (422, "validation_failed"), "{answer:?}");
//! let anonymous = app.without_token().get("/users/3").await;
//! ```

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// How long a test waits for an answer before the request fails: far above what a healthy local
/// request takes, and above the edge's 2 s budget.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The tests' HTTP client: a [`REQUEST_TIMEOUT`] per request.
pub fn http_client() -> reqwest::Client {
    http_client_with_timeout(REQUEST_TIMEOUT)
}

/// An HTTP client whose requests fail after `timeout`.
pub fn http_client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

/// A running service as a test's client sees it: its base URL (`http://127.0.0.1:port`), a client,
/// and the bearer token sent with every request (none unless [`TestApp::with_token`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct TestApp {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl TestApp {
    /// The service at `base` (no trailing `/`), with the [`http_client`] and no token.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: http_client(),
            token: None,
        }
    }

    /// The same service, sending `token` as `authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        self.with_optional_token(Some(token))
    }

    /// The same service, sending `token` when there is one and no `authorization` otherwise.
    pub fn with_optional_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// The same service, without a token.
    pub fn without_token(&self) -> Self {
        self.with_optional_token(None)
    }

    /// The same service, with requests that fail after `timeout` instead of [`REQUEST_TIMEOUT`].
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            client: http_client_with_timeout(timeout),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `path` (starting with `/`) on this service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The client, for requests the helpers below do not make (another host, streaming, ...).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request for `path`, with the token if there is one; add headers or a body, then
    /// [`Answer::of`] it.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `method path`, with `body` as JSON (`content-type: application/json`) when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        Answer::of(with_json(self.request(method, path), body)).await
    }

    /// `method path` with `body` exactly as given (possibly not JSON, possibly empty: then none) and
    /// `content-type` when given.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut request = self.request(method, path);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if !body.is_empty() {
            request = request.body(body.to_string());
        }
        Answer::of(request).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }
}

/// `method url` (a whole URL: [`TestApp::call`] when there is an app), with `body` as JSON when given,
/// on a new [`http_client`] without a token.
pub async fn call_url(method: Method, url: &str, body: Option<&Value>) -> Answer {
    Answer::of(with_json(http_client().request(method, url), body)).await
}

/// `GET url` (a whole URL) on a new [`http_client`].
pub async fn get_url(url: &str) -> Answer {
    call_url(Method::GET, url, None).await
}

/// `GET url`, as the origin's read tests compare answers: (status, `x-cache`, the body as JSON or
/// `Null`).
pub async fn read_url(url: &str) -> (u16, Option<String>, Value) {
    let answer = get_url(url).await;
    let x_cache = answer.header("x-cache").map(str::to_string);
    (answer.status, x_cache, answer.parsed.unwrap_or(Value::Null))
}

fn with_json(request: reqwest::RequestBuilder, body: Option<&Value>) -> reqwest::RequestBuilder {
    match body {
        Some(body) => request.json(body),
        None => request,
    }
}

/// One answer: its status, headers and body (kept as text; [`Answer::json`] parses it).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The body as JSON, if it is JSON.
    parsed: Option<Value>,
}

impl Answer {
    /// Sends `request` and reads the whole answer; panics if there is none (a test's requests are
    /// answered: a missing answer is a failure, with the client's error).
    pub async fn of(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        let parsed = serde_json::from_str(&body).ok();
        Answer {
            status,
            headers,
            body,
            parsed,
        }
    }

    /// The header `name`, if present (panics if it is not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("a header of visible ASCII"))
    }

    /// The body as JSON; panics if it is not JSON.
    pub fn json(&self) -> Value {
        self.parsed
            .clone()
            .unwrap_or_else(|| panic!("not JSON: {self:?}"))
    }

    /// The `error.code` of an error body (`""` if it is not one).
    pub fn code(&self) -> &str {
        self.error_field("code")
    }

    /// The `error.message` of an error body (`""` if it is not one).
    pub fn message(&self) -> &str {
        self.error_field("message")
    }

    fn error_field(&self, field: &str) -> &str {
        self.parsed
            .as_ref()
            .and_then(|body| body["error"][field].as_str())
            .unwrap_or("")
    }

    /// `x-cache` (`L1`, `L2`, `MISS`, `STALE`, `BYPASS`, `HIT`), or `"<none>"`.
    pub fn cache(&self) -> &str {
        self.header("x-cache").unwrap_or("<none>")
    }

    /// The row version in `etag` (`"<version>"`); panics if there is none.
    pub fn version(&self) -> i64 {
        let etag = self
            .header("etag")
            .unwrap_or_else(|| panic!("no etag on {self:?}"));
        aside_shared::headers::parse_etag(etag)
            .unwrap_or_else(|| panic!("etag {etag:?} is not a quoted version"))
    }

    /// The `x-edge-instance` that answered, or `"<none>"`.
    pub fn instance(&self) -> &str {
        self.header("x-edge-instance").unwrap_or("<none>")
    }

    /// How long `server-timing` says tier `name` (`l1`, `l2`, `origin`) took, if it was visited.
    pub fn tier_ms(&self, name: &str) -> Option<f64> {
        tier_ms(self.header("server-timing")?, name)
    }

    /// Every edge answer says where it came from (`x-cache`), what each tier cost (`server-timing`)
    /// and which instance answered (`x-edge-instance`, 16 hex digits).
    pub fn assert_edge_tagged(&self) {
        assert!(
            matches!(
                self.header("x-cache"),
                Some("L1" | "L2" | "MISS" | "STALE" | "BYPASS")
            ),
            "x-cache {:?} on {self:?}",
            self.header("x-cache")
        );
        let timing = self
            .header("server-timing")
            .unwrap_or_else(|| panic!("no server-timing on {self:?}"));
        assert!(
            timing.split(", ").all(|m| m.contains(";dur=")),
            "server-timing {timing:?}"
        );
        let instance = self.instance();
        assert!(
            instance.len() == 16 && instance.bytes().all(|b| b.is_ascii_hexdigit()),
            "x-edge-instance {instance:?} on {self:?}"
        );
    }
}

/// The duration a `server-timing` value (`l1;dur=0.1, l2;dur=1.2, origin;dur=9.8;desc="miss"`) gives
/// tier `name`, if it lists it.
pub fn tier_ms(server_timing: &str, name: &str) -> Option<f64> {
    server_timing.split(", ").find_map(|metric| {
        metric
            .strip_prefix(name)?
            .strip_prefix(";dur=")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

/// The `desc` a `server-timing` value gives tier `name` (`origin;dur=9.8;desc="miss"`: `miss`), if any.
pub fn tier_desc<'a>(server_timing: &'a str, name: &str) -> Option<&'a str> {
    server_timing.split(", ").find_map(|metric| {
        let rest = metric.strip_prefix(name)?.strip_prefix(";dur=")?;
        let desc = rest.split_once(";desc=\"")?.1;
        desc.strip_suffix('"')
    })
}
