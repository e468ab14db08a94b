//! The fault-injection tests' load: tasks looping GET requests over a set of URLs for a while
//! ([`Load::run`], [`Load::spawn`]), or one burst of concurrent requests ([`Load::burst`]), recording
//! each answer's status, `x-cache`, `retry-after`, body and latency. Each task is one client with its
//! own keep-alive connection per host: the bench's load client (`aside_bench::client::Conn`, the one
//! `aside-load` uses), so the fault tests and the benchmarks load the services the same way.
//!
//! [`Load::picking`] chooses each request's URL with a function instead (e.g. ids drawn at random from
//! a pool a test widens once its fault is in place).
//!
//! With [`Load::writes`], a share of the requests are `PATCH`es of the same URLs (a department change),
//! so a load can be 95 % reads and 5 % writes; every sample records the answer's version (`etag`) and
//! the edge instance that gave it (`x-edge-instance`), for consistency checks.
//!
//! ```ignore
//! let report = Load::new(urls).concurrency(8).duration(Duration::from_secs(3)).run().await;
//! eprintln!("{}", report.summary("postgres down"));
//! assert_eq!(report.failed(), 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aside_bench::client::{Answer, Conn, Method, Outgoing, split_url};
use reqwest::header::HeaderMap;

use super::http::tier_ms;

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of the URL in the load's list (with [`Load::picking`]: the number the function gave).
    pub target: usize,
    /// When the request was sent, from the start of the load.
    pub sent_at: Duration,
    pub latency: Duration,
    /// When the answer arrived (or the request failed), to set against moments a test notes itself.
    pub answered: Instant,
    /// The HTTP status; 0 when there was no answer (connection error, client timeout).
    pub status: u16,
    pub x_cache: Option<String>,
    pub retry_after: Option<String>,
    pub body: bytes::Bytes,
    /// A `PATCH` (see [`Load::writes`]) rather than a `GET`.
    pub write: bool,
    /// The row version of the answer (`etag: "<version>"`).
    pub version: Option<i64>,
    /// `x-edge-instance`: which edge instance answered (absent from the origin).
    pub instance: Option<String>,
    /// Every header of the answer.
    pub headers: HeaderMap,
    /// Why there is no answer (status 0): the client's error.
    pub error: Option<String>,
}

impl Sample {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// No answer, or a 5xx.
    pub fn is_failure(&self) -> bool {
        self.status == 0 || self.status >= 500
    }

    /// When the answer arrived, from the start of the load.
    pub fn answered_at(&self) -> Duration {
        self.sent_at + self.latency
    }

    /// `x-cache`, or `""`.
    pub fn cache(&self) -> &str {
        self.x_cache.as_deref().unwrap_or_default()
    }

    /// Served as a stale copy (`x-cache: STALE`).
    pub fn is_stale(&self) -> bool {
        self.cache() == "STALE"
    }

    /// The header `name`, if the answer had it as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// How long `server-timing` says tier `name` took, if it was visited.
    pub fn tier_ms(&self, name: &str) -> Option<f64> {
        tier_ms(self.header("server-timing")?, name)
    }

    /// The `desc` of tier `name` in `server-timing` (the origin's: why it was asked).
    pub fn tier_desc(&self, name: &str) -> Option<&str> {
        super::http::tier_desc(self.header("server-timing")?, name)
    }

    /// The sample of a load's request number `target`, sent at `began` (`sent_at` from the load's
    /// start), whose outcome is `outcome`.
    fn of_outcome(
        target: usize,
        sent_at: Duration,
        began: Instant,
        outcome: Result<Answer, String>,
    ) -> Sample {
        let answered = Instant::now();
        let mut sample = Sample {
            target,
            sent_at,
            latency: answered - began,
            answered,
            status: 0,
            x_cache: None,
            retry_after: None,
            body: bytes::Bytes::new(),
            write: false,
            version: None,
            instance: None,
            headers: HeaderMap::new(),
            error: None,
        };
        match outcome {
            Ok(answer) => {
                let header = |name: &str| answer.header(name).map(str::to_string);
                sample.x_cache = header("x-cache");
                sample.retry_after = header("retry-after");
                sample.instance = header("x-edge-instance");
                sample.version = header("etag")
                    .and_then(|e| e.trim_start_matches("W/").trim_matches('"').parse().ok());
                sample.status = answer.status;
                sample.headers = answer.headers;
                sample.body = answer.body;
            }
            Err(why) => sample.error = Some(why),
        }
        sample
    }

