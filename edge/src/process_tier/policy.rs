//! The process-wide tier's policy: how long a copy stored there is fresh and kept, what a lookup's bytes
//! mean ([`Found`]), when a fill may overwrite a slot, and how long a breaker mark holds. Pure: no store
//! access ([`super::store`]) and no bytes ([`super::format`]).

use std::time::Duration;

use aside_shared::UserId;
use aside_shared::cache::Freshness;

use super::format::{BreakerMark, SlotValue};
use crate::copy::{Deadlines, Keeping, ProfileEntry, Shelf, Stored};
use crate::feed_tag::Trust;
pub use crate::outcome::Found;

impl SlotValue {
    /// The copy of `entry` to keep, by the rule every tier keeps copies by ([`Deadlines::of`]), with
    /// tier 1's TTL and stale window (`keeping`).
    ///
    /// While the feed vouches for the copy's tag, it is fresh until its soft expiry, but never longer than
    /// `keeping.feed_window` after now: the instances' version floors, which keep a copy that raced an
    /// invalidation from being used, live that long (see `ReadPath::new`).
    pub fn new(entry: &ProfileEntry, shelf: Shelf, now_ms: i64, keeping: Keeping) -> Self {
        let deadlines = Deadlines::of(&shelf, now_ms, keeping);
        Self {
            profile: (*entry.profile).clone(),
            version: entry.version,
            fresh_until_ms: deadlines.fresh_until_ms,
            keep_until_ms: deadlines.keep_until_ms,
            shared: shelf.freshness,
            tag: shelf.tag,
            feed_until_ms: deadlines.feed_until_ms,
        }
    }

    /// The copy in tier 1's terms, with the source's shared soft expiry.
    pub fn stored(&self) -> Stored {
        let (entry, shelf) = self.to_tier1();
        Stored {
            entry,
            shelf,
            shared: self.shared,
        }
    }

    /// The copy's deadlines, as stored.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            fresh_until_ms: self.fresh_until_ms,
            keep_until_ms: self.keep_until_ms,
            feed_until_ms: self.feed_until_ms,
        }
    }

    /// Fresh at `now_ms` by the TTL rule, or by the feed while it vouches for the copy (`trust`).
    pub fn is_fresh(&self, now_ms: i64, trust: Option<Trust>) -> bool {
        self.deadlines().is_fresh(now_ms, trust, self.tag)
    }

    /// The tier-1 copy of this one, and how tier 1 keeps it: never fresh longer than here (so a copy
    /// passed from instance to instance is still fresh for at most `l1_ttl_ms` after it was taken), nor
    /// kept longer. Tier 1 refreshes it early only by its own deadline (cost 0: never early).
    pub fn to_tier1(&self) -> (ProfileEntry, Shelf) {
        let entry = ProfileEntry::new(self.profile.clone(), self.version);
        let gap = self
            .keep_until_ms
            .saturating_sub(self.fresh_until_ms)
            .max(0);
        let shelf = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: self.fresh_until_ms,
                delta_ms: 0,
            }),
            stale_if_error: Some(Duration::from_millis(gap as u64)),
            tag: self.tag,
            feed_until_ms: Some(self.feed_until_ms),
        };
        (entry, shelf)
    }
}

impl BreakerMark {
    /// How long the origin is still to be skipped at `now_ms` (`None` once the mark has passed).
    pub fn remaining(&self, now_ms: i64) -> Option<Duration> {
        let left = self
            .open_until_ms
            .checked_sub(now_ms)
            .filter(|&ms| ms > 0)?;
        Some(Duration::from_millis(left as u64))
    }
}

/// What the bytes of `id`'s slot (`None`: an empty slot) hold for it at `now_ms`.
pub(super) fn found(bytes: Option<&[u8]>, id: UserId, now_ms: i64, trust: Option<Trust>) -> Found {
    match bytes.and_then(SlotValue::decode) {
        Some(v) if v.profile.id == id && v.is_fresh(now_ms, trust) => Found::Fresh(v.stored()),
        Some(v) if v.profile.id == id && now_ms < v.keep_until_ms => Found::Stale(v.stored()),
        _ => Found::Miss,
    }
}

/// Whether a fill of `value` may overwrite its slot: not when the lookup that preceded it saw a newer
/// version of the same id there (`seen`).
pub(super) fn may_fill(value: &SlotValue, seen: Option<i64>) -> bool {
    seen.is_none_or(|v| v <= value.version)
}

#[cfg(test)]
mod tests {
    use super::super::format::tests::{profile, value};
    use super::*;
    use crate::backoff::Breaker;

