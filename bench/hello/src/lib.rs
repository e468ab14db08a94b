//! Hello, world: a spin-sdk 6 (WASIp3) HTTP component that answers every request with a fixed body of
//! about the size of a profile, and does nothing else. `cargo xtask bench` runs it under the same
//! runtime and load as the edge, so each edge scenario reads as a ratio of what the runtime allows.
//! Like the edge, each answer names the instance that gave it (`x-edge-instance`, drawn once per
//! instance), so the bench counts the runtime's instances for the baseline too.

use std::sync::OnceLock;

use aside_shared::headers::{X_EDGE_INSTANCE, format_instance_id};
use bytes::Bytes;
use spin_sdk::http::{FullBody, Request};

/// About as many bytes as a profile's JSON, so the response costs the same to write.
const BODY: &[u8] = br#"{"id":1,"full_name":"Hello World","gender":"F","birth_date":"1990-01-01","department":"Engineering","email":"hello.world@fake-devops-db.internal","username":"hello.world"}"#;

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_service)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(_request: Request) -> http::Response<FullBody<Bytes>> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header(X_EDGE_INSTANCE, instance_id())
        .body(FullBody::new(Bytes::from_static(BODY)))
        .expect("a static response is valid")
}

/// This instance's id, from the host's `wasi:random` on first use (as the edge's).
fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format_instance_id(spin_sdk::wasip3::random::random::get_random_u64()))
}
