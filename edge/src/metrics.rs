//! The instance's overload counters, served as Prometheus text on `GET /edge/metrics`: answers by
//! status class, requests shed (`503`) by cause, the origin budget, reads sent to the origin by cause,
//! and the breakers' verdicts and state changes.
//!
//! **Per instance**, labelled `edge_instance` (the answer's `x-edge-instance`): Spin runs several
//! instances per process, each with its own memory, and a scrape is answered by whichever instance
//! Spin picks. A process-wide count would cost an atomic increment in the key-value store
//! (`wasi:keyvalue/atomics`) per counted event, on every answer; the label keeps each instance's
//! counters one series instead, so a scrape answered by another instance is not read by Prometheus as
//! a counter reset. An instance's counters start at 0 and end
//! with it. Sum across instances (`sum(rate(...))`): a ratio of two such sums (shed ÷ answers) is
//! right whichever instances the scrapes reached, since both sides are sampled alike.
//!
//! Counters are plain statics: an instance is single-threaded and its statics are its own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backoff::Verdict;

/// A counter of this instance.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a read was answered `503` by the edge itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Redis could not be heard within the request's budget while the edge was saturated.
    RedisUnheard,
    /// The instance's origin budget was spent.
    OriginBudget,
    /// The origin's breaker was open (or another request probed it).
    OriginBreaker,
    /// The origin did not answer in time.
    OriginTimeout,
    /// The origin could not be reached.
    OriginUnreachable,
}

impl Shed {
    const ALL: [Shed; 5] = [
        Shed::RedisUnheard,
        Shed::OriginBudget,
        Shed::OriginBreaker,
        Shed::OriginTimeout,
        Shed::OriginUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::RedisUnheard => "redis_unheard",
            Shed::OriginBudget => "origin_budget",
            Shed::OriginBreaker => "origin_breaker",
            Shed::OriginTimeout => "origin_timeout",
            Shed::OriginUnreachable => "origin_unreachable",
        }
    }
}

/// Why a read went to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRead {
    /// Redis has no copy of the id (or of the fields asked).
    Miss,
    /// Redis was not asked: its breaker was open (or another request probed it).
    RedisSkipped,
    /// Redis failed (an error, or a timeout the edge could have heard).
    RedisFailed,
    /// Redis's copy was soft-expired.
    Expired,
    /// A reload from PostgreSQL: a copy older than one this instance served or wrote.
    Reload,
    /// An early refresh (XFetch) of a copy close to its soft expiry.
    Refresh,
}

impl OriginRead {
    const ALL: [OriginRead; 6] = [
        OriginRead::Miss,
        OriginRead::RedisSkipped,
        OriginRead::RedisFailed,
        OriginRead::Expired,
        OriginRead::Reload,
        OriginRead::Refresh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OriginRead::Miss => "miss",
            OriginRead::RedisSkipped => "redis_skipped",
            OriginRead::RedisFailed => "redis_failed",
            OriginRead::Expired => "expired",
            OriginRead::Reload => "reload",
            OriginRead::Refresh => "refresh",
        }
    }
}

/// The verdicts of [`crate::backoff::Verdict`], in the order they are served.
const VERDICTS: [&str; 6] = [
    "error",
    "timeout",
    "saturated:late_start",
    "saturated:late_wake_up",
    "saturated:answered_others",
    "saturated:slow_answers",
];

/// What became of a cluster node's redirection (crate::cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `MOVED`: followed, and the slot map corrected.
    Moved,
    /// `ASK`: followed after `ASKING`.
    Ask,
    /// A second redirection of the same read: not followed; the read is a miss (the origin).
    Unresolved,
}

impl RedirectKind {
    const ALL: [RedirectKind; 3] = [
        RedirectKind::Moved,
        RedirectKind::Ask,
        RedirectKind::Unresolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RedirectKind::Moved => "moved",
            RedirectKind::Ask => "ask",
            RedirectKind::Unresolved => "unresolved",
        }
    }
}

/// The backends with a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Origin,
}

