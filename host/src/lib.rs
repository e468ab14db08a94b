//! A small Spin-compatible host (Spin 4.0.x semantics) on Wasmtime 44, for tests and local
//! development: it reads the same `spin.toml`, serves HTTP to the routed spin-sdk 6
//! (`wasi:http@0.3` handler) component, reuses instances through
//! `wasmtime_wasi_http::handler` like Spin 4, implements `spin:redis@3.0.0` and
//! `spin:variables@3.0.0`, and enforces `allowed_outbound_hosts`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use aside_host::{Host, HostConfig};
//! let mut config = HostConfig::new("spin.toml");
//! config.variables.insert("redis_password".into(), "secret".into());
//! let host = Host::start(config).await?;
//! println!("{}", host.url());
//! host.shutdown().await;
//! # Ok(()) }
//! ```

pub mod allowed;
mod engine;
pub mod manifest;
mod redis_tls;
pub mod router;
mod server;
mod spin;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::handler::{ProxyHandler, ProxyPre};

pub use engine::LoadSource;
use manifest::{Manifest, resolve_app_variables, resolve_component};
use router::Router;
use server::{App, ComponentState, ReuseConfig};

/// Spin's default `--max-instance-reuse-count`.
pub const DEFAULT_MAX_INSTANCE_REUSE_COUNT: usize = 128;
/// Spin's default `--max-instance-concurrent-reuse-count`.
pub const DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT: usize = 16;
/// Spin's default `--idle-instance-timeout`.
pub const DEFAULT_IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);

