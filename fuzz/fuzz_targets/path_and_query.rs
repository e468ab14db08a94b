//! The request line's parsers: the path id (`/users/{id}`) and the `?fields=` projection.
//!
//! Input: the bytes are the path segment, the `fields` value and the whole query string at once
//! (non-UTF-8 input is skipped: both sides only ever see `&str`).
//!
//! Properties:
//! * `UserId::parse` accepts exactly the canonical decimals 1 ..= 2^31-1 (a model written here), and an
//!   accepted id prints back as the input (one spelling, one cache key) and as the same JSON number;
//! * `FieldSelection::parse` accepts exactly the lists of known names (and `id`) within 256 bytes and
//!   `FieldSelection::max_names` names, yields them sorted and de-duplicated, and its canonical form parses to the same selection; the projection
//!   and the `HMGET` field list follow the selection;
//! * `FieldSelection::from_query` accepts only a lone `fields=` parameter, agrees with `parse` on its
//!   value, and a refusal names the `query` or `fields` parameter.

#![no_main]

use aside_fuzz::sample_profile;
use aside_shared::cache::{hmget_fields, profile_key};
use aside_shared::{Field, FieldSelection, UserId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_user_id(text);
    check_selection(text);
    check_query(text);
});

fn check_user_id(text: &str) {
    let canonical = !text.is_empty()
        && text.len() <= 10
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0')
        && text.parse::<u64>().is_ok_and(|v| v <= i32::MAX as u64);
    match UserId::parse(text) {
        Ok(id) => {
            assert!(canonical, "accepted a non-canonical id {text:?}");
            assert_eq!(id.to_string(), text);
            assert_eq!(profile_key(id), format!("user:profile:{{{text}}}"));
            let json = serde_json::to_string(&id).expect("an id serialises");
            assert_eq!(json, text);
            assert_eq!(serde_json::from_str::<UserId>(&json).ok(), Some(id));
        }
        Err(e) => {
            assert!(!canonical, "refused the canonical id {text:?}: {e}");
            assert_eq!(e.field, "id");
            assert!(!e.message.is_empty());
        }
    }
}

/// The selection's canonical spelling: its field names in order, or `id` for an empty one.
fn canonical(selection: &FieldSelection) -> String {
    if selection.is_empty() {
        return "id".into();
    }
    let names: Vec<&str> = selection.fields().iter().map(|f| f.name()).collect();
    names.join(",")
}

fn check_selection(text: &str) {
    let model = (text.len() <= FieldSelection::MAX_INPUT_BYTES
        && text.split(',').count() <= FieldSelection::max_names())
        .then(|| {
            let mut fields = Vec::new();
            for name in text.split(',').filter(|n| *n != "id") {
                fields.push(Field::from_name(name)?);
            }
            fields.sort();
            fields.dedup();
            Some(fields)
        })
        .flatten();
    match FieldSelection::parse(text) {
        Ok(selection) => {
            assert_eq!(Some(selection.fields()), model.as_deref(), "{text:?}");
            assert!(selection.fields().windows(2).all(|w| w[0] < w[1]));
            assert_eq!(
                FieldSelection::parse(&canonical(&selection)).as_ref(),
                Ok(&selection)
            );

            let body = selection.project(&sample_profile());
            let keys: Vec<&str> = body
                .as_object()
                .expect("a projection is an object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected = vec!["id"];
            expected.extend(selection.fields().iter().map(|f| f.name()));
            assert_eq!(keys, expected);

            let hmget = hmget_fields(&selection);
            assert_eq!(&hmget[..selection.fields().len()], &expected[1..]);
            assert_eq!(hmget.len(), selection.fields().len() + 4);
        }
        Err(e) => {
            assert_eq!(model, None, "refused {text:?}: {e}");
            assert_eq!(e.field, "fields");
            assert!(!e.message.is_empty());
        }
    }
}

fn check_query(query: &str) {
    match FieldSelection::from_query(Some(query)) {
        Ok(None) => assert!(query.is_empty(), "{query:?} was read as no query"),
        Ok(Some(selection)) => {
            let value = query
                .strip_prefix("fields=")
                .expect("only a fields parameter is accepted");
            assert!(!value.contains('&'), "more than one parameter in {query:?}");
            let decoded = value.replace("%2C", ",").replace("%2c", ",");
            assert_eq!(FieldSelection::parse(&decoded).as_ref(), Ok(&selection));
            let again = format!("fields={}", canonical(&selection));
            assert_eq!(
                FieldSelection::from_query(Some(&again)),
                Ok(Some(selection))
            );
        }
        Err(e) => {
            assert!(!query.is_empty());
            assert!(matches!(e.field, "query" | "fields"), "{e}");
            assert!(!e.message.is_empty());
        }
    }
}
