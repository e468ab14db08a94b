//! The invalidation feed: what the origin appends to a capped Redis stream for every change it applies
//! to the cache, and how an edge reads it back.
//!
//! The origin appends to [`FEED_KEY`] in the same Lua call as the cache write it describes (so no change
//! reaches the cache without reaching the feed), and a heartbeat at a fixed interval (so a reader tells a
//! quiet feed from a dead one). Every entry carries a sequence number taken from [`FEED_SEQ_KEY`]
//! (`INCR`, in the same atomic step): a reader that finds the next entry's number is not one more than
//! the last it applied knows it lost entries (the stream was trimmed past its position, deleted, or
//! Redis restarted without its data or failed over to a replica that lacked them) and stops trusting
//! its copies. Entries, in this field order:
//!
//! * a change: `s <seq> k c id <user id> v <version> r <rank>`: the cache now holds (or held) the entry
//!   of `id` at `(version, rank)` (rank as in [`crate::cache::CacheEntry::rank`]: 1 a profile, 2 a
//!   tombstone); every copy of `id` older than that is obsolete;
//! * a heartbeat: `s <seq> k h`.
//!
//! Spin's Redis binding returns `XREAD`'s nested reply flattened depth-first:
//! `key, id1, f, v, f, v, ..., id2, f, v, ...`; [`parse_flat_xread`] reads that form.

/// The stream the origin appends to. With [`FEED_SEQ_KEY`] it shares the hash tag `{feed}`: the
/// heartbeat script touches both, and on a Redis Cluster they must sit in one slot (so one node holds
/// the whole feed). Earlier versions named them `aside:feed` and `aside:feed:seq`.
pub const FEED_KEY: &str = "aside:{feed}";
/// The counter that numbers the stream's entries.
pub const FEED_SEQ_KEY: &str = "aside:{feed}:seq";
/// The default cap on the stream's length (`XADD MAXLEN ~`).
pub const DEFAULT_FEED_MAXLEN: u64 = 10_000;
/// The default interval between heartbeats, in ms.
pub const DEFAULT_HEARTBEAT_MS: u64 = 250;

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: parse_u64(ms.as_bytes())?,
            seq: parse_u64(seq.as_bytes())?,
        })
    }

    /// The first id at or after wall-clock millisecond `ms`.
    pub fn at_ms(ms: u64) -> Self {
        Self { ms, seq: 0 }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One change the feed announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub id: i32,
    pub version: i64,
    /// 1: a profile, 2: a tombstone.
    pub rank: u8,
}

impl Change {
    pub fn is_deletion(&self) -> bool {
        self.rank >= 2
    }
}

/// One entry of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedEntry {
    pub stream_id: StreamId,
    pub seq: u64,
    /// `None` for a heartbeat.
    pub change: Option<Change>,
}

/// Why a reply is not a feed the reader can trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedFormatError {
    #[error("the reply names another stream")]
    OtherStream,
    #[error("entry {0}: not an aside feed entry")]
    Entry(usize),
}