    #[test]
    fn a_copy_is_fresh_for_at_most_the_ttl_and_kept_for_the_stale_window() {
        let entry = ProfileEntry::new(profile(3), 9);
        let now = 1_700_000_000_000;
        let ttl = Duration::from_millis(2000);
        let stale = Duration::from_secs(600);
        let keeping = Keeping {
            ttl,
            stale,
            feed_window: Some(Duration::ZERO),
        };
        // No shared soft expiry: the TTL alone; kept the stale window after it.
        let v = SlotValue::new(&entry, Shelf::default(), now, keeping);
        assert_eq!(
            (v.fresh_until_ms, v.keep_until_ms),
            (now + 2000, now + 602_000)
        );
        // A soft expiry beyond the TTL: fresh for the TTL, kept from the soft expiry on.
        let far = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now + 30_000,
                delta_ms: 4,
            }),
            stale_if_error: Some(Duration::from_secs(60)),
            ..Shelf::default()
        };
        let v = SlotValue::new(&entry, far, now, keeping);
        assert_eq!(
            (v.fresh_until_ms, v.keep_until_ms),
            (now + 2000, now + 90_000)
        );
        assert_eq!(v.shared, far.freshness);
        // A soft expiry sooner than the TTL wins; an expired one makes a stale-only copy.
        let soon = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now + 500,
                delta_ms: 4,
            }),
            stale_if_error: None,
            ..Shelf::default()
        };
        assert_eq!(
            SlotValue::new(&entry, soon, now, keeping).fresh_until_ms,
            now + 500
        );
        let gone = Shelf {
            freshness: Some(Freshness {
                fresh_until_ms: now - 1,
                delta_ms: 4,
            }),
            stale_if_error: None,
            ..Shelf::default()
        };
        assert!(!SlotValue::new(&entry, gone, now, keeping).is_fresh(now, None));
    }

    #[test]
    fn tier_one_keeps_a_process_tier_copy_no_longer_than_the_process_tier_does() {
        let v = value(42, None);
        let (entry, shelf) = v.to_tier1();
        assert_eq!((entry.version, entry.profile.id.get()), (7, 42));
        let f = shelf.freshness.unwrap();
        assert_eq!((f.fresh_until_ms, f.delta_ms), (v.fresh_until_ms, 0));
        assert_eq!(shelf.stale_if_error, Some(Duration::from_secs(600)));
    }

    #[test]
    fn a_restored_breaker_skips_the_origin_for_what_is_left_then_probes() {
        const MS: u64 = 1_000_000;
        let start = 10_000 * MS;
        let mut b = Breaker::new(3, Duration::from_millis(2000));
        b.open_for(Duration::from_millis(500), start);
        assert_eq!(b.visible(), crate::backoff::Visible::Open);
        assert_eq!(b.remaining(start + 499 * MS), Duration::from_millis(1));
        assert_eq!(b.remaining(start + 500 * MS), Duration::ZERO);
        // Never longer than this instance's own back-off.
        let mut b = Breaker::new(3, Duration::from_millis(2000));
        b.open_for(Duration::from_secs(60), start);
        assert_eq!(b.remaining(start + 1999 * MS), Duration::from_millis(1));
        assert_eq!(b.remaining(start + 2000 * MS), Duration::ZERO);
    }

    #[test]
    fn breaker_marks_expire() {
        let mark = BreakerMark {
            open_until_ms: 1_000,
        };
        assert_eq!(mark.remaining(400), Some(Duration::from_millis(600)));
        assert_eq!(mark.remaining(1_000), None);
        assert_eq!(mark.remaining(5_000), None);
    }

    #[test]
    fn a_slot_holding_another_id_or_an_expired_copy_is_a_miss() {
        let id = |n: i64| UserId::try_from(n).unwrap();
        let v = value(42, None);
        let bytes = v.encode();
        let fresh = v.fresh_until_ms - 1;
        assert!(matches!(
            found(Some(&bytes), id(42), fresh, None),
            Found::Fresh(_)
        ));
        assert!(matches!(
            found(Some(&bytes), id(42), v.fresh_until_ms, None),
            Found::Stale(_)
        ));
        assert!(matches!(
            found(Some(&bytes), id(42), v.keep_until_ms, None),
            Found::Miss
        ));
        assert!(matches!(
            found(Some(&bytes), id(43), fresh, None),
            Found::Miss
        ));
        assert!(matches!(found(None, id(42), fresh, None), Found::Miss));
        assert!(matches!(
            found(Some(b"junk"), id(42), fresh, None),
            Found::Miss
        ));
        assert!(may_fill(&v, None) && may_fill(&v, Some(7)) && !may_fill(&v, Some(8)));
    }
}
