//! The integration-test harness: real `redis-server` and PostgreSQL processes on free ports, the
//! `aside-origin` binary, and (in [`crate::host`]) the edge under a Spin-compatible host.
//!
//! Servers shared by a test binary are started once ([`Stack::shared`]); every test gets its own
//! PostgreSQL database and its own Redis logical database, so tests run in parallel without seeing each
//! other's data. Tests that stop a server start their own ([`Stack::dedicated`]).
//!
//! Clean-up: every child process is spawned by one long-lived thread with `PR_SET_PDEATHSIG`, so the
//! kernel kills it if the test process dies; and an `atexit` hook stops them and removes their temporary
//! folders when the test binary exits normally, pass or fail.

mod edge;
mod http;
mod load;
mod oidc;
mod origin;
mod postgres;
mod process;
mod redis_server;
mod stack;
mod tls;
mod tokens;
mod xtask_up;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use edge::{
    ASIDE_EDGE_RUNTIME, EDGE_WASM, Edge, EdgeOptions, EdgeRuntime, edge_instances, edge_metrics,
    edge_wasm, manifest_with_allowed_hosts, metric, metric_sum, scrape_text, sum_samples,
};
pub use http::{
    Answer, REQUEST_TIMEOUT, TestApp, call_url, get_url, http_client, http_client_with_timeout,
    read_url, tier_ms,
};
pub use load::{Load, LoadReport, Sample};
pub use oidc::{JwksMode, OIDC_AUDIENCE, OidcClient, OidcProvider, OidcStats};
pub use origin::{FILL_DEADLINE, Origin, OriginOptions, fills_settled, origin_binary};
pub use postgres::PostgresServer;
pub use process::{
    ManagedChild, StopSignal, listens_on, log_to, port_was_taken, spawn_managed, temp_dir,
};
pub use redis_server::{
    RedisCluster, RedisHa, RedisSentinel, RedisServer, RedisTls, RedisUser, TlsOptions,
};
pub use stack::{Stack, TestEnv};
pub use tls::{CertFiles, TestCa};
pub use tokens::{TestIssuer, TestKey, now_secs};
pub use xtask_up::{UpFailed, UpProcess, start_up, xtask_binary};

/// A port nobody listens on right now (bound to port 0 and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A random secret for one run: 32 hex characters. Never written to the repository.
pub fn generate_secret() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The workspace root (where spin.toml is).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding the workspace's binaries for the profile the tests were built with
/// (`target/debug`), found from the running test executable (`target/debug/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("exe in a dir");
    if deps.ends_with("deps") {
        deps.parent().expect("deps in a dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
