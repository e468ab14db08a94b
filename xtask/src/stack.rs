//! Starting and stopping the local stack's processes: shared by `cargo xtask up` (the user's stack in
//! `.aside/`) and `cargo xtask bench` (a throw-away stack on free ports).
//!
//! Every process runs in its own process group, so a terminal's Ctrl-C reaches the driver alone and the
//! shutdown happens in order; each also gets `PR_SET_PDEATHSIG`, so a driver that is killed outright
//! takes its children with it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::launch::PostgresLaunch;
use crate::local::{self, RedisPasswords};
use crate::redis_server::{self, RedisNode};

/// The secrets of one local stack, generated on first use into a folder (mode 0600 files).
pub struct Secrets {
    pub redis_origin: String,
    pub redis_edge: String,
    pub redis_admin: String,
    /// The cluster superuser `aside` (provisioning only; no aside service uses it).
    pub postgres: String,
    /// The owner role: `migrate` and `seed`.
    pub postgres_owner: String,
    /// The application role: `serve`.
    pub postgres_app: String,
    pub origin_token: String,
    /// The origin's admin routes (`/admin/cache/stats`).
    pub admin_token: String,
    /// Names this stack (not a secret): written beside a PostgreSQL cluster when it is created, so that a
    /// later `up` can tell its own cluster from one another state folder made ([`ForeignCluster`]).
    pub stack_id: String,
}

impl Secrets {
    /// Reads the secrets in `dir`, generating the missing ones.
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let get = |name: &str| -> anyhow::Result<String> {
            let path = dir.join(name);
            if let Ok(existing) = std::fs::read_to_string(&path) {
                return Ok(existing.trim().to_string());
            }
            let secret = local::generate_secret();
            local::write_private(&path, &secret)?;
            Ok(secret)
        };
        Ok(Self {
            redis_origin: get("redis-origin")?,
            redis_edge: get("redis-edge")?,
            redis_admin: get("redis-admin")?,
            postgres: get("postgres")?,
            postgres_owner: get("postgres-owner")?,
            postgres_app: get("postgres-app")?,
            origin_token: get("origin-token")?,
            admin_token: get("admin-token")?,
            stack_id: get(STACK_ID_FILE)?,
        })
    }

    /// The passwords of the Redis ACL users.
    pub fn redis_passwords(&self) -> RedisPasswords<'_> {
        RedisPasswords {
            origin: &self.redis_origin,
            edge: &self.redis_edge,
            admin: &self.redis_admin,
        }
    }
}

/// The file, in the secrets folder and beside a PostgreSQL cluster's `data/`, that names the stack.
pub const STACK_ID_FILE: &str = "stack-id";

/// A PostgreSQL cluster left by another stack: the state folder was removed or replaced since the cluster
/// was created (as root the cluster lives outside the state folder, see [`postgres_dir`]), so the
/// passwords in the state folder are not the cluster's. `up` changes nothing and names the fix.
#[derive(Debug)]
pub struct ForeignCluster {
    pub dir: PathBuf,
    /// What showed it: a stack id that differs, or a login the cluster refused.
    pub evidence: String,
}

impl std::fmt::Display for ForeignCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the PostgreSQL cluster in {} was made by another stack ({}): its state folder was removed or \
             replaced since, so the passwords there are not this cluster's. Nothing was changed. To start \
             over, remove the cluster and the state folder with `cargo xtask reset` (their data is lost), then \
             run `cargo xtask up` again",
            self.dir.display(),
            self.evidence
        )
    }
}

impl std::error::Error for ForeignCluster {}

/// How to start a process again: what a [`Command`] held when it was first spawned (a `Command` cannot
/// be cloned), plus the user it runs as.
#[derive(Debug, Clone)]
pub struct Recipe {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
    dir: Option<PathBuf>,
    owner: Option<(u32, u32)>,
}

