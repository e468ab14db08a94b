//! Change capture: every change to `devops_api.users`, made through the API or straight in PostgreSQL,
//! reaches Redis within a second, with no polling of the users table.
//!
//! Triggers (migration 0002) record each changed row in the outbox `devops_api.user_changes`, in the
//! changing transaction, and `NOTIFY aside_user_changes`. One origin at a time (the holder of a
//! session-level advisory lock) runs [`run`]'s loop on a dedicated connection:
//!
//! 1. `LISTEN`, then read the outbox past the applied ids ([`progress`]), woken by a notification or
//!    by a slow safety re-scan;
//! 2. reload each named user's row in the same snapshot and write it to Redis with the compare-and-set
//!    (a tombstone if the row is gone), so replaying a change, or applying one the API already wrote
//!    through, is harmless;
//! 3. move the durable watermark (`devops_api.change_watermark`) after Redis took the writes, so
//!    changes made while this origin, or Redis, was down are applied when both are back.
//!
//! After a Redis failover (the origin followed Sentinel to a new primary, see
//! [`crate::cache::topology`]), the leader first replays the outbox of the last
//! `ASIDE_CHANGE_REPLAY_SECS` onto the new primary ([`replay`]), over the keys it holds, and only then
//! applies new changes and moves the watermark: what the old primary took but had not replicated is
//! written again, and the compare-and-set keeps whatever is already newer.
//!
//! The other origins retry the lock every `takeover` interval and take over when the holder's
//! connection ends. Applied outbox rows older than the retention window are pruned.

pub mod progress;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aside_shared::UserId;
use aside_shared::cache::CacheEntry;
use futures::StreamExt as _;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::cache::ProfileCache;
use crate::cache::fill::{Condition, StoreRequest};
use crate::db::DbError;
use crate::db::changes::{self as outbox, Batch, Op, RowState};
use crate::secret::Secret;
use progress::Progress;
use settings::ChangeCaptureArgs;

/// How often applied outbox rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// After a failed apply (Redis down), retry this soon rather than at the next re-scan.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);
/// Longest wait between two connection attempts to PostgreSQL.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Why a round of change capture stopped.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Connect(String),
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Db(e.into())
    }
}

/// Runs change capture until the task is dropped: connects, competes for the lock, applies changes,
/// and starts over after any PostgreSQL failure.
pub async fn run(database_url: Secret, cache: Arc<ProfileCache>, args: ChangeCaptureArgs) {
    let mut delay = Duration::from_millis(100);
    // The Redis failovers whose replay is done (kept across sessions: an origin that takes over after a
    // failover it saw while standing by replays it first).
    let mut replayed = 0;
    loop {
        let started = Instant::now();
        let result = session(&database_url, &cache, &args, &mut replayed).await;
        crate::metrics::change_capture_leader(false);
        if let Err(e) = result {
            tracing::warn!(error = %e, "change capture interrupted; reconnecting");
        }
        // A session that ran a while earns a quick reconnect; repeated failures back off.
        if started.elapsed() > MAX_RECONNECT_DELAY {
            delay = Duration::from_millis(100);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

/// One connection's life: wait for the lock, then apply changes until the connection fails.
async fn session(
    database_url: &Secret,
    cache: &ProfileCache,
    args: &ChangeCaptureArgs,
    replayed: &mut u64,
) -> Result<(), Stop> {
    let mut config: tokio_postgres::Config = database_url
        .expose()
        .parse()
        .map_err(|_| Stop::Connect("the database URL is not valid".into()))?;
    config
        .application_name("aside-origin change capture")
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10));
    let (mut client, mut connection) = config.connect(NoTls).await.map_err(|e| {
        Stop::Connect(format!(
            "cannot connect to PostgreSQL: {}",
            crate::db::error_chain(&e)
        ))
    })?;
    let woken = Arc::new(Notify::new());
    let wake = Arc::clone(&woken);
    // The connection is driven here: notifications wake the loop; its end (an error) ends the session,
    // and the client's next query reports it.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "change capture connection ended");
                    break;
                }
            }
        }
        wake.notify_one();
    });
    let _stop_driver = AbortOnDrop(driver);
    crate::db::grants::warn_if_privileged(&client).await;

    let mut announced = false;
    while !outbox::try_lead(&client).await? {
        if !announced {
            tracing::info!("another origin applies changes; standing by to take over");
            announced = true;
        }
        tokio::time::sleep(args.takeover()).await;
    }
    crate::metrics::change_capture_leader(true);
    tracing::info!("applying database changes to Redis");
    // LISTEN before the first read, so no change committed after that read goes unnoticed.
    client
        .batch_execute(&format!("LISTEN {}", outbox::CHANNEL))
        .await?;
    let mut progress = Progress::new(outbox::watermark(&client).await?);
    let mut stored_watermark = progress.watermark();
    let mut last_prune: Option<Instant> = None;
    let mut failovers = cache.topology().epoch();
    loop {
        let epoch = *failovers.borrow_and_update();
        if epoch > *replayed {
            if !replay(&mut client, cache, args, progress.max_seen()).await? {
                // Redis did not take it: nothing moves on until it does.
                let _ = tokio::time::timeout(RETRY_AFTER_FAILURE, woken.notified()).await;
                continue;
            }
            *replayed = epoch;
        }
        let caught_up = catch_up(&mut client, cache, args, &mut progress).await?;
        if progress.watermark() > stored_watermark {
            outbox::set_watermark(&client, progress.watermark()).await?;
            stored_watermark = progress.watermark();
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            let retention = args.retention().as_secs_f64();
            match outbox::prune(&client, stored_watermark, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "pruned applied outbox rows"),
                Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
            }
            last_prune = Some(Instant::now());
        }
        let wait = if caught_up {
            args.rescan()
        } else {
            RETRY_AFTER_FAILURE
        };
        tokio::select! {
            _ = tokio::time::timeout(wait, woken.notified()) => {}
            _ = failovers.changed() => {}
        }
    }
}

