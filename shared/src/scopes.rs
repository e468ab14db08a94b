//! The scopes a client token carries (its `scope` or `scp` claim), as the edge checks them and as the
//! edge's OpenAPI document states them: one list, so the two cannot drift apart.

/// Read profiles: any profile's public fields, one's own profile whole.
pub const READ: &str = "profiles:read";
/// Change or delete one's own profile.
pub const WRITE: &str = "profiles:write";
/// Every request on every profile, creating profiles included.
pub const ADMIN: &str = "profiles:admin";
