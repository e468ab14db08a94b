//! A copy of a profile as every tier keeps it, and the one rule for its deadlines: the value types at
//! the bottom of the edge, below the tiers ([`crate::l1`], [`crate::process_tier`]) and the plan
//! ([`crate::plan`]). No I/O, no clock: "now" is an argument.
//!
//! A copy is *fresh* until its soft expiry (its source's shared one, a [`Freshness`]) or the tier's TTL
//! from when it was taken, whichever comes first; then kept, only to answer with when the origin cannot,
//! until its soft expiry plus the stale window (the tier's, or the source's shorter `stale-if-error`).
//! While the invalidation feed vouches for the copy's tag, it is fresh until its soft expiry instead of
//! the TTL (never past its hard expiry, and at most the tier's feed window from when it was taken).
//! [`Deadlines::of`] is that rule; tier 1 and the process-wide tier both keep copies by it.

use std::rc::Rc;
use std::time::Duration;

use aside_shared::UserProfile;
use aside_shared::cache::Freshness;
use bytes::Bytes;

use crate::feed_tag::{FeedTag, Trust};

/// What tier 1 keeps per user: the profile (to answer `?fields` by projection), its serialised JSON
/// (to answer a full read without serialising again) and its row version. Clones are cheap.
#[derive(Debug, Clone)]
pub struct ProfileEntry {
    pub profile: Rc<UserProfile>,
    pub json: Bytes,
    pub version: i64,
}

impl ProfileEntry {
    /// Bookkeeping per entry on top of the strings: slot, index entry, `Rc` and `Bytes` headers.
    const OVERHEAD: usize = 192;

    pub fn new(profile: UserProfile, version: i64) -> Self {
        let json = serde_json::to_vec(&profile).expect("profiles serialise");
        Self {
            profile: Rc::new(profile),
            json: Bytes::from(json),
            version,
        }
    }

    /// Approximate memory held: the JSON, about as much again for the parsed strings, and the overhead.
    pub fn weight(&self) -> usize {
        2 * self.json.len() + Self::OVERHEAD
    }
}

/// How long a copy may be used, as its source said: what a tier needs to know to keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shelf {
    /// The shared soft expiry and load cost: the hash's `_fresh_until`/`_delta_ms`, or the origin's
    /// `max-age` (with the origin call's duration as the cost). `None` when the source did not say (a
    /// hash from an older writer, an origin without `cache-control`): then the tier's own TTL is all.
    pub freshness: Option<Freshness>,
    /// The source's `stale-if-error` window, when it said one.
    pub stale_if_error: Option<Duration>,
    /// The invalidation feed's position the copy was taken at (see [`crate::feed`]): while the feed
    /// vouches for it, the copy is fresh until its soft expiry instead of the tier's TTL.
    pub tag: FeedTag,
    /// The soft expiry that holds while the feed vouches for the copy, when it is not `freshness`'s
    /// (a copy from the process-wide tier, whose `freshness` is already cut to the TTL).
    pub feed_until_ms: Option<i64>,
}

/// A fresh tier-1 copy, and the shared freshness XFetch decides on.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: ProfileEntry,
    pub shared: Option<Freshness>,
}

/// A copy read from the process-wide tier, in tier 1's terms: the entry, how tier 1 keeps it (never
/// fresh nor kept longer than there), and the source's shared soft expiry (XFetch decides with it).
#[derive(Debug, Clone)]
pub struct Stored {
    pub entry: ProfileEntry,
    pub shelf: Shelf,
    pub shared: Option<Freshness>,
}

/// What tier 1 says about an answer at some version (`crate::l1::Tier1::observe`).
#[derive(Debug, Clone)]
pub enum Observed {
    /// Not older than anything this instance knows: serve it (the floor now includes it).
    Current,
    /// Older than what this instance answered or wrote before: serve this newer entry instead.
    Newer(ProfileEntry),
    /// The row was deleted through this instance at or after that version: answer 404.
    Deleted,
    /// Older, and this instance has no newer body at hand (it expired, or only a `?fields` answer was
    /// seen): look again.
    Stale,
}

/// How a tier keeps its copies: its settings for the rule of [`Deadlines::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keeping {
    /// The longest a copy is fresh after it was taken, by the TTL rule (`l1_ttl_ms`).
    pub ttl: Duration,
    /// The longest a copy is kept past its soft expiry as a stale-if-error fallback (`l1_stale_ms`).
    pub stale: Duration,
    /// The longest after it was taken a copy may be fresh because the feed vouches for it (`None`: no
    /// bound but the copy's own deadlines).
    pub feed_window: Option<Duration>,
}

/// When a copy stops being fresh and stops being kept, as wall-clock milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Fresh before this by the TTL rule.
    pub fresh_until_ms: i64,
    /// Kept as a stale-if-error fallback until this (never before `fresh_until_ms`).
    pub keep_until_ms: i64,
    /// Fresh before this while the feed vouches for the copy's tag (between the other two).
    pub feed_until_ms: i64,
}

