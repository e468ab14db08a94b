//! `allowed_outbound_hosts` parsing and matching with Spin's semantics: an entry is
//! `<scheme>://<host>[:<port>]`, `*` may stand for the scheme, the host (or a `*.` subdomain prefix)
//! and the port; a missing port means the scheme's well-known port; a port may be a range `a..b`;
//! a host may be an IP network in CIDR form. Userinfo in the checked URL (a Redis password) is
//! ignored for matching and never logged.

use std::fmt;
use std::net::IpAddr;

use anyhow::{Context as _, bail, ensure};

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedHost {
    original: String,
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`.
    AnySubdomain(String),
    /// `self` / `self.alt`: relative requests to this application.
    ToSelf,
    Literal(url::Host),
    Cidr(IpAddr, u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortPattern {
    Any,
    Port(u16),
    Range(u16, u16),
}

impl fmt::Debug for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// The well-known port of a scheme, as Spin defines it.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one (already template-expanded) entry.
    pub fn parse(entry: &str) -> anyhow::Result<Self> {
        let original = entry.to_string();
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            if matches!(url, "*" | ":" | "" | "?") {
                bail!(
                    "{url:?} is not an allowed outbound host format: hosts must be in the form \
                     <scheme>://<host>[:<port>], with '*' wildcards allowed for each \
                     (use '*://*:*' to allow all outbound networking)"
                );
            }
            bail!("{url:?} does not contain a scheme (e.g., 'http://' or '*://')");
        };
        let (host, rest) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match rest.split_once('/') {
            Some((port, path)) => {
                ensure!(path.is_empty(), "{url:?} has a path but is not allowed to");
                port
            }
            None => rest,
        };
        let port = parse_port(port, scheme)
            .with_context(|| format!("invalid allowed host port {port:?} in {url:?}"))?;
        let scheme = parse_scheme(scheme)
            .with_context(|| format!("invalid allowed host scheme {scheme:?} in {url:?}"))?;
        let host = parse_host(host)
            .with_context(|| format!("invalid allowed host {host:?} in {url:?}"))?;
        Ok(Self {
            original,
            scheme,
            host,
            port,
        })
    }

    fn allows(&self, url: &OutboundUrl) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == url.scheme);
        scheme_ok && self.host_allows(&url.host) && self.port_allows(url.port, &url.scheme)
    }

    fn host_allows(&self, host: &str) -> bool {
        let Ok(host) = url::Host::parse(host) else {
            return false;
        };
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::AnySubdomain(suffix), url::Host::Domain(d)) => d.ends_with(suffix),
            (HostPattern::AnySubdomain(_), _) => false,
            (HostPattern::Literal(lit), host) => *lit == host,
            (HostPattern::Cidr(net, len), url::Host::Ipv4(ip)) => {
                cidr_contains(*net, *len, IpAddr::V4(ip))
            }
            (HostPattern::Cidr(net, len), url::Host::Ipv6(ip)) => {
                cidr_contains(*net, *len, IpAddr::V6(ip))
            }
            (HostPattern::Cidr(..), url::Host::Domain(_)) => false,
            (HostPattern::ToSelf, _) => false,
        }
    }

    fn port_allows(&self, port: Option<u16>, scheme: &str) -> bool {
        match self.port {
            PortPattern::Any => true,
            PortPattern::Port(p) => port.or_else(|| well_known_port(scheme)) == Some(p),
            PortPattern::Range(a, b) => port
                .or_else(|| well_known_port(scheme))
                .is_some_and(|p| (a..b).contains(&p)),
        }
    }
}

fn parse_scheme(scheme: &str) -> anyhow::Result<Option<String>> {
    if scheme == "*" {
        return Ok(None);
    }
    ensure!(!scheme.starts_with('{'), "scheme lists are not supported");
    ensure!(
        !scheme.is_empty() && scheme.chars().all(|c| c.is_alphabetic()),
        "only alphabetic characters are allowed"
    );
    Ok(Some(scheme.to_string()))
}

fn parse_host(host: &str) -> anyhow::Result<HostPattern> {
    let host = host.trim();
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host == "self" || host == "self.alt" {
        return Ok(HostPattern::ToSelf);
    }
    ensure!(!host.starts_with('{'), "host lists are not yet supported");
    if let Some((ip, len)) = host.split_once('/')
        && let (Ok(ip), Ok(len)) = (ip.parse::<IpAddr>(), len.parse::<u8>())
    {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        ensure!(len <= max, "CIDR prefix length {len} is too long");
        return Ok(HostPattern::Cidr(ip, len));
    }
    let host = host.trim_end_matches('/');
    ensure!(!host.contains('/'), "must not include a path");
    ensure!(!host.is_empty(), "the host is empty");
    if let Some(domain) = host.strip_prefix("*.") {
        ensure!(
            !domain.contains('*'),
            "wildcards are allowed only as prefixes"
        );
        return Ok(HostPattern::AnySubdomain(format!(".{domain}")));
    }
    ensure!(
        !host.contains('*'),
        "wildcards are allowed only as subdomains"
    );
    Ok(HostPattern::Literal(url::Host::parse(host)?))
}

fn parse_port(port: &str, scheme: &str) -> anyhow::Result<PortPattern> {
    if port.is_empty() {
        return well_known_port(scheme)
            .map(PortPattern::Port)
            .with_context(|| {
                format!("no port was provided and the scheme {scheme:?} has no known default port")
            });
    }
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    ensure!(!port.starts_with('{'), "port lists are not yet supported");
    if let Some((a, b)) = port.split_once("..") {
        let a = a
            .parse()
            .with_context(|| format!("port range {port:?} has a non-number"))?;
        let b = b
            .parse()
            .with_context(|| format!("port range {port:?} has a non-number"))?;
        return Ok(PortPattern::Range(a, b));
    }
    Ok(PortPattern::Port(port.parse().with_context(|| {
        format!("port {port:?} is not a number")
    })?))
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

/// The resolved `allowed_outbound_hosts` of one component.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    hosts: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses expanded entries; Spin refuses `insecure:allow-all`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        if entries.len() == 1 && entries[0].as_ref() == "insecure:allow-all" {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead");
        }
        let hosts = entries
            .iter()
            .map(|e| AllowedHost::parse(e.as_ref()))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { hosts })
    }

    /// Whether `url` (scheme defaulting to `default_scheme` when absent) may be reached.
    pub fn allows(&self, url: &str, default_scheme: &str) -> bool {
        match OutboundUrl::parse(url, default_scheme) {
            Some(url) => self.hosts.iter().any(|h| h.allows(&url)),
            None => false,
        }
    }

    /// Whether a URL with this scheme, host and port may be reached.
    pub fn allows_parts(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let url = OutboundUrl {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
        };
        self.hosts.iter().any(|h| h.allows(&url))
    }
}

/// The parts of an outbound URL that matter for matching.
#[derive(Debug)]
struct OutboundUrl {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OutboundUrl {
    fn parse(url: &str, default_scheme: &str) -> Option<Self> {
        let stripped = strip_userinfo(url);
        let parsed = match url::Url::parse(&stripped) {
            Ok(u) if u.has_host() => u,
            _ => url::Url::parse(&format!("{default_scheme}://{stripped}")).ok()?,
        };
        Some(Self {
            scheme: parsed.scheme().to_string(),
            host: parsed.host_str()?.to_string(),
            port: parsed.port(),
        })
    }
}

/// Removes `user:password@` from a URL (or a bare `user:password@host:port` address).
pub fn strip_userinfo(url: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// A loggable form of an outbound URL: `scheme://host:port`, never userinfo, path or query.
pub fn redact_url(url: &str, default_scheme: &str) -> String {
    match OutboundUrl::parse(url, default_scheme) {
        Some(u) => match u.port {
            Some(p) => format!("{}://{}:{p}", u.scheme, u.host),
            None => format!("{}://{}", u.scheme, u.host),
        },
        None => "<unparsable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    #[test]
    fn exact_scheme_host_port() {
        let h = hosts(&["http://127.0.0.1:8080", "redis://127.0.0.1:6379"]);
        assert!(h.allows("http://127.0.0.1:8080/users/1?x=1", "https"));
        assert!(!h.allows("http://127.0.0.1:8081/users/1", "https"));
        assert!(!h.allows("https://127.0.0.1:8080/", "https"));
        assert!(!h.allows("http://localhost:8080/", "https"));
        assert!(h.allows("redis://127.0.0.1:6379", "redis"));
        assert!(!h.allows("redis://127.0.0.1:6380", "redis"));
        assert!(!h.allows("http://example.com/", "https"));
    }

    #[test]
    fn default_ports() {
        let h = hosts(&["https://example.com", "redis://cache.internal"]);
        assert!(h.allows("https://example.com/x", "https"));
        assert!(h.allows("https://example.com:443/x", "https"));
        assert!(!h.allows("https://example.com:8443/x", "https"));
        assert!(!h.allows("http://example.com/x", "https"));
        assert!(h.allows("redis://cache.internal", "redis"));
        assert!(h.allows("redis://cache.internal:6379/0", "redis"));
        assert!(!h.allows("redis://cache.internal:6380", "redis"));
    }

    #[test]
    fn userinfo_is_ignored() {
        let h = hosts(&["redis://127.0.0.1:6379"]);
        assert!(h.allows("redis://edge:s3cr%2Ft@127.0.0.1:6379", "redis"));
        assert!(h.allows("redis://edge:p@ss@127.0.0.1:6379/0", "redis"));
        assert!(!h.allows("redis://edge:pw@10.0.0.1:6379", "redis"));
        assert_eq!(
            redact_url("redis://edge:hunter2@127.0.0.1:6379/0", "redis"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(strip_userinfo("edge:pw@host:1"), "host:1");
    }

    #[test]
    fn bare_address_takes_default_scheme() {
        let h = hosts(&["redis://127.0.0.1:6379"]);
        assert!(h.allows("127.0.0.1:6379", "redis"));
        assert!(!h.allows("127.0.0.1:6379", "http"));
    }

    #[test]
    fn wildcards() {
        let h = hosts(&[
            "*://*.example.com:*",
            "http://localhost:*",
            "https://*:8443",
        ]);
        assert!(h.allows("https://api.example.com:1234/", "https"));
        assert!(h.allows("redis://a.b.example.com:6379", "redis"));
        assert!(!h.allows("https://example.com/", "https"));
        assert!(h.allows("http://localhost:3000/", "https"));
        assert!(!h.allows("https://localhost:3000/", "https"));
        assert!(h.allows("https://anything.test:8443/", "https"));
        assert!(!h.allows("https://anything.test/", "https"));
        let all = hosts(&["*://*:*"]);
        assert!(all.allows("http://10.1.2.3:1/", "https"));
    }

    #[test]
    fn ranges_and_cidr() {
        let h = hosts(&["http://10.0.0.0/8:8000..8100"]);
        assert!(h.allows("http://10.1.2.3:8000", "http"));
        assert!(h.allows("http://10.1.2.3:8099", "http"));
        assert!(!h.allows("http://10.1.2.3:8100", "http"));
        assert!(!h.allows("http://11.1.2.3:8000", "http"));
    }

    #[test]
    fn invalid_entries() {
        for bad in [
            "example.com",
            "*",
            "http://example.com/path",
            "http://exa*mple.com",
            "http://example.com:port",
            "foo://example.com",
            "ht1p://example.com:1",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} should not parse");
        }
        assert!(AllowedHosts::parse(&["insecure:allow-all"]).is_err());
    }
}
