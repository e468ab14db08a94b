//! How far the outbox has been applied, given that outbox ids do not commit in order.
//!
//! Outbox ids come from a sequence when a row is written, but transactions commit in any order: id 11 can
//! be visible while id 10's transaction is still running (or will roll back, leaving 10 empty forever).
//! A plain "highest id applied" watermark would skip 10 for good. So [`Progress`] keeps:
//!
//! * `max_seen`: the highest id applied;
//! * `gaps`: ids below `max_seen` not seen yet, re-read on every poll until they appear or are known
//!   never to appear;
//! * the watermark: every id up to it is applied or known never to appear, i.e. just below the first
//!   gap (or `max_seen`). It is what is stored in PostgreSQL, so a restart resumes from it.
//!
//! When is a gap id `g` known never to appear? It was taken from the sequence before an id `h > g` that
//! a snapshot `S` saw, hence by a transaction that already had its transaction id, which is therefore
//! below `S`'s xmax. (The triggers take a transaction id before they write the outbox.) Once a later
//! snapshot's xmin reaches that xmax, every such transaction has ended: if `g` is still not visible, its
//! transaction rolled back. So each poll records `(max_seen, xmax)`, and gaps up to the newest recorded
//! `max_seen` whose xmax is at or below the current xmin are dropped.

use std::collections::VecDeque;

/// Observations kept for settling gaps; beyond this the newest one is overwritten (it only delays).
const MAX_OBSERVATIONS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    max_seen: i64,
    /// Disjoint, ascending, inclusive ranges within `(watermark, max_seen]`.
    gaps: Vec<(i64, i64)>,
    /// `(max_seen, xmax)` of earlier polls, ascending in both.
    observations: VecDeque<(i64, i64)>,
}

impl Progress {
    /// Starts from a stored watermark: everything up to it is done.
    pub fn new(watermark: i64) -> Self {
        Self {
            max_seen: watermark,
            gaps: Vec::new(),
            observations: VecDeque::new(),
        }
    }

    /// Read outbox rows after this id.
    pub fn max_seen(&self) -> i64 {
        self.max_seen
    }

    /// Read outbox rows inside these ranges too.
    pub fn gaps(&self) -> &[(i64, i64)] {
        &self.gaps
    }

    /// Every outbox id up to this one is applied or will never exist.
    pub fn watermark(&self) -> i64 {
        self.gaps.first().map_or(self.max_seen, |(lo, _)| lo - 1)
    }

    /// Records that the changes with ids `applied` (ascending) were applied, read in a snapshot with
    /// `xmin`/`xmax`, which also saw every outbox row of the gaps that is not in `applied`.
    pub fn record(&mut self, applied: &[i64], xmin: i64, xmax: i64) {
        for &id in applied {
            if id > self.max_seen {
                if id > self.max_seen + 1 {
                    self.gaps.push((self.max_seen + 1, id - 1));
                }
                self.max_seen = id;
            } else {
                self.fill(id);
            }
        }
        self.observe(xmax);
        self.settle(xmin);
    }

    /// Removes `id` from the gaps.
    fn fill(&mut self, id: i64) {
        let Some(i) = self.gaps.iter().position(|&(lo, hi)| lo <= id && id <= hi) else {
            return;
        };
        let (lo, hi) = self.gaps[i];
        let mut replacement = Vec::with_capacity(2);
        if lo < id {
            replacement.push((lo, id - 1));
        }
        if id < hi {
            replacement.push((id + 1, hi));
        }
        self.gaps.splice(i..=i, replacement);
    }

    fn observe(&mut self, xmax: i64) {
        match self.observations.back() {
            // Nothing new seen: the older observation settles sooner.
            Some(&(seen, _)) if seen >= self.max_seen => {}
            _ if self.observations.len() >= MAX_OBSERVATIONS => {
                *self.observations.back_mut().expect("not empty") = (self.max_seen, xmax);
            }
            _ => self.observations.push_back((self.max_seen, xmax)),
        }
    }

