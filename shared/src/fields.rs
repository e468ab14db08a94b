//! The `?fields=email,department` projection of a profile.

use serde_json::{Map, Value};

use crate::domain::{UserProfile, ValidationError};

/// One of the six profile fields; also a Redis hash field of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    FullName,
    Gender,
    BirthDate,
    Department,
    Email,
    Username,
}

impl Field {
    /// All fields, in the order the API and the Redis hash list them.
    pub const ALL: [Field; 6] = [
        Field::FullName,
        Field::Gender,
        Field::BirthDate,
        Field::Department,
        Field::Email,
        Field::Username,
    ];

    /// The JSON key, which is also the Redis hash field name.
    pub fn name(self) -> &'static str {
        match self {
            Field::FullName => "full_name",
            Field::Gender => "gender",
            Field::BirthDate => "birth_date",
            Field::Department => "department",
            Field::Email => "email",
            Field::Username => "username",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The field's value in `profile`, as the text the API and the hash carry.
    pub fn value_of(self, profile: &UserProfile) -> String {
        match self {
            Field::FullName => profile.full_name.to_string(),
            Field::Gender => profile.gender.to_string(),
            Field::BirthDate => profile.birth_date.to_string(),
            Field::Department => profile.department.to_string(),
            Field::Email => profile.email.to_string(),
            Field::Username => profile.username.to_string(),
        }
    }
}

/// A non-empty, duplicate-free set of fields, kept in [`Field::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelection(Vec<Field>);

impl FieldSelection {
    /// The longest `fields` value accepted; the longest legitimate list is well under 100 bytes.
    pub const MAX_INPUT_BYTES: usize = 256;

    /// The names `?fields=` takes: `id` and every field.
    pub fn names() -> impl Iterator<Item = &'static str> {
        std::iter::once("id").chain(Field::ALL.map(Field::name))
    }

    /// The most names a `?fields=` list may hold (repeats count): as many as always fit in
    /// [`FieldSelection::MAX_INPUT_BYTES`] (each name as long as the longest, one comma between two),
    /// so that a list of known names is refused for its count alone, never for its bytes. The OpenAPI
    /// document states this count (`maxItems`); it could not state a limit in bytes.
    pub fn max_names() -> usize {
        let longest = Self::names().map(str::len).max().unwrap_or(1);
        (Self::MAX_INPUT_BYTES + 1) / (longest + 1)
    }

