//! OpenAPI schemas of the wire types (feature `openapi`: the origin's `/openapi.json`; the edge, a wasm
//! component, never enables it).
//!
//! Every limit a schema states is computed from what the parsers themselves use: the length limit
//! ([`MAX_TEXT_CHARS`]), the id range ([`UserId::MIN`], [`UserId::MAX`]), the characters the text checks
//! refuse ([`refused_in_text`], [`refused_at_text_ends`]), the username's and the e-mail address's
//! character rules, the earliest birth date ([`BirthDate::EARLIEST`]), the field names ([`Field::ALL`])
//! and the `?fields` list's length limit ([`FieldSelection::max_names`]). Patterns are ECMA-262 (what
//! JSON Schema uses) and read the same in Python's `re` and the Rust `regex` syntax: character classes
//! of `\uXXXX` escapes, no `\s` or `\d` (whose meaning differs between engines).
//!
//! The one limit no fixed document can state is "a birth date not after today": [`BirthDate::schema`]
//! bounds the dates from below only and says so; [`BirthDate::schema_until`] bounds them on both sides,
//! for a document served on a given day.

pub mod edge;

use std::borrow::Cow;

use time::{Date, Month};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{
    BirthDate, Department, Email, FullName, Gender, MAX_TEXT_CHARS, UserId, Username,
    refused_at_text_ends, refused_in_text, spell_date,
};
use crate::fields::{Field, FieldSelection};
use crate::input::{ProfileInput, ProfilePatch};

/// `RefOr` of a built object schema.
fn object(builder: ObjectBuilder) -> RefOr<Schema> {
    RefOr::T(Schema::Object(builder.build()))
}

/// A string schema with the text fields' length limits.
fn text() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_TEXT_CHARS))
}

/// One character of a pattern's character class: `\uXXXX`, or the ASCII character itself (escaped when
/// it means something inside a class).
fn class_char(c: char, escape_everything: bool) -> String {
    match c {
        '\\' | ']' | '[' | '^' | '-' => format!("\\{c}"),
        c if c.is_ascii_graphic() && !escape_everything => c.to_string(),
        c => {
            let code = u32::from(c);
            assert!(
                code <= 0xFFFF,
                "a pattern class names {c:?}, beyond \\uFFFF: it needs the `u` flag"
            );
            format!("\\u{code:04x}")
        }
    }
}

/// The body of a character class (without brackets) naming every character in `chars` for which
/// `wanted` holds, as ranges.
fn class_body(chars: impl Iterator<Item = char>, wanted: impl Fn(char) -> bool) -> String {
    let mut ranges: Vec<(char, char)> = Vec::new();
    for c in chars.filter(|c| wanted(*c)) {
        match ranges.last_mut() {
            Some((_, end)) if u32::from(*end) + 1 == u32::from(c) => *end = c,
            _ => ranges.push((c, c)),
        }
    }
    let escape_everything = ranges.iter().any(|(_, end)| !end.is_ascii());
    ranges
        .into_iter()
        .map(|(start, end)| {
            let (start_text, end_text) = (
                class_char(start, escape_everything),
                class_char(end, escape_everything),
            );
            match u32::from(end) - u32::from(start) {
                0 => start_text,
                1 => format!("{start_text}{end_text}"),
                _ => format!("{start_text}-{end_text}"),
            }
        })
        .collect()
}

fn every_char() -> impl Iterator<Item = char> + Clone {
    (0..=u32::from(char::MAX)).filter_map(char::from_u32)
}

fn ascii() -> impl Iterator<Item = char> + Clone {
    (0..=0x7f_u8).map(char::from)
}

/// The pattern of a text field: no character [`refused_in_text`], none [`refused_at_text_ends`] first or
/// last (so never blank).
pub fn text_pattern() -> String {
    let inner = class_body(every_char(), refused_in_text);
    let ends = class_body(every_char(), |c| {
        refused_in_text(c) || refused_at_text_ends(c)
    });
    format!("^[^{ends}](?:[^{inner}]*[^{ends}])?$")
}

