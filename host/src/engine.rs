//! One `Engine` and one `Linker` per process, and compiled components cached twice: in memory
//! (keyed by path + content hash, so a second `Host::start` in the same process costs nothing) and
//! on disk (keyed by content hash + Wasmtime's compatibility hash, so a new process skips
//! Cranelift).

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::state::InstanceState;

/// The Wasmtime major version this host is built on (part of the on-disk cache key).
const WASMTIME_MAJOR: &str = "44";

/// The process-wide engine (component model + component-model-async, as Spin 4 configures it).
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_component_model_async(true);
        Engine::new(&config).expect("the Wasmtime engine configuration is valid")
    })
}

/// The process-wide linker with every import a spin-sdk 6 HTTP component may use.
pub(crate) fn linker() -> &'static Linker<InstanceState> {
    static LINKER: OnceLock<Linker<InstanceState>> = OnceLock::new();
    LINKER.get_or_init(|| build_linker().expect("the host interfaces link"))
}

fn build_linker() -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine());
    // WASI 0.2 (what Rust's std on wasm32-wasip2 imports), including wasi:http 0.2 outbound.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    // WASI 0.3 (what spin-sdk 6 / wasip3 import): cli, clocks, random, filesystem, sockets, http.
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    super::spin::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// How a component was obtained (for logs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already loaded in this process.
    Memory,
    /// Deserialized from the on-disk cache.
    Disk,
    /// Compiled with Cranelift (and written to the disk cache).
    Compiled,
}

/// A loaded, linked component ready to instantiate.
pub(crate) struct Loaded {
    pub pre: ServicePre<InstanceState>,
    pub source: LoadSource,
    pub elapsed: std::time::Duration,
}

type MemKey = (PathBuf, [u8; 32]);

fn memory_cache() -> &'static Mutex<HashMap<MemKey, ServicePre<InstanceState>>> {
    static CACHE: OnceLock<Mutex<HashMap<MemKey, ServicePre<InstanceState>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Loads (from memory, the disk cache, or by compiling) and links the component at `path`.
/// Blocking: call from `spawn_blocking`.
pub(crate) fn load(path: &Path, cache_dir: &Path) -> anyhow::Result<Loaded> {
    let start = Instant::now();
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the component {} (build it first: cargo build -p aside-edge --target \
             wasm32-wasip2 --release)",
            path.display()
        )
    })?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let key = (canonical, digest);
    if let Some(pre) = memory_cache().lock().unwrap().get(&key) {
        return Ok(Loaded {
            pre: pre.clone(),
            source: LoadSource::Memory,
            elapsed: start.elapsed(),
        });
    }

    let engine = engine();
    let file = cache_dir.join(format!(
        "{}-wasmtime{WASMTIME_MAJOR}-{:016x}.cwasm",
        hex(&digest),
        compat_hash(engine)
    ));
    let mut source = LoadSource::Disk;
    // SAFETY: the file was written by `Component::serialize` of an engine with the same
    // compatibility hash (part of its name) and is only ever replaced atomically by rename;
    // Wasmtime additionally checks its header and refuses incompatible artifacts.
    let component = match unsafe { Component::deserialize_file(engine, &file) } {
        Ok(c) => c,
        Err(e) => {
            if file.exists() {
                tracing::warn!(error = %e, file = %file.display(), "ignoring unusable cached component");
            }
            source = LoadSource::Compiled;
            let c = Component::new(engine, &bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot compile the component {}", path.display()))?;
            if let Err(e) = write_cache(&c, &file) {
                tracing::warn!(error = %e, dir = %cache_dir.display(), "cannot write the component cache");
            }
            c
        }
    };
    let instance_pre = linker()
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "the component {} imports something this host does not provide",
                path.display()
            )
        })?;
    let pre = ServicePre::new(instance_pre)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "the component {} does not export wasi:http/handler@0.3 (is it a spin-sdk 6 \
                 #[http_service] component?)",
                path.display()
            )
        })?;
    memory_cache().lock().unwrap().insert(key, pre.clone());
    Ok(Loaded {
        pre,
        source,
        elapsed: start.elapsed(),
    })
}

fn write_cache(component: &Component, file: &Path) -> anyhow::Result<()> {
    let dir = file.parent().context("cache file has no directory")?;
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

fn compat_hash(engine: &Engine) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