/// Parses a non-blocking `XREAD ... STREAMS <FEED_KEY> <id>` reply in Spin's flattened form, each element
/// `None` for a nil. An empty reply or a single nil (no new entries, or no stream) is `Ok(vec![])`.
pub fn parse_flat_xread(tokens: &[Option<Vec<u8>>]) -> Result<Vec<FeedEntry>, FeedFormatError> {
    if tokens.is_empty() || (tokens.len() == 1 && tokens[0].is_none()) {
        return Ok(Vec::new());
    }
    let mut it = tokens.iter().map(|t| t.as_deref());
    if it.next().flatten() != Some(FEED_KEY.as_bytes()) {
        return Err(FeedFormatError::OtherStream);
    }
    let mut entries = Vec::new();
    let mut next = it.next();
    while let Some(token) = next {
        let n = entries.len();
        let bad = || FeedFormatError::Entry(n);
        let stream_id = token.and_then(StreamId::parse).ok_or_else(bad)?;
        let mut field = |name: &str| -> Result<&[u8], FeedFormatError> {
            match (it.next().flatten(), it.next().flatten()) {
                (Some(f), Some(v)) if f == name.as_bytes() => Ok(v),
                _ => Err(bad()),
            }
        };
        let seq = parse_u64(field("s")?).ok_or_else(bad)?;
        let change = match field("k")? {
            b"h" => None,
            b"c" => {
                let id = parse_u64(field("id")?)
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(bad)?;
                let version = parse_u64(field("v")?)
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(bad)?;
                let rank = parse_u64(field("r")?)
                    .and_then(|v| u8::try_from(v).ok())
                    .filter(|r| (1..=2).contains(r))
                    .ok_or_else(bad)?;
                Some(Change { id, version, rank })
            }
            _ => return Err(bad()),
        };
        entries.push(FeedEntry {
            stream_id,
            seq,
            change,
        });
        next = it.next();
    }
    Ok(entries)
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn a_flattened_reply_parses_into_changes_and_heartbeats() {
        let reply: Vec<_> = [
            "aside:{feed}",
            "1700000000000-0",
            "s",
            "41",
            "k",
            "h",
            "1700000000005-3",
            "s",
            "42",
            "k",
            "c",
            "id",
            "7",
            "v",
            "3",
            "r",
            "2",
        ]
        .into_iter()
        .map(t)
        .collect();
        let entries = parse_flat_xread(&reply).unwrap();
        assert_eq!(
            entries,
            vec![
                FeedEntry {
                    stream_id: StreamId {
                        ms: 1_700_000_000_000,
                        seq: 0
                    },
                    seq: 41,
                    change: None
                },
                FeedEntry {
                    stream_id: StreamId {
                        ms: 1_700_000_000_005,
                        seq: 3
                    },
                    seq: 42,
                    change: Some(Change {
                        id: 7,
                        version: 3,
                        rank: 2
                    })
                }
            ]
        );
        assert!(entries[1].change.unwrap().is_deletion());
    }

    #[test]
    fn no_entries_is_an_empty_feed() {
        assert_eq!(parse_flat_xread(&[]), Ok(vec![]));
        assert_eq!(parse_flat_xread(&[None]), Ok(vec![]));
    }

    #[test]
    fn anything_else_is_refused() {
        let cases: Vec<Vec<&str>> = vec![
            vec!["other", "1-0", "s", "1", "k", "h"],
            vec!["aside:{feed}", "x-0", "s", "1", "k", "h"],
            vec!["aside:{feed}", "1-0", "s", "1"],
            vec!["aside:{feed}", "1-0", "s", "1", "k", "z"],
            vec!["aside:{feed}", "1-0", "k", "h", "s", "1"],
            vec!["aside:{feed}", "1-0", "s", "-1", "k", "h"],
            vec![
                "aside:{feed}",
                "1-0",
                "s",
                "1",
                "k",
                "c",
                "id",
                "7",
                "v",
                "3",
                "r",
                "0",
            ],
            vec![
                "aside:{feed}",
                "1-0",
                "s",
                "1",
                "k",
                "c",
                "id",
                "99999999999",
                "v",
                "3",
                "r",
                "1",
            ],
            vec!["aside:{feed}", "1-0", "s", "1", "k", "h", "2-0"],
        ];
        for case in cases {
            let reply: Vec<_> = case.iter().map(|s| t(s)).collect();
            assert!(parse_flat_xread(&reply).is_err(), "{case:?}");
        }
    }

    #[test]
    fn stream_ids_order_like_redis() {
        let a = StreamId::parse(b"5-9").unwrap();
        let b = StreamId::parse(b"6-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "5-9");
        assert_eq!(StreamId::parse(b"5"), None);
        assert_eq!(StreamId::at_ms(7).to_string(), "7-0");
    }
}
