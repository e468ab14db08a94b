//! `cargo xtask up` as a user runs it, for the tests of the local stack's lifecycle (tests/tests/readme.rs,
//! tests/tests/lifecycle.rs): this xtask binary, its own process group (as in a terminal, where Ctrl-C
//! reaches `up` alone and `up` stops its children), stdout echoed and watched for the "aside is up." line.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{ManagedChild, StopSignal, spawn_managed, workspace_root};

/// This xtask: the one `cargo xtask test` runs (`ASIDE_XTASK`), else built now.
pub fn xtask_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ASIDE_XTASK") {
        return PathBuf::from(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "xtask"])
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build -p xtask");
    assert!(status.success(), "cargo build -p xtask failed");
    workspace_root().join("target/debug/xtask")
}

/// A `cargo xtask up` that said it is up.
pub struct UpProcess {
    pub child: ManagedChild,
    /// The Spin CLI the edge runs under, from the "aside is up." line (None: the bundled host).
    pub spin: Option<String>,
    /// Every line `up` printed until it was up.
    pub stdout: Vec<String>,
}

/// Why `up` did not come up.
#[derive(Debug)]
pub struct UpFailed {
    /// It exited (as opposed to: still not up at the deadline).
    pub exited: bool,
    pub stderr: String,
}

/// Runs `xtask up <args>` with `env`, stderr to `stderr`, in the workspace root, and waits (up to 300 s,
/// for the release builds of a first run) until it prints "aside is up.", or exits.
pub fn start_up(
    xtask: &Path,
    args: &[String],
    env: &[(&str, &str)],
    stderr: &Path,
) -> Result<UpProcess, UpFailed> {
    let mut command = Command::new(xtask);
    command
        .arg("up")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"));
    // Its own group, as in a terminal where Ctrl-C reaches `up` (which stops its children itself).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = spawn_managed(command, StopSignal::Kill).expect("start cargo xtask up");
    let out = child.take_stdout().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("up: {line}");
            let _ = tx.send(line);
        }
    });
    let failed = |exited| UpFailed {
        exited,
        stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
    };
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                let up = line.starts_with("aside is up.");
                let spin = line
                    .strip_prefix("aside is up. Edge (spin up, ")
                    .and_then(|rest| rest.split_once("):"))
                    .map(|(path, _)| path.to_string());
                stdout.push(line);
                if up {
                    // The lines printed right after it (the edge's tiers) are part of the answer.
                    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                        stdout.push(line);
                    }
                    return Ok(UpProcess {
                        child,
                        spin,
                        stdout,
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !child.has_exited() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Err(failed(true));
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                return Err(failed(false));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}
