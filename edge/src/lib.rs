//! The aside edge: a Spin 4 HTTP component (WASIp3, `spin-sdk` 6) in front of the origin.
//!
//! `GET /users/{id}` is answered from tier 1 (this instance's memory), then tier 2 (Redis, read-only),
//! then the origin; everything else is passed to the origin unchanged. Every answer says where it came
//! from (`x-cache`) and what each tier cost (`server-timing`).
//!
//! * [`handler`]: the entry point and the instance state.
//! * [`reply`]: answers and the headers every answer carries.
//! * [`routes`]: which requests the edge answers and which it forwards.
//! * [`plan`]: the read plan (what to ask, in which order, what to accept), pure.
//! * [`read`]: the tiered read path carrying the plan out, and the one writer of tier 1.
//! * [`copy`]: a copy of a profile as every tier keeps it (entry, shelf) and the one rule for its
//!   deadlines: the value types at the bottom, below the tiers and the plan.
//! * [`l1`]: tier 1, an LRU bounded by count, bytes and TTL.
//! * [`process_tier`]: the process-wide tier in Spin's key-value store (optional), slots bounded by count
//!   (`shared_tier_*` settings): its store access, byte format and policy.
//! * [`l2`]: tier 2, Redis reads through Spin's Redis binding.
//! * [`feed`]: the invalidation feed, read by requests; it decides how long copies stay fresh.
//!   [`feed_tag`]: the feed position a copy carries (the value the tiers keep).
//! * [`forward`]: the origin client.
//! * [`outcome`]: what the I/O modules hand back (an origin answer, a tier-2 read, a process-wide tier
//!   lookup), as plain values the plan takes.
//! * [`flight`], [`backoff`], [`clock`]: single-flight, the circuit breakers (Redis, origin), timeouts
//!   and the request budget.
//! * [`budget`]: the instance's budget of origin reads.
//! * [`metrics`]: the instance's overload counters (`GET /edge/metrics`).
//! * [`config`]: Spin variables to a typed configuration.
//! * [`auth`], [`keys`], [`tokens`]: client tokens (verification and authorization), the identity
//!   provider's keys (static, by URL or by discovery, kept process-wide) and the verified tokens
//!   remembered; [`key_policy`]: where the keys come from and how long a set is used (settings).
//!
//! The pure modules (`config`, `plan`, `l1`, `flight`, `backoff`, `routes`, parts of `l2` and `forward`) are
//! unit-tested natively with `cargo test -p aside-edge --lib`; the entry point is exported only when
//! building for `wasm32`.

pub mod auth;
pub mod backoff;
pub mod budget;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod feed;
pub mod feed_tag;
pub mod flight;
pub mod forward;
pub mod handler;
pub mod key_policy;
pub mod keys;
pub mod l1;
pub mod l2;
pub mod metrics;
pub mod outcome;
pub mod plan;
pub mod process_budget;
pub mod process_tier;
pub mod ratelimit;
pub mod read;
pub mod reply;
pub mod routes;
pub mod tagged;
pub mod tokens;
