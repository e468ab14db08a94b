//! Header names and values the edge and the origin emit.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cache::Freshness;

/// Where an answer came from. The edge sends `L1 | SHARED | L2 | MISS | STALE | BYPASS`; the origin,
/// which has one cache tier, sends `HIT | MISS`.
pub const X_CACHE: &str = "x-cache";
/// Time spent per tier, W3C Server-Timing syntax: `l1;dur=0.01, shared;dur=0.05, l2;dur=0.52,
/// origin;dur=3.1`.
pub const SERVER_TIMING: &str = "server-timing";
/// Seconds to wait before retrying a 503.
pub const RETRY_AFTER: &str = "retry-after";
/// The row version of a profile answer, as a strong validator: `"<version>"` ([`format_etag`]). Sent on
/// every `200`/`201` profile answer (full or `?fields`) and, by the origin, on the `204` of a `DELETE`
/// (there it is the version the row had when it was deleted, i.e. its tombstone's).
pub const ETAG: &str = "etag";
/// Which edge instance answered: 16 hex digits chosen at random once per instance (like a CDN's
/// `X-Served-By`). Says nothing secret; lets a client tell instances (and their tier 1s) apart.
pub const X_EDGE_INSTANCE: &str = "x-edge-instance";

/// Who the edge's client is, on a request from the edge to the origin: the verified token's `sub`
/// (percent-encoded outside visible ASCII). The edge always sets or removes it itself, never passes a
/// client's on; the origin trusts it only on a request that presented an origin token, and records it
/// as the actor of a write.
pub const X_ASIDE_CALLER: &str = "x-aside-caller";
/// On a read from the edge to the origin: `miss` when the edge asked Redis for the profile a moment
/// before and found no entry. The origin then skips its own first look (the look it takes with the
/// fill lease, in the same atomic step, still catches a fill that landed meanwhile): one Redis round
/// trip less on a miss through the edge. Only a hint: any other value, or none, reads as usual, and a
/// wrong hint costs a lease, never a wrong answer.
pub const X_ASIDE_REDIS: &str = "x-aside-redis";
/// The [`X_ASIDE_REDIS`] value the edge sends.
pub const REDIS_MISSED: &str = "miss";
/// `off` on every edge answer when client authentication is turned off (`auth = "off"`).
pub const X_ASIDE_AUTH: &str = "x-aside-auth";

/// On a profile answer of the origin: how long the copy stays fresh and how long after that it may
/// still be served when the origin cannot answer, in RFC 9111 / RFC 5861 terms:
/// `max-age=<secs>, stale-if-error=<secs>` ([`CacheControl`]). The edge keeps its tier-1 copy by it.
/// On a request to the origin, `cache-control: no-cache` asks for a refresh from PostgreSQL (the edge
/// sends it when it refreshes a hot key early); the origin still coalesces such loads.
pub const CACHE_CONTROL: &str = "cache-control";
/// The request directive that asks the origin to reload from PostgreSQL rather than answer from Redis.
pub const NO_CACHE: &str = "no-cache";

/// The freshness directives aside puts on (and reads from) a profile answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    /// Seconds the answer stays fresh.
    pub max_age_secs: u64,
    /// Seconds after that during which a stale copy may be served if the source fails.
    pub stale_if_error_secs: u64,
}

impl CacheControl {
    /// `max-age=N, stale-if-error=M`.
    pub fn format(&self) -> String {
        format!(
            "max-age={}, stale-if-error={}",
            self.max_age_secs, self.stale_if_error_secs
        )
    }

