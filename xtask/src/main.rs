//! `cargo xtask <command>`: the project's two commands (and their helpers).
//!
//! * `cargo xtask up`: the whole stack locally (Redis, PostgreSQL, origin, edge), stopped with Ctrl-C;
//!   `cargo xtask status|stop|start` manage its services from another terminal; `cargo xtask reset`
//!   removes what it made, to start over.
//! * `cargo xtask test`: the whole test suite against real servers the tests start themselves.
//! * `cargo xtask fuzz`: the libFuzzer targets of `fuzz/`, each for a bounded time.
//! * `cargo xtask bench`: the benchmark on a stack of its own (docs/benchmarks.md).
//! * `cargo xtask token`: a client token for the edge of a `cargo xtask up` stack.

mod bench;
mod cmd;
mod fuzz;
mod reset;
mod test;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::token;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "aside project commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing, start Redis, PostgreSQL, the origin and the edge, print the URLs; Ctrl-C
    /// stops everything.
    Up(up::UpArgs),
    /// The services of a running `cargo xtask up`: running (pid, port) or down (why), and their logs.
    Status(up::StatusArgs),
    /// Start a service of a running `cargo xtask up` again (after `stop`, a `kill`, or a crash).
    Start(up::StartArgs),
    /// Stop one service of a running `cargo xtask up` (it stays down until `start`), or, without a
    /// service, the whole stack.
    Stop(up::StopArgs),
    /// Start over: remove everything `cargo xtask up` made for a state folder (the folder, the PostgreSQL
    /// cluster wherever it lives, Spin's state); refuses while that stack runs.
    Reset(reset::ResetArgs),
    /// Install what is missing, build the edge component and run every test, then the quick benchmark
    /// and a bounded fuzzing run.
    Test(test::TestArgs),
    /// Build the fuzz targets (fuzz/) and run each for a bounded time from the committed corpus; fails
    /// on a crash, naming the reproducer.
    Fuzz(fuzz::FuzzArgs),
    /// Start a throw-away stack, run the benchmark scenarios, write target/bench/report.{json,md} and
    /// charts.
    Bench(bench::BenchArgs),
    /// Print a client token of the local identity provider of `cargo xtask up` (e.g. `--sub 7 --scope
    /// profiles:read,profiles:write`).
    Token(token::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Status(args) => up::status(args),
        Command::Start(args) => up::start(args),
        Command::Stop(args) => up::stop(args),
        Command::Reset(args) => reset::run(args),
        Command::Test(args) => test::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
