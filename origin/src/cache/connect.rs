//! The origin's Redis client: `redis://` (plain TCP) or `rediss://` (TLS, through rustls), with an
//! optional private CA and an optional client certificate.
//!
//! Everything that can be checked without the network is checked here, at start-up, so that a
//! mistake in the TLS settings stops the origin with a clear message instead of turning every request
//! into a Redis failure. What can only fail on the network (an untrusted or expired server
//! certificate, a refused client certificate) is a Redis failure like any other: reads fall back to
//! PostgreSQL and the breaker skips Redis for its back-off.

use std::path::Path;

use anyhow::{Context as _, bail};
use redis::io::tcp::TcpSettings;
use redis::{ConnectionAddr, IntoConnectionInfo as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::settings::RedisArgs;
use crate::secret::Secret;

/// The client for `url` with the TLS settings of `args`.
///
/// The connection does not send `CLIENT SETINFO` (library name and version): the `origin` ACL user
/// is not granted it, so on Redis 7.2 and later every connection would add a denial to `ACL LOG`
/// and hide real ones; Redis 7.0 does not know the command, so it cannot be granted in an ACL file
/// that 7.0 must also load.
pub fn client(url: &Secret, args: &RedisArgs) -> anyhow::Result<redis::Client> {
    // The parser's error may quote the URL, and the URL holds the password: say only what is wrong.
    let info = url
        .expose()
        .into_connection_info()
        .map_err(|_| anyhow::anyhow!("the Redis URL is not valid"))?;
    let tls = match info.addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => bail!(
            "the Redis URL asks for TLS without certificate verification (#insecure), which the origin \
             does not do: give the CA that signed the server's certificate with ASIDE_REDIS_CA_FILE"
        ),
        ConnectionAddr::TcpTls { .. } => true,
        _ => false,
    };
    let info = info
        .clone()
        .set_redis_settings(info.redis_settings().clone().set_skip_set_lib_name())
        .set_tcp_settings(tcp_settings());
    let certificates = certificates(args)?;
    if !tls {
        if certificates.is_some() {
            bail!(
                "ASIDE_REDIS_CA_FILE and ASIDE_REDIS_CLIENT_CERT_FILE/KEY_FILE need a rediss:// Redis URL \
                 (the URL given is not TLS)"
            );
        }
        return Ok(redis::Client::open(info)?);
    }
    install_crypto_provider();
    match certificates {
        None => Ok(redis::Client::open(info)?),
        Some(certificates) => redis::Client::build_with_tls(info, certificates)
            .context("the Redis TLS settings cannot be used"),
    }
}

/// The socket options of every connection the origin opens to Redis or a Sentinel: `TCP_NODELAY`.
///
/// The origin multiplexes every request's commands over one connection, so a command is often
/// written while an earlier one is still unacknowledged; with Nagle's algorithm on (the redis
/// crate's default) the kernel holds it back until that acknowledgement arrives, adding up to a
/// round trip to the command. On loopback that is invisible; one network hop away it is not.
pub fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// rustls needs a process-wide crypto provider; the origin uses *ring* (the one the rest of the
/// workspace already builds). Installing it explicitly keeps TLS working even if another dependency
/// ever enables a second provider, when rustls would no longer pick one by itself.
fn install_crypto_provider() {
    // An error only means that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA and client certificate files of `args`, read and checked; `None` when none is set.
fn certificates(args: &RedisArgs) -> anyhow::Result<Option<redis::TlsCertificates>> {
    let root_cert = match &args.redis_ca_file {
        Some(path) => Some(read_certificates(path, "ASIDE_REDIS_CA_FILE")?),
        None => None,
    };
    let client_tls = match (&args.redis_client_cert_file, &args.redis_client_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read_certificates(cert, "ASIDE_REDIS_CLIENT_CERT_FILE")?,
            client_key: read_private_key(key)?,
        }),
        _ => bail!(
            "ASIDE_REDIS_CLIENT_CERT_FILE and ASIDE_REDIS_CLIENT_KEY_FILE go together: set both or neither"
        ),
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// A PEM file holding at least one certificate, and nothing unparsable.
fn read_certificates(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, setting)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            anyhow::anyhow!(
                "{setting}: {} holds a malformed certificate: {e}",
                path.display()
            )
        })?;
        count += 1;
    }
    if count == 0 {
        bail!(
            "{setting}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(pem)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1). The error never quotes the file.
fn read_private_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, "ASIDE_REDIS_CLIENT_KEY_FILE")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        anyhow::anyhow!(
            "ASIDE_REDIS_CLIENT_KEY_FILE: {} holds no usable PEM private key",
            path.display()
        )
    })?;
    Ok(pem)
}

