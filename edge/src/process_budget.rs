//! The origin budget per process: one bucket ([`SharedBucket`]) that every instance of the Spin process
//! takes from, kept at [`BUDGET_KEY`] in the key-value store `origin_budget_store` and replaced by
//! compare-and-swap (`wasi:keyvalue/atomics`, which Spin 4 links for every component and spin-sdk 6
//! binds under `spin_sdk::experimental`).
//!
//! A take reads the bucket, reads the clock, decides, and swaps the new state in only if nobody else
//! swapped since the read; when someone did, it decides again on what they wrote, up to [`ATTEMPTS`]
//! times, and if every swap was lost (other instances were taking at that moment) it refuses, as an
//! empty bucket would. Refusals write nothing, and an instance that has already seen the bucket
//! drained past a take refuses it without asking the store (the arrival time only moves forward). So the process sends at most `origin_budget_burst`
//! reads at once and `origin_budget_per_s` a second, whatever the number of instances; two exceptions,
//! both small: Spin's in-memory store creates an absent key without comparing, so instances that race
//! to create the bucket each take from a full one (once per process), and an instance that cannot use
//! the store falls back to its own bucket ([`crate::budget::OriginBudget`]).
//!
//! Falls back when the store cannot be opened (not in the component's `key_value_stores`, not defined
//! by the runtime: then for the life of the instance, logged once) or a call fails (then for that
//! read); counted in `aside_edge_origin_budget_fallbacks_total`, logged once per 1,000.
//!
//! The calls are synchronous host calls (the `wasi:keyvalue` draft has no async form): the instance
//! waits for them. With the store in memory (runtime-config.toml, `type = "spin"` without `path`) a
//! take is three calls of a few microseconds; with a store over the network (Redis, a cloud store)
//! every origin read would wait its round trips, so keep this store local.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::budget::{BudgetSettings, SharedBucket};

/// The bucket's key in the store (outside the tier's `aside:l1:` slots and the breakers' marks).
pub const BUDGET_KEY: &str = "aside:budget:origin";

/// Compare-and-swap rounds a take tries before falling back to the instance's bucket.
pub const ATTEMPTS: usize = 4;

/// What a take from the process's bucket decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Granted,
    /// Empty: the wait until a token is back.
    Refused(Duration),
    /// The store could not decide (see the module's doc): the instance's own bucket decides.
    Unavailable,
}

/// The instance's handle on the process's bucket.
pub struct ProcessBudget {
    label: String,
    settings: BudgetSettings,
    bucket: RefCell<Handle>,
    /// Takes that fell back so far (for the log's rate).
    fallbacks: RefCell<u64>,
    /// The latest state of the bucket this instance read or wrote. The arrival time only moves forward,
    /// so a take this state already refuses is refused without asking the store: while the bucket is
    /// drained (a spike of misses), refusals cost no host call.
    seen: Cell<Option<SharedBucket>>,
}

enum Handle {
    Closed,
    #[cfg(target_arch = "wasm32")]
    Open(host::Bucket),
    /// The runtime refused to open the store: the instance keeps its own bucket. (Off the host nothing
    /// is ever opened or refused.)
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    Refused,
}

impl ProcessBudget {
    /// A budget in store `label`; `None` when `label` is empty or the budget is off (a zero rate).
    pub fn new(label: &str, settings: BudgetSettings) -> Option<Self> {
        (!label.is_empty() && settings.per_second > 0).then(|| Self {
            label: label.to_string(),
            settings,
            bucket: RefCell::new(Handle::Closed),
            fallbacks: RefCell::new(0),
            seen: Cell::new(None),
        })
    }

    /// Takes one read from the process's bucket.
    ///
    /// `now_us` reads the wall clock, once per attempt and after the bucket's state: a clock read
    /// taken before another instance's take would see that take's arrival time ahead of it.
    pub fn take(&self, now_us: impl Fn() -> i64) -> Take {
        if let Some(seen) = self.seen.get()
            && let Err(wait) = take_from(Some(seen), now_us(), self.settings)
        {
            return Take::Refused(wait);
        }
        let taken = self.with_bucket(|bucket| host::take(bucket, &now_us, self.settings));
        match taken {
            Some(Ok((take, state))) => {
                self.note(state);
                take
            }
            Some(Err(why)) => {
                self.fell_back(&why);
                Take::Unavailable
            }
            None => Take::Unavailable,
        }
    }

    /// Reads the process's bucket would grant at once at `now_us`; `None` when the store cannot say.
    pub fn tokens_at(&self, now_us: i64) -> Option<f64> {
        self.with_bucket(host::stored)?.ok().map(|stored| {
            let stored = SharedBucket::trusted(stored, now_us, self.settings);
            SharedBucket::tokens_at(stored, now_us, self.settings)
        })
    }

