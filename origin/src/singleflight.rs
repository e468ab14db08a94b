//! Single-flight: concurrent requests for the same key share one computation.
//!
//! The first caller (the leader) starts the work on its own task, so that the work finishes and every
//! waiter gets the result even if the leader's request is cancelled; later callers for the same key await
//! the same shared future. The key is forgotten as soon as the work ends: the next caller starts afresh.
//!
//! Work may also leave a *tail* ([`SingleFlight::run_with_tail`]): something to do after its result is
//! known (the read path's cache fill). Every waiter gets the result as soon as the work returns it; the
//! key stays in flight until the tail has run too, so a call arriving meanwhile shares the result it
//! would otherwise have found in the cache, instead of starting the work again.

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
        self.run_with_tail(key, move || {
            let fut = work();
            async move { (fut.await, std::future::ready(())) }
        })
        .await
    }

    /// Like [`SingleFlight::run`], for work that returns its result and a tail: the result goes to every
    /// waiter at once, the tail runs after it on the same task, and the key is forgotten only when the
    /// tail has ended (or the task was dropped, e.g. at shutdown).
    pub async fn run_with_tail<F, Fut, T>(&self, key: K, work: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, T)> + Send + 'static,
        T: Future<Output = ()> + Send + 'static,
    {
        let (shared, role) = {
            let mut inflight = self.inflight.lock().expect("single-flight lock poisoned");
            if let Some(existing) = inflight.get(&key) {
                (existing.clone(), Role::Follower)
            } else {
                let fut = work();
                let (result, answered) = tokio::sync::oneshot::channel();
                // Forgets the key when the task ends, however it ends (a panic, a dropped runtime).
                let forget = Forget {
                    map: Arc::clone(&self.inflight),
                    key: Some(key.clone()),
                };
                let task = tokio::spawn(async move {
                    let _forget = forget;
                    let (value, tail) = fut.await;
                    let _ = result.send(value);
                    tail.await;
                });
                let shared = async move {
                    match answered.await {
                        Ok(value) => value,
                        // The work ended without a result: it panicked.
                        Err(_) => match task.await {
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            _ => panic!("single-flight work ended without a result"),
                        },
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

/// Removes a run's key from the in-flight map when dropped. The run's task cannot remove it before the
/// leader has inserted it: both hold the map's lock.
struct Forget<K: Eq + Hash, V> {
    map: Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V> Drop for Forget<K, V> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut map)) = (self.key.take(), self.map.lock()) {
            map.remove(&key);
        }
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

    #[tokio::test]
    async fn the_result_comes_before_the_tail_and_the_key_stays_in_flight_until_it_ends() {
        let flight = Arc::new(SingleFlight::<u32, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release_tail, tail_released) = tokio::sync::oneshot::channel::<()>();
        let (tail_done, tail_finished) = tokio::sync::oneshot::channel::<()>();
        let counted = Arc::clone(&runs);
        let (first, role) = flight
            .run_with_tail(3, move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let tail = async move {
                    let _ = tail_released.await;
                    let _ = tail_done.send(());
                };
                (30, tail)
            })
            .await;
        assert_eq!(
            (first, role),
            (30, Role::Leader),
            "answered while the tail waits"
        );
        // The tail is still running: a new call shares the result without running the work.
        let counted = Arc::clone(&runs);
        let (second, role) = flight
            .run(3, move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                31
            })
            .await;
        assert_eq!((second, role), (30, Role::Follower));
        release_tail.send(()).unwrap();
        tail_finished.await.unwrap();
        // The tail has ended: the key is forgotten (the task drops it right after the tail).
        let mut third = (0, Role::Follower);
        for _ in 0..100 {
            let counted = Arc::clone(&runs);
            third = flight
                .run(3, move || async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    32
                })
                .await;
            if third.1 == Role::Leader {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(third, (32, Role::Leader));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_run_reaches_its_waiters_and_is_forgotten() {
        let flight = SingleFlight::<u32, u32>::default();
        let panicked = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            flight.run(4, || async { panic!("boom") }),
        ))
        .await;
        assert!(panicked.is_err());
        let (value, role) = flight.run(4, || async { 8 }).await;
        assert_eq!((value, role), (8, Role::Leader));
    }
}
