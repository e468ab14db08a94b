//! `aside-delay`: a TCP proxy that delays each direction by a fixed one-way latency; `cargo xtask bench
//! --topology` puts one on each hop of the stack (see docs/benchmarks.md and [`aside_bench::delay`]).

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "aside-delay",
    about = "TCP proxy that delays each direction by a fixed one-way latency"
)]
struct Args {
    /// Where to accept connections, e.g. 127.0.0.1:7001.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to relay them, e.g. 127.0.0.1:6379.
    #[arg(long)]
    upstream: SocketAddr,
    /// One-way latency added in each direction, in milliseconds (fractions allowed: 0.25).
    #[arg(long, value_parser = aside_bench::delay::parse_delay_ms)]
    delay_ms: Duration,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("aside-delay: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "aside-delay: {} -> {}, {:?} each way",
        args.listen, args.upstream, args.delay_ms
    );
    match aside_bench::delay::serve(listener, args.upstream, args.delay_ms) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aside-delay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