/// How to run an application.
#[derive(Clone)]
pub struct HostConfig {
    /// Path of `spin.toml`; component sources are relative to its directory.
    pub manifest: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Variable values that win over `SPIN_VARIABLE_<NAME>` and defaults.
    pub variables: HashMap<String, String>,
    /// Requests served by one instance before it is dropped.
    pub max_instance_reuse_count: usize,
    /// Requests one instance may serve at the same time.
    pub max_instance_concurrent_reuse_count: usize,
    /// How long an idle instance is kept.
    pub idle_instance_timeout: Duration,
    /// Where compiled components are cached; default `<manifest dir>/target/aside-host-cache`.
    pub cache_dir: Option<PathBuf>,
    /// PEM file of the CA(s) that `spin:redis` trusts for `rediss://` connections instead of the
    /// system's roots (for a private or test CA). Without it the host trusts the system's roots, as
    /// Spin does (Spin 4's Redis client verifies with the platform's store, which also honours
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`, and has no setting of its own for a CA).
    pub redis_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Variable values may be secrets: show only their names.
        let mut names: Vec<&String> = self.variables.keys().collect();
        names.sort();
        f.debug_struct("HostConfig")
            .field("manifest", &self.manifest)
            .field("listen", &self.listen)
            .field("variables", &names)
            .field("max_instance_reuse_count", &self.max_instance_reuse_count)
            .field(
                "max_instance_concurrent_reuse_count",
                &self.max_instance_concurrent_reuse_count,
            )
            .field("idle_instance_timeout", &self.idle_instance_timeout)
            .field("cache_dir", &self.cache_dir)
            .field("redis_ca_file", &self.redis_ca_file)
            .finish()
    }
}

impl HostConfig {
    /// Spin's defaults, listening on `127.0.0.1:0`.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            variables: HashMap::new(),
            max_instance_reuse_count: DEFAULT_MAX_INSTANCE_REUSE_COUNT,
            max_instance_concurrent_reuse_count: DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT,
            idle_instance_timeout: DEFAULT_IDLE_INSTANCE_TIMEOUT,
            cache_dir: None,
            redis_ca_file: None,
        }
    }
}

/// A running application.
pub struct Host {
    addr: SocketAddr,
    load_sources: Vec<(String, LoadSource, Duration)>,
    shutdown: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("addr", &self.addr).finish()
    }
}

impl Host {
    /// Loads the manifest, resolves variables, compiles (or loads from cache) the routed
    /// components, binds the listener and starts serving.
    pub async fn start(config: HostConfig) -> anyhow::Result<Host> {
        ensure!(
            config.max_instance_reuse_count >= 1,
            "max_instance_reuse_count must be at least 1"
        );
        ensure!(
            config.max_instance_concurrent_reuse_count >= 1,
            "max_instance_concurrent_reuse_count must be at least 1"
        );
        let manifest = Manifest::load(&config.manifest)?;
        let redis_tls = Arc::new(redis_tls::RedisTls::new(config.redis_ca_file.as_deref())?);
        let app_vars = resolve_app_variables(&manifest.variables, &config.variables, |k| {
            std::env::var(k).ok()
        })
        .with_context(|| format!("cannot start {}", config.manifest.display()))?;
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| manifest.base_dir.join("target").join("aside-host-cache"));
        let reuse = ReuseConfig {
            max_instance_reuse_count: config.max_instance_reuse_count,
            max_instance_concurrent_reuse_count: config.max_instance_concurrent_reuse_count,
            idle_instance_timeout: config.idle_instance_timeout,
        };

        // One handler per distinct routed component.
        let mut component_ids: Vec<&str> = Vec::new();
        let mut routes = Vec::new();
        for t in &manifest.http_triggers {
            let index = match component_ids.iter().position(|c| *c == t.component) {
                Some(i) => i,
                None => {
                    component_ids.push(&t.component);
                    component_ids.len() - 1
                }
            };
            if let Some(route) = &t.route {
                routes.push((route.as_str(), index));
            }
        }
        let router = Router::new(&manifest.base, routes)?;

        let mut handlers = Vec::new();
        let mut load_sources = Vec::new();
        for id in &component_ids {
            let decl = &manifest.components[*id];
            let component = resolve_component(id, decl, &app_vars, &manifest.variables)?;
            let source = decl.source.clone();
            let dir = cache_dir.clone();
            let loaded = tokio::task::spawn_blocking(move || engine::load(&source, &dir))
                .await
                .context("component loading panicked")??;
            tracing::info!(
                component = %id,
                source = ?loaded.source,
                elapsed_ms = loaded.elapsed.as_millis() as u64,
                "component ready"
            );
            load_sources.push((id.to_string(), loaded.source, loaded.elapsed));
            handlers.push(ProxyHandler::new(
                ComponentState {
                    component,
                    reuse,
                    redis_tls: Arc::clone(&redis_tls),
                },
                ProxyPre::P3(loaded.pre),
            ));
        }

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            router,
            handlers,
            listen: addr,
        });
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(app, listener, rx));
        tracing::info!(app = %manifest.name, "serving http://{addr}");
        Ok(Host {
            addr,
            load_sources,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How each component was loaded (memory cache, disk cache or compiled) and how long it took.
    pub fn load_sources(&self) -> &[(String, LoadSource, Duration)] {
        &self.load_sources
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_manifest(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("aside-host-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spin.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
token = { required = true, secret = true }
origin = { default = "http://127.0.0.1:1" }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "missing.wasm"
allowed_outbound_hosts = ["{{ origin }}"]
[component.c.variables]
token = "{{ token }}"
"#;

    async fn start_err(config: HostConfig) -> String {
        format!("{:#}", Host::start(config).await.unwrap_err())
    }

    #[tokio::test]
    async fn start_fails_clearly() {
        let path = temp_manifest("missing-var", APP);
        let msg = start_err(HostConfig::new(&path)).await;
        assert!(
            msg.contains("missing required application variable(s): token"),
            "{msg}"
        );

        let mut config = HostConfig::new(&path);
        config.variables.insert("token".into(), "s3cret".into());
        let msg = start_err(config.clone()).await;
        assert!(msg.contains("missing.wasm"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(!format!("{config:?}").contains("s3cret"));

        // A templated allow-list that does not parse once expanded is not a start error (Spin refuses
        // the component's connections instead; see manifest.rs): the missing source is.
        config
            .variables
            .insert("origin".into(), "127.0.0.1:1".into());
        let msg = start_err(config).await;
        assert!(msg.contains("missing.wasm"), "{msg}");

        let msg = start_err(HostConfig::new(temp_manifest(
            "bad",
            "spin_manifest_version = 2\n",
        )))
        .await;
        assert!(msg.contains("invalid Spin manifest"), "{msg}");

        let msg = start_err(HostConfig::new("/nonexistent/spin.toml")).await;
        assert!(msg.contains("cannot read the manifest"), "{msg}");
    }
}
