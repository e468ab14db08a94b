//! The TLS trust of the bundled host's `spin:redis` connections, apart from the binding itself so that
//! the instance state and the binding both use it without importing each other.

use std::path::Path;

use anyhow::Context as _;
use redis::{ConnectionAddr, IntoConnectionInfo as _};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// How `spin:redis` connects to a `rediss://` address: like Spin 4 (TLS with certificate and host
/// name verification against the system's roots), or against a given CA instead.
///
/// Spin 4 builds its Redis client with native-tls (OpenSSL on Linux); this host uses rustls with the
/// system's roots (`rustls-native-certs`, which reads the same store and the same `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` overrides). One difference: Spin's client also accepts `rediss://...#insecure`
/// (no verification); this one refuses it, and the edge never builds such an address.
#[derive(Debug, Default)]
pub(crate) struct RedisTls {
    certificates: Option<redis::TlsCertificates>,
}

impl RedisTls {
    /// Trust the system's roots (`None`), or only the CA(s) in the PEM file `ca_file`.
    pub(crate) fn new(ca_file: Option<&Path>) -> anyhow::Result<Self> {
        // rustls needs a process-wide crypto provider; *ring* is the one this crate builds.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Some(path) = ca_file else {
            return Ok(Self::default());
        };
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the Redis CA file {}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("the Redis CA file {} is malformed", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "the Redis CA file {} holds no PEM certificate",
            path.display()
        );
        Ok(Self {
            certificates: Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            }),
        })
    }

    /// The client for a guest's address (a `redis://` or `rediss://` URL).
    pub(super) fn client(&self, address: &str) -> redis::RedisResult<redis::Client> {
        let info = address.into_connection_info()?;
        match (&self.certificates, info.addr()) {
            (Some(certificates), ConnectionAddr::TcpTls { .. }) => {
                redis::Client::build_with_tls(info, certificates.clone())
            }
            _ => redis::Client::open(info),
        }
    }
}
