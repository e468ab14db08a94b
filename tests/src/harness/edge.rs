//! The edge component under real `spin up` (when a Spin 4 CLI is found) or the bundled Spin-compatible
//! host ([`crate::host`]), wired to one [`TestEnv`]: its Redis logical database (read as the `edge` ACL user) and an origin.
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use xtask::launch::EdgeVariables;
use xtask::spin::SpinCli;

use super::origin::Origin;
use super::process::{
    ManagedChild, START_ATTEMPTS, StopSignal, listens_on, log_to, port_was_taken, spawn_managed,
};
use super::redis_server::{RedisServer, RedisUser};
use super::stack::{Stack, TestEnv};
use super::{free_port, temp_dir, wait_until, workspace_root};
use crate::host::manifest::env_var_name;
use crate::host::{
    DEFAULT_IDLE_INSTANCE_TIMEOUT, DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT,
    DEFAULT_MAX_INSTANCE_REUSE_COUNT, Host, HostConfig,
};

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
    /// The application, variables and instance-reuse settings (the bundled host's configuration; under
    /// Spin the same settings become `spin up` flags and `SPIN_VARIABLE_*`).
    pub config: HostConfig,
    /// `None`: the runtime the tests use ([`EdgeRuntime::for_tests`]).
    pub runtime: Option<EdgeRuntime>,
    /// A Spin runtime config (TOML) for `spin up --runtime-config-file`, e.g. key-value stores. The
    /// bundled host takes none: it has no key-value store (every label is `no-such-store`).
    pub runtime_config: Option<String>,
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
        let options = Self {
            config,
            runtime: None,
            runtime_config: None,
        };
        options.vars(
            &EdgeVariables::new()
                .redis(
                    &format!("127.0.0.1:{}", stack.redis.port),
                    RedisUser::Edge.name(),
                    stack.redis.password(RedisUser::Edge),
                )
                .set("redis_database", env.redis_db)
                .origin(origin_url, origin_token)
                .auth_off(),
        )
    }

    /// Sets every variable of `vars` (the launchers' typed builder, `xtask::launch`).
    pub fn vars(self, vars: &EdgeVariables) -> Self {
        vars.iter()
            .fold(self, |options, (name, value)| options.var(name, value))
    }

    /// Client authentication on, with the keys, issuer and audience of `issuer`.
    pub fn auth(self, issuer: &super::TestIssuer) -> Self {
        self.auth_jwks(&issuer.jwks(), &issuer.issuer, &issuer.audience)
    }

    /// Client authentication on, with this JWKS document, `iss` and `aud`.
    pub fn auth_jwks(self, jwks: &str, issuer: &str, audience: &str) -> Self {
        self.vars(&EdgeVariables::new().auth_jwks(jwks, issuer, audience))
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

    /// Runs Spin with this runtime config (TOML), written to the edge's temporary folder.
    pub fn runtime_config(mut self, toml: impl Into<String>) -> Self {
        self.runtime_config = Some(toml.into());
        self
    }

    /// The process-wide tier on, in Spin's key-value store `default` kept in memory: the repository's
    /// runtime-config.toml and `shared_tier_store = "default"` (the edge's `key_value_stores`).
    pub fn shared_tier(self) -> Self {
        let path = workspace_root().join("runtime-config.toml");
        let toml = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        self.runtime_config(toml)
            .vars(&EdgeVariables::new().shared_tier("default"))
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

    /// Runs this edge under `runtime` instead of the one the tests use ([`EdgeRuntime::for_tests`]).
    pub fn runtime(mut self, runtime: EdgeRuntime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Starts the edge: under `spin up` (a process of its own) when the tests run on Spin, else under
    /// the bundled host (in this process).
    pub async fn start(self) -> anyhow::Result<Edge> {
        // The repository's manifest takes only the edge's own variables (a misspelt one would be
        // refused by Spin and ignored by the host): the names defined once in aside_shared::settings.
        if self.config.manifest == workspace_root().join("spin.toml") {
            let unknown: Vec<&String> = self
                .config
                .variables
                .keys()
                .filter(|name| !aside_shared::settings::is_edge_variable(name))
                .collect();
            anyhow::ensure!(
                unknown.is_empty(),
                "not Spin variables of the edge (aside_shared::settings::EDGE_VARIABLES): {unknown:?}"
            );
        }
        let runtime = self
            .runtime
            .clone()
            .unwrap_or_else(|| EdgeRuntime::for_tests().clone());
        match runtime {
            EdgeRuntime::Spin(cli) => Ok(Edge {
                running: Running::Spin(
                    SpinUp::start(&cli, &self.config, self.runtime_config.as_deref()).await?,
                ),
            }),
            EdgeRuntime::Bundled => {
                let host = Host::start(self.config)
                    .await
                    .context("cannot start the edge under the bundled host")?;
                Ok(Edge {
                    running: Running::Bundled(host),
                })
            }
        }
    }
}

/// The runtime an edge runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeRuntime {
    /// `spin up` of a Spin 4 CLI: the production runtime.
    Spin(SpinCli),
    /// The bundled Spin-compatible host ([`crate::host`]): a stand-in for machines without Spin.
    Bundled,
}

/// Chooses the tests' edge runtime: `spin`, `host`, or empty for "Spin when found".
pub const ASIDE_EDGE_RUNTIME: &str = "ASIDE_EDGE_RUNTIME";

impl EdgeRuntime {
    /// The runtime edges start under unless a test asks for another: `ASIDE_EDGE_RUNTIME=host` forces
    /// the bundled host, `=spin` requires Spin (a panic if none is found); unset, Spin when a Spin 4 CLI
    /// is found (`ASIDE_SPIN`, else `spin` on PATH), else the bundled host. `cargo xtask test` decides
    /// once, prints it and sets `ASIDE_EDGE_RUNTIME` for every test binary. A broken `ASIDE_SPIN` is
    /// never silently replaced by the bundled host.
    pub fn for_tests() -> &'static EdgeRuntime {
        static CHOSEN: OnceLock<EdgeRuntime> = OnceLock::new();
        CHOSEN.get_or_init(|| {
            let wanted = std::env::var(ASIDE_EDGE_RUNTIME).unwrap_or_default();
            let chosen = match (wanted.as_str(), xtask::spin::find()) {
                ("host" | "bundled", _) => EdgeRuntime::Bundled,
                ("spin" | "", Ok(cli)) => EdgeRuntime::Spin(cli),
                ("spin", Err(why)) => panic!("{ASIDE_EDGE_RUNTIME}=spin but {why}"),
                ("", Err(why @ xtask::spin::NotFound::BadOverride { .. })) => panic!("{why}"),
                ("", Err(_)) => EdgeRuntime::Bundled,
                (other, _) => panic!("{ASIDE_EDGE_RUNTIME}={other:?}: expected `spin` or `host`"),
            };
            eprintln!("aside-tests: edges run under {chosen}");
            chosen
        })
    }

    /// Spin when a Spin 4 CLI is found, whatever the tests use (for tests that compare the two).
    pub fn spin() -> Option<EdgeRuntime> {
        xtask::spin::find().ok().map(EdgeRuntime::Spin)
    }

    pub fn is_spin(&self) -> bool {
        matches!(self, EdgeRuntime::Spin(_))
    }
}