/// Every counter of the instance.
#[derive(Default)]
pub struct Metrics {
    /// Answers by status class: 2xx, 3xx, 4xx, 5xx.
    answers: [Counter; 4],
    stale: Counter,
    shed: [Counter; Shed::ALL.len()],
    budget_granted: Counter,
    budget_refused: Counter,
    /// Takes the process's bucket could not decide (the instance's own did).
    budget_fallbacks: Counter,
    origin_reads: [Counter; OriginRead::ALL.len()],
    /// Redis verdicts (`VERDICTS`) and state changes; the origin's breaker has no verdicts (every
    /// failure counts: no answer in time, cannot connect, a 502/503/504).
    redis_verdicts: [Counter; VERDICTS.len()],
    /// Opened, closed; Redis then the origin.
    transitions: [[Counter; 2]; 2],
    /// On a Redis Cluster: redirections by [`RedirectKind`], and slot maps learnt.
    redirects: [Counter; RedirectKind::ALL.len()],
    slot_maps: Counter,
}

impl Metrics {
    pub const fn new() -> Self {
        Self {
            answers: [const { Counter::new() }; 4],
            stale: Counter::new(),
            shed: [const { Counter::new() }; Shed::ALL.len()],
            budget_granted: Counter::new(),
            budget_refused: Counter::new(),
            budget_fallbacks: Counter::new(),
            origin_reads: [const { Counter::new() }; OriginRead::ALL.len()],
            redis_verdicts: [const { Counter::new() }; VERDICTS.len()],
            transitions: [const { [const { Counter::new() }; 2] }; 2],
            redirects: [const { Counter::new() }; RedirectKind::ALL.len()],
            slot_maps: Counter::new(),
        }
    }

    /// An answer with this status; `stale`: `x-cache: STALE`.
    pub fn answered(&self, status: u16, stale: bool) {
        if let Some(class) = (status / 100).checked_sub(2).filter(|c| *c < 4) {
            self.answers[usize::from(class)].inc();
        }
        if stale {
            self.stale.inc();
        }
    }

    pub fn shed(&self, why: Shed) {
        self.shed[Shed::ALL.iter().position(|s| *s == why).unwrap_or(0)].inc();
    }

    /// A take from the origin budget: granted or refused.
    pub fn budget(&self, granted: bool) {
        if granted {
            self.budget_granted.inc();
        } else {
            self.budget_refused.inc();
        }
    }

    /// A take the process's bucket (`origin_budget_store`) could not decide: the instance's did.
    pub fn budget_fallback(&self) {
        self.budget_fallbacks.inc();
    }

    pub fn origin_read(&self, why: OriginRead) {
        self.origin_reads[OriginRead::ALL.iter().position(|r| *r == why).unwrap_or(0)].inc();
    }

    /// A verdict on a Redis call that failed or was not answered in time.
    pub fn redis_verdict(&self, verdict: Verdict) {
        if let Some(i) = VERDICTS.iter().position(|v| *v == verdict.cause()) {
            self.redis_verdicts[i].inc();
        }
    }

    /// A cluster node's redirection, and what became of it.
    pub fn redis_redirect(&self, kind: RedirectKind) {
        self.redirects[kind as usize].inc();
    }

    /// A Redis Cluster slot map learnt (`CLUSTER SLOTS`).
    pub fn slot_map_refreshed(&self) {
        self.slot_maps.inc();
    }

    /// A breaker state change: `opened` (else closed).
    pub fn transition(&self, backend: Backend, opened: bool) {
        self.transitions[backend as usize][usize::from(!opened)].inc();
    }

