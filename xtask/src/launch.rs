//! One way to start each of the project's own services: the origin's settings and the edge's Spin
//! variables as typed builders that `cargo xtask up`, the benchmark and the test harness all use.
//!
//! The names come from [`aside_shared::settings`], defined once; a builder refuses any other name (a
//! misspelt setting would otherwise be ignored by the service and the run would measure the default).
//! PostgreSQL's server is [`PostgresLaunch`]; Redis nodes are [`crate::redis_server::RedisNode`]
//! (Sentinel: [`crate::redis_ha`], Cluster: [`crate::redis_cluster`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use aside_shared::settings::{is_edge_variable, is_origin_setting, spin_variable_env};

/// The environment of one origin process: `ASIDE_*` settings by name.
#[derive(Debug, Clone, Default)]
pub struct OriginSettings {
    settings: BTreeMap<&'static str, String>,
}

impl OriginSettings {
    /// An origin that listens on `listen` (`host:port`) and reads PostgreSQL at `database_url`.
    pub fn new(listen: impl Into<String>, database_url: impl Into<String>) -> Self {
        Self::default()
            .set("ASIDE_LISTEN", listen)
            .set("ASIDE_DATABASE_URL", database_url)
    }

    /// Sets `name`, one of the origin's settings ([`aside_shared::settings::ORIGIN_SETTINGS`]).
    ///
    /// # Panics
    /// On a name the origin does not read: a bug in the caller, never a user's input.
    pub fn set(mut self, name: &'static str, value: impl Into<String>) -> Self {
        assert!(
            is_origin_setting(name),
            "{name} is not a setting of the origin (aside_shared::settings::ORIGIN_SETTINGS)"
        );
        self.settings.insert(name, value.into());
        self
    }

    /// Tier 2 on one Redis node, as the `origin` ACL user.
    pub fn redis(self, host_port: &str, origin_password: &str) -> Self {
        self.set(
            "ASIDE_REDIS_URL",
            format!("redis://origin:{origin_password}@{host_port}"),
        )
    }

    /// The bearer tokens the edge (and other callers) present, comma-separated in one setting.
    pub fn origin_tokens(self, tokens: &[&str]) -> Self {
        self.set("ASIDE_ORIGIN_TOKENS", tokens.join(","))
    }

    /// The tokens of the operational routes.
    pub fn admin_tokens(self, tokens: &[&str]) -> Self {
        self.set("ASIDE_ADMIN_TOKENS", tokens.join(","))
    }

    /// The cache on (the default) or off (every read a PostgreSQL query: the bench's baseline).
    pub fn cache(self, on: bool) -> Self {
        self.set("ASIDE_CACHE", if on { "on" } else { "off" })
    }

    /// The settings, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.settings.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// Puts the settings in `command`'s environment.
    pub fn apply(&self, command: &mut Command) {
        for (name, value) in self.iter() {
            command.env(name, value);
        }
    }

    /// `aside-origin serve` from `bin_dir` with these settings.
    pub fn serve(&self, bin_dir: &Path) -> Command {
        let mut command = Command::new(bin_dir.join("aside-origin"));
        command.arg("serve");
        self.apply(&mut command);
        command
    }
}

/// The Spin variables of one edge process, by name ([`aside_shared::settings::EDGE_VARIABLES`]); what is
/// not set keeps spin.toml's default.
#[derive(Debug, Clone, Default)]
pub struct EdgeVariables {
    variables: BTreeMap<String, String>,
}

/// Placeholders for the identity-provider variables, which Spin requires even with `auth = "off"`.
const UNUSED: &str = "unused: auth is off";

