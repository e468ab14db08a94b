//! The HTTP/1.1 server loop: hyper's connection builder with the limits `axum::serve` does not expose.
//!
//! * `max_headers` (`ASIDE_MAX_HEADERS`): a request with more header fields is answered
//!   `431 Request Header Fields Too Large` by hyper, which then closes the connection;
//! * `max_header_bytes` (`ASIDE_MAX_HEADER_BYTES`): the request line plus headers; beyond it, 431 and
//!   the connection is closed, whether the excess is one huge header, many small ones or a long URI;
//! * `header_read_timeout` (`ASIDE_HEADER_READ_TIMEOUT_MS`): a client that has not sent a complete head
//!   within it (a slow-loris, or an idle keep-alive connection) is disconnected without an answer.
//!
//! Bodies are limited per request by the router (`ASIDE_MAX_BODY_BYTES`, 413), and every request by the
//! end-to-end timeout (`ASIDE_REQUEST_TIMEOUT_MS`, 503). Those answers carry the API's JSON error body;
//! hyper's 431 and 400 (an unparsable request line) are bare, since they happen before any routing.
//!
//! HTTP/1.1 only: the origin's callers (the edge, operators, health checks) speak it, and h2c would
//! bring a second set of limits to keep in step.
//!
//! Shutdown: when `shutdown` resolves, the listener is closed at once, idle connections are closed,
//! requests in flight finish (each within the request timeout), and `serve` returns once they have, or
//! after `shutdown_grace` at the latest.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Per-connection limits (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// The longest shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module documentation).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Per-connection failures (the peer reset before accept) need nothing; running out
                    // of file descriptors does: wait a little instead of spinning on accept.
                    if !is_connection_error(&e) {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Malformed requests, header floods, timeouts, resets: the client's problem, not ours.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "requests still open at the end of the shutdown grace period were cut"
        );
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
