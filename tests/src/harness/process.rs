//! Child processes and temporary folders that cannot outlive the test process.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// What to send a child to stop it quickly but cleanly (PostgreSQL wants SIGQUIT to clean up its shared
/// memory; the others are simply killed).
#[derive(Debug, Clone, Copy)]
pub enum StopSignal {
    Kill,
    Quit,
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
    for (pid, signal) in &children {
        let sig = match signal {
            StopSignal::Kill => libc::SIGKILL,
            StopSignal::Quit => libc::SIGQUIT,
        };
        // SAFETY: sending a signal to a pid we spawned.
        unsafe {
            libc::kill(*pid as i32, sig);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for (pid, _) in &children {
        while Instant::now() < deadline && alive(*pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(*pid) {
            // SAFETY: as above.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
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
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
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
        let sig = match self.stop {
            StopSignal::Kill => libc::SIGKILL,
            StopSignal::Quit => libc::SIGQUIT,
        };
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
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

    /// Kills the child with SIGKILL, whatever its stop signal (fault injection).
    pub fn kill_hard(&mut self) {
        self.stop = StopSignal::Kill;
        self.stop();
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
