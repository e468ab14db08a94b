//! The smallest component that waits: a spin-sdk 6 (WASIp3) HTTP component that answers `200` after
//! waiting on a host timer for `?ms=N` milliseconds (a p3 `wait-for`, as the edge's Redis and origin
//! calls wait on the host), after burning `?cpu_ms=N` milliseconds of CPU in the guest, and/or after
//! `?races=N` races of two host timers of `?race_ms=M` (default 1) and `?loser_ms=L` (default M)
//! milliseconds where the loser is
//! dropped, i.e. cancelled, the way the edge's timeouts used to drop the timer or the call that lost
//! (or, with `?detach=1`, left to finish on its own, as they do now) (each also from `WAIT_MS`, `WAIT_CPU_MS`, `WAIT_RACES`, `WAIT_RACE_MS` in the component's
//! environment). Nothing else: no variables, no outbound connection. `tests/tests/overload.rs` runs it under real Spin with
//! many connections to show which of those behaviours makes Spin answer `500` (`oneshot canceled`)
//! without the component ever having failed.

use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use spin_sdk::http::{FullBody, Request};

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_service)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> http::Response<FullBody<Bytes>> {
    let query = request.uri().query().unwrap_or_default();
    let wait = param(query, "ms");
    let cpu = param(query, "cpu_ms");
    if cpu > 0 {
        burn(Duration::from_millis(cpu));
    }
    if wait > 0 {
        spin_sdk::time::sleep(Duration::from_millis(wait)).await;
    }
    let race = Duration::from_millis(param(query, "race_ms").max(1));
    // `?loser_ms=N`: the second timer's length (default: `race_ms`), e.g. a 250 ms timeout racing a
    // 1 ms call, as each of the edge's Redis commands does.
    let loser = match param(query, "loser_ms") {
        0 => race,
        ms => Duration::from_millis(ms),
    };
    let detach = param(query, "detach") > 0;
    for _ in 0..param(query, "races") {
        let a = Box::pin(spin_sdk::time::sleep(race));
        let b = Box::pin(spin_sdk::time::sleep(loser));
        match futures::future::select(a, b).await {
            // `detach=1`: the loser is left to finish on its own, after the answer if need be.
            Either::Left((_, loser)) | Either::Right((_, loser)) if detach => {
                wit_bindgen::spawn(loser);
            }
            // Dropped while pending: its host call is cancelled (wit-bindgen's `subtask.cancel`,
            // which blocks the task until the host has stopped the call).
            _ => {}
        }
    }
    http::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("x-cache", "WAIT")
        .body(FullBody::new(Bytes::from_static(b"waited\n")))
        .expect("a static response is valid")
}

/// The number after `name=` in the query; else the component's environment variable `WAIT_<NAME>`
/// (the manifest's `environment`, for load generators that cannot send a query); else 0.
fn param(query: &str, name: &str) -> u64 {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
        .or_else(|| {
            let var = format!("WAIT_{}", name.to_ascii_uppercase());
            std::env::var(var).ok()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Keeps the guest busy (no yielding) for `how_long` of the host's monotonic clock.
fn burn(how_long: Duration) {
    let start = now();
    let mut x = 0_u64;
    while now().saturating_sub(start) < how_long.as_nanos() as u64 {
        for i in 0..1000_u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

fn now() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        spin_sdk::wasip3::clocks::monotonic_clock::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_read_by_name() {
        assert_eq!(param("ms=250&cpu_ms=3", "ms"), 250);
        assert_eq!(param("ms=250&cpu_ms=3", "cpu_ms"), 3);
        assert_eq!(param("cpu_ms=x", "cpu_ms"), 0);
        assert_eq!(param("", "ms"), 0);
    }
}
