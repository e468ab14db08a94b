//! The edge's client-token checks (`edge/src/auth.rs`, compiled in here from its source file: the edge
//! crate is a Wasm component, not a library the fuzz crate can link): the `Authorization` reader, the
//! JWT verifier and the JWKS reader, on arbitrary bytes.
//!
//! Input: the first byte picks what the rest is: an `Authorization` value, a token, a JWKS document, or
//! a claims object put into a token with a valid header and no (or a garbage) signature.
//!
//! Properties:
//! * nothing panics, whatever the bytes;
//! * no fuzzed token is ever accepted: the verifier holds a key only the test knows (RFC 8037's
//!   Ed25519 test key is public, so a fresh random key is not needed: the fuzzer cannot sign), so any
//!   `Ok` is a forgery and fails the target; in particular `alg: none` and `HS256` tokens;
//! * a JWKS the reader accepts has at least one key;
//! * an accepted `Authorization` value starts with the `Bearer` scheme and its token is non-empty.

#![no_main]

#[path = "../../edge/src/auth.rs"]
#[allow(dead_code)]
mod auth;

use auth::{Expectations, Verifier};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

fn expectations() -> Expectations {
    Expectations {
        issuer: "https://id.example".into(),
        audience: "aside".into(),
        leeway_secs: 60,
        user_claim: "sub".into(),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = Verifier::from_jwks(JWKS, expectations()).expect("the fixed JWKS");
    match mode % 4 {
        0 => {
            if let Ok(token) = auth::bearer_token(Some(rest)) {
                assert!(!token.is_empty());
                assert!(rest.len() > 7 && rest[..6].eq_ignore_ascii_case(b"bearer"));
                assert!(verifier.verify(token).is_err(), "forged: {token:?}");
            }
        }
        1 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                assert!(verifier.verify(token).is_err(), "forged: {token:?}");
            }
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(v) = Verifier::from_jwks(text, expectations())
            {
                assert!(v.key_count() >= 1);
            }
        }
        _ => {
            for header in [
                r#"{"alg":"EdDSA","kid":"k1"}"#,
                r#"{"alg":"none","kid":"k1"}"#,
                r#"{"alg":"HS256","kid":"k1"}"#,
                r#"{"alg":"EdDSA"}"#,
            ] {
                let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(rest), b64(&rest[..rest.len().min(64)]));
                assert!(verifier.verify(&token).is_err(), "forged: {token:?}");
            }
        }
    }
});
