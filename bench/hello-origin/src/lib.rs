//! Hello, origin: a spin-sdk 6 (WASIp3) HTTP component that forwards each `GET /users/{id}` (with its
//! query) to the origin through Spin's outbound HTTP, with the origin's bearer token, and answers the
//! origin's status and body; nothing else: no Redis, no tiers, no client authentication, no headers
//! passed on. `aside-bench --topology` runs it behind the same client→edge hop as the edge and in front
//! of the same edge→origin hop and cache-off origin as the "no cache" reads, so a miss through the edge
//! splits into what Spin's HTTP server and client and the extra hop cost (this component) and what the
//! edge adds above them.

use std::cell::RefCell;

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{FullBody, Request};

thread_local! {
    /// The origin's URL and token, read once per instance.
    static ORIGIN: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The origin's URL and bearer token from the component's variables.
async fn origin() -> Result<(String, String), String> {
    if let Some(origin) = ORIGIN.with(|o| o.borrow().clone()) {
        return Ok(origin);
    }
    let mut values = Vec::new();
    for name in ["origin_url", "origin_token"] {
        let value = spin_sdk::variables::get(name)
            .await
            .map_err(|e| format!("variable {name}: {e}"))?;
        values.push(value);
    }
    let [url, token] = &values[..] else {
        unreachable!("two names asked");
    };
    let origin = (url.trim_end_matches('/').to_string(), token.clone());
    ORIGIN.with(|o| *o.borrow_mut() = Some(origin.clone()));
    Ok(origin)
}

/// `GET {origin}{path_and_query}`: the origin's status and body.
async fn forward(path_and_query: &str) -> Result<(http::StatusCode, Bytes), String> {
    let (url, token) = origin().await?;
    let request = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("{url}{path_and_query}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(FullBody::new(Bytes::new()))
        .map_err(|e| format!("request: {e}"))?;
    let answer = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("origin: {e}"))?;
    let (parts, body) = answer.into_parts();
    let body = body
        .bytes()
        .await
        .map_err(|e| format!("origin body: {e}"))?;
    Ok((parts.status, body))
}

fn answer(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> http::Response<FullBody<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(FullBody::new(body.into()))
        .expect("a plain response is valid")
}

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_service)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> http::Response<FullBody<Bytes>> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if request.method() != http::Method::GET || !path_and_query.starts_with("/users/") {
        return answer(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /users/{id}\n",
        );
    }
    match forward(path_and_query).await {
        Ok((status, body)) => answer(status, "application/json", body),
        Err(e) => answer(
            http::StatusCode::BAD_GATEWAY,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}
