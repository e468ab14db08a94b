//! Filling the cache after a PostgreSQL read.

use std::time::Duration;

use aside_shared::cache::{CachedProfile, profile_key};

use super::{CacheError, ProfileCache};

impl ProfileCache {
    /// The TTL for one fill: the configured TTL spread by ±jitter %, so keys filled together (after a
    /// restart, a deploy) do not all expire in the same second.
    pub fn ttl_with_jitter(&self) -> Duration {
        jittered(
            self.ttl,
            self.jitter_percent,
            rand::random_range(-1.0..=1.0),
        )
    }

    /// Replaces the hash and sets its expiry in one atomic round trip (`MULTI DEL HSET PEXPIRE EXEC`):
    /// a reader never sees a hash without a TTL or half of an old and half of a new profile.
    pub async fn fill(&self, cached: &CachedProfile) -> Result<(), CacheError> {
        let key = profile_key(cached.profile.id);
        let fields = cached.to_hash_fields();
        let ttl_ms = self.ttl_with_jitter().as_millis() as u64;
        let result = self
            .call("fill", |mut c| async move {
                redis::pipe()
                    .atomic()
                    .del(&key)
                    .ignore()
                    // HSET with many pairs (HMSET is deprecated, and not granted to the ACL user).
                    .cmd("HSET")
                    .arg(&key)
                    .arg(&fields)
                    .ignore()
                    .pexpire(&key, ttl_ms as i64)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        crate::metrics::cache_fill(if result.is_ok() { "ok" } else { "error" });
        result
    }
}

/// `ttl * (1 + percent/100 * unit)`, `unit` in -1..=1.
fn jittered(ttl: Duration, percent: u8, unit: f64) -> Duration {
    let factor = 1.0 + f64::from(percent) / 100.0 * unit.clamp(-1.0, 1.0);
    Duration::from_secs_f64((ttl.as_secs_f64() * factor).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_percentage() {
        let ttl = Duration::from_secs(7200);
        assert_eq!(jittered(ttl, 10, -1.0), Duration::from_secs(6480));
        assert_eq!(jittered(ttl, 10, 1.0), Duration::from_secs(7920));
        assert_eq!(jittered(ttl, 0, 0.7), ttl);
        assert_eq!(
            jittered(ttl, 10, 5.0),
            Duration::from_secs(7920),
            "unit is clamped"
        );
        assert_eq!(
            jittered(Duration::ZERO, 10, 0.0),
            Duration::from_secs(1),
            "never 0"
        );
    }
}
