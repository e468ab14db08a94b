//! Local Redis and PostgreSQL: rendering the project's configuration and finding the server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The line a redis-server built without a defragmenting jemalloc (Debian, Ubuntu) prints when the
/// configuration asks for `activedefrag yes`.
pub const NO_ACTIVE_DEFRAG_MESSAGE: &str = "Active defragmentation cannot be enabled";

/// Passwords of the three Redis ACL users in `deploy/users.acl.template`.
pub struct RedisPasswords<'a> {
    pub origin: &'a str,
    pub edge: &'a str,
    pub admin: &'a str,
}

/// `deploy/users.acl.template` with its `<..._password>` placeholders filled in.
pub fn render_acl(template: &str, passwords: &RedisPasswords<'_>) -> String {
    template
        .replace("<origin_password>", passwords.origin)
        .replace("<edge_password>", passwords.edge)
        .replace("<admin_password>", passwords.admin)
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
    fn defrag_is_only_switched_off_when_asked() {
        let conf = "maxmemory 1gb\nactivedefrag yes\n";
        assert!(render_redis_config(conf, false).contains("activedefrag yes"));
        let off = render_redis_config(conf, true);
        assert!(off.contains("activedefrag no") && !off.contains("activedefrag yes"));
    }

    #[test]
    fn secrets_are_random_hex() {
        let a = generate_secret();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, generate_secret());
    }
}
