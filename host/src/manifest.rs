//! The subset of a Spin manifest (`spin_manifest_version = 2`) this host runs: application
//! variables, HTTP triggers, components (source, `allowed_outbound_hosts`, component variables,
//! environment), and the template language (`"{{ name }}"`) used in component variables and
//! `allowed_outbound_hosts`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;

use super::allowed::AllowedHosts;

/// A parsed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `[application] name`.
    pub name: String,
    /// The directory relative to which component sources are resolved.
    pub base_dir: PathBuf,
    /// `[application.trigger.http] base`, default `/`.
    pub base: String,
    /// `[variables]`.
    pub variables: BTreeMap<String, VariableDecl>,
    /// `[[trigger.http]]`, in manifest order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[component.<id>]`.
    pub components: BTreeMap<String, ComponentDecl>,
}

/// One `[variables]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    /// The default value, if any.
    pub default: Option<String>,
    /// Whether a value must be provided.
    #[serde(default)]
    pub required: bool,
    /// Whether the value is a secret (never logged).
    #[serde(default)]
    pub secret: bool,
    /// Free-form description.
    pub description: Option<String>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// The route pattern (`/...`, `/exact`, `/prefix/...`), `None` for a private route.
    pub route: Option<String>,
    /// The component id.
    pub component: String,
}

/// One `[component.<id>]` table.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    /// Absolute path of the Wasm file.
    pub source: PathBuf,
    /// `allowed_outbound_hosts`, unexpanded templates.
    pub allowed_outbound_hosts: Vec<String>,
    /// `[component.<id>.variables]`, unexpanded templates.
    pub variables: BTreeMap<String, String>,
    /// `environment`.
    pub environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    trigger: BTreeMap<String, toml::Table>,
}

#[derive(Deserialize)]
struct RawComponent {
    source: RawSource,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSource {
    Path(String),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: RawRoute,
    component: toml::Value,
    executor: Option<toml::Table>,
}

impl Manifest {
    /// Reads and parses the manifest file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        Self::parse(&text, &base_dir)
            .with_context(|| format!("invalid Spin manifest {}", path.display()))
    }

    /// Parses manifest text; sources are resolved relative to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> anyhow::Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        ensure!(
            raw.spin_manifest_version.as_integer() == Some(2)
                || raw.spin_manifest_version.as_str() == Some("2"),
            "unsupported spin_manifest_version {} (this host supports 2)",
            raw.spin_manifest_version
        );
        for (name, decl) in &raw.variables {
            validate_name(name).with_context(|| format!("invalid variable name {name:?}"))?;
            ensure!(
                !(decl.required && decl.default.is_some()),
                "variable {name:?}: a required variable cannot have a default"
            );
        }
        let base = match raw
            .application
            .trigger
            .get("http")
            .and_then(|t| t.get("base"))
        {
            Some(v) => v
                .as_str()
                .context("[application.trigger.http] base must be a string")?
                .to_string(),
            None => "/".to_string(),
        };

        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let source = match c.source {
                RawSource::Path(p) => base_dir.join(p),
                RawSource::Other(_) => {
                    bail!("component {id:?}: only local file sources are supported by this host")
                }
            };
            for name in c.variables.keys() {
                validate_name(name)
                    .with_context(|| format!("component {id:?}: invalid variable name {name:?}"))?;
            }
            for (name, value) in &c.variables {
                Template::parse(value).with_context(|| {
                    format!("component {id:?}: invalid template in variable {name:?}")
                })?;
            }
            for entry in &c.allowed_outbound_hosts {
                Template::parse(entry).with_context(|| {
                    format!("component {id:?}: invalid template in allowed_outbound_hosts")
                })?;
            }
            components.insert(
                id,
                ComponentDecl {
                    source,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    variables: c.variables,
                    environment: c.environment,
                },
            );
        }

        let mut http_triggers = Vec::new();
        for (kind, triggers) in raw.trigger {
            if kind != "http" {
                tracing::warn!("ignoring [[trigger.{kind}]]: only HTTP triggers are supported");
                continue;
            }
            for t in triggers {
                let t: RawHttpTrigger = toml::Value::Table(t)
                    .try_into()
                    .context("invalid [[trigger.http]] entry")?;
                if let Some(exec) = &t.executor {
                    let ty = exec.get("type").and_then(|v| v.as_str()).unwrap_or("");
                    ensure!(
                        ty == "http" || ty == "spin" || ty.is_empty(),
                        "[[trigger.http]] executor {ty:?} is not supported by this host"
                    );
                }
                let component = match t.component {
                    toml::Value::String(s) => s,
                    _ => bail!("[[trigger.http]]: inline components are not supported"),
                };
                ensure!(
                    components.contains_key(&component),
                    "[[trigger.http]] refers to component {component:?}, which is not defined"
                );
                let route = match t.route {
                    RawRoute::Path(p) => {
                        ensure!(p.starts_with('/'), "route {p:?} must start with '/'");
                        Some(p)
                    }
                    RawRoute::Private { private: true } => None,
                    RawRoute::Private { private: false } => {
                        bail!("route must be a path or {{ private = true }}")
                    }
                };
                http_triggers.push(HttpTrigger { route, component });
            }
        }
        ensure!(
            !http_triggers.is_empty(),
            "the manifest has no [[trigger.http]] entry"
        );

        Ok(Self {
            name: raw.application.name,
            base_dir: base_dir.to_path_buf(),
            base,
            variables: raw.variables,
            http_triggers,
            components,
        })
    }
}

