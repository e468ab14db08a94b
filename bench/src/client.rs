//! The project's one load client: a closed-loop HTTP/1.1 connection (hyper, keep-alive, `TCP_NODELAY`),
//! used by the bench's load generator (`aside-load`) and by the test harness's `Load` (the fault tests'
//! load). Each [`Conn`] is one client connection: it sends a request, reads the whole answer, and is
//! reopened after a failure, so N of them are N clients.
//!
//! A kept-alive connection the server closed while it sat idle is not a failed request: a request that
//! finds its connection closed before a byte of the answer came back is sent once more on a new one
//! (as HTTP clients do for idempotent requests; the load's writes are idempotent `PATCH`es of one field).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
pub use hyper::Method;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderMap};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// The connection failed while the request or its answer was on it.
    Io,
    /// No whole answer within the request's time limit.
    Timeout,
}

impl Failure {
    /// `connect`, `io` or `timeout` (the bench's error kinds).
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Connect => "cannot connect",
            Failure::Io => "the connection failed before the whole answer came",
            Failure::Timeout => "no whole answer in time",
        })
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request to send: method, path (with its query), headers and body. `host` is set by the
/// connection.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    pub body: Bytes,
}

impl Outgoing {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A request with a JSON body.
    pub fn json(method: Method, path: impl Into<String>, body: &serde_json::Value) -> Self {
        Self {
            method,
            path: path.into(),
            headers: vec![(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from(body.to_string()),
        }
    }

    /// Adds a header; a name or value that is not valid HTTP is refused.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, String> {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value = hyper::header::HeaderValue::from_str(value)
            .map_err(|e| format!("the value of header {name}: {e}"))?;
        self.headers.push((name, value));
        Ok(self)
    }
}

/// `http://host:port/path?query` split into the address to connect to and the path with its query.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// URLs can be loaded"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Ok((format!("{}:{port}", authority.host()), path))
}

/// One client connection to `host` (`address:port`), opened on first use and after a failure.
pub struct Conn {
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            sender: None,
        }
    }

    /// The address this connection goes to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends `request` and reads the whole answer within `timeout` (connecting included); on a
    /// failure the connection is dropped, and the next request opens a new one.
    pub async fn send(&mut self, request: &Outgoing, timeout: Duration) -> Result<Answer, Failure> {
        match tokio::time::timeout(timeout, self.send_once_more_if_stale(request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => {
                self.sender = None;
                Err(failure)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn send_once_more_if_stale(&mut self, request: &Outgoing) -> Result<Answer, Failure> {
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        match self.send_on_connection(request).await {
            Err(Stalled::BeforeAnswer) if reused => {
                self.sender = None;
                self.send_on_connection(request)
                    .await
                    .map_err(Stalled::failure)
            }
            other => other.map_err(Stalled::failure),
        }
    }

    async fn send_on_connection(&mut self, request: &Outgoing) -> Result<Answer, Stalled> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(connect(&self.host).await.map_err(|_| Stalled::Connect)?);
        }
        let sender = self.sender.as_mut().expect("connected");
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(request.path.as_str())
            .header(HOST, self.host.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let http_request = builder
            .body(Full::new(request.body.clone()))
            .map_err(|_| Stalled::Other)?;
        sender.ready().await.map_err(|_| Stalled::BeforeAnswer)?;
        let response = sender.send_request(http_request).await.map_err(|e| {
            // Closed under the request before an answer began (the server dropped an idle
            // keep-alive connection): safe to send again.
            if e.is_canceled() || e.is_incomplete_message() {
                Stalled::BeforeAnswer
            } else {
                Stalled::Other
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Stalled::Other)?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// How a send on one connection failed.
enum Stalled {
    Connect,
    /// Before any byte of an answer: may be sent again on a new connection.
    BeforeAnswer,
    Other,
}

impl Stalled {
    fn failure(self) -> Failure {
        match self {
            Stalled::Connect => Failure::Connect,
            Stalled::BeforeAnswer | Stalled::Other => Failure::Io,
        }
    }
}

async fn connect(host: &str) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:3000/users/7?fields=a,b").unwrap(),
            ("127.0.0.1:3000".into(), "/users/7?fields=a,b".into())
        );
        assert_eq!(
            split_url("http://127.0.0.1:3000").unwrap(),
            ("127.0.0.1:3000".into(), "/".into())
        );
        assert!(split_url("https://127.0.0.1:3000/").is_err());
        assert!(split_url("not a url").is_err());
    }

    #[test]
    fn a_bad_header_is_refused() {
        assert!(Outgoing::get("/").header("x ok", "v").is_err());
        assert!(Outgoing::get("/").header("x-ok", "line\nbreak").is_err());
        assert_eq!(
            Outgoing::get("/")
                .header("x-ok", "v")
                .unwrap()
                .headers
                .len(),
            1
        );
    }
}
