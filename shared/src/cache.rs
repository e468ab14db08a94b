//! Redis key names and the profile <-> hash mapping.
//!
//! A profile is cached as one Redis hash, key `user:profile:{<id>}` (the braces are a Redis Cluster
//! hash tag, see [`profile_key`]), whose fields are the six profile
//! fields (named as in the JSON API) plus `_`-prefixed metadata. Hashes keep small profiles in the compact
//! listpack encoding and let a reader fetch only some fields with `HMGET`.
//!
//! The same key can also say that there is *no* profile ([`CacheEntry`]): a hash with `_state` set to
//! `missing` (a lookup found no row: a short-lived negative-cache marker) or `deleted` (the row was
//! deleted: a short-lived tombstone), and no profile fields. Every entry carries `_version`, so that the
//! origin's compare-and-set can order any two entries (see [`CacheEntry::rank`]).
//!
//! A hash read back from Redis is input like any other: [`CacheEntry::from_hash`] parses every field
//! with the domain parsers, and anything missing or malformed is a [`HashError`], which callers treat as a
//! cache miss (never as a server error).

use crate::domain::{
    BirthDate, Department, Email, FullName, Gender, UserId, UserProfile, Username, ValidationError,
};
use crate::fields::{Field, FieldSelection};

/// Every cache key aside writes starts with this; the Redis ACL users are scoped to it.
pub const PROFILE_KEY_PREFIX: &str = "user:profile:";
/// Hash field: the row's `version` when the hash was written.
pub const VERSION_FIELD: &str = "_version";
/// Hash field: when the hash was filled, in milliseconds since the Unix epoch.
pub const FILLED_AT_FIELD: &str = "_filled_at";
/// Hash field of a profile: its soft expiry, in milliseconds since the Unix epoch. Until then the copy is
/// *fresh*; after it, and until Redis expires the key (the hard expiry), the copy is *stale*: readers
/// refresh it from the source and serve it (`x-cache: STALE`) only when the source cannot answer.
pub const FRESH_UNTIL_FIELD: &str = "_fresh_until";
/// Hash field of a profile: how long the PostgreSQL load that produced it took, in milliseconds. The
/// `delta` of XFetch early refresh ([`Freshness::refresh_early`]).
pub const DELTA_FIELD: &str = "_delta_ms";
/// Hash field: present only on entries that say there is no profile: [`STATE_MISSING`] or
/// [`STATE_DELETED`].
pub const STATE_FIELD: &str = "_state";
/// `_state` of a negative-cache marker: a lookup found no row with this id.
pub const STATE_MISSING: &str = "missing";
/// `_state` of a tombstone: the row was deleted at `_version`.
pub const STATE_DELETED: &str = "deleted";
/// The version a "missing" marker carries: below every row's (rows start at 1), so the write-through of
/// a newly created row always replaces the marker.
pub const MISSING_VERSION: i64 = 0;
/// Default lifetime of a cached profile, in seconds (before jitter).
pub const DEFAULT_TTL_SECS: u64 = 7200;
/// Default lifetime of a "missing" marker, in seconds.
pub const DEFAULT_MISSING_TTL_SECS: u64 = 30;
/// Default lifetime of a tombstone, in seconds. Must outlast the slowest fill that may still be in flight
/// when the row is deleted (fills are bounded by the request timeout, 2 s by default).
pub const DEFAULT_TOMBSTONE_TTL_SECS: u64 = 60;

/// The Redis key of a profile: `user:profile:{<id>}`, the id in braces.
///
/// The braces are a Redis Cluster hash tag: a cluster places a key by the CRC16 of its tag only, so a
/// profile's hash and its fill lease ([`lease_key`], which a script touches together with the hash) sit
/// in the same slot on every cluster, and on a single node or under Sentinel they are just characters.
/// Earlier versions wrote `user:profile:<id>` (no braces): those keys are never read again (a reader of
/// this version finds no key under the new name, a miss, never an error) and expire by their TTL; see
/// docs/operations.md, "Key names", for the upgrade.
pub fn profile_key(id: UserId) -> String {
    format!("{PROFILE_KEY_PREFIX}{{{id}}}")
}