impl Deadlines {
    /// The deadlines of a copy taken at `now_ms` whose source said `shelf`, in a tier that keeps copies
    /// as `keeping` says. A soft expiry already past counts as now: the copy is not fresh, and kept for
    /// the stale window from now. A copy without a feed tag (epoch 0) is never fresh by the feed.
    pub fn of(shelf: &Shelf, now_ms: i64, keeping: Keeping) -> Self {
        let own = now_ms.saturating_add(millis(keeping.ttl));
        let soft = shelf
            .freshness
            .map_or(own, |f| f.fresh_until_ms.max(now_ms));
        let window = millis(
            shelf
                .stale_if_error
                .map_or(keeping.stale, |w| w.min(keeping.stale)),
        );
        let fresh_until_ms = soft.min(own);
        let keep_until_ms = soft.saturating_add(window).max(fresh_until_ms);
        let feed_until_ms = if shelf.tag.epoch == 0 {
            fresh_until_ms
        } else {
            let window_end = keeping
                .feed_window
                .map_or(i64::MAX, |w| now_ms.saturating_add(millis(w)));
            shelf
                .feed_until_ms
                .map_or(soft, |ms| ms.max(now_ms))
                .min(window_end)
                .min(keep_until_ms)
                .max(fresh_until_ms)
        };
        Self {
            fresh_until_ms,
            keep_until_ms,
            feed_until_ms,
        }
    }

    /// Fresh at `now_ms` by the TTL rule, or by the feed while it vouches for `tag` (`trust`).
    pub fn is_fresh(&self, now_ms: i64, trust: Option<Trust>, tag: FeedTag) -> bool {
        now_ms < self.fresh_until_ms || (Trust::covers(trust, tag) && now_ms < self.feed_until_ms)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn keeping(feed_window: Option<Duration>) -> Keeping {
        Keeping {
            ttl: Duration::from_millis(2_000),
            stale: Duration::from_secs(600),
            feed_window,
        }
    }

    fn shelf(fresh_until_ms: Option<i64>, epoch: u64, feed_until_ms: Option<i64>) -> Shelf {
        Shelf {
            freshness: fresh_until_ms.map(|fresh_until_ms| Freshness {
                fresh_until_ms,
                delta_ms: 3,
            }),
            stale_if_error: Some(Duration::from_secs(60)),
            tag: FeedTag { epoch, seq: 1 },
            feed_until_ms,
        }
    }

    #[test]
    fn a_copy_is_fresh_for_the_shorter_of_the_ttl_and_its_soft_expiry_then_kept_the_stale_window() {
        let d = Deadlines::of(&Shelf::default(), NOW, keeping(None));
        assert_eq!(
            (d.fresh_until_ms, d.keep_until_ms, d.feed_until_ms),
            (NOW + 2_000, NOW + 602_000, NOW + 2_000)
        );
        let d = Deadlines::of(&shelf(Some(NOW + 30_000), 0, None), NOW, keeping(None));
        assert_eq!(
            (d.fresh_until_ms, d.keep_until_ms),
            (NOW + 2_000, NOW + 90_000)
        );
        let d = Deadlines::of(&shelf(Some(NOW + 500), 0, None), NOW, keeping(None));
        assert_eq!(d.fresh_until_ms, NOW + 500);
        // A soft expiry already past counts as now: not fresh, kept the stale window from now.
        let d = Deadlines::of(&shelf(Some(NOW - 5_000), 0, None), NOW, keeping(None));
        assert_eq!((d.fresh_until_ms, d.keep_until_ms), (NOW, NOW + 60_000));
        assert!(!d.is_fresh(NOW, None, FeedTag::default()));
    }

    #[test]
    fn the_feed_keeps_a_tagged_copy_fresh_to_its_soft_expiry_within_the_tier_s_window() {
        let trust = Some(Trust { epoch: 4, since: 0 });
        let tag = FeedTag { epoch: 4, seq: 1 };
        let soft = shelf(Some(NOW + 30_000), 4, None);
        let d = Deadlines::of(&soft, NOW, keeping(None));
        assert_eq!(d.feed_until_ms, NOW + 30_000);
        assert!(d.is_fresh(NOW + 10_000, trust, tag));
        assert!(!d.is_fresh(NOW + 10_000, None, tag));
        let d = Deadlines::of(&soft, NOW, keeping(Some(Duration::from_secs(5))));
        assert_eq!(d.feed_until_ms, NOW + 5_000);
        // The copy's own feed deadline counts, never past its hard expiry nor before the TTL's.
        let own = shelf(Some(NOW + 30_000), 4, Some(NOW + 500_000));
        assert_eq!(
            Deadlines::of(&own, NOW, keeping(None)).feed_until_ms,
            NOW + 90_000
        );
        let early = shelf(Some(NOW + 30_000), 4, Some(NOW + 1));
        assert_eq!(
            Deadlines::of(&early, NOW, keeping(None)).feed_until_ms,
            NOW + 2_000
        );
        // No feed tag: the feed never vouches.
        let untagged = Deadlines::of(&shelf(Some(NOW + 30_000), 0, None), NOW, keeping(None));
        assert_eq!(untagged.feed_until_ms, untagged.fresh_until_ms);
    }
}
