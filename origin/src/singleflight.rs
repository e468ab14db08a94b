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
//!
//! A call that must not be answered with a result computed before it arrived ([`Join::Unanswered`]: the
//! read path's reload, asked for because the caller has already seen something newer) joins only a run
//! that has not produced its result yet; a run already in its tail is left to finish, and the call
//! starts a new run that takes the key over.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// Groups concurrent calls by key.
pub struct SingleFlight<K, V> {
    inflight: Arc<Mutex<HashMap<K, Run<V>>>>,
    /// Numbers the runs, so that a run taken over by a newer one does not forget the newer one's key.
    runs: AtomicU64,
}

/// A run in flight: its shared result, whether it has produced it (its tail may still run), and its
/// number.
struct Run<V> {
    shared: Shared<BoxFuture<'static, V>>,
    answered: Arc<AtomicBool>,
    number: u64,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
            runs: AtomicU64::new(0),
        }
    }
}

/// Which run in flight a call may share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Any: its result, or the result of a run whose tail is still running.
    Any,
    /// Only a run that has not produced its result yet.
    Unanswered,
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
        self.run_joining(key, Join::Any, work).await
    }

    /// [`SingleFlight::run_with_tail`], sharing only the runs `join` allows.
    pub async fn run_joining<F, Fut, T>(&self, key: K, join: Join, work: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, T)> + Send + 'static,
        T: Future<Output = ()> + Send + 'static,
    {
        let (shared, role) = {
            let mut inflight = self.inflight.lock().expect("single-flight lock poisoned");
            let joinable = inflight
                .get(&key)
                .filter(|run| join == Join::Any || !run.answered.load(Ordering::Acquire));
            if let Some(existing) = joinable {
                (existing.shared.clone(), Role::Follower)
            } else {
                let fut = work();
                let (result, answered) = tokio::sync::oneshot::channel();
                let number = self.runs.fetch_add(1, Ordering::Relaxed);
                let produced = Arc::new(AtomicBool::new(false));
                // Forgets the key when the task ends, however it ends (a panic, a dropped runtime),
                // unless a newer run has taken it over.
                let forget = Forget {
                    map: Arc::clone(&self.inflight),
                    key: Some(key.clone()),
                    number,
                };
                let flag = Arc::clone(&produced);
                let task = tokio::spawn(async move {
                    let _forget = forget;
                    let (value, tail) = fut.await;
                    flag.store(true, Ordering::Release);
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
                inflight.insert(
                    key,
                    Run {
                        shared: shared.clone(),
                        answered: produced,
                        number,
                    },
                );
                (shared, Role::Leader)
            }
        };
        (shared.await, role)
    }
}

/// Removes a run's key from the in-flight map when dropped. The run's task cannot remove it before the
/// leader has inserted it: both hold the map's lock.
struct Forget<K: Eq + Hash, V> {
    map: Arc<Mutex<HashMap<K, Run<V>>>>,
    key: Option<K>,
    number: u64,
}

impl<K: Eq + Hash, V> Drop for Forget<K, V> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut map)) = (self.key.take(), self.map.lock())
            && map.get(&key).is_some_and(|run| run.number == self.number)
        {
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
    async fn an_unanswered_only_call_skips_a_run_in_its_tail_and_takes_the_key_over() {
        let flight = Arc::new(SingleFlight::<u32, u32>::default());
        // A run answered 40 and is in its tail.
        let (release_old_tail, old_tail_released) = tokio::sync::oneshot::channel::<()>();
        let (old_done, old_finished) = tokio::sync::oneshot::channel::<()>();
        let (old, _) = flight
            .run_with_tail(8, move || async move {
                let tail = async move {
                    let _ = old_tail_released.await;
                    let _ = old_done.send(());
                };
                (40, tail)
            })
            .await;
        assert_eq!(old, 40);
        // A call that must see a result computed after it arrived runs the work again, and while
        // its run has not answered, a second such call shares it.
        let (release_new, new_released) = tokio::sync::oneshot::channel::<()>();
        let (release_new_tail, new_tail_released) = tokio::sync::oneshot::channel::<()>();
        let fresh = {
            let flight = Arc::clone(&flight);
            tokio::spawn(async move {
                flight
                    .run_joining(8, Join::Unanswered, move || async move {
                        let _ = new_released.await;
                        let tail = async move {
                            let _ = new_tail_released.await;
                        };
                        (41, tail)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let joined = {
            let flight = Arc::clone(&flight);
            tokio::spawn(async move {
                flight
                    .run_joining(8, Join::Unanswered, || async {
                        (0, std::future::ready(()))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        release_new.send(()).unwrap();
        assert_eq!(fresh.await.unwrap(), (41, Role::Leader));
        assert_eq!(joined.await.unwrap(), (41, Role::Follower));
        // The old run's task ends while the new run, which took the key over, is still in its tail:
        // the old one does not forget the new run's key, so a plain call shares the new run.
        release_old_tail.send(()).unwrap();
        old_finished.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(flight.run(8, || async { 42 }).await, (41, Role::Follower));
        release_new_tail.send(()).unwrap();
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
