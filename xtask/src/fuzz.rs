//! `cargo xtask fuzz [--seconds N] [--jobs J] [target...]`: builds the libFuzzer targets in `fuzz/` and
//! runs each for a bounded time, starting from the committed seed corpus; fails if any target crashes.
//!
//! The layout is cargo-fuzz's (`fuzz/Cargo.toml`, `fuzz/fuzz_targets/*.rs`, `fuzz/corpus/<target>/`),
//! so `cargo fuzz run <target> -s none` works for whoever has cargo-fuzz. This command does not need it:
//! cargo-fuzz is a thin driver around `cargo build` with instrumentation flags and the target binary's
//! own command line, and installing it (`cargo install cargo-fuzz`) costs over a minute of a cold CI run,
//! more than the build of the targets themselves. The flags below are what cargo-fuzz 0.13 passes for
//! `--sanitizer none`, which is all stable Rust allows (sanitizers need nightly's `-Z`; the code under
//! test has no `unsafe`, so AddressSanitizer would add little).
//!
//! The committed corpus is read-only here: libFuzzer writes what it finds to a temporary directory (its
//! first corpus argument), so a run never changes the work tree outside the ignored `fuzz/target` and
//! `fuzz/artifacts`. A crash is written to `fuzz/artifacts/<target>/` and named in the error.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Args;

use crate::cmd::{cargo, run_cmd, workspace_root};

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds each target runs (after its build).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Targets run at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Targets to run (default: every file in fuzz/fuzz_targets).
    pub targets: Vec<String>,
}

/// RUSTFLAGS of `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13, release): libFuzzer's coverage
/// instrumentation (inline 8-bit counters, PC table, comparison tracing, stack depth), `cfg(fuzzing)`,
/// debug assertions, and one codegen unit so that the instrumented code still inlines well.
const INSTRUMENTATION: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cdebug-assertions",
    "-Ccodegen-units=1",
];

/// A single input that runs longer than this is a hang, reported like a crash.
const INPUT_TIMEOUT_SECS: u64 = 10;
/// A run that outlives its time by this much (libFuzzer stuck outside an input) is killed and failed.
const GRACE: Duration = Duration::from_secs(60);

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    let known = discover_targets(&fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        known
    } else {
        for t in &args.targets {
            ensure!(
                known.contains(t),
                "no fuzz target {t:?}; known: {}",
                known.join(", ")
            );
        }
        args.targets.clone()
    };
    ensure!(args.seconds > 0, "--seconds must be at least 1");

    ensure_cxx_compiler()?;
    let triple = host_triple()?;
    let started = Instant::now();
    build(&fuzz_dir, &triple, &targets)?;
    eprintln!(
        "xtask: fuzz: built {} targets in {:.0} s",
        targets.len(),
        started.elapsed().as_secs_f64()
    );

    let scratch = std::env::temp_dir().join(format!("aside-fuzz-{}", std::process::id()));
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, targets.len());
    let runs_started = Instant::now();
    let outcome = run_targets(&fuzz_dir, &triple, &scratch, &targets, args.seconds, jobs);
    let _ = std::fs::remove_dir_all(&scratch);
    let outcomes = outcome?;
    eprintln!(
        "xtask: fuzz: ran {} targets for {} s each, {} at once, in {:.0} s",
        targets.len(),
        args.seconds,
        jobs,
        runs_started.elapsed().as_secs_f64()
    );

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    for o in &outcomes {
        eprintln!("xtask: fuzz: {}", o.summary());
    }
    if failed.is_empty() {
        return Ok(());
    }
    let bin_dir = bin_dir(&fuzz_dir, &triple);
    for o in &failed {
        eprintln!(
            "\n---- fuzz target {} failed; the end of its log:",
            o.target
        );
        eprintln!("{}", o.log_tail);
        match &o.reproducer {
            Some(path) => eprintln!(
                "---- reproducer: {path}\n     replay: {} {path}\n     then fix the bug, and add the input to fuzz/corpus/{}/ (docs/security.md, Fuzzing)",
                bin_dir.join(&o.target).display(),
                o.target
            ),
            None => eprintln!("---- no reproducer was written (see the log above)"),
        }
    }
    let names: Vec<&str> = failed.iter().map(|o| o.target.as_str()).collect();
    bail!("fuzz targets failed: {}", names.join(", "))
}

/// The targets are the files in `fuzz/fuzz_targets` (each is a `[[bin]]` of the same name).
fn discover_targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut targets = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            targets.push(stem.to_string());
        }
    }
    targets.sort();
    ensure!(!targets.is_empty(), "no fuzz targets in {}", dir.display());
    Ok(targets)
}

