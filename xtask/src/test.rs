//! `cargo xtask test`: everything `.ci/run` runs.

use clap::Args;

use crate::{cargo, run_cmd};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Seconds each fuzz target runs after the tests (0: no fuzzing). See `cargo xtask fuzz`.
    #[arg(long, default_value_t = CI_FUZZ_SECONDS)]
    pub fuzz_seconds: u64,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(trailing_var_arg = true)]
    pub cargo_test_args: Vec<String>,
}

/// Test hooks (delays, counters) are compiled into the origin only for tests; release and production
/// builds never have them.
pub const TEST_FEATURES: &str = "aside-origin/test-hooks";

/// Per fuzz target in `cargo xtask test` (and so in CI): the 30 s, which keeps the whole fuzz step
/// (cold build included) within about two minutes on two cores; docs/security.md has the measurement.
const CI_FUZZ_SECONDS: u64 = 30;

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    xtask::prereq::ensure_test_tools()?;
    // The edge component the host runs in the tests, and the origin binary the harness starts.
    run_cmd(cargo().args([
        "build",
        "-p",
        "aside-edge",
        "--target",
        xtask::prereq::WASM_TARGET,
        "--release",
    ]))?;
    run_cmd(cargo().args(["build", "-p", "aside-origin", "--features", TEST_FEATURES]))?;
    run_cmd(
        cargo()
            .args(["test", "--workspace", "--features", TEST_FEATURES])
            .args(&args.cargo_test_args),
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
