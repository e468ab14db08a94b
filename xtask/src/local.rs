//! Local Redis and PostgreSQL: rendering the project's configuration and finding the server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The line a redis-server built without a defragmenting jemalloc (Debian, Ubuntu) prints when the
/// configuration asks for `activedefrag yes`.
pub const NO_ACTIVE_DEFRAG_MESSAGE: &str = "Active defragmentation cannot be enabled";

/// Passwords of the three Redis ACL users in `deploy/users.acl.template`.
#[derive(Debug, Clone, Copy)]
pub struct RedisPasswords<'a> {
    pub origin: &'a str,
    pub edge: &'a str,
    pub admin: &'a str,
}

/// The passwords of the users only a replicated Redis needs (`deploy/users.acl.template`'s `replica`,
/// which replicas log in to their primary as, and `sentinel`, which Sentinel does).
#[derive(Debug, Clone, Copy)]
pub struct HaPasswords<'a> {
    pub replica: &'a str,
    pub sentinel: &'a str,
}

/// The template's placeholders of [`HaPasswords`].
const HA_PLACEHOLDERS: [&str; 2] = ["<replica_password>", "<sentinel_password>"];

/// `deploy/users.acl.template` with its `<..._password>` placeholders filled in, for a single Redis:
/// the `replica` and `sentinel` users are left out (no one can log in as them).
pub fn render_acl(template: &str, passwords: &RedisPasswords<'_>) -> String {
    render_acl_with(template, passwords, None)
}

/// [`render_acl`], with the `replica` and `sentinel` users when `ha` is given (a node of a replicated
/// Redis watched by Sentinel).
pub fn render_acl_with(
    template: &str,
    passwords: &RedisPasswords<'_>,
    ha: Option<HaPasswords<'_>>,
) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in template.lines() {
        let line = line
            .replace("<origin_password>", passwords.origin)
            .replace("<edge_password>", passwords.edge)
            .replace("<admin_password>", passwords.admin);
        let line = match ha {
            Some(ha) => line
                .replace("<replica_password>", ha.replica)
                .replace("<sentinel_password>", ha.sentinel),
            None if HA_PLACEHOLDERS.iter().any(|p| line.contains(p)) => continue,
            None => line,
        };
        out.push(line);
    }
    out.push(String::new());
    out.join("\n")
}

/// `deploy/redis.conf`, with `activedefrag` switched off for redis-server builds that cannot
/// defragment (they refuse the whole file otherwise, and a command-line override comes too late).
pub fn render_redis_config(deploy_conf: &str, no_active_defrag: bool) -> String {
    let mut out: Vec<&str> = deploy_conf
        .lines()
        .map(|line| {
            if no_active_defrag && line.trim_start().starts_with("activedefrag ") {
                "activedefrag no"
            } else {
                line
            }
        })
        .collect();
    out.push("");
    out.join("\n")
}

/// A random secret, 32 hex characters, from the kernel's CSPRNG.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, 16, "getrandom failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file readable by its owner only (secrets, ACL files).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// Where the PostgreSQL server binaries are: `ASIDE_PG_BIN`, else the newest Debian install.
pub fn pg_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("ASIDE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    ["18", "17", "16", "15", "14", "13"]
        .iter()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .find(|d| d.join("postgres").exists() && d.join("initdb").exists())
}

/// `Some((uid, gid))` of the `postgres` system user when running as root: PostgreSQL refuses to run as
/// root, so it is started as that user instead.
pub fn postgres_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Makes `command` run as `owner` (see [`postgres_owner`]).
pub fn run_as(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::process::CommandExt::uid(command, uid);
        std::os::unix::process::CommandExt::gid(command, gid);
    }
}

/// The `initdb` command for a cluster with password (scram-sha-256) authentication everywhere.
pub fn initdb_command(pg_bin: &Path, data: &Path, superuser: &str, pwfile: &Path) -> Command {
    let mut initdb = Command::new(pg_bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(data)
        .args(["-U", superuser, "-E", "UTF8", "--no-locale"])
        .args(["--auth-host=scram-sha-256", "--auth-local=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()));
    initdb
}

/// The PostgreSQL role that owns the application database and its schema, and runs `aside-origin
/// migrate` and `seed` (docs/security.md).
pub const OWNER_ROLE: &str = "aside_owner";

/// The PostgreSQL role `aside-origin serve` connects as: no ownership, no `CREATE`, only the grants
/// `migrate --app-role` applies.
pub const APP_ROLE: &str = "aside_app";

/// `pg_hba.conf` for local clusters: password (SCRAM) authentication on loopback TCP, and nothing else.
/// No `trust`, no `peer`, no Unix-socket logins, no replication connections.
pub const PG_HBA: &str = "\
# aside (written by cargo xtask up and the test harness): SCRAM passwords on loopback TCP only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
";

/// Writes [`PG_HBA`] into a cluster's data folder (read by the postmaster when it starts).
pub fn write_pg_hba(data: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let path = data.join("pg_hba.conf");
    write_private(&path, PG_HBA)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// SQL, run by a superuser, that creates the owner and application roles if they are missing and sets
/// their passwords (so re-running it after a password file changed rotates the password). Neither role
/// gets SUPERUSER, CREATEDB, CREATEROLE or BYPASSRLS. The passwords must be [`generate_secret`] output
/// (hex), and the SQL must be sent over a connection, never put on a command line.
pub fn create_roles_sql(owner_password: &str, app_password: &str) -> String {
    assert!(
        [owner_password, app_password]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())),
        "generated passwords are alphanumeric"
    );
    format!(
        "DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
        CREATE ROLE {OWNER_ROLE} LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN;
    END IF;
END
$$;
ALTER ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '{owner_password}';
ALTER ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '{app_password}';
"
    )
}

/// SQL, run by a superuser connected to `database`, that hands the database and everything in schema
/// `devops_api` to [`OWNER_ROLE`] and takes the database's default `CONNECT` and `TEMPORARY` away from
/// `PUBLIC` (the application role gets `CONNECT` from `migrate`). Idempotent; it also adopts a database
/// an older `cargo xtask up` created and migrated as the cluster superuser.
pub fn adopt_database_sql(database: &str) -> String {
    format!(
        "ALTER DATABASE \"{database}\" OWNER TO {OWNER_ROLE};
REVOKE ALL ON DATABASE \"{database}\" FROM PUBLIC;
DO $$
DECLARE
    r record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'devops_api') THEN
        RETURN;
    END IF;
    EXECUTE 'ALTER SCHEMA devops_api OWNER TO {OWNER_ROLE}';
    FOR r IN SELECT c.oid::regclass AS name FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'devops_api' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO {OWNER_ROLE}', r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'devops_api'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO {OWNER_ROLE}', r.name);
    END LOOP;
END
$$;
"
    )
}