/// Checks a variable name the way Spin does: lower-case ASCII letters, digits and single
/// underscores, starting with a letter and not ending with an underscore.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    ensure!(!name.is_empty(), "must not be empty");
    ensure!(
        name.starts_with(|c: char| c.is_ascii_lowercase()),
        "must start with a lowercase ASCII letter"
    );
    ensure!(
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "must contain only lowercase ASCII letters, digits and underscores"
    );
    ensure!(!name.ends_with('_'), "must not end with an underscore");
    ensure!(
        !name.contains("__"),
        "must not contain consecutive underscores"
    );
    Ok(())
}

/// A value that may be secret: its `Debug` form never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Value {
    /// The value.
    pub value: String,
    /// Whether it is (or derives from) a secret variable.
    pub secret: bool,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("<redacted>")
        } else {
            fmt::Debug::fmt(&self.value, f)
        }
    }
}

/// A parsed template: literal text and `{{ variable }}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

impl Template {
    /// Parses `text`; `{{` must be closed by `}}` around a valid variable name.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .with_context(|| format!("unterminated '{{{{' in {text:?}"))?;
            let name = after[..end].trim();
            validate_name(name)
                .with_context(|| format!("invalid variable reference {name:?} in {text:?}"))?;
            parts.push(Part::Var(name.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self(parts))
    }

    /// The variables the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Expands the template; the result is secret if any referenced variable is.
    pub fn expand(&self, vars: &HashMap<String, Value>) -> anyhow::Result<Value> {
        let mut out = String::new();
        let mut secret = false;
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(name) => {
                    let v = vars
                        .get(name)
                        .with_context(|| format!("no application variable named {name:?}"))?;
                    out.push_str(&v.value);
                    secret |= v.secret;
                }
            }
        }
        Ok(Value { value: out, secret })
    }
}

/// Resolves application variables: explicit overrides first, then `SPIN_VARIABLE_<NAME>` from
/// `env`, then the default. A required variable without a value is an error naming it.
pub fn resolve_app_variables(
    decls: &BTreeMap<String, VariableDecl>,
    overrides: &HashMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    let mut missing = Vec::new();
    for (name, decl) in decls {
        let value = overrides
            .get(name)
            .cloned()
            .or_else(|| env(&env_var_name(name)))
            .or_else(|| decl.default.clone());
        match value {
            Some(value) => {
                out.insert(
                    name.clone(),
                    Value {
                        value,
                        secret: decl.secret,
                    },
                );
            }
            None if decl.required => missing.push(name.as_str()),
            None => {}
        }
    }
    for name in overrides.keys() {
        if !decls.contains_key(name) {
            tracing::warn!("variable {name:?} is given but not declared in [variables]; ignored");
        }
    }
    if !missing.is_empty() {
        let envs: Vec<String> = missing.iter().map(|n| env_var_name(n)).collect();
        bail!(
            "missing required application variable(s): {} (set {} or pass --variable name=value)",
            missing.join(", "),
            envs.join(", ")
        );
    }
    Ok(out)
}