    /// The counters as Prometheus text, labelled with `instance` (`x-edge-instance`), with the budget's
    /// tokens left now.
    ///
    /// Long on purpose: one block per metric (help, type, samples), in the order the text lists them.
    pub fn prometheus(&self, instance: &str, budget_tokens: Option<f64>) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        };
        let sample = |out: &mut String, name: &str, labels: &str, value: String| {
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(
                out,
                "{name}{{edge_instance=\"{instance}\"{sep}{labels}}} {value}"
            );
        };
        head(
            &mut out,
            "aside_edge_answers_total",
            "counter",
            "Answers of this instance by status class (every route)",
        );
        for (class, c) in ["2xx", "3xx", "4xx", "5xx"].iter().zip(&self.answers) {
            sample(
                &mut out,
                "aside_edge_answers_total",
                &format!("class=\"{class}\""),
                c.get().to_string(),
            );
        }
        head(
            &mut out,
            "aside_edge_stale_answers_total",
            "counter",
            "Reads answered from a stale copy (x-cache: STALE) because the origin could not answer",
        );
        sample(
            &mut out,
            "aside_edge_stale_answers_total",
            "",
            self.stale.get().to_string(),
        );
        head(
            &mut out,
            "aside_edge_shed_total",
            "counter",
            "Reads the edge answered 503 itself, by cause",
        );
        for (why, c) in Shed::ALL.iter().zip(&self.shed) {
            sample(
                &mut out,
                "aside_edge_shed_total",
                &format!("cause=\"{}\"", why.as_str()),
                c.get().to_string(),
            );
        }
        head(
            &mut out,
            "aside_edge_origin_budget_total",
            "counter",
            "Takes from the origin budget (the instance's, or the process's with origin_budget_store), \
             granted or refused",
        );
        for (outcome, c) in [
            ("granted", &self.budget_granted),
            ("refused", &self.budget_refused),
        ] {
            sample(
                &mut out,
                "aside_edge_origin_budget_total",
                &format!("outcome=\"{outcome}\""),
                c.get().to_string(),
            );
        }
        head(
            &mut out,
            "aside_edge_origin_budget_fallbacks_total",
            "counter",
            "Takes the process's origin budget could not decide (its store failed or could not be \
             opened): the instance's own bucket did",
        );
        sample(
            &mut out,
            "aside_edge_origin_budget_fallbacks_total",
            "",
            self.budget_fallbacks.get().to_string(),
        );
        if let Some(tokens) = budget_tokens {
            head(
                &mut out,
                "aside_edge_origin_budget_tokens",
                "gauge",
                "Origin reads the budget would grant at once now (the process's with \
                 origin_budget_store)",
            );
            sample(
                &mut out,
                "aside_edge_origin_budget_tokens",
                "",
                format!("{tokens:.1}"),
            );
        }
        head(
            &mut out,
            "aside_edge_origin_reads_total",
            "counter",
            "Reads sent to the origin by cause (the budget granted them)",
        );
        for (why, c) in OriginRead::ALL.iter().zip(&self.origin_reads) {
            sample(
                &mut out,
                "aside_edge_origin_reads_total",
                &format!("cause=\"{}\"", why.as_str()),
                c.get().to_string(),
            );
        }
        head(
            &mut out,
            "aside_edge_breaker_verdicts_total",
            "counter",
            "Redis calls that failed or were not answered in time, by verdict: error and timeout count \
             towards the breaker (failing), saturated:* do not (the edge's own load)",
        );
        for (verdict, c) in VERDICTS.iter().zip(&self.redis_verdicts) {
            let kind = if verdict.starts_with("saturated") {
                "saturated"
            } else {
                "failing"
            };
            sample(
                &mut out,
                "aside_edge_breaker_verdicts_total",
                &format!("backend=\"redis\",verdict=\"{kind}\",cause=\"{verdict}\""),
                c.get().to_string(),
            );
        }
        head(
            &mut out,
            "aside_edge_breaker_transitions_total",
            "counter",
            "Breaker state changes by backend: opened (failures reached the threshold, or a probe \
             failed) and closed (a probe succeeded)",
        );
        for (backend, pair) in ["redis", "origin"].iter().zip(&self.transitions) {
            for (to, c) in ["opened", "closed"].iter().zip(pair) {
                sample(
                    &mut out,
                    "aside_edge_breaker_transitions_total",
                    &format!("backend=\"{backend}\",to=\"{to}\""),
                    c.get().to_string(),
                );
            }
        }
        head(
            &mut out,
            "aside_edge_redis_redirects_total",
            "counter",
            "Redis Cluster redirections of this instance's reads: moved and ask (followed once), \
             unresolved (redirected again: read as a miss through the origin)",
        );
        for (kind, c) in RedirectKind::ALL.iter().zip(&self.redirects) {
            sample(
                &mut out,
                "aside_edge_redis_redirects_total",
                &format!("kind=\"{}\"", kind.as_str()),
                c.get().to_string(),
            );
        }
        head(
            &mut out,
            "aside_edge_redis_slot_maps_total",
            "counter",
            "Redis Cluster slot maps this instance learnt (CLUSTER SLOTS)",
        );
        sample(
            &mut out,
            "aside_edge_redis_slot_maps_total",
            "",
            self.slot_maps.get().to_string(),
        );
        out
    }
}

