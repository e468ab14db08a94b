//! The OpenAPI 3 document of the origin, served at `GET /openapi.json`.
//!
//! Routes and their documentation are registered together (`utoipa_axum::routes!` in
//! [`super::api_router`]): a route cannot exist without its operation in the document, nor the other way
//! round. The handlers carry their own `#[utoipa::path]` (parameters, bodies, every status and the
//! headers); this module holds the document's frame (title, security schemes) and the schemas of the
//! JSON bodies.
//!
//! The schemas of the shared wire types (profiles, write bodies, the `?fields` list and projection,
//! errors) come from `aside_shared` itself (its `openapi` feature, which the edge never enables): every
//! limit they state is computed from the shared parsers' own constants and rules. One limit depends on
//! the day: a birth date may not be after today, so the document is rendered per day
//! ([`Document::render`]) with `BirthDate` bounded by that day.

use std::sync::{Arc, Mutex};

use aside_shared::BirthDate;
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
    // Parameters' schemas are not collected by the operations; the bodies' are.
    components(schemas(aside_shared::ErrorBody, aside_shared::UserId, aside_shared::FieldSelection)),
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

/// The document, rendered once a day (its `BirthDate` schema names the day) and shared by every
/// `/openapi.json` request of that day; with it, the edge's document made from it
/// ([`aside_shared::openapi::edge`]).
#[derive(Clone)]
pub struct Document {
    doc: Arc<utoipa::openapi::OpenApi>,
    rendered: Arc<Mutex<Option<Rendered>>>,
}

/// The day the documents were rendered for, the origin's and the edge's text.
type Rendered = (time::Date, Arc<String>, Arc<String>);

impl Document {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        Self {
            doc: Arc::new(doc.clone()),
            rendered: Arc::default(),
        }
    }

    /// The document as of `today`: birth dates from 1900-01-01 to `today`, as a write checks them.
    pub fn render(&self, today: time::Date) -> Arc<String> {
        self.rendered(today).0
    }

    /// The edge's document as of `today` (what the edge's clients get at its `/openapi.json`).
    pub fn render_for_edge(&self, today: time::Date) -> Arc<String> {
        self.rendered(today).1
    }

    fn rendered(&self, today: time::Date) -> (Arc<String>, Arc<String>) {
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((day, origin, edge)) = rendered.as_ref()
            && *day == today
        {
            return (Arc::clone(origin), Arc::clone(edge));
        }
        let mut doc = (*self.doc).clone();
        if let Some(components) = doc.components.as_mut() {
            components.schemas.insert(
                <BirthDate as utoipa::ToSchema>::name().into_owned(),
                BirthDate::schema_until(today),
            );
        }
        let edge = aside_shared::openapi::edge::edge_document(&doc);
        let text = |doc: &utoipa::openapi::OpenApi| {
            Arc::new(
                doc.to_pretty_json()
                    .expect("an OpenAPI document serialises"),
            )
        };
        let (origin, edge) = (text(&doc), text(&edge));
        *rendered = Some((today, Arc::clone(&origin), Arc::clone(&edge)));
        (origin, edge)
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
    // Today as the write handlers see it (UTC): the day a birth date may not be after.
    let today = time::OffsetDateTime::now_utc().date();
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.render(today).as_str().to_owned(),
    )
}

/// The edge's OpenAPI 3 document (the `/users` API as the edge's clients see it: client JWTs, scopes,
/// the edge's 401/403/429/503), which the edge serves at its own `/openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi/edge.json",
    tag = "operations",
    responses(
        (status = 200, description = "The edge's document (OpenAPI 3.1)", body = Object,
         content_type = "application/json"),
    )
)]
pub async fn edge_openapi_json(Extension(doc): Extension<Document>) -> impl IntoResponse {
    let today = time::OffsetDateTime::now_utc().date();
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.render_for_edge(today).as_str().to_owned(),
    )
}

/// The bodies the origin alone answers (health, readiness), the GET answer and the shared error
/// responses. Documentation only: never constructed.
#[allow(dead_code)]
pub mod schemas {
    use aside_shared::openapi::ProfileProjection;
    use aside_shared::{ErrorBody, UserProfile};
    use serde::{Deserialize, Serialize};
    use utoipa::openapi::schema::{AnyOfBuilder, Schema};
    use utoipa::openapi::{Ref, RefOr};
    use utoipa::{IntoResponses, PartialSchema, ToSchema};

    /// The answer of `GET /users/{id}`: the whole profile, or with `?fields=` its projection.
    pub struct ProfileAnswer;

    impl PartialSchema for ProfileAnswer {
        fn schema() -> RefOr<Schema> {
            let whole = Ref::from_schema_name(UserProfile::name());
            let projected = Ref::from_schema_name(ProfileProjection::name());
            RefOr::T(Schema::AnyOf(
                AnyOfBuilder::new()
                    .item(whole)
                    .item(projected)
                    .description(Some(
                        "A `UserProfile`; with `?fields=`, a `ProfileProjection` (`id` and the \
                         chosen fields)",
                    ))
                    .build(),
            ))
        }
    }