/// The id in a profile key of this version ([`profile_key`]), `None` for anything else (an old-style
/// `user:profile:<id>` key included).
pub fn id_of_profile_key(key: &str) -> Option<UserId> {
    let tag = key.strip_prefix(PROFILE_KEY_PREFIX)?;
    UserId::parse(tag.strip_prefix('{')?.strip_suffix('}')?).ok()
}

/// Prefix of the short-lived fill leases (`SET NX PX`): the origin that holds `user:lease:{id}` is the
/// one that loads `id` from PostgreSQL, so origins filling the same key cost one query.
pub const LEASE_KEY_PREFIX: &str = "user:lease:";

/// The Redis key of the fill lease for a profile: `user:lease:{<id>}`, with the same hash tag as the
/// profile's key, so the script that takes the lease and reads the profile names keys of one slot.
pub fn lease_key(id: UserId) -> String {
    format!("{LEASE_KEY_PREFIX}{{{id}}}")
}

/// A profile as stored in Redis: the profile and the metadata the cache keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedProfile {
    pub profile: UserProfile,
    /// The row version this copy was taken from (grows on every change of the row).
    pub version: i64,
    /// Fill time, milliseconds since the Unix epoch.
    pub filled_at_ms: i64,
    /// Soft expiry and recompute cost. `None` for a copy not yet stored (a fresh PostgreSQL read) or a
    /// hash written without them (by an older writer): such a copy is treated as fresh.
    pub freshness: Option<Freshness>,
}

/// When a cached profile stops being fresh, and how long it took to compute (for early refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Soft expiry, milliseconds since the Unix epoch ([`FRESH_UNTIL_FIELD`]).
    pub fresh_until_ms: i64,
    /// Duration of the load that produced the copy, milliseconds ([`DELTA_FIELD`]).
    pub delta_ms: u32,
}

impl Freshness {
    /// Fresh until the soft expiry (exclusive).
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede Prevention",
    /// VLDB 2015): refresh a still-fresh copy early when `now - delta * beta * ln(u) >= expiry`, with
    /// `u` uniform in (0, 1]. The probability grows as the expiry nears and with the cost of a recompute
    /// (`delta`), so under steady traffic one request refreshes a hot key shortly before it expires and
    /// the others never see it expire. `beta` > 1 favours earlier refreshes; 0 turns early refresh off.
    /// An expired copy is always due (callers handle it as stale, not as early).
    pub fn refresh_early(&self, now_ms: i64, beta: f64, unit: f64) -> bool {
        if !self.is_fresh(now_ms) {
            return true;
        }
        if beta.is_nan() || beta <= 0.0 || self.delta_ms == 0 {
            return false;
        }
        // u in (0, 1]: ln(u) <= 0, so the gap is >= 0; u -> 0 makes it unbounded (always refresh).
        let unit = if unit > 0.0 && unit <= 1.0 { unit } else { 1.0 };
        let gap = -(f64::from(self.delta_ms)) * beta * unit.ln();
        now_ms as f64 + gap >= self.fresh_until_ms as f64
    }
}

impl CachedProfile {
    /// Fresh, or of unknown freshness (see [`CachedProfile::freshness`]).
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        self.freshness.is_none_or(|f| f.is_fresh(now_ms))
    }
}

/// Why a hash read from Redis cannot be used. Callers count it as a miss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("no such hash")]
    Empty,
    #[error("hash field {0} is missing")]
    MissingField(&'static str),
    #[error("hash field {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("hash field {field} is invalid: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("expected {expected} values from HMGET, got {got}")]
    WrongArity { expected: usize, got: usize },
}