    /// Drops the gaps that can no longer fill.
    fn settle(&mut self, xmin: i64) {
        let mut settled = None;
        while let Some(&(seen, xmax)) = self.observations.front() {
            if xmax > xmin {
                break;
            }
            settled = Some(seen);
            self.observations.pop_front();
        }
        if let Some(upto) = settled {
            self.gaps.retain_mut(|(lo, hi)| {
                if *hi <= upto {
                    return false;
                }
                *lo = (*lo).max(upto + 1);
                true
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_ids_move_the_watermark_at_once() {
        let mut p = Progress::new(10);
        p.record(&[11, 12, 13], 100, 100);
        assert_eq!((p.watermark(), p.max_seen()), (13, 13));
        assert!(p.gaps().is_empty());
    }

    #[test]
    fn a_gap_holds_the_watermark_until_its_row_appears() {
        let mut p = Progress::new(0);
        // Id 2's transaction (xid 50) is still running: xmin 50 < xmax 60.
        p.record(&[1, 3, 4], 50, 60);
        assert_eq!(p.watermark(), 1);
        assert_eq!(p.gaps(), &[(2, 2)]);
        assert_eq!(p.max_seen(), 4);
        // Nothing new, transaction still running.
        p.record(&[], 50, 61);
        assert_eq!(p.watermark(), 1);
        // It commits: the next poll reads id 2 through the gap.
        p.record(&[2], 61, 61);
        assert_eq!(p.watermark(), 4);
        assert!(p.gaps().is_empty());
    }

    #[test]
    fn a_rolled_back_gap_is_dropped_once_every_older_transaction_ended() {
        let mut p = Progress::new(0);
        p.record(&[1, 3], 50, 60);
        assert_eq!(p.watermark(), 1);
        // Transactions below 60 have not all ended yet.
        p.record(&[], 59, 70);
        assert_eq!(p.watermark(), 1);
        // Now they have, and id 2 did not appear: it never will.
        p.record(&[], 60, 70);
        assert_eq!(p.watermark(), 3);
        assert!(p.gaps().is_empty());
    }

    #[test]
    fn settling_only_covers_ids_seen_when_the_observation_was_made() {
        let mut p = Progress::new(0);
        p.record(&[1, 3], 50, 60); // observation (3, 60)
        p.record(&[6], 55, 65); // gap 4..=5, observation (6, 65)
        assert_eq!(p.gaps(), &[(2, 2), (4, 5)]);
        p.record(&[], 60, 66); // settles up to 3 only
        assert_eq!(p.gaps(), &[(4, 5)]);
        assert_eq!(p.watermark(), 3);
        p.record(&[5], 64, 66);
        assert_eq!(p.gaps(), &[(4, 4)]);
        p.record(&[], 66, 66);
        assert_eq!(p.watermark(), 6);
    }

    #[test]
    fn an_idle_database_settles_a_gap_in_the_same_poll() {
        // xmin == xmax: nothing is running, so an id not visible now never will be.
        let mut p = Progress::new(0);
        p.record(&[2], 40, 40);
        assert_eq!(p.watermark(), 2);
    }

    #[test]
    fn filling_the_middle_of_a_range_splits_it() {
        let mut p = Progress::new(0);
        p.record(&[10], 1, 5);
        assert_eq!(p.gaps(), &[(1, 9)]);
        p.record(&[1, 5, 9], 1, 6);
        assert_eq!(p.gaps(), &[(2, 4), (6, 8)]);
        assert_eq!(p.watermark(), 1);
    }

    #[test]
    fn observations_stay_bounded() {
        let mut p = Progress::new(0);
        for i in 1..1000 {
            p.record(&[2 * i], 0, i);
        }
        assert!(p.observations.len() <= MAX_OBSERVATIONS);
        p.record(&[], 1000, 1000);
        assert_eq!(p.watermark(), 1998);
    }
}
