//! Reading profile hashes.

use aside_shared::cache::{CachedProfile, hmget_fields, profile_key, projection_from_hmget};
use aside_shared::{FieldSelection, UserId};

use super::{Lookup, ProfileCache};

impl ProfileCache {
    /// `HGETALL user:profile:{id}`. A malformed hash is logged and counted as a miss.
    pub async fn get(&self, id: UserId) -> Lookup<CachedProfile> {
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
            Ok(pairs) if pairs.is_empty() => Lookup::Miss,
            Ok(pairs) => match CachedProfile::from_hash(id, pairs) {
                Ok(cached) => Lookup::Hit(cached),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "malformed profile hash; treating as a miss");
                    Lookup::Miss
                }
            },
        }
    }

    /// `HMGET user:profile:{id} <fields> _version`, projected to the API's JSON.
    pub async fn get_fields(
        &self,
        id: UserId,
        selection: &FieldSelection,
    ) -> Lookup<serde_json::Value> {
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
                Ok(v) => Lookup::Hit(v),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "malformed profile hash; treating as a miss");
                    Lookup::Miss
                }
            },
        }
    }
}
