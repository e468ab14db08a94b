//! Profile fields as types that can only hold valid values.
//!
//! Each newtype has one constructor, `parse`, that enforces the limits of the SQL schema
//! (`devops_api.users`): after parsing, the rest of the code (edge and origin) can trust the value.
//! Deserialising a type with serde goes through the same `parse`, so a JSON body or a Redis hash can never
//! smuggle in a value the parser would refuse.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Month};

/// The most characters a `VARCHAR(100)` column holds (PostgreSQL counts characters, not bytes).
pub const MAX_TEXT_CHARS: usize = 100;

/// Why a value was refused, naming the field so a 422 can say which one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field's JSON name (`email`, `birth_date`, ...), or `id` for the path parameter.
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A user id: the `SERIAL` primary key, so 1 ..= 2_147_483_647.
///
/// Only the canonical decimal form is accepted (ASCII digits, no sign, no leading zero, no exponent), so
/// every id has exactly one spelling and one cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct UserId(i32);

impl UserId {
    /// The smallest id a `SERIAL` hands out.
    pub const MIN: i32 = 1;
    /// The largest id an `INTEGER` column holds.
    pub const MAX: i32 = i32::MAX;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let invalid = |why: &str| ValidationError::new("id", why.to_string());
        if input.is_empty() {
            return Err(invalid("must not be empty"));
        }
        // 2147483647 has 10 digits; anything longer is refused before any arithmetic.
        if input.len() > 10 || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "must be a positive integer of at most 10 ASCII digits",
            ));
        }
        if input.starts_with('0') {
            return Err(invalid("must be a positive integer without leading zeros"));
        }
        let value: i64 = input
            .parse()
            .map_err(|_| invalid("must be a positive integer"))?;
        Self::try_from(value)
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for UserId {
    type Error = ValidationError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&value) {
            Ok(Self(value as i32))
        } else {
            Err(ValidationError::new(
                "id",
                format!("must be between {} and {}", Self::MIN, Self::MAX),
            ))
        }
    }
}

impl From<UserId> for i64 {
    fn from(id: UserId) -> Self {
        i64::from(id.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Characters no text field may hold anywhere: control characters.
pub fn refused_in_text(c: char) -> bool {
    c.is_control()
}

/// Characters a text field may not start or end with: whitespace (what `str::trim` removes).
pub fn refused_at_text_ends(c: char) -> bool {
    c.is_whitespace()
}

/// Text checks shared by every `VARCHAR(100)` field: not blank, no surrounding whitespace, no control
/// characters, at most [`MAX_TEXT_CHARS`] characters.
fn check_text(field: &'static str, input: &str) -> Result<(), ValidationError> {
    let trimmed = input.trim_matches(refused_at_text_ends);
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if input.len() > MAX_TEXT_CHARS * 4 || input.chars().count() > MAX_TEXT_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    if trimmed != input {
        return Err(ValidationError::new(
            field,
            "must not start or end with whitespace",
        ));
    }
    if input.chars().any(refused_in_text) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A person's full name: any letters (accents welcome), at most 100 characters.
    FullName
);

impl FullName {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_text("full_name", input)?;
        Ok(Self(input.to_string()))
    }
}

string_newtype!(
    /// A department name, `VARCHAR(100)`. Seeded rows use [`Department::SEEDED`]; rows written by other
    /// tools may hold any name within the column's limits, and the cache must be able to carry them.
    Department
);

impl Department {
    /// The departments `aside-origin seed` draws from.
    pub const SEEDED: [&'static str; 6] = [
        "Engineering",
        "Human Resources",
        "DevOps",
        "Security",
        "Sales",
        "Marketing",
    ];

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_text("department", input)?;
        Ok(Self(input.to_string()))
    }
}

string_newtype!(
    /// A login name: lower-case ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit,
    /// at most 100 characters (`erica.teixeira`).
    Username
);

impl Username {
    /// May a username start with this byte?
    pub fn may_start_with(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit()
    }

    /// May a username hold this byte (after the first)?
    pub fn may_contain(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
    }

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_text("username", input)?;
        if !Self::may_start_with(input.as_bytes()[0]) {
            return Err(ValidationError::new(
                "username",
                "must start with a lower-case letter or a digit",
            ));
        }
        if !input.bytes().all(Self::may_contain) {
            return Err(ValidationError::new(
                "username",
                "may only contain a-z, 0-9, '.', '_' and '-'",
            ));
        }
        Ok(Self(input.to_string()))
    }
}

string_newtype!(
    /// An e-mail address in the common `local@domain.tld` form, at most 100 characters, ASCII only.
    ///
    /// Deliberately stricter than RFC 5322 (no quoted local parts, no IP literals, no comments): these are
    /// the addresses a profile form accepts, and a strict rule is one the edge and origin apply alike.
    Email
);

