//! Write bodies: what `POST`/`PUT` (every field) and `PATCH` (any subset) accept.
//!
//! Parsing happens in two steps, so that a client learns exactly what is wrong:
//!
//! 1. the *shape*: a JSON object whose keys are profile field names, each at most once. Anything else
//!    (not JSON, not an object, an unknown or repeated key) is a `400 malformed_body`;
//! 2. the *values*: each present field goes through its domain parser; a missing required field, a value
//!    that is not a string, or a value the parser refuses is a `422 validation_failed` whose message
//!    starts with the field's name (every failing field is listed, the first one leads).
//!
//! Both the edge and the origin can call these, so a bad body is refused with the same words wherever
//! it is checked. The birth date is checked against the caller's `today` (this crate has no clock).

use serde::Deserialize;
use serde_json::Value;
use time::Date;

use crate::domain::{
    BirthDate, Department, Email, FullName, Gender, UserId, UserProfile, Username, ValidationError,
};
use crate::error::{ApiError, ErrorCode};
use crate::fields::Field;

/// Every field of a profile, validated: the body of `POST /users` and `PUT /users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileInput {
    pub full_name: FullName,
    pub gender: Gender,
    pub birth_date: BirthDate,
    pub department: Department,
    pub email: Email,
    pub username: Username,
}

/// Some fields of a profile, validated: the body of `PATCH /users/{id}`. `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    pub full_name: Option<FullName>,
    pub gender: Option<Gender>,
    pub birth_date: Option<BirthDate>,
    pub department: Option<Department>,
    pub email: Option<Email>,
    pub username: Option<Username>,
}

/// Every field that failed validation, in [`Field::ALL`] order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldErrors(Vec<ValidationError>);

impl FieldErrors {
    /// The errors, first one first.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The first failing field's name.
    pub fn first_field(&self) -> &'static str {
        self.0[0].field
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why a write body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not a JSON object of profile fields: 400.
    Malformed(String),
    /// Well-formed, but some values are invalid or missing: 422.
    Invalid(FieldErrors),
}

impl ApiError {
    /// 422 for a write body: every failing field, the first one leading the message. (Here rather than
    /// in [`crate::error`], which knows nothing of write bodies.)
    pub fn validation_failed(errors: &FieldErrors) -> Self {
        Self::new(ErrorCode::ValidationFailed, errors.to_string())
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed(message) => ApiError::malformed_body(message),
            BodyError::Invalid(errors) => ApiError::validation_failed(&errors),
        }
    }
}

/// The shape of a write body: the six field names, each optional, nothing else. `null` is kept as
/// `Some(Value::Null)` so that it is refused as a value rather than read as "absent".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFields {
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    gender: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    birth_date: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    department: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    email: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    username: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl RawFields {
    fn parse(body: &[u8]) -> Result<Self, BodyError> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {
                return Err(BodyError::Malformed(
                    "the body is empty; send a JSON object".into(),
                ));
            }
            // serde would also take a struct from a JSON array; the API takes objects only.
            Some(b) if *b != b'{' && serde_json::from_slice::<Value>(body).is_ok() => {
                return Err(BodyError::Malformed(
                    "the body must be a JSON object of profile fields".into(),
                ));
            }
            Some(_) => {}
        }
        serde_json::from_slice(body).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => {
                    "the body is not a JSON object of profile fields"
                }
                _ => "the body is not valid JSON",
            };
            BodyError::Malformed(format!("{what}: {e}"))
        })
    }

    fn take(&mut self, field: Field) -> Option<Value> {
        match field {
            Field::FullName => self.full_name.take(),
            Field::Gender => self.gender.take(),
            Field::BirthDate => self.birth_date.take(),
            Field::Department => self.department.take(),
            Field::Email => self.email.take(),
            Field::Username => self.username.take(),
        }
    }
}

/// Parses one field's value. The date is also checked against `today`.
fn parse_value<T>(
    field: Field,
    value: Value,
    parse: impl FnOnce(&str) -> Result<T, ValidationError>,
) -> Result<T, ValidationError> {
    match value {
        Value::String(s) => parse(&s),
        Value::Null => Err(ValidationError::new(field.name(), "must not be null")),
        _ => Err(ValidationError::new(field.name(), "must be a JSON string")),
    }
}