/// `SPIN_VARIABLE_<UPPERCASE_NAME>`.
pub fn env_var_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// What a component sees at run time: its resolved variables and outbound allow-list.
#[derive(Debug)]
pub struct ComponentConfig {
    /// Component id.
    pub id: String,
    /// `[component.<id>.variables]`, expanded.
    pub variables: HashMap<String, Value>,
    /// `allowed_outbound_hosts`, expanded and parsed.
    pub allowed_hosts: AllowedHosts,
    /// `environment`.
    pub environment: Vec<(String, String)>,
}

/// Expands a component's variables and `allowed_outbound_hosts` against the application
/// variables.
pub fn resolve_component(
    id: &str,
    decl: &ComponentDecl,
    app_vars: &HashMap<String, Value>,
    declared: &BTreeMap<String, VariableDecl>,
) -> anyhow::Result<Arc<ComponentConfig>> {
    let mut variables = HashMap::new();
    for (name, text) in &decl.variables {
        let t = Template::parse(text)?;
        for r in t.references() {
            ensure!(
                declared.contains_key(r),
                "component {id:?} variable {name:?} refers to {r:?}, which is not in [variables]"
            );
        }
        let v = t
            .expand(app_vars)
            .with_context(|| format!("component {id:?}: cannot resolve variable {name:?}"))?;
        variables.insert(name.clone(), v);
    }
    let mut hosts = Vec::new();
    let mut templated = false;
    for entry in &decl.allowed_outbound_hosts {
        let t = Template::parse(entry)?;
        templated |= t.references().next().is_some();
        let v = t.expand(app_vars).with_context(|| {
            format!("component {id:?}: cannot resolve allowed_outbound_hosts entry {entry:?}")
        })?;
        hosts.push(v.value);
    }
    // Spin 4 parses a templated allow-list only when the component first reaches out, and then refuses
    // every outbound connection if it does not parse (the error is logged; the application starts and
    // the component runs). A list without templates is checked when the manifest loads.
    let allowed_hosts = match AllowedHosts::parse(&hosts) {
        Ok(hosts) => hosts,
        Err(e) if templated => {
            tracing::error!(
                component = %id,
                "invalid allowed_outbound_hosts after expanding variables: {e:#}; every outbound \
                 connection of this component is refused (as Spin does)"
            );
            AllowedHosts::default()
        }
        Err(e) => {
            return Err(e.context(format!("component {id:?}: invalid allowed_outbound_hosts")));
        }
    };
    Ok(Arc::new(ComponentConfig {
        id: id.to_string(),
        variables,
        allowed_hosts,
        environment: decl
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "demo"

[variables]
redis_address = { default = "127.0.0.1:6379" }
redis_password = { required = true, secret = true }
origin_url = { default = "http://127.0.0.1:8080" }

[[trigger.http]]
route = "/..."
component = "edge"

[[trigger.http]]
route = "/exact"
component = "edge"

[component.edge]
source = "target/edge.wasm"
allowed_outbound_hosts = ["redis://{{ redis_address }}", "{{origin_url}}"]

[component.edge.variables]
redis_url = "redis://edge:{{ redis_password }}@{{ redis_address }}"
origin_url = "{{ origin_url }}"

[component.edge.build]
command = "cargo build"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_manifest() {
        let m = Manifest::parse(MANIFEST, Path::new("/app")).unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(m.http_triggers.len(), 2);
        assert_eq!(m.http_triggers[0].route.as_deref(), Some("/..."));
        assert_eq!(m.http_triggers[0].component, "edge");
        let c = &m.components["edge"];
        assert_eq!(c.source, Path::new("/app/target/edge.wasm"));
        assert!(m.variables["redis_password"].required);
        assert!(m.variables["redis_password"].secret);
    }

    #[test]
    fn parses_the_repository_manifest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let m = Manifest::load(&path).unwrap();
        assert_eq!(m.http_triggers[0].component, "aside-edge");
        assert!(m.variables["origin_token"].required && m.variables["origin_token"].secret);
    }

    /// The repository's spin.toml lets the component reach Redis with the scheme `redis_scheme`
    /// names and no other: asking for TLS removes the plain-TCP permission.
    #[test]
    fn the_repository_manifest_allows_redis_only_with_the_configured_scheme() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let m = Manifest::load(&path).unwrap();
        let decl = &m.components["aside-edge"];
        for (scheme, other) in [("redis", "rediss"), ("rediss", "redis")] {
            let overrides = HashMap::from([
                ("redis_password".to_string(), "pw".to_string()),
                ("origin_token".to_string(), "token".to_string()),
                (
                    "redis_address".to_string(),
                    "cache.internal:6380".to_string(),
                ),
                ("redis_scheme".to_string(), scheme.to_string()),
                ("auth_jwks".to_string(), "{}".to_string()),
                ("auth_issuer".to_string(), "i".to_string()),
                ("auth_audience".to_string(), "a".to_string()),
            ]);
            let vars = resolve_app_variables(&m.variables, &overrides, no_env).unwrap();
            let c = resolve_component("aside-edge", decl, &vars, &m.variables).unwrap();
            assert_eq!(c.variables["redis_scheme"].value, scheme);
            let url = |s: &str| format!("{s}://edge:pw@cache.internal:6380/0");
            assert!(c.allowed_hosts.allows(&url(scheme), "redis"), "{scheme}");
            assert!(
                !c.allowed_hosts.allows(&url(other), "redis"),
                "{scheme} allows {other}"
            );
        }
    }

    #[test]
    fn rejects_invalid_manifests() {
        let cases = [
            (
                "spin_manifest_version = 1\n[application]\nname='a'",
                "spin_manifest_version",
            ),
            ("spin_manifest_version = 2\n", "application"),
            ("not toml ===", ""),
            (
                "spin_manifest_version = 2\n[application]\nname='a'\n[[trigger.http]]\nroute='/...'\ncomponent='nope'",
                "not defined",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname='a'\n[variables]\nBad = { default = 'x' }\n[[trigger.http]]\nroute='/...'\ncomponent='c'\n[component.c]\nsource='c.wasm'",
                "invalid variable name",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname='a'\n[variables]\nv = { default = 'x', required = true }\n[[trigger.http]]\nroute='/...'\ncomponent='c'\n[component.c]\nsource='c.wasm'",
                "cannot have a default",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname='a'\n[[trigger.http]]\nroute='/...'\ncomponent='c'\n[component.c]\nsource='c.wasm'\n[component.c.variables]\nx = '{{ unclosed'",
                "unterminated",
            ),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(text, Path::new(".")).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
    }

    #[test]
    fn required_variable_missing_is_an_error_naming_it() {
        let m = Manifest::parse(MANIFEST, Path::new("/app")).unwrap();
        let err = resolve_app_variables(&m.variables, &HashMap::new(), no_env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("redis_password"), "{msg}");
        assert!(msg.contains("SPIN_VARIABLE_REDIS_PASSWORD"), "{msg}");
    }

    #[test]
    fn variable_priority_override_env_default() {
        let m = Manifest::parse(MANIFEST, Path::new("/app")).unwrap();
        let env = |k: &str| match k {
            "SPIN_VARIABLE_REDIS_PASSWORD" => Some("from-env".to_string()),
            "SPIN_VARIABLE_REDIS_ADDRESS" => Some("10.0.0.1:6379".to_string()),
            _ => None,
        };
        let vars = resolve_app_variables(&m.variables, &HashMap::new(), env).unwrap();
        assert_eq!(vars["redis_password"].value, "from-env");
        assert_eq!(vars["redis_address"].value, "10.0.0.1:6379");
        assert_eq!(vars["origin_url"].value, "http://127.0.0.1:8080");

        let overrides =
            HashMap::from([("redis_address".to_string(), "127.0.0.1:7000".to_string())]);
        let vars = resolve_app_variables(&m.variables, &overrides, env).unwrap();
        assert_eq!(vars["redis_address"].value, "127.0.0.1:7000");
    }

    #[test]
    fn templates_expand_and_secrets_are_redacted() {
        let m = Manifest::parse(MANIFEST, Path::new("/app")).unwrap();
        let overrides = HashMap::from([("redis_password".to_string(), "hunter2".to_string())]);
        let vars = resolve_app_variables(&m.variables, &overrides, no_env).unwrap();
        let c = resolve_component("edge", &m.components["edge"], &vars, &m.variables).unwrap();
        let url = &c.variables["redis_url"];
        assert_eq!(url.value, "redis://edge:hunter2@127.0.0.1:6379");
        assert!(url.secret);
        assert!(!c.variables["origin_url"].secret);
        let debug = format!("{c:?} {vars:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            c.allowed_hosts
                .allows("redis://edge:x@127.0.0.1:6379", "redis")
        );
        assert!(
            c.allowed_hosts
                .allows("http://127.0.0.1:8080/users/1", "https")
        );
        assert!(
            !c.allowed_hosts
                .allows("http://127.0.0.1:8081/users/1", "https")
        );
    }

    #[test]
    fn template_parsing() {
        let t = Template::parse("a{{ x }}b{{y}}c").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["x", "y"]);
        let vars = HashMap::from([
            (
                "x".to_string(),
                Value {
                    value: "1".into(),
                    secret: false,
                },
            ),
            (
                "y".to_string(),
                Value {
                    value: "2".into(),
                    secret: false,
                },
            ),
        ]);
        assert_eq!(t.expand(&vars).unwrap().value, "a1b2c");
        assert_eq!(
            Template::parse("plain")
                .unwrap()
                .expand(&vars)
                .unwrap()
                .value,
            "plain"
        );
        assert!(Template::parse("{{ }}").is_err());
        assert!(Template::parse("{{ Upper }}").is_err());
        assert!(Template::parse("{{ x").is_err());
        assert!(Template::parse("{{ z }}").unwrap().expand(&vars).is_err());
    }

    /// As in Spin 4: an allow-list that stops parsing once its variables are expanded does not stop
    /// the application; it refuses every outbound connection. (Until this was found by running both,
    /// the host refused to start, where `spin up` serves and the edge answers its configuration error.)
    #[test]
    fn bad_allowed_host_after_expansion_refuses_every_connection() {
        let text = MANIFEST.replace(
            "origin_url = { default = \"http://127.0.0.1:8080\" }",
            "origin_url = { default = \"127.0.0.1:8080\" }",
        );
        let m = Manifest::parse(&text, Path::new("/app")).unwrap();
        let overrides = HashMap::from([("redis_password".to_string(), "pw".to_string())]);
        let vars = resolve_app_variables(&m.variables, &overrides, no_env).unwrap();
        let c = resolve_component("edge", &m.components["edge"], &vars, &m.variables).unwrap();
        assert!(!c.allowed_hosts.allows("redis://127.0.0.1:6379", "redis"));
        assert!(!c.allowed_hosts.allows("http://127.0.0.1:8080/", "http"));
    }

    /// A list without templates is checked at load, by Spin and by the host.
    #[test]
    fn a_bad_literal_allowed_host_is_an_error_at_start() {
        let text = MANIFEST.replace(
            "allowed_outbound_hosts = [\"redis://{{ redis_address }}\", \"{{origin_url}}\"]",
            "allowed_outbound_hosts = [\"127.0.0.1:8080\"]",
        );
        let m = Manifest::parse(&text, Path::new("/app")).unwrap();
        let overrides = HashMap::from([("redis_password".to_string(), "pw".to_string())]);
        let vars = resolve_app_variables(&m.variables, &overrides, no_env).unwrap();
        let err =
            resolve_component("edge", &m.components["edge"], &vars, &m.variables).unwrap_err();
        assert!(
            format!("{err:#}").contains("allowed_outbound_hosts"),
            "{err:#}"
        );
    }

    #[test]
    fn names() {
        for ok in ["a", "redis_address", "l1_ttl_ms", "x2"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "1a", "A", "a-b", "a__b", "a_", "_a"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
