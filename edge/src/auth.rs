//! Who the client is (authentication) and what it may do (authorization), before any tier is touched.
//!
//! **Tokens.** A client sends `Authorization: Bearer <JWT>`. The token is verified here, in the
//! component, against the public keys of a JWKS document (the `auth_jwks` variable, parsed once per
//! instance into a [`Verifier`]): the key is found by the token's `kid` (several keys may be listed, for
//! rotation; a token without `kid` is tried only when the set has exactly one key), and the **algorithm
//! is the key's** (its `alg`, or the one its type and curve imply), never the token header's alone: a
//! header naming another algorithm (`none`, or `HS256` "signed" with the public key) is refused. Then
//! `iss` and `aud` must be the configured ones, `exp` must not have passed and `nbf` must have, both
//! with `auth_leeway_s` of clock skew; `sub` is required.
//!
//! **Scopes** come from `scope` (a space-separated string) and/or `scp` (an array or a string):
//! `profiles:read`, `profiles:write`, `profiles:admin`. **Ownership:** the claim named by
//! `auth_user_claim` (default `sub`), when it is a user id, is the profile the caller owns.
//!
//! | request | allowed with |
//! | --- | --- |
//! | `GET /users/{id}?fields=` within [`PUBLIC_FIELDS`] | `profiles:read` (any id) |
//! | `GET /users/{id}` (other fields) | `profiles:read` and owner of `{id}` |
//! | `PUT`, `PATCH`, `DELETE /users/{id}` | `profiles:write` and owner of `{id}` |
//! | `POST /users` | `profiles:admin` |
//! | anything else under `/users` (the origin answers 404/405) | a valid token |
//!
//! `profiles:admin` allows every request on every profile. A refused token is a 401 with
//! `WWW-Authenticate: Bearer realm="aside", error="invalid_token", error_description="..."` (RFC 6750;
//! no token at all: `Bearer realm="aside"` only); a valid token without the right is a 403 with
//! `error="insufficient_scope"` and the scope that would do.
//!
//! Everything here is pure (the clock is jsonwebtoken's, the host's wall clock) and unit-tested
//! natively.

use std::fmt;

use aside_shared::{ApiError, ErrorCode, Field, FieldSelection, UserId};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The `realm` of every `WWW-Authenticate` challenge.
pub const REALM: &str = "aside";

/// The longest `Authorization` value looked at; a longer one is refused without parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Fields any caller with `profiles:read` may read of any profile (`?fields=full_name,department`):
/// a directory entry, nothing personal beyond the name.
pub const PUBLIC_FIELDS: [Field; 2] = [Field::FullName, Field::Department];

pub const SCOPE_READ: &str = aside_shared::scopes::READ;
pub const SCOPE_WRITE: &str = aside_shared::scopes::WRITE;
pub const SCOPE_ADMIN: &str = aside_shared::scopes::ADMIN;

/// What the tokens must say besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// The one accepted `iss`.
    pub issuer: String,
    /// The `aud` that must be among the token's audiences.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The claim holding the caller's own user id (`sub`, `uid`, ...).
    pub user_claim: String,
}

/// One usable key of the JWKS.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// The parsed JWKS and the expectations: verifies tokens.
pub struct Verifier {
    keys: Vec<Key>,
    expectations: Expectations,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| (k.kid.as_deref(), k.algorithm))
                    .collect::<Vec<_>>(),
            )
            .field("expectations", &self.expectations)
            .finish()
    }
}

impl PartialEq for Verifier {
    fn eq(&self, other: &Self) -> bool {
        let ids = |v: &Verifier| {
            v.keys
                .iter()
                .map(|k| (k.kid.clone(), k.algorithm))
                .collect::<Vec<_>>()
        };
        self.expectations == other.expectations && ids(self) == ids(other)
    }
}