/// Collects each field's result, remembering every error.
struct Collector {
    errors: Vec<ValidationError>,
    today: Date,
}

impl Collector {
    fn field<T>(
        &mut self,
        raw: &mut RawFields,
        field: Field,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, ValidationError>,
    ) -> Option<T> {
        let result = match raw.take(field) {
            Some(value) => parse_value(field, value, parse).map(Some),
            None if required => Err(ValidationError::new(field.name(), "is required")),
            None => Ok(None),
        };
        result.unwrap_or_else(|e| {
            self.errors.push(e);
            None
        })
    }

    fn birth_date(&mut self, raw: &mut RawFields, required: bool) -> Option<BirthDate> {
        let today = self.today;
        self.field(raw, Field::BirthDate, required, |s| {
            BirthDate::parse(s)?.ensure_not_after(today)
        })
    }

    fn patch(mut self, mut raw: RawFields) -> Result<ProfilePatch, BodyError> {
        let patch = ProfilePatch {
            full_name: self.field(&mut raw, Field::FullName, false, FullName::parse),
            gender: self.field(&mut raw, Field::Gender, false, Gender::parse),
            birth_date: self.birth_date(&mut raw, false),
            department: self.field(&mut raw, Field::Department, false, Department::parse),
            email: self.field(&mut raw, Field::Email, false, Email::parse),
            username: self.field(&mut raw, Field::Username, false, Username::parse),
        };
        self.finish(patch)
    }

    fn input(mut self, mut raw: RawFields) -> Result<ProfileInput, BodyError> {
        let full_name = self.field(&mut raw, Field::FullName, true, FullName::parse);
        let gender = self.field(&mut raw, Field::Gender, true, Gender::parse);
        let birth_date = self.birth_date(&mut raw, true);
        let department = self.field(&mut raw, Field::Department, true, Department::parse);
        let email = self.field(&mut raw, Field::Email, true, Email::parse);
        let username = self.field(&mut raw, Field::Username, true, Username::parse);
        match (full_name, gender, birth_date, department, email, username) {
            (
                Some(full_name),
                Some(gender),
                Some(birth_date),
                Some(department),
                Some(email),
                Some(username),
            ) if self.errors.is_empty() => Ok(ProfileInput {
                full_name,
                gender,
                birth_date,
                department,
                email,
                username,
            }),
            _ => Err(BodyError::Invalid(FieldErrors(self.errors))),
        }
    }

    fn finish<T>(self, value: T) -> Result<T, BodyError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(BodyError::Invalid(FieldErrors(self.errors)))
        }
    }
}

impl ProfileInput {
    /// Parses a `POST`/`PUT` body: all six fields, each valid; `birth_date` not after `today`.
    pub fn from_json(body: &[u8], today: Date) -> Result<Self, BodyError> {
        let raw = RawFields::parse(body)?;
        Collector {
            errors: Vec::new(),
            today,
        }
        .input(raw)
    }

    /// The profile this input describes, under `id`.
    pub fn into_profile(self, id: UserId) -> UserProfile {
        UserProfile {
            id,
            full_name: self.full_name,
            gender: self.gender,
            birth_date: self.birth_date,
            department: self.department,
            email: self.email,
            username: self.username,
        }
    }
}

