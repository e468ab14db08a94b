//! The edge's OpenAPI document, made from the origin's: the edge serves the same `/users` API (reads
//! from its tiers, everything else passed to the origin), so its operations, parameters, bodies and
//! schemas are the origin's. What the edge changes is stated here, once:
//!
//! * **Who may call:** a client JWT (`client_jwt`, HTTP bearer, format JWT) instead of the origin's
//!   shared tokens, with the scopes each operation needs ([`crate::scopes`], the list the edge checks).
//!   OpenAPI 3.1 lets a non-OAuth scheme name "roles" in a requirement; the requirement lists are
//!   alternatives, so `[{client_jwt: [profiles:read]}, {client_jwt: [profiles:admin]}]` reads "a token
//!   with `profiles:read`, or one with `profiles:admin`".
//! * **What else it answers:** 401 (no token, or a token it cannot accept), 403 (a valid token without
//!   the scope, or not the owner of the profile), 429 on writes (the per-caller write limit), and 503
//!   (the provider's keys or the origin unavailable), each with the headers the edge sends.
//! * **What it does not serve:** the origin's operational routes (`/readyz`, `/metrics`, `/admin/...`)
//!   and its tokens. `/openapi.json` is this document.
//!
//! The origin renders it (it has the schemas and the day a birth date is bounded by) at
//! `/openapi/edge.json`; the edge serves it to its clients at `GET /openapi.json`.

use utoipa::PartialSchema;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

use crate::scopes;

/// The name of the client token's security scheme.
pub const SCHEME: &str = "client_jwt";

/// Where the origin serves this document (the edge asks for it there).
pub const ORIGIN_PATH: &str = "/openapi/edge.json";

/// Where the edge serves it to its clients.
pub const EDGE_PATH: &str = "/openapi.json";

/// The paths of the origin's document the edge serves too.
fn served_by_the_edge(path: &str) -> bool {
    path == "/users" || path.starts_with("/users/") || path == "/healthz" || path == EDGE_PATH
}

/// The scopes an operation needs, as alternatives (`profiles:admin` always does).
pub fn scopes_for(method: &str, path: &str) -> Vec<&'static str> {
    match (method, path) {
        ("get", _) => vec![scopes::READ, scopes::ADMIN],
        ("post", "/users") => vec![scopes::ADMIN],
        _ => vec![scopes::WRITE, scopes::ADMIN],
    }
}

/// The edge's document, from the origin's (as rendered for a day).
pub fn edge_document(origin: &OpenApi) -> OpenApi {
    let mut doc = origin.clone();
    doc.info.title = "aside edge".into();
    doc.info.description = Some(
        "The public API of aside's edge: user profiles, read from the edge's tiers (memory, Redis) \
         or passed to the origin. Every `/users` request needs a client JWT (`Authorization: Bearer`) \
         from the configured identity provider, with the scope the operation names; without a token \
         every `/users` operation answers 401, before the request is looked at. Error answers share one \
         JSON body (`ErrorBody`) whose `code` is stable. Every answer carries `x-cache`."
            .into(),
    );
    doc.paths.paths.retain(|path, _| served_by_the_edge(path));
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == EDGE_PATH {
            for (_, operation) in operations(item) {
                operation.description = Some(
                    "This document: the edge's public API (no token needed). The edge fetches it \
                     from the origin; 503 while the origin is unavailable."
                        .into(),
                );
                operation.security = None;
                operation.responses.responses.insert(
                    "503".into(),
                    RefOr::T(error_response(
                        "`unavailable`: the origin could not be asked for it",
                        true,
                        false,
                    )),
                );
            }
            continue;
        }
        if !path.starts_with("/users") {
            continue;
        }
        for (method, operation) in operations(item) {
            client_operation(method, path, operation);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.clear();
    components.add_security_scheme(
        SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT from the identity provider the edge trusts (`auth_issuer`, \
                     `auth_jwks_url` or `auth_jwks`): an asymmetric signature by one of its keys, \
                     the configured `iss` and `aud`, `exp` not passed. Scopes come from `scope` or \
                     `scp`; the profile a caller owns from the user claim (default `sub`).",
                ))
                .build(),
        ),
    );
    if let Some(tags) = doc.tags.as_mut() {
        tags.retain(|t| t.name != "admin");
    }
    doc
}

/// `(method, operation)` of each operation of `item`, the method in lower case.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
    .collect()
}

