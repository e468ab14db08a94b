//! The write bodies: `ProfileInput` (`POST`, `PUT`: every field) and `ProfilePatch` (`PATCH`: any subset).
//!
//! Input: the bytes are the request body.
//!
//! Properties:
//! * strict shape: a body is `400 malformed_body` exactly when it is not one JSON object whose keys are
//!   profile field names, each at most once (checked against a separate key reader); unknown fields,
//!   repeated fields, arrays, trailing bytes are all refused, by both parsers alike;
//! * the two parsers agree: an accepted input is a patch with every field set to the same values, a
//!   patch with every field set is an accepted input, and an invalid patch is an invalid input listing
//!   the same errors (plus only `is required` for fields it lacks);
//! * validation errors are never empty, name profile fields only, in API order;
//! * accepted values are the body's strings unchanged, the birth date is not after `today`, and an
//!   accepted input, written back as JSON (as the API answers it), parses to the same input;
//! * a `UserProfile` (the origin's answer, which the edge reads back into its tier 1) is accepted only
//!   from an object with `id` and the six fields, each once; it serialises back to the same profile, and
//!   its fields are what `ProfileInput` accepts from the same object without `id` (a cached copy is held
//!   to the write rules, save the birth date's `today`).

#![no_main]

use aside_fuzz::{object_keys, today};
use aside_shared::input::BodyError;
use aside_shared::{ApiError, Field, FieldErrors, ProfileInput, ProfilePatch, UserId, UserProfile};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let today = today();
    let input = ProfileInput::from_json(data, today);
    let patch = ProfilePatch::from_json(data, today);

    let well_shaped = object_keys(data).is_some_and(|keys| {
        keys.iter().all(|k| Field::from_name(k).is_some())
            && keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k))
    });
    let patch_malformed = matches!(patch, Err(BodyError::Malformed(_)));
    let input_malformed = matches!(input, Err(BodyError::Malformed(_)));
    assert_eq!(patch_malformed, !well_shaped, "patch: {patch:?}");
    assert_eq!(input_malformed, !well_shaped, "input: {input:?}");

    for err in [input.as_ref().err(), patch.as_ref().err()]
        .into_iter()
        .flatten()
    {
        check_error(err);
    }

    match (&input, &patch) {
        (Ok(input), Ok(patch)) => {
            assert_eq!(*patch, patch_of(input));
            check_input_round_trip(input);
        }
        (Err(BodyError::Invalid(input_errors)), Ok(patch)) => {
            assert!(
                patch_fields(patch).iter().any(Option::is_none),
                "a patch with every field is a valid input"
            );
            assert!(
                input_errors
                    .errors()
                    .iter()
                    .all(|e| e.message == "is required")
            );
        }
        (Err(BodyError::Invalid(input_errors)), Err(BodyError::Invalid(patch_errors))) => {
            let mut extra = input_errors.errors().to_vec();
            extra.retain(|e| !patch_errors.errors().contains(e));
            assert!(
                extra.iter().all(|e| e.message == "is required"),
                "{extra:?}"
            );
            assert_eq!(
                input_errors.errors().len(),
                patch_errors.errors().len() + extra.len(),
                "the input lists every error of the patch"
            );
        }
        (Err(BodyError::Malformed(_)), Err(BodyError::Malformed(_))) => {}
        (input, patch) => panic!("the parsers disagree: {input:?} / {patch:?}"),
    }

    check_profile_answer(data);

    if let Ok(patch) = &patch {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(data) else {
            panic!("an accepted body is a JSON object");
        };
        for (field, value) in Field::ALL.iter().zip(patch_fields(patch)) {
            match (object.get(field.name()), value) {
                (Some(Value::String(sent)), Some(kept)) => assert_eq!(sent, &kept),
                (None, None) => {}
                (sent, kept) => panic!("{}: sent {sent:?}, kept {kept:?}", field.name()),
            }
        }
        if let Some(date) = patch.birth_date {
            assert!(date.date() <= today);
        }
    }
});

fn check_profile_answer(data: &[u8]) {
    let Ok(profile) = serde_json::from_slice::<UserProfile>(data) else {
        return;
    };
    let keys = object_keys(data).expect("a profile is read from a JSON object");
    let mut expected = vec!["id"];
    expected.extend(Field::ALL.iter().map(|f| f.name()));
    assert_eq!(keys.len(), expected.len(), "{keys:?}");
    assert!(
        expected.iter().all(|k| keys.iter().any(|key| key == k)),
        "{keys:?}"
    );

    let text = serde_json::to_string(&profile).expect("a profile serialises");
    assert_eq!(
        serde_json::from_str::<UserProfile>(&text).ok().as_ref(),
        Some(&profile)
    );

    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(data) else {
        panic!("a profile is a JSON object");
    };
    object.remove("id");
    let body = serde_json::to_vec(&object).expect("an object serialises");
    if profile.birth_date.date() <= today() {
        let input =
            ProfileInput::from_json(&body, today()).expect("a profile's fields are valid input");
        assert_eq!(input.into_profile(profile.id), profile);
    }
}

fn check_error(err: &BodyError) {
    let status = ApiError::from(err.clone()).code.status();
    match err {
        BodyError::Malformed(message) => {
            assert!(!message.is_empty());
            assert_eq!(status, 400);
        }
        BodyError::Invalid(errors) => {
            check_field_errors(errors);
            assert_eq!(status, 422);
        }
    }
}

fn check_field_errors(errors: &FieldErrors) {
    let positions: Vec<usize> = errors
        .errors()
        .iter()
        .map(|e| {
            assert!(!e.message.is_empty());
            Field::ALL
                .iter()
                .position(|f| f.name() == e.field)
                .unwrap_or_else(|| panic!("an error names {:?}, not a field", e.field))
        })
        .collect();
    assert!(!positions.is_empty(), "an invalid body has an error");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(errors.first_field(), errors.errors()[0].field);
    assert!(errors.to_string().starts_with(errors.first_field()));
}

fn patch_of(input: &ProfileInput) -> ProfilePatch {
    ProfilePatch {
        full_name: Some(input.full_name.clone()),
        gender: Some(input.gender),
        birth_date: Some(input.birth_date),
        department: Some(input.department.clone()),
        email: Some(input.email.clone()),
        username: Some(input.username.clone()),
    }
}

/// A patch's fields as the text the API carries, in `Field::ALL` order.
fn patch_fields(patch: &ProfilePatch) -> [Option<String>; 6] {
    [
        patch.full_name.as_ref().map(ToString::to_string),
        patch.gender.map(|g| g.to_string()),
        patch.birth_date.map(|d| d.to_string()),
        patch.department.as_ref().map(ToString::to_string),
        patch.email.as_ref().map(ToString::to_string),
        patch.username.as_ref().map(ToString::to_string),
    ]
}

fn check_input_round_trip(input: &ProfileInput) {
    assert!(input.birth_date.date() <= aside_fuzz::today());
    let id = UserId::parse("7").expect("an id");
    let profile = input.clone().into_profile(id);
    let Value::Object(mut object) = serde_json::to_value(&profile).expect("a profile serialises")
    else {
        panic!("a profile is a JSON object");
    };
    assert_eq!(
        serde_json::from_value::<UserProfile>(Value::Object(object.clone())).ok(),
        Some(profile)
    );
    object.remove("id");
    let body = serde_json::to_vec(&object).expect("an object serialises");
    assert_eq!(
        ProfileInput::from_json(&body, aside_fuzz::today()).as_ref(),
        Ok(input)
    );
}