impl ProfilePatch {
    /// Parses a `PATCH` body: any subset of the six fields (even none), each valid.
    pub fn from_json(body: &[u8], today: Date) -> Result<Self, BodyError> {
        let raw = RawFields::parse(body)?;
        Collector {
            errors: Vec::new(),
            today,
        }
        .patch(raw)
    }

    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `profile` with this patch applied.
    pub fn apply_to(&self, profile: &UserProfile) -> UserProfile {
        UserProfile {
            id: profile.id,
            full_name: self
                .full_name
                .clone()
                .unwrap_or_else(|| profile.full_name.clone()),
            gender: self.gender.unwrap_or(profile.gender),
            birth_date: self.birth_date.unwrap_or(profile.birth_date),
            department: self
                .department
                .clone()
                .unwrap_or_else(|| profile.department.clone()),
            email: self.email.clone().unwrap_or_else(|| profile.email.clone()),
            username: self
                .username
                .clone()
                .unwrap_or_else(|| profile.username.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::Month;

    use super::*;
    use crate::error::ErrorCode;

    fn today() -> Date {
        Date::from_calendar_date(2026, Month::March, 10).unwrap()
    }

    const FULL: &str = r#"{"full_name":"Érica Teixeira","gender":"F","birth_date":"1991-05-04",
        "department":"DevOps","email":"erica.teixeira@fake-devops-db.internal","username":"erica.teixeira"}"#;

    fn invalid(e: BodyError) -> FieldErrors {
        match e {
            BodyError::Invalid(errors) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_full_body_parses_into_a_profile() {
        let input = ProfileInput::from_json(FULL.as_bytes(), today()).unwrap();
        let profile = input.into_profile(UserId::parse("9").unwrap());
        assert_eq!(profile.username.as_str(), "erica.teixeira");
        assert_eq!(profile.birth_date.to_string(), "1991-05-04");
    }

    #[test]
    fn a_missing_field_is_required_by_name() {
        let body = FULL.replace(r#""gender":"F","#, "");
        let errors = invalid(ProfileInput::from_json(body.as_bytes(), today()).unwrap_err());
        assert_eq!(errors.first_field(), "gender");
        assert_eq!(errors.to_string(), "gender: is required");
    }

    #[test]
    fn every_invalid_field_is_listed_first_one_first() {
        let body = FULL
            .replace("erica.teixeira@fake-devops-db.internal", "not-an-email")
            .replace(r#""F""#, "1");
        let errors = invalid(ProfileInput::from_json(body.as_bytes(), today()).unwrap_err());
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["gender", "email"]);
        let api: ApiError = BodyError::Invalid(errors).into();
        assert_eq!(api.code, ErrorCode::ValidationFailed);
        assert!(api.message.starts_with("gender: must be a JSON string"));
    }

    #[test]
    fn a_birth_date_after_today_is_refused() {
        let body = FULL.replace("1991-05-04", "2026-03-11");
        let errors = invalid(ProfileInput::from_json(body.as_bytes(), today()).unwrap_err());
        assert_eq!(errors.first_field(), "birth_date");
        let ok = FULL.replace("1991-05-04", "2026-03-10");
        assert!(ProfileInput::from_json(ok.as_bytes(), today()).is_ok());
    }

    #[test]
    fn bad_shapes_are_malformed_not_invalid() {
        for body in [
            "",
            "   ",
            "not json",
            "[]",
            "42",
            "\"x\"",
            "null",
            r#"{"full_name":"A"} trailing"#,
            r#"{"admin":true}"#,
            r#"{"id":3}"#,
            r#"{"email":"a@b.c","email":"d@e.f"}"#,
            "{\"full_name\":\"\u{0}",
        ] {
            match ProfilePatch::from_json(body.as_bytes(), today()) {
                Err(BodyError::Malformed(m)) => assert!(!m.is_empty()),
                other => panic!("{body:?}: {other:?}"),
            }
            assert!(matches!(
                ProfileInput::from_json(body.as_bytes(), today()),
                Err(BodyError::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_patch_takes_any_subset_and_refuses_null() {
        let empty = ProfilePatch::from_json(b"{}", today()).unwrap();
        assert!(empty.is_empty());
        let patch = ProfilePatch::from_json(br#"{"department":"Security"}"#, today()).unwrap();
        assert_eq!(patch.department.as_ref().unwrap().as_str(), "Security");
        assert!(!patch.is_empty());
        let base = ProfileInput::from_json(FULL.as_bytes(), today())
            .unwrap()
            .into_profile(UserId::parse("1").unwrap());
        let patched = patch.apply_to(&base);
        assert_eq!(patched.department.as_str(), "Security");
        assert_eq!(patched.email, base.email);

        let errors = invalid(ProfilePatch::from_json(br#"{"email":null}"#, today()).unwrap_err());
        assert_eq!(errors.to_string(), "email: must not be null");
        let errors =
            invalid(ProfilePatch::from_json(br#"{"username":"Bad Name"}"#, today()).unwrap_err());
        assert_eq!(errors.first_field(), "username");
    }
}
