//! The fill lease: `user:lease:{id}`, taken with `SET NX PX` by the origin that is about to load `id`
//! from PostgreSQL. The other origins see it taken and wait for the holder's fill instead of querying
//! too, so N origins missing the same key cost one query (in-process single-flight already makes each
//! origin ask once). The lease expires by itself, so a holder that dies only delays the others by
//! the lease's lifetime at most; a holder that finishes releases it with a compare-and-delete, so it
//! never deletes a lease that expired and was taken by another origin meanwhile.

use std::sync::LazyLock;
use std::time::Duration;

use aside_shared::CacheEntry;
use aside_shared::UserId;
use aside_shared::cache::{lease_key, profile_key};

use super::{CacheError, Lookup, ProfileCache};

/// Compare-and-delete. The `origin` ACL user may not run `GET` (its read commands are the hash ones),
/// so the current value is read with `SET ... NX GET`: on an existing key that writes nothing and
/// returns the value; on a missing key it creates one, which the script deletes again in the same
/// atomic step. Returns 1 when the lease was ours and is released.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET')
if current == false then
  redis.call('DEL', KEYS[1])
  return 0
end
if current == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});

/// `SET lease NX PX` and, when it was taken, `HGETALL` of the profile in the same atomic step: the look
/// a new holder must take (another origin may have filled the key just before) costs no round trip of
/// its own. `{1, pairs}` when taken, `{0, {}}` when another origin holds it (always two elements, so
/// the reply has one shape).
static LEASE_AND_LOOK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('HGETALL', KEYS[2])}
end
return {0, {}}
",
    )
});

/// A hash's `HGETALL` reply: (field, value) pairs.
type HashPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A lease this origin holds: the token proves it is ours when releasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: UserId,
    token: String,
}

impl ProfileCache {
    /// `SET user:lease:{id} <random token> NX PX <ttl>` and, when the lease is taken, the profile's
    /// entry as Redis holds it at that moment ([`ProfileCache::get`]), in one round trip: `Some((lease, lookup))` when this origin now
    /// holds the lease, `None` when another one does.
    pub async fn try_lease_and_look(
        &self,
        id: UserId,
        ttl: Duration,
    ) -> Result<Option<(Lease, Lookup<CacheEntry>)>, CacheError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let mut invocation = LEASE_AND_LOOK.prepare_invoke();
        invocation
            .key(lease_key(id))
            .key(profile_key(id))
            .arg(&token)
            .arg(ttl_ms);
        let reply: (i64, HashPairs) = self
            .call("lease", |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(match reply {
            (1, pairs) => Some((Lease { id, token }, super::read::lookup_of(id, pairs))),
            _ => None,
        })
    }

    /// Releases a lease if it is still ours (it may have expired and been taken by another origin).
    /// Returns whether it was.
    pub async fn release(&self, lease: &Lease) -> Result<bool, CacheError> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(lease_key(lease.id)).arg(&lease.token);
        let released: i64 = self
            .call("lease_release", |mut c| async move {
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await?;
        Ok(released == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_script_is_loaded_by_hash() {
        assert_eq!(RELEASE.get_hash().len(), 40);
        assert_eq!(LEASE_AND_LOOK.get_hash().len(), 40);
    }
}
