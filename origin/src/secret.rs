//! [`Secret`]: connection URLs that carry passwords, bearer tokens: values that never print; and
//! [`redact_url`], what of an URL may be printed.
//!
//! `Debug` and `Display` show `[redacted]`; each secret setting can also be read from a file
//! (`..._FILE`) so that orchestrators can mount it instead of putting it in the environment.

use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// So that clap parses secret flags and environment variables straight into a [`Secret`]: the parsed
/// arguments (`Cli`, `ServeArgs`) derive `Debug`, and must print no secret either.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Reads a secret given directly or through a file; the file wins if both are set.
pub fn secret_from(
    value: Option<&Secret>,
    file: Option<&PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} from {}", path.display()))?;
        let text = text.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!text.is_empty(), "{what} file {} is empty", path.display());
        return Ok(Some(Secret::new(text)));
    }
    Ok(value.filter(|v| !v.expose().is_empty()).cloned())
}

/// Where an URL points, without user name or password: `scheme://host:port/path`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path())
        }
        Err(_) => "[unparsable url]".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_keep_only_where_they_point() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5433/aside"),
            "postgres://db.internal:5433/aside"
        );
        assert_eq!(
            redact_url("redis://origin:pw@127.0.0.1:6380"),
            "redis://127.0.0.1:6380"
        );
        assert_eq!(redact_url("host=x password=y"), "[unparsable url]");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            url: Secret,
        }
        let h = Holder { url: s };
        assert!(!format!("{h:?}").contains("hunter2"));
    }

    #[test]
    fn secret_files_win_and_lose_their_newline() {
        let dir = std::env::temp_dir().join(format!("aside-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "redis://u:p@h:1\n").unwrap();
        let s = secret_from(Some(&Secret::new("ignored")), Some(&file), "x")
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "redis://u:p@h:1");
        std::fs::write(&file, "").unwrap();
        assert!(secret_from(None, Some(&file), "x").is_err());
        assert_eq!(
            secret_from(Some(&Secret::new("")), None, "x").unwrap(),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