impl Recipe {
    /// The program, arguments, environment changes and folder of `command`.
    pub fn of(command: &Command) -> Self {
        Self {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
            dir: command.get_current_dir().map(Path::to_path_buf),
            owner: None,
        }
    }

    /// Runs the process as `owner` (see [`local::postgres_owner`]).
    pub fn run_as(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    /// A fresh command from the recipe.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        local::run_as(&mut command, self.owner);
        command
    }
}

/// A started process and how to stop it cleanly.
pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub stop_signal: i32,
    /// How to start it again.
    pub recipe: Recipe,
    /// The port it serves on, once [`Services::wait_for_port`] has seen it open.
    pub port: Option<u16>,
}

/// Started processes, stopped in reverse start order when dropped (also on an error half-way through).
#[derive(Default)]
pub struct Services(pub Vec<Service>);

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `command` with its output appended to `<logs>/<name>.log`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        command: Command,
        logs: &Path,
        stop_signal: i32,
    ) -> anyhow::Result<()> {
        self.spawn_recipe(name, Recipe::of(&command), logs, stop_signal)
    }

    /// Starts the process `recipe` describes, with its output appended to `<logs>/<name>.log`.
    pub fn spawn_recipe(
        &mut self,
        name: &'static str,
        recipe: Recipe,
        logs: &Path,
        stop_signal: i32,
    ) -> anyhow::Result<()> {
        let child = spawn_logged(name, &recipe, logs)?;
        self.0.push(Service {
            name,
            child,
            stop_signal,
            recipe,
            port: None,
        });
        Ok(())
    }

    /// Waits until the service started last accepts connections on `port`, or has exited.
    pub fn wait_for_port(&mut self, port: u16, logs: &Path) -> anyhow::Result<()> {
        let service = self.0.last_mut().expect("a service was just started");
        wait_for_port(service, port, logs)?;
        service.port = Some(port);
        Ok(())
    }

    /// The name of a service that has exited on its own, if any.
    pub fn first_exited(&mut self) -> Option<&'static str> {
        self.0
            .iter_mut()
            .find_map(|s| (!matches!(s.child.try_wait(), Ok(None))).then_some(s.name))
    }

    /// Stops the service named `name` (and only it), waiting for it to exit.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|s| s.name == name) {
            stop_service(self.0.remove(i));
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        while let Some(service) = self.0.pop() {
            stop_service(service);
        }
    }
}

fn stop_service(mut service: Service) {
    stop_child(service.name, &mut service.child, service.stop_signal);
    eprintln!("xtask: stopped {}", service.name);
}

/// Starts the process `recipe` describes in its own process group, its output appended to
/// `<logs>/<name>.log`.
pub fn spawn_logged(name: &str, recipe: &Recipe, logs: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?;
    let mut command = recipe.command();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    detach(&mut command);
    command
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

/// Waits until `service` (or a child of it) listens on `port` ([`listens_on`]: another process that
/// holds the port does not count), failing if it exits first or takes over 30 s.
pub fn wait_for_port(service: &mut Service, port: u16, logs: &Path) -> anyhow::Result<()> {
    let name = service.name;
    let pid = service.child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if listens_on(pid, port) {
            return Ok(());
        }
        if !matches!(service.child.try_wait(), Ok(None)) {
            bail!("{name} exited; see {}/{name}.log", logs.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{name} did not open port {port}; see {}/{name}.log",
        logs.display()
    )
}

/// Whether TCP port `port` on the loopback (or every) address is listened on by process `pid` or one
/// of its descendants, read from `/proc`.
///
/// The readiness check of the stack's services and of the test harness's servers, rather than
/// "something accepts connections on the port": a free port (bind to port 0, read it, close) is one
/// nobody holds *at that moment*, and two services of one run can be handed the same one before
/// either binds it. The second then fails to bind and exits, while a bare port check passes on the
/// first, and its caller talks to the other's server.
pub fn listens_on(pid: u32, port: u16) -> bool {
    use procfs::net::TcpState;
    use procfs::process::FDTarget;

    let listening: std::collections::HashSet<u64> = [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.state == TcpState::Listen
                && e.local_address.port() == port
                && (e.local_address.ip().is_loopback() || e.local_address.ip().is_unspecified())
        })
        .map(|e| e.inode)
        .collect();
    if listening.is_empty() {
        return false;
    }
    descendants_and_self(pid).into_iter().any(|p| {
        procfs::process::Process::new(p as i32)
            .and_then(|process| process.fd())
            .map(|fds| {
                fds.flatten().any(
                    |fd| matches!(fd.target, FDTarget::Socket(inode) if listening.contains(&inode)),
                )
            })
            .unwrap_or(false)
    })
}

/// `pid` and every process below it (from each process's parent in `/proc/<pid>/stat`).
fn descendants_and_self(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = procfs::process::all_processes()
        .map(|all| {
            all.flatten()
                .filter_map(|p| p.stat().ok())
                .map(|s| (s.pid as u32, s.ppid as u32))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(child, _)| *child),
        );
        next += 1;
    }
    found
}

