//! Single-flight: concurrent requests in one instance that need the same lookup share one.
//!
//! Spin 4 runs up to 16 requests at a time in one instance, each as its own component-model task on one
//! thread. The first request for a key becomes the *leader* and does the work in its own task; the others
//! become *followers* and wait for the leader's result on a Rust channel. Only the leader ever polls the
//! host calls (Redis, HTTP), so no component-model wait is moved between tasks; followers are woken across
//! tasks, which is what wit-bindgen's `inter-task-wakeup` feature is for (see `Cargo.toml`).
//!
//! If the leader's request is cancelled before it finishes, its [`Leader`] is dropped: the key is
//! released and the followers try again (one of them becomes the new leader).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::rc::Rc;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::Shared;

/// The lookups in progress, by key. `V` is cloned once per follower: keep it cheap (`Rc`).
pub struct SingleFlight<K, V> {
    in_flight: RefCell<HashMap<K, Shared<oneshot::Receiver<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            in_flight: RefCell::new(HashMap::new()),
        }
    }
}

/// Whether the caller shared someone else's lookup or did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// The result of `lookup` for `key`: run here if no lookup for `key` is in progress, otherwise the
    /// result of the one in progress. `lookup` is called at most once.
    pub async fn run<F, Fut>(self: &Rc<Self>, key: K, lookup: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut lookup = Some(lookup);
        loop {
            let waiting = self.in_flight.borrow().get(&key).cloned();
            match waiting {
                Some(result) => {
                    if let Ok(value) = result.await {
                        return (value, Role::Follower);
                    }
                    // The leader was cancelled; it has released the key, so try again.
                }
                None => {
                    let (sender, receiver) = oneshot::channel();
                    self.in_flight
                        .borrow_mut()
                        .insert(key.clone(), receiver.shared());
                    let leader = Leader {
                        flight: Rc::clone(self),
                        key: key.clone(),
                        sender: Some(sender),
                    };
                    let lookup = lookup.take().expect("a caller leads at most once");
                    let value = lookup().await;
                    leader.finish(value.clone());
                    return (value, Role::Leader);
                }
            }
        }
    }

    /// How many lookups are in progress.
    pub fn len(&self) -> usize {
        self.in_flight.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.borrow().is_empty()
    }
}

/// The leader's hold on a key: released when the result is published or when the leader is dropped.
struct Leader<K: Hash + Eq, V> {
    flight: Rc<SingleFlight<K, V>>,
    key: K,
    sender: Option<oneshot::Sender<V>>,
}

impl<K: Hash + Eq, V> Leader<K, V> {
    fn finish(mut self, value: V) {
        self.flight.in_flight.borrow_mut().remove(&self.key);
        if let Some(sender) = self.sender.take() {
            // No follower may be left; that is fine.
            let _ = sender.send(value);
        }
    }
}

impl<K: Hash + Eq, V> Drop for Leader<K, V> {
    fn drop(&mut self) {
        if self.sender.is_some() {
            // Cancelled: release the key; dropping the sender wakes the followers with `Canceled`.
            self.flight.in_flight.borrow_mut().remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    use super::*;

    #[test]
    fn concurrent_callers_share_one_lookup() {
        let flight: Rc<SingleFlight<u32, Rc<String>>> = Rc::default();
        let calls = Rc::new(Cell::new(0));
        let (release, gate) = oneshot::channel::<()>();
        let gate = gate.shared();
        let results = Rc::new(RefCell::new(Vec::new()));
        let mut pool = LocalPool::new();
        for _ in 0..5 {
            let (flight, calls, gate, results) =
                (flight.clone(), calls.clone(), gate.clone(), results.clone());
            pool.spawner()
                .spawn_local(async move {
                    let out = flight
                        .run(1, || async move {
                            calls.set(calls.get() + 1);
                            gate.await.unwrap();
                            Rc::new("profile 1".to_string())
                        })
                        .await;
                    results.borrow_mut().push(out);
                })
                .unwrap();
        }
        pool.run_until_stalled();
        assert_eq!(flight.len(), 1);
        assert!(results.borrow().is_empty());
        release.send(()).unwrap();
        pool.run();
        assert_eq!(calls.get(), 1);
        let results = results.borrow();
        assert_eq!(results.len(), 5);
        assert!(results.iter().all(|(v, _)| v.as_str() == "profile 1"));
        let leaders = results.iter().filter(|(_, r)| *r == Role::Leader).count();
        assert_eq!(leaders, 1);
        assert!(flight.is_empty());
    }

    #[test]
    fn different_keys_do_not_wait_for_each_other() {
        let flight: Rc<SingleFlight<u32, u32>> = Rc::default();
        let mut pool = LocalPool::new();
        let (_hold, never) = oneshot::channel::<()>();
        let f = flight.clone();
        pool.spawner()
            .spawn_local(async move {
                f.run(1, || async move {
                    let _ = never.await;
                    1
                })
                .await;
            })
            .unwrap();
        pool.run_until_stalled();
        let got = pool.run_until(flight.run(2, || async { 2 }));
        assert_eq!(got, (2, Role::Leader));
        assert_eq!(flight.len(), 1);
    }

    #[test]
    fn a_cancelled_leader_hands_over_to_a_follower() {
        let flight: Rc<SingleFlight<u32, u32>> = Rc::default();
        let calls = Rc::new(Cell::new(0));
        let mut pool = LocalPool::new();

        // The leader never finishes on its own; it is dropped (cancelled) below.
        let (_hold, never) = oneshot::channel::<()>();
        let (f, c) = (flight.clone(), calls.clone());
        let leader = pool
            .spawner()
            .spawn_local_with_handle(async move {
                f.run(7, || async move {
                    c.set(c.get() + 1);
                    let _ = never.await;
                    0
                })
                .await
            })
            .unwrap();
        pool.run_until_stalled();

        let (f, c) = (flight.clone(), calls.clone());
        let follower = pool
            .spawner()
            .spawn_local_with_handle(async move {
                f.run(7, || async move {
                    c.set(c.get() + 1);
                    42
                })
                .await
            })
            .unwrap();
        pool.run_until_stalled();
        assert_eq!(calls.get(), 1, "the second caller waits for the first");

        drop(leader);
        let got = pool.run_until(follower);
        assert_eq!(got, (42, Role::Leader));
        assert_eq!(calls.get(), 2);
        assert!(flight.is_empty());
    }

    #[test]
    fn after_a_lookup_finishes_the_next_caller_looks_up_again() {
        let flight: Rc<SingleFlight<u32, u32>> = Rc::default();
        let mut pool = LocalPool::new();
        assert_eq!(
            pool.run_until(flight.run(1, || async { 1 })),
            (1, Role::Leader)
        );
        assert_eq!(
            pool.run_until(flight.run(1, || async { 2 })),
            (2, Role::Leader)
        );
    }
}
