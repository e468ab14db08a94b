//! The process-wide tier: copies of profiles in Spin's key-value store, seen by every instance of the
//! Spin process and kept when an instance retires (`x-cache: SHARED`, `server-timing: shared`; its
//! settings are the `shared_tier_*` variables). In the code, "shared" names only the `aside_shared` crate.
//!
//! Spin 4 keeps an instance for at most 128 requests and runs several side by side, so tier 1 (instance
//! memory) alone answers few reads. With a runtime config that declares the store `type = "spin"` and no
//! `path`, Spin keeps it in one in-memory SQLite database per process, behind one mutex: every instance
//! sees the same copies, and a read or write costs one host call of a few microseconds.
//!
//! Spin's key-value API has no TTL, no eviction and no atomic update, so the tier is built to need none:
//! it is a direct-mapped table of `shared_tier_slots` keys, `aside:l1:{id mod slots}`, each holding one
//! profile ([`SlotValue`]: id, version, soft and hard expiry, the shared freshness, the profile's JSON).
//! A fill overwrites whatever the slot held, so memory is bounded by construction (slots x the largest
//! value: a 45-byte header and a profile's JSON, at most a few KB) and nothing is ever swept. A value that does not decode, or holds another id, is a
//! miss.
//!
//! Guarantees are tier 1's: a copy is fresh for at most `l1_ttl_ms` after it was taken from Redis or the
//! origin (never longer than its shared soft expiry), and every answer from here still passes the
//! instance's version floors (`crate::l1::Tier1::observe`), so read-your-writes and monotonic reads per
//! instance hold. A fill never replaces a newer version of the same id that the lookup saw in the slot.
//!
//! It is optional (`shared_tier_store`, empty: off). A store that cannot be opened (not declared in
//! `key_value_stores`, not defined by the runtime) turns the tier off for the instance; one that fails
//! (`redis_timeout_ms`, then the Redis breaker's settings) is skipped like Redis is: the edge then works
//! as without it.
//!
//! The same store keeps what an instance must not forget when it retires (see [`BreakerMark`]): until when
//! the origin's breaker and the Redis breaker are open, so that a fresh instance does not spend a whole
//! request budget finding out that the origin is frozen, nor its first reads' Redis timeouts finding out
//! that Redis is.
//!
//! Three parts: [`store`] (the handle on the key-value store: opening, time limits, the tier's breaker),
//! [`format`] (the bytes of a slot and of the breaker mark) and [`policy`] (how long a copy is fresh and
//! kept, what a lookup's bytes mean, when a fill may overwrite a slot).

pub mod format;
pub mod policy;
pub mod store;

pub use format::{BreakerMark, ORIGIN_BREAKER_KEY, REDIS_BREAKER_KEY, SlotValue, slot_key};
pub use policy::Found;
pub use store::ProcessTier;
