//! Child processes and temporary folders that cannot outlive the test process.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

pub use xtask::stack::listens_on;

/// What to send a child to stop it quickly but cleanly (PostgreSQL wants SIGQUIT to clean up its shared
/// memory; `spin up` wants SIGTERM, which it passes on to the trigger process it starts; the others are
/// simply killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Kill,
    Quit,
    /// SIGTERM to the child's own process group (it is started as the leader of one), then SIGKILL to the
    /// group if it is still there after 5 s: for children that start children of their own. It is also
    /// the child's parent-death signal, so a killed test process still lets it stop its children.
    TermGroup,
}

impl StopSignal {
    fn signal(self) -> i32 {
        match self {
            StopSignal::Kill => libc::SIGKILL,
            StopSignal::Quit => libc::SIGQUIT,
            StopSignal::TermGroup => libc::SIGTERM,
        }
    }

    /// Sends `signal` to `pid`, or to its process group.
    fn send(self, pid: u32, signal: i32) {
        let target = if self == StopSignal::TermGroup {
            -(pid as i32)
        } else {
            pid as i32
        };
        // SAFETY: signalling a child we spawned (or its group, which it leads).
        unsafe {
            libc::kill(target, signal);
        }
    }
}

struct Registry {
    children: Vec<(u32, StopSignal)>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: Vec::new(),
    dirs: Vec::new(),
});
static ATEXIT: Once = Once::new();

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn register_atexit() {
    ATEXIT.call_once(|| {
        extern "C" fn cleanup() {
            cleanup_all();
        }
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(cleanup);
        }
    });
}

/// Stops every registered child and removes every registered folder. Runs at exit.
fn cleanup_all() {
    let (children, dirs) = {
        let Ok(mut reg) = REGISTRY.lock() else { return };
        (
            std::mem::take(&mut reg.children),
            std::mem::take(&mut reg.dirs),
        )
    };
    for (pid, stop) in &children {
        stop.send(*pid, stop.signal());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for (pid, stop) in &children {
        while Instant::now() < deadline && alive(*pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(*pid) {
            stop.send(*pid, libc::SIGKILL);
        }
    }
    // ASIDE_KEEP_TEST_DIRS=1 keeps server folders and logs for a post-mortem.
    if std::env::var_os("ASIDE_KEEP_TEST_DIRS").is_none() {
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn alive(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: non-blocking wait on our own child; reaps it if it exited.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    r == 0
}

/// Spawns `command` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG = SIGKILL`,
/// so the child dies with the test process even if it is killed. (The death signal fires when the
/// *spawning thread* exits, which is why spawning is not done on the short-lived test threads.)
pub fn spawn_managed(mut command: Command, stop: StopSignal) -> std::io::Result<ManagedChild> {
    register_atexit();
    let death_signal = match stop {
        StopSignal::TermGroup => {
            command.process_group(0);
            libc::SIGTERM
        }
        _ => libc::SIGKILL,
    };
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("aside-test-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .expect("spawner lock")
        .send((command, reply_tx))
        .expect("spawner thread alive");
    let child = reply_rx.recv().expect("spawner replies")?;
    REGISTRY
        .lock()
        .expect("registry lock")
        .children
        .push((child.id(), stop));
    Ok(ManagedChild {
        child: Some(child),
        stop,
    })
}

/// A child that is stopped when dropped (and at process exit if never dropped).
pub struct ManagedChild {
    child: Option<Child>,
    stop: StopSignal,
}

impl ManagedChild {
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The child's standard output, when it was piped (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Sends a signal without waiting (e.g. SIGSTOP to freeze it).
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    /// Stops the child with its stop signal and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.stop.send(child.id(), self.stop.signal());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    self.stop.send(child.id(), libc::SIGKILL);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let pid = child.id();
        REGISTRY
            .lock()
            .expect("registry lock")
            .children
            .retain(|(p, _)| *p != pid);
    }

    /// Kills the child with SIGKILL, whatever its stop signal (fault injection); a process group is
    /// killed whole.
    pub fn kill_hard(&mut self) {
        if let Some(c) = &self.child {
            self.stop.send(c.id(), libc::SIGKILL);
        }
        self.stop = StopSignal::Kill;
        self.stop();
    }

    /// Sends a signal to the child's whole process group (for a [`StopSignal::TermGroup`] child; the
    /// child alone otherwise), without waiting: e.g. SIGSTOP to freeze `spin up` and its trigger.
    pub fn signal_group(&self, signal: i32) {
        if let Some(c) = &self.child {
            self.stop.send(c.id(), signal);
        }
    }

    /// Has the child exited on its own?
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh folder under the system temp dir, removed at exit.
pub fn temp_dir(prefix: &str) -> PathBuf {
    register_atexit();
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        super::generate_secret()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    REGISTRY
        .lock()
        .expect("registry lock")
        .dirs
        .push(dir.clone());
    dir
}

/// Standard output and error of a server go to a log file in its folder, to read when a test fails.
pub fn log_to(command: &mut Command, dir: &Path, name: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("open log file");
    let err = file.try_clone().expect("clone log file");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
}

/// How many times a server is started on a fresh port when the one it was given was taken.
pub const START_ATTEMPTS: u32 = 3;

/// Whether a log says its process could not bind its port because another held it (Rust's and
/// Node's wording of `EADDRINUSE`): the one start failure worth retrying on another port.
pub fn port_was_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("EADDRINUSE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_taken_port_is_worth_another_try() {
        assert!(port_was_taken(
            "Error: Address already in use (os error 98)"
        ));
        assert!(port_was_taken("listen EADDRINUSE: address already in use"));
        assert!(!port_was_taken("Error: connection refused"));
    }
}
