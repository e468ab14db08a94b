//! Reading profile hashes.

use aside_shared::cache::{
    CacheEntry, Projection, hmget_fields, profile_key, projection_from_hmget,
};
use aside_shared::{FieldSelection, UserId};

use super::{Lookup, ProfileCache};

impl ProfileCache {
    /// `HGETALL user:profile:{id}`: a profile, a "missing" marker or a tombstone. A malformed hash is
    /// logged and counted as a miss.
    pub async fn get(&self, id: UserId) -> Lookup<CacheEntry> {
        let key = profile_key(id);
        let result = self
            .call("hgetall", |mut c| async move {
                redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async::<Vec<(Vec<u8>, Vec<u8>)>>(&mut c)
                    .await
            })
            .await;
        match result {
            Err(e) => Lookup::Unavailable(e),
            Ok(pairs) => lookup_of(id, pairs),
        }
    }

    /// `HMGET user:profile:{id} <fields> _version _state`, projected to the API's JSON, or `Absent`
    /// for a marker or a tombstone.
    pub async fn get_fields(&self, id: UserId, selection: &FieldSelection) -> Lookup<Projection> {
        let key = profile_key(id);
        let fields = hmget_fields(selection);
        let result = self
            .call("hmget", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&fields)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut c)
                    .await
            })
            .await;
        match result {
            Err(e) => Lookup::Unavailable(e),
            Ok(values) if values.iter().all(Option::is_none) => Lookup::Miss,
            Ok(values) => match projection_from_hmget(id, selection, &values) {
                Ok(projection) => Lookup::Hit(projection),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "malformed profile hash; treating as a miss");
                    Lookup::Miss
                }
            },
        }
    }
}

/// What a profile hash's `HGETALL` pairs say: a miss when there are none (or they are malformed).
pub(super) fn lookup_of(id: UserId, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Lookup<CacheEntry> {
    if pairs.is_empty() {
        return Lookup::Miss;
    }
    match CacheEntry::from_hash(id, pairs) {
        Ok(entry) => Lookup::Hit(entry),
        Err(e) => {
            tracing::warn!(%id, error = %e, "malformed profile hash; treating as a miss");
            Lookup::Miss
        }
    }
}
