//! The project's one token issuer ([`SigningKey`], [`Issuer`], jsonwebtoken underneath), and the local
//! identity provider of `cargo xtask up` built on it ([`LocalIssuer`]): one Ed25519 signing key in the
//! state folder's secrets (`auth-signing-key`, mode 0600, never printed), its public JWKS for the edge's
//! `auth_jwks`, and tokens signed with it (`cargo xtask token`, the ready ones `up` writes next to the
//! key, the bench's clients). The test harness's throwaway provider is [`Issuer::throwaway`] (feature
//! `test-keys`, which adds RSA and P-256 keys).
//!
//! Only for a local stack: a deployment points the edge at its real identity provider's JWKS (README,
//! "Deploying the edge to Spin").

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::local;

/// The `iss` of local tokens (the edge's `auth_issuer` under `up`).
pub const ISSUER: &str = "aside-local";
/// The `aud` of local tokens (the edge's `auth_audience` under `up`).
pub const AUDIENCE: &str = "aside";
const KID: &str = "aside-local-1";
/// How long a local token is valid.
const LIFETIME_SECS: i64 = 7 * 24 * 3600;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The ready tokens `up` writes to its secrets folder, for the curl lines it prints: (file, sub, scope).
pub const READY_TOKENS: [(&str, &str, &str); 3] = [
    (
        "token-admin",
        "admin",
        "profiles:read profiles:write profiles:admin",
    ),
    ("token-user-1", "1", "profiles:read profiles:write"),
    ("token-reader", "reader", "profiles:read"),
];

/// One signing key and its public JWK: the project's one way to sign client tokens (`up`'s local
/// issuer, the bench's clients and the tests' throwaway identity provider), with jsonwebtoken.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public JWK (with `kid`, `alg` and `use`).
    pub jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl SigningKey {
    /// The Ed25519 key of this 32-byte seed, for EdDSA. (jsonwebtoken reads the private key as
    /// PKCS#8; the public JWK is written from the raw public key, which it cannot derive from it.)
    pub fn ed25519(kid: &str, seed: &[u8; 32]) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let der = key
            .to_pkcs8_der()
            .expect("an Ed25519 key encodes as PKCS#8");
        let x = b64(key.verifying_key().as_bytes());
        Self {
            kid: kid.to_string(),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x}),
        }
    }

    /// A fresh Ed25519 key for EdDSA.
    pub fn ed(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        assert_eq!(n, 32, "getrandom failed");
        Self::ed25519(kid, &seed)
    }

    /// A fresh RSA-2048 key for RS256.
    #[cfg(feature = "test-keys")]
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA key generation");
        let der = key.to_pkcs1_der().expect("PKCS#1 DER");
        Self::with_derived_jwk(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    /// A fresh P-256 key for ES256.
    #[cfg(feature = "test-keys")]
    pub fn ec(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        Self::with_derived_jwk(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(&key.serialize_der()),
        )
    }

    #[cfg(feature = "test-keys")]
    fn with_derived_jwk(kid: &str, algorithm: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, algorithm).expect("public JWK");
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Self {
            kid: kid.to_string(),
            algorithm,
            encoding,
            jwk: serde_json::to_value(jwk).expect("JWK serialises"),
        }
    }

    /// `claims` signed with this key (`kid` in the header).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing")
    }
}

/// An identity provider's signing side: its `iss`, the `aud` its tokens name, its keys, and how long
/// a token it issues is valid.
#[derive(Debug)]
pub struct Issuer {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<SigningKey>,
    /// Lifetime of the tokens [`Issuer::claims`] makes, in seconds.
    pub lifetime_secs: i64,
}

impl Issuer {
    /// The tests' throwaway provider: three fresh keys, `rs` (RS256), `es` (ES256) and `ed` (EdDSA),
    /// tokens valid for 5 minutes. Nothing is written to disk.
    #[cfg(feature = "test-keys")]
    pub fn throwaway() -> Self {
        Self {
            issuer: "https://id.aside.test/".to_string(),
            audience: "aside-edge".to_string(),
            keys: vec![
                SigningKey::rsa("rs"),
                SigningKey::ec("es"),
                SigningKey::ed("ed"),
            ],
            lifetime_secs: 300,
        }
    }

    /// The key with this `kid`.
    pub fn key(&self, kid: &str) -> &SigningKey {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .unwrap_or_else(|| panic!("no signing key {kid}"))
    }

    /// The public JWKS of every key (for the edge's `auth_jwks`).
    pub fn jwks(&self) -> String {
        self.jwks_of(&self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>())
    }