/// libfuzzer-sys compiles libFuzzer (C++) with the system's `c++`; installs g++ as root if it is missing.
fn ensure_cxx_compiler() -> anyhow::Result<()> {
    let present = || {
        Command::new("c++")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() == 0 };
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    ensure!(
        root && has_apt,
        "fuzzing needs a C++ compiler (libFuzzer is C++). Install with: sudo apt-get install -y g++"
    );
    eprintln!("xtask: fuzz: installing g++ with apt-get");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "g++"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    ensure!(present(), "c++ is still missing after installing g++");
    Ok(())
}

/// The host's target triple: the targets are built with an explicit `--target` so that RUSTFLAGS (the
/// instrumentation) reach the code under test but not build scripts and proc macros.
fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {rustc} -vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .context("rustc -vV names no host")
}

fn bin_dir(fuzz_dir: &Path, triple: &str) -> PathBuf {
    fuzz_dir.join("target").join(triple).join("release")
}

fn build(fuzz_dir: &Path, triple: &str, targets: &[String]) -> anyhow::Result<()> {
    let mut command = cargo();
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(fuzz_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(fuzz_dir.join("target"))
        .args(["--locked", "--release", "--target", triple])
        .env("RUSTFLAGS", INSTRUMENTATION.join(" "))
        // Would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for t in targets {
        command.args(["--bin", t]);
    }
    run_cmd(&mut command)
}

/// One target's run, read back from libFuzzer's log.
struct Outcome {
    target: String,
    passed: bool,
    executions: Option<u64>,
    /// The last status line's `cov:` (edges) `ft:` (features) and `corp:` (corpus entries).
    coverage: Option<String>,
    reproducer: Option<String>,
    log_tail: String,
}

impl Outcome {
    fn summary(&self) -> String {
        format!(
            "{:<16} {:<6} {:>12} runs   {}",
            self.target,
            if self.passed { "ok" } else { "FAILED" },
            self.executions
                .map_or_else(|| "?".into(), |n| n.to_string()),
            self.coverage.as_deref().unwrap_or("")
        )
    }

    fn read(target: &str, passed: bool, log: &Path) -> Self {
        let text = std::fs::read(log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let executions = text
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|n| n.trim().parse().ok());
        let coverage = text
            .lines()
            .rev()
            .find(|l| l.contains(" cov: "))
            .and_then(|l| l.find("cov: ").map(|i| &l[i..]))
            .map(|s| {
                let words: Vec<&str> = s.split_whitespace().collect();
                words
                    .chunks(2)
                    .take_while(|w| w[0] != "lim:" && w[0] != "exec/s:")
                    .map(|w| w.join(" "))
                    .collect::<Vec<_>>()
                    .join("  ")
            });
        let reproducer = text
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .map(str::to_string);
        let lines: Vec<&str> = text.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(60)..].join("\n");
        Self {
            target: target.to_string(),
            passed,
            executions,
            coverage,
            reproducer,
            log_tail,
        }
    }
}

struct Running {
    target: String,
    child: Child,
    log: PathBuf,
    deadline: Instant,
}

fn run_targets(
    fuzz_dir: &Path,
    triple: &str,
    scratch: &Path,
    targets: &[String],
    seconds: u64,
    jobs: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let mut pending: Vec<&String> = targets.iter().rev().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut outcomes = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < jobs
            && let Some(target) = pending.pop()
        {
            eprintln!("xtask: fuzz: running {target} for {seconds} s");
            running.push(start(fuzz_dir, triple, scratch, target, seconds)?);
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let r = &mut running[i];
            let status = match r.child.try_wait()? {
                Some(status) => Some(status.success()),
                None if Instant::now() > r.deadline => {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    Some(false)
                }
                None => None,
            };
            match status {
                Some(passed) => {
                    let r = running.swap_remove(i);
                    outcomes.push(Outcome::read(&r.target, passed, &r.log));
                }
                None => i += 1,
            }
        }
    }
    outcomes.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(outcomes)
}

fn start(
    fuzz_dir: &Path,
    triple: &str,
    scratch: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<Running> {
    let found = scratch.join(target);
    std::fs::create_dir_all(&found)?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let log = scratch.join(format!("{target}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;

    let mut command = Command::new(bin_dir(fuzz_dir, triple).join(target));
    command
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        // libFuzzer appends the file name to the prefix as is.
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        command.arg(format!("-dict={}", dict.display()));
    }
    // New finds go to the first directory; the seeds are only read.
    command.arg(&found);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        command.env("RUST_BACKTRACE", "1");
    }
    let child = command
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting fuzz target {target}"))?;
    Ok(Running {
        target: target.to_string(),
        child,
        log,
        deadline: Instant::now() + Duration::from_secs(seconds) + GRACE,
    })
}
