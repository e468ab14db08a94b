//! Finding the Spin CLI the way a user has it: `ASIDE_SPIN=/path/to/spin`, else `spin` on `PATH`.
//!
//! Spin is the edge's production runtime; `cargo xtask up`, `cargo xtask test` and `cargo xtask bench`
//! run the edge under `spin up` when a Spin 4 CLI is found, and under the bundled Spin-compatible host
//! otherwise (and say which). Only Spin 4.x is accepted: the component is built with `spin-sdk` 6
//! (WASI 0.3.0-rc-2026-03-15), which Spin 3 cannot run and later WASI releases will not match.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming a Spin CLI explicitly (it wins over `PATH`).
pub const ASIDE_SPIN: &str = "ASIDE_SPIN";

/// The major version the component needs.
const NEEDED_MAJOR: &str = "4";

/// A Spin 4 CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpinCli {
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// What `spin --version` printed, e.g. `spin 4.0.2 (bfc7543b 2026-06-23)`.
    pub version: String,
}

impl fmt::Display for SpinCli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.path.display())
    }
}

/// Why no usable Spin CLI was found; its text says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// `ASIDE_SPIN` names something that is not a Spin 4 CLI. A user who set it meant it: callers treat
    /// this as an error, not as "use the bundled host".
    BadOverride { path: PathBuf, why: String },
    /// No `spin` on `PATH`.
    NotOnPath,
    /// A `spin` on `PATH` that is not Spin 4.
    WrongVersion { path: PathBuf, version: String },
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFound::BadOverride { path, why } => write!(
                f,
                "{ASIDE_SPIN}={} is not a usable Spin {NEEDED_MAJOR} CLI: {why}",
                path.display()
            ),
            NotFound::NotOnPath => write!(
                f,
                "no `spin` on PATH and {ASIDE_SPIN} is not set (install Spin {NEEDED_MAJOR} from \
                 https://spinframework.dev)"
            ),
            NotFound::WrongVersion { path, version } => write!(
                f,
                "{} is `{version}`, not Spin {NEEDED_MAJOR}.x; set {ASIDE_SPIN} to a Spin \
                 {NEEDED_MAJOR} CLI",
                path.display()
            ),
        }
    }
}

impl std::error::Error for NotFound {}

/// Finds the Spin CLI: `ASIDE_SPIN` when set (it must be a Spin 4 CLI), else the first `spin` on `PATH`
/// (it must be Spin 4).
pub fn find() -> Result<SpinCli, NotFound> {
    if let Some(path) = std::env::var_os(ASIDE_SPIN).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return check(&path).map_err(|why| NotFound::BadOverride { path, why });
    }
    let path = on_path("spin", std::env::var_os("PATH")).ok_or(NotFound::NotOnPath)?;
    check(&path).map_err(|version| NotFound::WrongVersion { path, version })
}

/// Runs `path --version` and accepts Spin 4.x; the error is what it printed (or why it did not run).
fn check(path: &Path) -> Result<SpinCli, String> {
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        return Err(format!("`--version` failed ({})", output.status));
    }
    if !is_spin_major(&version, NEEDED_MAJOR) {
        return Err(version);
    }
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(SpinCli { path, version })
}

/// Does `spin --version`'s output (`spin 4.0.2 (bfc7543b 2026-06-23)`) name major version `major`?
fn is_spin_major(version: &str, major: &str) -> bool {
    let mut words = version.split_whitespace();
    words.next() == Some("spin")
        && words
            .next()
            .and_then(|v| v.split('.').next())
            .is_some_and(|m| m == major)
}

/// The first executable file named `name` in the directories of `path` (a `PATH` value).
fn on_path(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(&path?)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spin_4_versions_are_accepted() {
        assert!(is_spin_major("spin 4.0.2 (bfc7543b 2026-06-23)", "4"));
        assert!(is_spin_major("spin 4.1.0", "4"));
        assert!(!is_spin_major("spin 3.4.1 (abc 2025-01-01)", "4"));
        assert!(!is_spin_major("spin 40.0.0", "4"));
        assert!(!is_spin_major("spinach 4.0.0", "4"));
        assert!(!is_spin_major("", "4"));
    }

    #[test]
    fn path_lookup_finds_the_first_executable() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("aside-spin-path-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // Not executable in `a`, executable in `b`.
        std::fs::write(a.join("spin"), "").unwrap();
        std::fs::write(b.join("spin"), "").unwrap();
        std::fs::set_permissions(b.join("spin"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(on_path("spin", Some(path.clone())), Some(b.join("spin")));
        assert_eq!(on_path("nothing-by-this-name", Some(path)), None);
        assert_eq!(on_path("spin", None), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
