//! The OpenAPI 3 document of the origin, served at `GET /openapi.json`.
//!
//! Routes and their documentation are registered together (`utoipa_axum::routes!` in
//! [`super::api_router`]): a route cannot exist without its operation in the document, nor the other way
//! round. The handlers carry their own `#[utoipa::path]` (parameters, bodies, every status and the
//! headers); this module holds the document's frame (title, security schemes) and the schemas of the
//! JSON bodies.
//!
//! The schemas describe the wire format of `aside_shared`'s types. They are written here, not derived in
//! `aside-shared`, because the shared types parse through hand-written code (`ProfileInput::from_json`)
//! and because the edge, a wasm component, must not carry a documentation generator. The unit tests
//! below tie each schema to the shared code it describes, so the two cannot drift apart silently.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's frame; paths and most schemas are added by the route registrations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aside origin",
        description = "The native origin of aside, a cache-aside layer for edge functions: user \
                       profiles from PostgreSQL through a Redis cache. Error answers share one JSON \
                       body (`ErrorBody`) whose `code` is stable. Every answer carries `x-cache`. Any \
                       route answers 503 with `Retry-After` when the request exceeds the origin's time \
                       budget, and 405 `method_not_allowed` to a method it does not list."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(schemas::ErrorBody, schemas::ErrorDetail, schemas::ErrorCode)),
    tags(
        (name = "users", description = "User profiles: the cache-aside read path and the writes"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "admin", description = "Operators only (admin token); absent when no admin token is configured"),
    )
)]
pub struct ApiDoc;

/// The two bearer tokens: the origin token (the edge's, or a direct caller's) and the admin token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "origin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "One of ASIDE_ORIGIN_TOKENS. Not checked when none is configured \
                         (development only).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "One of ASIDE_ADMIN_TOKENS; without one the admin routes do not exist.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The rendered document, shared by every `/openapi.json` request.
#[derive(Clone)]
pub struct Document(pub Arc<String>);

impl Document {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        Self(Arc::new(
            doc.to_pretty_json()
                .expect("an OpenAPI document serialises"),
        ))
    }
}

/// The OpenAPI 3 document of this origin: every route it serves, with bodies, errors and headers.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", body = Object,
         content_type = "application/json"),
    )
)]
pub async fn openapi_json(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
}

/// The JSON bodies, as they travel. Documentation only: never constructed.
#[allow(dead_code)]
pub mod schemas {
    use serde::Deserialize;
    use utoipa::{IntoResponses, ToSchema};

    /// A user profile: the id and the six fields. With `?fields=` an answer has `id` and the chosen
    /// fields only.
    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct UserProfile {
        #[schema(minimum = 1, maximum = 2147483647, example = 7)]
        pub id: i64,
        #[schema(min_length = 1, max_length = 100, example = "Érica Teixeira")]
        pub full_name: String,
        pub gender: Gender,
        #[schema(format = Date, example = "1990-01-31")]
        pub birth_date: String,
        #[schema(min_length = 1, max_length = 100, example = "Engineering")]
        pub department: String,
        #[schema(
            min_length = 3,
            max_length = 100,
            format = "email",
            example = "erica.teixeira@example.pt"
        )]
        pub email: String,
        #[schema(
            min_length = 1,
            max_length = 100,
            pattern = "^[a-z0-9][a-z0-9._-]*$",
            example = "erica.teixeira"
        )]
        pub username: String,
    }

    /// `M` or `F`.
    #[derive(Deserialize, ToSchema)]
    pub enum Gender {
        M,
        F,
    }

    /// The body of `POST /users` and `PUT /users/{id}`: every field, nothing else. Text fields: not
    /// blank, no surrounding whitespace, no control characters; `birth_date` from 1900-01-01 to today.
    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ProfileInput {
        #[schema(min_length = 1, max_length = 100)]
        pub full_name: String,
        pub gender: Gender,
        #[schema(format = Date)]
        pub birth_date: String,
        #[schema(min_length = 1, max_length = 100)]
        pub department: String,
        #[schema(min_length = 3, max_length = 100, format = "email")]
        pub email: String,
        #[schema(min_length = 1, max_length = 100, pattern = "^[a-z0-9][a-z0-9._-]*$")]
        pub username: String,
    }

    /// The body of `PATCH /users/{id}`: any of the fields (even none), with the rules of
    /// `ProfileInput`; `null` is refused.
    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ProfilePatch {
        #[schema(nullable = false, min_length = 1, max_length = 100)]
        pub full_name: Option<String>,
        #[schema(nullable = false)]
        pub gender: Option<Gender>,
        #[schema(nullable = false, format = Date)]
        pub birth_date: Option<String>,
        #[schema(nullable = false, min_length = 1, max_length = 100)]
        pub department: Option<String>,
        #[schema(nullable = false, min_length = 3, max_length = 100, format = "email")]
        pub email: Option<String>,
        #[schema(
            nullable = false,
            min_length = 1,
            max_length = 100,
            pattern = "^[a-z0-9][a-z0-9._-]*$"
        )]
        pub username: Option<String>,
    }

    /// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(example = json!({"error": {"code": "not_found", "message": "no user with id 9"}}))]
    pub struct ErrorBody {
        pub error: ErrorDetail,
    }

    #[derive(Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ErrorDetail {
        pub code: ErrorCode,
        /// For people; may change. Never holds a secret or a backend's raw error.
        pub message: String,
    }

    /// Stable error codes clients may match on.
    #[derive(Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum ErrorCode {
        InvalidId,
        InvalidQuery,
        MalformedBody,
        Unauthorized,
        /// Edge only: the client's bearer token was refused.
        InvalidToken,
        /// Edge only: the token does not allow this request.
        InsufficientScope,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        /// Edge only: too many writes from one caller.
        RateLimited,
        Unavailable,
        Internal,
    }

    /// `GET /healthz`.
    #[derive(Deserialize, ToSchema)]
    pub struct Health {
        #[schema(example = "ok")]
        pub status: String,
    }

    /// `GET /readyz`: each backend `ok` or `unavailable`.
    #[derive(Deserialize, ToSchema)]
    pub struct Readiness {
        pub postgres: BackendState,
        pub redis: BackendState,
    }

    #[derive(Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum BackendState {
        Ok,
        Unavailable,
    }

    /// The bearer token is missing or wrong.
    #[derive(IntoResponses)]
    pub enum Unauthorized {
        #[response(status = 401, description = "`unauthorized`: missing or invalid bearer token",
                   headers(("www-authenticate" = String, description = "`Bearer`")))]
        Unauthorized(ErrorBody),
    }

    /// A backend needed for the answer is down or too slow, or the request ran out of time.
    #[derive(IntoResponses)]
    pub enum Unavailable {
        #[response(status = 503, description = "`unavailable`: PostgreSQL is unavailable, or the \
                   request exceeded the origin's time budget",
                   headers(("retry-after" = u32, description = "Seconds to wait before retrying")))]
        Unavailable(ErrorBody),
        #[response(status = 500, description = "`internal`: a bug, never caused by input")]
        Internal(ErrorBody),
    }

    /// Errors of a write body.
    #[derive(IntoResponses)]
    pub enum BodyErrors {
        #[response(
            status = 400,
            description = "`malformed_body` (not a JSON object of profile \
                   fields), or `invalid_id`"
        )]
        Malformed(ErrorBody),
        #[response(
            status = 409,
            description = "`conflict`: another user has this username or email"
        )]
        Conflict(ErrorBody),
        #[response(
            status = 413,
            description = "`payload_too_large`: over ASIDE_MAX_BODY_BYTES"
        )]
        TooLarge(ErrorBody),
        #[response(
            status = 415,
            description = "`unsupported_media_type`: not `application/json`"
        )]
        NotJson(ErrorBody),
        #[response(
            status = 422,
            description = "`validation_failed`: the message names every \
                   failing field, the first one first"
        )]
        Invalid(ErrorBody),
    }
}