    /// Keeps `state` if it is later than the one kept (a newer read or write of the bucket).
    fn note(&self, state: Option<SharedBucket>) {
        let later = match (self.seen.get(), state) {
            (Some(kept), Some(new)) => new.arrival_us > kept.arrival_us,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if later {
            self.seen.set(state);
        }
    }

    /// Takes that fell back to the instance's bucket so far.
    pub fn fallbacks(&self) -> u64 {
        *self.fallbacks.borrow()
    }

    fn fell_back(&self, why: &str) {
        let mut n = self.fallbacks.borrow_mut();
        *n += 1;
        if *n % 1000 == 1 {
            eprintln!(
                "aside-edge: the process's origin budget (key-value store `{}`) could not decide ({why}); \
                 this instance's own bucket did (fallbacks so far by this instance: {n})",
                self.label
            );
        }
    }

    /// Runs `f` on the open bucket, opening it on first use; `None` when the store is refused.
    #[cfg(target_arch = "wasm32")]
    fn with_bucket<T>(&self, f: impl FnOnce(&host::Bucket) -> T) -> Option<T> {
        let mut handle = self.bucket.borrow_mut();
        if matches!(*handle, Handle::Closed) {
            *handle = match host::open(&self.label) {
                Ok(bucket) => Handle::Open(bucket),
                Err(e) => {
                    eprintln!(
                        "aside-edge: origin budget per instance, not per process: cannot open key-value \
                         store `{}` ({e}); is it in the component's key_value_stores and defined by the \
                         runtime?",
                        self.label
                    );
                    Handle::Refused
                }
            };
        }
        match &*handle {
            Handle::Open(bucket) => Some(f(bucket)),
            _ => None,
        }
    }

    /// Off the host there is no store: every take falls back.
    #[cfg(not(target_arch = "wasm32"))]
    fn with_bucket<T>(&self, _f: impl FnOnce(&host::Bucket) -> T) -> Option<T> {
        let _ = &self.bucket;
        None
    }
}

/// A take from the process's bucket as read from the store (or last seen) at `now_us`: its state
/// checked against a clock step first ([`SharedBucket::trusted`]).
fn take_from(
    stored: Option<SharedBucket>,
    now_us: i64,
    settings: BudgetSettings,
) -> Result<SharedBucket, Duration> {
    SharedBucket::take(
        SharedBucket::trusted(stored, now_us, settings),
        now_us,
        settings,
    )
}

#[cfg(target_arch = "wasm32")]
mod host {
    use spin_sdk::experimental::wasi::keyvalue::{atomics, store};

    use super::{ATTEMPTS, BUDGET_KEY, Take};
    use crate::budget::{BudgetSettings, SharedBucket};

    pub use store::Bucket;

    pub fn open(label: &str) -> Result<Bucket, String> {
        store::open(label).map_err(|e| format!("{e:?}"))
    }

    /// The bucket's stored state (`None`: absent or not a bucket).
    pub fn stored(bucket: &Bucket) -> Result<Option<SharedBucket>, String> {
        let bytes = bucket.get(BUDGET_KEY).map_err(|e| format!("{e:?}"))?;
        Ok(bytes.as_deref().and_then(SharedBucket::decode))
    }

    /// One take: read, decide, swap; again on a lost swap, at most `ATTEMPTS` times, then refused.
    pub fn take(
        bucket: &Bucket,
        now_us: &dyn Fn() -> i64,
        settings: BudgetSettings,
    ) -> Result<(Take, Option<SharedBucket>), String> {
        let mut cas = atomics::Cas::new(bucket, BUDGET_KEY).map_err(|e| format!("{e:?}"))?;
        let mut stored = None;
        for _ in 0..ATTEMPTS {
            let current = cas.current().map_err(|e| format!("{e:?}"))?;
            stored = current.as_deref().and_then(SharedBucket::decode);
            let next = match super::take_from(stored, now_us(), settings) {
                Ok(next) => next,
                Err(wait) => return Ok((Take::Refused(wait), stored)),
            };
            match atomics::swap(cas, &next.encode()) {
                Ok(()) => return Ok((Take::Granted, Some(next))),
                Err(atomics::CasError::CasFailed(again)) => cas = again,
                Err(atomics::CasError::StoreError(e)) => return Err(format!("{e:?}")),
            }
        }
        // Other instances took at every attempt: the bucket is being spent right now.
        let interval = 1_000_000 / u64::from(settings.per_second.max(1));
        Ok((
            Take::Refused(std::time::Duration::from_micros(interval.max(1))),
            stored,
        ))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::Take;
    use crate::budget::{BudgetSettings, SharedBucket};

    /// No store off the host.
    pub enum Bucket {}

    pub fn take(
        bucket: &Bucket,
        _now_us: &dyn Fn() -> i64,
        _settings: BudgetSettings,
    ) -> Result<(Take, Option<SharedBucket>), String> {
        match *bucket {}
    }

    pub fn stored(bucket: &Bucket) -> Result<Option<SharedBucket>, String> {
        match *bucket {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_label_or_no_rate_is_no_process_budget() {
        let settings = BudgetSettings {
            per_second: 5,
            burst: 5,
        };
        assert!(ProcessBudget::new("", settings).is_none());
        let off = BudgetSettings {
            per_second: 0,
            burst: 5,
        };
        assert!(ProcessBudget::new("default", off).is_none());
        let budget = ProcessBudget::new("default", settings).unwrap();
        // Off the host the store is never there: the instance's bucket decides, and nothing is counted.
        assert_eq!(budget.take(|| 0), Take::Unavailable);
        assert_eq!(budget.tokens_at(0), None);
        assert_eq!(budget.fallbacks(), 0);
    }

    #[test]
    fn a_drained_state_already_seen_refuses_without_the_store() {
        let settings = BudgetSettings {
            per_second: 10,
            burst: 2,
        };
        let budget = ProcessBudget::new("default", settings).unwrap();
        let now = 1_700_000_000_000_000;
        // Seen drained (two takes at `now`): refused at once, with the wait until a token is back.
        budget.note(Some(SharedBucket {
            arrival_us: now + 200_000,
        }));
        assert_eq!(
            budget.take(|| now),
            Take::Refused(Duration::from_millis(100))
        );
        // An older state does not replace a newer one.
        budget.note(Some(SharedBucket { arrival_us: now }));
        assert!(matches!(budget.take(|| now + 50_000), Take::Refused(_)));
        // Once the state seen would grant, the store decides (off the host: there is none).
        assert_eq!(budget.take(|| now + 100_000), Take::Unavailable);
    }
}
