//! A real OpenID Connect provider process for the authentication tests: panva's `oidc-provider` (npm,
//! pinned in `xtask::prereq::OIDC_PROVIDER`, installed into `target/tools/oidc-provider` by `cargo xtask
//! test`, or here on first use) running tests/oidc/provider.mjs under Node.js. It issues RS256-signed JWT
//! access tokens with the client-credentials grant and resource indicators; tokens are asked for at its
//! `/token` endpoint like any OAuth client does. The script's `/_test/*` routes rotate its keys, make
//! its JWKS endpoint fail and count the requests it answered (see the script).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use aside_tests::harness::{OidcClient, OidcProvider};
//! let idp = OidcProvider::start(&[OidcClient::new("7", "profiles:read")], 300).await?;
//! let token = idp.token("7", "profiles:read").await?;
//! # let _ = token; Ok(()) }
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

// A client per call (http_client()): tests run each on a runtime of its own, and a pooled connection
// must not outlive the runtime that opened it.
use super::http::http_client;
use super::process::{ManagedChild, StopSignal, listens_on, log_to, spawn_managed, temp_dir};
use super::{free_port, wait_until, workspace_root};

/// The `aud` of the provider's tokens (its one resource server): the edge's `auth_audience`.
pub const OIDC_AUDIENCE: &str = "https://aside.test/api";

/// A client of the provider (client-credentials grant): its id is the tokens' `sub`.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub id: String,
    pub secret: String,
    /// The scopes it may ask for (space-separated).
    pub scope: String,
    /// Its access tokens' lifetime, in seconds.
    pub ttl_secs: u64,
}

impl OidcClient {
    pub fn new(id: &str, scope: &str) -> Self {
        Self {
            id: id.to_string(),
            secret: super::generate_secret(),
            scope: scope.to_string(),
            ttl_secs: 600,
        }
    }

    pub fn ttl(mut self, secs: u64) -> Self {
        self.ttl_secs = secs;
        self
    }
}

/// What the provider's JWKS endpoint answers (`POST /_test/mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    /// The provider's own JWKS.
    Ok,
    /// 200 with a body that is not a JWKS.
    Garbage,
    /// 500.
    Error,
}

/// How many requests the provider answered, by endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OidcStats {
    pub jwks: u64,
    pub discovery: u64,
}

/// A running provider.
pub struct OidcProvider {
    pub port: u16,
    clients: Vec<OidcClient>,
    jwks_max_age: u64,
    dir: PathBuf,
    child: Option<ManagedChild>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer())
            .finish()
    }
}

/// The folder holding `node_modules/oidc-provider`, installed if missing.
fn modules_dir() -> anyhow::Result<PathBuf> {
    xtask::prereq::oidc_provider(&workspace_root().join("target"))
}

impl OidcProvider {
    /// Starts a provider on a free port with these clients; its JWKS answers say
    /// `cache-control: max-age={jwks_max_age}`.
    pub async fn start(clients: &[OidcClient], jwks_max_age: u64) -> anyhow::Result<Self> {
        let mut provider = Self {
            port: free_port(),
            clients: clients.to_vec(),
            jwks_max_age,
            dir: temp_dir("aside-oidc"),
            child: None,
        };
        provider.spawn(None).await?;
        Ok(provider)
    }

