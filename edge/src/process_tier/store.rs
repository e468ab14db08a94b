//! The process-wide tier's store access: the instance's handle on Spin's key-value store, opened on
//! first use, every call bounded by a time limit and skipped while the tier's breaker is open. What the
//! bytes are is [`super::format`]'s; what they mean is [`super::policy`]'s.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use aside_shared::UserId;

use super::format::{BreakerMark, SlotValue, slot_key};
use super::policy::{self, Found};
use crate::backoff::{Attempt, Breaker};
use crate::clock;
use crate::config::Config;
use crate::feed_tag::Trust;

/// The instance's handle on the process-wide tier.
pub struct ProcessTier {
    config: Rc<Config>,
    store: RefCell<Store>,
    breaker: RefCell<Breaker>,
}

enum Store {
    /// Not opened yet (or `shared_tier_store` is empty: then never).
    Closed,
    Open(Rc<spin_sdk::key_value::Store>),
    /// The runtime refused to open it: off for this instance.
    Unavailable,
}

impl ProcessTier {
    pub fn new(config: Rc<Config>) -> Self {
        let settings = config.redis_breaker;
        let store = if config.shared_tier.store.is_empty() {
            Store::Unavailable
        } else {
            Store::Closed
        };
        Self {
            config,
            store: RefCell::new(store),
            breaker: RefCell::new(Breaker::new(settings.threshold, settings.backoff)),
        }
    }

    /// Whether the tier is configured and was not refused by the runtime.
    pub fn is_on(&self) -> bool {
        !matches!(*self.store.borrow(), Store::Unavailable)
    }

    /// The copy of `id` in its slot; at most `limit`.
    /// Fresh by the TTL rule, or by the feed while it vouches for the copy (`trust`).
    pub async fn get(&self, id: UserId, trust: Option<Trust>, limit: Duration) -> Found {
        if !self.is_on() {
            return Found::Skipped;
        }
        let key = slot_key(id, self.config.shared_tier.slots);
        let Some(bytes) = self
            .call(limit, |store| async move { store.get(&key).await })
            .await
        else {
            return Found::Skipped;
        };
        policy::found(bytes.as_deref(), id, clock::wall_ms(), trust)
    }

    /// Stores `value` in its slot, unless the lookup that preceded it saw a newer version of the same
    /// id there (`seen`); at most `limit`.
    pub async fn put(&self, value: &SlotValue, seen: Option<i64>, limit: Duration) {
        if !policy::may_fill(value, seen) {
            return;
        }
        let key = slot_key(value.profile.id, self.config.shared_tier.slots);
        let bytes = value.encode();
        self.call(limit, |store| async move { store.set(&key, &bytes).await })
            .await;
    }

    /// Empties the slot of `id` (a delete through this instance); at most `limit`.
    pub async fn forget(&self, id: UserId, limit: Duration) {
        let key = slot_key(id, self.config.shared_tier.slots);
        self.call(limit, |store| async move { store.delete(&key).await })
            .await;
    }

    /// The raw value of `key`, a key of another part of the edge in its own namespace (the feed's
    /// state, the identity provider's keys), never `aside:l1:`; `None` when the store is off, skipped
    /// or failed, `Some(None)` when the key is absent. At most `limit`.
    pub async fn get_raw(&self, key: &str, limit: Duration) -> Option<Option<Vec<u8>>> {
        let key = key.to_string();
        self.call(limit, |store| async move { store.get(&key).await })
            .await
    }

    /// Sets `key` to `bytes`; at most `limit`. Whether the store took it.
    pub async fn set_raw(&self, key: &str, bytes: &[u8], limit: Duration) -> bool {
        let (key, bytes) = (key.to_string(), bytes.to_vec());
        self.call(limit, |store| async move { store.set(&key, &bytes).await })
            .await
            .is_some()
    }

    /// Deletes `key`; at most `limit`.
    pub async fn delete_raw(&self, key: &str, limit: Duration) {
        let key = key.to_string();
        self.call(limit, |store| async move { store.delete(&key).await })
            .await;
    }

