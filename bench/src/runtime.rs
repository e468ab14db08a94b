//! The edge runtimes a run uses (real Spin, the bundled host) and the command that serves a component under each.

use std::path::Path;
use std::process::Command;

use anyhow::bail;
use aside_bench::report::{self, EdgeRuntimes};
use xtask::spin::{NotFound, SpinCli};

use crate::cli::RuntimeArg;
use crate::workspace_root;

/// An edge runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rt {
    /// `spin up` of a Spin 4 CLI.
    Spin,
    /// The bundled Spin-compatible host, `aside-host`.
    Host,
}

impl Rt {
    /// Its name in the report (one of [`report::RUNTIMES`]).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rt::Spin => "spin",
            Rt::Host => "host",
        }
    }

    /// Whether it has a key-value store, which the edge's shared tier needs.
    pub(crate) fn has_key_value_store(self) -> bool {
        report::has_key_value_store(self.name())
    }
}

/// The edge runtimes of this run and how they were chosen.
pub(crate) struct Runtimes {
    pub(crate) list: Vec<Rt>,
    pub(crate) spin: Option<SpinCli>,
    pub(crate) why: String,
}

impl Runtimes {
    /// `--edge-runtime`, or the default: Spin when a Spin 4 CLI is found (`ASIDE_SPIN`, else `spin` on
    /// PATH), else the bundled host. Asking for Spin without one is an error, and so is a broken
    /// `ASIDE_SPIN` (never silently replaced by the host).
    pub(crate) fn choose(
        arg: Option<RuntimeArg>,
        found: Result<SpinCli, NotFound>,
    ) -> anyhow::Result<Self> {
        let spin = |found: Result<SpinCli, NotFound>, option: &str| {
            found.map_err(|e| anyhow::anyhow!("--edge-runtime {option}, but {e}"))
        };
        Ok(match (arg, found) {
            (None, Ok(cli)) => Runtimes {
                list: vec![Rt::Spin],
                why: "the default: a Spin 4 CLI was found".into(),
                spin: Some(cli),
            },
            (None, Err(e @ NotFound::BadOverride { .. })) => bail!("{e}"),
            (None, Err(e)) => Runtimes {
                list: vec![Rt::Host],
                why: format!("the default without Spin, NOT Spin: {e}"),
                spin: None,
            },
            (Some(RuntimeArg::Host), _) => Runtimes {
                list: vec![Rt::Host],
                why: "chosen with --edge-runtime host".into(),
                spin: None,
            },
            (Some(RuntimeArg::Spin), found) => Runtimes {
                list: vec![Rt::Spin],
                why: "chosen with --edge-runtime spin".into(),
                spin: Some(spin(found, "spin")?),
            },
            (Some(RuntimeArg::Both), found) => Runtimes {
                list: vec![Rt::Spin, Rt::Host],
                why: "chosen with --edge-runtime both".into(),
                spin: Some(spin(found, "both")?),
            },
        })
    }

    pub(crate) fn report(&self) -> EdgeRuntimes {
        EdgeRuntimes {
            runtimes: self.list.iter().map(|rt| rt.name().to_string()).collect(),
            why: self.why.clone(),
            spin: self.spin.as_ref().map(ToString::to_string),
        }
    }

    /// The command that serves `manifest` on `port` under `rt`, with no `SPIN_*` variable of this
    /// process's environment (the caller sets the component's). Spin keeps its state (and the
    /// component's stdout/stderr, in `logs/`) in `state`.
    pub(crate) fn command(
        &self,
        rt: Rt,
        bin: &Path,
        manifest: &Path,
        port: u16,
        state: &Path,
    ) -> Command {
        let listen = format!("127.0.0.1:{port}");
        let mut command = match (rt, &self.spin) {
            (Rt::Spin, Some(cli)) => {
                let mut c = Command::new(&cli.path);
                c.arg("up").arg("--state-dir").arg(state);
                // Only the runtime config the caller gives (`--runtime-config-file`).
                c.env_remove("RUNTIME_CONFIG_FILE");
                c
            }
            _ => {
                let mut c = Command::new(bin.join("aside-host"));
                // One cache for both manifests (its default is beside each manifest: bench/hello/target).
                c.arg("--cache-dir")
                    .arg(workspace_root().join("target/aside-host-cache"));
                c
            }
        };
        command
            .arg("--from")
            .arg(manifest)
            .args(["--listen", &listen]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPIN_") {
                command.env_remove(key);
            }
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> SpinCli {
        SpinCli {
            path: "/usr/local/bin/spin".into(),
            version: "spin 4.0.2 (bfc7543b 2026-06-23)".into(),
        }
    }
    #[test]
    fn the_runtime_is_spin_when_found_unless_chosen() {
        let chosen = |arg, found| Runtimes::choose(arg, found).map(|r| r.list);
        assert_eq!(chosen(None, Ok(cli())).unwrap(), [Rt::Spin]);
        assert_eq!(chosen(None, Err(NotFound::NotOnPath)).unwrap(), [Rt::Host]);
        let why = Runtimes::choose(None, Err(NotFound::NotOnPath))
            .unwrap()
            .why;
        assert!(
            why.contains("NOT Spin") && why.contains("no `spin` on PATH"),
            "{why}"
        );
        assert_eq!(
            chosen(Some(RuntimeArg::Host), Ok(cli())).unwrap(),
            [Rt::Host]
        );
        assert_eq!(
            chosen(Some(RuntimeArg::Both), Ok(cli())).unwrap(),
            [Rt::Spin, Rt::Host]
        );
        // Asking for Spin without one, or a broken ASIDE_SPIN, is an error, never the host instead.
        let e = chosen(Some(RuntimeArg::Both), Err(NotFound::NotOnPath)).unwrap_err();
        assert!(e.to_string().starts_with("--edge-runtime both, but"), "{e}");
        assert!(chosen(Some(RuntimeArg::Spin), Err(NotFound::NotOnPath)).is_err());
        let broken = NotFound::BadOverride {
            path: "/nowhere/spin".into(),
            why: "cannot run it".into(),
        };
        assert!(chosen(None, Err(broken)).is_err());
    }
}
