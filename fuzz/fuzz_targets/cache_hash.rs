//! A profile hash read back from Redis (`HGETALL` and `HMGET`): input like any other, since anything
//! with write access to Redis, or a bug in an older writer, can leave any bytes there.
//!
//! Input: the first byte picks the `?fields=` selection (bit i selects `Field::ALL[i]`; none is
//! `?fields=id`); the rest is the hash, `key NUL value NUL key NUL value ...` (a trailing key without a
//! value is dropped; a repeated key keeps its first value, as a Redis hash has each field once). The
//! format is plain so that corpus files can be written and read by hand (`fuzz/corpus/cache_hash/`).
//!
//! Properties:
//! * `CacheEntry::from_hash` never panics; an empty hash is `Empty`; a hash without `_state` reads as
//!   `CachedProfile::from_hash` does; an error names a field that is absent (`MissingField`), not UTF-8
//!   (`NotUtf8`) or present (`Invalid`);
//! * round trip: an entry that parses, written back with `to_hash_fields`, parses to the same entry,
//!   and writing that again gives the same pairs; a profile's field values are the hash's bytes
//!   unchanged;
//! * the two readers agree: for any selection, `projection_from_hmget` on the values `HMGET` would
//!   return is the selection's projection of the entry `HGETALL` read (same body, version and
//!   freshness), or `Absent` for a marker or a tombstone; and whatever it returns on its own is made of
//!   the hash's bytes.

#![no_main]

use aside_fuzz::hash_id;
use aside_shared::cache::{
    CacheEntry, Projection, STATE_DELETED, STATE_FIELD, STATE_MISSING, VERSION_FIELD, hmget_fields,
    projection_from_hmget,
};
use aside_shared::{CachedProfile, Field, FieldSelection, HashError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

fuzz_target!(|data: &[u8]| {
    let Some((&mask, hash)) = data.split_first() else {
        return;
    };
    let selection = selection_of(mask);
    let pairs = pairs_of(hash);
    let lookup = |name: &str| value_of(&pairs, name);
    let id = hash_id();

    let entry = CacheEntry::from_hash(id, pairs.iter().copied());
    if pairs.is_empty() {
        assert_eq!(entry, Err(HashError::Empty));
    }
    if lookup(STATE_FIELD).is_none() {
        let profile = CachedProfile::from_hash(id, pairs.iter().copied());
        assert_eq!(entry, profile.map(CacheEntry::Present));
    }
    match &entry {
        Err(HashError::MissingField(name)) => assert_eq!(lookup(name), None, "{name}"),
        Err(HashError::NotUtf8(name)) => {
            let value = lookup(name).expect("a field that is not UTF-8 is present");
            assert!(std::str::from_utf8(value).is_err());
        }
        Err(HashError::Invalid { field, .. }) => assert!(lookup(field).is_some(), "{field}"),
        Err(HashError::Empty) => assert!(pairs.is_empty()),
        Err(e @ HashError::WrongArity { .. }) => panic!("HGETALL has no arity: {e}"),
        Ok(entry) => check_round_trip(entry, &pairs),
    }

    let values: Vec<Option<&[u8]>> = hmget_fields(&selection)
        .iter()
        .map(|name| lookup(name))
        .collect();
    let projection = projection_from_hmget(id, &selection, &values);
    match &entry {
        Ok(CacheEntry::Present(cached)) => assert_eq!(
            projection,
            Ok(Projection::Present {
                body: selection.project(&cached.profile),
                version: cached.version,
                freshness: cached.freshness,
            })
        ),
        Ok(CacheEntry::Missing(_) | CacheEntry::Deleted(_)) => {
            assert_eq!(projection, Ok(Projection::Absent))
        }
        Err(_) => {}
    }
    match projection {
        Ok(Projection::Absent) => {
            let state = lookup(STATE_FIELD).expect("absent says so in _state");
            assert!(state == STATE_MISSING.as_bytes() || state == STATE_DELETED.as_bytes());
        }
        Ok(Projection::Present { body, version, .. }) => {
            assert_eq!(lookup(STATE_FIELD), None);
            let version_text = lookup(VERSION_FIELD).expect("a projection has a version");
            assert_eq!(
                std::str::from_utf8(version_text)
                    .ok()
                    .and_then(|v| v.parse().ok()),
                Some(version)
            );
            let Value::Object(object) = body else {
                panic!("a projection is a JSON object");
            };
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut expected = vec!["id"];
            expected.extend(selection.fields().iter().map(|f| f.name()));
            assert_eq!(keys, expected);
            assert_eq!(object["id"], Value::from(id.get()));
            for field in selection.fields() {
                let sent = object[field.name()]
                    .as_str()
                    .expect("field values are strings");
                assert_eq!(Some(sent.as_bytes()), lookup(field.name()));
            }
        }
        Err(_) => {}
    }
});

fn selection_of(mask: u8) -> FieldSelection {
    let names: Vec<&str> = Field::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, f)| f.name())
        .collect();
    let spelled = if names.is_empty() {
        "id".to_string()
    } else {
        names.join(",")
    };
    FieldSelection::parse(&spelled).expect("known field names")
}

fn pairs_of(hash: &[u8]) -> Pairs<'_> {
    let mut parts = hash.split(|b| *b == 0);
    let mut pairs: Pairs = Vec::new();
    while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
        if !pairs.iter().any(|(k, _)| *k == key) {
            pairs.push((key, value));
        }
    }
    pairs
}

/// What `HGET key name` returns.
fn value_of<'a>(pairs: &Pairs<'a>, name: &str) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| *v)
}

fn check_round_trip(entry: &CacheEntry, pairs: &Pairs) {
    let written = entry.to_hash_fields();
    let keys: Vec<&str> = written.iter().map(|(k, _)| *k).collect();
    assert!(
        keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k)),
        "a writer sets each field once: {keys:?}"
    );
    let back = CacheEntry::from_hash(
        hash_id(),
        written.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    assert_eq!(back.as_ref(), Ok(entry));
    assert_eq!(back.map(|e| e.to_hash_fields()), Ok(written));
    if let CacheEntry::Present(cached) = entry {
        for field in Field::ALL {
            assert_eq!(
                value_of(pairs, field.name()),
                Some(field.value_of(&cached.profile).as_bytes()),
                "{} is carried byte for byte",
                field.name()
            );
        }
    }
}