impl Email {
    /// The most bytes before the `@`.
    pub const MAX_LOCAL_BYTES: usize = 64;
    /// The most bytes of one domain label.
    pub const MAX_LABEL_BYTES: usize = 63;
    /// What the part before the `@` may hold besides ASCII letters and digits (`.` not first, not last,
    /// never twice in a row).
    pub const LOCAL_SPECIALS: &'static [u8] = b".!#$%&'*+/=?^_`{|}~-";

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_text("email", input)?;
        let invalid = |why: &str| ValidationError::new("email", why.to_string());
        let (local, domain) = input
            .split_once('@')
            .ok_or_else(|| invalid("must contain '@'"))?;
        if domain.contains('@') {
            return Err(invalid("must contain exactly one '@'"));
        }
        if local.is_empty() || local.len() > Self::MAX_LOCAL_BYTES {
            return Err(invalid("the part before '@' must be 1 to 64 characters"));
        }
        if !local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || Self::LOCAL_SPECIALS.contains(&b))
        {
            return Err(invalid(
                "the part before '@' has a character that is not allowed",
            ));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid("the part before '@' has a misplaced '.'"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid(
                "the domain must have at least two labels (example.org)",
            ));
        }
        for label in labels {
            let ok_len = (1..=Self::MAX_LABEL_BYTES).contains(&label.len());
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok_len || !ok_chars || label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("the domain is not a valid host name"));
            }
        }
        Ok(Self(input.to_string()))
    }
}

/// `CHAR(1)`: `M` or `F`, as in the original schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Gender {
    #[doc = "`M`"]
    Male,
    #[doc = "`F`"]
    Female,
}

impl Gender {
    /// Both values, in the order the schema lists them.
    pub const ALL: [Gender; 2] = [Gender::Male, Gender::Female];

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        match input {
            "M" => Ok(Self::Male),
            "F" => Ok(Self::Female),
            _ => Err(ValidationError::new("gender", "must be \"M\" or \"F\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Male => "M",
            Self::Female => "F",
        }
    }
}

impl TryFrom<String> for Gender {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Gender> for String {
    fn from(value: Gender) -> Self {
        value.as_str().to_string()
    }
}

impl fmt::Display for Gender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A birth date, `YYYY-MM-DD`, from 1900-01-01 on.
///
/// Parsing has no clock (this crate does no I/O); whoever accepts a new value checks it against today
/// with [`BirthDate::ensure_not_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BirthDate(Date);

impl BirthDate {
    pub const EARLIEST: Date = match Date::from_calendar_date(1900, Month::January, 1) {
        Ok(date) => date,
        Err(_) => panic!("1900-01-01 is a date"),
    };

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let invalid = |why: &str| ValidationError::new("birth_date", why.to_string());
        let b = input.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(invalid("must be a date in the form YYYY-MM-DD"));
        }
        let year: i32 = input[0..4].parse().expect("four ASCII digits");
        let month: u8 = input[5..7].parse().expect("two ASCII digits");
        let day: u8 = input[8..10].parse().expect("two ASCII digits");
        let month = Month::try_from(month).map_err(|_| invalid("has no such month"))?;
        let date = Date::from_calendar_date(year, month, day)
            .map_err(|_| invalid("is not a day of the calendar"))?;
        Self::from_date(date)
    }

    pub fn from_date(date: Date) -> Result<Self, ValidationError> {
        if date < Self::EARLIEST {
            return Err(ValidationError::new(
                "birth_date",
                format!("must not be before {}", spell_date(Self::EARLIEST)),
            ));
        }
        Ok(Self(date))
    }

    /// Refuses a birth date after `today` (the caller's clock).
    pub fn ensure_not_after(self, today: Date) -> Result<Self, ValidationError> {
        if self.0 > today {
            Err(ValidationError::new(
                "birth_date",
                "must not be in the future",
            ))
        } else {
            Ok(self)
        }
    }

    pub fn date(self) -> Date {
        self.0
    }
}

impl TryFrom<String> for BirthDate {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<BirthDate> for String {
    fn from(value: BirthDate) -> Self {
        value.to_string()
    }
}

/// `YYYY-MM-DD`, the one spelling of a date the API uses.
pub fn spell_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl fmt::Display for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spell_date(self.0))
    }
}