/// The pattern of a username, from [`Username::may_start_with`] and [`Username::may_contain`].
pub fn username_pattern() -> String {
    let byte_rule = |rule: fn(u8) -> bool| move |c: char| u8::try_from(c).is_ok_and(rule);
    let first = class_body(ascii(), byte_rule(Username::may_start_with));
    let rest = class_body(ascii(), byte_rule(Username::may_contain));
    format!("^[{first}][{rest}]*$")
}

/// The pattern of an e-mail address, from [`Email`]'s rules: a local part of at most
/// [`Email::MAX_LOCAL_BYTES`] (letters, digits, [`Email::LOCAL_SPECIALS`]; a `.` never first, last or
/// doubled), `@`, and two or more host-name labels of at most [`Email::MAX_LABEL_BYTES`] (letters,
/// digits, inner `-`).
pub fn email_pattern() -> String {
    let atom = class_body(ascii(), |c| {
        c != '.' && (c.is_ascii_alphanumeric() || Email::LOCAL_SPECIALS.contains(&(c as u8)))
    });
    let alnum = class_body(ascii(), |c| c.is_ascii_alphanumeric());
    let inner = class_body(ascii(), |c| c.is_ascii_alphanumeric() || c == '-');
    let label = format!(
        "[{alnum}](?:[{inner}]{{0,{}}}[{alnum}])?",
        Email::MAX_LABEL_BYTES - 2
    );
    format!(
        "^(?![^@]{{{}}})[{atom}]+(?:\\.[{atom}]+)*@{label}(?:\\.{label})+$",
        Email::MAX_LOCAL_BYTES + 1
    )
}

/// A pattern matching the fixed-width spellings from `low` to `high`, both included: strings of digits
/// and separators, the separators at the same places in both. Digit by digit: a prefix shared by both,
/// then one alternative per way of leaving the range's ends.
fn digits_between(low: &[u8], high: &[u8]) -> String {
    let (Some((&l, low_rest)), Some((&h, high_rest))) = (low.split_first(), high.split_first())
    else {
        return String::new();
    };
    let any = |rest: &[u8]| -> String {
        rest.iter()
            .map(|&c| {
                if c.is_ascii_digit() {
                    "[0-9]".to_string()
                } else {
                    char::from(c).to_string()
                }
            })
            .collect()
    };
    let fill = |rest: &[u8], digit: u8| -> Vec<u8> {
        rest.iter()
            .map(|&c| if c.is_ascii_digit() { digit } else { c })
            .collect()
    };
    let digit_class = |from: u8, to: u8| -> String {
        if from == to {
            char::from(from).to_string()
        } else {
            format!("[{}-{}]", char::from(from), char::from(to))
        }
    };
    if !l.is_ascii_digit() || l == h {
        return format!("{}{}", char::from(l), digits_between(low_rest, high_rest));
    }
    // Whole subranges (`l0..0` up, `h9..9` down) join the middle digits' class.
    let low_whole = low_rest == fill(low_rest, b'0');
    let high_whole = high_rest == fill(high_rest, b'9');
    let mut alternatives = Vec::new();
    let middle_from = if low_whole {
        l
    } else {
        alternatives.push(format!(
            "{}{}",
            char::from(l),
            digits_between(low_rest, &fill(low_rest, b'9'))
        ));
        l + 1
    };
    let middle_to = if high_whole { h } else { h - 1 };
    if middle_from <= middle_to {
        alternatives.push(format!(
            "{}{}",
            digit_class(middle_from, middle_to),
            any(low_rest)
        ));
    }
    if !high_whole {
        alternatives.push(format!(
            "{}{}",
            char::from(h),
            digits_between(&fill(high_rest, b'0'), high_rest)
        ));
    }
    if alternatives.len() == 1 {
        return alternatives.remove(0);
    }
    format!("(?:{})", alternatives.join("|"))
}

