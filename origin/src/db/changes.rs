//! The change outbox (`devops_api.user_changes`, written by triggers, see migration 0002) and its
//! watermark, as seen by change capture ([`crate::changes`]).
//!
//! These queries run on change capture's own connection, which also holds the advisory lock and
//! listens for notifications, so they take a plain [`tokio_postgres::Client`].

use aside_shared::UserId;
use aside_shared::cache::CachedProfile;
use tokio_postgres::{Client, IsolationLevel};

use super::{DbError, PROFILE_COLUMNS, profile_from_row};

/// The NOTIFY channel the outbox triggers signal on.
pub const CHANNEL: &str = "aside_user_changes";

/// The watermark row change capture owns.
const CONSUMER: &str = "redis";

/// An arbitrary constant naming the change-capture lock among PostgreSQL advisory locks (per database):
/// only its holder applies changes.
pub const LEADER_LOCK: i64 = 0x0A51_DE00_0002;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: i64,
    pub user_id: UserId,
    pub op: Op,
    /// After an insert or update: the new version; for a delete: the row's last version.
    pub version: i64,
    /// When the changing transaction started, seconds since the Unix epoch.
    pub at_epoch_secs: f64,
}

/// The current state of a changed user's row.
#[derive(Debug)]
pub enum RowState {
    Present(CachedProfile),
    Absent,
    /// The row breaks the domain rules (written by another tool); it cannot be cached.
    Invalid(DbError),
}

/// Outbox rows and the rows they name, read in one snapshot.
#[derive(Debug)]
pub struct Batch {
    /// In outbox-id order.
    pub changes: Vec<Change>,
    /// Every user named in `changes`, as of the same snapshot.
    pub rows: Vec<(UserId, RowState)>,
    /// The snapshot's xmin: every transaction id below it has ended.
    pub xmin: i64,
    /// The snapshot's xmax: no transaction id at or above it had started.
    pub xmax: i64,
    /// True when the rows after `after` filled the limit (more may be waiting).
    pub full: bool,
}

/// The applied-up-to outbox id.
pub async fn watermark(client: &Client) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT last_applied FROM devops_api.change_watermark WHERE consumer = $1",
            &[&CONSUMER],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Moves the watermark forward (never back).
pub async fn set_watermark(client: &Client, applied: i64) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE devops_api.change_watermark SET last_applied = $2, updated_at = now() \
             WHERE consumer = $1 AND last_applied < $2",
            &[&CONSUMER, &applied],
        )
        .await?;
    Ok(())
}

/// Deletes applied outbox rows older than `retention_secs`. Returns how many.
pub async fn prune(client: &Client, applied: i64, retention_secs: f64) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM devops_api.user_changes \
             WHERE id <= $1 AND at < now() - make_interval(secs => $2)",
            &[&applied, &retention_secs],
        )
        .await?)
}

/// The outbox id just before the first change of the last `window_secs` (the current last id when
/// there is none): a replay reads the changes after it.
pub async fn replay_start(client: &Client, window_secs: f64) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT min(id) - 1 FROM devops_api.user_changes \
                              WHERE at >= now() - make_interval(secs => $1)), \
                             (SELECT max(id) FROM devops_api.user_changes), 0)",
            &[&window_secs],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// `pg_try_advisory_lock` on [`LEADER_LOCK`]: session-level, so it is held until released or the
/// connection ends (a crashed origin's lock goes with its connection).
pub async fn try_lead(client: &Client) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await?;
    Ok(row.try_get(0)?)
}

const CHANGE_COLUMNS: &str = "c.id, c.user_id, c.op, c.version, extract(epoch FROM c.at)::float8";

/// Reads, in one repeatable-read snapshot: up to `limit` outbox rows after `after`, every outbox row
/// inside the `gaps` ranges (ids passed over earlier because their transaction had not committed),
/// the current rows of the users they name, and the snapshot's xmin/xmax.
pub async fn read_batch(
    client: &mut Client,
    after: i64,
    gaps: &[(i64, i64)],
    limit: i64,
) -> Result<Batch, DbError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot = tx
        .query_one(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint \
             FROM pg_current_snapshot() AS s",
            &[],
        )
        .await?;
    let newer = tx
        .query(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM devops_api.user_changes c \
                 WHERE c.id > $1 ORDER BY c.id LIMIT $2"
            ),
            &[&after, &limit],
        )
        .await?;
    let full = newer.len() as i64 >= limit;
    let mut rows = Vec::new();
    if !gaps.is_empty() {
        let (lows, highs): (Vec<i64>, Vec<i64>) = gaps.iter().copied().unzip();
        rows = tx
            .query(
                &format!(
                    "SELECT {CHANGE_COLUMNS} FROM devops_api.user_changes c \
                     JOIN unnest($1::int8[], $2::int8[]) AS g(lo, hi) ON c.id BETWEEN g.lo AND g.hi"
                ),
                &[&lows, &highs],
            )
            .await?;
    }
    rows.extend(newer);
    let mut changes = rows
        .iter()
        .map(change_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    changes.sort_by_key(|c| c.id);

    let mut user_ids: Vec<i32> = changes.iter().map(|c| c.user_id.get()).collect();
    user_ids.sort_unstable();
    user_ids.dedup();
    let mut found = std::collections::HashMap::new();
    if !user_ids.is_empty() {
        for row in tx
            .query(
                &format!("SELECT id, {PROFILE_COLUMNS} FROM devops_api.users WHERE id = ANY($1)"),
                &[&user_ids],
            )
            .await?
        {
            let id: i32 = row.try_get(0)?;
            let Ok(user_id) = UserId::try_from(i64::from(id)) else {
                continue;
            };
            let state = match profile_from_row(user_id, &row, 1) {
                Ok(profile) => RowState::Present(profile),
                Err(e) => RowState::Invalid(e),
            };
            found.insert(id, state);
        }
    }
    tx.commit().await?;
    let rows = user_ids
        .into_iter()
        .filter_map(|id| {
            let user_id = UserId::try_from(i64::from(id)).ok()?;
            Some((user_id, found.remove(&id).unwrap_or(RowState::Absent)))
        })
        .collect();
    Ok(Batch {
        changes,
        rows,
        xmin: snapshot.try_get(0)?,
        xmax: snapshot.try_get(1)?,
        full,
    })
}

fn change_from_row(row: &tokio_postgres::Row) -> Result<Change, DbError> {
    let user_id: i32 = row.try_get(1)?;
    let op: String = row.try_get(2)?;
    Ok(Change {
        id: row.try_get(0)?,
        user_id: UserId::try_from(i64::from(user_id))
            .map_err(|e| DbError::Other(format!("outbox row names {e}")))?,
        op: match op.as_str() {
            "I" => Op::Insert,
            "U" => Op::Update,
            "D" => Op::Delete,
            other => return Err(DbError::Other(format!("unknown outbox op {other:?}"))),
        },
        version: row.try_get(3)?,
        at_epoch_secs: row.try_get(4)?,
    })
}
