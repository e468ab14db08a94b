//! `cargo xtask reset`: start over. Removes everything a `cargo xtask up` made for a state folder: the
//! folder itself (data, logs, generated secrets, Spin's state, the control socket) and the PostgreSQL
//! cluster, wherever it lives (as root it is outside the state folder, see [`xtask::stack::postgres_dir`]).
//! It refuses while anything of that stack still runs, and says what it removed.

use std::path::Path;

use anyhow::{Context as _, bail};
use clap::Args;
use xtask::stack;
use xtask::supervise::{self, Request};

use crate::up::StateDir;

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    state: StateDir,
}

/// What `up` creates in a state folder: a folder with none of these is not removed (a mistyped
/// `--state-dir` must not delete somebody's files).
const STATE_MARKS: &[&str] = &["secrets", "logs", "spin", "up.sock", "env"];

pub fn run(args: ResetArgs) -> anyhow::Result<()> {
    let state = args.state.path();
    let postgres = stack::postgres_dir(&state);
    if supervise::send(&state, &Request::Status).is_ok() {
        bail!(
            "a `cargo xtask up` is running with the state folder {}; stop it first (`cargo xtask stop`{}), then reset",
            state.display(),
            args.state.flag()
        );
    }
    // A stack that was just stopped may take a moment to exit: wait for it a little before refusing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut user = process_using(&[&state, &postgres]);
    while user.is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        user = process_using(&[&state, &postgres]);
    }
    if let Some((pid, command)) = user {
        bail!(
            "process {pid} still uses this stack's files ({command}); stop it first (`kill {pid}`), then reset"
        );
    }
    let mut removed = Vec::new();
    if state.exists() {
        if !STATE_MARKS.iter().any(|m| state.join(m).exists()) {
            bail!(
                "{} does not look like a `cargo xtask up` state folder (it has none of {}); not removing it",
                state.display(),
                STATE_MARKS.join(", ")
            );
        }
        std::fs::remove_dir_all(&state).with_context(|| format!("remove {}", state.display()))?;
        removed.push(format!(
            "{} (the state folder: Redis's data, logs, generated secrets and tokens, Spin's state)",
            state.display()
        ));
    }
    if postgres.exists() {
        std::fs::remove_dir_all(&postgres)
            .with_context(|| format!("remove {}", postgres.display()))?;
        removed.push(format!(
            "{} (the PostgreSQL cluster: every profile and the migrations)",
            postgres.display()
        ));
    }
    if removed.is_empty() {
        println!(
            "nothing to remove: no state folder at {} and no PostgreSQL cluster at {}",
            state.display(),
            postgres.display()
        );
    } else {
        println!("removed:");
        for line in removed {
            println!("  {line}");
        }
        println!(
            "`cargo xtask up{}` starts a new stack: new secrets and tokens, a new seed",
            args.state.flag()
        );
    }
    Ok(())
}

/// The first live process (neither this one nor one of its ancestors, e.g. the shell that ran
/// `cargo xtask reset --state-dir ...`) whose command line names one of `paths`, or which holds a file
/// open under one of them: a server of the stack that outlived its `up` (e.g. after `kill -9` of `up`).
fn process_using(paths: &[&Path]) -> Option<(u32, String)> {
    let mut mine = vec![std::process::id()];
    while let Some(parent) = parent_of(*mine.last()?).filter(|&p| p > 1) {
        mine.push(parent);
    }
    let needles: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if mine.contains(&pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let command = raw
            .split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        // Redis rewrites its command line (its process title), so open files count too.
        let holds_file = || {
            std::fs::read_dir(entry.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| paths.iter().any(|p| target.starts_with(p)))
        };
        if (needles
            .iter()
            .any(|needle| command.contains(needle.as_str()))
            || holds_file())
            && !command.trim().is_empty()
        {
            return Some((pid, command.trim().to_string()));
        }
    }
    None
}

/// The parent of `pid` (`/proc/<pid>/stat`'s fourth field, after the command name in parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}