/// The pattern of the `YYYY-MM-DD` spellings from `from` on, up to `until` when given (both included).
/// These spellings sort like the dates, so the range is one of fixed-width digit strings; which days
/// the calendar has is `format: date`'s part.
pub fn date_pattern(from: Date, until: Option<Date>) -> String {
    // No calendar day is spelled with a day or month `00` or a day past its month's last, so the
    // range may start at `..-00` and end at `..-99` where that makes it shorter.
    let mut low = spell_date(from);
    if from.day() == 1 {
        low.replace_range(8..10, "00");
        if from.month() == Month::January {
            low.replace_range(5..7, "00");
        }
    }
    let high = match until {
        None => low.replace(|c: char| c.is_ascii_digit(), "9"),
        Some(until) => {
            let mut high = spell_date(until);
            if until.day() == until.month().length(until.year()) {
                high.replace_range(8..10, "99");
                if until.month() == Month::December {
                    high.replace_range(5..7, "99");
                }
            }
            high
        }
    };
    format!("^{}$", digits_between(low.as_bytes(), high.as_bytes()))
}

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        object(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(UserId::MIN))
                .maximum(Some(UserId::MAX))
                .description(Some(
                    "A user id. In a path: its canonical decimal spelling (ASCII digits, no sign, no \
                     leading zero).",
                ))
                .examples([7]),
        )
    }
}

impl ToSchema for UserId {}

/// The schema of a text newtype: the text fields' length limits, `pattern`, a description and an
/// example.
macro_rules! text_schema {
    ($name:ident, $pattern:expr, $description:literal, $example:literal) => {
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                object(
                    text()
                        .pattern(Some($pattern))
                        .description(Some($description))
                        .examples([$example]),
                )
            }
        }

        impl ToSchema for $name {}
    };
}

text_schema!(
    FullName,
    text_pattern(),
    "A full name: not blank, no surrounding whitespace, no control characters.",
    "Érica Teixeira"
);
text_schema!(
    Department,
    text_pattern(),
    "A department: not blank, no surrounding whitespace, no control characters.",
    "Engineering"
);
text_schema!(
    Username,
    username_pattern(),
    "A login name: a-z, 0-9, `.`, `_` and `-`, starting with a letter or a digit.",
    "erica.teixeira"
);
text_schema!(
    Email,
    email_pattern(),
    "An e-mail address, `local@domain.tld`, ASCII only (no quoted local parts, no IP literals).",
    "erica.teixeira@example.pt"
);

impl PartialSchema for Gender {
    fn schema() -> RefOr<Schema> {
        object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(Gender::ALL.map(Gender::as_str)))
                .description(Some("`M` or `F`.")),
        )
    }
}

impl ToSchema for Gender {}

impl BirthDate {
    /// `YYYY-MM-DD` from [`BirthDate::EARLIEST`] to `today` (the date the document is served).
    pub fn schema_until(today: Date) -> RefOr<Schema> {
        Self::date_schema(
            Some(today),
            format!(
                "A calendar date from {} to {} (the day this document was served, UTC): a write \
                 refuses a birth date in the future.",
                spell_date(BirthDate::EARLIEST),
                spell_date(today)
            ),
        )
    }

    fn date_schema(until: Option<Date>, description: String) -> RefOr<Schema> {
        object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
                .pattern(Some(date_pattern(BirthDate::EARLIEST, until)))
                .description(Some(description))
                .examples(["1990-01-31"]),
        )
    }
}

impl PartialSchema for BirthDate {
    /// Bounded from below only: a document that is not served on a given day cannot say which day is
    /// today (see [`BirthDate::schema_until`]).
    fn schema() -> RefOr<Schema> {
        BirthDate::date_schema(
            None,
            format!(
                "A calendar date from {} on; a write also refuses a date after today (UTC).",
                spell_date(BirthDate::EARLIEST)
            ),
        )
    }
}

impl ToSchema for BirthDate {}

/// A `$ref` to a component.
fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// The schema name of each field's type.
fn field_type(field: Field) -> Cow<'static, str> {
    match field {
        Field::FullName => FullName::name(),
        Field::Gender => Gender::name(),
        Field::BirthDate => BirthDate::name(),
        Field::Department => Department::name(),
        Field::Email => Email::name(),
        Field::Username => Username::name(),
    }
}

/// Registers the schema of every field's type (and the id's).
fn field_schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.extend([
        (UserId::name().into(), UserId::schema()),
        (FullName::name().into(), FullName::schema()),
        (Gender::name().into(), Gender::schema()),
        (BirthDate::name().into(), BirthDate::schema()),
        (Department::name().into(), Department::schema()),
        (Email::name().into(), Email::schema()),
        (Username::name().into(), Username::schema()),
    ]);
}