impl From<ValidationError> for HashError {
    fn from(e: ValidationError) -> Self {
        HashError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

/// The metadata of an entry that says there is no profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    /// [`MISSING_VERSION`] for a marker; the deleted row's last version for a tombstone.
    pub version: i64,
    /// Fill time, milliseconds since the Unix epoch.
    pub filled_at_ms: i64,
}

/// What the cache says about one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEntry {
    /// The profile, at a row version.
    Present(CachedProfile),
    /// Negative cache: a lookup found no row (short TTL).
    Missing(Absence),
    /// Tombstone: the row was deleted at this version (short TTL).
    Deleted(Absence),
}

impl CacheEntry {
    /// Which of two entries with the same version is newer: a row's copy beats a "missing" marker, and
    /// the deletion of a row at version `v` beats that row's copy at `v`. The origin's compare-and-set
    /// keeps the entry with the larger `(version, rank)`.
    pub fn rank(&self) -> u8 {
        match self {
            CacheEntry::Missing(_) => 0,
            CacheEntry::Present(_) => 1,
            CacheEntry::Deleted(_) => 2,
        }
    }

    pub fn version(&self) -> i64 {
        match self {
            CacheEntry::Present(p) => p.version,
            CacheEntry::Missing(a) | CacheEntry::Deleted(a) => a.version,
        }
    }

    /// True for a marker or a tombstone: the cache says the id has no profile (an API 404).
    pub fn is_absent(&self) -> bool {
        !matches!(self, CacheEntry::Present(_))
    }

    /// A "missing" marker filled now.
    pub fn missing(filled_at_ms: i64) -> Self {
        CacheEntry::Missing(Absence {
            version: MISSING_VERSION,
            filled_at_ms,
        })
    }

    /// A tombstone for a row deleted at `version`.
    pub fn deleted(version: i64, filled_at_ms: i64) -> Self {
        CacheEntry::Deleted(Absence {
            version,
            filled_at_ms,
        })
    }

    /// The `HSET` field/value pairs (the whole hash: writers replace it, never merge).
    pub fn to_hash_fields(&self) -> Vec<(&'static str, String)> {
        let (state, absence) = match self {
            CacheEntry::Present(p) => return p.to_hash_fields(),
            CacheEntry::Missing(a) => (STATE_MISSING, a),
            CacheEntry::Deleted(a) => (STATE_DELETED, a),
        };
        vec![
            (STATE_FIELD, state.to_string()),
            (VERSION_FIELD, absence.version.to_string()),
            (FILLED_AT_FIELD, absence.filled_at_ms.to_string()),
        ]
    }

    /// Parses the field/value pairs of `HGETALL`. A hash with `_state` is a marker or a tombstone
    /// (whatever else it holds); any other hash must be a complete profile.
    pub fn from_hash<K, V>(
        id: UserId,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, HashError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let field = |name: &'static str| {
            entries
                .iter()
                .find(|(k, _)| k.as_ref() == name.as_bytes())
                .map(|(_, v)| std::str::from_utf8(v.as_ref()).map_err(|_| HashError::NotUtf8(name)))
                .transpose()
        };
        let Some(state) = field(STATE_FIELD)? else {
            return CachedProfile::from_hash(id, entries).map(CacheEntry::Present);
        };
        let absence = Absence {
            version: parse_metadata(VERSION_FIELD, field(VERSION_FIELD)?)?,
            filled_at_ms: parse_metadata(FILLED_AT_FIELD, field(FILLED_AT_FIELD)?)?,
        };
        match state {
            STATE_MISSING => Ok(CacheEntry::Missing(absence)),
            STATE_DELETED => Ok(CacheEntry::Deleted(absence)),
            _ => Err(HashError::Invalid {
                field: STATE_FIELD,
                message: format!("must be {STATE_MISSING:?} or {STATE_DELETED:?}"),
            }),
        }
    }
}