    impl ToSchema for ProfileAnswer {
        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            schemas.push((UserProfile::name().into(), UserProfile::schema()));
            <UserProfile as ToSchema>::schemas(schemas);
            schemas.push((
                ProfileProjection::name().into(),
                ProfileProjection::schema(),
            ));
            <ProfileProjection as ToSchema>::schemas(schemas);
        }
    }

    /// `GET /healthz`: what the handler answers, and its schema.
    #[derive(Serialize, Deserialize, ToSchema)]
    pub struct Health {
        #[schema(example = "ok")]
        pub status: String,
    }

    /// `GET /readyz`: each backend `ok` or `unavailable`; what the handler answers, and its schema.
    #[derive(Serialize, Deserialize, ToSchema)]
    pub struct Readiness {
        pub postgres: BackendState,
        pub redis: BackendState,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum BackendState {
        Ok,
        Unavailable,
    }

    impl BackendState {
        pub fn of(ok: bool) -> Self {
            if ok { Self::Ok } else { Self::Unavailable }
        }
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

    /// The answer of a PUT or PATCH: the whole profile as changed, or no such user.
    #[derive(IntoResponses)]
    pub enum Changed {
        #[response(status = 200, description = "The whole profile as changed",
                   headers(
                       ("x-cache" = String, description = "`BYPASS`: writes are not answered from a cache"),
                       ("etag" = String, description = "The new row version, `\"<version>\"`"),
                       ("cache-control" = String, description = "`no-store`"),
                   ))]
        Changed(UserProfile),
        #[response(status = 404, description = "`not_found`: no user with this id")]
        NotFound(ErrorBody),
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
    use std::sync::Arc;

    use aside_shared::domain::MAX_TEXT_CHARS;
    use aside_shared::openapi::date_pattern;
    use aside_shared::{FieldSelection, UserId};
    use serde_json::{Value, json};
    use time::macros::date;
    use utoipa::OpenApi as _;
    use utoipa_axum::router::OpenApiRouter;

    use super::*;
    use crate::http::AppState;

    /// The users' part of the document, rendered as served on `today`.
    fn served(today: time::Date) -> Value {
        let (_, doc) = OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi())
            .merge(crate::http::user_routes())
            .split_for_parts();
        serde_json::from_str(&Document::new(&doc).render(today)).unwrap()
    }

    #[test]
    fn the_served_document_states_the_parsers_limits() {
        let doc = served(date!(2026 - 12 - 01));
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["UserId"]["minimum"], json!(UserId::MIN));
        assert_eq!(schemas["UserId"]["maximum"], json!(UserId::MAX));
        for text in ["FullName", "Department", "Email", "Username"] {
            assert_eq!(schemas[text]["maxLength"], json!(MAX_TEXT_CHARS), "{text}");
        }
        assert_eq!(schemas["Gender"]["enum"], json!(["M", "F"]));
        // Birth dates: from the earliest the parser takes to the day the document is served.
        assert_eq!(
            schemas["BirthDate"]["pattern"],
            json!(date_pattern(
                aside_shared::BirthDate::EARLIEST,
                Some(date!(2026 - 12 - 01))
            ))
        );
        let other_day = served(date!(2027 - 01 - 02));
        assert_ne!(
            other_day["components"]["schemas"]["BirthDate"],
            schemas["BirthDate"]
        );

        let get = &doc["paths"]["/users/{id}"]["get"];
        let params = get["parameters"].as_array().unwrap();
        let fields = params.iter().find(|p| p["name"] == "fields").unwrap();
        assert_eq!(
            (&fields["style"], &fields["explode"]),
            (&json!("form"), &json!(false))
        );
        let names: Vec<&str> = FieldSelection::names().collect();
        let list = &fields["schema"];
        let list = if list["$ref"].is_string() {
            &schemas["FieldSelection"]
        } else {
            list
        };
        assert_eq!(list["items"]["enum"], json!(names), "{fields}");
        assert_eq!(list["maxItems"], json!(FieldSelection::max_names()));
        let answer = &get["responses"]["200"]["content"]["application/json"]["schema"];
        let answer = if answer["$ref"].is_string() {
            &schemas["ProfileAnswer"]
        } else {
            answer
        };
        assert_eq!(
            answer["anyOf"],
            json!([
                {"$ref": "#/components/schemas/UserProfile"},
                {"$ref": "#/components/schemas/ProfileProjection"}
            ])
        );
        assert_eq!(schemas["ProfileProjection"]["required"], json!(["id"]));
        for schema in [
            "ProfileInput",
            "ProfilePatch",
            "ErrorBody",
            "ErrorCode",
            "UserProfile",
        ] {
            assert!(schemas[schema].is_object(), "{schema} missing");
        }
    }
}