    /// Sends `request` (any single request a test wants recorded the way the load records its own)
    /// and records its answer; `start` is the moment `sent_at` counts from.
    pub async fn record(request: reqwest::RequestBuilder, target: usize, start: Instant) -> Sample {
        let sent_at = start.elapsed();
        let began = Instant::now();
        let outcome = match request.send().await {
            Ok(response) => {
                let (status, headers) = (response.status().as_u16(), response.headers().clone());
                match response.bytes().await {
                    Ok(body) => Ok(Answer {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        Sample::of_outcome(target, sent_at, began, outcome)
    }
}

/// Everything a load recorded, in completion order.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn sent(&self) -> usize {
        self.samples.len()
    }

    /// Requests without an answer or answered 5xx.
    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| s.is_failure()).count()
    }

    pub fn with_status(&self, status: u16) -> usize {
        self.samples.iter().filter(|s| s.status == status).count()
    }

    /// Answers whose `x-cache` is `value` (e.g. `"STALE"`).
    pub fn with_cache(&self, value: &str) -> usize {
        self.samples
            .iter()
            .filter(|s| s.x_cache.as_deref() == Some(value))
            .count()
    }

    pub fn max_latency(&self) -> Duration {
        self.samples
            .iter()
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    }

    /// The samples of one URL.
    pub fn for_target(&self, target: usize) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.target == target)
    }

    /// One line for a test's output: counts by outcome and the worst latency.
    pub fn summary(&self, label: &str) -> String {
        let mut statuses: Vec<(u16, usize)> = Vec::new();
        for s in &self.samples {
            match statuses.iter_mut().find(|(status, _)| *status == s.status) {
                Some((_, n)) => *n += 1,
                None => statuses.push((s.status, 1)),
            }
        }
        statuses.sort();
        let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        format!(
            "{label}: sent {}, failed {}, STALE {}, HIT {}, MISS {}, statuses [{}], max latency {} ms, \
             over {:.1} s",
            self.sent(),
            self.failed(),
            self.with_cache("STALE"),
            self.with_cache("HIT"),
            self.with_cache("MISS"),
            statuses.join(" "),
            self.max_latency().as_millis(),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Which URL request number `n` asks for.
#[derive(Clone)]
enum Targets {
    /// The URLs in turn.
    List(Arc<Vec<String>>),
    /// A function of `n`: (the number its sample records as `target`, the URL).
    Pick(Arc<dyn Fn(usize) -> (usize, String) + Send + Sync>),
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Targets::List(urls) => f.debug_tuple("List").field(urls).finish(),
            Targets::Pick(_) => f.write_str("Pick(..)"),
        }
    }
}

/// A load to run: GET requests over `targets`, in turn.
#[derive(Debug, Clone)]
pub struct Load {
    targets: Targets,
    concurrency: usize,
    duration: Duration,
    client_timeout: Duration,
    headers: Vec<(String, String)>,
    /// Every this-many-th request is a write (0: none).
    write_every: usize,
}

impl Load {
    /// Defaults: 8 tasks, 3 s, a 5 s client timeout (longer than the 2 s budget, so that a request
    /// that overruns it is seen as slow rather than cut).
    pub fn new<S: Into<String>>(targets: impl IntoIterator<Item = S>) -> Self {
        let targets: Vec<String> = targets.into_iter().map(Into::into).collect();
        assert!(!targets.is_empty(), "a load needs at least one URL");
        Self::with_targets(Targets::List(Arc::new(targets)))
    }

    /// A load whose request number `n` asks for the URL `pick(n)` gives, with the number it gives
    /// recorded as the sample's `target` (same defaults as [`Load::new`]).
    pub fn picking(pick: impl Fn(usize) -> (usize, String) + Send + Sync + 'static) -> Self {
        Self::with_targets(Targets::Pick(Arc::new(pick)))
    }

