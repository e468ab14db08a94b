//! Spin HTTP routing: exact routes (`/users`) and wildcard routes (`/users/...`, `/...`); an exact
//! match wins over a wildcard, and the longest wildcard prefix wins.

use anyhow::ensure;

/// A route match: which route and component, and the path after the wildcard prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The index of the matching route (its component index).
    pub index: usize,
    /// The route as written in the manifest (with the application base).
    pub raw_route: &'a str,
    /// The route prefix (without the trailing `/...`).
    pub prefix: &'a str,
    /// The part of the path after the prefix (`spin-path-info`).
    pub path_info: String,
}

#[derive(Debug, Clone)]
struct Route {
    raw: String,
    prefix: String,
    wildcard: bool,
    index: usize,
}

/// The router of one application.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

fn join(base: &str, route: &str) -> String {
    let base = base.trim_end_matches('/');
    if route == "/" {
        if base.is_empty() {
            "/".to_string()
        } else {
            base.to_string()
        }
    } else {
        format!("{base}{route}")
    }
}

impl Router {
    /// Builds a router from `(route, index)` pairs, with the application base prefixed.
    pub fn new<'a>(
        base: &str,
        routes: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for (route, index) in routes {
            ensure!(
                route.starts_with('/'),
                "route {route:?} must start with '/'"
            );
            let raw = join(base, route);
            let (prefix, wildcard) = match raw.strip_suffix("/...") {
                Some(p) => (p.to_string(), true),
                None => (raw.trim_end_matches('/').to_string(), false),
            };
            ensure!(
                !prefix.contains("..."),
                "route {route:?}: '...' is only allowed as the last segment"
            );
            ensure!(
                !out.iter()
                    .any(|r: &Route| r.prefix == prefix && r.wildcard == wildcard),
                "duplicate route {route:?}"
            );
            out.push(Route {
                raw,
                prefix,
                wildcard,
                index,
            });
        }
        // Exact routes first, then wildcards by decreasing prefix length.
        out.sort_by(|a, b| {
            a.wildcard
                .cmp(&b.wildcard)
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        Ok(Self { routes: out })
    }

    /// Finds the route for `path`.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let trimmed = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        for r in &self.routes {
            if !r.wildcard {
                let exact = if r.prefix.is_empty() { "/" } else { &r.prefix };
                if trimmed == exact {
                    return Some(RouteMatch {
                        index: r.index,
                        raw_route: &r.raw,
                        prefix: &r.prefix,
                        path_info: String::new(),
                    });
                }
                continue;
            }
            let rest = if r.prefix.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(r.prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            if let Some(rest) = rest {
                return Some(RouteMatch {
                    index: r.index,
                    raw_route: &r.raw,
                    prefix: &r.prefix,
                    path_info: rest.to_string(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        let r = Router::new(
            "/",
            [
                ("/...", 0),
                ("/users/...", 1),
                ("/health", 2),
                ("/users/admin", 3),
            ],
        )
        .unwrap();
        let m = r.route("/users/7").unwrap();
        assert_eq!((m.index, m.path_info.as_str()), (1, "/7"));
        assert_eq!(r.route("/users").unwrap().index, 1);
        assert_eq!(r.route("/users/admin").unwrap().index, 3);
        assert_eq!(r.route("/usersx").unwrap().index, 0);
        assert_eq!(r.route("/health").unwrap().index, 2);
        assert_eq!(r.route("/health/").unwrap().index, 2);
        let m = r.route("/healthz").unwrap();
        assert_eq!((m.index, m.path_info.as_str()), (0, "/healthz"));
        let m = r.route("/").unwrap();
        assert_eq!((m.index, m.path_info.as_str()), (0, "/"));
    }

    #[test]
    fn no_catch_all() {
        let r = Router::new("/api", [("/users/...", 0), ("/ping", 1)]).unwrap();
        assert_eq!(r.route("/api/users/1").unwrap().index, 0);
        assert_eq!(r.route("/api/ping").unwrap().index, 1);
        assert!(r.route("/ping").is_none());
        assert!(r.route("/api/other").is_none());
        assert!(Router::new("/", [("/a", 0), ("/a", 1)]).is_err());
        assert!(Router::new("/", [("a", 0)]).is_err());
    }
}