/// A user profile as the API returns it: the id and the six fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserProfile {
    pub id: UserId,
    pub full_name: FullName,
    pub gender: Gender,
    pub birth_date: BirthDate,
    pub department: Department,
    pub email: Email,
    pub username: Username,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &[&str] = &[
        "",
        " ",
        "1e3",
        "-1",
        "0",
        "+1",
        "9999999999999999999",
        "2147483648",
        "1;DROP TABLE users",
        "1 ",
        " 1",
        "１２３", // full-width digits
        "١٢٣",    // Arabic-Indic digits
        "0x10",
        "1.0",
        "%31",
        "007",
        "1\0",
        "\u{FFFD}",
    ];

    #[test]
    fn user_id_accepts_the_whole_serial_range() {
        assert_eq!(UserId::parse("1").unwrap().get(), 1);
        assert_eq!(UserId::parse("42").unwrap().get(), 42);
        assert_eq!(UserId::parse("2147483647").unwrap().get(), i32::MAX);
    }

    #[test]
    fn user_id_refuses_nasty_input_with_a_message() {
        for input in NASTY {
            let err = UserId::parse(input).expect_err(input);
            assert_eq!(err.field, "id", "{input:?}");
            assert!(!err.message.is_empty());
        }
        let big = "9".repeat(10 * 1024);
        assert!(UserId::parse(&big).is_err());
    }

    #[test]
    fn user_id_json_is_a_number_and_checked() {
        let id: UserId = serde_json::from_str("17").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "17");
        assert!(serde_json::from_str::<UserId>("0").is_err());
        assert!(serde_json::from_str::<UserId>("-5").is_err());
        assert!(serde_json::from_str::<UserId>("\"17\"").is_err());
        assert!(serde_json::from_str::<UserId>("3000000000").is_err());
    }

    #[test]
    fn full_name_accepts_accents_and_counts_characters_not_bytes() {
        assert!(FullName::parse("Érica Conceição Teixeira").is_ok());
        let hundred_accented = "é".repeat(100); // 200 bytes, 100 characters
        assert!(FullName::parse(&hundred_accented).is_ok());
        assert!(FullName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn text_fields_refuse_empty_blank_padded_control_and_huge() {
        let huge = "a".repeat(10 * 1024);
        for input in [
            "",
            "   ",
            " Ana",
            "Ana ",
            "Ana\nSilva",
            "Ana\0",
            "Ana\u{7f}",
            &huge,
        ] {
            assert!(FullName::parse(input).is_err(), "{input:?}");
            assert!(Department::parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn department_keeps_the_seeded_names() {
        for name in Department::SEEDED {
            assert_eq!(Department::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn username_is_lower_case_ascii() {
        assert!(Username::parse("erica.teixeira").is_ok());
        assert!(Username::parse("joao_silva-2").is_ok());
        for bad in [
            "Erica", "érica", ".erica", "-x", "a b", "a;DROP", "", "1e3 ", "a/b",
        ] {
            let err = Username::parse(bad).expect_err(bad);
            assert_eq!(err.field, "username");
        }
        assert!(Username::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn email_accepts_common_addresses() {
        for ok in [
            "erica.teixeira@fake-devops-db.internal",
            "a+tag@example.org",
            "x@a.b",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn email_refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.org",
            "a@",
            "a@b",
            "a@@b.c",
            "a@b@c.d",
            ".a@b.c",
            "a..b@c.d",
            "a@-b.c",
            "a@b..c",
            "é@b.c",
            "a b@c.d",
            "a@b.c;DROP",
            "a@b.c\n",
        ] {
            let err = Email::parse(bad).expect_err(bad);
            assert_eq!(err.field, "email");
        }
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let too_long = format!("a@{}.org", "b".repeat(100));
        assert!(Email::parse(&too_long).is_err());
    }

    #[test]
    fn gender_is_m_or_f_only() {
        assert_eq!(Gender::parse("M").unwrap(), Gender::Male);
        assert_eq!(Gender::parse("F").unwrap(), Gender::Female);
        for bad in ["", "m", "f", "X", "MF", "M ", "Ｍ"] {
            assert!(Gender::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn birth_date_is_strict_iso_and_a_real_day() {
        assert_eq!(
            BirthDate::parse("1990-02-28").unwrap().to_string(),
            "1990-02-28"
        );
        assert!(BirthDate::parse("2000-02-29").is_ok());
        for bad in [
            "",
            "1990-2-28",
            "1990/02/28",
            "1990-02-30",
            "2001-02-29",
            "1990-13-01",
            "1990-00-10",
            "1899-12-31",
            "19900228",
            "1990-02-28T00:00:00",
            "１９９０-02-28",
            "-990-02-28",
            "1e3",
        ] {
            let err = BirthDate::parse(bad).expect_err(bad);
            assert_eq!(err.field, "birth_date");
        }
    }

    #[test]
    fn birth_date_in_the_future_is_refused_against_the_callers_today() {
        let today = Date::from_calendar_date(2026, Month::November, 23).unwrap();
        let date = BirthDate::parse("2026-11-24").unwrap();
        assert!(date.ensure_not_after(today).is_err());
        assert!(
            BirthDate::parse("2026-11-23")
                .unwrap()
                .ensure_not_after(today)
                .is_ok()
        );
    }

    #[test]
    fn profile_json_round_trips_and_refuses_unknown_or_invalid_fields() {
        let json = r#"{"id":7,"full_name":"Érica Teixeira","gender":"F","birth_date":"1991-05-04",
            "department":"DevOps","email":"erica.teixeira@fake-devops-db.internal","username":"erica.teixeira"}"#;
        let profile: UserProfile = serde_json::from_str(json).unwrap();
        assert_eq!(profile.id.get(), 7);
        let back: UserProfile =
            serde_json::from_str(&serde_json::to_string(&profile).unwrap()).unwrap();
        assert_eq!(back, profile);

        let unknown = json.replace("\"id\":7", "\"id\":7,\"admin\":true");
        assert!(serde_json::from_str::<UserProfile>(&unknown).is_err());
        let bad_gender = json.replace("\"F\"", "\"Q\"");
        assert!(serde_json::from_str::<UserProfile>(&bad_gender).is_err());
    }
}
