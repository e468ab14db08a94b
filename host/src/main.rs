//! `aside-host`: runs a Spin application (spin.toml) like `spin up`, on the bundled
//! Wasmtime 44 host. Variables come from `--variable name=value`, then `SPIN_VARIABLE_<NAME>`,
//! then the manifest defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aside_host::{
    DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT, DEFAULT_MAX_INSTANCE_REUSE_COUNT, Host, HostConfig,
};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "aside-host",
    version,
    about = "Run a Spin 4 HTTP application on Wasmtime 44"
)]
struct Args {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,

    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Requests one instance serves before it is dropped.
    #[arg(long, default_value_t = DEFAULT_MAX_INSTANCE_REUSE_COUNT)]
    max_instance_reuse_count: usize,

    /// Requests one instance may serve concurrently.
    #[arg(long, default_value_t = DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT)]
    max_instance_concurrent_reuse_count: usize,

    /// How long an idle instance is kept, in whole seconds (`1`, `2s`), as Spin 4.0.2 reads it.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    idle_instance_timeout: Duration,

    /// Set an application variable (`name=value`); may be repeated.
    #[arg(long = "variable", value_name = "NAME=VALUE", value_parser = parse_variable)]
    variables: Vec<(String, String)>,

    /// Directory for compiled components (default: <manifest dir>/target/aside-host-cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,

    /// PEM file of the CA that signed Redis's TLS certificate, trusted for `rediss://` instead of the
    /// system's roots (a private or test CA). `spin up` has no such flag: there, add the CA to the
    /// system's store or point `SSL_CERT_FILE` at a bundle that includes it.
    #[arg(long, value_name = "PEM")]
    redis_ca_file: Option<PathBuf>,
}

/// As `spin up` 4.0.2 reads it: whole seconds, with or without an `s` (`1`, `2s`). Spin's help also
/// lists `ms`, `us` and `ns`, but 4.0.2 refuses them, and so does this host, so that a command line that
/// works here works under Spin.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.strip_suffix('s').unwrap_or(s);
    digits.parse::<u64>().map(Duration::from_secs).map_err(|_| {
        format!("invalid duration {s:?}: whole seconds, e.g. `1` or `2s` (as Spin 4.0.2 accepts)")
    })
}

fn parse_variable(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE".to_string())?;
    Ok((k.trim().to_string(), v.to_string()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = HostConfig::new(&args.from);
    config.listen = args.listen;
    config.max_instance_reuse_count = args.max_instance_reuse_count;
    config.max_instance_concurrent_reuse_count = args.max_instance_concurrent_reuse_count;
    config.idle_instance_timeout = args.idle_instance_timeout;
    config.cache_dir = args.cache_dir;
    config.redis_ca_file = args.redis_ca_file;
    config.variables = args.variables.into_iter().collect();

    let host = Host::start(config).await?;
    println!("Serving {}", host.url());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    host.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        // What `spin up` 4.0.2 accepts and refuses (checked against it by hand: `500ms` is an error
        // there although its help lists `ms`).
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("500ms").is_err());
        assert!(parse_duration("2m").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
