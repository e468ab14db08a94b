//! Per-instance store data and the outbound HTTP hooks that enforce `allowed_outbound_hosts`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use super::allowed::redact_url;
use super::manifest::ComponentConfig;
use super::redis_tls::RedisTls;

/// The data of one `Store`, i.e. of one (possibly reused) component instance.
pub struct InstanceState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: OutboundHooks,
    pub(crate) component: Arc<ComponentConfig>,
    /// How `spin:redis` connects with TLS (shared by every instance of the application).
    pub(crate) redis_tls: Arc<RedisTls>,
}

impl InstanceState {
    pub(crate) fn new(component: Arc<ComponentConfig>, redis_tls: Arc<RedisTls>) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &component.environment {
            wasi.env(k, v);
        }
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                component: component.clone(),
            },
            component,
            redis_tls,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::p3::WasiHttpView for InstanceState {
    fn http(&mut self) -> wasmtime_wasi_http::p3::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p3::WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl wasmtime_wasi_http::p2::WasiHttpView for InstanceState {
    fn http(&mut self) -> wasmtime_wasi_http::p2::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p2::WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Outbound HTTP hooks: refuse hosts outside `allowed_outbound_hosts`.
pub struct OutboundHooks {
    component: Arc<ComponentConfig>,
}

impl OutboundHooks {
    fn check(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let Some(host) = uri.host() else {
            tracing::warn!(
                component = %self.component.id,
                "outbound HTTP request without a host refused (relative requests are not supported)"
            );
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let allowed = self
            .component
            .allowed_hosts
            .allows_parts(scheme, host, uri.port_u16());
        if !allowed {
            tracing::warn!(
                component = %self.component.id,
                url = %redact_url(&uri.to_string(), scheme),
                "outbound HTTP request refused: destination is not in allowed_outbound_hosts"
            );
        }
        allowed
    }
}

type P3SendResult = wasmtime::Result<
    (
        http::Response<UnsyncBoxBody<Bytes, ErrorCode>>,
        Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ),
    wasmtime_wasi::TrappableError<ErrorCode>,
>;

impl wasmtime_wasi_http::p3::WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<UnsyncBoxBody<Bytes, ErrorCode>>,
        options: Option<wasmtime_wasi_http::p3::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> Box<dyn Future<Output = P3SendResult> + Send> {
        let allowed = self.check(request.uri());
        // The guest's response-consumption result is not needed.
        drop(fut);
        Box::new(async move {
            if !allowed {
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
                // Plain HTTP goes through a keep-alive pool, as Spin 4's outbound HTTP does by
                // default (no handshake per request, no TIME_WAIT pile-up under load).
                return pooled_send(request, options).await;
            }
            let (res, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
            Ok((
                res.map(http_body_util::BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

type PooledClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    UnsyncBoxBody<Bytes, ErrorCode>,
>;

fn pooled_client() -> &'static PooledClient {
    static CLIENT: std::sync::OnceLock<PooledClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        // Spin 4.0.2's outbound HTTP connects with Nagle on (its connector never sets TCP_NODELAY).
        connector.set_nodelay(false);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector)
    })
}

async fn pooled_send(
    request: http::Request<UnsyncBoxBody<Bytes, ErrorCode>>,
    options: Option<wasmtime_wasi_http::p3::RequestOptions>,
) -> P3SendResult {
    use http_body_util::BodyExt as _;
    let first_byte = options.as_ref().and_then(|o| o.first_byte_timeout);
    let connect = options.as_ref().and_then(|o| o.connect_timeout);
    let limit = match (first_byte, connect) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    };
    let send = pooled_client().request(request);
    let res = match limit {
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => return Err(ErrorCode::HttpResponseTimeout.into()),
        },
        None => send.await,
    };
    let res = res.map_err(|e| {
        if e.is_connect() {
            ErrorCode::ConnectionRefused
        } else {
            let mut source: Option<&(dyn std::error::Error + 'static)> =
                std::error::Error::source(&e);
            while let Some(s) = source {
                if let Some(code) = s.downcast_ref::<ErrorCode>() {
                    return code.clone();
                }
                source = s.source();
            }
            tracing::debug!("outbound HTTP request failed: {e}");
            ErrorCode::HttpProtocolError
        }
    })?;
    let res = res.map(|body| {
        body.map_err(|e| {
            if e.is_timeout() {
                ErrorCode::HttpResponseTimeout
            } else {
                ErrorCode::HttpProtocolError
            }
        })
        .boxed_unsync()
    });
    Ok((
        res,
        Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
    ))
}

impl wasmtime_wasi_http::p2::WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        config: wasmtime_wasi_http::p2::types::OutgoingRequestConfig,
    ) -> wasmtime_wasi_http::p2::HttpResult<wasmtime_wasi_http::p2::types::HostFutureIncomingResponse>
    {
        if !self.check(request.uri()) {
            return Err(
                wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::HttpRequestDenied.into(),
            );
        }
        Ok(wasmtime_wasi_http::p2::default_send_request(
            request, config,
        ))
    }
}
