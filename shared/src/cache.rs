//! Redis key names and the profile <-> hash mapping.
//!
//! A profile is cached as one Redis hash, key `user:profile:{id}`, whose fields are the six profile
//! fields (named as in the JSON API) plus `_`-prefixed metadata. Hashes keep small profiles in the compact
//! listpack encoding and let a reader fetch only some fields with `HMGET`.
//!
//! A hash read back from Redis is input like any other: [`CachedProfile::from_hash`] parses every field
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
/// Default lifetime of a cached profile, in seconds (before jitter).
pub const DEFAULT_TTL_SECS: u64 = 7200;

/// The Redis key of a profile: `user:profile:{id}`.
pub fn profile_key(id: UserId) -> String {
    format!("{PROFILE_KEY_PREFIX}{id}")
}

/// A profile as stored in Redis: the profile and the metadata the cache keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedProfile {
    pub profile: UserProfile,
    /// The row version this copy was taken from (grows on every change of the row).
    pub version: i64,
    /// Fill time, milliseconds since the Unix epoch.
    pub filled_at_ms: i64,
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

impl CachedProfile {
    /// The `HSET` field/value pairs, profile fields first, then metadata.
    pub fn to_hash_fields(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = Field::ALL
            .iter()
            .map(|f| (f.name(), f.value_of(&self.profile)))
            .collect();
        pairs.push((VERSION_FIELD, self.version.to_string()));
        pairs.push((FILLED_AT_FIELD, self.filled_at_ms.to_string()));
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
        let mut any = false;
        for (key, value) in entries {
            any = true;
            let key = key.as_ref();
            let slot = if key == VERSION_FIELD.as_bytes() {
                &mut version
            } else if key == FILLED_AT_FIELD.as_bytes() {
                &mut filled_at
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
        })
    }
}

/// The hash fields an `HMGET` for `selection` asks for: the selected fields, then [`VERSION_FIELD`]
/// (asked for so that a hash without it, i.e. not written by aside, is a miss).
pub fn hmget_fields(selection: &FieldSelection) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = selection.fields().iter().map(|f| f.name()).collect();
    names.push(VERSION_FIELD);
    names
}

/// Builds the `?fields=` JSON answer from the values of `HMGET key <hmget_fields(selection)>`, in the
/// same order. Any nil or invalid value makes the whole answer a miss.
pub fn projection_from_hmget<V: AsRef<[u8]>>(
    id: UserId,
    selection: &FieldSelection,
    values: &[Option<V>],
) -> Result<serde_json::Value, HashError> {
    let expected = selection.fields().len() + 1;
    if values.len() != expected {
        return Err(HashError::WrongArity {
            expected,
            got: values.len(),
        });
    }
    let mut object = serde_json::Map::new();
    object.insert("id".into(), serde_json::Value::from(id.get()));
    for (field, value) in selection.fields().iter().zip(values) {
        let name = field.name();
        let raw = value.as_ref().ok_or(HashError::MissingField(name))?;
        let text = std::str::from_utf8(raw.as_ref()).map_err(|_| HashError::NotUtf8(name))?;
        validate_field(*field, text)?;
        object.insert(name.into(), serde_json::Value::from(text));
    }
    let version = values[expected - 1]
        .as_ref()
        .ok_or(HashError::MissingField(VERSION_FIELD))?;
    let version =
        std::str::from_utf8(version.as_ref()).map_err(|_| HashError::NotUtf8(VERSION_FIELD))?;
    parse_metadata(VERSION_FIELD, Some(version))?;
    Ok(serde_json::Value::Object(object))
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
        }
    }

    fn as_bytes(pairs: &[(&'static str, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn key_scheme_is_user_profile_id() {
        assert_eq!(profile_key(UserId::parse("42").unwrap()), "user:profile:42");
    }

    #[test]
    fn hash_round_trips() {
        let c = cached();
        let pairs = c.to_hash_fields();
        assert_eq!(pairs.len(), 8);
        let back = CachedProfile::from_hash(c.profile.id, as_bytes(&pairs)).unwrap();
        assert_eq!(back, c);
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
        assert_eq!(hmget_fields(&sel), vec!["gender", "email", "_version"]);
        let values = vec![
            Some(b"M".to_vec()),
            Some(b"joao.goncalves@fake-devops-db.internal".to_vec()),
            Some(b"3".to_vec()),
        ];
        let v = projection_from_hmget(c.profile.id, &sel, &values).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": 12, "gender": "M", "email": "joao.goncalves@fake-devops-db.internal"})
        );

        let mut nil = values.clone();
        nil[0] = None;
        assert!(projection_from_hmget(c.profile.id, &sel, &nil).is_err());
        let mut invalid = values.clone();
        invalid[1] = Some(b"not an email".to_vec());
        assert!(projection_from_hmget(c.profile.id, &sel, &invalid).is_err());
        assert!(projection_from_hmget(c.profile.id, &sel, &values[..2]).is_err());
        let mut no_version = values.clone();
        no_version[2] = None;
        assert!(projection_from_hmget(c.profile.id, &sel, &no_version).is_err());
    }
}