/// This instance's counters.
pub static METRICS: Metrics = Metrics::new();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{Failing, Saturated};

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn counters_are_served_by_cause_with_the_instance_label() {
        let m = Metrics::new();
        m.answered(200, false);
        m.answered(200, true);
        m.answered(503, false);
        m.answered(404, false);
        m.answered(101, false);
        m.shed(Shed::RedisUnheard);
        m.shed(Shed::OriginBudget);
        m.shed(Shed::OriginBudget);
        m.budget(true);
        m.budget(false);
        m.budget_fallback();
        m.origin_read(OriginRead::RedisFailed);
        m.redis_verdict(Verdict::Saturated(Saturated::LateWakeUp));
        m.redis_verdict(Verdict::Failing(Failing::Error));
        m.transition(Backend::Origin, true);
        let text = m.prometheus("00ab", Some(2.5));
        let at = |s: &str| value(&text, &format!("{s} ")).unwrap_or_else(|| panic!("{s}\n{text}"));
        let i = "edge_instance=\"00ab\"";
        assert_eq!(
            at(&format!("aside_edge_answers_total{{{i},class=\"2xx\"}}")),
            2
        );
        assert_eq!(
            at(&format!("aside_edge_answers_total{{{i},class=\"4xx\"}}")),
            1
        );
        assert_eq!(
            at(&format!("aside_edge_answers_total{{{i},class=\"5xx\"}}")),
            1
        );
        assert_eq!(at(&format!("aside_edge_stale_answers_total{{{i}}}")), 1);
        assert_eq!(
            at(&format!(
                "aside_edge_shed_total{{{i},cause=\"origin_budget\"}}"
            )),
            2
        );
        assert_eq!(
            at(&format!(
                "aside_edge_shed_total{{{i},cause=\"redis_unheard\"}}"
            )),
            1
        );
        assert_eq!(
            at(&format!(
                "aside_edge_shed_total{{{i},cause=\"origin_breaker\"}}"
            )),
            0
        );
        assert_eq!(
            at(&format!(
                "aside_edge_origin_budget_total{{{i},outcome=\"refused\"}}"
            )),
            1
        );
        assert_eq!(
            at(&format!("aside_edge_origin_budget_fallbacks_total{{{i}}}")),
            1
        );
        assert_eq!(
            at(&format!(
                "aside_edge_origin_reads_total{{{i},cause=\"redis_failed\"}}"
            )),
            1
        );
        assert_eq!(
            at(&format!(
                "aside_edge_breaker_verdicts_total{{{i},backend=\"redis\",verdict=\"saturated\",cause=\"saturated:late_wake_up\"}}"
            )),
            1
        );
        assert_eq!(
            at(&format!(
                "aside_edge_breaker_verdicts_total{{{i},backend=\"redis\",verdict=\"failing\",cause=\"error\"}}"
            )),
            1
        );
        assert_eq!(
            at(&format!(
                "aside_edge_breaker_transitions_total{{{i},backend=\"origin\",to=\"opened\"}}"
            )),
            1
        );
        assert_eq!(
            at(&format!(
                "aside_edge_breaker_transitions_total{{{i},backend=\"redis\",to=\"opened\"}}"
            )),
            0
        );
        assert!(text.contains(&format!("aside_edge_origin_budget_tokens{{{i}}} 2.5\n")));
        // Every sample's metric has its HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }
}
