//! The bundled host against real Spin: the same requests to the same edge component under both, answer
//! by answer. The bundled host is a stand-in for machines without Spin; where it differs from `spin up`,
//! Spin is right and the host is fixed (docs/architecture.md, "The runtime"). Every difference found
//! so far has a case here that would have caught it.
//!
//! Also the bundled host's smoke test: when the suite runs under Spin, this is where the host still runs
//! the read path, writes and errors, so it cannot rot. Without a Spin CLI only the host half runs (and
//! the rest of the suite runs under the host anyway).

use std::collections::BTreeMap;
use std::time::Duration;

use aside_tests::harness::{
    Edge, EdgeOptions, EdgeRuntime, Origin, Stack, TestEnv, generate_secret, http_client,
};
use reqwest::Method;

/// One request of the comparison.
struct Case {
    what: &'static str,
    /// The status the edge must answer (checked under every runtime, so the host half means something
    /// on a machine without Spin).
    status: u16,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
}

const fn case(what: &'static str, status: u16, method: Method, path: &'static str) -> Case {
    Case {
        what,
        status,
        method,
        path,
        headers: &[],
        body: "",
    }
}

/// What an answer is compared on: the status, the body, and every header but the ones that differ by
/// nature from one request to the next (`date`, the instance id, the timings). `x-cache: L1` and `L2`
/// are one value here: which instance takes a request (a warm one, or a new one while the last is still
/// finishing) is the runtime's choice, and tier 1 belongs to the instance; edge.rs checks tier 1 per
/// instance.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

const VOLATILE: [&str; 3] = ["date", "x-edge-instance", "server-timing"];

async fn send(base: &str, case: &Case) -> Seen {
    let client = http_client();
    let mut request = client.request(case.method.clone(), format!("{base}{}", case.path));
    for (name, value) in case.headers {
        request = request.header(*name, *value);
    }
    if !case.body.is_empty() {
        request = request.body(case.body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", case.what));
    let status = response.status().as_u16();
    let mut headers = BTreeMap::new();
    for (name, value) in response.headers() {
        if VOLATILE.contains(&name.as_str()) {
            continue;
        }
        // max-age counts down from the soft expiry the origin drew (a jittered TTL): its number differs
        // from one fill to the next, its presence does not.
        if name == "cache-control" {
            let directives: Vec<String> = value
                .to_str()
                .unwrap_or("<binary>")
                .split(", ")
                .map(|d| match d.split_once('=') {
                    Some(("max-age", _)) => "max-age=N".to_string(),
                    _ => d.to_string(),
                })
                .collect();
            headers.insert("cache-control".to_string(), directives.join(", "));
            continue;
        }
        if name == "x-cache" && matches!(value.to_str(), Ok("L1" | "L2")) {
            headers.insert("x-cache".to_string(), "L1|L2".to_string());
            continue;
        }
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(value.to_str().unwrap_or("<binary>"))
            })
            .or_insert_with(|| value.to_str().unwrap_or("<binary>").to_string());
    }
    let body = response.text().await.unwrap_or_default();
    Seen {
        status,
        headers,
        body,
    }
}

fn cases() -> Vec<Case> {
    const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
    vec![
        case("first read: origin", 200, Method::GET, "/users/1"),
        case("second read: tier 1", 200, Method::GET, "/users/1"),
        case(
            "projection",
            200,
            Method::GET,
            "/users/2?fields=email,department",
        ),
        case("bad id", 400, Method::GET, "/users/abc"),
        case("unknown id", 404, Method::GET, "/users/999999"),
        case(
            "unknown field",
            400,
            Method::GET,
            "/users/1?fields=password",
        ),
        case("health", 200, Method::GET, "/healthz"),
        case("origin-only route", 404, Method::GET, "/metrics"),
        case("no route", 404, Method::GET, "/nothing/here"),
        case("method not allowed", 405, Method::PUT, "/healthz"),
        case("HEAD", 200, Method::HEAD, "/users/1"),
        case("OPTIONS", 405, Method::OPTIONS, "/users/1"),
        Case {
            what: "PATCH",
            status: 200,
            method: Method::PATCH,
            path: "/users/3",
            headers: JSON,
            body: r#"{"department":"Security"}"#,
        },
        case("read after PATCH", 200, Method::GET, "/users/3"),
        Case {
            what: "invalid POST",
            status: 422,
            method: Method::POST,
            path: "/users",
            headers: JSON,
            body: r#"{"full_name":"Ana Silva","gender":"X","birth_date":"1990-01-01","department":"Sales","email":"ana@example.org","username":"ana.silva"}"#,
        },
        Case {
            what: "not JSON",
            status: 415,
            method: Method::PUT,
            path: "/users/4",
            headers: &[("content-type", "text/plain")],
            body: "hello",
        },
        case("DELETE", 204, Method::DELETE, "/users/5"),
        case("read after DELETE", 404, Method::GET, "/users/5"),
    ]
}