/// One `/users` operation as the edge answers it.
fn client_operation(method: &'static str, path: &str, operation: &mut Operation) {
    operation.security = Some(
        scopes_for(method, path)
            .into_iter()
            .map(|scope| SecurityRequirement::new(SCHEME, [scope]))
            .collect(),
    );
    let responses = &mut operation.responses.responses;
    responses.insert(
        "401".into(),
        RefOr::T(error_response(
            "`unauthorized` (no bearer token) or `invalid_token` (malformed, expired, not yet \
                 valid, another issuer or audience, an unknown key, a bad signature; the message \
                 says which). Answered before the request is looked at.",
            false,
            true,
        )),
    );
    let owner = match (method, path) {
        ("post", _) => "",
        ("get", _) => {
            " A whole profile, or fields beyond `full_name` and `department`, needs the caller to \
             own it (the token's user claim is its id)."
        }
        _ => " The caller must own the profile (the token's user claim is its id).",
    };
    responses.insert(
        "403".into(),
        RefOr::T(error_response(
            &format!(
                "`insufficient_scope`: the token is valid but does not allow this request \
                 (`www-authenticate` names the scope that would).{owner}"
            ),
            false,
            true,
        )),
    );
    if method != "get" {
        responses.insert(
            "429".into(),
            RefOr::T(error_response(
                "`rate_limited`: the caller (the token's subject) sent more writes than \
                 `write_rate_per_min` allows",
                true,
                false,
            )),
        );
    }
    responses.insert(
        "503".into(),
        RefOr::T(error_response(
            "`unavailable`: the identity provider's keys could not be fetched for longer than \
             the edge keeps the last good ones (the token may be valid: retry, do not discard it), \
             or the origin (or, for reads, every tier that could answer) is unavailable or too slow",
            true,
            false,
        )),
    );
}

/// An error answer: the shared body, `x-cache: BYPASS`, and `retry-after` or `www-authenticate`.
fn error_response(description: &str, retry_after: bool, challenge: bool) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if retry_after {
        response = response.header(
            "retry-after",
            HeaderBuilder::new()
                .schema(Some(u32::schema()))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    if challenge {
        response = response.header(
            "www-authenticate",
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(
                    "RFC 6750: `Bearer realm=\"aside\"`, with `error=\"invalid_token\"` or \
                     `error=\"insufficient_scope\"` and `error_description` when a token was sent",
                ))
                .build(),
        );
    }
    response.build()
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItemBuilder, PathsBuilder};
    use utoipa::openapi::{OpenApiBuilder, ResponsesBuilder};

    use super::*;

    fn origin() -> OpenApi {
        let op = || {
            OperationBuilder::new()
                .responses(
                    ResponsesBuilder::new()
                        .response("200", Response::new("ok"))
                        .response("401", Response::new("origin token"))
                        .build(),
                )
                .security(SecurityRequirement::new(
                    "origin_token",
                    Vec::<String>::new(),
                ))
                .build()
        };
        let mut paths = PathsBuilder::new();
        for (path, methods) in [
            ("/users", &[HttpMethod::Post][..]),
            (
                "/users/{id}",
                &[
                    HttpMethod::Get,
                    HttpMethod::Put,
                    HttpMethod::Patch,
                    HttpMethod::Delete,
                ],
            ),
            ("/readyz", &[HttpMethod::Get]),
            ("/admin/cache/stats", &[HttpMethod::Get]),
        ] {
            for method in methods {
                paths = paths.path(
                    path,
                    PathItemBuilder::new()
                        .operation(method.clone(), op())
                        .build(),
                );
            }
        }
        OpenApiBuilder::new().paths(paths.build()).build()
    }

    #[test]
    fn the_edge_document_states_tokens_scopes_and_refusals() {
        let doc = serde_json::to_value(edge_document(&origin())).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(
            paths.keys().collect::<Vec<_>>(),
            ["/users", "/users/{id}"],
            "the origin's operational routes are not the edge's"
        );
        let scheme = &doc["components"]["securitySchemes"];
        assert_eq!(scheme.as_object().unwrap().len(), 1, "{scheme}");
        assert_eq!(scheme[SCHEME]["scheme"], "bearer");
        assert_eq!(scheme[SCHEME]["bearerFormat"], "JWT");
        let get = &paths["/users/{id}"]["get"];
        assert_eq!(
            get["security"],
            serde_json::json!([{SCHEME: [scopes::READ]}, {SCHEME: [scopes::ADMIN]}])
        );
        assert_eq!(
            paths["/users"]["post"]["security"],
            serde_json::json!([{SCHEME: [scopes::ADMIN]}])
        );
        for (path, method) in [
            ("/users", "post"),
            ("/users/{id}", "put"),
            ("/users/{id}", "patch"),
            ("/users/{id}", "delete"),
            ("/users/{id}", "get"),
        ] {
            let responses = &paths[path][method]["responses"];
            for status in ["200", "401", "403", "503"] {
                assert!(responses[status].is_object(), "{method} {path} {status}");
            }
            assert!(
                responses["401"]["headers"]["www-authenticate"].is_object(),
                "{method} {path}"
            );
            assert!(responses["503"]["headers"]["retry-after"].is_object());
            assert_eq!(
                responses["429"].is_object(),
                method != "get",
                "{method} {path}: writes alone are rate-limited"
            );
        }
    }
}
