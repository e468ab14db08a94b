//! The edge's settings, read from Spin variables once per instance.
//!
//! Spin is the only configuration source (see `spin.toml`): the variable names are [`VARIABLES`]. Parsing
//! is separate from reading ([`Config::from_lookup`] takes any lookup function) so it is tested natively.
//! A missing or malformed value is a [`ConfigError`] that names the variable and what was expected, never
//! the value itself: two of the variables are secrets.

use std::fmt;
use std::time::Duration;

use std::rc::Rc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::auth::{Expectations, Verifier};
use crate::budget::BudgetSettings;
use crate::key_policy::{KeyPolicy, KeySource};
use crate::ratelimit::WriteLimit;

/// Every Spin variable the edge reads, as declared under `[component.aside-edge.variables]` (defined in
/// `aside_shared::settings`, where the launchers check their names against it).
pub use aside_shared::settings::EDGE_VARIABLES as VARIABLES;

/// Subjects the write limit remembers at most per instance (see [`crate::ratelimit`]).
const MAX_LIMITED_CALLERS: usize = 10_000;

/// Characters escaped in the user and password of the Redis URL: everything but RFC 3986 "unreserved".
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Tier-1 bounds. A zero in any of them turns tier 1 off (nothing is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Limits {
    pub max_entries: usize,
    /// Approximate: see `copy::ProfileEntry::weight`.
    pub max_bytes: usize,
    /// How long an entry may be served after it was filled: the staleness bound of the edge.
    pub ttl: Duration,
}

/// The process-wide tier (see [`crate::shared_tier`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTierSettings {
    /// The key-value store's label (`shared_tier_store`); empty: no shared tier.
    pub store: String,
    /// How many slots (keys) it uses at most (`shared_tier_slots`).
    pub slots: u32,
}

/// The invalidation feed (see [`crate::feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// A request that finds the feed read longer ago than this reads it (`feed_poll_ms`); zero: the
    /// feed is off and tier 1 keeps today's TTL rule.
    pub poll: Duration,
    /// Past this since the last good read or the last entry seen (`feed_max_lag_ms`, capped at
    /// `l1_ttl_ms`), the feed is late and copies fall back to the TTL rule.
    pub max_lag: Duration,
}

impl FeedSettings {
    pub fn is_on(&self) -> bool {
        !self.poll.is_zero()
    }
}

/// A circuit breaker's settings (see [`crate::backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open it (at least 1).
    pub threshold: u32,
    /// How long the backend is skipped once open, before one request probes it.
    pub backoff: Duration,
}

/// Client authentication (`auth`): on (the default: bearer JWTs checked against the identity provider's
/// keys), or turned off explicitly for a private deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// Every request under `/users` needs a token the verifier accepts (see [`crate::auth`]).
    Jwt(Rc<AuthSettings>),
    /// `auth = "off"`: no client is authenticated; every answer says `x-aside-auth: off`.
    Off,
}

/// Client authentication's settings (see [`crate::keys`] and [`crate::tokens`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// `auth_issuer`, `auth_audience`, `auth_leeway_s`, `auth_user_claim`.
    pub expectations: Expectations,
    /// `auth_jwks` (static), else `auth_jwks_url`, else discovery from `auth_issuer`.
    pub source: KeySource,
    /// `auth_keys_min_refresh_s`, `auth_keys_max_refresh_s`, `auth_keys_max_stale_s`.
    pub policy: KeyPolicy,
    /// Verified tokens remembered per instance (and slots in the process-wide store):
    /// `auth_token_cache_entries` (0: none remembered).
    pub token_cache_entries: u32,
    /// The longest a verified token is remembered: `auth_token_cache_s`.
    pub token_cache_max_age: Duration,
}

/// The parsed settings. `Debug` hides the secrets.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// `redis://user:password@host:port/db` (`rediss://` for TLS), user and password percent-encoded.
    /// Secret.
    pub redis_url: String,
    /// `redis_mode`: one Redis (or the primary Sentinel names) at `redis_address`, or a Redis Cluster
    /// whose seed node is `redis_address` (crate::cluster).
    pub redis_mode: RedisMode,
    /// `redis_read_from = replica`: on a cluster, reads go to a replica of the slot's primary.
    pub redis_read_replicas: bool,
    /// `redis_address`: `host:port` of Redis, or of the cluster's seed node.
    pub redis_address: String,
    /// `scheme://user:password@` of every Redis URL (percent-encoded). Secret.
    redis_url_prefix: String,
    /// The raw password, kept only to scrub it from error text before logging.
    redis_password: String,
    /// `scheme://authority` of the origin, without a trailing slash.
    pub origin_url: String,
    /// The bearer token the origin expects from the edge. Secret.
    pub origin_token: String,
    pub l1: L1Limits,
    pub redis_timeout: Duration,
    /// Redis connections an instance keeps open at most (`redis_max_connections`; see [`crate::l2`]).
    pub redis_max_connections: usize,
    pub origin_timeout: Duration,
    /// The Redis breaker: `redis_failure_threshold`, `redis_backoff_ms`.
    pub redis_breaker: BreakerSettings,
    /// The origin breaker: `origin_failure_threshold`, `origin_backoff_ms`.
    pub origin_breaker: BreakerSettings,
    /// End to end, from the request reaching the component to its answer: the Redis read and the origin
    /// call get at most what is left of it.
    pub request_budget: Duration,
    /// How long after its soft expiry tier 1 keeps a copy, to answer with (`x-cache: STALE`) when the
    /// origin cannot; the origin's `stale-if-error` may shorten it. 0: no stale copies in tier 1.
    pub l1_stale: Duration,
    /// XFetch's beta: how eagerly a hit close to its soft expiry is refreshed early. 0 turns it off.
    pub xfetch_beta: f64,
    /// Client authentication: `auth`, `auth_jwks`, `auth_issuer`, `auth_audience`, `auth_leeway_s`,
    /// `auth_user_claim` (the last five read only when it is on).
    pub auth: Auth,
    /// Writes per caller: `write_rate_per_min` (0: no limit), `write_burst`.
    pub write_limit: WriteLimit,
    /// The process-wide tier: `shared_tier_store`, `shared_tier_slots`.
    pub shared_tier: SharedTierSettings,
    /// Reads sent to the origin: `origin_budget_per_s` (0: no budget), `origin_budget_burst`.
    pub origin_budget: BudgetSettings,
    /// Where the budget is kept per process (`origin_budget_store`, a key-value store's label); empty:
    /// per instance.
    pub origin_budget_store: String,
    /// The invalidation feed: `feed_poll_ms`, `feed_max_lag_ms`.
    pub feed: FeedSettings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &"<secret>")
            .field("redis_mode", &self.redis_mode)
            .field("redis_read_replicas", &self.redis_read_replicas)
            .field("redis_address", &self.redis_address)
            .field("origin_url", &self.origin_url)
            .field("origin_token", &"<secret>")
            .field("l1", &self.l1)
            .field("redis_timeout", &self.redis_timeout)
            .field("redis_max_connections", &self.redis_max_connections)
            .field("origin_timeout", &self.origin_timeout)
            .field("redis_breaker", &self.redis_breaker)
            .field("origin_breaker", &self.origin_breaker)
            .field("request_budget", &self.request_budget)
            .field("l1_stale", &self.l1_stale)
            .field("xfetch_beta", &self.xfetch_beta)
            .field("auth", &self.auth)
            .field("write_limit", &self.write_limit)
            .field("shared_tier", &self.shared_tier)
            .field("origin_budget", &self.origin_budget)
            .field("origin_budget_store", &self.origin_budget_store)
            .field("feed", &self.feed)
            .finish()
    }
}

