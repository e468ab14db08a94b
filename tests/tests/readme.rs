//! The README is executable: its tested examples (`sh tested` blocks, read by [`aside_tests::readme`])
//! run, top to bottom, against a real `cargo xtask up` stack, and each answer is checked against the
//! promise written next to the command.
//!
//! The stack is the user's `cargo xtask up` with what lets it run beside other tests and beside a user's
//! own stack: free ports, a temporary state folder, the binaries `cargo xtask test` has just built
//! (`--bin-dir target/debug`), a small seed, and the short soft expiry the README suggests for watching
//! copies go `STALE` (`ASIDE_CACHE_TTL_SECS=10`). The README's commands run through `sh -c` in the
//! workspace root with the README's defaults replaced by this stack's ports and folder ([`SUBSTITUTIONS`]),
//! `cargo xtask` meaning this xtask and `spin` the Spin CLI `up` found (`ASIDE_SPIN` or `spin` on PATH;
//! without one the edge runs under the bundled host, and `needs-spin` blocks are skipped, both said on
//! stderr). In the end the stack is stopped as a user does (Ctrl-C) and must leave no process behind.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aside_tests::harness::{
    ManagedChild, StopSignal, bin_dir, free_port, spawn_managed, start_up, temp_dir,
    workspace_root, xtask_binary,
};
use aside_tests::readme::{self, Block};

/// The README's default ports and folder, as the commands name them, and this stack's.
#[derive(Clone)]
struct Stack {
    edge: u16,
    /// The edge the "Deploying the edge to Spin" section starts with `spin up` beside `up`'s.
    deployed_edge: u16,
    origin: u16,
    redis: u16,
    postgres: u16,
    state: PathBuf,
}

/// What the README's commands say, and what they mean for the stack under test.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("127.0.0.1:3000", "127.0.0.1:{edge}"),
    ("127.0.0.1:3001", "127.0.0.1:{deployed_edge}"),
    ("127.0.0.1:8081", "127.0.0.1:{origin}"),
    ("127.0.0.1:6390", "127.0.0.1:{redis}"),
    ("-p 6390", "-p {redis}"),
    ("127.0.0.1:5440", "127.0.0.1:{postgres}"),
    (".aside/", "{state}/"),
];

impl Stack {
    fn substitute(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (readme, ours) in SUBSTITUTIONS {
            let ours = ours
                .replace("{edge}", &self.edge.to_string())
                .replace("{deployed_edge}", &self.deployed_edge.to_string())
                .replace("{origin}", &self.origin.to_string())
                .replace("{redis}", &self.redis.to_string())
                .replace("{postgres}", &self.postgres.to_string())
                .replace("{state}", &self.state.display().to_string());
            out = out.replace(readme, &ours);
        }
        out
    }
}

/// A running `cargo xtask up`, stopped (and its folders removed) when dropped.
struct Up {
    child: ManagedChild,
    stack: Stack,
    /// The Spin CLI the edge runs under (None: the bundled host).
    spin: Option<String>,
    stderr: PathBuf,
    /// Remove the PostgreSQL cluster when dropped (not when a restarted stack took it over).
    owns_data: bool,
}

impl Up {
    fn start(xtask: &Path) -> Up {
        let dir = temp_dir("aside-readme");
        let stack = Stack {
            edge: free_port(),
            deployed_edge: free_port(),
            origin: free_port(),
            redis: free_port(),
            postgres: free_port(),
            state: dir.join("state"),
        };
        Up::launch(xtask, stack, &dir.join("up.stderr"), &[])
    }

