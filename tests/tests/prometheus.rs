//! aside's Prometheus rules in a real Prometheus (Debian's `prometheus`, installed by `cargo xtask
//! test`): it scrapes a test origin every second and evaluates deploy/prometheus/rules every second; the
//! test drives reads with a known number of hits and misses and then an outage, and asks Prometheus's
//! HTTP API what the recording rules and the alerts say.

use std::process::Command;
use std::time::Duration;

use aside_tests::harness::{
    ManagedChild, Origin, StopSignal, free_port, log_to, spawn_managed, temp_dir, wait_until,
    workspace_root,
};
use aside_tests::harness::{Stack, TestEnv};
use serde_json::Value;

/// A `prometheus` process on a free port, scraping one origin, with aside's rules loaded.
struct Prometheus {
    url: String,
    _child: ManagedChild,
}

impl Prometheus {
    async fn start(origin: &Origin) -> Prometheus {
        let dir = temp_dir("aside-prometheus");
        let rules = workspace_root().join("deploy/prometheus/rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}/aside-recording.yml\n  - {rules}/aside-alerts.yml\n\
             scrape_configs:\n  - job_name: aside-origin\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = rules.display(),
            target = origin.addr,
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let mut command = Command::new("prometheus");
        command
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        log_to(&mut command, &dir, "prometheus");
        let child = spawn_managed(command, StopSignal::Kill)
            .expect("run `prometheus` (Debian's package; `cargo xtask test` installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        assert!(
            wait_until(Duration::from_secs(15), || async {
                reqwest::get(&ready)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await,
            "prometheus did not become ready; see {}",
            dir.join("prometheus.log").display()
        );
        Prometheus { url, _child: child }
    }

    /// An instant query's result vector.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of a query that returns one series, if it returns one.
    async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        let v = result.first()?["value"][1].as_str()?.parse().ok()?;
        Some(v)
    }

    /// Active alerts (pending or firing) named `name`.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        let body: Value = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    }
}

/// One miss and then three hits of each id (the hits wait for the miss's fill, which follows its
/// answer).
async fn read_miss_then_hits(origin: &Origin, ids: std::ops::RangeInclusive<i32>) {
    let client = reqwest::Client::new();
    for id in ids {
        for read in 0..4 {
            let status = client
                .get(format!("{}/users/{id}", origin.url()))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "users/{id}");
            if read == 0 {
                origin.fills_settled().await;
            }
        }
    }
}

async fn seeded_origin(stack: &Stack) -> (TestEnv, Origin) {
    let env = stack.env().await.unwrap();
    env.seed(20).await.unwrap();
    let origin = Origin::start(env.origin_options(stack)).await.unwrap();
    (env, origin)
}

#[tokio::test]
async fn recording_rules_give_the_hit_ratio_caused_and_the_breaker_alert_goes_active() {
    // Its own servers: PostgreSQL is stopped below.
    let mut stack = Stack::dedicated().await.unwrap();
    let (_env, origin) = seeded_origin(&stack).await;
    // Before Prometheus's first scrape: the hit and miss series exist, 3 hits to 1 miss. The reads
    // below keep that proportion, so rate()'s extrapolation is the same for both series and the
    // recorded ratio is exactly the one the reads caused: 15 hits of 20 reads.
    read_miss_then_hits(&origin, 1..=1).await;
    let prometheus = Prometheus::start(&origin).await;
    let hits = r#"aside_origin_cache_requests_total{job="aside-origin",result="hit"}"#;
    let misses = r#"aside_origin_cache_requests_total{job="aside-origin",result="miss"}"#;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            prometheus.value(hits).await == Some(3.0)
        })
        .await,
        "Prometheus never scraped the origin"
    );

    read_miss_then_hits(&origin, 2..=6).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            prometheus.value(hits).await == Some(18.0)
                && prometheus.value(misses).await == Some(6.0)
        })
        .await,
        "Prometheus did not see the reads"
    );
    // A rule evaluation after that scrape (every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ratio = prometheus
        .value("job:aside_origin_cache_hit_ratio:rate5m")
        .await
        .expect("the hit ratio is recorded");
    assert!((ratio - 0.75).abs() < 1e-9, "recorded hit ratio {ratio}");
    let by_instance = prometheus
        .value(r#"sum(instance:aside_origin_cache_requests:rate5m{result="hit"}) / sum(instance:aside_origin_cache_requests:rate5m)"#)
        .await
        .unwrap();
    assert!((by_instance - 0.75).abs() < 1e-9, "{by_instance}");
    assert!(prometheus.alerts("AsideBreakerOpen").await.is_empty());

    // PostgreSQL goes away: reads of uncached ids fail and the PostgreSQL breaker opens.
    stack.postgres.stop();
    let client = reqwest::Client::new();
    for id in 7..=12 {
        let status = client
            .get(format!("{}/users/{id}", origin.url()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 503, "users/{id} without PostgreSQL");
    }
    let went_active = wait_until(Duration::from_secs(10), || async {
        !prometheus.alerts("AsideBreakerOpen").await.is_empty()
    })
    .await;
    assert!(went_active, "AsideBreakerOpen never went pending");
    let active = prometheus.alerts("AsideBreakerOpen").await;
    assert_eq!(active.len(), 1, "{active:?}");
    let alert = &active[0];
    assert_eq!(alert["labels"]["backend"], "postgres");
    assert_eq!(alert["labels"]["severity"], "page");
    assert!(
        alert["state"] == "pending" || alert["state"] == "firing",
        "{alert}"
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "docs/operations.md#asidebreakeropen"
    );
}
