//! The origin client: one outbound HTTP request (`wasi:http` p3 through `spin_sdk::http::send`).
//!
//! The edge authenticates as itself (`authorization: Bearer {origin_token}`); a client's own
//! `authorization` is never passed on. The whole exchange, answer body included, is bounded by
//! `origin_timeout_ms`, so a slow origin costs a request at most that long and then a 503.

use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION, RETRY_AFTER,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use spin_sdk::http::FullBody;
use spin_sdk::http::body::IncomingBodyExt;

use crate::clock;
use crate::config::Config;

/// The origin's headers the edge passes back to the client; the edge sets its own `x-cache`,
/// `server-timing` and `x-edge-instance`, and the transport headers are the host's business. `etag` is
/// the row version of a profile answer (and of a deleted row on a `DELETE`'s 204).
pub const PASSED_BACK: [HeaderName; 5] = [CONTENT_TYPE, LOCATION, RETRY_AFTER, ALLOW, ETAG];

/// A complete answer from the origin.
#[derive(Debug, Clone)]
pub struct OriginAnswer {
    pub status: StatusCode,
    /// Only the [`PASSED_BACK`] headers.
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl OriginAnswer {
    /// The row version the origin's `etag` says, if it sent one aside writes.
    pub fn version(&self) -> Option<i64> {
        self.headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(aside_shared::headers::parse_etag)
    }
}

/// Why there is no answer: the caller answers 503 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Connection refused, reset, DNS, TLS, a broken body, ...
    Unreachable,
    TimedOut,
}

/// `{origin_url}{path}{?query}`. `origin_url` has no trailing slash (see `config`), and an HTTP
/// request's path and query always start with `/`.
pub fn origin_uri(origin_url: &str, path_and_query: &str) -> String {
    if path_and_query.starts_with('/') {
        format!("{origin_url}{path_and_query}")
    } else {
        format!("{origin_url}/{path_and_query}")
    }
}

/// Sends `method path_and_query` with `body` to the origin and reads the whole answer.
pub async fn send(
    config: &Config,
    method: Method,
    path_and_query: &str,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Result<OriginAnswer, Unavailable> {
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(origin_uri(&config.origin_url, path_and_query))
        .header(AUTHORIZATION, format!("Bearer {}", config.origin_token));
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    // The body is sent as a stream of known length: saying so spares the origin a chunked body (and
    // lets it check its limit first). GET and HEAD without a body carry no length, as usual.
    if !body.is_empty() || !matches!(method, Method::GET | Method::HEAD) {
        request = request.header(CONTENT_LENGTH, body.len());
    }
    let request = match request.body(FullBody::new(body)) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("aside-edge: cannot build the origin request: {e}");
            return Err(Unavailable::Unreachable);
        }
    };

    let exchange = async {
        let answer = spin_sdk::http::send(request).await?;
        let (parts, body) = answer.into_parts();
        let body = body.bytes().await?;
        let mut headers = HeaderMap::new();
        for name in PASSED_BACK {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Ok::<_, spin_sdk::wasip3::http::types::ErrorCode>(OriginAnswer {
            status: parts.status,
            headers,
            body,
        })
    };
    match clock::within(config.origin_timeout, exchange).await {
        Some(Ok(answer)) => Ok(answer),
        Some(Err(e)) => {
            eprintln!(
                "aside-edge: origin request failed: {}",
                config.scrub(&e.to_string())
            );
            Err(Unavailable::Unreachable)
        }
        None => {
            eprintln!(
                "aside-edge: origin took longer than {} ms",
                config.origin_timeout.as_millis()
            );
            Err(Unavailable::TimedOut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_url_is_base_then_path_and_query() {
        assert_eq!(
            origin_uri("http://127.0.0.1:8080", "/users/1?fields=email"),
            "http://127.0.0.1:8080/users/1?fields=email"
        );
        assert_eq!(
            origin_uri("https://o.internal", "/users"),
            "https://o.internal/users"
        );
        assert_eq!(origin_uri("http://o", "metrics"), "http://o/metrics");
    }

    #[test]
    fn the_origin_uri_is_a_valid_http_uri() {
        let uri: http::Uri = origin_uri("http://[::1]:8080", "/users/7?fields=gender,email")
            .parse()
            .unwrap();
        assert_eq!(uri.path(), "/users/7");
        assert_eq!(uri.query(), Some("fields=gender,email"));
        assert_eq!(uri.port_u16(), Some(8080));
    }
}