/// How the edge reaches tier 2 (`redis_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `single`: every command goes to `redis_address`.
    Single,
    /// `cluster`: each key's command goes to the node that serves its slot, as the slot map learnt
    /// from the cluster says (crate::cluster); `redis_address` is only where the map is first asked.
    Cluster,
}

/// Why the configuration cannot be used. The message names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The variable has no value (no default in `spin.toml` and none given).
    Missing(&'static str),
    /// The value does not parse; `expected` says what would.
    Malformed {
        name: &'static str,
        expected: &'static str,
    },
    /// The variables provider failed (e.g. a vault is unreachable). Not cached: the next request retries.
    Provider(&'static str),
}

impl ConfigError {
    /// Whether a later read may succeed without changing the configuration.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConfigError::Provider(_))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing(name) => write!(f, "configuration variable `{name}` is not set"),
            ConfigError::Malformed { name, expected } => {
                write!(
                    f,
                    "configuration variable `{name}` is malformed: expected {expected}"
                )
            }
            ConfigError::Provider(name) => {
                write!(f, "configuration variable `{name}` could not be read")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// What a variable lookup can answer: a value, "not set", or a provider failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Value(String),
    Missing,
    ProviderFailed,
}

impl Config {
    /// Parses every variable through `lookup` (called once per name in [`VARIABLES`]).
    ///
    /// Long on purpose: one flat list of every variable, parsed in the order of [`VARIABLES`], so that a
    /// setting and its checks are found in one place.
    pub fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Lookup,
    ) -> Result<Self, ConfigError> {
        let mut get = |name: &'static str| match lookup(name) {
            Lookup::Value(v) => Ok((name, v)),
            Lookup::Missing => Err(ConfigError::Missing(name)),
            Lookup::ProviderFailed => Err(ConfigError::Provider(name)),
        };

        let redis_address = parse_redis_address(get("redis_address")?)?;
        let redis_mode = parse_redis_mode(get("redis_mode")?)?;
        let redis_database = parse_number(get("redis_database")?, 0, i32::MAX as u64, DB)?;
        let redis_read_replicas = parse_read_from(get("redis_read_from")?)?;
        if redis_read_replicas && redis_mode != RedisMode::Cluster {
            // One node: point redis_address at the replica itself (as `up --redis-ha` does).
            return Err(malformed("redis_read_from", READ_FROM_SINGLE));
        }
        if redis_mode == RedisMode::Cluster && redis_database != 0 {
            // A cluster has database 0 only: refuse rather than read an empty database.
            return Err(malformed("redis_database", DB_CLUSTER));
        }
        let redis_user = parse_non_empty(get("redis_user")?)?;
        let redis_password = parse_non_empty(get("redis_password")?)?;
        let origin_url = parse_origin_url(get("origin_url")?)?;
        let origin_token = parse_token(get("origin_token")?)?;
        let l1 = L1Limits {
            max_entries: parse_number(get("l1_max_entries")?, 0, 10_000_000, COUNT)? as usize,
            max_bytes: parse_number(get("l1_max_bytes")?, 0, 1 << 30, BYTES)? as usize,
            ttl: millis(parse_number(get("l1_ttl_ms")?, 0, 86_400_000, MS_DAY)?),
        };
        let redis_timeout = millis(parse_number(
            get("redis_timeout_ms")?,
            1,
            60_000,
            MS_MINUTE,
        )?);
        let redis_backoff = millis(parse_number(
            get("redis_backoff_ms")?,
            0,
            3_600_000,
            MS_HOUR,
        )?);
        let origin_timeout = millis(parse_number(
            get("origin_timeout_ms")?,
            1,
            300_000,
            MS_5MIN,
        )?);
        let request_budget = millis(parse_number(
            get("request_budget_ms")?,
            1,
            300_000,
            MS_5MIN,
        )?);
        let redis_breaker = BreakerSettings {
            threshold: parse_number(get("redis_failure_threshold")?, 1, 1000, THRESHOLD)? as u32,
            backoff: redis_backoff,
        };
        let origin_breaker = BreakerSettings {
            threshold: parse_number(get("origin_failure_threshold")?, 1, 1000, THRESHOLD)? as u32,
            backoff: millis(parse_number(
                get("origin_backoff_ms")?,
                0,
                3_600_000,
                MS_HOUR,
            )?),
        };
        let l1_stale = millis(parse_number(get("l1_stale_ms")?, 0, 86_400_000, MS_DAY)?);
        let xfetch_beta = parse_beta(get("xfetch_beta")?)?;
        let redis_scheme = parse_redis_scheme(get("redis_scheme")?)?;
        let auth = match parse_switch(get("auth")?)? {
            false => Auth::Off,
            true => {
                let expectations = Expectations {
                    issuer: parse_non_empty(get("auth_issuer")?)?,
                    audience: parse_non_empty(get("auth_audience")?)?,
                    leeway_secs: parse_number(get("auth_leeway_s")?, 0, 3600, LEEWAY)?,
                    user_claim: parse_claim_name(get("auth_user_claim")?)?,
                };
                let (name, jwks) = get("auth_jwks")?;
                let jwks_url = get("auth_jwks_url")?;
                let source = if !jwks.trim().is_empty() {
                    let verifier = Verifier::from_jwks(&jwks, expectations.clone())
                        .map_err(|e| malformed(name, e.expected()))?;
                    KeySource::Static(Rc::new(verifier))
                } else if !jwks_url.1.trim().is_empty() {
                    KeySource::JwksUrl(parse_fetch_url(jwks_url)?)
                } else {
                    parse_fetch_url(("auth_issuer", expectations.issuer.clone()))?;
                    KeySource::Discovery
                };
                let min_refresh =
                    parse_number(get("auth_keys_min_refresh_s")?, 1, 86_400, SECS_DAY_1)?;
                let max_refresh =
                    parse_number(get("auth_keys_max_refresh_s")?, 1, 604_800, SECS_WEEK_1)?;
                let policy = KeyPolicy {
                    min_refresh: Duration::from_secs(min_refresh),
                    max_refresh: Duration::from_secs(max_refresh.max(min_refresh)),
                    max_stale: Duration::from_secs(parse_number(
                        get("auth_keys_max_stale_s")?,
                        0,
                        2_592_000,
                        SECS_MONTH,
                    )?),
                };
                Auth::Jwt(Rc::new(AuthSettings {
                    expectations,
                    source,
                    policy,
                    token_cache_entries: parse_number(
                        get("auth_token_cache_entries")?,
                        0,
                        1_000_000,
                        ENTRIES,
                    )? as u32,
                    token_cache_max_age: Duration::from_secs(parse_number(
                        get("auth_token_cache_s")?,
                        0,
                        86_400,
                        SECS_DAY_0,
                    )?),
                }))
            }
        };
        let write_limit = WriteLimit {
            per_minute: parse_number(get("write_rate_per_min")?, 0, 1_000_000, RATE)? as u32,
            burst: parse_number(get("write_burst")?, 1, 1_000_000, BURST)? as u32,
            max_callers: MAX_LIMITED_CALLERS,
        };
        let shared_tier = SharedTierSettings {
            store: parse_store_label(get("shared_tier_store")?)?,
            slots: parse_number(get("shared_tier_slots")?, 1, 1_000_000, SLOTS)? as u32,
        };
        let origin_budget = BudgetSettings {
            per_second: parse_number(get("origin_budget_per_s")?, 0, 1_000_000, BUDGET_RATE)?
                as u32,
            burst: parse_number(get("origin_budget_burst")?, 1, 1_000_000, BUDGET_BURST)? as u32,
        };
        let origin_budget_store = parse_store_label(get("origin_budget_store")?)?;
        let redis_max_connections =
            parse_number(get("redis_max_connections")?, 1, 64, CONNECTIONS)? as usize;
        let feed_poll = millis(parse_number(get("feed_poll_ms")?, 0, 60_000, MS_POLL)?);
        let feed_max_lag = millis(parse_number(
            get("feed_max_lag_ms")?,
            1,
            86_400_000,
            MS_LAG,
        )?);
        let feed = FeedSettings {
            // Tier 1 off (a zero TTL): no copy to keep fresh, and none may outlive the TTL rule.
            poll: if l1.ttl.is_zero() {
                Duration::ZERO
            } else {
                feed_poll
            },
            // A late feed must never let a copy be older than the TTL rule allows.
            max_lag: feed_max_lag.min(l1.ttl).max(feed_poll),
        };

        let redis_url_prefix = format!(
            "{redis_scheme}://{}:{}@",
            utf8_percent_encode(&redis_user, USERINFO),
            utf8_percent_encode(&redis_password, USERINFO),
        );
        let redis_url = format!("{redis_url_prefix}{redis_address}/{redis_database}");
        Ok(Config {
            redis_url,
            redis_mode,
            redis_read_replicas,
            redis_address,
            redis_url_prefix,
            redis_password,
            origin_url,
            origin_token,
            l1,
            redis_timeout,
            redis_max_connections,
            origin_timeout,
            redis_breaker,
            origin_breaker,
            request_budget,
            l1_stale,
            xfetch_beta,
            auth,
            write_limit,
            shared_tier,
            origin_budget,
            origin_budget_store,
            feed,
        })
    }

    /// The Redis URL of the cluster node at `address` (`host:port`, as the cluster names it), with
    /// the same scheme and user as `redis_url` (a cluster has database 0 only).
    pub fn redis_url_of(&self, address: &str) -> String {
        format!("{}{address}/0", self.redis_url_prefix)
    }

    /// `text` with the Redis password (raw and encoded) and the origin token replaced, so an error
    /// message from a backend can be logged.
    pub fn scrub(&self, text: &str) -> String {
        let encoded = utf8_percent_encode(&self.redis_password, USERINFO).to_string();
        let mut out = text.to_string();
        for secret in [&self.redis_password, &encoded, &self.origin_token] {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "<secret>");
            }
        }
        out
    }
}

