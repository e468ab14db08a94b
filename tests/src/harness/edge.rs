//! The edge component under the bundled Spin-compatible host ([`crate::host`]), wired to one
//! [`TestEnv`]: its Redis logical database (read as the `edge` ACL user) and an origin.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use aside_tests::harness::{EdgeOptions, Stack, generate_secret};
//! let stack = Stack::shared().await;
//! let env = stack.env().await?;
//! let token = generate_secret();
//! let origin = env.origin_with_token(stack, &token).await?;
//! let edge = EdgeOptions::new(stack, &env, &origin.url(), &token)
//!     .l1_ttl_ms(200)
//!     .start()
//!     .await?;
//! println!("{}", edge.url());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::origin::Origin;
use super::redis_server::{RedisServer, RedisUser};
use super::stack::{Stack, TestEnv};
use super::{temp_dir, workspace_root};
use crate::host::{Host, HostConfig};

/// The component the repository's spin.toml names (`source`), relative to the workspace root.
pub const EDGE_WASM: &str = "target/wasm32-wasip2/release/aside_edge.wasm";

/// Path of the release edge component; panics with the command that builds it when it is missing.
pub fn edge_wasm() -> PathBuf {
    let path = workspace_root().join(EDGE_WASM);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p aside-edge --target wasm32-wasip2 --release` \
         (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// Where compiled components are cached (shared by every test process and `cargo xtask up`).
fn host_cache_dir() -> PathBuf {
    workspace_root().join("target").join("aside-host-cache")
}

/// How to run the edge for one test: a [`HostConfig`] for the repository's spin.toml with the
/// variables of a [`TestEnv`], plus builder methods for what tests change.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub config: HostConfig,
}

impl EdgeOptions {
    /// The repository's spin.toml with: Redis at the stack's port, the env's logical database, the
    /// `edge` ACL user and its generated password; the origin at `origin_url` with `origin_token`.
    /// Everything else keeps the spin.toml defaults (and Spin's instance-reuse defaults), except client
    /// authentication: it is turned **off** (`auth = "off"`) because most tests are about caching and
    /// resilience and send no client token; the identity-provider variables, which Spin requires even
    /// then, get placeholders. Tests of authentication turn it on with [`EdgeOptions::auth`].
    pub fn new(stack: &Stack, env: &TestEnv, origin_url: &str, origin_token: &str) -> Self {
        edge_wasm();
        let mut config = HostConfig::new(workspace_root().join("spin.toml"));
        config.cache_dir = Some(host_cache_dir());
        let options = Self { config };
        options
            .var("redis_address", format!("127.0.0.1:{}", stack.redis.port))
            .var("redis_database", env.redis_db)
            .var("redis_user", RedisUser::Edge.name())
            .var("redis_password", stack.redis.password(RedisUser::Edge))
            .var("origin_url", origin_url)
            .var("origin_token", origin_token)
            .var("auth", "off")
            .var("auth_jwks", "unused: auth is off")
            .var("auth_issuer", "unused")
            .var("auth_audience", "unused")
    }

    /// Client authentication on, with the keys, issuer and audience of `issuer`.
    pub fn auth(self, issuer: &super::TestIssuer) -> Self {
        self.auth_jwks(&issuer.jwks(), &issuer.issuer, &issuer.audience)
    }

    /// Client authentication on, with this JWKS document, `iss` and `aud`.
    pub fn auth_jwks(self, jwks: &str, issuer: &str, audience: &str) -> Self {
        self.var("auth", "on")
            .var("auth_jwks", jwks)
            .var("auth_issuer", issuer)
            .var("auth_audience", audience)
    }

    /// Sets a Spin application variable (wins over `SPIN_VARIABLE_*` and the spin.toml default).
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.config
            .variables
            .insert(name.to_string(), value.to_string());
        self
    }

    /// Reads tier 2 from `server` instead of the stack's Redis (same logical database), as the `edge`
    /// user. A server started with TLS is reached with `rediss://` on its TLS port, the host trusting
    /// the server's test CA (`HostConfig::redis_ca_file`).
    pub fn redis_server(mut self, server: &RedisServer) -> Self {
        let (port, scheme) = match &server.tls {
            Some(tls) => {
                self.config.redis_ca_file = Some(tls.ca.cert_file.clone());
                (tls.port, "rediss")
            }
            None => (server.port, "redis"),
        };
        self.var("redis_address", format!("127.0.0.1:{port}"))
            .var("redis_scheme", scheme)
            .var("redis_password", server.password(RedisUser::Edge))
    }

    /// Tier-1 time-to-live; 0 turns tier 1 off.
    pub fn l1_ttl_ms(self, ms: u64) -> Self {
        self.var("l1_ttl_ms", ms)
    }

    /// How long Redis is skipped after a failure.
    pub fn redis_backoff_ms(self, ms: u64) -> Self {
        self.var("redis_backoff_ms", ms)
    }

    /// Requests served by one instance (1: every request gets a fresh instance, so no tier 1).
    pub fn max_instance_reuse_count(mut self, n: usize) -> Self {
        self.config.max_instance_reuse_count = n;
        self
    }

    /// Requests one instance serves at the same time.
    pub fn max_instance_concurrent_reuse_count(mut self, n: usize) -> Self {
        self.config.max_instance_concurrent_reuse_count = n;
        self
    }

    /// How long an idle instance is kept.
    pub fn idle_instance_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_instance_timeout = timeout;
        self
    }

    /// Runs another manifest (e.g. one from [`manifest_with_allowed_hosts`]).
    pub fn manifest(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.manifest = path.into();
        self
    }

    /// Starts the host.
    pub async fn start(self) -> anyhow::Result<Edge> {
        let host = Host::start(self.config)
            .await
            .context("cannot start the edge under the bundled host")?;
        Ok(Edge { host })
    }
}