/// Applies the outbox changes of the replay window again, up to at least `upto`, each over an existing
/// key only (a key the new primary lacks is filled from PostgreSQL on its next read). `Ok(false)` when
/// Redis failed.
async fn replay(
    client: &mut tokio_postgres::Client,
    cache: &ProfileCache,
    args: &ChangeCaptureArgs,
    upto: i64,
) -> Result<bool, Stop> {
    let started = Instant::now();
    let mut after = outbox::replay_start(client, args.replay_window().as_secs_f64()).await?;
    let mut replayed = 0;
    while after < upto {
        let read_started = Instant::now();
        let batch = outbox::read_batch(client, after, &[], args.change_batch).await?;
        let Some(last) = batch.changes.last() else {
            break;
        };
        after = last.id;
        if let Err(e) = apply(cache, &batch, read_started.elapsed(), Apply::Replay).await {
            tracing::debug!(error = %e, "Redis did not take the replay; will retry");
            return Ok(false);
        }
        replayed += batch.changes.len();
        if !batch.full {
            break;
        }
    }
    crate::metrics::outbox_replay();
    tracing::info!(
        changes = replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        primary = %cache.topology().primary_address(),
        "replayed the outbox onto the new Redis primary"
    );
    Ok(true)
}

/// Applies batches until the outbox is drained. `Ok(false)` when Redis failed (retry soon); PostgreSQL
/// failures end the session.
async fn catch_up(
    client: &mut tokio_postgres::Client,
    cache: &ProfileCache,
    args: &ChangeCaptureArgs,
    progress: &mut Progress,
) -> Result<bool, Stop> {
    loop {
        let read_started = Instant::now();
        let batch = outbox::read_batch(
            client,
            progress.max_seen(),
            progress.gaps(),
            args.change_batch,
        )
        .await?;
        if !batch.changes.is_empty() {
            if let Err(e) = apply(cache, &batch, read_started.elapsed(), Apply::New).await {
                tracing::debug!(error = %e, "Redis did not take the changes; will retry");
                return Ok(false);
            }
            let now = crate::clock::now_ms() as f64 / 1000.0;
            let oldest = batch
                .changes
                .iter()
                .map(|c| c.at_epoch_secs)
                .fold(f64::INFINITY, f64::min);
            crate::metrics::changes_applied(batch.changes.len(), now - oldest);
        }
        let ids: Vec<i64> = batch.changes.iter().map(|c| c.id).collect();
        progress.record(&ids, batch.xmin, batch.xmax);
        if !batch.full {
            return Ok(true);
        }
    }
}

/// Why a batch is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// New changes.
    New,
    /// Changes applied before, written again onto a new primary: only over existing keys.
    Replay,
}

/// Writes one batch to Redis: each named user's current row (or a tombstone), with the compare-and-set.
///
/// A user whose only changes in the batch are inserts is written only over an existing entry: that
/// replaces a "missing" marker at once without filling the cache with every bulk-loaded row. (A read
/// that misses concurrently re-checks PostgreSQL after caching "missing", see `http::refresh`.)
///
/// Each profile is written fresh for a soft TTL from now. Its XFetch `delta` (the cost of reloading it)
/// is `read_cost`, the duration of the snapshot read that produced the batch: the closest measured
/// figure (a row's share of a batch read would understate a single-row load's round trip), and an upper
/// bound of it, which at worst makes early refresh of those keys slightly more eager.
async fn apply(
    cache: &ProfileCache,
    batch: &Batch,
    read_cost: Duration,
    why: Apply,
) -> Result<(), crate::cache::CacheError> {
    struct Seen {
        only_inserts: bool,
        max_version: i64,
    }
    let mut seen: HashMap<UserId, Seen> = HashMap::new();
    for change in &batch.changes {
        let s = seen.entry(change.user_id).or_insert(Seen {
            only_inserts: true,
            max_version: change.version,
        });
        s.only_inserts &= change.op == Op::Insert;
        s.max_version = s.max_version.max(change.version);
    }
    let now = crate::clock::now_ms();
    let mut requests = Vec::with_capacity(batch.rows.len());
    for (id, state) in &batch.rows {
        let Some(s) = seen.get(id) else { continue };
        let condition = if s.only_inserts || why == Apply::Replay {
            Condition::OnlyIfCached
        } else {
            Condition::Always
        };
        let entry = match state {
            RowState::Present(profile) => {
                CacheEntry::Present(cache.stamp(profile.clone(), read_cost))
            }
            // The row is gone: a later outbox row has the delete (its version is at least this one).
            RowState::Absent => CacheEntry::deleted(s.max_version, now),
            RowState::Invalid(e) => {
                tracing::error!(%id, error = %e, "changed row breaks the domain rules; not cached");
                continue;
            }
        };
        requests.push(StoreRequest {
            id: *id,
            entry,
            condition,
            announce: true,
        });
    }
    cache.store_all_if_newer(&requests).await.map(drop)
}

/// Aborts a task when dropped (the connection driver ends with its session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