/// Stops a child started by [`spawn_logged`] and everything in its process group (Spin, for one, runs
/// its trigger as a child process): `signal` to the group, SIGKILL to whatever is left after 15 s.
pub fn stop_child(name: &str, child: &mut Child, signal: i32) {
    let group = child.id() as i32;
    // SAFETY: signalling the process group of a child we started (its pid is its group id).
    unsafe {
        libc::kill(-group, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                eprintln!("xtask: {name} did not stop in 15 s; killing it");
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    clear_group(group);
    let _ = child.kill();
    let _ = child.wait();
}

/// Makes sure nothing is left of the process group `group` once its leader has exited: SIGTERM, then
/// SIGKILL after 2 s. (A group id is not reused while any member lives, so this reaches only ours.)
pub fn clear_group(group: i32) {
    // SAFETY: signal 0 only checks that the group still has members.
    let alive = || unsafe { libc::kill(-group, 0) } == 0;
    if !alive() {
        return;
    }
    // SAFETY: as above, the group of a child we started.
    unsafe {
        libc::kill(-group, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive() {
        // SAFETY: as above.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// Runs `command` in its own process group (the terminal's Ctrl-C reaches only the driver, which stops
/// everything in order) and makes the kernel stop it if the driver dies.
pub fn detach(command: &mut Command) {
    std::os::unix::process::CommandExt::process_group(command, 0);
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A port that was free a moment ago (the kernel's pick for port 0).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts redis-server on `port` with `deploy/redis.conf` and the ACL file rendered from
/// `deploy/users.acl.template`, its data in `<state>/redis`.
pub fn start_redis(
    root: &Path,
    port: u16,
    state: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<()> {
    let dir = state.join("redis");
    std::fs::create_dir_all(&dir)?;
    let node = RedisNode {
        dir: &dir,
        port,
        passwords: secrets.redis_passwords(),
        replication: None,
    };
    start_redis_node("redis", &node, root, logs, services)
}

/// Starts `node` as service `name` (see [`RedisNode::command`]); once more with `activedefrag no` if
/// this build cannot defragment.
pub fn start_redis_node(
    name: &'static str,
    node: &RedisNode<'_>,
    root: &Path,
    logs: &Path,
    services: &mut Services,
) -> anyhow::Result<()> {
    start_node_with(name, node.port, || node.command(root), logs, services)
}

/// [`start_redis_node`] for a command `make` renders (again for the second attempt).
pub fn start_node_with(
    name: &'static str,
    port: u16,
    make: impl Fn() -> anyhow::Result<Command>,
    logs: &Path,
    services: &mut Services,
) -> anyhow::Result<()> {
    let log_file = logs.join(format!("{name}.log"));
    for attempt in 1..=2 {
        let _ = std::fs::remove_file(&log_file);
        services.spawn(name, make()?, logs, libc::SIGTERM)?;
        if services.wait_for_port(port, logs).is_ok() {
            return Ok(());
        }
        services.0.pop();
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        if attempt == 2 || !redis_server::retry_without_defrag(&log) {
            break;
        }
        eprintln!(
            "xtask: this redis-server build cannot defragment; running it with activedefrag no"
        );
    }
    bail!("redis-server did not start; see {}", log_file.display())
}

/// Where the PostgreSQL cluster of the stack in `state` lives. As root, PostgreSQL runs as `postgres`,
/// which must be able to reach its folder: it is kept outside the (possibly private) checkout, under
/// /var/tmp, keyed by the state folder.
pub fn postgres_dir(state: &Path) -> PathBuf {
    match local::postgres_owner() {
        Some(_) => PathBuf::from(format!(
            "/var/tmp/aside-postgres-{}",
            short_hash(&state.to_string_lossy())
        )),
        None => state.join("postgres"),
    }
}

/// Starts PostgreSQL on `port` with its cluster in `<dir>/data` (created on first use, superuser
/// `aside` with the stack's password; scram-sha-256 on loopback TCP only), and provisions the owner
/// and application roles and the `aside` database owned by the owner (docs/security.md).
pub fn start_postgres(
    port: u16,
    dir: &Path,
    logs: &Path,
    secrets: &Secrets,
    services: &mut Services,
) -> anyhow::Result<()> {
    let launch = PostgresLaunch::new(dir, port)?;
    let marker = dir.join(STACK_ID_FILE);
    if launch.is_created() {
        // A cluster of another stack is never started, let alone provisioned with this stack's passwords.
        // A cluster without the file (made before it existed) is checked by its login below.
        if let Ok(id) = std::fs::read_to_string(&marker)
            && id.trim() != secrets.stack_id
        {
            return Err(ForeignCluster {
                dir: dir.to_path_buf(),
                evidence: format!(
                    "its {STACK_ID_FILE} is not the one in this state folder's secrets"
                ),
            }
            .into());
        }
    } else {
        eprintln!(
            "xtask: creating the PostgreSQL cluster in {}",
            dir.join("data").display()
        );
        launch.create("aside", &secrets.postgres)?;
        std::fs::write(&marker, format!("{}\n", secrets.stack_id))?;
    }
    // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    services.spawn_recipe(
        "postgres",
        Recipe::of(&launch.command()?).run_as(launch.owner()),
        logs,
        libc::SIGINT,
    )?;
    services.wait_for_port(port, logs)?;
    let provisioning = local::Provisioning {
        pg_bin: launch.pg_bin(),
        port,
        superuser: "aside",
        superuser_password: &secrets.postgres,
        owner_password: &secrets.postgres_owner,
        app_password: &secrets.postgres_app,
    };
    // The port opens before recovery ends: until then PostgreSQL refuses logins ("starting up").
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match local::provision_postgres(&provisioning, "aside") {
            Err(e) if e.to_string().contains("starting up") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) if e.to_string().contains("password authentication failed") => {
                services.stop("postgres");
                return Err(ForeignCluster {
                    dir: dir.to_path_buf(),
                    evidence: "it refused this state folder's superuser password".into(),
                }
                .into());
            }
            Err(e) => return Err(e),
            Ok(()) => {
                // A cluster from before the stack id existed, whose login worked: it is this stack's.
                if !marker.exists() {
                    std::fs::write(&marker, format!("{}\n", secrets.stack_id))?;
                }
                return Ok(());
            }
        }
    }
}

fn short_hash(s: &str) -> String {
    // FNV-1a: a stable folder name, not a security measure.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn a_port_counts_as_listened_on_only_by_the_process_that_holds_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        // Another process does not hold it, nor does anyone hold a closed port.
        let mut other = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(!listens_on(other.id(), port));
        other.kill().unwrap();
        other.wait().unwrap();
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }
}
