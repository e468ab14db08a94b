//! `aside-delay` (the latency proxy of `--topology`) as a process: it forwards bytes both ways
//! unchanged, end of stream included, and each way takes at least the configured delay (a lower
//! bound of what it must add, not a measure of how fast anything is). And `aside-bench --topology`
//! refuses a preset it does not know before it starts anything.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The proxy process, killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An echo server on a free port: every connection gets back what it sends, then the end of stream.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => conn.write_all(&buf[..n]).unwrap(),
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

fn start_proxy(upstream: u16, delay_ms: &str) -> Proxy {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_aside-delay"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{upstream}")])
        .args(["--delay-ms", delay_ms])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Proxy { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aside-delay did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy
}

#[test]
fn the_proxy_forwards_both_ways_and_delays_each_way() {
    let echo = echo_server();
    let delay = Duration::from_millis(30);
    let proxy = start_proxy(echo, "30");
    let mut conn = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // A small message: there and back is two one-way delays at least.
    for round in 0..3 {
        let message = format!("ping {round}");
        let sent = Instant::now();
        conn.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0u8; message.len()];
        conn.read_exact(&mut back).unwrap();
        let took = sent.elapsed();
        assert_eq!(back, message.as_bytes());
        assert!(took >= 2 * delay, "round trip {round} took {took:?}");
    }

    // A large payload in many chunks arrives whole and in order, and the end of stream passes.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut conn = conn.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            conn.write_all(&payload).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echoed bytes differ");
}

#[test]
fn the_proxy_adds_no_delay_when_told_zero_and_refuses_a_bad_delay() {
    let echo = echo_server();
    let proxy = start_proxy(echo, "0");
    let mut conn = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    conn.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");

    let output = Command::new(env!("CARGO_BIN_EXE_aside-delay"))
        .args(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"])
        .arg("--delay-ms=-3")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not between 0 and 60000"), "{stderr}");
}

#[test]
fn an_unknown_topology_is_refused_before_anything_starts() {
    let out = std::env::temp_dir().join(format!("aside-bench-topology-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_aside-bench"))
        .args(["--topology", "edge,moon"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown topology \"moon\"")
            && stderr.contains("loopback, same-dc, edge, far-redis, or all"),
        "{stderr}"
    );
    // Nothing was started or written.
    assert!(!out.exists());
}
