//! What the fuzz targets share: fixed inputs the parsers take besides the fuzzed bytes, and a JSON
//! reader that keeps what `serde_json::Value` loses (repeated keys).
//!
//! The targets assert properties (round trips, agreement between two readers of the same data,
//! agreement with a small model of the accepted language), not only "does not panic": a parser that
//! accepts what it should refuse, or writes what it cannot read back, fails a target as surely as a
//! panic does.

use aside_shared::{UserId, UserProfile};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use time::{Date, Month};

/// The `today` the body parsers check birth dates against (they have no clock).
pub fn today() -> Date {
    Date::from_calendar_date(2026, Month::March, 10).expect("a date")
}

/// The id the hash readers are given (the id is the key's, not a hash field).
pub fn hash_id() -> UserId {
    UserId::parse("12").expect("a valid id")
}

/// A valid profile, for the properties that need one.
pub fn sample_profile() -> UserProfile {
    serde_json::from_str(
        r#"{"id":3,"full_name":"Ana Silva","gender":"F","birth_date":"1980-01-02",
            "department":"Sales","email":"ana.silva@fake-devops-db.internal","username":"ana.silva"}"#,
    )
    .expect("the sample profile is valid")
}

/// The keys of a JSON object, in order and with repeats: `None` when `body` is not one JSON object.
/// Values are read as `serde_json::Value` so that this accepts exactly the documents the body parser
/// can read (the same nesting limit).
pub fn object_keys(body: &[u8]) -> Option<Vec<String>> {
    struct Keys(Vec<String>);
    struct KeysVisitor;

    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Keys;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde_json::Value>()?;
                keys.push(key);
            }
            Ok(Keys(keys))
        }
    }

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }

    serde_json::from_slice::<Keys>(body).ok().map(|k| k.0)
}