    /// A README command `cargo xtask up [flags]  # serves ... until Ctrl-C`, after the README stopped the
    /// stack: the stack under test starts again, on the same ports and folder, with the README's flags,
    /// and serves the rest of the README.
    fn restart(&mut self, xtask: &Path, command: &readme::Command) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.child.has_exited() {
            assert!(
                Instant::now() < deadline,
                "README.md line {}: `{}` while the previous `cargo xtask up` still runs (the README must stop it first)",
                command.line,
                command.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let flags: Vec<String> = command.text["cargo xtask up".len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let stderr = self
            .stderr
            .with_extension(format!("line-{}.stderr", command.line));
        let next = Up::launch(xtask, self.stack.clone(), &stderr, &flags);
        std::mem::replace(self, next).owns_data = false;
    }

    fn launch(xtask: &Path, stack: Stack, stderr: &Path, flags: &[String]) -> Up {
        let mut args: Vec<String> = vec![
            "--state-dir".into(),
            stack.state.display().to_string(),
            "--edge-port".into(),
            stack.edge.to_string(),
            "--origin-port".into(),
            stack.origin.to_string(),
            "--redis-port".into(),
            stack.redis.to_string(),
            "--postgres-port".into(),
            stack.postgres.to_string(),
            "--count".into(),
            "50".into(),
            "--bin-dir".into(),
            bin_dir().display().to_string(),
        ];
        args.extend(flags.iter().cloned());
        let started = start_up(xtask, &args, &[("ASIDE_CACHE_TTL_SECS", "10")], stderr)
            .unwrap_or_else(|e| panic!("cargo xtask up did not come up:\n{}", e.stderr));
        match &started.spin {
            Some(spin) => eprintln!("README test: the edge runs under spin up ({spin})"),
            None => eprintln!(
                "README test: no Spin CLI found (`spin` on PATH or ASIDE_SPIN): the edge runs under \
                 the bundled host and the needs-spin blocks are skipped"
            ),
        }
        Up {
            child: started.child,
            stack,
            spin: started.spin,
            stderr: stderr.to_path_buf(),
            owns_data: true,
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Runs one README command line (with the setup lines before it) through `sh -c`; returns its exit
    /// status, standard output and standard error.
    fn sh(&self, xtask: &Path, prelude: &[String], text: &str) -> (bool, String, String) {
        let mut command = self.shell(xtask, prelude, text);
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sh");
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(output)) => (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ),
            _ => {
                // SAFETY: the process group of the shell we started.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                (false, String::new(), "timed out after 120 s".into())
            }
        }
    }

    /// Starts a README command that `serves HOST:PORT until Ctrl-C` in its own process group, as a
    /// terminal runs a foreground job, and waits until HOST:PORT accepts connections.
    fn serve(&self, xtask: &Path, prelude: &[String], command: &readme::Command) -> Served {
        let address = self
            .stack
            .substitute(command.expect.serves.as_deref().expect("a server"));
        let output = self
            .stack
            .state
            .join(format!("readme-line-{}.log", command.line));
        let mut shell = self.shell(xtask, prelude, &command.text);
        let log = std::fs::File::create(&output).expect("server log");
        shell
            .stdout(log.try_clone().expect("server log"))
            .stderr(log);
        let child = spawn_managed(shell, StopSignal::TermGroup).expect("start the server");
        let mut served = Served {
            child,
            output,
            line: command.line,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                !served.child.has_exited() && Instant::now() < deadline,
                "README.md line {}: `{}` did not serve {address}:\n{}",
                command.line,
                command.text,
                served.output_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        served
    }

    /// `sh -c` with the README's setup lines and the stack's substitutions, in the workspace root and in
    /// a process group of its own.
    fn shell(&self, xtask: &Path, prelude: &[String], text: &str) -> Command {
        let mut script = String::from(
            "cargo() { if [ \"$1\" = xtask ]; then shift; \"$ASIDE_XTASK\" \"$@\"; else command cargo \"$@\"; fi; }\n",
        );
        if let Some(spin) = &self.spin {
            script.push_str(&format!("spin() {{ '{spin}' \"$@\"; }}\n"));
        }
        for line in prelude {
            script.push_str(&self.stack.substitute(line));
            script.push('\n');
        }
        script.push_str(&self.stack.substitute(text));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&script)
            .env("ASIDE_XTASK", xtask)
            .env("ASIDE_STATE_DIR", &self.stack.state)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .process_group(0);
        command
    }

    /// Stops the stack as a user does (Ctrl-C) and checks that nothing of it is left running.
    fn stop(mut self, xtask: &Path) {
        let status = Command::new(xtask)
            .arg("status")
            .env("ASIDE_STATE_DIR", &self.stack.state)
            .output()
            .expect("cargo xtask status");
        let groups: Vec<i32> = String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter_map(|l| l.split_once(" pid ").map(|(_, rest)| rest))
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(
            groups.len(),
            4,
            "four services running before Ctrl-C: {status:?}"
        );
        self.child.signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.child.has_exited() {
            assert!(
                Instant::now() < deadline,
                "cargo xtask up did not stop within 60 s of Ctrl-C:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let left: Vec<i32> = groups.iter().copied().filter(|&g| group_alive(g)).collect();
        assert!(
            left.is_empty(),
            "processes of the groups {left:?} outlived cargo xtask up"
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if !self.child.has_exited() {
            self.child.signal(libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.child.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.owns_data {
            let _ = std::fs::remove_dir_all(xtask::stack::postgres_dir(&self.stack.state));
        }
    }
}

/// Is a process of group `group` alive (zombies aside)?
fn group_alive(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: the fields after the last ')'.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        fields.first() != Some(&"Z") && fields.get(2).and_then(|p| p.parse().ok()) == Some(group)
    })
}

/// The sections whose every example must be tested.
const TESTED_SECTIONS: &[&str] = &["What to try", "Deploying the edge to Spin"];

#[test]
fn every_example_in_the_readme_does_what_the_readme_says() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let blocks = readme::parse(&readme).expect("the README's tested blocks parse");
    for (section, line, tested) in readme::sh_blocks(&readme) {
        assert!(
            tested || !TESTED_SECTIONS.contains(&section.as_str()),
            "README.md line {line}: every example in \"{section}\" must be a `sh tested` block"
        );
    }
    assert!(
        blocks.iter().map(|b| b.commands.len()).sum::<usize>() > 10,
        "the README's tested examples were not found"
    );

    let xtask = xtask_binary();
    let mut up = Up::start(&xtask);
    let mut prelude = Vec::new();
    let mut checked = 0;
    for block in &blocks {
        if block.needs_spin && up.spin.is_none() {
            eprintln!(
                "README test: skipped README.md line {} (needs a Spin CLI)",
                block.line
            );
            continue;
        }
        run_block(&mut up, &xtask, block, &mut prelude);
        checked += block.commands.len();
    }
    eprintln!("README test: {checked} commands kept their promises");
    up.stop(&xtask);
}

/// A server a README command started; it gets Ctrl-C at the end of its block.
struct Served {
    /// The shell, leader of the server's process group.
    child: ManagedChild,
    output: PathBuf,
    line: usize,
}

impl Served {
    fn output_text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Ctrl-C to its process group, as a terminal sends it; it must stop within 30 s, whole.
    fn interrupt(mut self) {
        let group = self.child.id() as i32;
        self.child.signal_group(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.child.has_exited() || group_alive(group) {
            assert!(
                Instant::now() < deadline,
                "README.md line {}: the server did not stop within 30 s of Ctrl-C:\n{}",
                self.line,
                self.output_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn run_block(up: &mut Up, xtask: &Path, block: &Block, prelude: &mut Vec<String>) {
    let mut servers = Vec::new();
    for command in &block.commands {
        if command.expect.serves.is_some() && command.text.starts_with("cargo xtask up") {
            up.restart(xtask, command);
            continue;
        }
        if command.expect.serves.is_some() {
            servers.push(up.serve(xtask, prelude, command));
            continue;
        }
        let deadline = Instant::now() + command.expect.within.unwrap_or_default();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (ok, stdout, stderr) = up.sh(xtask, prelude, &command.text);
            let verdict = if ok {
                readme::check(&command.expect, &stdout)
            } else {
                Err("it failed".to_string())
            };
            match verdict {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(why) => panic!(
                    "README.md line {} ({}), after {attempts} attempt(s): {why}\n$ {}\n# {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- cargo xtask up's stderr\n{}",
                    command.line,
                    block.section,
                    command.text,
                    command.comment,
                    up.stderr_text()
                ),
            }
        }
        if command.setup {
            prelude.push(command.text.clone());
        }
    }
    for server in servers {
        server.interrupt();
    }
}
