//! Which requests the edge answers itself and which it passes to the origin.
//!
//! The edge serves only `GET /users/{id}` (from its tiers), `GET /healthz`, `GET /edge/feed`,
//! `GET /edge/metrics` and `GET /openapi.json` (its own API document, which the origin renders at
//! `/openapi/edge.json`); the rest of the public API (`/users` and `/users/...`: writes, other methods,
//! odd paths below `/users/`) goes to the origin unchanged, so the API has one implementation of
//! everything but the read path. Nothing else is forwarded: the origin's operational routes
//! (`/readyz`, `/metrics`, its own document, `/admin/...`) are for its operators on its own network,
//! never for the edge's public clients, so the edge answers them 404 like any unknown path. A malformed
//! id or query on the read path is refused here, before any tier is touched, with the same error body
//! the origin would send.

use aside_shared::{ApiError, FieldSelection, UserId};
use spin_sdk::http::Method;

const USERS_PREFIX: &str = "/users/";
const USERS: &str = "/users";
/// The edge's own operational route: the invalidation feed's state (counters only, nothing secret).
pub const FEED_STATE: &str = "/edge/feed";
/// The answering instance's overload counters (shedding, origin budget, breakers; nothing secret).
pub const METRICS: &str = "/edge/metrics";
/// The edge's API document, as its clients ask for it.
pub const API_DOCUMENT: &str = "/openapi.json";
/// Where the origin renders the edge's document (`aside_shared::openapi::edge::ORIGIN_PATH`; the edge
/// does not build the `openapi` feature).
pub const API_DOCUMENT_AT_ORIGIN: &str = "/openapi/edge.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: the edge is alive.
    Health,
    /// `GET /edge/feed`: the process's invalidation-feed state as Prometheus text.
    FeedState,
    /// `GET /edge/metrics`: the answering instance's counters as Prometheus text ([`crate::metrics`]).
    Metrics,
    /// `GET /openapi.json`: the edge's API document (no token needed), fetched from the origin.
    ApiDocument,
    /// `GET /users/{id}` with an optional `?fields=` projection.
    ReadProfile {
        id: UserId,
        selection: Option<FieldSelection>,
    },
    /// The rest of the public API (`/users`, `/users/...`): pass to the origin.
    Forward,
    /// A request the edge refuses without touching any tier or the origin: a malformed read (400) or a
    /// path outside the public API (404).
    Refuse(ApiError),
}

pub fn route(method: &Method, path: &str, query: Option<&str>) -> Route {
    if path == "/healthz" {
        // Other methods: the origin's 405, with its `allow` header.
        return if *method == Method::GET {
            Route::Health
        } else {
            Route::Forward
        };
    }
    if path == FEED_STATE && *method == Method::GET {
        return Route::FeedState;
    }
    if path == METRICS && *method == Method::GET {
        return Route::Metrics;
    }
    if path == API_DOCUMENT && *method == Method::GET {
        return Route::ApiDocument;
    }
    if path != USERS && !path.starts_with(USERS_PREFIX) {
        return Route::Refuse(ApiError::route_not_found());
    }
    if *method != Method::GET {
        return Route::Forward;
    }
    let Some(raw_id) = path.strip_prefix(USERS_PREFIX) else {
        return Route::Forward;
    };
    // `/users/` and `/users/1/more` are not this route; the origin answers them (404).
    if raw_id.is_empty() || raw_id.contains('/') {
        return Route::Forward;
    }
    let id = match UserId::parse(raw_id) {
        Ok(id) => id,
        Err(e) => return Route::Refuse(ApiError::invalid_id(e)),
    };
    match FieldSelection::from_query(query) {
        Ok(selection) => Route::ReadProfile { id, selection },
        Err(e) => Route::Refuse(ApiError::invalid_query(e)),
    }
}

/// Whether `path` is the public API (`/users`, `/users/...`): what client authentication guards.
pub fn is_public_api(path: &str) -> bool {
    path == USERS || path.starts_with(USERS_PREFIX)
}

/// The id of a `/users/{id}` path, for any method: a forwarded write to it updates (or drops)
/// this instance's tier-1 copy.
pub fn user_id_of(path: &str) -> Option<UserId> {
    path.strip_prefix(USERS_PREFIX)
        .and_then(|raw| UserId::parse(raw).ok())
}

