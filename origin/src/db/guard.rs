//! Every PostgreSQL call of the request path goes through a [`DbGuard`]: the circuit breaker (after
//! repeated failures PostgreSQL is skipped for a back-off, so misses get their 503 at once and stale
//! copies are served without waiting) and a client-side deadline.
//!
//! The deadline matters when PostgreSQL is stalled rather than down (a frozen host, a full disk): its
//! `statement_timeout` is enforced by the server, which is not running, and a TCP connection to a frozen
//! server does not fail. Without it a load would hold its pooled connection until the kernel gave up.

use std::future::Future;
use std::time::Duration;

use super::DbError;
use super::writes::WriteError;
use crate::breaker::{Breaker, BreakerSettings};

/// Message of the error returned while the breaker is open.
pub const SKIPPED: &str = "skipped after repeated failures (circuit breaker open)";

/// Errors that say PostgreSQL is unavailable (and count towards the breaker), as opposed to answers
/// such as "no such row" or a constraint violation.
pub trait Outage {
    fn is_outage(&self) -> bool;
}

impl Outage for DbError {
    fn is_outage(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

impl Outage for WriteError {
    fn is_outage(&self) -> bool {
        matches!(self, WriteError::Db(e) if e.is_outage())
    }
}

pub struct DbGuard {
    breaker: Breaker,
    deadline: Duration,
}

impl DbGuard {
    /// `deadline` bounds one call end to end: the pool wait (or connect), the statement, and a margin.
    pub fn new(settings: BreakerSettings, deadline: Duration) -> Self {
        Self {
            breaker: Breaker::new("postgres", settings),
            deadline,
        }
    }

    /// Runs `work` unless the breaker is open, within the deadline, and tells the breaker how it went.
    pub async fn run<T, E, Fut>(&self, work: Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: Outage + From<DbError>,
    {
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(DbError::Unavailable(SKIPPED.into()).into());
        };
        match tokio::time::timeout(self.deadline, work).await {
            Ok(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Ok(Err(e)) => {
                if e.is_outage() {
                    permit.failure();
                } else {
                    permit.success();
                }
                Err(e)
            }
            Err(_) => {
                permit.failure();
                Err(DbError::Unavailable(format!(
                    "no answer within {} ms",
                    self.deadline.as_millis()
                ))
                .into())
            }
        }
    }

    /// Would a call be refused right now? A request that needs PostgreSQL answers at once then (503, or
    /// its cached copy) rather than joining a load that started before the breaker opened and may
    /// still hang until its deadline.
    pub fn rejects_now(&self) -> bool {
        self.breaker.rejects_now()
    }

    /// Is PostgreSQL being skipped (or probed) right now?
    pub fn is_open(&self) -> bool {
        self.breaker.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> DbGuard {
        DbGuard::new(
            BreakerSettings {
                failures: 2,
                backoff: Duration::from_secs(60),
                max_backoff: Duration::from_secs(60),
            },
            Duration::from_millis(50),
        )
    }

    #[tokio::test]
    async fn a_stalled_call_is_cut_at_the_deadline_and_counts_as_a_failure() {
        let g = guard();
        let stalled = || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<(), DbError>(())
        };
        let started = std::time::Instant::now();
        let e = g.run(stalled()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, DbError::Unavailable(_)));
        assert!(!g.is_open());
        let _ = g.run(stalled()).await;
        assert!(g.is_open(), "two failures open it");
        // Open: skipped without running the work.
        let e = g
            .run(async { panic!("must not run") as Result<(), DbError> })
            .await
            .unwrap_err();
        assert!(matches!(e, DbError::Unavailable(m) if m == SKIPPED));
    }

    #[tokio::test]
    async fn answers_that_are_not_outages_keep_it_closed() {
        let g = guard();
        for _ in 0..5 {
            let e = g
                .run(async { Err::<(), _>(WriteError::NotFound) })
                .await
                .unwrap_err();
            assert!(matches!(e, WriteError::NotFound));
            let _ = g
                .run(async { Err::<(), _>(DbError::Other("syntax".into())) })
                .await;
        }
        assert!(!g.is_open());
        let _ = g
            .run(async { Err::<(), _>(DbError::Unavailable("down".into())) })
            .await;
        let _ = g
            .run(async { Err::<(), _>(WriteError::Db(DbError::Unavailable("down".into()))) })
            .await;
        assert!(g.is_open());
    }
}
