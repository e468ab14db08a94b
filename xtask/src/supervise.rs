//! `cargo xtask up`'s supervisor: keeps the stack serving when one of its processes exits, so the
//! failure modes of docs/operations.md can be watched live.
//!
//! The rule a user can rely on:
//! * a service that **stops cleanly** (exit status 0, or SIGTERM/SIGINT/SIGHUP: a `kill <pid>`, or
//!   `cargo xtask stop <service>`) was stopped on purpose and **stays down** until `cargo xtask start
//!   <service>`, so its absence can be observed for as long as one likes;
//! * a service that **crashes** (any other exit status or signal: a panic, `kill -9`, the OOM killer) is
//!   **restarted** after a back-off of 1 s, doubling to at most 30 s while it keeps crashing (reset once
//!   it has run for 30 s); `cargo xtask up --no-restart` leaves crashed services down too.
//!
//! Either way `up` says which service exited, how (status or signal), what happens next and which log to
//! read, and keeps the other services running. Ctrl-C (or `cargo xtask stop` without a service) stops
//! everything, each process group whole.
//!
//! Other terminals reach a running `up` through a Unix socket in its state folder (`<state>/up.sock`):
//! `cargo xtask status`, `cargo xtask stop <service>`, `cargo xtask start <service>` ([`send`]).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::stack::{self, Recipe, Service, Services};

/// A run at least this long counts as healthy: the next crash starts the back-off from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// The longest wait before restarting a service that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a service's process ended, as far as the supervisor is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit status 0 or a stop signal: someone stopped it; it stays down.
    Stopped,
    /// Anything else; it is restarted (unless `--no-restart`).
    Crashed,
}

/// Classifies an exit status (see the module documentation).
pub fn classify(status: ExitStatus) -> Ending {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ending::Stopped,
        (None, Some(libc::SIGTERM | libc::SIGINT | libc::SIGHUP)) => Ending::Stopped,
        _ => Ending::Crashed,
    }
}

/// "exit status 1", "signal 9 (SIGKILL)".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal} ({})", signal_name(signal)),
        _ => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "another signal",
    }
}

/// The wait before the `crashes`-th consecutive restart (1-based): 1 s, 2 s, 4 s ... at most 30 s.
pub fn backoff(crashes: u32) -> Duration {
    let doubling = crashes.saturating_sub(1).min(5);
    (Duration::from_secs(1) * (1u32 << doubling)).min(MAX_BACKOFF)
}

enum State {
    Running {
        child: Child,
        since: Instant,
    },
    /// Down; restarted at `restart_at` if set.
    Down {
        why: String,
        restart_at: Option<Instant>,
    },
}

struct Supervised {
    name: &'static str,
    stop_signal: i32,
    recipe: Recipe,
    port: Option<u16>,
    state: State,
    /// Consecutive crashes (reset by a run of [`HEALTHY_RUN`]).
    crashes: u32,
}

/// The running stack's services, watched by [`Supervisor::tick`].
pub struct Supervisor {
    services: Vec<Supervised>,
    logs: PathBuf,
    restart: bool,
}

impl Supervisor {
    /// Takes over the services started by `up` (in start order; stopped in reverse). `restart`: restart
    /// crashed services (false: `--no-restart`).
    pub fn new(mut services: Services, logs: &Path, restart: bool) -> Self {
        let services = std::mem::take(&mut services.0)
            .into_iter()
            .map(|s| Supervised {
                name: s.name,
                stop_signal: s.stop_signal,
                recipe: s.recipe,
                port: s.port,
                state: State::Running {
                    child: s.child,
                    since: Instant::now(),
                },
                crashes: 0,
            })
            .collect();
        Self {
            services,
            logs: logs.to_path_buf(),
            restart,
        }
    }

    fn log_of(&self, name: &str) -> String {
        self.logs.join(format!("{name}.log")).display().to_string()
    }