/// A running cluster to provision, and the passwords to provision it with.
pub struct Provisioning<'a> {
    pub pg_bin: &'a Path,
    pub port: u16,
    pub superuser: &'a str,
    pub superuser_password: &'a str,
    pub owner_password: &'a str,
    pub app_password: &'a str,
}

impl Provisioning<'_> {
    /// Runs `sql` with `psql` as the superuser on `database` and returns what it printed. The SQL goes
    /// on standard input, not the command line (it holds passwords); the password in `PGPASSWORD`.
    fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        use std::process::Stdio;
        let mut child = Command::new(self.pg_bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", self.superuser, "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-qtA"])
            .env("PGPASSWORD", self.superuser_password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run psql: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(sql.as_bytes())?;
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "provisioning PostgreSQL failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// What `cargo xtask up` does as the superuser on every start: creates the owner and application roles
/// (setting their passwords from the secrets folder every time, so replacing a file there rotates one),
/// creates `database` once, owned by the owner, and adopts it ([`adopt_database_sql`]), which also
/// tightens a database an older `up` made as the superuser.
pub fn provision_postgres(p: &Provisioning<'_>, database: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !database.is_empty()
            && database
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database names are lower-case letters, digits and '_'"
    );
    p.psql(
        "postgres",
        &create_roles_sql(p.owner_password, p.app_password),
    )?;
    let exists = p.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'"),
    )? == "1";
    if !exists {
        p.psql(
            "postgres",
            &format!("CREATE DATABASE {database} OWNER {OWNER_ROLE}"),
        )?;
    }
    p.psql(database, &adopt_database_sql(database))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_placeholders_are_all_replaced() {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/users.acl.template"),
        )
        .unwrap();
        let acl = render_acl(
            &template,
            &RedisPasswords {
                origin: "o1",
                edge: "e1",
                admin: "a1",
            },
        );
        assert!(!acl.contains('<'), "{acl}");
        assert!(acl.contains("user origin on >o1 "));
        assert!(acl.contains("user edge on >e1 "));
        assert!(
            !acl.lines().any(|l| l.starts_with('#')),
            "ACL files cannot hold comments"
        );
    }

    #[test]
    fn ha_users_are_only_rendered_for_a_replicated_redis() {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/users.acl.template"),
        )
        .unwrap();
        let passwords = RedisPasswords {
            origin: "o1",
            edge: "e1",
            admin: "a1",
        };
        let single = render_acl(&template, &passwords);
        assert!(!single.contains("user replica") && !single.contains("user sentinel"));
        let ha = render_acl_with(
            &template,
            &passwords,
            Some(HaPasswords {
                replica: "r1",
                sentinel: "s1",
            }),
        );
        assert!(!ha.contains('<'), "{ha}");
        assert!(ha.contains("user replica on >r1 "));
        assert!(ha.contains("user sentinel on >s1 "));
        assert!(ha.contains("user edge on >e1 "));
    }

    #[test]
    fn defrag_is_only_switched_off_when_asked() {
        let conf = "maxmemory 1gb\nactivedefrag yes\n";
        assert!(render_redis_config(conf, false).contains("activedefrag yes"));
        let off = render_redis_config(conf, true);
        assert!(off.contains("activedefrag no") && !off.contains("activedefrag yes"));
    }

    #[test]
    fn pg_hba_has_no_trust_and_no_socket_logins() {
        let rules: Vec<&str> = PG_HBA
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .collect();
        assert!(!rules.is_empty());
        for rule in rules {
            assert!(rule.starts_with("host "), "{rule}");
            assert!(rule.ends_with("scram-sha-256"), "{rule}");
        }
    }

    #[test]
    #[should_panic(expected = "alphanumeric")]
    fn role_sql_refuses_passwords_that_would_need_quoting() {
        create_roles_sql("abc'; DROP ROLE x; --", "def");
    }

    #[test]
    fn secrets_are_random_hex() {
        let a = generate_secret();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, generate_secret());
    }
}
