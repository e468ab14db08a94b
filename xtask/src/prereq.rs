//! Installing what a fresh Debian/Ubuntu machine lacks: the `wasm32-wasip2` Rust target, `redis-server`
//! and the PostgreSQL server. As root they are installed with rustup and apt-get; otherwise the error
//! names the command to run.

use std::process::Command;

use anyhow::{Context as _, bail};

/// What is needed and how to get it.
pub struct Prerequisite {
    pub name: &'static str,
    pub present: fn() -> bool,
    pub apt_packages: &'static [&'static str],
}

pub const WASM_TARGET: &str = "wasm32-wasip2";

pub fn wasm_target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
        })
        .unwrap_or(false)
}

pub fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn postgres_installed() -> bool {
    crate::local::pg_bin_dir().is_some()
}

pub fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The servers, and `curl`, which the README's examples (and their test, tests/tests/readme.rs) use.
pub const SERVERS: &[Prerequisite] = &[
    Prerequisite {
        name: "curl",
        present: curl_installed,
        apt_packages: &["curl"],
    },
    Prerequisite {
        name: "redis-server",
        present: redis_installed,
        apt_packages: &["redis-server"],
    },
    Prerequisite {
        name: "PostgreSQL server",
        present: postgres_installed,
        apt_packages: &["postgresql"],
    },
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the wasm target (rustup) and the servers (apt-get, as root) if missing.
pub fn ensure_all() -> anyhow::Result<()> {
    if !wasm_target_installed() {
        eprintln!("xtask: installing the Rust target {WASM_TARGET}");
        let status = Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .status()
            .context("rustup is needed to add the wasm32-wasip2 target")?;
        if !status.success() {
            bail!("`rustup target add {WASM_TARGET}` failed");
        }
    }
    let missing: Vec<&Prerequisite> = SERVERS.iter().filter(|p| !(p.present)()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|p| p.apt_packages)
        .copied()
        .collect();
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    if !is_root() || !has_apt {
        bail!(
            "missing: {}. Install with: sudo apt-get install -y {}",
            names.join(", "),
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(" "));
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install")?;
    if !install.success() {
        bail!("apt-get install {} failed", packages.join(" "));
    }
    for p in missing {
        if !(p.present)() {
            bail!(
                "{} is still missing after installing {:?}",
                p.name,
                p.apt_packages
            );
        }
    }
    Ok(())
}