/// Runs `cases` against an edge under each runtime (the bundled host, and Spin when found), each on a
/// fresh database seeded alike, with `configure` applied to the edge's options; returns the answers per
/// runtime.
async fn answers_under_each_runtime(
    cases: &[Case],
    configure: impl Fn(EdgeOptions) -> EdgeOptions,
) -> Vec<(EdgeRuntime, Vec<Seen>)> {
    let stack = Stack::shared().await;
    let mut seen = Vec::new();
    for runtime in std::iter::once(EdgeRuntime::Bundled).chain(EdgeRuntime::spin()) {
        let (_env, _origin, edge) = edge_under(stack, &runtime, 6, &configure).await;
        let mut answers = Vec::new();
        for case in cases {
            let answer = send(&edge.url(), case).await;
            assert_eq!(
                answer.status, case.status,
                "{} ({} {}) under {runtime}: {answer:?}",
                case.what, case.method, case.path
            );
            answers.push(answer);
        }
        seen.push((runtime, answers));
        edge.shutdown().await;
    }
    if seen.len() == 1 {
        eprintln!(
            "runtime parity: no Spin 4 CLI found, so only the bundled host's answers were checked"
        );
    }
    seen
}

/// An edge under `runtime` in front of its own origin, on a fresh database seeded with `profiles`
/// profiles, with `configure` applied to its options. The database and the origin live as long as the
/// returned values.
async fn edge_under(
    stack: &Stack,
    runtime: &EdgeRuntime,
    profiles: u64,
    configure: impl Fn(EdgeOptions) -> EdgeOptions,
) -> (TestEnv, Origin, Edge) {
    let env = stack.env().await.unwrap();
    env.seed(profiles).await.unwrap();
    let token = generate_secret();
    let origin = env.origin_with_token(stack, &token).await.unwrap();
    let options = EdgeOptions::new(stack, &env, &origin.url(), &token).runtime(runtime.clone());
    let edge = configure(options).start().await.unwrap();
    (env, origin, edge)
}

/// Asserts that every runtime gave the first runtime's answers.
fn assert_same(cases: &[Case], seen: &[(EdgeRuntime, Vec<Seen>)]) {
    let (reference, expected) = &seen[0];
    for (runtime, answers) in &seen[1..] {
        for ((case, want), got) in cases.iter().zip(expected).zip(answers) {
            assert_eq!(
                got, want,
                "{} ({} {}): {runtime} (left) differs from {reference} (right)",
                case.what, case.method, case.path
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_host_answers_every_request_as_spin_does() {
    let cases = cases();
    let seen = answers_under_each_runtime(&cases, |options| options).await;
    assert_same(&cases, &seen);
}

/// An `origin_url` without a scheme makes the templated allow-list unparseable. `spin up` still starts
/// (it parses the list lazily) and the component answers its own configuration error; the host used to
/// refuse to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_origin_url_starts_and_every_answer_names_it() {
    let cases = [
        case("read", 500, Method::GET, "/users/1"),
        case("health", 500, Method::GET, "/healthz"),
    ];
    let seen =
        answers_under_each_runtime(&cases, |options| options.var("origin_url", "127.0.0.1:1"))
            .await;
    assert_same(&cases, &seen);
    let body = &seen[0].1[0].body;
    assert!(body.contains("origin_url"), "{body}");
}

/// A required variable with no value: neither runtime starts, and each names the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_the_start_under_every_runtime() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    for runtime in std::iter::once(EdgeRuntime::Bundled).chain(EdgeRuntime::spin()) {
        let mut options =
            EdgeOptions::new(stack, &env, "http://127.0.0.1:1", "t").runtime(runtime.clone());
        options.config.variables.remove("origin_token");
        let error = format!("{:#}", options.start().await.unwrap_err());
        assert!(error.contains("origin_token"), "{runtime}: {error}");
    }
}

/// `spin up` serves through a child process (`spin trigger http`); stopping the edge, or just dropping
/// it (a failed test), must stop both: nothing keeps answering on the port afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_spin_edge_leaves_nothing_serving() {
    let Some(spin) = EdgeRuntime::spin() else {
        eprintln!("no Spin 4 CLI found: nothing to check");
        return;
    };
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    for drop_only in [false, true] {
        let edge = EdgeOptions::new(stack, &env, "http://127.0.0.1:1", "t")
            .runtime(spin.clone())
            .start()
            .await
            .unwrap();
        let url = edge.url();
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        assert!(aside_tests::harness::port_open(port).await);
        if drop_only {
            drop(edge);
        } else {
            edge.shutdown().await;
        }
        let closed = aside_tests::harness::wait_until(Duration::from_secs(5), || async {
            !aside_tests::harness::port_open(port).await
        })
        .await;
        assert!(
            closed,
            "something still serves {url} (drop only: {drop_only})"
        );
    }
}

