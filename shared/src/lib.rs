//! The contract between the aside edge (a Spin component) and the origin (a native service).
//!
//! Everything here is pure: no I/O, no clock, no randomness, so it compiles for `wasm32-wasip2` and for
//! the host and both sides reject bad input with the same rules and the same messages.
//!
//! * [`domain`]: parse-don't-validate newtypes for every profile field and the [`UserProfile`] itself.
//! * [`fields`]: the `?fields=` projection.
//! * [`breaker`]: the circuit breaker state machine both sides put in front of a backend.
//! * [`cache`]: Redis key names and the profile <-> hash mapping.
//! * [`error`]: the JSON error body and its codes.
//! * [`feed`]: the invalidation feed's stream, its entries and how a reader parses them.
//! * [`input`]: write bodies (`ProfileInput`, `ProfilePatch`), parsed with the same rules on both sides.
//! * [`headers`]: header names and values both sides emit (`x-cache`, `server-timing`).
//! * [`settings`]: the names of the edge's Spin variables and the origin's environment variables.
//! * `openapi` (feature `openapi`, the origin only): the OpenAPI schemas of these types, every limit
//!   taken from the parsers.

pub mod breaker;
pub mod cache;
pub mod domain;
pub mod error;
pub mod feed;
pub mod fields;
pub mod headers;
pub mod input;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod scopes;
pub mod settings;

pub use cache::{CacheEntry, CachedProfile, Freshness, HashError};
pub use domain::{
    BirthDate, Department, Email, FullName, Gender, UserId, UserProfile, Username, ValidationError,
};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use fields::{Field, FieldSelection};
pub use input::{BodyError, FieldErrors, ProfileInput, ProfilePatch};