impl EdgeVariables {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name`, one of the edge's Spin variables.
    ///
    /// # Panics
    /// On a name the edge does not read: a bug in the caller (Spin would refuse it, the host ignore it).
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        assert!(
            is_edge_variable(name),
            "{name} is not a Spin variable of the edge (aside_shared::settings::EDGE_VARIABLES)"
        );
        self.variables.insert(name.to_string(), value.to_string());
        self
    }

    /// Tier 2 at `host_port` as `user` (the `edge` ACL user).
    pub fn redis(self, host_port: &str, user: &str, password: &str) -> Self {
        self.set("redis_address", host_port)
            .set("redis_user", user)
            .set("redis_password", password)
    }

    /// Misses and writes forwarded to the origin at `url` with its bearer token.
    pub fn origin(self, url: &str, token: &str) -> Self {
        self.set("origin_url", url).set("origin_token", token)
    }

    /// Client authentication on, with a static JWKS document and the tokens' `iss` and `aud`.
    pub fn auth_jwks(self, jwks: &str, issuer: &str, audience: &str) -> Self {
        self.set("auth", "on")
            .set("auth_jwks", jwks)
            .set("auth_issuer", issuer)
            .set("auth_audience", audience)
    }

    /// Client authentication off; the identity-provider variables get placeholders.
    pub fn auth_off(self) -> Self {
        self.set("auth", "off")
            .set("auth_jwks", UNUSED)
            .set("auth_issuer", UNUSED)
            .set("auth_audience", UNUSED)
    }

    /// The process-wide tier on, in the Spin key-value store `store` (a label of the runtime config).
    pub fn shared_tier(self, store: &str) -> Self {
        self.set("shared_tier_store", store)
    }

    /// Tier 1 off: every read asks the shared tier or Redis.
    pub fn l1_off(self) -> Self {
        self.set("l1_max_entries", 0).set("l1_ttl_ms", 0)
    }

    /// The value set for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    /// The variables, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.variables.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Puts the variables in `command`'s environment as `SPIN_VARIABLE_*`, which `spin up` (and the
    /// bundled host) read.
    pub fn apply(&self, command: &mut Command) {
        for (name, value) in self.iter() {
            command.env(spin_variable_env(name), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(command: &Command) -> BTreeMap<String, String> {
        command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect()
    }

    #[test]
    fn the_origin_gets_its_settings_by_their_names() {
        let command = OriginSettings::new("127.0.0.1:1", "postgres://a@b/c")
            .redis("127.0.0.1:2", "pw")
            .origin_tokens(&["t1", "t2"])
            .cache(false)
            .serve(Path::new("/bin-dir"));
        assert_eq!(command.get_program(), "/bin-dir/aside-origin");
        assert_eq!(command.get_args().collect::<Vec<_>>(), ["serve"]);
        let env = env_of(&command);
        assert_eq!(env["ASIDE_LISTEN"], "127.0.0.1:1");
        assert_eq!(env["ASIDE_REDIS_URL"], "redis://origin:pw@127.0.0.1:2");
        assert_eq!(env["ASIDE_ORIGIN_TOKENS"], "t1,t2");
        assert_eq!(env["ASIDE_CACHE"], "off");
    }

    #[test]
    #[should_panic(expected = "ASIDE_REDIS_URI is not a setting of the origin")]
    fn a_misspelt_origin_setting_is_refused() {
        let _ = OriginSettings::default().set("ASIDE_REDIS_URI", "redis://x");
    }

    #[test]
    fn the_edge_gets_spin_variables() {
        let vars = EdgeVariables::new()
            .redis("127.0.0.1:3", "edge", "pw")
            .origin("http://127.0.0.1:4", "tok")
            .auth_off()
            .l1_off();
        let mut command = Command::new("spin");
        vars.apply(&mut command);
        let env = env_of(&command);
        assert_eq!(env["SPIN_VARIABLE_REDIS_ADDRESS"], "127.0.0.1:3");
        assert_eq!(env["SPIN_VARIABLE_ORIGIN_URL"], "http://127.0.0.1:4");
        assert_eq!(env["SPIN_VARIABLE_AUTH"], "off");
        assert_eq!(env["SPIN_VARIABLE_L1_TTL_MS"], "0");
        assert_eq!(vars.get("redis_user"), Some("edge"));
    }

    #[test]
    #[should_panic(expected = "feed_pol_ms is not a Spin variable of the edge")]
    fn a_misspelt_edge_variable_is_refused() {
        let _ = EdgeVariables::new().set("feed_pol_ms", 10);
    }
}

/// One PostgreSQL server of the project: its folder (the cluster in `<dir>/data`, the Unix socket in
/// `<dir>`), its port and its settings. `cargo xtask up`, the benchmark and the test harness create and
/// start PostgreSQL through it: password (SCRAM) logins on loopback TCP only ([`crate::local::PG_HBA`],
/// rewritten before every start), run as the `postgres` system user when started as root.
#[derive(Debug, Clone)]
pub struct PostgresLaunch {
    pg_bin: PathBuf,
    dir: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    throwaway: bool,
    settings: Vec<(&'static str, String)>,
}

impl PostgresLaunch {
    /// A server in `dir` on `127.0.0.1:port`, from [`crate::local::pg_bin_dir`]'s binaries.
    pub fn new(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let pg_bin = crate::local::pg_bin_dir().context(
            "PostgreSQL server binaries not found (set ASIDE_PG_BIN or install postgresql)",
        )?;
        Ok(Self {
            pg_bin,
            dir: dir.to_path_buf(),
            port,
            owner: crate::local::postgres_owner(),
            throwaway: false,
            settings: Vec::new(),
        })
    }

    /// A cluster the tests throw away: created without syncing to disk and run without `fsync` or full
    /// page writes (the OS keeps what was written, which is all a killed postmaster needs;
    /// `synchronous_commit` stays on, so an acknowledged commit survives a kill), with room for the
    /// suite's connections.
    pub fn throwaway(mut self) -> Self {
        self.throwaway = true;
        self.setting("max_connections", "300")
            .setting("shared_buffers", "128MB")
            .setting("fsync", "off")
            .setting("full_page_writes", "off")
    }

    /// A server setting (`postgres -c name=value`).
    pub fn setting(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.settings.push((name, value.into()));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pg_bin(&self) -> &Path {
        &self.pg_bin
    }

    /// The system user (uid, gid) the server runs as, if not this process's.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// Whether the cluster exists.
    pub fn is_created(&self) -> bool {
        self.dir.join("data/PG_VERSION").exists()
    }

    /// Creates the cluster with `superuser` and its password (handed to `initdb` in a private file,
    /// removed afterwards; never on a command line).
    pub fn create(&self, superuser: &str, password: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let pwfile = self.dir.join("pwfile");
        crate::local::write_private(&pwfile, password)?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let mut initdb =
            crate::local::initdb_command(&self.pg_bin, &self.dir.join("data"), superuser, &pwfile);
        if self.throwaway {
            initdb.arg("--no-sync");
        }
        crate::local::run_as(&mut initdb, self.owner);
        let output = initdb.output();
        let _ = std::fs::remove_file(&pwfile);
        let output =
            output.with_context(|| format!("cannot run initdb from {}", self.pg_bin.display()))?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The postmaster's command, after rewriting `pg_hba.conf` (so a cluster made by an older version
    /// loses any looser rule). It does not switch user: spawn it with [`PostgresLaunch::owner`] (e.g.
    /// [`crate::local::run_as`]).
    pub fn command(&self) -> anyhow::Result<Command> {
        crate::local::write_pg_hba(&self.dir.join("data"), self.owner)?;
        let mut command = Command::new(self.pg_bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        for (name, value) in &self.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        Ok(command)
    }
}
