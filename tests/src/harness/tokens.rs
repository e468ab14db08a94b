//! The tests' throwaway identity provider: xtask's token issuer (the one `cargo xtask up` and the bench
//! use), with fresh RS256, ES256 and EdDSA keys made at test time. Nothing is written to disk.
//!
//! ```no_run
//! use aside_tests::harness::TestIssuer;
//! let idp = TestIssuer::throwaway();
//! let token = idp.token("es", &idp.claims("7", "profiles:read"));
//! let jwks = idp.jwks();
//! # let _ = (token, jwks);
//! ```

pub use xtask::token::{Issuer as TestIssuer, SigningKey as TestKey, now_secs};