    /// `http://127.0.0.1:<port>`: the `iss` of its tokens and where discovery starts.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (with `keys`, its private JWKs, to come back with the same ones).
    async fn spawn(&mut self, keys: Option<&Value>) -> anyhow::Result<()> {
        let modules = tokio::task::spawn_blocking(modules_dir).await??;
        // ESM resolves `oidc-provider` from the script's folder: the script runs beside node_modules.
        let script = modules.join("provider.mjs");
        std::fs::copy(workspace_root().join("tests/oidc/provider.mjs"), &script)
            .context("copy tests/oidc/provider.mjs")?;
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                json!({"client_id": c.id, "client_secret": c.secret, "scope": c.scope,
                       "ttl": c.ttl_secs})
            })
            .collect();
        let mut command = Command::new("node");
        command
            .arg(&script)
            .current_dir(&modules)
            .env("OIDC_PORT", self.port.to_string())
            .env("OIDC_AUDIENCE", OIDC_AUDIENCE)
            .env("OIDC_CLIENTS", Value::Array(clients).to_string())
            .env("OIDC_JWKS_MAX_AGE", self.jwks_max_age.to_string());
        if let Some(keys) = keys {
            command.env("OIDC_KEYS", keys.to_string());
        }
        log_to(&mut command, &self.dir, "oidc-provider");
        let mut child =
            spawn_managed(command, StopSignal::Kill).context("cannot run node (Node.js 20+)")?;
        let (port, pid) = (self.port, child.id());
        // Listening means this provider holds the port, not just that something answers there.
        let up = wait_until(Duration::from_secs(30), || {
            let done = child.has_exited() || listens_on(pid, port);
            async move { done }
        })
        .await;
        if !up || child.has_exited() {
            anyhow::bail!(
                "the OpenID provider did not start on port {port}:\n{}",
                self.log()
            );
        }
        self.child = Some(child);
        Ok(())
    }

    /// The provider's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("oidc-provider.log")).unwrap_or_default()
    }

    /// An access token for `client_id` with `scope`, from the provider's token endpoint.
    pub async fn token(&self, client_id: &str, scope: &str) -> anyhow::Result<String> {
        let client = self
            .clients
            .iter()
            .find(|c| c.id == client_id)
            .with_context(|| format!("no client {client_id}"))?;
        let answer = http_client()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(&client.id, Some(&client.secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", OIDC_AUDIENCE),
            ])
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await?;
        anyhow::ensure!(status.is_success(), "token endpoint: {status} {body}");
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .context("no access_token")
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let answer = http_client()
            .post(format!("{}{path}", self.issuer()))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(answer.status().is_success(), "{path}: {}", answer.status());
        Ok(answer.json().await?)
    }

    /// Rotation, step 1: a new key, which signs from now on; the old ones are still published.
    /// Returns the published `kid`s, the new one first.
    pub async fn add_key(&self) -> anyhow::Result<Vec<String>> {
        kids(self.post("/_test/keys", json!({"add": true})).await?)
    }

    /// Rotation, step 2: only the signing key is left.
    pub async fn retire_old_keys(&self) -> anyhow::Result<Vec<String>> {
        kids(self.post("/_test/keys", json!({"retire": true})).await?)
    }

    /// What the JWKS endpoint answers from now on.
    pub async fn jwks_mode(&self, mode: JwksMode) -> anyhow::Result<()> {
        let mode = match mode {
            JwksMode::Ok => "ok",
            JwksMode::Garbage => "garbage",
            JwksMode::Error => "error",
        };
        self.post("/_test/mode", json!({"jwks": mode})).await?;
        Ok(())
    }

    /// Requests answered so far.
    pub async fn stats(&self) -> anyhow::Result<OidcStats> {
        let stats: Value = http_client()
            .get(format!("{}/_test/stats", self.issuer()))
            .send()
            .await?
            .json()
            .await?;
        Ok(OidcStats {
            jwks: stats["jwks"].as_u64().context("jwks")?,
            discovery: stats["discovery"].as_u64().context("discovery")?,
        })
    }

    /// Stops the process (SIGKILL: the provider is simply gone), keeping its keys to come back with.
    pub async fn stop(&mut self) -> anyhow::Result<Value> {
        let keys: Value = http_client()
            .get(format!("{}/_test/keys", self.issuer()))
            .send()
            .await?
            .json()
            .await?;
        if let Some(mut child) = self.child.take() {
            tokio::task::spawn_blocking(move || child.stop()).await?;
        }
        Ok(keys["keys"].clone())
    }

    /// Starts it again on the same port with `keys` (from [`OidcProvider::stop`]).
    pub async fn restart(&mut self, keys: &Value) -> anyhow::Result<()> {
        self.spawn(Some(keys)).await
    }
}

fn kids(answer: Value) -> anyhow::Result<Vec<String>> {
    answer["kids"]
        .as_array()
        .context("kids")?
        .iter()
        .map(|k| k.as_str().map(str::to_string).context("kid"))
        .collect()
}