/// Why a JWKS document cannot be used. Says what is wrong, never a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON of the shape `{"keys": [ ... ]}`.
    NotAJwks,
    /// A key carries private or symmetric material (`d`, `p`, `q`, `k`...): the JWKS is public.
    SecretMaterial,
    /// No key is a public signing key this edge can use.
    NoUsableKey,
    /// Two keys share one `kid`.
    DuplicateKid,
}

impl JwksError {
    pub fn expected(self) -> &'static str {
        match self {
            JwksError::NotAJwks => "a JWKS document: {\"keys\": [ ...JWK objects... ]}",
            JwksError::SecretMaterial => {
                "public keys only: a key in the JWKS has private or symmetric parameters (d, p, q, dp, dq, qi, k); \
                 publish the public half"
            }
            JwksError::NoUsableKey => {
                "at least one public signing key (RSA, EC P-256/P-384 or OKP Ed25519, with a \
                 signature `alg` if it has one)"
            }
            JwksError::DuplicateKid => "a distinct `kid` for every key",
        }
    }
}

/// JWK members that hold private or symmetric key material.
const SECRET_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

impl Verifier {
    /// Parses a JWKS document. Keys meant for encryption (`use: enc`) or of an algorithm this edge
    /// does not verify are skipped; a private or symmetric key anywhere refuses the whole document.
    pub fn from_jwks(jwks: &str, expectations: Expectations) -> Result<Self, JwksError> {
        let document: Value = serde_json::from_str(jwks).map_err(|_| JwksError::NotAJwks)?;
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAJwks)?;
        let mut keys: Vec<Key> = Vec::new();
        for entry in entries {
            let object = entry.as_object().ok_or(JwksError::NotAJwks)?;
            if SECRET_MEMBERS.iter().any(|m| object.contains_key(*m)) {
                return Err(JwksError::SecretMaterial);
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            let Some(key) = usable_key(&jwk) else {
                continue;
            };
            if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                return Err(JwksError::DuplicateKid);
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Self { keys, expectations })
    }

    /// How many keys tokens may be signed with.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds a key with this `kid` (a remembered token stays good only while its key
    /// is still published).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The `kid`s of the set, for log lines.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }

    /// Verifies `token` (the part after `Bearer `) and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Caller, Rejected> {
        self.verify_full(token).map(|v| v.caller)
    }

    /// [`Verifier::verify`], with what remembering the token needs: its `exp` and its key's `kid`.
    pub fn verify_full(&self, token: &str) -> Result<Verified, Rejected> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Rejected::Invalid(Invalid::Malformed));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Rejected::Invalid(Invalid::Malformed))?;
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(Rejected::Invalid(Invalid::UnknownKey))?;

        // The key decides the algorithm; a header naming any other is refused by `decode`.
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.expectations.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.expectations.issuer]);
        validation.set_audience(&[&self.expectations.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| Rejected::Invalid(Invalid::from_jwt(e.kind())))?;
        let caller = Caller::from_claims(&data.claims, &self.expectations.user_claim)
            .ok_or(Rejected::Invalid(Invalid::Malformed))?;
        let expires_at = data
            .claims
            .get("exp")
            .and_then(|exp| exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64)))
            .ok_or(Rejected::Invalid(Invalid::Malformed))?;
        Ok(Verified {
            caller,
            expires_at,
            kid: key.kid.clone(),
        })
    }
}

/// A token the verifier accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub caller: Caller,
    /// Its `exp`, in seconds since the Unix epoch.
    pub expires_at: i64,
    /// The `kid` of the key that verified it (`None`: a set of one key without `kid`).
    pub kid: Option<String>,
}

impl Verifier {
    /// The expectations tokens are checked against.
    pub fn expectations(&self) -> &Expectations {
        &self.expectations
    }
}

/// The key and algorithm of a JWK, when it is a public signing key this edge verifies.
fn usable_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            _ => return None,
        },
        // Symmetric keys are refused before this; anything else is unknown.
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(alg) => signing_algorithm(alg).filter(|a| same_family(*a, implied))?,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithm,
        decoding,
    })
}