    /// Parses the value of `?fields=`: at most [`FieldSelection::max_names`] comma-separated field
    /// names. `id` may be named and is always returned anyway; duplicates are ignored; an unknown or
    /// empty name is an error.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let invalid = |why: String| ValidationError::new("fields", why);
        if input.len() > Self::MAX_INPUT_BYTES {
            return Err(invalid(format!(
                "must be at most {} bytes",
                Self::MAX_INPUT_BYTES
            )));
        }
        if input.split(',').count() > Self::max_names() {
            return Err(invalid(format!(
                "must name at most {} fields",
                Self::max_names()
            )));
        }
        let mut selected = Vec::new();
        for name in input.split(',') {
            if name == "id" {
                continue;
            }
            if name.is_empty() {
                return Err(invalid(
                    "must be a comma-separated list of field names".into(),
                ));
            }
            let field = Field::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                invalid(format!(
                    "unknown field {:?}; known fields: id, {}",
                    truncate(name, 32),
                    known.join(", ")
                ))
            })?;
            if !selected.contains(&field) {
                selected.push(field);
            }
        }
        selected.sort();
        Ok(Self(selected))
    }

    /// Finds the `fields` parameter in a raw query string (`a=1&fields=email`) and parses it.
    /// `Ok(None)` when there is no `fields` parameter; any other parameter is refused, so a typo such
    /// as `?field=email` is an error rather than a silently ignored filter.
    pub fn from_query(query: Option<&str>) -> Result<Option<Self>, ValidationError> {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(None);
        };
        let mut found = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "fields" {
                return Err(ValidationError::new(
                    "query",
                    format!("unknown query parameter {:?}", truncate(key, 32)),
                ));
            }
            if found.is_some() {
                return Err(ValidationError::new("fields", "must be given at most once"));
            }
            // Field names are plain ASCII; the only escape a client may reasonably send is `%2C` for ','.
            let value = value.replace("%2C", ",").replace("%2c", ",");
            found = Some(Self::parse(&value)?);
        }
        Ok(found)
    }

    /// Every field (no projection).
    pub fn all() -> Self {
        Self(Field::ALL.to_vec())
    }

    pub fn fields(&self) -> &[Field] {
        &self.0
    }

    /// True when only `id` was asked for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON object the API returns for this selection: `id` plus the selected fields.
    pub fn project(&self, profile: &UserProfile) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), Value::from(profile.id.get()));
        for field in &self.0 {
            object.insert(field.name().into(), Value::from(field.value_of(profile)));
        }
        Value::Object(object)
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> UserProfile {
        serde_json::from_str(
            r#"{"id":3,"full_name":"Ana Silva","gender":"F","birth_date":"1980-01-02",
                "department":"Sales","email":"ana.silva@fake-devops-db.internal","username":"ana.silva"}"#,
        )
        .unwrap()
    }

    #[test]
    fn selection_is_ordered_and_deduplicated() {
        let s = FieldSelection::parse("email,department,email,id").unwrap();
        assert_eq!(s.fields(), &[Field::Department, Field::Email]);
    }

    #[test]
    fn selection_refuses_unknown_empty_and_oversized_lists() {
        for bad in [
            "",
            ",",
            "email,",
            "password",
            "email,,gender",
            "EMAIL",
            "email;DROP",
        ] {
            let err = FieldSelection::parse(bad).expect_err(bad);
            assert_eq!(err.field, "fields");
        }
        let many = vec!["email"; 10_000].join(",");
        assert!(FieldSelection::parse(&many).is_err());
    }

    #[test]
    fn a_list_is_limited_by_its_count_of_names_as_the_document_states() {
        // The longest list of the longest name fits the byte limit...
        let longest = FieldSelection::names().max_by_key(|n| n.len()).unwrap();
        let full = vec![longest; FieldSelection::max_names()].join(",");
        assert!(full.len() <= FieldSelection::MAX_INPUT_BYTES);
        assert!(FieldSelection::parse(&full).is_ok());
        // ...and one name more is refused even when short names keep it within the bytes.
        let short = vec!["id"; FieldSelection::max_names() + 1].join(",");
        assert!(short.len() <= FieldSelection::MAX_INPUT_BYTES);
        let err = FieldSelection::parse(&short).unwrap_err();
        assert_eq!(
            (err.field, err.message.as_str()),
            (
                "fields",
                format!("must name at most {} fields", FieldSelection::max_names()).as_str()
            )
        );
        assert!(FieldSelection::parse(&short[3..]).is_ok());
    }

    #[test]
    fn projection_keeps_id_and_the_selected_fields_only() {
        let s = FieldSelection::parse("email").unwrap();
        let v = s.project(&profile());
        assert_eq!(
            v,
            serde_json::json!({"id": 3, "email": "ana.silva@fake-devops-db.internal"})
        );
        let only_id = FieldSelection::parse("id").unwrap();
        assert!(only_id.is_empty());
        assert_eq!(only_id.project(&profile()), serde_json::json!({"id": 3}));
    }

    #[test]
    fn query_parsing_finds_fields_and_refuses_other_parameters() {
        assert_eq!(FieldSelection::from_query(None).unwrap(), None);
        assert_eq!(FieldSelection::from_query(Some("")).unwrap(), None);
        let s = FieldSelection::from_query(Some("fields=gender%2Cemail"))
            .unwrap()
            .unwrap();
        assert_eq!(s.fields(), &[Field::Gender, Field::Email]);
        assert_eq!(
            FieldSelection::from_query(Some("field=email"))
                .unwrap_err()
                .field,
            "query"
        );
        assert!(FieldSelection::from_query(Some("fields=email&fields=gender")).is_err());
        assert!(FieldSelection::from_query(Some("fields=%FF")).is_err());
    }

    #[test]
    fn json_keys_come_in_api_order_with_id_first() {
        let sel = FieldSelection::parse("username,gender").unwrap();
        let text = serde_json::to_string(&sel.project(&profile())).unwrap();
        assert_eq!(text, r#"{"id":3,"gender":"F","username":"ana.silva"}"#);
        let full = serde_json::to_string(&serde_json::to_value(profile()).unwrap()).unwrap();
        assert!(
            full.starts_with(r#"{"id":3,"full_name":"Ana Silva","gender":"F""#),
            "{full}"
        );
    }

    #[test]
    fn all_selection_projects_the_whole_profile() {
        let v = FieldSelection::all().project(&profile());
        let back: UserProfile = serde_json::from_value(v).unwrap();
        assert_eq!(back, profile());
    }
}