impl CachedProfile {
    /// The `HSET` field/value pairs, profile fields first, then metadata.
    pub fn to_hash_fields(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = Field::ALL
            .iter()
            .map(|f| (f.name(), f.value_of(&self.profile)))
            .collect();
        pairs.push((VERSION_FIELD, self.version.to_string()));
        pairs.push((FILLED_AT_FIELD, self.filled_at_ms.to_string()));
        if let Some(f) = self.freshness {
            pairs.push((FRESH_UNTIL_FIELD, f.fresh_until_ms.to_string()));
            pairs.push((DELTA_FIELD, f.delta_ms.to_string()));
        }
        pairs
    }

    /// Parses the field/value pairs of `HGETALL` (as raw bytes). Unknown fields are ignored so that a
    /// newer writer can add metadata without breaking older readers.
    pub fn from_hash<K, V>(
        id: UserId,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, HashError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut slots: [Option<String>; 6] = Default::default();
        let mut version = None;
        let mut filled_at = None;
        let mut fresh_until = None;
        let mut delta = None;
        let mut any = false;
        for (key, value) in entries {
            any = true;
            let key = key.as_ref();
            let slot = if key == VERSION_FIELD.as_bytes() {
                &mut version
            } else if key == FILLED_AT_FIELD.as_bytes() {
                &mut filled_at
            } else if key == FRESH_UNTIL_FIELD.as_bytes() {
                &mut fresh_until
            } else if key == DELTA_FIELD.as_bytes() {
                &mut delta
            } else if let Some(i) = Field::ALL.iter().position(|f| f.name().as_bytes() == key) {
                &mut slots[i]
            } else {
                continue;
            };
            let name = field_name_of(key);
            let text = std::str::from_utf8(value.as_ref()).map_err(|_| HashError::NotUtf8(name))?;
            *slot = Some(text.to_string());
        }
        if !any {
            return Err(HashError::Empty);
        }
        let get = |i: usize| {
            slots[i]
                .as_deref()
                .ok_or(HashError::MissingField(Field::ALL[i].name()))
        };
        let profile = UserProfile {
            id,
            full_name: FullName::parse(get(0)?)?,
            gender: Gender::parse(get(1)?)?,
            birth_date: BirthDate::parse(get(2)?)?,
            department: Department::parse(get(3)?)?,
            email: Email::parse(get(4)?)?,
            username: Username::parse(get(5)?)?,
        };
        Ok(CachedProfile {
            profile,
            version: parse_metadata(VERSION_FIELD, version.as_deref())?,
            filled_at_ms: parse_metadata(FILLED_AT_FIELD, filled_at.as_deref())?,
            freshness: parse_freshness(fresh_until.as_deref(), delta.as_deref())?,
        })
    }
}

/// `_fresh_until` and `_delta_ms`: both or neither (an older writer's hash has neither).
fn parse_freshness(
    fresh_until: Option<&str>,
    delta: Option<&str>,
) -> Result<Option<Freshness>, HashError> {
    match (fresh_until, delta) {
        (None, None) => Ok(None),
        (fresh_until, delta) => {
            let fresh_until_ms = parse_metadata(FRESH_UNTIL_FIELD, fresh_until)?;
            let delta_ms = parse_metadata(DELTA_FIELD, delta)?;
            let delta_ms = u32::try_from(delta_ms).map_err(|_| HashError::Invalid {
                field: DELTA_FIELD,
                message: "must fit in 32 bits".into(),
            })?;
            Ok(Some(Freshness {
                fresh_until_ms,
                delta_ms,
            }))
        }
    }
}

