pub mod harness;
/// The bundled host (its own crate, `host/`), under the name the harness has always used.
pub use aside_host as host;
pub mod readme;