/// The asymmetric signature algorithm a JWK's `alg` names (`None` for HMAC, encryption algorithms...).
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Whether a key's declared `alg` fits its type (and, for EC, its curve).
fn same_family(declared: Algorithm, implied: Algorithm) -> bool {
    use Algorithm::*;
    match implied {
        RS256 => matches!(declared, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        other => declared == other,
    }
}

/// Why a token was refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No `Authorization: Bearer` at all: a plain challenge, no error.
    Missing,
    Invalid(Invalid),
}

/// What is wrong with a presented token. The text is the RFC 6750 `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    BadSignature,
    UnknownKey,
    /// The header names an algorithm other than the key's (`none`, `HS256` with a public key, ...).
    WrongAlgorithm,
}

impl Invalid {
    fn from_jwt(kind: &jsonwebtoken::errors::ErrorKind) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match kind {
            K::ExpiredSignature => Invalid::Expired,
            K::ImmatureSignature => Invalid::NotYetValid,
            K::InvalidIssuer => Invalid::WrongIssuer,
            K::InvalidAudience => Invalid::WrongAudience,
            K::InvalidSignature => Invalid::BadSignature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName => Invalid::WrongAlgorithm,
            _ => Invalid::Malformed,
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Invalid::Malformed => {
                "the token is malformed or lacks a required claim (exp, iss, aud, sub)"
            }
            Invalid::Expired => "the token has expired",
            Invalid::NotYetValid => "the token is not valid yet (nbf)",
            Invalid::WrongIssuer => "the token was issued by another issuer",
            Invalid::WrongAudience => "the token is meant for another audience",
            Invalid::BadSignature => "the token's signature does not verify",
            Invalid::UnknownKey => "the token's key (kid) is not in the key set",
            Invalid::WrongAlgorithm => "the token's algorithm is not its key's",
        }
    }
}

impl Rejected {
    /// The 401 body.
    pub fn error(self) -> ApiError {
        match self {
            Rejected::Missing => ApiError::new(
                ErrorCode::Unauthorized,
                "this API needs a bearer token: send Authorization: Bearer <token>",
            ),
            Rejected::Invalid(why) => ApiError::new(ErrorCode::InvalidToken, why.description()),
        }
    }

    /// The `WWW-Authenticate` value.
    pub fn challenge(self) -> String {
        match self {
            Rejected::Missing => format!("Bearer realm=\"{REALM}\""),
            Rejected::Invalid(why) => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                why.description()
            ),
        }
    }
}

/// The token of an `Authorization` value: `Bearer <token>` (scheme case-insensitive). Any other
/// scheme, or no value, is [`Rejected::Missing`].
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<&str, Rejected> {
    let value = authorization.ok_or(Rejected::Missing)?;
    if value.len() > MAX_TOKEN_BYTES + 7 {
        return Err(Rejected::Invalid(Invalid::Malformed));
    }
    let value = std::str::from_utf8(value).map_err(|_| Rejected::Invalid(Invalid::Malformed))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejected::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejected::Invalid(Invalid::Malformed));
    }
    Ok(token)
}

