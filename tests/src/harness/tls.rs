//! Throwaway certificate authorities and certificates for the TLS tests, made with rcgen when a test
//! runs and written into its temporary folder (private keys mode 0600). Nothing is committed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that lives for one test run.
pub struct TestCa {
    /// The CA certificate (PEM): what a client or server that should trust this CA is given.
    pub cert_file: PathBuf,
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_file", &self.cert_file)
            .finish()
    }
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("aside test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_file, cert.pem())
            .with_context(|| format!("cannot write {}", cert_file.display()))?;
        Ok(Self {
            cert_file,
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `127.0.0.1` and `localhost`, signed by this CA.
    pub fn server_cert(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.issue(name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for `tls-auth-clients yes`), signed by this CA.
    pub fn client_cert(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.issue(name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> anyhow::Result<CertFiles> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("aside test {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        xtask::local::write_private(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}
