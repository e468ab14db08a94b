//! The header values aside reads back: `etag` (a row version, for conditional requests) and
//! `cache-control` (how long the edge keeps an origin answer).
//!
//! Input: the bytes are the header value (non-UTF-8 input skips the readers: a header value reaches
//! them as `&str`); the first 16 bytes, read as two numbers, also drive the writers.
//!
//! Properties:
//! * `parse_etag` accepts exactly what `format_etag` writes for versions >= 0 (a model: the quoted
//!   canonical decimal), and every such version survives `format_etag` -> `parse_etag`;
//! * a `cache-control` value `CacheControl::parse` accepts has one `max-age`, at most one
//!   `stale-if-error`, no `no-store`/`no-cache`, values within 2^31, and its `format` parses back to the
//!   same directives; adding `no-store` or a second `max-age` makes it unusable, adding an unknown
//!   directive changes nothing; any pair of numbers survives `format` -> `parse` (capped at 2^31).

#![no_main]

use aside_shared::headers::{CacheControl, format_etag, parse_etag};
use libfuzzer_sys::fuzz_target;

/// RFC 9111's cap on delta-seconds, which `CacheControl::parse` applies.
const CAP: u64 = 1 << 31;

fuzz_target!(|data: &[u8]| {
    let mut words = [0u8; 16];
    let n = data.len().min(16);
    words[..n].copy_from_slice(&data[..n]);
    let [a, b] = [&words[..8], &words[8..]].map(|w| u64::from_le_bytes(w.try_into().unwrap()));
    check_etag_writer(a as i64);
    check_cache_control_writer(a, b);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_etag_reader(text);
    check_cache_control_reader(text);
});

fn check_etag_writer(version: i64) {
    let parsed = parse_etag(&format_etag(version));
    if version >= 0 {
        assert_eq!(parsed, Some(version));
    } else {
        assert_eq!(parsed, None, "a negative version is no row's");
    }
}

fn check_etag_reader(text: &str) {
    let model = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|digits| {
            let v = digits.parse::<i64>().ok()?;
            (v >= 0 && v.to_string() == digits).then_some(v)
        });
    assert_eq!(parse_etag(text), model, "{text:?}");
    if let Some(v) = model {
        assert_eq!(format_etag(v), text);
    }
}

fn check_cache_control_writer(max_age_secs: u64, stale_if_error_secs: u64) {
    let cc = CacheControl {
        max_age_secs,
        stale_if_error_secs,
    };
    assert_eq!(
        CacheControl::parse(&cc.format()),
        Some(CacheControl {
            max_age_secs: max_age_secs.min(CAP),
            stale_if_error_secs: stale_if_error_secs.min(CAP),
        })
    );
}

/// The directive names of a `cache-control` value, lower-cased, as the parser splits them.
fn directive_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|d| {
            let d = d.trim();
            d.split_once('=')
                .map_or(d, |(n, _)| n.trim())
                .to_ascii_lowercase()
        })
        .collect()
}

fn check_cache_control_reader(text: &str) {
    let Some(cc) = CacheControl::parse(text) else {
        return;
    };
    assert!(
        cc.max_age_secs <= CAP && cc.stale_if_error_secs <= CAP,
        "{cc:?}"
    );
    let names = directive_names(text);
    let count = |name: &str| names.iter().filter(|n| *n == name).count();
    assert_eq!(count("max-age"), 1, "{text:?}");
    assert!(count("stale-if-error") <= 1, "{text:?}");
    if count("stale-if-error") == 0 {
        assert_eq!(cc.stale_if_error_secs, 0);
    }
    assert_eq!(count("no-store") + count("no-cache"), 0, "{text:?}");

    assert_eq!(CacheControl::parse(&cc.format()), Some(cc), "{text:?}");
    assert_eq!(CacheControl::parse(&format!("{text}, no-store")), None);
    assert_eq!(CacheControl::parse(&format!("no-cache, {text}")), None);
    assert_eq!(CacheControl::parse(&format!("{text}, max-age=1")), None);
    assert_eq!(CacheControl::parse(&format!("private, {text}")), Some(cc));
}