/// An object of the six fields (after `id` when `with_id`), nothing else; `required`: which are.
fn profile_object(with_id: bool, required: impl Fn(Field) -> bool) -> ObjectBuilder {
    let mut builder = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if with_id {
        builder = builder
            .property("id", reference(&UserId::name()))
            .required("id");
    }
    for field in Field::ALL {
        builder = builder.property(field.name(), reference(&field_type(field)));
        if required(field) {
            builder = builder.required(field.name());
        }
    }
    builder
}

/// The schema of a profile object: `id` first when `$with_id`, the six fields, which of them are
/// required, a description; the fields' own schemas go with it.
macro_rules! profile_schema {
    ($name:ident, $with_id:expr, $required:expr, $description:literal) => {
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                object(profile_object($with_id, $required).description(Some($description)))
            }
        }

        impl ToSchema for $name {
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                field_schemas(schemas);
            }
        }
    };
}

profile_schema!(
    ProfileInput,
    false,
    |_| true,
    "The body of `POST /users` and `PUT /users/{id}`: every field, nothing else."
);
profile_schema!(
    ProfilePatch,
    false,
    |_| false,
    "The body of `PATCH /users/{id}`: any of the fields (even none), nothing else; `null` is refused."
);

/// The answer to `GET /users/{id}?fields=...`: `id` and the chosen fields ([`FieldSelection::project`]).
pub struct ProfileProjection;

profile_schema!(
    ProfileProjection,
    true,
    |_| false,
    "A profile projected by `?fields=`: `id` and the chosen fields, no other."
);

impl PartialSchema for FieldSelection {
    fn schema() -> RefOr<Schema> {
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::names()));
        RefOr::T(Schema::Array(
            ArrayBuilder::new()
                .items(name)
                .min_items(Some(1))
                .max_items(Some(Self::max_names()))
                .description(Some(
                    "Field names, comma-separated; repeats are ignored. `id` is always answered.",
                ))
                .build(),
        ))
    }
}

