//! How `aside-load` chooses the id of each request.
//!
//! Ids `1..=n` are first put in a random order (a fixed seed, so every run and every process agrees):
//! rank `r` of a distribution is the `r`-th id of that order, so the hot ids of a Zipf run are spread over
//! the table rather than being its first rows.
//!
//! * `zipf`: rank drawn from Zipf(n, s) (`rand_distr::Zipf`; s = 1.0 by default): rank 1 is asked about
//!   twice as often as rank 2, ten times as often as rank 10.
//! * `uniform`: every id equally likely, or only the first `hot` ids of the order (a hot set).
//! * `walk`: each id once, in the shuffled order, shared by all connections: every request is for an id
//!   not asked before (cache misses); the run ends when the ids run out.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use rand_distr::{Distribution as _, Zipf};

/// The key distributions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    Zipf,
    Uniform,
    Walk,
}

impl std::fmt::Display for KeyDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyDist::Zipf => "zipf",
            KeyDist::Uniform => "uniform",
            KeyDist::Walk => "walk",
        })
    }
}

/// The shared part of a key chooser: the id order and, for a walk, how far it has got.
pub struct Keys {
    order: Vec<u64>,
    dist: KeyDist,
    zipf: Option<Zipf<f64>>,
    /// Uniform draws are from the first `span` ids of the order.
    span: usize,
    next: AtomicUsize,
}

impl Keys {
    /// `n` ids (`1..=n`); `hot` limits a uniform choice to that many ids; `s` is the Zipf exponent.
    pub fn new(n: u64, dist: KeyDist, s: f64, hot: Option<u64>, seed: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(n > 0, "no ids to choose from");
        let mut order: Vec<u64> = (1..=n).collect();
        order.shuffle(&mut SmallRng::seed_from_u64(seed));
        let zipf = match dist {
            KeyDist::Zipf => Some(
                Zipf::new(n as f64, s)
                    .map_err(|e| anyhow::anyhow!("invalid Zipf parameters: {e}"))?,
            ),
            _ => None,
        };
        let span = hot.map_or(n, |h| h.clamp(1, n)) as usize;
        Ok(Self {
            order,
            dist,
            zipf,
            span,
            next: AtomicUsize::new(0),
        })
    }

    /// The next id, or `None` when a walk has used every id.
    pub fn pick(&self, rng: &mut SmallRng) -> Option<u64> {
        match self.dist {
            KeyDist::Zipf => {
                let rank = self.zipf.as_ref().expect("zipf").sample(rng) as usize;
                Some(self.order[rank.clamp(1, self.order.len()) - 1])
            }
            KeyDist::Uniform => Some(self.order[rng.random_range(0..self.span)]),
            KeyDist::Walk => self
                .order
                .get(self.next.fetch_add(1, Ordering::Relaxed))
                .copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn a_walk_visits_every_id_once_then_stops() {
        let keys = Keys::new(1000, KeyDist::Walk, 1.0, None, 3).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let seen: Vec<u64> = std::iter::from_fn(|| keys.pick(&mut rng)).collect();
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1000);
        assert!(seen.iter().all(|id| (1..=1000).contains(id)));
        assert_ne!(seen[..10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "not shuffled");
    }

    #[test]
    fn zipf_makes_the_top_rank_about_twice_as_frequent_as_the_second() {
        let keys = Keys::new(10_000, KeyDist::Zipf, 1.0, None, 3).unwrap();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for _ in 0..200_000 {
            *counts.entry(keys.pick(&mut rng).unwrap()).or_default() += 1;
        }
        let mut by_count: Vec<u64> = counts.values().copied().collect();
        by_count.sort_unstable_by(|a, b| b.cmp(a));
        let ratio = by_count[0] as f64 / by_count[1] as f64;
        assert!((1.6..2.5).contains(&ratio), "top/second = {ratio}");
        // H(10 000) ≈ 9.79: the top id gets about 10 % of all requests.
        let top_share = by_count[0] as f64 / 200_000.0;
        assert!((0.08..0.125).contains(&top_share), "top share {top_share}");
    }

    #[test]
    fn a_hot_set_limits_uniform_choices() {
        let keys = Keys::new(10_000, KeyDist::Uniform, 1.0, Some(16), 3).unwrap();
        let mut rng = SmallRng::seed_from_u64(2);
        let distinct: HashSet<u64> = (0..10_000).map(|_| keys.pick(&mut rng).unwrap()).collect();
        assert_eq!(distinct.len(), 16);
    }
}
