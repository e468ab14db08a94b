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

/// The `cargo` that runs xtask (`CARGO`), else `cargo` on PATH, without the variables `cargo run` set
/// for xtask itself (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...): build scripts that watch them
/// (ring's watches eight) would otherwise see them change between `cargo xtask ...` and a plain `cargo
/// build`, and each would rebuild ring and everything above it (rustls, redis, wasmtime-wasi-http)
/// for the other.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            command.env_remove(name);
        }
    }
    command
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

/// The debug binaries the test harness and the quick benchmark run: the origin with
/// [`TEST_FEATURES`], the bundled host, the benchmark's driver, load generator and delay proxy.
const DEBUG_BINS: [&str; 5] = [
    "aside-origin",
    "aside-host",
    "aside-bench",
    "aside-load",
    "aside-delay",
];

/// `cargo build` of [`DEBUG_BINS`] with the features of `cargo test --workspace --features`
/// [`TEST_FEATURES`], one command for the test run and the quick benchmark alike: the same feature
/// resolution as the tests' own build, so none of the three recompiles what another compiled (`-p`
/// builds resolve their own features: after the tests, the quick benchmark's `-p aside-host` and `-p
/// aside-bench` rebuilt wasmtime-wasi, redis, tokio and rustls, 6.5 minutes of a cold CI run).
pub fn build_test_bins() -> anyhow::Result<()> {
    let mut command = cargo();
    command.args(["build", "--workspace", "--features", TEST_FEATURES]);
    for bin in DEBUG_BINS {
        command.args(["--bin", bin]);
    }
    run_cmd(&mut command)
}