/// The hash fields an `HMGET` for `selection` asks for: the selected fields, then [`VERSION_FIELD`]
/// (asked for so that a hash without it, i.e. not written by aside, is a miss), then [`STATE_FIELD`]
/// (so that a marker or a tombstone is told apart from a profile, even for `?fields=id`), then
/// [`FRESH_UNTIL_FIELD`] and [`DELTA_FIELD`].
pub fn hmget_fields(selection: &FieldSelection) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = selection.fields().iter().map(|f| f.name()).collect();
    names.extend(HMGET_METADATA);
    names
}

/// The metadata fields [`hmget_fields`] appends, in order.
const HMGET_METADATA: [&str; 4] = [VERSION_FIELD, STATE_FIELD, FRESH_UNTIL_FIELD, DELTA_FIELD];

/// What an `HMGET` of [`hmget_fields`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    /// The `?fields=` JSON answer, and the row version the hash was taken from.
    Present {
        body: serde_json::Value,
        version: i64,
        freshness: Option<Freshness>,
    },
    /// A marker or a tombstone: the id has no profile (an API 404).
    Absent,
}

/// Builds the `?fields=` answer from the values of `HMGET key <hmget_fields(selection)>`, in the same
/// order. Any nil or invalid value of a profile makes the whole answer a miss.
pub fn projection_from_hmget<V: AsRef<[u8]>>(
    id: UserId,
    selection: &FieldSelection,
    values: &[Option<V>],
) -> Result<Projection, HashError> {
    let selected = selection.fields().len();
    let expected = selected + HMGET_METADATA.len();
    if values.len() != expected {
        return Err(HashError::WrongArity {
            expected,
            got: values.len(),
        });
    }
    let text = |name: &'static str, value: &Option<V>| -> Result<String, HashError> {
        let raw = value.as_ref().ok_or(HashError::MissingField(name))?;
        let text = std::str::from_utf8(raw.as_ref()).map_err(|_| HashError::NotUtf8(name))?;
        Ok(text.to_string())
    };
    let version = text(VERSION_FIELD, &values[selected])?;
    let version = parse_metadata(VERSION_FIELD, Some(&version))?;
    if values[selected + 1].is_some() {
        let state = text(STATE_FIELD, &values[selected + 1])?;
        return match state.as_str() {
            STATE_MISSING | STATE_DELETED => Ok(Projection::Absent),
            _ => Err(HashError::Invalid {
                field: STATE_FIELD,
                message: format!("must be {STATE_MISSING:?} or {STATE_DELETED:?}"),
            }),
        };
    }
    let mut object = serde_json::Map::new();
    object.insert("id".into(), serde_json::Value::from(id.get()));
    for (field, value) in selection.fields().iter().zip(values) {
        let value = text(field.name(), value)?;
        validate_field(*field, &value)?;
        object.insert(field.name().into(), serde_json::Value::from(value));
    }
    let optional = |name: &'static str, value: &Option<V>| -> Result<Option<String>, HashError> {
        value.as_ref().map(|_| text(name, value)).transpose()
    };
    let fresh_until = optional(FRESH_UNTIL_FIELD, &values[selected + 2])?;
    let delta = optional(DELTA_FIELD, &values[selected + 3])?;
    Ok(Projection::Present {
        body: serde_json::Value::Object(object),
        version,
        freshness: parse_freshness(fresh_until.as_deref(), delta.as_deref())?,
    })
}

fn validate_field(field: Field, text: &str) -> Result<(), ValidationError> {
    match field {
        Field::FullName => FullName::parse(text).map(drop),
        Field::Gender => Gender::parse(text).map(drop),
        Field::BirthDate => BirthDate::parse(text).map(drop),
        Field::Department => Department::parse(text).map(drop),
        Field::Email => Email::parse(text).map(drop),
        Field::Username => Username::parse(text).map(drop),
    }
}