    /// Notices services that exited (says so, and schedules or withholds their restart) and restarts
    /// those whose back-off is over.
    pub fn tick(&mut self) {
        for i in 0..self.services.len() {
            let name = self.services[i].name;
            let log = self.log_of(name);
            let service = &mut self.services[i];
            match &mut service.state {
                State::Running { child, since } => {
                    let Ok(Some(status)) = child.try_wait() else {
                        continue;
                    };
                    let ran = since.elapsed();
                    // Whatever it left behind in its group (a Spin trigger, a Redis fork) goes too.
                    stack::clear_group(child.id() as i32);
                    let how = describe(status);
                    let (why, restart_at) = match classify(status) {
                        Ending::Stopped => {
                            eprintln!(
                                "xtask: {name} stopped ({how}); it stays down until `cargo xtask start {name}`. Log: {log}"
                            );
                            (format!("stopped ({how})"), None)
                        }
                        Ending::Crashed if !self.restart => {
                            eprintln!(
                                "xtask: {name} crashed ({how}); --no-restart: it stays down until `cargo xtask start {name}`. Log: {log}"
                            );
                            (format!("crashed ({how})"), None)
                        }
                        Ending::Crashed => {
                            service.crashes = if ran >= HEALTHY_RUN {
                                1
                            } else {
                                service.crashes + 1
                            };
                            let wait = backoff(service.crashes);
                            eprintln!(
                                "xtask: {name} crashed ({how}); restarting it in {} s. Log: {log}",
                                wait.as_secs()
                            );
                            (format!("crashed ({how})"), Some(Instant::now() + wait))
                        }
                    };
                    service.state = State::Down { why, restart_at };
                }
                State::Down {
                    restart_at: Some(at),
                    ..
                } if Instant::now() >= *at => {
                    eprintln!("xtask: restarting {name}");
                    if let Err(e) = self.launch(i) {
                        eprintln!("xtask: {e:#}");
                    }
                }
                State::Down { .. } => {}
            }
        }
    }