    /// Reads `max-age` and `stale-if-error` from a `cache-control` value; other directives are ignored,
    /// a missing `stale-if-error` is 0. `None` without a valid `max-age`, or with `no-store`/`no-cache`
    /// (the answer may not be reused), or a duplicated directive (RFC 9111 says to treat it as stale).
    pub fn parse(value: &str) -> Option<Self> {
        let mut max_age = None;
        let mut stale_if_error = None;
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim())),
                None => (directive, None),
            };
            let slot = if name.eq_ignore_ascii_case("max-age") {
                &mut max_age
            } else if name.eq_ignore_ascii_case("stale-if-error") {
                &mut stale_if_error
            } else if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache")
            {
                return None;
            } else {
                continue;
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(parse_delta_seconds(argument?)?);
        }
        Some(Self {
            max_age_secs: max_age?,
            stale_if_error_secs: stale_if_error.unwrap_or(0),
        })
    }
}

impl CacheControl {
    /// What a copy's freshness says in these directives, at `now_ms` (wall clock, Unix milliseconds):
    /// `max-age` is the whole seconds until its soft expiry (0 once stale); `stale-if-error` the whole
    /// seconds from then (or from now, if later) until its hard expiry, the soft one plus
    /// `stale_window`. A copy of unknown freshness (straight from PostgreSQL with no fill, or written by
    /// an older origin) gets `default_ttl` and the whole `stale_window`. Rounding down means a receiver
    /// never keeps a copy longer than its source would ([`freshness_from_max_age`] is the inverse).
    pub fn for_copy(
        freshness: Option<Freshness>,
        now_ms: i64,
        default_ttl: Duration,
        stale_window: Duration,
    ) -> Self {
        match freshness {
            None => Self {
                max_age_secs: default_ttl.as_secs(),
                stale_if_error_secs: stale_window.as_secs(),
            },
            Some(f) => {
                let stale_ms = i64::try_from(stale_window.as_millis()).unwrap_or(i64::MAX);
                let hard = f.fresh_until_ms.saturating_add(stale_ms);
                let fresh_left = f.fresh_until_ms.saturating_sub(now_ms).max(0);
                let stale_left = hard.saturating_sub(now_ms.max(f.fresh_until_ms)).max(0);
                Self {
                    max_age_secs: (fresh_left / 1000) as u64,
                    stale_if_error_secs: (stale_left / 1000) as u64,
                }
            }
        }
    }
}

/// The freshness a receiver takes from a `max-age` it got at `received_ms` (wall clock, Unix
/// milliseconds): soft expiry `max_age_secs` from then, and `refresh_cost_ms` (what fetching it again
/// costs as the receiver sees it; rounded up to whole milliseconds) as the XFetch delta. The inverse of
/// [`CacheControl::for_copy`]: the soft expiry comes out at most a second early, never late (plus the
/// transit time, which `max-age` without an `age` cannot tell).
pub fn freshness_from_max_age(
    max_age_secs: u64,
    received_ms: i64,
    refresh_cost_ms: f64,
) -> Freshness {
    let max_age_ms = i64::try_from(max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    Freshness {
        fresh_until_ms: received_ms.saturating_add(max_age_ms),
        delta_ms: refresh_cost_ms.max(0.0).ceil().min(f64::from(u32::MAX)) as u32,
    }
}

/// RFC 9111 delta-seconds: digits only; values beyond 2^31 are capped there.
fn parse_delta_seconds(text: &str) -> Option<u64> {
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31))
}