/// The canonical query for a projection, as the edge asks the origin for it: `fields=a,b` in the
/// selection's order (so every spelling of one selection is one request), `fields=id` for an empty one.
pub fn fields_query(selection: &FieldSelection) -> String {
    if selection.is_empty() {
        return "fields=id".to_string();
    }
    let names: Vec<&str> = selection.fields().iter().map(|f| f.name()).collect();
    format!("fields={}", names.join(","))
}

#[cfg(test)]
mod tests {
    use aside_shared::{ErrorCode, Field};

    use super::*;

    #[test]
    fn get_user_is_served_by_the_edge() {
        assert_eq!(
            route(&Method::GET, "/users/42", None),
            Route::ReadProfile {
                id: UserId::parse("42").unwrap(),
                selection: None
            }
        );
        let Route::ReadProfile {
            selection: Some(s), ..
        } = route(&Method::GET, "/users/42", Some("fields=email,gender"))
        else {
            panic!("expected a projection");
        };
        assert_eq!(s.fields(), &[Field::Gender, Field::Email]);
    }

    #[test]
    fn healthz_is_answered_by_the_edge() {
        assert_eq!(route(&Method::GET, "/healthz", None), Route::Health);
        assert_eq!(route(&Method::POST, "/healthz", None), Route::Forward);
    }

    #[test]
    fn the_origin_s_operational_routes_are_not_reachable_through_the_edge() {
        for (method, path) in [
            (Method::GET, "/readyz"),
            (Method::GET, "/metrics"),
            (Method::GET, "/openapi/edge.json"),
            (Method::POST, "/openapi.json"),
            (Method::GET, "/admin/cache/stats"),
            (Method::POST, "/admin/cache/stats"),
            (Method::GET, "/nope"),
            (Method::GET, "/"),
            (Method::GET, "/usersx"),
            (Method::GET, "//users/1"),
        ] {
            let Route::Refuse(e) = route(&method, path, None) else {
                panic!("{method} {path} must not be forwarded");
            };
            assert_eq!(e.status(), 404, "{method} {path}");
        }
    }

    #[test]
    fn the_api_document_is_the_edge_s_own() {
        assert_eq!(
            route(&Method::GET, "/openapi.json", None),
            Route::ApiDocument
        );
        assert!(!is_public_api("/openapi.json"), "read without a token");
    }

    #[test]
    fn writes_and_other_paths_are_forwarded() {
        for (method, path) in [
            (Method::POST, "/users"),
            (Method::PUT, "/users/1"),
            (Method::PATCH, "/users/1"),
            (Method::DELETE, "/users/1"),
            (Method::DELETE, "/users/abc"),
            (Method::HEAD, "/users/1"),
            (Method::GET, "/users"),
            (Method::GET, "/users/"),
            (Method::GET, "/users/1/friends"),
        ] {
            assert_eq!(
                route(&method, path, None),
                Route::Forward,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn a_bad_id_is_refused_with_the_origin_s_error() {
        for raw in ["abc", "0", "-1", "01", "2147483648", "1%20", "1e3"] {
            let Route::Refuse(e) = route(&Method::GET, &format!("/users/{raw}"), None) else {
                panic!("{raw} should be refused");
            };
            assert_eq!(e.code, ErrorCode::InvalidId);
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn a_bad_query_is_refused() {
        for query in [
            "field=email",
            "fields=password",
            "fields=",
            "fields=a&fields=b",
        ] {
            let Route::Refuse(e) = route(&Method::GET, "/users/1", Some(query)) else {
                panic!("{query} should be refused");
            };
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{query}");
        }
        // An empty query is no query.
        assert!(matches!(
            route(&Method::GET, "/users/1", Some("")),
            Route::ReadProfile {
                selection: None,
                ..
            }
        ));
    }

    #[test]
    fn user_ids_are_found_in_write_paths() {
        assert_eq!(user_id_of("/users/9"), UserId::parse("9").ok());
        assert_eq!(user_id_of("/users/x"), None);
        assert_eq!(user_id_of("/users"), None);
    }

    #[test]
    fn projections_are_asked_for_canonically() {
        let s = FieldSelection::parse("email,gender,email").unwrap();
        assert_eq!(fields_query(&s), "fields=gender,email");
        let only_id = FieldSelection::parse("id").unwrap();
        assert_eq!(fields_query(&only_id), "fields=id");
    }
}
