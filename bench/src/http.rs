//! The driver's own HTTP requests, outside the load generator (`aside-load`): the feed scenario's writes
//! through the origin and its polls of the edges, the overload scenario's reads of the origin's
//! `/metrics`. One blocking client (ureq), plain HTTP to `127.0.0.1`, keep-alive, 10 s per request;
//! any status is an answer (the caller decides what it means).

use std::time::Duration;

use anyhow::Context as _;

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The row version the `etag` names (`"<version>"`), if any.
    pub(crate) version: Option<i64>,
    pub(crate) body: String,
}

/// The client (cheap to clone: clones share their connections).
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `GET path` on `127.0.0.1:port`, with `bearer` as the `authorization` if given.
pub(crate) fn get(
    agent: &ureq::Agent,
    port: u16,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<Answer> {
    let mut request = agent.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.call(), port, path)
}

/// `PATCH path` on `127.0.0.1:port` with a JSON body.
pub(crate) fn patch_json(
    agent: &ureq::Agent,
    port: u16,
    path: &str,
    bearer: &str,
    body: &str,
) -> anyhow::Result<Answer> {
    let request = agent
        .patch(format!("http://127.0.0.1:{port}{path}"))
        .header("authorization", format!("Bearer {bearer}"))
        .content_type("application/json");
    answer(request.send(body), port, path)
}

/// The body of a `200` to `GET path` (no token).
pub(crate) fn get_ok(agent: &ureq::Agent, port: u16, path: &str) -> anyhow::Result<String> {
    let answer = get(agent, port, path, None)?;
    anyhow::ensure!(
        answer.status == 200,
        "GET {path} on port {port}: status {}",
        answer.status
    );
    Ok(answer.body)
}

fn answer(
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    port: u16,
    path: &str,
) -> anyhow::Result<Answer> {
    let mut response = sent.with_context(|| format!("{path} on port {port}"))?;
    let version = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| aside_shared::headers::parse_etag(v.trim()));
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("the body of {path} on port {port}"))?;
    Ok(Answer {
        status: response.status().as_u16(),
        version,
        body,
    })
}
