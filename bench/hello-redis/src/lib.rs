//! Hello, Redis: a spin-sdk 6 (WASIp3) HTTP component that answers `GET /users/{id}` with one `HGETALL`
//! of the profile's key through Spin's Redis binding, and does nothing else: no tiers, no parsing of
//! the hash, no authentication. `cargo xtask bench` runs it under the same runtime and load as the
//! edge's L2 scenario, so an L2 hit's cost splits into what Spin's binding takes (this component) and
//! what the edge adds above it.
//!
//! Like the edge (edge/src/l2.rs), an instance keeps its connections and gives each command one of its
//! own: an idle one, else a new one, so concurrent requests never queue on one socket.

use std::cell::RefCell;
use std::sync::OnceLock;

use aside_shared::UserId;
use aside_shared::cache::profile_key;
use aside_shared::headers::{X_EDGE_INSTANCE, format_instance_id};
use bytes::Bytes;
use spin_sdk::http::{FullBody, Request};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

thread_local! {
    /// This instance's idle connections.
    static IDLE: RefCell<Vec<Connection>> = const { RefCell::new(Vec::new()) };
}

/// The Redis URL from the component's variables.
async fn redis_url() -> Result<String, String> {
    let mut parts = Vec::new();
    for name in ["redis_user", "redis_password", "redis_address"] {
        let value = spin_sdk::variables::get(name)
            .await
            .map_err(|e| format!("variable {name}: {e}"))?;
        parts.push(value);
    }
    let [user, password, address] = &parts[..] else {
        unreachable!("three names asked");
    };
    Ok(format!("redis://{user}:{password}@{address}/0"))
}

/// `HGETALL` of `id`'s key on an idle connection (or a new one): the number of fields and value bytes.
async fn hgetall(id: UserId) -> Result<(usize, usize), String> {
    let connection = match IDLE.with(|idle| idle.borrow_mut().pop()) {
        Some(connection) => connection,
        None => Connection::open(&redis_url().await?)
            .await
            .map_err(|e| format!("redis open: {e}"))?,
    };
    let key = RedisParameter::Binary(profile_key(id).into_bytes());
    let reply = connection
        .execute("HGETALL", vec![key])
        .await
        .map_err(|e| format!("redis HGETALL: {e}"))?;
    // Only a connection that answered goes back to the pool.
    IDLE.with(|idle| idle.borrow_mut().push(connection));
    let bytes = reply
        .iter()
        .map(|r| match r {
            RedisResult::Binary(b) => b.len(),
            _ => 0,
        })
        .sum();
    Ok((reply.len() / 2, bytes))
}

/// This instance's `x-edge-instance` value (as the edge's: the bench counts instances by it).
fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format_instance_id(spin_sdk::wasip3::random::random::get_random_u64()))
}

fn answer(status: u16, body: impl Into<Bytes>) -> http::Response<FullBody<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .header(X_EDGE_INSTANCE, instance_id())
        .body(FullBody::new(body.into()))
        .expect("a plain response is valid")
}

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_service)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> http::Response<FullBody<Bytes>> {
    let Some(id) = request
        .uri()
        .path()
        .strip_prefix("/users/")
        .and_then(|id| UserId::parse(id).ok())
    else {
        return answer(404, "only GET /users/{id}\n");
    };
    match hgetall(id).await {
        // An empty hash: the key is not in Redis (the bench fills it first, so this is an error there).
        Ok((0, _)) => answer(404, "not in Redis\n"),
        Ok((fields, bytes)) => answer(200, format!("{fields} fields, {bytes} bytes\n")),
        Err(e) => answer(502, format!("{e}\n")),
    }
}
