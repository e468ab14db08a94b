//! `cargo xtask test`: everything `.ci/run` runs.

use clap::Args;

use crate::cmd::{TEST_FEATURES, build_components, build_test_bins, cargo, run_cmd};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Seconds each fuzz target runs after the tests (0: no fuzzing). See `cargo xtask fuzz`.
    #[arg(long, default_value_t = CI_FUZZ_SECONDS)]
    pub fuzz_seconds: u64,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(trailing_var_arg = true)]
    pub cargo_test_args: Vec<String>,
}

/// Per fuzz target in `cargo xtask test` (and so in CI): the 30 s, which keeps the whole fuzz step
/// (cold build included) within about two minutes on two cores; docs/security.md has the measurement.
const CI_FUZZ_SECONDS: u64 = 30;

/// The test harness's runtime switch (tests/src/harness/edge.rs reads it): `spin` or `host`.
const EDGE_RUNTIME_ENV: &str = "ASIDE_EDGE_RUNTIME";

/// Decides, once for the whole run, which runtime the edge tests use, and says so in one line: real Spin
/// when a Spin 4 CLI is found (`ASIDE_SPIN`, else `spin` on PATH), else the bundled host.
/// `ASIDE_EDGE_RUNTIME=host|spin` overrides the choice; a broken `ASIDE_SPIN` is an error.
fn edge_runtime() -> anyhow::Result<&'static str> {
    use xtask::spin::{NotFound, find};
    let forced = std::env::var(EDGE_RUNTIME_ENV).unwrap_or_default();
    let runtime = match (forced.as_str(), find()) {
        ("host" | "bundled", found) => {
            let spin = found.map_or_else(|e| e.to_string(), |cli| format!("{cli} is not used"));
            println!(
                "xtask: edge tests run under the bundled host ({EDGE_RUNTIME_ENV}={forced}; {spin})"
            );
            "host"
        }
        ("spin" | "", Ok(cli)) => {
            println!("xtask: edge tests run under real Spin: `spin up` of {cli}");
            "spin"
        }
        (_, Err(e @ NotFound::BadOverride { .. })) => anyhow::bail!("{e}"),
        ("spin", Err(e)) => anyhow::bail!("{EDGE_RUNTIME_ENV}=spin, but {e}"),
        ("", Err(e)) => {
            println!("xtask: edge tests run under the bundled host, NOT Spin: {e}");
            "host"
        }
        (other, _) => anyhow::bail!("{EDGE_RUNTIME_ENV}={other:?}: expected `spin` or `host`"),
    };
    Ok(runtime)
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    xtask::prereq::ensure_test_tools()?;
    // The PyPI tools the tests run, installed (or found installed) before any test starts, so that an
    // install failure is one clear error here: the API tester (tests/tests/openapi_conformance.rs) and
    // the manifest validators (tests/tests/deploy.rs). The tests find the same venvs.
    let target = crate::cmd::workspace_root().join("target");
    xtask::prereq::api_tester(&target)?;
    xtask::prereq::manifest_validators(&target)?;
    // The OpenID provider (npm) the authentication tests start (tests/tests/oidc.rs).
    xtask::prereq::oidc_provider(&target)?;
    // The edge component the host runs in the tests, and the origin binary the harness starts.
    build_components(&["aside-edge", "aside-wait"])?;
    build_test_bins()?;
    let runtime = edge_runtime()?;
    // The README test (tests/tests/readme.rs) runs `cargo xtask up` with this very xtask.
    run_cmd(
        cargo()
            .args(["test", "--workspace", "--features", TEST_FEATURES])
            .args(&args.cargo_test_args)
            .env(EDGE_RUNTIME_ENV, runtime)
            .env("ASIDE_XTASK", std::env::current_exe()?),
    )?;
    // The benchmark's quick run on the binaries built above; its report is checked. A filtered run is a
    // targeted one: it skips it.
    if args.cargo_test_args.is_empty() {
        crate::bench::quick_check()?;
    }
    if args.fuzz_seconds > 0 {
        crate::fuzz::run(crate::fuzz::FuzzArgs {
            seconds: args.fuzz_seconds,
            jobs: None,
            targets: Vec::new(),
        })?;
    }
    Ok(())
}