/// Spin 4.0.2 leaves Nagle's algorithm on for the HTTP connections it accepts (its trigger never sets
/// `TCP_NODELAY`): a response whose body is written after its head waits for the client's delayed ACK,
/// up to 40 ms on Linux (docs/benchmarks.md, "Spin and Nagle"). The host does the same, so that its
/// figures carry the same stalls; when a Spin release turns Nagle off, this fails under it and the host
/// follows.
const SPIN_ACCEPTS_WITH_NODELAY: bool = false;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connections_keep_nagle_as_spin_does() {
    let stack = Stack::shared().await;
    for runtime in std::iter::once(EdgeRuntime::Bundled).chain(EdgeRuntime::spin()) {
        let (_env, _origin, edge) = edge_under(stack, &runtime, 1, |options| options).await;
        let address = edge.url().trim_start_matches("http://").to_string();
        let name = runtime.to_string();
        let nodelay = tokio::task::spawn_blocking(move || {
            use std::io::{Read as _, Write as _};
            let mut client = std::net::TcpStream::connect(&address).unwrap();
            client
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: edge\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            client.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200", "{runtime}: {head:?}");
            // The connection is still open (keep-alive): the server's end of it can be looked at.
            sockets::server_side_nodelay(&client)
                .unwrap_or_else(|e| panic!("cannot read the server's TCP_NODELAY: {e}"))
        })
        .await
        .unwrap();
        assert_eq!(
            nodelay, SPIN_ACCEPTS_WITH_NODELAY,
            "TCP_NODELAY on the edge's accepted connection under {name}"
        );
        edge.shutdown().await;
    }
}

/// The other end of a loopback TCP connection, found in whichever process holds it.
mod sockets {
    use std::io;
    use std::net::{SocketAddr, TcpStream};

    /// Whether the server's end of `client` (a connection this process opened) has `TCP_NODELAY`: its
    /// socket is found through `/proc/net/tcp` and `/proc/<pid>/fd`, copied into this process with
    /// `pidfd_getfd` (allowed for the test's own children, and as root) and asked with `getsockopt`.
    pub fn server_side_nodelay(client: &TcpStream) -> io::Result<bool> {
        let inode = inode_of(client.peer_addr()?, client.local_addr()?)?;
        let (pid, fd) = holder_of(inode)?;
        // SAFETY: plain syscalls on integers; every descriptor they return is closed below.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as libc::c_int;
            if pidfd < 0 {
                return Err(io::Error::last_os_error());
            }
            let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as libc::c_int;
            let copied = io::Error::last_os_error();
            libc::close(pidfd);
            if copy < 0 {
                return Err(copied);
            }
            let mut value: libc::c_int = 0;
            let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let asked = libc::getsockopt(
                copy,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut value as *mut libc::c_int).cast(),
                &mut length,
            );
            let error = io::Error::last_os_error();
            libc::close(copy);
            if asked != 0 {
                return Err(error);
            }
            Ok(value != 0)
        }
    }

    /// `/proc/net/tcp`'s form of an IPv4 address: the address as a little-endian hex word, then the port.
    fn proc_form(address: SocketAddr) -> io::Result<String> {
        let SocketAddr::V4(v4) = address else {
            return Err(io::Error::other(format!("{address} is not IPv4")));
        };
        Ok(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ))
    }

    /// The inode of the socket whose local end is `local` and remote end is `remote`.
    fn inode_of(local: SocketAddr, remote: SocketAddr) -> io::Result<u64> {
        let (local, remote) = (proc_form(local)?, proc_form(remote)?);
        let table = std::fs::read_to_string("/proc/net/tcp")?;
        table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.len() > 9 && fields[1] == local && fields[2] == remote)
            .and_then(|fields| fields[9].parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!("no socket {local} -> {remote} in /proc/net/tcp"))
            })
    }

    /// The process and descriptor holding socket `inode`.
    fn holder_of(inode: u64) -> io::Result<(libc::pid_t, libc::c_int)> {
        let wanted = format!("socket:[{inode}]");
        for process in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = process.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            for descriptor in descriptors.flatten() {
                let Ok(target) = std::fs::read_link(descriptor.path()) else {
                    continue;
                };
                if target.as_os_str() == wanted.as_str()
                    && let Ok(fd) = descriptor.file_name().to_string_lossy().parse()
                {
                    return Ok((pid, fd));
                }
            }
        }
        Err(io::Error::other(format!("no process holds {wanted}")))
    }
}