fn read(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use std::path::PathBuf;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisArgs,
    }

    fn args(extra: &[&str]) -> RedisArgs {
        let mut argv = vec!["test"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().redis
    }

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "aside-redis-tls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn error(url: &str, args: &RedisArgs) -> String {
        format!("{:#}", client(&Secret::new(url), args).unwrap_err())
    }

    /// A self-signed CA certificate and its key, as PEM, made for the test.
    fn certificate() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn plain_and_tls_urls_without_files_are_accepted() {
        client(
            &Secret::new("redis://origin:pw@127.0.0.1:6379/3"),
            &args(&[]),
        )
        .unwrap();
        client(
            &Secret::new("rediss://origin:pw@redis.internal:6380/0"),
            &args(&[]),
        )
        .unwrap();
    }

    #[test]
    fn every_connection_turns_nagle_off() {
        for url in [
            "redis://origin:pw@127.0.0.1:6379/3",
            "rediss://origin:pw@redis.internal:6380/0",
        ] {
            let client = client(&Secret::new(url), &args(&[])).unwrap();
            assert!(
                client.get_connection_info().tcp_settings().nodelay(),
                "{url}: TCP_NODELAY is off"
            );
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        let message = error("redis://origin:hunter2@:6379/notadb", &args(&[]));
        assert!(message.contains("not valid"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn insecure_tls_is_refused() {
        let message = error("rediss://origin:pw@127.0.0.1:6380/#insecure", &args(&[]));
        assert!(message.contains("#insecure"), "{message}");
    }

    #[test]
    fn tls_files_need_a_tls_url() {
        let dir = dir();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, certificate().0).unwrap();
        let ca_arg = ca.to_str().unwrap();
        let message = error(
            "redis://origin:pw@127.0.0.1:6379",
            &args(&["--redis-ca-file", ca_arg]),
        );
        assert!(message.contains("rediss://"), "{message}");
        client(
            &Secret::new("rediss://origin:pw@127.0.0.1:6380"),
            &args(&["--redis-ca-file", ca_arg]),
        )
        .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_empty_or_malformed_files_are_named() {
        let dir = dir();
        let url = "rediss://origin:pw@127.0.0.1:6380";
        let missing = dir.join("missing.pem");
        let message = error(url, &args(&["--redis-ca-file", missing.to_str().unwrap()]));
        assert!(
            message.contains("ASIDE_REDIS_CA_FILE") && message.contains("cannot read"),
            "{message}"
        );

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let message = error(url, &args(&["--redis-ca-file", empty.to_str().unwrap()]));
        assert!(message.contains("no PEM certificate"), "{message}");

        let (cert_pem, key_pem) = certificate();
        let cert = dir.join("client.pem");
        std::fs::write(&cert, cert_pem).unwrap();
        let key = dir.join("client.key");
        std::fs::write(&key, key_pem).unwrap();
        let message = error(
            url,
            &args(&["--redis-client-cert-file", cert.to_str().unwrap()]),
        );
        assert!(message.contains("go together"), "{message}");
        let message = error(
            url,
            &args(&[
                "--redis-client-cert-file",
                cert.to_str().unwrap(),
                "--redis-client-key-file",
                cert.to_str().unwrap(),
            ]),
        );
        assert!(message.contains("no usable PEM private key"), "{message}");
        client(
            &Secret::new(url),
            &args(&[
                "--redis-client-cert-file",
                cert.to_str().unwrap(),
                "--redis-client-key-file",
                key.to_str().unwrap(),
                "--redis-ca-file",
                cert.to_str().unwrap(),
            ]),
        )
        .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