/// The scopes this API knows, as the token grants them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Scopes {
    fn grant(&mut self, scope: &str) {
        match scope {
            SCOPE_READ => self.read = true,
            SCOPE_WRITE => self.write = true,
            SCOPE_ADMIN => self.admin = true,
            _ => {}
        }
    }

    /// From `scope` (space-separated) and `scp` (array of strings, or a space-separated string).
    fn from_claims(claims: &Map<String, Value>) -> Self {
        let mut scopes = Scopes::default();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(s)) => s.split_whitespace().for_each(|s| scopes.grant(s)),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .for_each(|s| scopes.grant(s)),
                _ => {}
            }
        }
        scopes
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`.
    pub subject: String,
    /// The profile the caller owns: the user-id claim, when it holds a valid id.
    pub user_id: Option<UserId>,
    pub scopes: Scopes,
}

impl Caller {
    /// `None` when `sub` is missing or not a non-empty string.
    fn from_claims(claims: &Map<String, Value>, user_claim: &str) -> Option<Self> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?
            .to_string();
        let user_id = match claims.get(user_claim) {
            Some(Value::String(s)) => UserId::parse(s).ok(),
            Some(Value::Number(n)) => n.as_i64().and_then(|n| UserId::try_from(n).ok()),
            _ => None,
        };
        Some(Self {
            subject,
            user_id,
            scopes: Scopes::from_claims(claims),
        })
    }

    /// The `x-aside-caller` value: the subject, percent-encoded outside visible ASCII (and `%`).
    pub fn header_value(&self) -> String {
        let mut out = String::with_capacity(self.subject.len());
        for byte in self.subject.bytes() {
            if byte.is_ascii_graphic() && byte != b'%' {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }
}

/// What a request needs, by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// `GET /users/{id}`; `public` when the projection is within [`PUBLIC_FIELDS`].
    Read { id: UserId, public: bool },
    /// `PUT`, `PATCH`, `DELETE /users/{id}`.
    Change(UserId),
    /// `POST /users`.
    Create,
    /// Any other request under `/users`: the origin refuses it (404, 405); a valid token is enough.
    Authenticated,
}

impl Need {
    /// A read of `id`, with its projection (`None`: the whole profile).
    pub fn read(id: UserId, selection: Option<&FieldSelection>) -> Self {
        let public =
            selection.is_some_and(|s| s.fields().iter().all(|f| PUBLIC_FIELDS.contains(f)));
        Need::Read { id, public }
    }

    /// A forwarded request (not a tiered read).
    pub fn forwarded(method: &http::Method, path: &str) -> Self {
        use http::Method;
        let id = path
            .strip_prefix("/users/")
            .and_then(|raw| UserId::parse(raw).ok());
        match (method, id) {
            (&Method::POST, None) if path == "/users" => Need::Create,
            (&Method::PUT | &Method::PATCH | &Method::DELETE, Some(id)) => Need::Change(id),
            (&Method::GET | &Method::HEAD, Some(id)) => Need::Read { id, public: false },
            _ => Need::Authenticated,
        }
    }

    /// Whether a request with this need is a write (rate-limited per caller).
    pub fn is_write(&self) -> bool {
        matches!(self, Need::Change(_) | Need::Create)
    }
}

/// Why a valid token may not do this (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The scope that would allow it.
    pub scope: &'static str,
    pub message: &'static str,
}

impl Denied {
    pub fn error(&self) -> ApiError {
        ApiError::new(ErrorCode::InsufficientScope, self.message)
    }

    pub fn challenge(&self) -> String {
        format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
            self.scope
        )
    }
}

/// Whether `caller` may do what `need` says (see the module table).
pub fn authorize(caller: &Caller, need: &Need) -> Result<(), Denied> {
    let scopes = caller.scopes;
    if scopes.admin {
        return Ok(());
    }
    let owns = |id: &UserId| caller.user_id.as_ref() == Some(id);
    match need {
        Need::Authenticated => Ok(()),
        Need::Create => Err(Denied {
            scope: SCOPE_ADMIN,
            message: "creating a profile needs the profiles:admin scope",
        }),
        Need::Read { .. } if !scopes.read => Err(Denied {
            scope: SCOPE_READ,
            message: "reading profiles needs the profiles:read scope",
        }),
        Need::Read { public: true, .. } => Ok(()),
        Need::Read { id, .. } if owns(id) => Ok(()),
        Need::Read { .. } => Err(Denied {
            scope: SCOPE_ADMIN,
            message: "reading another user's profile needs the profiles:admin scope \
                      (any reader may ask for ?fields=full_name,department)",
        }),
        Need::Change(_) if !scopes.write => Err(Denied {
            scope: SCOPE_WRITE,
            message: "changing a profile needs the profiles:write scope",
        }),
        Need::Change(id) if owns(id) => Ok(()),
        Need::Change(_) => Err(Denied {
            scope: SCOPE_ADMIN,
            message: "changing another user's profile needs the profiles:admin scope",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    // A fixed Ed25519 test key pair (RFC 8037 appendix A.1), so unit tests need no key generation:
    // the private key as PKCS#8 DER, and the public key's `x`.
    const ED_PRIVATE_PKCS8: [u8; 48] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20, 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
        0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c,
        0xae, 0x7f, 0x60,
    ];
    const ED_PUBLIC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn expectations() -> Expectations {
        Expectations {
            issuer: "https://id.example".into(),
            audience: "aside".into(),
            leeway_secs: 60,
            user_claim: "sub".into(),
        }
    }

    fn jwks(keys: Value) -> String {
        json!({ "keys": keys }).to_string()
    }

    fn ed_jwk(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": ED_PUBLIC_X, "kid": kid, "use": "sig"})
    }

    fn verifier() -> Verifier {
        Verifier::from_jwks(&jwks(json!([ed_jwk("k1")])), expectations()).unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims(sub: &str, scope: &str) -> Value {
        json!({
            "iss": "https://id.example", "aud": "aside", "sub": sub, "scope": scope,
            "exp": now() + 300, "nbf": now() - 10, "iat": now() - 10,
        })
    }

    fn sign(kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_string);
        let key = EncodingKey::from_ed_der(&ED_PRIVATE_PKCS8);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_good_token_gives_its_subject_scopes_and_own_profile() {
        let caller = verifier()
            .verify(&sign(
                Some("k1"),
                &claims("7", "profiles:read profiles:write"),
            ))
            .unwrap();
        assert_eq!(caller.subject, "7");
        assert_eq!(caller.user_id, Some(UserId::parse("7").unwrap()));
        assert_eq!(
            caller.scopes,
            Scopes {
                read: true,
                write: true,
                admin: false
            }
        );
    }

    #[test]
    fn scopes_are_read_from_scp_arrays_too() {
        let mut c = claims("alice", "");
        c["scp"] = json!(["profiles:admin"]);
        let caller = verifier().verify(&sign(Some("k1"), &c)).unwrap();
        assert!(caller.scopes.admin && !caller.scopes.read);
        assert_eq!(caller.user_id, None, "a non-numeric sub owns no profile");
    }

    #[test]
    fn time_issuer_and_audience_are_checked_with_leeway() {
        let v = verifier();
        let check = |field: &str, value: Value| {
            let mut c = claims("7", "profiles:read");
            c[field] = value;
            v.verify(&sign(Some("k1"), &c))
        };
        assert!(check("exp", json!(now() - 30)).is_ok(), "within the leeway");
        assert_eq!(
            check("exp", json!(now() - 120)),
            Err(Rejected::Invalid(Invalid::Expired))
        );
        assert!(check("nbf", json!(now() + 30)).is_ok(), "within the leeway");
        assert_eq!(
            check("nbf", json!(now() + 120)),
            Err(Rejected::Invalid(Invalid::NotYetValid))
        );
        assert_eq!(
            check("iss", json!("https://evil.example")),
            Err(Rejected::Invalid(Invalid::WrongIssuer))
        );
        assert_eq!(
            check("aud", json!("other")),
            Err(Rejected::Invalid(Invalid::WrongAudience))
        );
        assert!(check("aud", json!(["other", "aside"])).is_ok());
        for missing in ["exp", "iss", "aud", "sub"] {
            let mut c = claims("7", "profiles:read");
            c.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                v.verify(&sign(Some("k1"), &c)),
                Err(Rejected::Invalid(Invalid::Malformed)),
                "without {missing}"
            );
        }
    }

    #[test]
    fn unknown_kids_bad_signatures_and_foreign_algorithms_are_refused() {
        let v = verifier();
        let good = sign(Some("k1"), &claims("7", "profiles:read"));
        assert_eq!(
            v.verify(&sign(Some("k2"), &claims("7", "profiles:read"))),
            Err(Rejected::Invalid(Invalid::UnknownKey))
        );
        // A signature over other claims.
        let (head, _) = good.rsplit_once('.').unwrap();
        let other = sign(Some("k1"), &claims("8", "profiles:read"));
        let forged = format!("{head}.{}", other.rsplit_once('.').unwrap().1);
        assert_eq!(
            v.verify(&forged),
            Err(Rejected::Invalid(Invalid::BadSignature))
        );
        // alg: none, no signature.
        let payload = b64(claims("7", "profiles:admin").to_string().as_bytes());
        let none = format!("{}.{payload}.", b64(br#"{"alg":"none","kid":"k1"}"#));
        assert!(matches!(v.verify(&none), Err(Rejected::Invalid(_))));
        // HS256 keyed with the public key's bytes: the key is EdDSA, so HS256 is not its algorithm.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hs = jsonwebtoken::encode(
            &header,
            &claims("7", "profiles:admin"),
            &EncodingKey::from_secret(ED_PUBLIC_X.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify(&hs),
            Err(Rejected::Invalid(Invalid::WrongAlgorithm))
        );
        for junk in ["", "abc", "a.b.c", "..", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(v.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_token_without_kid_is_tried_only_against_a_single_key() {
        let one = verifier();
        assert!(one.verify(&sign(None, &claims("7", ""))).is_ok());
        let two = Verifier::from_jwks(&jwks(json!([ed_jwk("k1"), ed_jwk("k2")])), expectations())
            .unwrap();
        assert_eq!(two.key_count(), 2);
        assert_eq!(
            two.verify(&sign(None, &claims("7", ""))),
            Err(Rejected::Invalid(Invalid::UnknownKey))
        );
        assert!(two.verify(&sign(Some("k2"), &claims("7", ""))).is_ok());
    }

    #[test]
    fn a_jwks_must_hold_public_signing_keys_only() {
        let e = expectations();
        assert_eq!(
            Verifier::from_jwks("nope", e.clone()).unwrap_err(),
            JwksError::NotAJwks
        );
        assert_eq!(
            Verifier::from_jwks("{}", e.clone()).unwrap_err(),
            JwksError::NotAJwks
        );
        assert_eq!(
            Verifier::from_jwks(&jwks(json!([])), e.clone()).unwrap_err(),
            JwksError::NoUsableKey
        );
        let mut private = ed_jwk("k1");
        private["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
        assert_eq!(
            Verifier::from_jwks(&jwks(json!([private])), e.clone()).unwrap_err(),
            JwksError::SecretMaterial
        );
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert_eq!(
            Verifier::from_jwks(&jwks(json!([hmac])), e.clone()).unwrap_err(),
            JwksError::SecretMaterial
        );
        assert_eq!(
            Verifier::from_jwks(&jwks(json!([ed_jwk("a"), ed_jwk("a")])), e.clone()).unwrap_err(),
            JwksError::DuplicateKid
        );
        // An encryption key and a key whose alg does not fit its type are skipped, not fatal.
        let mut enc = ed_jwk("enc");
        enc["use"] = json!("enc");
        let mut mismatched = ed_jwk("rs");
        mismatched["alg"] = json!("RS256");
        let v = Verifier::from_jwks(&jwks(json!([enc, mismatched, ed_jwk("ok")])), e).unwrap();
        assert_eq!(v.key_count(), 1);
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        assert_eq!(bearer_token(None), Err(Rejected::Missing));
        assert_eq!(bearer_token(Some(b"Basic abc")), Err(Rejected::Missing));
        assert_eq!(bearer_token(Some(b"bearer abc")), Ok("abc"));
        assert_eq!(
            bearer_token(Some(b"Bearer ")),
            Err(Rejected::Invalid(Invalid::Malformed))
        );
        assert!(Rejected::Missing.challenge().ends_with("realm=\"aside\""));
        assert!(
            Rejected::Invalid(Invalid::Expired)
                .challenge()
                .contains("error=\"invalid_token\"")
        );
    }

    fn caller(user: Option<i64>, scopes: Scopes) -> Caller {
        Caller {
            subject: "s".into(),
            user_id: user.map(|u| UserId::try_from(u).unwrap()),
            scopes,
        }
    }

    #[test]
    fn owners_read_and_change_their_own_profile_admins_any() {
        let id = |n: i64| UserId::try_from(n).unwrap();
        let reader = Scopes {
            read: true,
            ..Scopes::default()
        };
        let writer = Scopes {
            read: true,
            write: true,
            admin: false,
        };
        let admin = Scopes {
            admin: true,
            ..Scopes::default()
        };
        let own = Need::Read {
            id: id(7),
            public: false,
        };
        let other = Need::Read {
            id: id(8),
            public: false,
        };
        let public = Need::Read {
            id: id(8),
            public: true,
        };
        assert!(authorize(&caller(Some(7), reader), &own).is_ok());
        assert_eq!(
            authorize(&caller(Some(7), reader), &other)
                .unwrap_err()
                .scope,
            SCOPE_ADMIN
        );
        assert!(authorize(&caller(Some(7), reader), &public).is_ok());
        assert_eq!(
            authorize(&caller(Some(7), Scopes::default()), &public)
                .unwrap_err()
                .scope,
            SCOPE_READ
        );
        assert_eq!(
            authorize(&caller(Some(7), reader), &Need::Change(id(7)))
                .unwrap_err()
                .scope,
            SCOPE_WRITE
        );
        assert!(authorize(&caller(Some(7), writer), &Need::Change(id(7))).is_ok());
        assert_eq!(
            authorize(&caller(Some(7), writer), &Need::Change(id(8)))
                .unwrap_err()
                .scope,
            SCOPE_ADMIN
        );
        assert!(authorize(&caller(Some(7), writer), &Need::Create).is_err());
        for need in [own, other, public, Need::Change(id(9)), Need::Create] {
            assert!(authorize(&caller(None, admin), &need).is_ok());
        }
    }

    #[test]
    fn needs_follow_method_path_and_projection() {
        use http::Method;
        let id = UserId::try_from(5).unwrap();
        assert_eq!(Need::forwarded(&Method::POST, "/users"), Need::Create);
        assert_eq!(
            Need::forwarded(&Method::PATCH, "/users/5"),
            Need::Change(id)
        );
        assert_eq!(
            Need::forwarded(&Method::DELETE, "/users/5"),
            Need::Change(id)
        );
        assert_eq!(
            Need::forwarded(&Method::POST, "/users/5"),
            Need::Authenticated
        );
        assert_eq!(
            Need::forwarded(&Method::GET, "/users/5/x"),
            Need::Authenticated
        );
        let public = FieldSelection::from_query(Some("fields=department,full_name"))
            .unwrap()
            .unwrap();
        let private = FieldSelection::from_query(Some("fields=email"))
            .unwrap()
            .unwrap();
        assert_eq!(
            Need::read(id, Some(&public)),
            Need::Read { id, public: true }
        );
        assert_eq!(
            Need::read(id, Some(&private)),
            Need::Read { id, public: false }
        );
        assert_eq!(Need::read(id, None), Need::Read { id, public: false });
    }

    #[test]
    fn the_caller_header_is_visible_ascii() {
        let mut c = caller(None, Scopes::default());
        c.subject = "ana maria%é".into();
        assert_eq!(c.header_value(), "ana%20maria%25%C3%A9");
    }
}