/// A running edge.
#[derive(Debug)]
pub struct Edge {
    pub host: Host,
}

impl Edge {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.host.url()
    }

    /// Stops accepting connections and lets open ones finish.
    pub async fn shutdown(self) {
        self.host.shutdown().await;
    }
}

impl TestEnv {
    /// Starts an origin for this env that accepts only `token`.
    pub async fn origin_with_token(&self, stack: &Stack, token: &str) -> anyhow::Result<Origin> {
        let mut options = self.origin_options(stack);
        options.tokens = vec![token.to_string()];
        Origin::start(options).await
    }

    /// Profile `id` as PostgreSQL has it, in the API's JSON shape.
    pub async fn profile_json(&self, stack: &Stack, id: i32) -> anyhow::Result<serde_json::Value> {
        let client = stack.postgres.connect(&self.database).await?;
        let row = client
            .query_one(
                "SELECT id, full_name, gender, to_char(birth_date, 'YYYY-MM-DD'), department, \
                 email, username FROM devops_api.users WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(serde_json::json!({
            "id": row.get::<_, i32>(0),
            "full_name": row.get::<_, String>(1),
            "gender": row.get::<_, String>(2),
            "birth_date": row.get::<_, String>(3),
            "department": row.get::<_, String>(4),
            "email": row.get::<_, String>(5),
            "username": row.get::<_, String>(6),
        }))
    }
}

/// A copy of the repository's spin.toml in a fresh temporary folder, with the component `source` made
/// absolute and its `allowed_outbound_hosts` replaced by `allowed` (templates allowed, e.g.
/// `"{{ origin_url }}"`). Returns the new manifest's path.
pub fn manifest_with_allowed_hosts(allowed: &[&str]) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("spin.toml"))?;
    let mut manifest: toml::Table = toml::from_str(&text)?;
    let components = manifest
        .get_mut("component")
        .and_then(|c| c.as_table_mut())
        .context("spin.toml has no [component] table")?;
    for (id, component) in components.iter_mut() {
        let component = component
            .as_table_mut()
            .with_context(|| format!("[component.{id}] is not a table"))?;
        if let Some(source) = component.get("source").and_then(|s| s.as_str()) {
            let absolute = absolute_from(&root, source);
            component.insert(
                "source".into(),
                toml::Value::String(absolute.display().to_string()),
            );
        }
        component.insert(
            "allowed_outbound_hosts".into(),
            toml::Value::Array(
                allowed
                    .iter()
                    .map(|a| toml::Value::String(a.to_string()))
                    .collect(),
            ),
        );
    }
    let path = temp_dir("aside-manifest").join("spin.toml");
    std::fs::write(&path, toml::to_string(&manifest)?)?;
    Ok(path)
}

fn absolute_from(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The value of one Prometheus sample on `GET {base_url}/metrics`, found by the start of its line
/// (`name` or `name{labels}`); 0 when the series has no sample yet.
pub async fn metric(base_url: &str, name_and_labels: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{base_url}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().expect("a numeric sample"))
        .unwrap_or(0.0)
}