impl std::fmt::Display for EdgeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeRuntime::Spin(cli) => write!(f, "real Spin: `spin up` of {cli}"),
            EdgeRuntime::Bundled => write!(f, "the bundled host (wasmtime 44; not Spin)"),
        }
    }
}

/// A running edge.
pub struct Edge {
    running: Running,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runtime = if self.is_spin() { "spin" } else { "bundled" };
        f.debug_struct("Edge")
            .field("url", &self.url())
            .field("runtime", &runtime)
            .finish()
    }
}

enum Running {
    Spin(SpinUp),
    Bundled(Host),
}

impl Edge {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.running {
            Running::Spin(spin) => format!("http://{}", spin.addr),
            Running::Bundled(host) => host.url(),
        }
    }

    /// The edge as a client sees it, without a token ([`super::TestApp::with_token`] adds one).
    pub fn app(&self) -> super::TestApp {
        super::TestApp::new(self.url())
    }

    /// Which runtime runs it.
    pub fn is_spin(&self) -> bool {
        matches!(self.running, Running::Spin(_))
    }

    /// What the runtime printed so far (Spin's output and the component's stdout/stderr; empty under
    /// the bundled host, which logs through `tracing`).
    pub fn log(&self) -> String {
        match &self.running {
            Running::Spin(spin) => spin.log(),
            Running::Bundled(_) => String::new(),
        }
    }

    /// The component's own stdout/stderr, each line once (Spin also echoes it into its own output,
    /// which [`Edge::log`] includes); empty under the bundled host.
    pub fn component_log(&self) -> String {
        match &self.running {
            Running::Spin(spin) => spin.component_log(),
            Running::Bundled(_) => String::new(),
        }
    }

    /// Stops accepting connections and lets open ones finish (Spin: SIGINT, as Ctrl-C does, then
    /// SIGKILL after 5 s).
    pub async fn shutdown(self) {
        match self.running {
            Running::Spin(spin) => spin.stop().await,
            Running::Bundled(host) => host.shutdown().await,
        }
    }
}