#[cfg(test)]
mod tests {
    use aside_shared::{ErrorCode, Field};
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;

    fn properties(schema: RefOr<Schema>) -> Vec<String> {
        match schema {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => panic!("an object schema"),
        }
    }

    #[test]
    fn profile_schemas_have_exactly_the_shared_fields() {
        use utoipa::PartialSchema as _;
        let fields: Vec<String> = Field::ALL.iter().map(|f| f.name().to_string()).collect();
        let mut with_id = vec!["id".to_string()];
        with_id.extend(fields.clone());
        assert_eq!(properties(schemas::UserProfile::schema()), with_id);
        assert_eq!(properties(schemas::ProfileInput::schema()), fields);
        assert_eq!(properties(schemas::ProfilePatch::schema()), fields);
        // Optional, but `null` is refused like any other non-string.
        let patch = serde_json::to_string(&schemas::ProfilePatch::schema()).unwrap();
        assert!(!patch.contains("\"null\""), "{patch}");
    }

    #[test]
    fn the_documented_profile_is_what_the_api_serialises() {
        let profile = aside_shared::UserProfile {
            id: aside_shared::UserId::parse("7").unwrap(),
            full_name: aside_shared::FullName::parse("Érica Teixeira").unwrap(),
            gender: aside_shared::Gender::Female,
            birth_date: aside_shared::BirthDate::parse("1990-01-31").unwrap(),
            department: aside_shared::Department::parse("Engineering").unwrap(),
            email: aside_shared::Email::parse("erica.teixeira@example.pt").unwrap(),
            username: aside_shared::Username::parse("erica.teixeira").unwrap(),
        };
        let json = serde_json::to_string(&profile).unwrap();
        // deny_unknown_fields on the schema type: every serialised key is documented, and typed alike.
        let _: schemas::UserProfile = serde_json::from_str(&json).unwrap();
        let error = aside_shared::ApiError::user_not_found(9).to_json();
        let _: schemas::ErrorBody = serde_json::from_str(&error).unwrap();
    }

    #[test]
    fn every_error_code_is_documented() {
        // An exhaustive match: a new ErrorCode does not compile until it is listed here, and then the
        // round trip through the documented enum fails until the schema lists it too.
        let all = |code: ErrorCode| match code {
            ErrorCode::InvalidId
            | ErrorCode::InvalidQuery
            | ErrorCode::MalformedBody
            | ErrorCode::Unauthorized
            | ErrorCode::InvalidToken
            | ErrorCode::InsufficientScope
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Conflict
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::ValidationFailed
            | ErrorCode::RateLimited
            | ErrorCode::Unavailable
            | ErrorCode::Internal => code,
        };
        for code in [
            ErrorCode::InvalidId,
            ErrorCode::InvalidQuery,
            ErrorCode::MalformedBody,
            ErrorCode::Unauthorized,
            ErrorCode::InvalidToken,
            ErrorCode::InsufficientScope,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ValidationFailed,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&all(code)).unwrap();
            let _: schemas::ErrorCode = serde_json::from_str(&json).unwrap();
        }
    }
}
