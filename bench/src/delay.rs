//! The latency proxy behind `aside-delay`: a TCP proxy that delays every byte, in each direction, by a
//! fixed one-way latency, and does nothing else (no jitter, loss or bandwidth limit).
//!
//! Each accepted connection opens one to the upstream and gets two pumps, one per direction. A pump is
//! a reader thread that stamps each chunk it reads with `arrival + delay` and queues it, and a writer
//! thread that sleeps until a chunk's stamp and writes it. Bytes keep their order, a pipelined stream is
//! not slowed to one chunk per delay, and an end of stream (or a reset) is passed on after the same
//! delay. Blocking threads with `nanosleep` rather than an async runtime, because tokio's timer has a
//! 1 ms resolution and the topologies need 0.25 ms: the delay is a lower bound, late by the scheduler's
//! wake-up time (tens of µs on an idle machine, more on a loaded one).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Stack of each pump thread: a read buffer and little else.
const STACK: usize = 128 * 1024;
/// The most one read takes from a socket.
const CHUNK: usize = 32 * 1024;

/// Accepts connections on `listener` forever, relaying each to `upstream` with `delay` each way.
pub fn serve(listener: TcpListener, upstream: SocketAddr, delay: Duration) -> std::io::Result<()> {
    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                eprintln!("aside-delay: accept: {e}");
                continue;
            }
        };
        spawn(move || {
            if let Err(e) = relay(client, upstream, delay) {
                eprintln!("aside-delay: connection to {upstream}: {e}");
            }
        })?;
    }
    Ok(())
}

fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .map(drop)
}

/// Connects to `upstream` and starts a pump each way.
fn relay(client: TcpStream, upstream: SocketAddr, delay: Duration) -> std::io::Result<()> {
    let server = match TcpStream::connect(upstream) {
        Ok(server) => server,
        Err(e) => {
            // As a refused connection would look to the client: closed at once.
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    pump(client.try_clone()?, server.try_clone()?, delay)?;
    pump(server, client, delay)
}

/// Moves bytes from `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> std::io::Result<()> {
    // `None`: the end of the stream (or a failed read), passed on as a shutdown of the writing half.
    let (queue, due) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let reader_side = from.try_clone()?;
    spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let read = from.read(&mut buf);
            let stamp = Instant::now() + delay;
            let chunk = match read {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            if queue.send((stamp, chunk)).is_err() || end {
                return;
            }
        }
    })?;
    spawn(move || {
        for (stamp, chunk) in due {
            let now = Instant::now();
            if stamp > now {
                std::thread::sleep(stamp - now);
            }
            let Some(chunk) = chunk else {
                let _ = to.shutdown(Shutdown::Write);
                return;
            };
            if to.write_all(&chunk).is_err() {
                // The receiver is gone: stop reading what was meant for it.
                let _ = reader_side.shutdown(Shutdown::Read);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    })
}

/// A one-way delay in milliseconds, as `--delay-ms` takes it: finite, at least 0, at most a minute.
pub fn parse_delay_ms(text: &str) -> Result<Duration, String> {
    let ms: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of milliseconds"))?;
    if !(0.0..=60_000.0).contains(&ms) {
        return Err(format!("{text} ms is not between 0 and 60000"));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_milliseconds_within_bounds() {
        assert_eq!(parse_delay_ms("0.25"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_delay_ms("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay_ms("40"), Ok(Duration::from_millis(40)));
        for bad in ["-1", "NaN", "inf", "1e9", "soon", ""] {
            assert!(parse_delay_ms(bad).is_err(), "{bad}");
        }
    }
}
