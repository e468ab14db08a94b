//! The application role's privileges, applied by `aside-origin migrate --app-role NAME`.
//!
//! Two PostgreSQL roles run aside (docs/security.md): the *owner* owns the database and every object in
//! `devops_api` and runs `migrate` and `seed`; the *application role*, which `serve` connects as, owns
//! nothing and gets exactly what the service does, nothing more:
//!
//! | object | privileges | why |
//! | --- | --- | --- |
//! | the database | `CONNECT` | to log in (provisioning revokes it from `PUBLIC`) |
//! | schema `devops_api` | `USAGE` | to name its objects; no `CREATE` |
//! | `users` | `SELECT`; `INSERT` and `UPDATE` of the six profile columns; `DELETE` | the API's reads and writes; `id`, `version` and `updated_at` are the database's to set |
//! | `users_id_seq` | `USAGE` | `nextval` for the id of a created row |
//! | `user_changes` | `SELECT, DELETE` | change capture reads the outbox and prunes applied rows (the triggers that fill it run as the owner, migration 0003) |
//! | `change_watermark` | `SELECT, UPDATE` | change capture moves its watermark |
//!
//! Advisory locks, `LISTEN` and `pg_current_snapshot()` need no grant. Grants converge: everything the
//! role holds in the schema is revoked and the list above granted again, in migrate's transaction, so a
//! privilege granted by hand (or by an older version) does not survive the next `migrate`, and no reader
//! ever sees the role half-granted.

use std::fmt;

use tokio_postgres::Transaction;

/// The profile columns the API writes (`INSERT` and `UPDATE` are granted on these only).
const WRITABLE_COLUMNS: &str = "full_name, gender, birth_date, department, email, username";

/// A PostgreSQL role name that needs no quoting: lower-case letters, digits and `_`, not starting with a
/// digit, at most 63 bytes (PostgreSQL's identifier length). It is still quoted wherever it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
            && !name.starts_with("pg_");
        anyhow::ensure!(
            valid,
            "the application role name must be 1 to 63 lower-case letters, digits or '_', \
             not start with a digit or 'pg_' (got {:?})",
            name.chars().take(70).collect::<String>()
        );
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `"name"`: a quoted identifier (the name has no `"` to double, see [`RoleName::parse`]).
    fn quoted(&self) -> String {
        quote_ident(&self.0)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A quoted SQL identifier: wrapped in `"`, inner `"` doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements that give `role` exactly the service's privileges (after revoking what it had),
/// for database `database`.
pub fn grant_statements(role: &RoleName, database: &str) -> Vec<String> {
    let r = role.quoted();
    let db = quote_ident(database);
    vec![
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA devops_api FROM {r}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA devops_api FROM {r}"),
        format!("REVOKE ALL ON SCHEMA devops_api FROM {r}"),
        format!("GRANT CONNECT ON DATABASE {db} TO {r}"),
        format!("GRANT USAGE ON SCHEMA devops_api TO {r}"),
        format!(
            "GRANT SELECT, INSERT ({WRITABLE_COLUMNS}), UPDATE ({WRITABLE_COLUMNS}), DELETE \
             ON devops_api.users TO {r}"
        ),
        format!("GRANT USAGE ON SEQUENCE devops_api.users_id_seq TO {r}"),
        format!("GRANT SELECT, DELETE ON devops_api.user_changes TO {r}"),
        format!("GRANT SELECT, UPDATE ON devops_api.change_watermark TO {r}"),
    ]
}

/// Checks that `role` exists and is a role the service can safely run as, then applies
/// [`grant_statements`] in `tx` (migrate's transaction, run by the owner).
pub async fn apply(tx: &Transaction<'_>, role: &RoleName) -> anyhow::Result<()> {
    let row = tx
        .query_opt(
            "SELECT r.rolsuper, r.rolcanlogin, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, \
                    pg_has_role(r.rolname, current_user, 'MEMBER'), current_user::text, \
                    current_database()::text \
             FROM pg_roles r WHERE r.rolname = $1",
            &[&role.as_str()],
        )
        .await?;
    let Some(row) = row else {
        anyhow::bail!(
            "the application role {role} does not exist; create it first (docs/security.md): \
             CREATE ROLE {role} LOGIN PASSWORD '...'"
        );
    };
    let (superuser, login, createrole, createdb, bypassrls): (bool, bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let has_owner_rights: bool = row.get(5);
    let owner: String = row.get(6);
    let database: String = row.get(7);
    anyhow::ensure!(
        !(superuser || createrole || createdb || bypassrls),
        "the application role {role} has SUPERUSER, CREATEROLE, CREATEDB or BYPASSRLS; \
         the service's role must have none of them"
    );
    anyhow::ensure!(
        !has_owner_rights,
        "the application role {role} is (or inherits) {owner}, the role running migrate, so it would \
         own the schema; run migrate as the owner role and serve as a separate role"
    );
    if !login {
        tracing::warn!(%role, "the application role cannot log in (NOLOGIN)");
    }
    for statement in grant_statements(role, &database) {
        tx.batch_execute(&statement)
            .await
            .map_err(|e| anyhow::anyhow!("granting to {role} failed: {e}"))?;
    }
    tracing::info!(%role, "granted the application role its privileges");
    Ok(())
}

/// Logs a warning, once per process, when the service connected as a role that could change the schema
/// (a superuser, or a role with `CREATE` on `devops_api`, such as its owner): it works, but it is not
/// least privilege. Errors are ignored: this is advice, and the caller's own queries report failures.
pub async fn warn_if_privileged(client: &tokio_postgres::Client) {
    static CHECKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if CHECKED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Ok(row) = client
        .query_one(
            "SELECT r.rolsuper OR has_schema_privilege(r.oid, 'devops_api', 'CREATE'), \
                    r.rolname::text \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
    else {
        CHECKED.store(false, std::sync::atomic::Ordering::Relaxed);
        return;
    };
    let (privileged, role): (bool, String) = (row.get(0), row.get(1));
    if privileged {
        tracing::warn!(
            %role,
            "serving as a role that can change the schema (a superuser or the owner); serve as the \
             application role instead (aside-origin migrate --app-role, docs/security.md)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        for good in ["aside_app", "app", "_x", "a1"] {
            assert_eq!(RoleName::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "1app",
            "App",
            "app-role",
            "app\"; DROP TABLE x; --",
            "pg_monitor",
            &"a".repeat(64),
        ] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grants_name_the_quoted_role_and_database() {
        let role = RoleName::parse("aside_app").unwrap();
        let sql = grant_statements(&role, "my\"db").join(";\n");
        assert!(sql.contains("GRANT CONNECT ON DATABASE \"my\"\"db\" TO \"aside_app\""));
        assert!(
            sql.contains("INSERT (full_name, gender, birth_date, department, email, username)")
        );
        assert!(!sql.contains("TRUNCATE") && !sql.contains("GRANT ALL"));
        // Revokes come first, so the grants converge.
        assert!(sql.find("REVOKE").unwrap() < sql.find("GRANT").unwrap());
    }
}