/// One `spin up` process serving the edge.
struct SpinUp {
    addr: SocketAddr,
    dir: PathBuf,
    child: ManagedChild,
}

impl SpinUp {
    /// `spin up --from <manifest>` on a free port, with the variables as `SPIN_VARIABLE_<NAME>`, the
    /// instance-reuse settings as Spin's own flags, its state (logs, key-value stores) in a temporary
    /// folder, and the CA for `rediss://` through `SSL_CERT_FILE` (Spin's Redis client uses the
    /// platform's TLS, which reads it), and `runtime_config` as `--runtime-config-file`. Waits until it
    /// accepts connections.
    /// `spin up` on a free port; on another one if that port was taken before Spin bound it (a few
    /// times at most: [`START_ATTEMPTS`]).
    async fn start(
        cli: &SpinCli,
        config: &HostConfig,
        runtime_config: Option<&str>,
    ) -> anyhow::Result<SpinUp> {
        let mut attempt = 1;
        loop {
            match Self::start_once(cli, config, runtime_config).await {
                Err((e, log)) if attempt < START_ATTEMPTS && port_was_taken(&log) => {
                    eprintln!("spin up: its port was taken ({e:#}); another one");
                    attempt += 1;
                }
                result => return result.map_err(|(e, _)| e),
            }
        }
    }

    /// One start on a free port; on failure, the error and Spin's log (empty if it never ran).
    async fn start_once(
        cli: &SpinCli,
        config: &HostConfig,
        runtime_config: Option<&str>,
    ) -> Result<SpinUp, (anyhow::Error, String)> {
        let dir = temp_dir("aside-spin");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(&cli.path);
        command
            .arg("up")
            .arg("--from")
            .arg(&config.manifest)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(spin_reuse_flags(config));
        if let Some(toml) = runtime_config {
            let file = dir.join("runtime-config.toml");
            std::fs::write(&file, toml)
                .with_context(|| format!("cannot write {}", file.display()))
                .map_err(|e| (e, String::new()))?;
            command.arg("--runtime-config-file").arg(file);
        }
        // Only what the test says: no SPIN_* setting of the developer's shell leaks in, nor the
        // runtime config Spin would read from RUNTIME_CONFIG_FILE.
        command.env_remove("RUNTIME_CONFIG_FILE");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPIN_") {
                command.env_remove(key);
            }
        }
        for (name, value) in &config.variables {
            command.env(env_var_name(name), value);
        }
        if let Some(ca) = &config.redis_ca_file {
            command.env("SSL_CERT_FILE", ca);
        }
        log_to(&mut command, &dir, "spin");
        let mut child = spawn_managed(command, StopSignal::TermGroup)
            .with_context(|| format!("cannot run {}", cli.path.display()))
            .map_err(|e| (e, String::new()))?;
        // Listening means `spin up` (or the trigger it starts) holds the port, not just that
        // something answers on it.
        let pid = child.id();
        let up = wait_until(SPIN_START_TIMEOUT, || {
            let done = child.has_exited() || listens_on(pid, addr.port());
            async move { done }
        })
        .await;
        let mut spin = SpinUp { addr, dir, child };
        let failed = if spin.child.has_exited() {
            "exited before serving".to_string()
        } else if !up {
            format!(
                "did not listen on {addr} within {} s",
                SPIN_START_TIMEOUT.as_secs()
            )
        } else {
            return Ok(spin);
        };
        let log = spin.log();
        Err((anyhow::anyhow!("`spin up` {failed}:\n{log}"), log))
    }

    /// Spin's own output, then the component's stdout and stderr (Spin writes those to
    /// `<state dir>/logs/<component>_std{out,err}.txt`, not to its own output).
    fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.dir.join("spin.log")).unwrap_or_default();
        log.push_str(&self.component_log());
        log
    }

    fn component_log(&self) -> String {
        let mut log = String::new();
        let logs = self.dir.join("state").join("logs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            log.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        log
    }

    /// SIGTERM (Spin stops its trigger and lets it finish), SIGKILL to the group after 5 s.
    async fn stop(mut self) {
        tokio::task::spawn_blocking(move || self.child.stop())
            .await
            .expect("stopping spin up");
    }
}

