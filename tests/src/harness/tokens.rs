//! A throwaway identity provider for the edge's client authentication: signing keys generated at test
//! time (RS256, ES256, EdDSA), their public JWKS for the edge's `auth_jwks`, and tokens signed with
//! them. Nothing is written to disk or committed.
//!
//! ```no_run
//! use aside_tests::harness::TestIssuer;
//! let idp = TestIssuer::new();
//! let token = idp.token("es", &idp.claims("7", "profiles:read"));
//! let jwks = idp.jwks();
//! # let _ = (token, jwks);
//! ```

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// One signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public JWK (with `kid`, `alg` and `use`).
    pub jwk: Value,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl TestKey {
    /// A fresh RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA key generation");
        let der = key.to_pkcs1_der().expect("PKCS#1 DER");
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(&key.serialize_der()),
        )
    }

    /// A fresh Ed25519 key for EdDSA. (jsonwebtoken cannot derive the public JWK from ring's PKCS#8
    /// v2 document, so it is written from rcgen's raw public key.)
    pub fn ed(kid: &str) -> Self {
        use base64::Engine as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key_raw());
        Self {
            kid: kid.to_string(),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&key.serialize_der()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x}),
        }
    }

    fn new(kid: &str, algorithm: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("public JWK");
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

/// The test identity provider: an issuer, an audience and three keys (`rs`, `es`, `ed`).
#[derive(Debug)]
pub struct TestIssuer {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<TestKey>,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    pub fn new() -> Self {
        Self {
            issuer: "https://id.aside.test/".to_string(),
            audience: "aside-edge".to_string(),
            keys: vec![TestKey::rsa("rs"), TestKey::ec("es"), TestKey::ed("ed")],
        }
    }

    /// The key with this `kid`.
    pub fn key(&self, kid: &str) -> &TestKey {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .unwrap_or_else(|| panic!("no test key {kid}"))
    }

    /// The public JWKS of every key.
    pub fn jwks(&self) -> String {
        self.jwks_of(&self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>())
    }

    /// The public JWKS of the keys named.
    pub fn jwks_of(&self, kids: &[&str]) -> String {
        let keys: Vec<&Value> = kids.iter().map(|kid| &self.key(kid).jwk).collect();
        json!({ "keys": keys }).to_string()
    }

    /// Valid claims for `sub` with `scope` (space-separated): this issuer and audience, valid from 5 s
    /// ago for 5 minutes.
    pub fn claims(&self, sub: &str, scope: &str) -> Value {
        let now = now_secs();
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "scope": scope,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + 300,
        })
    }

    /// `claims` signed with key `kid`.
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        self.key(kid).sign(claims)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}