const DB: &str = "a Redis logical database number from 0 to 2147483647";
const READ_FROM_SINGLE: &str =
    "primary with redis_mode = single (to read a replica there, make redis_address the replica's)";
const DB_CLUSTER: &str = "0 with redis_mode = cluster (a Redis Cluster has database 0 only)";
const COUNT: &str = "a whole number from 0 to 10000000";
const BYTES: &str = "a whole number of bytes from 0 to 1073741824";
const MS_DAY: &str = "a whole number of milliseconds from 0 to 86400000";
const MS_MINUTE: &str = "a whole number of milliseconds from 1 to 60000";
const MS_POLL: &str = "a whole number of milliseconds from 0 (off) to 60000";
const MS_LAG: &str = "a whole number of milliseconds from 1 to 86400000";
const MS_HOUR: &str = "a whole number of milliseconds from 0 to 3600000";
const MS_5MIN: &str = "a whole number of milliseconds from 1 to 300000";
const THRESHOLD: &str = "a whole number of consecutive failures from 1 to 1000";
const LEEWAY: &str = "a whole number of seconds from 0 to 3600";
const RATE: &str = "a whole number of writes a minute from 0 (no limit) to 1000000";
const BURST: &str = "a whole number of writes from 1 to 1000000";
const BUDGET_RATE: &str = "a whole number of origin reads a second from 0 (no budget) to 1000000";
const BUDGET_BURST: &str = "a whole number of origin reads from 1 to 1000000";
const SLOTS: &str = "a whole number of slots from 1 to 1000000";
const CONNECTIONS: &str = "a whole number of connections from 1 to 64";
const SECS_DAY_1: &str = "a whole number of seconds from 1 to 86400";
const SECS_DAY_0: &str = "a whole number of seconds from 0 (tokens not remembered) to 86400";
const SECS_WEEK_1: &str = "a whole number of seconds from 1 to 604800";
const SECS_MONTH: &str = "a whole number of seconds from 0 to 2592000";
const ENTRIES: &str = "a whole number of entries from 0 (none remembered) to 1000000";
const BETA: &str = "a decimal number from 0 to 100 (e.g. 1.0; 0 turns early refresh off)";

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn malformed(name: &'static str, expected: &'static str) -> ConfigError {
    ConfigError::Malformed { name, expected }
}