/// How long `spin up` may take to listen: it compiles the component on its first start (later starts
/// load it from Spin's wasmtime cache), and the tests may be starting many at once on two cores.
const SPIN_START_TIMEOUT: Duration = Duration::from_secs(90);

/// `spin up`'s instance-reuse flags for what the test asked (Spin's defaults are left implicit).
/// Spin 4.0.2 reads `--idle-instance-timeout` in whole seconds only, so sub-second timeouts are
/// rounded up.
fn spin_reuse_flags(config: &HostConfig) -> Vec<String> {
    let mut flags = Vec::new();
    if config.max_instance_reuse_count != DEFAULT_MAX_INSTANCE_REUSE_COUNT {
        flags.push(format!(
            "--max-instance-reuse-count={}",
            config.max_instance_reuse_count
        ));
    }
    if config.max_instance_concurrent_reuse_count != DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT {
        flags.push(format!(
            "--max-instance-concurrent-reuse-count={}",
            config.max_instance_concurrent_reuse_count
        ));
    }
    if config.idle_instance_timeout != DEFAULT_IDLE_INSTANCE_TIMEOUT {
        let secs = config.idle_instance_timeout.as_secs_f64().ceil().max(1.0) as u64;
        flags.push(format!("--idle-instance-timeout={secs}s"));
    }
    flags
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

/// The Prometheus text of `GET {url}` (an origin's `/metrics`, an edge's `/edge/metrics`).
pub async fn scrape_text(url: &str) -> String {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .expect("metrics body")
}

/// The sum of the samples of `name` in Prometheus `text` whose labels include every one of `labels`
/// (`key="value"`, as written); 0 when none matches.
pub fn sum_samples(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|label| rest.contains(label)))
                .then(|| value.parse::<f64>().expect("a numeric sample"))
        })
        .sum()
}

/// The edge's `GET /edge/metrics` from as many of its Spin instances as `scrapes` requests sent at
/// once reach (each is answered by one instance; its series carry `edge_instance`), merged: one line
/// per series, the highest value seen (counters only grow). Instances the scrapes did not reach are
/// missing, so sums over it are at most the process's.
pub async fn edge_metrics(edge_url: &str, scrapes: usize) -> String {
    let url = format!("{edge_url}/edge/metrics");
    let texts = futures::future::join_all((0..scrapes).map(|_| scrape_text(&url))).await;
    let mut series: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for text in &texts {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().expect("a numeric sample");
            let kept = series.entry(name.to_string()).or_insert(value);
            *kept = kept.max(value);
        }
    }
    series
        .iter()
        .map(|(name, value)| format!("{name} {value}\n"))
        .collect()
}

/// The distinct `edge_instance` labels in merged [`edge_metrics`] text.
pub fn edge_instances(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split_once("edge_instance=\"")?.1;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

/// The value of one Prometheus sample on `GET {base_url}/metrics`, found by the start of its line
/// (`name` or `name{labels}`); 0 when the series has no sample yet.
pub async fn metric(base_url: &str, name_and_labels: &str) -> f64 {
    scrape_text(&format!("{base_url}/metrics"))
        .await
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().expect("a numeric sample"))
        .unwrap_or(0.0)
}

/// The sum of the samples of `name` with every one of `labels` on `GET {base_url}/metrics` (see
/// [`sum_samples`]).
pub async fn metric_sum(base_url: &str, name: &str, labels: &[&str]) -> f64 {
    sum_samples(
        &scrape_text(&format!("{base_url}/metrics")).await,
        name,
        labels,
    )
}
