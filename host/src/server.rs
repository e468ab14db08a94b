//! The HTTP side: hyper accepts connections, the router picks the component, and the request is
//! queued on that component's `wasmtime_wasi_http::handler::ProxyHandler`, which reuses instances
//! the way Spin 4 does (up to N requests per instance, up to M at once, dropped when idle).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use wasmtime::Store;
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, StoreBundle};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p3::bindings::http::types::{ErrorCode, Request as WasiRequest};

use super::engine::engine;
use super::manifest::ComponentConfig;
use super::redis_tls::RedisTls;
use super::router::Router;
use super::state::InstanceState;

pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, wasmtime::Error>;

/// Instance reuse settings (Spin's `--max-instance-reuse-count`,
/// `--max-instance-concurrent-reuse-count`, `--idle-instance-timeout`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReuseConfig {
    pub max_instance_reuse_count: usize,
    pub max_instance_concurrent_reuse_count: usize,
    pub idle_instance_timeout: Duration,
}

/// The `HandlerState` of one component.
pub(crate) struct ComponentState {
    pub component: Arc<ComponentConfig>,
    pub reuse: ReuseConfig,
    /// How `spin:redis` connects with TLS.
    pub redis_tls: Arc<RedisTls>,
}

impl HandlerState for ComponentState {
    type StoreData = InstanceState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<InstanceState>> {
        Ok(StoreBundle {
            store: Store::new(
                engine(),
                InstanceState::new(self.component.clone(), self.redis_tls.clone()),
            ),
            write_profile: Box::new(|_| ()),
        })
    }

    fn request_timeout(&self) -> Duration {
        Duration::MAX
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.reuse.idle_instance_timeout
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.reuse.max_instance_reuse_count
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.reuse.max_instance_concurrent_reuse_count
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        tracing::warn!(component = %self.component.id, "instance error: {error:?}");
    }
}

/// Everything a request needs.
pub(crate) struct App {
    pub router: Router,
    /// One handler per routed component, indexed by `RouteMatch::index`.
    pub handlers: Vec<ProxyHandler<ComponentState>>,
    pub listen: SocketAddr,
}

/// Serves `listener` until `shutdown` flips (or its sender is dropped), then lets open
/// connections finish for up to 5 s.
pub(crate) async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Nagle stays on, as in Spin 4.0.2's HTTP trigger (which never sets TCP_NODELAY): the
                // host's figures then carry the same stalls (tests/tests/runtime_parity.rs checks it).
                let app = app.clone();
                let mut shutdown = shutdown.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(handle(app, req, peer).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let mut conn = pin!(conn);
                    tokio::select! {
                        res = conn.as_mut() => {
                            if let Err(e) = res {
                                tracing::debug!("connection from {peer} ended: {e}");
                            }
                        }
                        _ = shutdown.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

fn text(status: u16, body: &'static str) -> hyper::Response<ResponseBody> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("a static response is valid")
}

async fn handle(
    app: Arc<App>,
    mut req: hyper::Request<Incoming>,
    client_addr: SocketAddr,
) -> hyper::Response<ResponseBody> {
    let path = req.uri().path().to_string();
    if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
        return match well_known {
            "health" => text(200, "OK"),
            _ => text(404, ""),
        };
    }
    let Some(route) = app.router.route(&path) else {
        return text(404, "");
    };
    let handler = app.handlers[route.index].clone();

    // The guest sees an absolute URI (scheme + authority from Host), like under Spin.
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| app.listen.to_string());
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let full_url = format!("http://{host}{path_and_query}");
    match full_url.parse::<http::Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return text(400, "invalid Host header"),
    }
    let spin_headers = [
        ("spin-full-url", full_url.clone()),
        ("spin-path-info", route.path_info.clone()),
        ("spin-matched-route", route.raw_route.to_string()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", route.raw_route.to_string()),
        ("spin-component-route", route.prefix.to_string()),
        ("spin-client-addr", client_addr.to_string()),
    ];
    for (name, value) in spin_headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            req.headers_mut().insert(name, v);
        }
    }

    let (tx, rx) = oneshot::channel::<hyper::Response<ResponseBody>>();
    handler.spawn(
        None,
        Box::new(move |store, proxy| {
            Box::pin(async move {
                let Proxy::P3(proxy) = proxy else {
                    tracing::error!("only wasi:http@0.3 components are supported");
                    return;
                };
                let result: wasmtime::Result<()> = async {
                    let (parts, body) = req.into_parts();
                    let body = body.map_err(ErrorCode::from_hyper_request_error);
                    let req = http::Request::from_parts(parts, body);
                    let (request, request_io_result) = WasiRequest::from_http(req);
                    let res = proxy.handle(store, request).await??;
                    let res =
                        store.with(|mut store| res.into_http(&mut store, request_io_result))?;
                    // Keep the instance's event loop alive until hyper has read the whole body.
                    let (body_done_tx, body_done_rx) = oneshot::channel::<()>();
                    let res = res.map(|body| {
                        NotifyOnDrop {
                            body: body.map_err(wasmtime::Error::from),
                            _tx: body_done_tx,
                        }
                        .boxed_unsync()
                    });
                    if tx.send(res).is_ok() {
                        let _ = body_done_rx.await;
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    tracing::error!("component error handling request: {e:?}");
                }
            })
        }),
    );
    match rx.await {
        Ok(res) => res,
        Err(_) => text(500, "Internal Server Error"),
    }
}

/// Forwards a body and drops `_tx` once hyper is done with it.
struct NotifyOnDrop<B> {
    body: B,
    _tx: oneshot::Sender<()>,
}

impl<B: Body + Unpin> Body for NotifyOnDrop<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