    /// The public JWKS of the keys named.
    pub fn jwks_of(&self, kids: &[&str]) -> String {
        let keys: Vec<&Value> = kids.iter().map(|kid| &self.key(kid).jwk).collect();
        json!({ "keys": keys }).to_string()
    }

    /// Valid claims for `sub` with `scope` (space-separated): this issuer and audience, valid from 5 s
    /// ago (clock skew) for the issuer's lifetime.
    pub fn claims(&self, sub: &str, scope: &str) -> Value {
        let now = now_secs();
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "scope": scope,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + self.lifetime_secs,
        })
    }

    /// `claims` signed with key `kid`.
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        self.key(kid).sign(claims)
    }
}

/// The local issuer of `cargo xtask up` and the bench: one Ed25519 key kept in the state folder.
#[derive(Debug)]
pub struct LocalIssuer {
    issuer: Issuer,
}

impl LocalIssuer {
    /// Reads `secrets/auth-signing-key`, generating it on first use.
    pub fn load_or_generate(secrets: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(secrets)?;
        let path = secrets.join("auth-signing-key");
        let seed_hex = match std::fs::read_to_string(&path) {
            Ok(existing) => existing.trim().to_string(),
            Err(_) => {
                let seed = format!("{}{}", local::generate_secret(), local::generate_secret());
                local::write_private(&path, &seed)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                seed
            }
        };
        let seed: [u8; 32] = (0..seed_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(seed_hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
            .and_then(|s| s.try_into().ok())
            .with_context(|| {
                format!(
                    "{} is not a 64-hex-digit key; delete it to make a new one",
                    path.display()
                )
            })?;
        Ok(Self {
            issuer: Issuer {
                issuer: ISSUER.to_string(),
                audience: AUDIENCE.to_string(),
                keys: vec![SigningKey::ed25519(KID, &seed)],
                lifetime_secs: LIFETIME_SECS,
            },
        })
    }

    /// The public JWKS (one key) for the edge's `auth_jwks`.
    pub fn jwks(&self) -> String {
        self.issuer.jwks()
    }

    /// A token for `sub` with `scope` (space-separated), valid for a week.
    pub fn token(&self, sub: &str, scope: &str) -> String {
        self.issuer.token(KID, &self.issuer.claims(sub, scope))
    }

    /// Writes [`READY_TOKENS`] into `secrets` (mode 0600) and returns their paths.
    pub fn write_ready_tokens(&self, secrets: &Path) -> anyhow::Result<Vec<PathBuf>> {
        READY_TOKENS
            .iter()
            .map(|(file, sub, scope)| {
                let path = secrets.join(file);
                local::write_private(&path, &self.token(sub, scope))?;
                Ok(path)
            })
            .collect()
    }
}

/// `cargo xtask token`: prints a token of the local issuer of `cargo xtask up` (the state folder's key).
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The subject (`sub`): a user id owns that profile.
    #[arg(long)]
    pub sub: String,
    /// Scopes, space- or comma-separated: profiles:read, profiles:write, profiles:admin.
    #[arg(long, default_value = "profiles:read")]
    pub scope: String,
    /// The state folder of `cargo xtask up`.
    #[arg(long, default_value = ".aside")]
    pub state_dir: PathBuf,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let state = if args.state_dir.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask has a parent")
            .join(&args.state_dir)
    } else {
        args.state_dir.clone()
    };
    let issuer = LocalIssuer::load_or_generate(&state.join("secrets"))?;
    let scope = args.scope.replace(',', " ");
    println!("{}", issuer.token(&args.sub, scope.trim()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_kept_private_and_its_tokens_verify_against_its_jwks() {
        let dir = std::env::temp_dir().join(format!("aside-token-test-{}", std::process::id()));
        let issuer = LocalIssuer::load_or_generate(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("auth-signing-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = issuer.token("7", "profiles:read");
        let (input, signature) = token.rsplit_once('.').unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&issuer.jwks()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let public = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .unwrap();
        public
            .verify_strict(
                input.as_bytes(),
                &ed25519_dalek::Signature::from_slice(&signature).unwrap(),
            )
            .unwrap();
        let claims = input.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (claims["sub"].as_str(), claims["iss"].as_str()),
            (Some("7"), Some(ISSUER))
        );
        // The same key next time.
        let again = LocalIssuer::load_or_generate(&dir).unwrap();
        assert_eq!(again.jwks(), issuer.jwks());
        assert!(!issuer.jwks().contains("\"d\""), "public only");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