    /// Starts the service at `index` and waits for its port; a failure counts as a crash.
    fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let logs = self.logs.clone();
        let restart = self.restart;
        let service = &mut self.services[index];
        let name = service.name;
        let child = stack::spawn_logged(name, &service.recipe, &logs)?;
        let mut started = Service {
            name,
            child,
            stop_signal: service.stop_signal,
            recipe: service.recipe.clone(),
            port: service.port,
        };
        let ready = match service.port {
            Some(port) => stack::wait_for_port(&mut started, port, &logs),
            None => Ok(()),
        };
        match ready {
            Ok(()) => {
                service.state = State::Running {
                    child: started.child,
                    since: Instant::now(),
                };
                eprintln!("xtask: {name} is running again");
                Ok(())
            }
            Err(e) => {
                stack::stop_child(name, &mut started.child, service.stop_signal);
                service.crashes += 1;
                let wait = backoff(service.crashes);
                service.state = State::Down {
                    why: format!("did not start: {e:#}"),
                    restart_at: restart.then(|| Instant::now() + wait),
                };
                if restart {
                    bail!(
                        "{name} did not start ({e:#}); trying again in {} s",
                        wait.as_secs()
                    )
                }
                bail!("{name} did not start ({e:#})")
            }
        }
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.services
            .iter()
            .position(|s| s.name == name)
            .with_context(|| {
                format!(
                    "no service {name:?}; the services are {}",
                    self.names().join(", ")
                )
            })
    }

    fn names(&self) -> Vec<&'static str> {
        self.services.iter().map(|s| s.name).collect()
    }

    /// `cargo xtask start <name>`: starts a service that is down (now, whatever its back-off).
    pub fn start(&mut self, name: &str) -> anyhow::Result<String> {
        let i = self.index(name)?;
        if let State::Running { child, .. } = &self.services[i].state {
            return Ok(format!("{name} is already running (pid {})", child.id()));
        }
        self.services[i].crashes = 0;
        self.launch(i)?;
        Ok(format!("{name} started"))
    }

    /// `cargo xtask stop <name>`: stops a service with its stop signal; it stays down.
    pub fn stop(&mut self, name: &str) -> anyhow::Result<String> {
        let i = self.index(name)?;
        let service = &mut self.services[i];
        let previous = std::mem::replace(
            &mut service.state,
            State::Down {
                why: "stopped (cargo xtask stop)".into(),
                restart_at: None,
            },
        );
        match previous {
            State::Running { mut child, .. } => {
                stack::stop_child(name, &mut child, service.stop_signal);
                let log = self.log_of(name);
                eprintln!(
                    "xtask: stopped {name} (cargo xtask stop); it stays down until `cargo xtask start {name}`. Log: {log}"
                );
                Ok(format!(
                    "{name} stopped; `cargo xtask start {name}` starts it again"
                ))
            }
            State::Down { .. } => Ok(format!("{name} was not running; it stays down")),
        }
    }

    /// `cargo xtask status --pid <name>`: the pid of a running service (its process group's id too).
    pub fn pid(&self, name: &str) -> anyhow::Result<String> {
        match &self.services[self.index(name)?].state {
            State::Running { child, .. } => Ok(child.id().to_string()),
            State::Down { why, .. } => bail!("{name} is not running: {why}"),
        }
    }

    /// `cargo xtask status`: one line per service.
    pub fn status(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let port = s.port.map(|p| format!(" port {p}")).unwrap_or_default();
            let line = match &s.state {
                State::Running { child, since } => format!(
                    "{:<9} running  pid {}{port}, up {} s",
                    s.name,
                    child.id(),
                    since.elapsed().as_secs()
                ),
                State::Down {
                    why,
                    restart_at: Some(at),
                } => format!(
                    "{:<9} down     {why}; restarting in {} s",
                    s.name,
                    // Rounded up: "in 0 s" would read as "now".
                    at.saturating_duration_since(Instant::now())
                        .as_millis()
                        .div_ceil(1000)
                ),
                State::Down {
                    why,
                    restart_at: None,
                } => format!(
                    "{:<9} down     {why}; `cargo xtask start {}` starts it",
                    s.name, s.name
                ),
            };
            out.push_str(&line);
            out.push_str(&format!("  (log {})\n", self.log_of(s.name)));
        }
        out
    }

    /// Stops every running service, in reverse start order.
    pub fn stop_all(&mut self) {
        while let Some(mut service) = self.services.pop() {
            if let State::Running { child, .. } = &mut service.state {
                stack::stop_child(service.name, child, service.stop_signal);
                eprintln!("xtask: stopped {}", service.name);
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What another terminal asks of a running `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    /// The pid of a running service (to `kill` it).
    Pid(String),
    Start(String),
    Stop(String),
    /// Stop the whole stack, like Ctrl-C.
    StopAll,
}

impl Request {
    /// The request's line on the control socket.
    pub fn to_line(&self) -> String {
        match self {
            Request::Status => "status".into(),
            Request::Pid(name) => format!("pid {name}"),
            Request::Start(name) => format!("start {name}"),
            Request::Stop(name) => format!("stop {name}"),
            Request::StopAll => "stop".into(),
        }
    }

    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["status"] => Request::Status,
            ["pid", name] => Request::Pid((*name).into()),
            ["start", name] => Request::Start((*name).into()),
            ["stop", name] => Request::Stop((*name).into()),
            ["stop"] => Request::StopAll,
            _ => bail!("unknown request {line:?}"),
        })
    }
}

/// A request and where its answer goes: `Ok(text)` or `Err(message)`.
pub type Incoming = (Request, mpsc::Sender<Result<String, String>>);

/// The control socket of the `up` whose state folder is `state`.
pub fn socket_path(state: &Path) -> PathBuf {
    state.join("up.sock")
}

/// Listens on `path` and hands every request to `deliver` (which also receives the reply sender). Fails
/// if another `up` is already listening there. The socket file is removed by [`ControlSocket`]'s drop.
pub fn listen(
    path: &Path,
    deliver: impl Fn(Incoming) + Send + 'static,
) -> anyhow::Result<ControlSocket> {
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another `cargo xtask up` is running with this state folder ({}); stop it, or pick another --state-dir",
            path.parent().unwrap_or(path).display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "cannot listen on {} (a Unix socket path must be under 108 bytes: pick a shorter --state-dir)",
            path.display()
        )
    })?;
    std::thread::Builder::new()
        .name("xtask-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let answer = match Request::parse(line.trim()) {
                    Ok(request) => {
                        let (tx, rx) = mpsc::channel();
                        deliver((request, tx));
                        rx.recv()
                            .unwrap_or_else(|_| Err("the stack is stopping".into()))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let reply = match answer {
                    Ok(text) => format!("ok\n{text}"),
                    Err(text) => format!("error\n{text}"),
                };
                let _ = (&stream).write_all(reply.as_bytes());
            }
        })?;
    Ok(ControlSocket {
        path: path.to_path_buf(),
    })
}

/// Removes the control socket's file when `up` ends.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `request` to the `up` running with state folder `state` and returns its answer.
pub fn send(state: &Path, request: &Request) -> anyhow::Result<String> {
    let path = socket_path(state);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "no `cargo xtask up` is running with the state folder {} (no {})",
            state.display(),
            path.display()
        )
    })?;
    stream.write_all(format!("{}\n", request.to_line()).as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply)?;
    match reply.split_once('\n') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("error", text)) => bail!("{text}"),
        _ => bail!("`cargo xtask up` ended before it answered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_of(shell: &str) -> ExitStatus {
        std::process::Command::new("sh")
            .args(["-c", shell])
            .status()
            .unwrap()
    }

    #[test]
    fn a_clean_exit_or_a_stop_signal_is_a_stop_and_anything_else_a_crash() {
        assert_eq!(classify(exit_of("exit 0")), Ending::Stopped);
        assert_eq!(classify(exit_of("kill -TERM $$")), Ending::Stopped);
        assert_eq!(classify(exit_of("kill -INT $$")), Ending::Stopped);
        assert_eq!(classify(exit_of("exit 1")), Ending::Crashed);
        assert_eq!(classify(exit_of("kill -KILL $$")), Ending::Crashed);
        assert_eq!(classify(exit_of("kill -SEGV $$")), Ending::Crashed);
        assert_eq!(describe(exit_of("kill -KILL $$")), "signal 9 (SIGKILL)");
        assert_eq!(describe(exit_of("exit 3")), "exit status 3");
    }

    #[test]
    fn the_back_off_doubles_from_one_second_to_at_most_thirty() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    /// A stack of one `sleep` under the supervisor, without a port to wait for.
    fn sleeper(restart: bool) -> (Supervisor, PathBuf) {
        let logs =
            std::env::temp_dir().join(format!("xtask-supervise-{}-{restart}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap();
        let mut services = Services::new();
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("60");
        services
            .spawn("sleeper", sleep, &logs, libc::SIGTERM)
            .unwrap();
        (Supervisor::new(services, &logs, restart), logs)
    }

    fn kill(supervisor: &Supervisor, signal: i32) {
        let pid: i32 = supervisor.pid("sleeper").unwrap().parse().unwrap();
        // SAFETY: signalling the test's own child.
        unsafe {
            libc::kill(pid, signal);
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Sends `signal` and checks that the service is still down well after the first back-off.
    fn stays_down_after(supervisor: &mut Supervisor, signal: i32) {
        kill(supervisor, signal);
        supervisor.tick();
        std::thread::sleep(backoff(1) * 2);
        supervisor.tick();
        let status = supervisor.status();
        assert!(supervisor.pid("sleeper").is_err(), "{status}");
    }

    #[test]
    fn a_crashed_service_comes_back_after_its_back_off_and_a_stopped_one_stays_down() {
        let (mut supervisor, logs) = sleeper(true);
        let first = supervisor.pid("sleeper").unwrap();
        kill(&supervisor, libc::SIGKILL);
        supervisor.tick();
        assert!(
            supervisor.status().contains("restarting in 1 s"),
            "{}",
            supervisor.status()
        );
        std::thread::sleep(backoff(1));
        supervisor.tick();
        let second = supervisor.pid("sleeper").expect("restarted");
        assert_ne!(first, second);

        stays_down_after(&mut supervisor, libc::SIGTERM);
        assert!(supervisor.status().contains("`cargo xtask start sleeper`"));
        supervisor.start("sleeper").unwrap();
        assert!(supervisor.pid("sleeper").is_ok());
        supervisor.stop("sleeper").unwrap();
        assert!(supervisor.pid("sleeper").is_err());
        let _ = std::fs::remove_dir_all(logs);
    }

    #[test]
    fn with_no_restart_a_crashed_service_stays_down() {
        let (mut supervisor, logs) = sleeper(false);
        stays_down_after(&mut supervisor, libc::SIGKILL);
        let _ = std::fs::remove_dir_all(logs);
    }

    #[test]
    fn requests_round_trip_through_their_line() {
        for request in [
            Request::Status,
            Request::Pid("edge".into()),
            Request::Start("redis".into()),
            Request::Stop("origin".into()),
            Request::StopAll,
        ] {
            assert_eq!(Request::parse(&request.to_line()).unwrap(), request);
        }
        assert!(Request::parse("start").is_err());
        assert!(Request::parse("restart redis now").is_err());
    }
}
