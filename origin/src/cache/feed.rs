//! The invalidation feed's publisher side (see `aside_shared::feed` for the format).
//!
//! Every change the origin applies to Redis is appended to the capped stream [`FEED_KEY`] by the
//! compare-and-set script itself ([`super::fill`]), in the same atomic step as the cache write. This
//! module adds the other half: a heartbeat every `ASIDE_FEED_HEARTBEAT_MS`, so that an edge reading the
//! feed can tell a quiet feed from a dead one (no heartbeat for its `feed_max_lag_ms`: it falls back to
//! its short TTL).
//!
//! Every origin process sends heartbeats (more origins, more heartbeats; a reader needs only one), each
//! numbered like a change by the same counter, so readers check that the numbers run on without a gap.

use std::sync::LazyLock;
use std::time::Duration;

use aside_shared::feed::{DEFAULT_FEED_MAXLEN, DEFAULT_HEARTBEAT_MS, FEED_KEY, FEED_SEQ_KEY};
use clap::Args;

use super::{CacheError, ProfileCache};

static HEARTBEAT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("feed_heartbeat.lua")));

/// The feed's settings.
#[derive(Debug, Clone, Copy, Args)]
pub struct FeedArgs {
    /// The invalidation feed's cap, in entries (`XADD MAXLEN ~`, so Redis may keep a few more). 0 turns
    /// the feed off: no change is announced and no heartbeat sent, and edges fall back to their TTL.
    /// An edge that falls behind by more than this loses its position and falls back until it re-reads.
    #[arg(long, env = "ASIDE_FEED_MAXLEN", default_value_t = DEFAULT_FEED_MAXLEN, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub feed_maxlen: u64,

    /// Interval between two heartbeats on the feed, in ms. Edges consider the feed dead after their
    /// `feed_max_lag_ms` without an entry, so keep it a few times smaller than that.
    #[arg(long, env = "ASIDE_FEED_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub feed_heartbeat_ms: u64,
}

impl Default for FeedArgs {
    fn default() -> Self {
        Self {
            feed_maxlen: DEFAULT_FEED_MAXLEN,
            feed_heartbeat_ms: DEFAULT_HEARTBEAT_MS,
        }
    }
}

/// The feed as the cache writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Feed {
    /// `XADD MAXLEN ~` cap; 0: the feed is off.
    pub max_len: u64,
}

impl FeedArgs {
    pub fn feed(&self) -> Feed {
        Feed {
            max_len: self.feed_maxlen,
        }
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.feed_heartbeat_ms)
    }
}

impl ProfileCache {
    /// The same cache, announcing its changes on the feed as `feed` says.
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = feed;
        self
    }

    pub fn feed(&self) -> Feed {
        self.feed
    }

    /// Appends one heartbeat to the feed; returns its number.
    pub async fn heartbeat(&self) -> Result<u64, CacheError> {
        let max_len = self.feed.max_len;
        self.call("feed_heartbeat", |mut c| async move {
            HEARTBEAT
                .key(FEED_KEY)
                .key(FEED_SEQ_KEY)
                .arg(max_len)
                .invoke_async::<u64>(&mut c)
                .await
        })
        .await
    }
}

/// Sends a heartbeat every `interval` until the task is dropped (nothing when the feed is off). A
/// failure (Redis down) is counted and retried at the next tick: readers see the gap in heartbeats.
///
/// The numbers double as Redis's memory: the counter only grows while Redis keeps what it took, so a
/// heartbeat numbered at or below this origin's previous one means Redis now holds an older state (it
/// restarted without persistence or from an older snapshot, or failed over to a replica without the
/// latest writes). The cache writes it lost would otherwise stay lost until their TTL (hours), since
/// change capture had already applied them: the origin says so and has change capture replay the
/// outbox over what Redis holds ([`super::topology::Topology::lost_writes`]).
pub async fn run_heartbeat(cache: std::sync::Arc<ProfileCache>, interval: Duration) {
    if cache.feed().max_len == 0 || cache.is_disabled() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last: Option<u64> = None;
    let mut failovers = cache.topology().epoch();
    loop {
        ticks.tick().await;
        match cache.heartbeat().await {
            Ok(n) => {
                crate::metrics::feed_heartbeat("sent");
                // A failover followed since the previous heartbeat has its own replay.
                let followed = failovers.has_changed().unwrap_or(false);
                failovers.borrow_and_update();
                if !followed && went_back(last, n) {
                    tracing::warn!(
                        previous = last.unwrap_or_default(),
                        now = n,
                        "the feed's numbers went back: Redis lost writes (a restart without \
                         persistence or from an older snapshot, or a failover without them); \
                         replaying the outbox over what it holds"
                    );
                    cache.topology().lost_writes();
                    failovers.borrow_and_update();
                }
                last = Some(n);
                if failing {
                    tracing::info!("feed heartbeats are reaching Redis again");
                    failing = false;
                }
            }
            Err(e) => {
                crate::metrics::feed_heartbeat("error");
                if !failing {
                    tracing::warn!(error = %e, "feed heartbeat failed; edges fall back to their TTL until heartbeats resume");
                    failing = true;
                }
            }
        }
    }
}

/// Whether heartbeat number `now` says Redis went back since this origin's previous one, `last`.
fn went_back(last: Option<u64>, now: u64) -> bool {
    last.is_some_and(|last| now <= last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_number_at_or_below_the_previous_one_means_redis_went_back() {
        assert!(!went_back(None, 1), "the first heartbeat");
        assert!(!went_back(Some(7), 8));
        assert!(
            !went_back(Some(7), 300),
            "other origins' entries in between"
        );
        assert!(went_back(Some(7), 7));
        assert!(went_back(Some(300), 1), "a restart without persistence");
    }

    #[test]
    fn the_heartbeat_script_is_loaded_by_hash() {
        assert_eq!(HEARTBEAT.get_hash().len(), 40);
    }
}
