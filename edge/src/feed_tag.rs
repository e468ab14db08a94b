//! The feed position a copy carries, and what the invalidation feed lets an instance trust: the values
//! that tier 1 and the process-wide tier keep with their copies ([`crate::feed`] reads the feed).

/// The feed position a copy was taken at: the epoch and the last entry number the instance had applied
/// before it asked Redis or the origin. Epoch 0: no feed (the copy is never trusted beyond the TTL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedTag {
    pub epoch: u64,
    pub seq: u64,
}

/// What the feed lets an instance trust now: copies of this epoch tagged at or after `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    pub epoch: u64,
    pub since: u64,
}

impl Trust {
    pub fn covers(trust: Option<Trust>, tag: FeedTag) -> bool {
        trust.is_some_and(|t| tag.epoch != 0 && tag.epoch == t.epoch && tag.seq >= t.since)
    }
}