fn parse_number(
    (name, value): (&'static str, String),
    min: u64,
    max: u64,
    expected: &'static str,
) -> Result<u64, ConfigError> {
    let value = value.trim();
    let digits =
        !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .filter(|n| (min..=max).contains(n))
        .ok_or(malformed(name, expected))
}

/// XFetch's beta: a plain decimal (`1`, `1.5`, `.5`), no sign, exponent, `inf` or `NaN`.
fn parse_beta((name, value): (&'static str, String)) -> Result<f64, ConfigError> {
    let value = value.trim();
    let plain = !value.is_empty()
        && value.len() <= 20
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().filter(|&b| b == b'.').count() <= 1
        && value.bytes().any(|b| b.is_ascii_digit());
    plain
        .then(|| value.parse::<f64>().ok())
        .flatten()
        .filter(|beta| (0.0..=100.0).contains(beta))
        .ok_or(malformed(name, BETA))
}

fn parse_non_empty((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(malformed(
            name,
            "a non-empty value without control characters",
        ));
    }
    Ok(value)
}

/// A key-value store label as Spin accepts them (lower-case letters, digits, `-` and `_`), or empty
/// (no shared tier).
fn parse_store_label((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    let value = value.trim();
    let ok = value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(malformed(
            name,
            "a key-value store label (lower-case letters, digits, - and _) or empty (off)",
        ));
    }
    Ok(value.to_string())
}

/// `on` or `off`. Anything else is refused, so a typo never turns authentication off.
fn parse_switch((name, value): (&'static str, String)) -> Result<bool, ConfigError> {
    match value.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(malformed(name, "on or off")),
    }
}

/// A JWT claim name: 1 to 64 visible ASCII characters.
fn parse_claim_name((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    let value = value.trim();
    if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(name, "a claim name such as sub or uid"));
    }
    Ok(value.to_string())
}

/// `host:port` (IPv6 hosts in brackets): it goes verbatim into the Redis URL and must match the
/// `allowed_outbound_hosts` entry `redis://{{ redis_address }}`.
fn parse_redis_address((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    let value = value.trim();
    let expected = "host:port";
    let (host, port) = value.rsplit_once(':').ok_or(malformed(name, expected))?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    let port_ok =
        port.parse::<u16>().is_ok_and(|p| p != 0) && port.bytes().all(|b| b.is_ascii_digit());
    if host_ok && port_ok {
        Ok(value.to_string())
    } else {
        Err(malformed(name, expected))
    }
}

/// `single` or `cluster` ([`RedisMode`]).
fn parse_redis_mode((name, value): (&'static str, String)) -> Result<RedisMode, ConfigError> {
    match value.trim() {
        "single" => Ok(RedisMode::Single),
        "cluster" => Ok(RedisMode::Cluster),
        _ => Err(malformed(
            name,
            "single (one Redis, or Sentinel's primary) or cluster (a Redis Cluster)",
        )),
    }
}

/// `primary` or `replica`: whether a cluster's reads go to a replica.
fn parse_read_from((name, value): (&'static str, String)) -> Result<bool, ConfigError> {
    match value.trim() {
        "primary" => Ok(false),
        "replica" => Ok(true),
        _ => Err(malformed(name, "primary or replica")),
    }
}

/// `redis` (plain TCP) or `rediss` (TLS: Spin verifies the server's certificate and host name against
/// its trust store). A scheme rather than a yes/no switch because `spin.toml` builds the
/// `allowed_outbound_hosts` entry `{{ redis_scheme }}://{{ redis_address }}` from it: the component may
/// then reach Redis only the way it is configured to, never in clear when TLS was asked for.
fn parse_redis_scheme((name, value): (&'static str, String)) -> Result<&'static str, ConfigError> {
    match value.trim() {
        "redis" => Ok("redis"),
        "rediss" => Ok("rediss"),
        _ => Err(malformed(name, "redis (plain TCP) or rediss (TLS)")),
    }
}

/// `http://host:port` or `https://host`, nothing after the authority but an optional `/`.
fn parse_origin_url((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    let expected = "an http:// or https:// URL without path, query or credentials";
    let value = value.trim();
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or(malformed(name, expected))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let authority_ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if !authority_ok {
        return Err(malformed(name, expected));
    }
    Ok(value[..value.len() - (rest.len() - authority.len())].to_string())
}

/// An `http://` or `https://` URL the keys are fetched from (`auth_jwks_url`, or the issuer for
/// discovery): a host, an optional port and path, no credentials, query or fragment.
fn parse_fetch_url((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    let expected = "an http:// or https:// URL without credentials, query or fragment \
                    (the issuer for discovery, or auth_jwks_url, or a static auth_jwks)";
    let value = value.trim();
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or(malformed(name, expected))?;
    let authority = rest.split('/').next().unwrap_or("");
    let authority_ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    let rest_ok = rest
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"?#@\\".contains(&b));
    if !authority_ok || !rest_ok {
        return Err(malformed(name, expected));
    }
    Ok(value.to_string())
}

/// A bearer token: visible ASCII only, so it is a valid header value.
fn parse_token((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(
            name,
            "a non-empty token of visible ASCII characters",
        ));
    }
    Ok(value)
}

/// What loading the configuration cost a new instance, in ms: reading the variables from the host,
/// and parsing them (a static `auth_jwks` included). `server-timing: start_vars, start_parse`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadCost {
    pub vars_ms: f64,
    pub parse_ms: f64,
}

/// Reads every variable from Spin and parses them.
///
/// One host call first: `wasi:config/store`'s `get-all` resolves every variable of the component at
/// once (Spin links it for every component). Only when that fails (a variables provider failed, or a
/// variable cannot be resolved) are the variables read one by one, so that the error names the variable
/// exactly as before.
pub async fn load() -> (Result<Config, ConfigError>, LoadCost) {
    let reading = crate::clock::now();
    let values = match read_all() {
        Some(values) => values,
        None => read_each().await,
    };
    let parsing = crate::clock::now();
    let config = Config::from_lookup(|name| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Lookup::Missing, |(_, v)| v.clone())
    });
    let cost = LoadCost {
        vars_ms: (parsing.saturating_sub(reading)) as f64 / 1e6,
        parse_ms: crate::clock::millis_since(parsing),
    };
    (config, cost)
}

/// Every variable in one host call (`wasi:config/store.get-all`), or `None` when the host refuses it.
#[cfg(target_arch = "wasm32")]
fn read_all() -> Option<Vec<(&'static str, Lookup)>> {
    use spin_sdk::experimental::wasi::config::store::get_all;
    let all = get_all().ok()?;
    Some(from_all(all))
}

#[cfg(not(target_arch = "wasm32"))]
fn read_all() -> Option<Vec<(&'static str, Lookup)>> {
    None
}

/// The variables the edge reads, out of every pair `get-all` answered; a name it did not answer is
/// missing (as `get` would say).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn from_all(all: Vec<(String, String)>) -> Vec<(&'static str, Lookup)> {
    let mut all = all;
    VARIABLES
        .iter()
        .map(|name| {
            let value = all
                .iter()
                .position(|(n, _)| n == name)
                .map_or(Lookup::Missing, |i| Lookup::Value(all.swap_remove(i).1));
            (*name, value)
        })
        .collect()
}

/// Every variable, one host call each (all at once): the host resolves them concurrently.
async fn read_each() -> Vec<(&'static str, Lookup)> {
    use spin_sdk::variables::{Error, get};
    futures::future::join_all(VARIABLES.iter().map(|name| async move {
        let value = match get(name).await {
            Ok(v) => Lookup::Value(v),
            Err(Error::Undefined(_)) | Err(Error::InvalidName(_)) => Lookup::Missing,
            Err(Error::Provider(_)) | Err(Error::Other(_)) => Lookup::ProviderFailed,
        };
        (*name, value)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(name: &str) -> Option<&'static str> {
        Some(match name {
            "redis_address" => "127.0.0.1:6379",
            "redis_database" => "0",
            "redis_mode" => "single",
            "redis_read_from" => "primary",
            "redis_user" => "edge",
            "redis_password" => "p@ss:w/rd",
            "origin_url" => "http://127.0.0.1:8080",
            "origin_token" => "tok3n-value",
            "l1_max_entries" => "10000",
            "l1_max_bytes" => "8388608",
            "l1_ttl_ms" => "2000",
            "redis_timeout_ms" => "250",
            "redis_backoff_ms" => "2000",
            "origin_timeout_ms" => "2000",
            "request_budget_ms" => "2000",
            "redis_failure_threshold" => "2",
            "origin_failure_threshold" => "3",
            "origin_backoff_ms" => "2000",
            "l1_stale_ms" => "600000",
            "xfetch_beta" => "1.0",
            "redis_scheme" => "redis",
            "auth" => "on",
            "auth_issuer" => "https://id.example",
            "auth_audience" => "aside",
            "auth_leeway_s" => "60",
            "auth_user_claim" => "sub",
            "auth_jwks" => TEST_JWKS,
            "auth_jwks_url" => "",
            "auth_keys_min_refresh_s" => "60",
            "auth_keys_max_refresh_s" => "3600",
            "auth_keys_max_stale_s" => "86400",
            "auth_token_cache_entries" => "10000",
            "auth_token_cache_s" => "300",
            "write_rate_per_min" => "60",
            "write_burst" => "10",
            "shared_tier_store" => "",
            "shared_tier_slots" => "131072",
            "origin_budget_per_s" => "500",
            "origin_budget_burst" => "500",
            "origin_budget_store" => "",
            "redis_max_connections" => "16",
            "feed_poll_ms" => "100",
            "feed_max_lag_ms" => "1000",
            _ => return None,
        })
    }

    /// One public Ed25519 key (RFC 8037 appendix A.1).
    const TEST_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn with(overrides: &[(&str, Option<&str>)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            let value = overrides
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(defaults(name), |(_, v)| *v);
            value.map_or(Lookup::Missing, |v| Lookup::Value(v.to_string()))
        })
    }

    #[test]
    fn redis_mode_is_single_by_default_and_cluster_reads_database_0_on_any_node() {
        let c = with(&[]).unwrap();
        assert_eq!(c.redis_mode, RedisMode::Single);
        assert_eq!(c.redis_address, "127.0.0.1:6379");
        let c = with(&[
            ("redis_mode", Some(" cluster ")),
            ("redis_address", Some("10.0.3.7:6379")),
        ])
        .unwrap();
        assert_eq!(c.redis_mode, RedisMode::Cluster);
        assert_eq!(c.redis_url, "redis://edge:p%40ss%3Aw%2Frd@10.0.3.7:6379/0");
        assert_eq!(
            c.redis_url_of("10.0.3.9:7001"),
            "redis://edge:p%40ss%3Aw%2Frd@10.0.3.9:7001/0"
        );
        assert!(!format!("{c:?}").contains("p%40ss"), "{c:?}");
        // A cluster has database 0 only; an unknown mode is refused, naming the variable.
        assert!(matches!(
            with(&[
                ("redis_mode", Some("cluster")),
                ("redis_database", Some("3"))
            ]),
            Err(ConfigError::Malformed {
                name: "redis_database",
                ..
            })
        ));
        let replicas = with(&[
            ("redis_mode", Some("cluster")),
            ("redis_read_from", Some("replica")),
        ])
        .unwrap();
        assert!(replicas.redis_read_replicas);
        assert!(!with(&[]).unwrap().redis_read_replicas);
        assert!(matches!(
            with(&[("redis_read_from", Some("replica"))]),
            Err(ConfigError::Malformed {
                name: "redis_read_from",
                ..
            })
        ));
        assert!(matches!(
            with(&[
                ("redis_mode", Some("cluster")),
                ("redis_read_from", Some("any"))
            ]),
            Err(ConfigError::Malformed {
                name: "redis_read_from",
                ..
            })
        ));
        for bad in ["", "sentinel", "Cluster"] {
            assert!(
                matches!(
                    with(&[("redis_mode", Some(bad))]),
                    Err(ConfigError::Malformed {
                        name: "redis_mode",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_shared_tier_is_off_by_default_and_names_a_store_label() {
        let c = with(&[]).unwrap();
        assert_eq!(
            c.origin_budget_store, "",
            "the origin budget is per instance by default"
        );
        let per_process = with(&[("origin_budget_store", Some("default"))]).unwrap();
        assert_eq!(per_process.origin_budget_store, "default");
        assert_eq!(
            c.shared_tier,
            SharedTierSettings {
                store: String::new(),
                slots: 131_072
            }
        );
        let on = with(&[
            ("shared_tier_store", Some(" default ")),
            ("shared_tier_slots", Some("8")),
        ])
        .unwrap();
        assert_eq!(
            (on.shared_tier.store.as_str(), on.shared_tier.slots),
            ("default", 8)
        );
        for (name, bad) in [
            ("shared_tier_store", "Default"),
            ("shared_tier_store", "a b"),
            ("shared_tier_store", "x:y"),
            ("origin_budget_store", "Default"),
            ("origin_budget_store", "a/b"),
            ("shared_tier_slots", "0"),
            ("shared_tier_slots", "1000001"),
        ] {
            assert!(
                matches!(with(&[(name, Some(bad))]), Err(ConfigError::Malformed { name: n, .. }) if n == name),
                "{name} = {bad:?}"
            );
        }
    }

    #[test]
    fn the_feed_is_on_by_default_and_its_lag_is_capped_by_the_ttl() {
        assert_eq!(
            with(&[]).unwrap().feed,
            FeedSettings {
                poll: Duration::from_millis(100),
                max_lag: Duration::from_millis(1000)
            },
            "on by default"
        );
        let on = Some("50");
        let c = with(&[("feed_poll_ms", on)]).unwrap();
        assert_eq!(
            c.feed,
            FeedSettings {
                poll: Duration::from_millis(50),
                max_lag: Duration::from_millis(1000)
            }
        );
        assert!(c.feed.is_on());
        let short = with(&[("feed_poll_ms", on), ("l1_ttl_ms", Some("300"))]).unwrap();
        assert_eq!(short.feed.max_lag, Duration::from_millis(300));
        assert!(!with(&[("feed_poll_ms", Some("0"))]).unwrap().feed.is_on());
        assert!(
            !with(&[("feed_poll_ms", on), ("l1_ttl_ms", Some("0"))])
                .unwrap()
                .feed
                .is_on(),
            "no tier 1, no feed"
        );
        for (name, bad) in [
            ("feed_poll_ms", "60001"),
            ("feed_poll_ms", "-1"),
            ("feed_poll_ms", "fast"),
            ("feed_max_lag_ms", "0"),
        ] {
            assert!(
                matches!(with(&[(name, Some(bad))]), Err(ConfigError::Malformed { name: n, .. }) if n == name),
                "{name} = {bad:?}"
            );
        }
    }

    #[test]
    fn the_spin_toml_defaults_parse() {
        let c = with(&[]).unwrap();
        assert_eq!(c.redis_url, "redis://edge:p%40ss%3Aw%2Frd@127.0.0.1:6379/0");
        let c = with(&[("redis_database", Some("42"))]).unwrap();
        assert_eq!(
            c.redis_url,
            "redis://edge:p%40ss%3Aw%2Frd@127.0.0.1:6379/42"
        );
        assert_eq!(c.origin_url, "http://127.0.0.1:8080");
        assert_eq!(
            c.l1,
            L1Limits {
                max_entries: 10_000,
                max_bytes: 8_388_608,
                ttl: Duration::from_millis(2000)
            }
        );
        assert_eq!(c.redis_timeout, Duration::from_millis(250));
        assert_eq!(c.redis_max_connections, 16);
        assert_eq!(c.origin_timeout, Duration::from_millis(2000));
        assert_eq!(
            c.redis_breaker,
            BreakerSettings {
                threshold: 2,
                backoff: Duration::from_millis(2000)
            }
        );
        assert_eq!(
            c.origin_breaker,
            BreakerSettings {
                threshold: 3,
                backoff: Duration::from_millis(2000)
            }
        );
        assert_eq!(c.request_budget, Duration::from_millis(2000));
        assert_eq!(c.l1_stale, Duration::from_millis(600_000));
        assert_eq!(c.xfetch_beta, 1.0);
    }

    #[test]
    fn the_spin_toml_defaults_are_the_ones_tested_here() {
        let manifest = include_str!("../../spin.toml");
        for name in VARIABLES {
            let line = manifest
                .lines()
                .find(|l| l.starts_with(&format!("{name} = {{")))
                .unwrap_or_else(|| panic!("{name} is not declared in spin.toml"));
            let wired = format!("{name} = \"{{{{ {name} }}}}\"");
            assert!(
                manifest.contains(&wired),
                "{name} is not given to the component"
            );
            if let Some(default) = defaults(name).filter(|_| line.contains("default"))
                && name != "redis_password"
                && name != "origin_token"
                // Empty in spin.toml (discovery); these tests use a static set.
                && name != "auth_jwks"
            {
                assert!(
                    line.contains(&format!("default = \"{default}\"")),
                    "{line} vs {default}"
                );
            }
        }
    }

    #[test]
    fn authentication_is_on_unless_turned_off_explicitly() {
        let c = with(&[]).unwrap();
        let Auth::Jwt(settings) = &c.auth else {
            panic!("auth is on by default");
        };
        let KeySource::Static(verifier) = &settings.source else {
            panic!("a static auth_jwks is used as it is");
        };
        assert_eq!(verifier.key_count(), 1);
        assert_eq!(settings.token_cache_entries, 10_000);
        assert_eq!(settings.token_cache_max_age, Duration::from_secs(300));
        assert_eq!(
            c.write_limit,
            WriteLimit {
                per_minute: 60,
                burst: 10,
                max_callers: MAX_LIMITED_CALLERS
            }
        );
        // Off: the JWKS and the claims settings are not needed (nor read).
        let off = with(&[
            ("auth", Some("off")),
            ("auth_jwks", None),
            ("auth_issuer", None),
            ("auth_audience", None),
        ])
        .unwrap();
        assert_eq!(off.auth, Auth::Off);
        for (value, ok) in [("On", false), ("yes", false), ("", false), (" off ", true)] {
            assert_eq!(with(&[("auth", Some(value))]).is_ok(), ok, "{value:?}");
        }
        assert_eq!(
            with(&[("auth_jwks", None)]).unwrap_err(),
            ConfigError::Missing("auth_jwks")
        );
        assert_eq!(
            with(&[("auth_jwks_url", None)]).unwrap_err(),
            ConfigError::Missing("auth_jwks_url")
        );
        let private = TEST_JWKS.replace(
            r#""kid""#,
            r#""d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","kid""#,
        );
        let e = with(&[("auth_jwks", Some(&private))]).unwrap_err();
        assert!(e.to_string().contains("auth_jwks") && e.to_string().contains("public keys only"));
        assert!(!e.to_string().contains("nWGx"), "never the value: {e}");
    }

    #[test]
    fn keys_come_from_a_static_jwks_a_jwks_url_or_discovery() {
        let source = |overrides: &[(&str, Option<&str>)]| match with(overrides).map(|c| c.auth) {
            Ok(Auth::Jwt(settings)) => Ok(settings.source.clone()),
            Ok(Auth::Off) => panic!("auth is on"),
            Err(e) => Err(e),
        };
        let url = "https://id.example/protocol/openid-connect/certs";
        assert_eq!(
            source(&[("auth_jwks", Some(" ")), ("auth_jwks_url", Some(url))]),
            Ok(KeySource::JwksUrl(url.into()))
        );
        assert_eq!(source(&[("auth_jwks", Some(""))]), Ok(KeySource::Discovery));
        for bad in [
            "id.example",
            "ftp://id.example",
            "https://",
            "https://user:pw@id.example",
            "https://id.example/jwks?x=1",
            "https://id.example/#k",
        ] {
            assert!(
                matches!(
                    source(&[("auth_jwks", Some("")), ("auth_jwks_url", Some(bad))]),
                    Err(ConfigError::Malformed {
                        name: "auth_jwks_url",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        // Discovery needs an issuer that is a URL.
        assert!(matches!(
            source(&[("auth_jwks", Some("")), ("auth_issuer", Some("aside-idp"))]),
            Err(ConfigError::Malformed {
                name: "auth_issuer",
                ..
            })
        ));
        let c = with(&[
            ("auth_keys_min_refresh_s", Some("10")),
            ("auth_keys_max_refresh_s", Some("5")),
        ])
        .unwrap();
        let Auth::Jwt(settings) = &c.auth else {
            panic!("on")
        };
        assert_eq!(
            settings.policy.max_refresh,
            Duration::from_secs(10),
            "the maximum is never below the minimum"
        );
        for (name, bad) in [
            ("auth_keys_min_refresh_s", "0"),
            ("auth_keys_max_stale_s", "-1"),
            ("auth_token_cache_entries", "1000001"),
            ("auth_token_cache_s", "86401"),
        ] {
            assert!(
                matches!(with(&[(name, Some(bad))]), Err(ConfigError::Malformed { name: n, .. }) if n == name),
                "{name} = {bad:?}"
            );
        }
    }

    #[test]
    fn beta_is_a_plain_decimal_and_zero_turns_early_refresh_off() {
        for (text, beta) in [
            ("0", 0.0),
            ("1", 1.0),
            ("1.5", 1.5),
            (" .5 ", 0.5),
            ("100", 100.0),
        ] {
            assert_eq!(
                with(&[("xfetch_beta", Some(text))]).unwrap().xfetch_beta,
                beta,
                "{text}"
            );
        }
    }

    #[test]
    fn rediss_asks_for_tls() {
        let c = with(&[("redis_scheme", Some(" rediss "))]).unwrap();
        assert_eq!(
            c.redis_url,
            "rediss://edge:p%40ss%3Aw%2Frd@127.0.0.1:6379/0"
        );
        let c = with(&[("redis_scheme", Some("redis"))]).unwrap();
        assert!(c.redis_url.starts_with("redis://"), "{c:?}");
    }

    /// The manifest passes every variable the edge reads to the component, declares each one, and
    /// allows Redis only with the configured scheme.
    #[test]
    fn spin_toml_declares_every_variable_and_allows_redis_by_scheme() {
        let manifest = include_str!("../../spin.toml");
        for name in VARIABLES {
            assert!(
                manifest.contains(&format!("\n{name} = \"{{{{ {name} }}}}\"")),
                "spin.toml does not pass `{name}` to the component"
            );
            assert!(
                manifest.contains(&format!("\n{name} = {{ ")),
                "spin.toml does not declare `{name}` under [variables]"
            );
        }
        assert!(manifest.contains("\nredis_scheme = { default = \"redis\" }"));
        assert!(
            manifest.contains("\"{{ redis_scheme }}://{{ redis_address }}\""),
            "allowed_outbound_hosts must follow redis_scheme"
        );
        assert!(
            !manifest.contains("\"redis://{{ redis_address }}\""),
            "a fixed redis:// entry would let a TLS deployment fall back to plain TCP"
        );
    }

    #[test]
    fn every_variable_is_read_exactly_once() {
        let mut seen = Vec::new();
        Config::from_lookup(|name| {
            seen.push(name);
            Lookup::Value(defaults(name).unwrap().to_string())
        })
        .unwrap();
        assert_eq!(seen, VARIABLES);
    }

    /// `get-all` answers every variable of the component, in any order, possibly with names the edge
    /// does not read: each of ours is taken by name, one it lacks is missing (as `get` says).
    #[test]
    fn get_all_pairs_are_taken_by_name_and_a_name_it_lacks_is_missing() {
        let mut all: Vec<(String, String)> = VARIABLES
            .iter()
            .rev()
            .filter(|name| **name != "origin_token")
            .map(|name| (name.to_string(), defaults(name).unwrap().to_string()))
            .collect();
        all.push(("not_ours".to_string(), "x".to_string()));
        let values = from_all(all.clone());
        assert_eq!(values.len(), VARIABLES.len());
        for (name, value) in &values {
            match *name {
                "origin_token" => assert_eq!(*value, Lookup::Missing),
                _ => assert_eq!(*value, Lookup::Value(defaults(name).unwrap().to_string())),
            }
        }
        let lookup = |values: Vec<(&'static str, Lookup)>| {
            move |name| {
                values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(Lookup::Missing, |(_, v)| v.clone())
            }
        };
        assert_eq!(
            Config::from_lookup(lookup(values)).unwrap_err(),
            ConfigError::Missing("origin_token")
        );
        all.push((
            "origin_token".to_string(),
            defaults("origin_token").unwrap().to_string(),
        ));
        assert!(Config::from_lookup(lookup(from_all(all))).is_ok());
    }

    #[test]
    fn a_malformed_value_names_the_variable_but_not_the_value() {
        for (name, bad) in [
            ("l1_ttl_ms", "2s"),
            ("l1_ttl_ms", "-1"),
            ("l1_max_entries", "1e4"),
            ("l1_max_bytes", "99999999999999999999999"),
            ("redis_timeout_ms", "0"),
            ("redis_max_connections", "0"),
            ("redis_max_connections", "65"),
            ("origin_timeout_ms", ""),
            ("redis_backoff_ms", "3600001"),
            ("request_budget_ms", "0"),
            ("request_budget_ms", "300001"),
            ("redis_failure_threshold", "0"),
            ("origin_failure_threshold", "1001"),
            ("origin_failure_threshold", "three"),
            ("origin_backoff_ms", "-5"),
            ("l1_stale_ms", "86400001"),
            ("l1_stale_ms", "10m"),
            ("xfetch_beta", "-1"),
            ("xfetch_beta", "1e2"),
            ("xfetch_beta", "NaN"),
            ("xfetch_beta", "inf"),
            ("xfetch_beta", "100.5"),
            ("xfetch_beta", "1..2"),
            ("xfetch_beta", "."),
            ("xfetch_beta", ""),
            ("redis_address", "localhost"),
            ("redis_address", "redis:port"),
            ("redis_address", "a/b:6379"),
            ("redis_database", "-1"),
            ("redis_database", "db1"),
            ("redis_database", "2147483648"),
            ("origin_url", "ftp://origin"),
            ("origin_url", "http://origin/api"),
            ("origin_url", "http://user:secret@origin"),
            ("origin_url", "http://origin?x=1"),
            ("origin_token", "has space"),
            ("redis_password", ""),
            ("redis_user", ""),
            ("redis_scheme", "tls"),
            ("redis_scheme", "https"),
            ("redis_scheme", "REDISS"),
            ("redis_scheme", ""),
        ] {
            let err = with(&[(name, Some(bad))]).expect_err(bad);
            assert!(
                matches!(err, ConfigError::Malformed { name: n, .. } if n == name),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(message.contains(&format!("`{name}`")), "{message}");
            // (A one-character value such as "0" may occur in the explanation itself.)
            if bad.len() > 1 {
                assert!(!message.contains(bad), "{message} leaks {bad}");
            }
        }
    }

    #[test]
    fn a_missing_variable_is_reported_by_name() {
        let err = with(&[("origin_token", None)]).unwrap_err();
        assert_eq!(err, ConfigError::Missing("origin_token"));
        assert_eq!(
            err.to_string(),
            "configuration variable `origin_token` is not set"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn a_provider_failure_is_transient() {
        let err = Config::from_lookup(|_| Lookup::ProviderFailed).unwrap_err();
        assert!(err.is_transient());
    }

    #[test]
    fn origin_url_loses_its_trailing_slash_and_keeps_https_and_ports() {
        let c = with(&[("origin_url", Some("https://origin.internal:8443/"))]).unwrap();
        assert_eq!(c.origin_url, "https://origin.internal:8443");
        let c = with(&[("origin_url", Some("http://[::1]:8080"))]).unwrap();
        assert_eq!(c.origin_url, "http://[::1]:8080");
    }

    #[test]
    fn zero_turns_tier_one_off_and_numbers_may_be_padded() {
        let c = with(&[("l1_ttl_ms", Some(" 0 ")), ("l1_max_entries", Some("0"))]).unwrap();
        assert_eq!(c.l1.ttl, Duration::ZERO);
        assert_eq!(c.l1.max_entries, 0);
    }

    #[test]
    fn debug_and_scrub_hide_the_secrets() {
        let c = with(&[]).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("p@ss") && !debug.contains("p%40ss") && !debug.contains("tok3n"));
        let scrubbed =
            c.scrub("failed: redis://edge:p%40ss%3Aw%2Frd@x and p@ss:w/rd and tok3n-value");
        assert_eq!(
            scrubbed,
            "failed: redis://edge:<secret>@x and <secret> and <secret>"
        );
    }
}
