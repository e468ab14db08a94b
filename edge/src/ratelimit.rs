//! A per-caller limit on writes: one token bucket per subject, in this instance's memory.
//!
//! Each subject may write `burst` times at once and then `per_minute` times a minute (the bucket refills
//! continuously). A write over the limit is answered `429` with `Retry-After` (the seconds until one
//! write is allowed again) before anything else is done. The limit is **per instance**: Spin runs
//! several instances (and a deployment several hosts), each with its own buckets, so a caller spread
//! over `n` instances may write up to `n` times the rate; it bounds abuse, it is not a quota.
//!
//! Memory is bounded: at most `max_callers` buckets. When that many are kept, full buckets (callers
//! who have not written for a while: they carry no state) are dropped first, then the least recently
//! used one.

use std::collections::HashMap;

use crate::clock::Nanos;

const NANOS_PER_MINUTE: f64 = 60e9;

/// The limit's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteLimit {
    /// Writes a minute, sustained. 0 turns the limit off.
    pub per_minute: u32,
    /// Writes allowed at once (the bucket's size, at least 1).
    pub burst: u32,
    /// Subjects remembered at most.
    pub max_callers: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Nanos,
}

/// The buckets of one instance.
#[derive(Debug)]
pub struct WriteLimiter {
    limit: WriteLimit,
    buckets: HashMap<String, Bucket>,
}

impl WriteLimiter {
    pub fn new(limit: WriteLimit) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes one write from `caller`'s bucket at `now`; `Err(seconds)` to wait when it is empty.
    pub fn allow(&mut self, caller: &str, now: Nanos) -> Result<(), u32> {
        if self.limit.per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(self.limit.burst.max(1));
        let per_nano = f64::from(self.limit.per_minute) / NANOS_PER_MINUTE;
        if !self.buckets.contains_key(caller) && self.buckets.len() >= self.limit.max_callers {
            self.make_room(now, burst, per_nano);
        }
        let bucket = self.buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_sub(bucket.updated) as f64;
        bucket.tokens = (bucket.tokens + elapsed * per_nano).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_nanos = (1.0 - bucket.tokens) / per_nano;
            Err(((wait_nanos / 1e9).ceil() as u32).max(1))
        }
    }

    /// How many callers are remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now: Nanos, burst: f64, per_nano: f64) {
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_sub(b.updated) as f64;
            b.tokens + elapsed * per_nano < burst
        });
        while self.buckets.len() >= self.limit.max_callers.max(1) {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => self.buckets.remove(&key),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn limiter(per_minute: u32, burst: u32, max_callers: usize) -> WriteLimiter {
        WriteLimiter::new(WriteLimit {
            per_minute,
            burst,
            max_callers,
        })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut l = limiter(60, 3, 100);
        for _ in 0..3 {
            assert_eq!(l.allow("a", 0), Ok(()));
        }
        assert_eq!(l.allow("a", 0), Err(1), "one write a second refills in 1 s");
        assert_eq!(l.allow("b", 0), Ok(()), "another caller has its own bucket");
        assert_eq!(l.allow("a", SEC), Ok(()));
        assert_eq!(l.allow("a", SEC), Err(1));
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_write() {
        let mut l = limiter(2, 1, 100);
        assert_eq!(l.allow("a", 0), Ok(()));
        assert_eq!(l.allow("a", 0), Err(30));
        assert_eq!(l.allow("a", 20 * SEC), Err(10));
    }

    #[test]
    fn zero_per_minute_turns_the_limit_off() {
        let mut l = limiter(0, 1, 1);
        for _ in 0..100 {
            assert_eq!(l.allow("a", 0), Ok(()));
        }
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_drops_idle_callers_first() {
        let mut l = limiter(60, 2, 3);
        l.allow("busy", 0).unwrap();
        l.allow("busy", 0).unwrap();
        l.allow("idle1", 0).unwrap();
        l.allow("idle2", 0).unwrap();
        // 10 s later the idle callers' buckets are full again: dropped to make room, "busy" kept empty...
        for i in 0..10 {
            l.allow(&format!("new{i}"), 10 * SEC + i).unwrap();
            assert!(l.len() <= 3);
        }
        // ...until only least-recently-used eviction is left.
        let mut l = limiter(60, 1, 2);
        l.allow("a", 0).unwrap();
        l.allow("b", 1).unwrap();
        l.allow("c", 2).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l.allow("a", 3), Ok(()), "a was evicted: a fresh bucket");
    }
}
