//! Installing what a fresh Debian/Ubuntu machine lacks: the `wasm32-wasip2` Rust target, `redis-server`,
//! the PostgreSQL server and Prometheus (`prometheus` and `promtool`, for the rules' tests). As root they are installed with rustup and apt-get; otherwise the error
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

/// `prometheus` (the real-Prometheus test) and `promtool` (the rules' checks and unit tests).
pub fn prometheus_installed() -> bool {
    ["prometheus", "promtool"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
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

/// What only `cargo xtask test` needs, on top of [`SERVERS`].
pub const TEST_TOOLS: &[Prerequisite] = &[
    Prerequisite {
        name: "Prometheus (prometheus, promtool)",
        present: prometheus_installed,
        apt_packages: &["prometheus"],
    },
    Prerequisite {
        name: "Python venv (for the manifest validators and the API tester)",
        present: python_venv_available,
        apt_packages: &["python3-venv"],
    },
    Prerequisite {
        name: "Node.js and npm (for the OpenID provider of the authentication tests)",
        present: node_available,
        apt_packages: &["nodejs", "npm"],
    },
];

/// `node` and `npm` both answer.
pub fn node_available() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Debian's `prometheus` package enables and starts a system service on port 9090. aside needs only
/// the binaries (the tests start their own Prometheus on a free port), so the service is stopped and
/// disabled, whichever init system the machine runs; where nothing started it, these do nothing.
fn stop_system_prometheus() {
    let quiet = |program: &str, args: &[&str]| {
        let _ = Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    quiet("systemctl", &["disable", "--now", "prometheus.service"]);
    quiet("service", &["prometheus", "stop"]);
    quiet("update-rc.d", &["prometheus", "disable"]);
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
    install_missing(SERVERS)
}

/// Installs, on top of [`ensure_all`], what the test suite needs: Prometheus's `prometheus` and
/// `promtool`.
pub fn ensure_test_tools() -> anyhow::Result<()> {
    ensure_all()?;
    install_missing(TEST_TOOLS)
}

/// Installs the apt packages of the `wanted` prerequisites that are missing (as root), or names them.
fn install_missing(wanted: &[Prerequisite]) -> anyhow::Result<()> {
    let missing: Vec<&Prerequisite> = wanted.iter().filter(|p| !(p.present)()).collect();
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
    if packages.contains(&"prometheus") {
        stop_system_prometheus();
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

/// The PyPI tools that validate the Kubernetes manifests offline, pinned: `kubernetes-validate`
/// (bundles the Kubernetes API's JSON schemas) and `check-jsonschema` (the SpinApp CRD's schema).
pub const MANIFEST_VALIDATORS: &[&str] =
    &["kubernetes-validate==1.37.0", "check-jsonschema==0.39.0"];

/// The `bin/` of a Python virtual environment holding [`MANIFEST_VALIDATORS`] (see [`python_tools`]).
pub fn manifest_validators(target_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    python_tools(target_dir, "manifest-validators", MANIFEST_VALIDATORS)
}

/// Schemathesis, the property-based API tester that checks the origin's OpenAPI document against the
/// running origin and edge (tests/tests/openapi_conformance.rs), pinned.
pub const API_TESTER: &[&str] = &["schemathesis==4.32.5"];

/// The `bin/` of a Python virtual environment holding [`API_TESTER`] (see [`python_tools`]).
pub fn api_tester(target_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    python_tools(target_dir, "api-tester", API_TESTER)
}

/// The `bin/` of a Python virtual environment `target/tools/<name>` holding the pinned PyPI
/// `packages`, created on first use (pip, from PyPI) and reused afterwards.
pub fn python_tools(
    target_dir: &std::path::Path,
    name: &str,
    packages: &[&str],
) -> anyhow::Result<std::path::PathBuf> {
    let venv = target_dir.join("tools").join(name);
    let bin = venv.join("bin");
    let stamp = venv.join(".installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == packages.join(" ")) {
        return Ok(bin);
    }
    let created = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .with_context(|| format!("python3 is needed for {name}"))?;
    if !created.success() {
        bail!(
            "`python3 -m venv` failed; install Debian's python3-venv (apt-get install -y python3-venv)"
        );
    }
    let installed = Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .with_context(|| format!("pip install {name}"))?;
    if !installed.success() {
        bail!("pip install {} failed", packages.join(" "));
    }
    std::fs::write(&stamp, packages.join(" "))?;
    Ok(bin)
}

/// The OpenID provider the authentication tests start (tests/oidc/provider.mjs; tests/tests/oidc.rs):
/// panva's `oidc-provider` from npm, pinned. Node.js 20 or later and npm must be installed.
pub const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";

/// The folder `target/tools/oidc-provider` holding `node_modules/` with [`OIDC_PROVIDER`], installed
/// with npm on first use (from the npm registry) and reused afterwards.
pub fn oidc_provider(target_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = target_dir.join("tools").join("oidc-provider");
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == OIDC_PROVIDER) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // A package of its own, so npm installs here and not into a parent folder's package.
    std::fs::write(
        dir.join("package.json"),
        "{\"name\": \"aside-test-oidc-provider\", \"private\": true, \"type\": \"module\"}\n",
    )?;
    let installed = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--save-exact",
        ])
        .arg(OIDC_PROVIDER)
        .current_dir(&dir)
        .status()
        .context("npm (Node.js 20 or later) is needed for the OpenID provider of the tests")?;
    if !installed.success() {
        bail!("npm install {OIDC_PROVIDER} failed");
    }
    std::fs::write(&stamp, OIDC_PROVIDER)?;
    Ok(dir)
}

pub fn python_venv_available() -> bool {
    Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success())
}