fn field_name_of(key: &[u8]) -> &'static str {
    if key == VERSION_FIELD.as_bytes() {
        VERSION_FIELD
    } else if key == FILLED_AT_FIELD.as_bytes() {
        FILLED_AT_FIELD
    } else if key == FRESH_UNTIL_FIELD.as_bytes() {
        FRESH_UNTIL_FIELD
    } else if key == DELTA_FIELD.as_bytes() {
        DELTA_FIELD
    } else {
        Field::ALL
            .iter()
            .find(|f| f.name().as_bytes() == key)
            .map(|f| f.name())
            .unwrap_or("?")
    }
}

fn parse_metadata(field: &'static str, value: Option<&str>) -> Result<i64, HashError> {
    let value = value.ok_or(HashError::MissingField(field))?;
    let ok = !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit());
    let parsed = if ok { value.parse::<i64>().ok() } else { None };
    parsed.ok_or_else(|| HashError::Invalid {
        field,
        message: "must be a non-negative integer".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached() -> CachedProfile {
        CachedProfile {
            profile: serde_json::from_str(
                r#"{"id":12,"full_name":"João Gonçalves","gender":"M","birth_date":"1975-12-31",
                    "department":"Human Resources","email":"joao.goncalves@fake-devops-db.internal",
                    "username":"joao.goncalves"}"#,
            )
            .unwrap(),
            version: 3,
            filled_at_ms: 1_700_000_000_000,
            freshness: Some(Freshness {
                fresh_until_ms: 1_700_000_030_000,
                delta_ms: 4,
            }),
        }
    }

    fn as_bytes(pairs: &[(&'static str, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn key_scheme_is_user_profile_id_in_a_hash_tag() {
        assert_eq!(
            profile_key(UserId::parse("42").unwrap()),
            "user:profile:{42}"
        );
    }

    #[test]
    fn lease_keys_sit_beside_profile_keys() {
        let id = UserId::parse("42").unwrap();
        assert_eq!(lease_key(id), "user:lease:{42}");
        assert_eq!(profile_key(id), "user:profile:{42}");
    }

    #[test]
    fn profile_keys_give_back_their_id_and_old_style_keys_none() {
        let id = UserId::parse("42").unwrap();
        assert_eq!(id_of_profile_key(&profile_key(id)), Some(id));
        for other in [
            "user:profile:42",
            "user:profile:{42",
            "user:profile:42}",
            "user:profile:{}",
            "user:profile:{x}",
            "user:profile:{042}",
            "user:lease:{42}",
            "aside:{feed}",
        ] {
            assert_eq!(id_of_profile_key(other), None, "{other}");
        }
    }

    #[test]
    fn hash_round_trips() {
        let c = cached();
        let pairs = c.to_hash_fields();
        assert_eq!(pairs.len(), 10);
        let back = CachedProfile::from_hash(c.profile.id, as_bytes(&pairs)).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn hashes_without_freshness_are_read_as_of_unknown_freshness() {
        let c = CachedProfile {
            freshness: None,
            ..cached()
        };
        let pairs = c.to_hash_fields();
        assert_eq!(pairs.len(), 8);
        let back = CachedProfile::from_hash(c.profile.id, as_bytes(&pairs)).unwrap();
        assert_eq!(back.freshness, None);
        assert!(back.is_fresh(i64::MAX), "unknown freshness counts as fresh");
    }

    #[test]
    fn freshness_ends_at_the_soft_expiry() {
        let f = Freshness {
            fresh_until_ms: 1_000,
            delta_ms: 10,
        };
        assert!(f.is_fresh(999));
        assert!(!f.is_fresh(1_000));
        assert!(f.refresh_early(1_000, 1.0, 0.5), "expired is always due");
    }

    #[test]
    fn xfetch_refreshes_early_more_often_as_expiry_nears() {
        let f = Freshness {
            fresh_until_ms: 10_000,
            delta_ms: 100,
        };
        // With u = e^-1 the gap is exactly delta * beta.
        let u = (-1.0f64).exp();
        assert!(!f.refresh_early(9_899, 1.0, u));
        assert!(f.refresh_early(9_901, 1.0, u));
        assert!(f.refresh_early(9_801, 2.0, u), "beta scales the window");
        assert!(
            !f.refresh_early(9_000, 0.0, 1e-9),
            "beta 0 never refreshes early"
        );
        assert!(!f.refresh_early(0, 1.0, 1.0), "u = 1: no gap");
        assert!(f.refresh_early(0, 1.0, 1e-300), "u -> 0: always");
        assert!(!f.refresh_early(0, 1.0, f64::NAN), "bad draws are harmless");

        // The probability, over a uniform u, grows as the expiry nears.
        let rate = |now: i64| {
            let n = 10_000;
            (1..=n)
                .filter(|i| f.refresh_early(now, 1.0, f64::from(*i) / f64::from(n)))
                .count()
        };
        let (far, mid, near) = (rate(9_500), rate(9_900), rate(9_990));
        assert!(far < mid && mid < near, "{far} {mid} {near}");
        assert_eq!(far, 67, "P = e^(-500/100) of 10,000 draws");
    }

    #[test]
    fn freshness_fields_come_in_pairs() {
        let c = cached();
        let id = c.profile.id;
        let good = as_bytes(&c.to_hash_fields());
        for name in [FRESH_UNTIL_FIELD, DELTA_FIELD] {
            let only_one: Vec<_> = good
                .iter()
                .filter(|(k, _)| k != name.as_bytes())
                .cloned()
                .collect();
            assert!(CachedProfile::from_hash(id, only_one).is_err(), "{name}");
        }
        let mut huge_delta = good.clone();
        huge_delta[9].1 = b"4294967296".to_vec();
        assert!(CachedProfile::from_hash(id, huge_delta).is_err());
    }

    #[test]
    fn empty_hash_is_a_miss() {
        let none: Vec<(Vec<u8>, Vec<u8>)> = vec![];
        assert_eq!(
            CachedProfile::from_hash(cached().profile.id, none),
            Err(HashError::Empty)
        );
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let c = cached();
        let id = c.profile.id;
        let good = as_bytes(&c.to_hash_fields());

        for i in 0..good.len() {
            let mut missing = good.clone();
            missing.remove(i);
            assert!(
                CachedProfile::from_hash(id, missing).is_err(),
                "without field {i}"
            );
        }

        let mut bad_gender = good.clone();
        bad_gender[1].1 = b"X".to_vec();
        assert!(matches!(
            CachedProfile::from_hash(id, bad_gender),
            Err(HashError::Invalid {
                field: "gender",
                ..
            })
        ));

        let mut not_utf8 = good.clone();
        not_utf8[0].1 = vec![0xff, 0xfe, b'a'];
        assert_eq!(
            CachedProfile::from_hash(id, not_utf8),
            Err(HashError::NotUtf8("full_name"))
        );

        let mut bad_version = good.clone();
        bad_version[6].1 = b"-1".to_vec();
        assert!(CachedProfile::from_hash(id, bad_version).is_err());

        let mut huge = good.clone();
        huge[4].1 = vec![b'a'; 10 * 1024];
        assert!(CachedProfile::from_hash(id, huge).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let c = cached();
        let mut pairs = as_bytes(&c.to_hash_fields());
        pairs.push((b"_future".to_vec(), b"whatever".to_vec()));
        assert_eq!(CachedProfile::from_hash(c.profile.id, pairs).unwrap(), c);
    }

    #[test]
    fn hmget_projection_validates_every_value() {
        let c = cached();
        let sel = FieldSelection::parse("email,gender").unwrap();
        assert_eq!(
            hmget_fields(&sel),
            vec![
                "gender",
                "email",
                "_version",
                "_state",
                "_fresh_until",
                "_delta_ms"
            ]
        );
        let values = vec![
            Some(b"M".to_vec()),
            Some(b"joao.goncalves@fake-devops-db.internal".to_vec()),
            Some(b"3".to_vec()),
            None,
            Some(b"1700000030000".to_vec()),
            Some(b"4".to_vec()),
        ];
        let v = projection_from_hmget(c.profile.id, &sel, &values).unwrap();
        assert_eq!(
            v,
            Projection::Present {
                body: serde_json::json!({"id": 12, "gender": "M", "email": "joao.goncalves@fake-devops-db.internal"}),
                version: 3,
                freshness: c.freshness,
            }
        );
        let mut older_writer = values.clone();
        older_writer[4] = None;
        older_writer[5] = None;
        assert!(matches!(
            projection_from_hmget(c.profile.id, &sel, &older_writer).unwrap(),
            Projection::Present {
                freshness: None,
                ..
            }
        ));
        let mut half = values.clone();
        half[5] = None;
        assert!(projection_from_hmget(c.profile.id, &sel, &half).is_err());

        let mut nil = values.clone();
        nil[0] = None;
        assert!(projection_from_hmget(c.profile.id, &sel, &nil).is_err());
        let mut invalid = values.clone();
        invalid[1] = Some(b"not an email".to_vec());
        assert!(projection_from_hmget(c.profile.id, &sel, &invalid).is_err());
        assert!(projection_from_hmget(c.profile.id, &sel, &values[..3]).is_err());
        let mut no_version = values.clone();
        no_version[2] = None;
        assert!(projection_from_hmget(c.profile.id, &sel, &no_version).is_err());
        let mut odd_state = values.clone();
        odd_state[3] = Some(b"gone".to_vec());
        assert!(projection_from_hmget(c.profile.id, &sel, &odd_state).is_err());
    }

    #[test]
    fn markers_and_tombstones_round_trip_and_project_as_absent() {
        let id = cached().profile.id;
        for entry in [CacheEntry::missing(5), CacheEntry::deleted(7, 6)] {
            let pairs = as_bytes(&entry.to_hash_fields());
            assert_eq!(CacheEntry::from_hash(id, pairs.clone()).unwrap(), entry);
            assert!(entry.is_absent());
            // Even `?fields=id` (only `_version` and `_state` asked for) is told it is absent.
            let only_id = FieldSelection::parse("id").unwrap();
            let values: Vec<Option<Vec<u8>>> = hmget_fields(&only_id)
                .iter()
                .map(|f| {
                    pairs
                        .iter()
                        .find(|(k, _)| k == f.as_bytes())
                        .map(|(_, v)| v.clone())
                })
                .collect();
            assert_eq!(
                projection_from_hmget(id, &only_id, &values).unwrap(),
                Projection::Absent
            );
        }
        let present = CacheEntry::Present(cached());
        assert_eq!(
            CacheEntry::from_hash(id, as_bytes(&present.to_hash_fields())).unwrap(),
            present
        );
        assert_eq!(
            CacheEntry::from_hash(id, Vec::<(Vec<u8>, Vec<u8>)>::new()),
            Err(HashError::Empty)
        );
        let bad_state = vec![
            (b"_state".to_vec(), b"gone".to_vec()),
            (b"_version".to_vec(), b"1".to_vec()),
            (b"_filled_at".to_vec(), b"1".to_vec()),
        ];
        assert!(CacheEntry::from_hash(id, bad_state).is_err());
        let no_version = vec![(b"_state".to_vec(), b"missing".to_vec())];
        assert!(CacheEntry::from_hash(id, no_version).is_err());
    }

    #[test]
    fn ranks_order_entries_of_the_same_version() {
        let present = CacheEntry::Present(cached());
        let deleted = CacheEntry::deleted(present.version(), 0);
        let missing = CacheEntry::missing(0);
        assert!(missing.rank() < present.rank() && present.rank() < deleted.rank());
        assert_eq!(missing.version(), MISSING_VERSION);
        const { assert!(MISSING_VERSION < 1, "below every row version") };
    }
}