    fn with_targets(targets: Targets) -> Self {
        Self {
            targets,
            concurrency: 8,
            duration: Duration::from_secs(3),
            client_timeout: Duration::from_secs(5),
            headers: Vec::new(),
            write_every: 0,
        }
    }

    /// Makes `percent` % of the requests writes: `PATCH` of the same URL with a department change
    /// (the departments of [`aside_shared::Department::SEEDED`] in turn).
    pub fn writes(mut self, percent: usize) -> Self {
        self.write_every = match percent {
            0 => 0,
            p => (100 / p.min(100)).max(1),
        };
        self
    }

    /// Concurrent request loops (for [`Load::run`]).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
        self
    }

    /// How long [`Load::run`] keeps sending.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Per-request client timeout (an answer later than this is recorded as status 0).
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
    }

    /// A header sent with every request (e.g. `authorization`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `concurrency` tasks send requests back to back, over the targets in turn, for `duration`.
    pub async fn run(self) -> LoadReport {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..self.concurrency)
            .map(|_| {
                let load = self.clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let mut conns = Conns::default();
                    let mut samples = Vec::new();
                    while start.elapsed() < load.duration {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        samples.push(load.one(&mut conns, n, start).await);
                    }
                    samples
                })
            })
            .collect();
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.expect("load task"));
        }
        LoadReport {
            samples,
            elapsed: start.elapsed(),
        }
    }

    /// [`Load::run`] in the background, while the test injects a fault.
    pub fn spawn(self) -> tokio::task::JoinHandle<LoadReport> {
        tokio::spawn(self.run())
    }

    /// `requests` requests sent at once (over the targets in turn), each once, each by a client of
    /// its own.
    pub async fn burst(self, requests: usize) -> LoadReport {
        let start = Instant::now();
        let load = Arc::new(self);
        let tasks: Vec<_> = (0..requests)
            .map(|i| {
                let load = Arc::clone(&load);
                tokio::spawn(async move { load.one(&mut Conns::default(), i, start).await })
            })
            .collect();
        let mut samples = Vec::with_capacity(requests);
        for task in tasks {
            samples.push(task.await.expect("burst task"));
        }
        LoadReport {
            samples,
            elapsed: start.elapsed(),
        }
    }

    /// Request number `n`: a write if `n` is a multiple of `write_every` (the writes go over the targets
    /// in turn too, not always to the same few), else a read of target `n % targets`.
    async fn one(&self, conns: &mut Conns, n: usize, start: Instant) -> Sample {
        let write = self.write_every > 0 && n % self.write_every == self.write_every - 1;
        let (target, url) = match &self.targets {
            Targets::Pick(pick) => pick(n),
            Targets::List(urls) => {
                let target = match write {
                    true => (n / self.write_every) % urls.len(),
                    false => n % urls.len(),
                };
                (target, urls[target].clone())
            }
        };
        let (host, path) = split_url(&url)
            .unwrap_or_else(|e| panic!("a load's URL is http://host:port/path: {e}"));
        let mut request = if write {
            let seeded = aside_shared::Department::SEEDED;
            let department = seeded[(n / self.write_every) % seeded.len()];
            Outgoing::json(
                Method::PATCH,
                path,
                &serde_json::json!({ "department": department }),
            )
        } else {
            Outgoing::get(path)
        };
        for (name, value) in &self.headers {
            request = request
                .header(name, value)
                .unwrap_or_else(|e| panic!("a load's header: {e}"));
        }
        let sent_at = start.elapsed();
        let began = Instant::now();
        let outcome = conns
            .to(&host)
            .send(&request, self.client_timeout)
            .await
            .map_err(|failure| failure.to_string());
        let mut sample = Sample::of_outcome(target, sent_at, began, outcome);
        sample.write = write;
        sample
    }
}

/// One task's client connections, one per host it has sent to.
#[derive(Default)]
struct Conns(Vec<Conn>);

impl Conns {
    fn to(&mut self, host: &str) -> &mut Conn {
        match self.0.iter().position(|c| c.host() == host) {
            Some(i) => &mut self.0[i],
            None => {
                self.0.push(Conn::new(host));
                self.0.last_mut().expect("just pushed")
            }
        }
    }
}
