//! A small load generator for fault-injection tests: tasks looping GET requests over a set of URLs for
//! a while ([`Load::run`], [`Load::spawn`]), or one burst of concurrent requests ([`Load::burst`]),
//! recording each answer's status, `x-cache`, `retry-after`, body and latency.
//!
//! ```ignore
//! let report = Load::new(urls).concurrency(8).duration(Duration::from_secs(3)).run().await;
//! eprintln!("{}", report.summary("postgres down"));
//! assert_eq!(report.failed(), 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of the URL in the load's list.
    pub target: usize,
    /// When the request was sent, from the start of the load.
    pub sent_at: Duration,
    pub latency: Duration,
    /// The HTTP status; 0 when there was no answer (connection error, client timeout).
    pub status: u16,
    pub x_cache: Option<String>,
    pub retry_after: Option<String>,
    pub body: bytes::Bytes,
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

/// A load to run: GET requests over `targets`, in turn.
#[derive(Debug, Clone)]
pub struct Load {
    targets: Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
    client_timeout: Duration,
    headers: Vec<(String, String)>,
}

impl Load {
    /// Defaults: 8 tasks, 3 s, a 5 s client timeout (longer than the 2 s budget, so that a request
    /// that overruns it is seen as slow rather than cut).
    pub fn new<S: Into<String>>(targets: impl IntoIterator<Item = S>) -> Self {
        let targets: Vec<String> = targets.into_iter().map(Into::into).collect();
        assert!(!targets.is_empty(), "a load needs at least one URL");
        Self {
            targets: Arc::new(targets),
            concurrency: 8,
            duration: Duration::from_secs(3),
            client_timeout: Duration::from_secs(5),
            headers: Vec::new(),
        }
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

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(self.client_timeout)
            .pool_max_idle_per_host(1024)
            .build()
            .expect("HTTP client")
    }

    /// `concurrency` tasks send requests back to back, over the targets in turn, for `duration`.
    pub async fn run(self) -> LoadReport {
        let client = self.client();
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..self.concurrency)
            .map(|_| {
                let load = self.clone();
                let client = client.clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while start.elapsed() < load.duration {
                        let target = next.fetch_add(1, Ordering::Relaxed) % load.targets.len();
                        samples.push(load.one(&client, target, start).await);
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

    /// `requests` requests sent at once (over the targets in turn), each once.
    pub async fn burst(self, requests: usize) -> LoadReport {
        let client = self.client();
        let start = Instant::now();
        let load = Arc::new(self);
        let tasks: Vec<_> = (0..requests)
            .map(|i| {
                let load = Arc::clone(&load);
                let client = client.clone();
                tokio::spawn(async move { load.one(&client, i % load.targets.len(), start).await })
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

    async fn one(&self, client: &reqwest::Client, target: usize, start: Instant) -> Sample {
        let sent_at = start.elapsed();
        let began = Instant::now();
        let mut request = client.get(&self.targets[target]);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let header = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (status, x_cache, retry_after, body) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let x_cache = header(&response, "x-cache");
                let retry_after = header(&response, "retry-after");
                match response.bytes().await {
                    Ok(body) => (status, x_cache, retry_after, body),
                    Err(_) => (0, x_cache, retry_after, bytes::Bytes::new()),
                }
            }
            Err(_) => (0, None, None, bytes::Bytes::new()),
        };
        Sample {
            target,
            sent_at,
            latency: began.elapsed(),
            status,
            x_cache,
            retry_after,
            body,
        }
    }
}