/// The `etag` value for a row version: the decimal version in double quotes (a strong validator).
pub fn format_etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The row version in an `etag` value written by [`format_etag`]; `None` for anything else (a weak
/// validator `W/"..."`, no quotes, a sign, leading zeros, beyond `i64`, ...).
pub fn parse_etag(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('"')?.strip_suffix('"')?;
    let canonical = !digits.is_empty()
        && digits.len() <= 19
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// The `x-edge-instance` value of an instance id: 16 lower-case hex digits.
pub fn format_instance_id(id: u64) -> String {
    format!("{id:016x}")
}

/// The value of `x-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Edge: served from the instance's memory.
    L1,
    /// Edge: served from the process-wide tier (Spin's key-value store, shared by the instances).
    Shared,
    /// Edge: served from Redis.
    L2,
    /// Origin: served from Redis.
    Hit,
    /// Not cached: the answer was computed (edge: by the origin; origin: from PostgreSQL).
    Miss,
    /// Served from an expired copy because the source could not answer.
    Stale,
    /// Not cacheable (writes, health checks): passed straight through.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::L1 => "L1",
            CacheStatus::Shared => "SHARED",
            CacheStatus::L2 => "L2",
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Builds a `server-timing` value, one metric per tier visited, durations in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct ServerTiming {
    value: String,
}

impl ServerTiming {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name;dur=ms` (three decimals). `name` must be a token: lower-case letters, digits, `-`, `_`.
    pub fn add(&mut self, name: &str, millis: f64) -> &mut Self {
        debug_assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        );
        if !self.value.is_empty() {
            self.value.push_str(", ");
        }
        let millis = if millis.is_finite() && millis >= 0.0 {
            millis
        } else {
            0.0
        };
        let _ = write!(self.value, "{name};dur={millis:.3}");
        self
    }

    /// Adds `name;dur=ms;desc="desc"`. `desc` must be a token too.
    pub fn add_described(&mut self, name: &str, millis: f64, desc: &str) -> &mut Self {
        debug_assert!(
            desc.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        );
        self.add(name, millis);
        let _ = write!(self.value, ";desc=\"{desc}\"");
        self
    }

    /// Adds the metrics of another `server-timing` value (e.g. an upstream's), each name prefixed with
    /// `prefix` and `-`, their descriptions dropped. Only the first [`PASSED_METRICS`] well-formed
    /// metrics are kept, and a malformed one is skipped: an upstream cannot make this value unbounded
    /// or invalid.
    pub fn add_prefixed(&mut self, prefix: &str, upstream: &str) -> &mut Self {
        let mut name = String::new();
        for (metric, millis) in parse_server_timing(upstream).take(PASSED_METRICS) {
            name.clear();
            let _ = write!(name, "{prefix}-{metric}");
            self.add(&name, millis);
        }
        self
    }

    /// Adds every metric of `other`, as they are (e.g. those of a lookup this request shared).
    pub fn append(&mut self, other: &ServerTiming) -> &mut Self {
        if !other.value.is_empty() {
            if !self.value.is_empty() {
                self.value.push_str(", ");
            }
            self.value.push_str(&other.value);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// How many of an upstream's `server-timing` metrics [`ServerTiming::add_prefixed`] keeps.
pub const PASSED_METRICS: usize = 8;

/// The `(name, dur)` of each metric of a `server-timing` value that has a token name (lower-case
/// letters, digits, `-`, `_`, at most 32 bytes) and a finite, non-negative `dur` in milliseconds; a
/// metric without `dur` counts as 0 ms; anything else is skipped.
pub fn parse_server_timing(value: &str) -> impl Iterator<Item = (&str, f64)> {
    value.split(',').filter_map(|metric| {
        let mut params = metric.split(';').map(str::trim);
        let name = params.next()?;
        let token = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !token {
            return None;
        }
        let mut millis = 0.0;
        for param in params {
            if let Some(dur) = param.strip_prefix("dur=") {
                millis = dur
                    .parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite() && *d >= 0.0)?;
            }
        }
        Some((name, millis))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_lists_tiers_in_order() {
        let mut t = ServerTiming::new();
        t.add("l1", 0.0123).add("l2", 1.5).add("origin", f64::NAN);
        assert_eq!(t.as_str(), "l1;dur=0.012, l2;dur=1.500, origin;dur=0.000");
        t.add_described("feed", 0.25, "ttl-late");
        assert!(t.as_str().ends_with(", feed;dur=0.250;desc=\"ttl-late\""));
    }

    #[test]
    fn a_shared_lookup_s_timing_is_appended_as_it_is() {
        let mut lookup = ServerTiming::new();
        lookup.add("l2", 1.0).add_described("origin", 2.0, "miss");
        let mut t = ServerTiming::new();
        t.append(&lookup);
        assert_eq!(t.as_str(), lookup.as_str());
        t.add("l1", 0.5)
            .append(&ServerTiming::new())
            .append(&lookup);
        assert_eq!(
            t.as_str(),
            "l2;dur=1.000, origin;dur=2.000;desc=\"miss\", l1;dur=0.500, l2;dur=1.000, \
             origin;dur=2.000;desc=\"miss\""
        );
    }

    #[test]
    fn an_upstream_s_timing_is_passed_prefixed_bounded_and_clean() {
        let mut t = ServerTiming::new();
        t.add("l2", 1.0).add_prefixed(
            "origin",
            "redis;dur=0.5, db;dur=2.25;desc=\"load\", BAD;dur=1, x;dur=-1, y;dur=nan, z, w;dur=abc",
        );
        assert_eq!(
            t.as_str(),
            "l2;dur=1.000, origin-redis;dur=0.500, origin-db;dur=2.250, origin-z;dur=0.000"
        );
        let many = (0..20)
            .map(|i| format!("m{i};dur=1"))
            .collect::<Vec<_>>()
            .join(",");
        let mut t = ServerTiming::new();
        t.add_prefixed("origin", &many);
        assert_eq!(t.as_str().matches("origin-").count(), PASSED_METRICS);
        let mut t = ServerTiming::new();
        t.add_prefixed("origin", "");
        assert!(t.is_empty());
    }

    #[test]
    fn etags_round_trip_versions() {
        for v in [0, 1, 42, i64::MAX] {
            assert_eq!(parse_etag(&format_etag(v)), Some(v), "{v}");
        }
        assert_eq!(format_etag(7), "\"7\"");
    }

    #[test]
    fn etags_that_aside_did_not_write_are_refused() {
        for bad in [
            "",
            "\"\"",
            "7",
            "\"7",
            "7\"",
            "W/\"7\"",
            "\"-7\"",
            "\"+7\"",
            "\"07\"",
            "\" 7\"",
            "\"7 \"",
            "\"1e3\"",
            "\"0x1\"",
            "\"１\"",
            "\"9223372036854775808\"",
            "*",
        ] {
            assert_eq!(parse_etag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cache_control_round_trips_and_ignores_other_directives() {
        let cc = CacheControl {
            max_age_secs: 30,
            stale_if_error_secs: 60,
        };
        assert_eq!(cc.format(), "max-age=30, stale-if-error=60");
        assert_eq!(CacheControl::parse(&cc.format()), Some(cc));
        assert_eq!(
            CacheControl::parse("private, Max-Age=\"5\" ,must-revalidate"),
            Some(CacheControl {
                max_age_secs: 5,
                stale_if_error_secs: 0
            })
        );
        assert_eq!(
            CacheControl::parse("max-age=99999999999999999999999").map(|c| c.max_age_secs),
            Some(1 << 31)
        );
    }

    const SEC: Duration = Duration::from_secs(1);

    fn fresh_until(fresh_until_ms: i64) -> Option<Freshness> {
        Some(Freshness {
            fresh_until_ms,
            delta_ms: 3,
        })
    }

    #[test]
    fn a_copy_s_directives_count_down_to_its_soft_and_hard_expiry() {
        let now = 1_000_000;
        let at = |f, stale_secs| CacheControl::for_copy(f, now, 7200 * SEC, stale_secs * SEC);
        let cc = |max_age_secs, stale_if_error_secs| CacheControl {
            max_age_secs,
            stale_if_error_secs,
        };
        // Fresh for 30.9 s more, then 60 s of grace: whole seconds, rounded down.
        assert_eq!(at(fresh_until(now + 30_900), 60), cc(30, 60));
        // Stale for 10.5 s already: nothing fresh left, 49.5 s of grace left.
        assert_eq!(at(fresh_until(now - 10_500), 60), cc(0, 49));
        // Past the hard expiry too, and no grace at all.
        assert_eq!(at(fresh_until(now - 61_000), 60), cc(0, 0));
        assert_eq!(at(fresh_until(now + 5_000), 0), cc(5, 0));
        // Unknown freshness: the configured soft TTL and the whole window.
        assert_eq!(at(None, 60), cc(7200, 60));
        // Extremes saturate instead of overflowing.
        assert_eq!(
            CacheControl::for_copy(fresh_until(i64::MAX), i64::MIN, SEC, Duration::MAX),
            cc(i64::MAX as u64 / 1000, 0)
        );
        assert_eq!(at(fresh_until(i64::MIN), 60).max_age_secs, 0);
    }

    #[test]
    fn a_received_max_age_counts_from_receipt_and_the_cost_is_rounded_up() {
        let received = 5_000;
        let read = |max_age, cost| freshness_from_max_age(max_age, received, cost);
        assert_eq!(read(2, 0.2).fresh_until_ms, 7_000);
        assert_eq!(read(2, 0.2).delta_ms, 1);
        assert_eq!(read(0, 12.0).delta_ms, 12);
        assert!(!read(0, 1.0).is_fresh(received));
        // Nonsense costs are none; huge ones and huge ages saturate.
        for cost in [-3.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(read(1, cost).delta_ms, 0, "{cost}");
        }
        assert_eq!(read(1, 1e300).delta_ms, u32::MAX);
        assert_eq!(read(u64::MAX, 1.0).fresh_until_ms, i64::MAX);
    }

    /// What the origin says and the edge reads back agree: the receiver's soft and hard expiry are never
    /// later than the source's, and at most one (soft) or two (hard) seconds earlier, through the header
    /// text itself.
    #[test]
    fn the_header_round_trip_never_extends_a_copy_s_life() {
        let now = 1_700_000_000_000_i64;
        for fresh_for in [
            -120_000, -61_000, -1, 0, 1, 999, 1_000, 1_001, 30_900, 7_200_000,
        ] {
            for stale_secs in [0, 1, 59, 60, 86_400] {
                let source = now + fresh_for;
                let source_hard = source + stale_secs as i64 * 1000;
                let sent = CacheControl::for_copy(fresh_until(source), now, SEC, stale_secs * SEC);
                let read = CacheControl::parse(&sent.format()).expect("parses");
                assert_eq!(read, sent);
                let got = freshness_from_max_age(read.max_age_secs, now, 0.0);
                let hard = got.fresh_until_ms + read.stale_if_error_secs as i64 * 1000;
                let case = format!("{fresh_for} {stale_secs}: {sent:?}");
                if fresh_for > 0 {
                    assert!(got.fresh_until_ms <= source, "{case}");
                    assert!(got.fresh_until_ms > source - 1000, "{case}");
                } else {
                    assert!(!got.is_fresh(now), "{case}");
                }
                assert!(hard <= source_hard.max(now), "{case}");
                assert!(hard > source_hard.max(now) - 2000, "{case}");
            }
        }
    }

    #[test]
    fn cache_control_that_forbids_reuse_or_is_malformed_is_none() {
        for bad in [
            "",
            "private",
            "max-age",
            "max-age=",
            "max-age=-1",
            "max-age=1.5",
            "max-age=5, no-store",
            "no-cache, max-age=5",
            "max-age=5, max-age=6",
            "max-age=5, stale-if-error=x",
        ] {
            assert_eq!(CacheControl::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn instance_ids_are_sixteen_hex_digits() {
        assert_eq!(format_instance_id(0), "0000000000000000");
        assert_eq!(format_instance_id(0xdead_beef), "00000000deadbeef");
        assert_eq!(format_instance_id(u64::MAX), "ffffffffffffffff");
    }

    #[test]
    fn cache_status_values() {
        let all = [
            CacheStatus::L1,
            CacheStatus::L2,
            CacheStatus::Hit,
            CacheStatus::Miss,
            CacheStatus::Stale,
            CacheStatus::Bypass,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["L1", "L2", "HIT", "MISS", "STALE", "BYPASS"]);
    }
}