    /// What is left of the back-off another instance published at `key` (`ORIGIN_BREAKER_KEY`,
    /// `REDIS_BREAKER_KEY`), if a mark is set and not yet passed; at most `limit`.
    pub async fn breaker_left(&self, key: &'static str, limit: Duration) -> Option<Duration> {
        let bytes = self
            .call(limit, |store| async move { store.get(key).await })
            .await??;
        BreakerMark::decode(&bytes)?.remaining(clock::wall_ms())
    }

    /// Publishes a breaker's state change at `key`: opened, a mark until `backoff` from now; closed, the
    /// mark cleared. At most `limit`.
    pub async fn publish_breaker(
        &self,
        key: &'static str,
        opened: bool,
        backoff: Duration,
        limit: Duration,
    ) {
        if opened {
            let bytes = BreakerMark {
                open_until_ms: clock::wall_ms()
                    .saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX)),
            }
            .encode();
            self.call(limit, |store| async move { store.set(key, &bytes).await })
                .await;
        } else {
            self.call(limit, |store| async move { store.delete(key).await })
                .await;
        }
    }

    /// Runs one store operation under the breaker and `limit`; `None` when it was skipped or failed.
    async fn call<T, F, Fut>(&self, limit: Duration, op: F) -> Option<T>
    where
        T: 'static,
        F: FnOnce(Rc<spin_sdk::key_value::Store>) -> Fut,
        Fut: std::future::Future<Output = Result<T, spin_sdk::key_value::Error>> + 'static,
    {
        if limit.is_zero() || !self.is_on() {
            return None;
        }
        let started = clock::now();
        let attempt = Attempt::start(&self.breaker, started)?;
        // Opening is bounded too: Spin's Redis-backed store, for one, pings the server on open. Both
        // steps own what they need, so that a late one is left to finish, never cancelled (see
        // crate::clock).
        let result = match self.open(limit).await {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(store)) => {
                let left = limit
                    .saturating_sub(Duration::from_nanos(clock::now().saturating_sub(started)));
                clock::within(left, op(store)).await
            }
        };
        let ok = matches!(result, Some(Ok(_)));
        if let Some(transition) = attempt.finish(ok, clock::now()) {
            eprintln!(
                "aside-edge: process-wide tier (key-value store `{}`) {}",
                self.config.shared_tier.store,
                match transition {
                    crate::backoff::Transition::Opened => "failing: skipped for a while",
                    crate::backoff::Transition::Closed => "answering again",
                }
            );
        }
        match result {
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => {
                eprintln!("aside-edge: process-wide tier: {e:?}");
                None
            }
            None => None,
        }
    }

    /// The open store, opening it on first use (within `limit`; `None` when it took longer). A store
    /// the runtime refuses turns the tier off.
    async fn open(
        &self,
        limit: Duration,
    ) -> Option<Result<Rc<spin_sdk::key_value::Store>, spin_sdk::key_value::Error>> {
        match &*self.store.borrow() {
            Store::Open(store) => return Some(Ok(Rc::clone(store))),
            Store::Unavailable => {
                return Some(Err(spin_sdk::key_value::Error::Other("unavailable".into())));
            }
            Store::Closed => {}
        }
        let label = self.config.shared_tier.store.clone();
        let opening = label.clone();
        let opened = clock::within(limit, async move {
            spin_sdk::key_value::Store::open(&opening).await
        })
        .await?;
        Some(match opened {
            Ok(store) => {
                let store = Rc::new(store);
                let mut slot = self.store.borrow_mut();
                if let Store::Open(already) = &*slot {
                    return Some(Ok(Rc::clone(already)));
                }
                *slot = Store::Open(Rc::clone(&store));
                Ok(store)
            }
            Err(e) => {
                eprintln!(
                    "aside-edge: process-wide tier off for this instance: cannot open key-value store \
                     `{label}` ({e:?}); is it in the component's key_value_stores and defined by \
                     the runtime?"
                );
                *self.store.borrow_mut() = Store::Unavailable;
                Err(e)
            }
        })
    }
}
