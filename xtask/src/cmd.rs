//! What the xtask commands run: `cargo` and other programs in the workspace root, and the builds that
//! several commands share. Imported by the commands; it imports none of them.

use std::path::PathBuf;
use std::process::Command;

/// Test hooks (delays, counters) are compiled into the origin only for tests; release and production
/// builds never have them.
pub const TEST_FEATURES: &str = "aside-origin/test-hooks";

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its command line if it fails.
pub fn run_cmd(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .current_dir(workspace_root())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {shown}: {e}"))?;
    anyhow::ensure!(status.success(), "{shown} failed ({status})");
    Ok(())
}

/// The `cargo` that runs xtask (`CARGO`), else `cargo` on PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo build --release --target wasm32-wasip2` of the WebAssembly components `packages` (always
/// release: spin.toml names the release component).
pub fn build_components(packages: &[&str]) -> anyhow::Result<()> {
    let mut command = cargo();
    command.arg("build");
    for package in packages {
        command.args(["-p", package]);
    }
    run_cmd(command.args(["--target", xtask::prereq::WASM_TARGET, "--release"]))
}

/// The debug origin with [`TEST_FEATURES`]: what the test harness and the quick benchmark run.
pub fn build_test_origin() -> anyhow::Result<()> {
    build_debug_bins(&["aside-origin"])
}

/// `cargo build` of the binaries `bins` (debug), with the features of `cargo test --workspace
/// --features` [`TEST_FEATURES`]: the same feature resolution as the test run, so neither build
/// recompiles what the other compiled (a `-p` build resolves its own features: after the tests, the
/// quick benchmark's `-p aside-host` and `-p aside-bench` rebuilt wasmtime-wasi, redis, tokio and
/// rustls, 6.5 minutes of a cold CI run).
pub fn build_debug_bins(bins: &[&str]) -> anyhow::Result<()> {
    let mut command = cargo();
    command.args(["build", "--workspace", "--features", TEST_FEATURES]);
    for bin in bins {
        command.args(["--bin", bin]);
    }
    run_cmd(&mut command)
}
