//! Versioned SQL migrations, embedded in the binary and applied by `aside-origin migrate`.
//!
//! Each file in `origin/migrations/` is applied once, in order, inside one transaction holding an
//! advisory lock, so two origins starting together cannot both apply it. The ledger
//! `devops_api.schema_migrations` records each version with a checksum; changing a file after it was
//! applied is refused rather than silently ignored.

use tokio_postgres::Client;

/// One migration file.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users",
        sql: include_str!("../../migrations/0001_users.sql"),
    },
    Migration {
        version: 2,
        name: "change_capture",
        sql: include_str!("../../migrations/0002_change_capture.sql"),
    },
    Migration {
        version: 3,
        name: "least_privilege",
        sql: include_str!("../../migrations/0003_least_privilege.sql"),
    },
    Migration {
        version: 4,
        name: "change_actor",
        sql: include_str!("../../migrations/0004_change_actor.sql"),
    },
];

/// An arbitrary constant naming aside's migration lock among PostgreSQL advisory locks.
const MIGRATION_LOCK: i64 = 0x0A51_DE00_0001;

/// What `migrate` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<i32>,
    pub already_applied: Vec<i32>,
}

/// Applies the pending migrations and then, when `app_role` is given, the application role's grants
/// ([`super::grants`]), all in one transaction.
pub async fn migrate(
    client: &mut Client,
    app_role: Option<&super::grants::RoleName>,
) -> anyhow::Result<MigrateReport> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // "already exists, skipping" notices of the idempotent statements below are noise in the log.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS devops_api;
         CREATE TABLE IF NOT EXISTS devops_api.schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    )
    .await?;
    let applied: Vec<(i32, String)> = tx
        .query(
            "SELECT version, checksum FROM devops_api.schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    let mut report = MigrateReport::default();
    for migration in MIGRATIONS {
        let checksum: String = tx
            .query_one("SELECT md5($1::text)", &[&migration.sql])
            .await?
            .get(0);
        if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == migration.version) {
            anyhow::ensure!(
                *recorded == checksum,
                "migration {:04}_{} was changed after it was applied (checksum {} != {}); \
                 add a new migration instead of editing an applied one",
                migration.version,
                migration.name,
                checksum,
                recorded
            );
            report.already_applied.push(migration.version);
            continue;
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        tx.batch_execute(migration.sql).await.map_err(|e| {
            anyhow::anyhow!(
                "migration {:04}_{} failed: {e}",
                migration.version,
                migration.name
            )
        })?;
        tx.execute(
            "INSERT INTO devops_api.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &checksum],
        )
        .await?;
        report.applied.push(migration.version);
    }
    if let Some(unknown) = applied
        .iter()
        .map(|(v, _)| *v)
        .find(|v| !MIGRATIONS.iter().any(|m| m.version == *v))
    {
        anyhow::bail!(
            "the database has migration {unknown}, which this binary does not know: it is older than the schema"
        );
    }
    if let Some(role) = app_role {
        super::grants::apply(&tx, role).await?;
    }
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
