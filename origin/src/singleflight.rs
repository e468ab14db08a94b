//! Single-flight: concurrent requests for the same key share one computation.
//!
//! The first caller (the leader) starts the work on its own task, so that the work finishes and every
//! waiter gets the result even if the leader's request is cancelled; later callers for the same key await
//! the same shared future. The key is forgotten as soon as the work ends: the next caller starts afresh.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// Groups concurrent calls by key.
pub struct SingleFlight<K, V> {
    inflight: Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

/// Whether a call ran the work itself or shared another call's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key` unless a run for that key is already in flight, in which case it waits for
    /// that run's result instead.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (shared, role) = {
            let mut inflight = self.inflight.lock().expect("single-flight lock poisoned");
            if let Some(existing) = inflight.get(&key) {
                (existing.clone(), Role::Follower)
            } else {
                let fut = work();
                let map = Arc::clone(&self.inflight);
                let task_key = key.clone();
                let task = tokio::spawn(async move {
                    let value = fut.await;
                    map.lock()
                        .expect("single-flight lock poisoned")
                        .remove(&task_key);
                    value
                });
                let shared = async move {
                    match task.await {
                        Ok(value) => value,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    }
                }
                .boxed()
                .shared();
                inflight.insert(key, shared.clone());
                (shared, Role::Leader)
            }
        };
        (shared.await, role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_for_one_key_run_the_work_once() {
        let flight = Arc::new(SingleFlight::<u32, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let flight = Arc::clone(&flight);
            let runs = Arc::clone(&runs);
            handles.push(tokio::spawn(async move {
                flight
                    .run(7, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for h in handles {
            let (v, role) = h.await.unwrap();
            assert_eq!(v, 42);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
    }

    #[tokio::test]
    async fn different_keys_and_later_calls_run_separately() {
        let flight = SingleFlight::<u32, u32>::default();
        let (a, _) = flight.run(1, || async { 1 }).await;
        let (b, _) = flight.run(2, || async { 2 }).await;
        let (c, role) = flight.run(1, || async { 3 }).await;
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(role, Role::Leader);
    }

    #[tokio::test]
    async fn the_work_survives_a_cancelled_leader() {
        let flight = Arc::new(SingleFlight::<u32, u32>::default());
        let leader = {
            let flight = Arc::clone(&flight);
            tokio::spawn(async move {
                flight
                    .run(5, || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        9
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = {
            let flight = Arc::clone(&flight);
            tokio::spawn(async move { flight.run(5, || async { 0 }).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        leader.abort();
        assert_eq!(follower.await.unwrap(), (9, Role::Follower));
    }
}