impl ToSchema for FieldSelection {}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use time::macros::date;

    use super::*;

    fn json_of<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    #[test]
    fn limits_are_the_parsers_constants() {
        let id = json_of::<UserId>();
        assert_eq!(id["minimum"], json!(UserId::MIN));
        assert_eq!(id["maximum"], json!(UserId::MAX));
        assert!(UserId::try_from(i64::from(UserId::MAX)).is_ok());
        assert!(UserId::try_from(i64::from(UserId::MAX) + 1).is_err());
        assert!(UserId::try_from(i64::from(UserId::MIN) - 1).is_err());
        for text in [
            json_of::<FullName>(),
            json_of::<Department>(),
            json_of::<Username>(),
            json_of::<Email>(),
        ] {
            assert_eq!(text["maxLength"], json!(MAX_TEXT_CHARS), "{text}");
            assert_eq!(text["minLength"], json!(1), "{text}");
        }
        let long = "a".repeat(MAX_TEXT_CHARS);
        assert!(FullName::parse(&long).is_ok());
        assert!(FullName::parse(&format!("{long}a")).is_err());
        assert_eq!(json_of::<Gender>()["enum"], json!(["M", "F"]));
        for g in Gender::ALL {
            assert_eq!(Gender::parse(g.as_str()), Ok(g));
        }
        let fields = json_of::<FieldSelection>();
        let names: Vec<&str> = FieldSelection::names().collect();
        assert_eq!(fields["items"]["enum"], json!(names));
        assert_eq!(fields["minItems"], json!(1));
        // The longest list of the longest name fits; one more does not.
        let longest = names.iter().max_by_key(|n| n.len()).unwrap();
        let fits = vec![*longest; FieldSelection::max_names()].join(",");
        assert!(FieldSelection::parse(&fits).is_ok());
        assert!(FieldSelection::parse(&format!("{fits},{longest}")).is_err());
        assert_eq!(fields["maxItems"], json!(FieldSelection::max_names()));
    }

    /// The characters a class body (as [`class_body`] writes it) names.
    fn class_members(body: &str) -> impl Fn(char) -> bool {
        // Tokens: a character, or `None` for a bare `-` (a range between its neighbours).
        let mut tokens: Vec<Option<char>> = Vec::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '\\' => match chars.next().unwrap() {
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        char::from_u32(u32::from_str_radix(&hex, 16).unwrap())
                    }
                    escaped => Some(escaped),
                },
                '-' => None,
                c => Some(c),
            });
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let start = tokens[i].expect("a class does not start a range with a bare '-'");
            if tokens.get(i + 1) == Some(&None) {
                ranges.push((start, tokens[i + 2].unwrap()));
                i += 3;
            } else {
                ranges.push((start, start));
                i += 1;
            }
        }
        move |c| ranges.iter().any(|(a, b)| (*a..=*b).contains(&c))
    }

    fn assert_class_is(domain: impl Iterator<Item = char> + Clone, rule: impl Fn(char) -> bool) {
        let body = class_body(domain.clone(), &rule);
        let named = class_members(&body);
        for c in domain {
            assert_eq!(named(c), rule(c), "{c:?} in [{body}]");
        }
    }

    #[test]
    fn classes_name_exactly_the_characters_of_the_parsers_rules() {
        assert_class_is(every_char(), refused_in_text);
        assert_class_is(every_char(), |c| {
            refused_in_text(c) || refused_at_text_ends(c)
        });
        let byte_rule = |rule: fn(u8) -> bool| move |c: char| u8::try_from(c).is_ok_and(rule);
        assert_class_is(ascii(), byte_rule(Username::may_start_with));
        assert_class_is(ascii(), byte_rule(Username::may_contain));
        assert_class_is(ascii(), |c| Email::LOCAL_SPECIALS.contains(&(c as u8)));
        // What the patterns are made of.
        assert_eq!(username_pattern(), "^[0-9a-z][\\-.0-9_a-z]*$");
        let text = text_pattern();
        assert!(
            text.starts_with("^[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680"),
            "{text}"
        );
        let email = email_pattern();
        assert!(
            email.starts_with(&format!("^(?![^@]{{{}}})", Email::MAX_LOCAL_BYTES + 1)),
            "{email}"
        );
        assert!(
            email.contains(&format!("{{0,{}}}", Email::MAX_LABEL_BYTES - 2)),
            "{email}"
        );
    }

    #[test]
    fn date_patterns_bound_the_spellings() {
        assert_eq!(
            date_pattern(BirthDate::EARLIEST, None),
            "^(?:19[0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[2-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9])$"
        );
        // Checked with Python's `re` against every day from 1850 to 2099: it matches exactly the days
        // from 1900-01-01 to 2026-12-01.
        assert_eq!(
            date_pattern(BirthDate::EARLIEST, Some(date!(2026 - 12 - 01))),
            "^(?:19[0-9][0-9]-[0-9][0-9]-[0-9][0-9]|20(?:[0-1][0-9]-[0-9][0-9]-[0-9][0-9]|2(?:[0-5]-\
             [0-9][0-9]-[0-9][0-9]|6-(?:0[0-9]-[0-9][0-9]|1(?:[0-1]-[0-9][0-9]|2-0[0-1])))))$"
        );
        // The last day of a year ends the range at `-99-99`.
        assert_eq!(
            date_pattern(date!(2000 - 01 - 01), Some(date!(2001 - 12 - 31))),
            "^200[0-1]-[0-9][0-9]-[0-9][0-9]$"
        );
        let schema = serde_json::to_value(BirthDate::schema_until(date!(2026 - 12 - 01))).unwrap();
        assert_eq!(schema["format"], json!("date"));
        assert!(
            schema["description"]
                .as_str()
                .unwrap()
                .contains("1900-01-01 to 2026-12-01")
        );
    }

    #[test]
    fn profile_objects_list_the_shared_fields() {
        let names: Vec<&str> = Field::ALL.map(Field::name).to_vec();
        let input = json_of::<ProfileInput>();
        assert_eq!(input["required"], json!(names));
        assert_eq!(input["additionalProperties"], json!(false));
        let patch = json_of::<ProfilePatch>();
        assert!(patch.get("required").is_none(), "{patch}");
        let projection = json_of::<ProfileProjection>();
        assert_eq!(projection["required"], json!(["id"]));
        let keys: Vec<&String> = projection["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys.len(), names.len() + 1);
        let profile = json_of::<crate::UserProfile>();
        assert_eq!(
            profile["properties"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            keys
        );
        assert_eq!(profile["additionalProperties"], json!(false));
    }
}
