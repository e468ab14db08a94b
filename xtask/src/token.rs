//! The local identity provider of `cargo xtask up`: one Ed25519 signing key in the state folder's
//! secrets (`auth-signing-key`, mode 0600, never printed), its public JWKS for the edge's `auth_jwks`,
//! and tokens signed with it (`cargo xtask token`, and the ready ones `up` writes next to the key).
//!
//! Only for a local stack: a deployment points the edge at its real identity provider's JWKS (README,
//! "Deploying the edge to Spin").

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::local;

/// The `iss` of local tokens (the edge's `auth_issuer` under `up`).
pub const ISSUER: &str = "aside-local";
/// The `aud` of local tokens (the edge's `auth_audience` under `up`).
pub const AUDIENCE: &str = "aside";
const KID: &str = "aside-local-1";
/// How long a local token is valid.
const LIFETIME_SECS: u64 = 7 * 24 * 3600;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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

/// The local signing key. (Signing is a few lines of RFC 7515 over ed25519-dalek, so that xtask needs
/// no JWT library; the edge verifies with jsonwebtoken.)
pub struct LocalIssuer {
    key: SigningKey,
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
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public JWKS (one key) for the edge's `auth_jwks`.
    pub fn jwks(&self) -> String {
        serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": KID,
            "x": b64(self.key.verifying_key().as_bytes()),
        }]})
        .to_string()
    }

    /// A token for `sub` with `scope` (space-separated), valid for a week.
    pub fn token(&self, sub: &str, scope: &str) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope,
            "iat": now, "nbf": now, "exp": now + LIFETIME_SECS,
        });
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": KID});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", b64(&signature.to_bytes())))
    }

    /// Writes [`READY_TOKENS`] into `secrets` (mode 0600) and returns their paths.
    pub fn write_ready_tokens(&self, secrets: &Path) -> anyhow::Result<Vec<PathBuf>> {
        READY_TOKENS
            .iter()
            .map(|(file, sub, scope)| {
                let path = secrets.join(file);
                local::write_private(&path, &self.token(sub, scope)?)?;
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
    println!("{}", issuer.token(&args.sub, scope.trim())?);
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
        let token = issuer.token("7", "profiles:read").unwrap();
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
