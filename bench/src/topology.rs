//! `--topology`: where the stack's servers are from each other. Each preset gives the one-way delay of
//! every hop, which `aside-delay` (one process per hop, [`crate::delay`]) adds to everything crossing
//! it, and the report puts each preset's tiers next to the same reads with no cache at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::load::{Latency, LoadResult};
use crate::report::{EdgeRuntimes, Machine, Run, Settings, md_table, ms};

/// A network hop of the stack, each behind its own proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    ClientEdge,
    EdgeRedis,
    EdgeOrigin,
    OriginRedis,
    OriginPostgres,
}

impl Hop {
    pub const ALL: [Hop; 5] = [
        Hop::ClientEdge,
        Hop::EdgeRedis,
        Hop::EdgeOrigin,
        Hop::OriginRedis,
        Hop::OriginPostgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hop::ClientEdge => "client→edge",
            Hop::EdgeRedis => "edge→Redis",
            Hop::EdgeOrigin => "edge→origin",
            Hop::OriginRedis => "origin→Redis",
            Hop::OriginPostgres => "origin→PostgreSQL",
        }
    }
}

/// A preset: the one-way delay of each hop, in the order of [`Hop::ALL`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Topology {
    pub name: &'static str,
    /// What deployment it stands for.
    pub models: &'static str,
    delays_ms: [f64; 5],
}

impl Topology {
    /// The one-way delay added on `hop`, in milliseconds.
    pub fn delay_ms(&self, hop: Hop) -> f64 {
        self.delays_ms[hop as usize]
    }

    /// What a client without aside crosses to reach the origin: as far as the edge, then as far as
    /// the edge is from the origin.
    pub fn no_cache_hops() -> [Hop; 2] {
        [Hop::ClientEdge, Hop::EdgeOrigin]
    }
}

/// Every preset, in report order.
pub const TOPOLOGIES: &[Topology] = &[
    Topology {
        name: "loopback",
        models: "everything on one machine: the proxies are in place but add no delay",
        delays_ms: [0.0; 5],
    },
    Topology {
        name: "same-dc",
        models: "every server in one data centre: 0.25 ms one way on every hop",
        delays_ms: [0.25; 5],
    },
    Topology {
        name: "edge",
        models: "the edge next to its clients and a Redis replica 1 ms away; the origin 25 ms away, with \
                 its Redis and PostgreSQL 0.25 ms from it",
        delays_ms: [0.0, 1.0, 25.0, 0.25, 0.25],
    },
    Topology {
        name: "far-redis",
        models: "the edge next to its clients, Redis 10 ms away (no replica near the edge), the origin \
                 40 ms away with its Redis and PostgreSQL 0.25 ms from it",
        delays_ms: [0.0, 10.0, 40.0, 0.25, 0.25],
    },
];

/// The value of `--topology`: presets in the order given (`all`: every one), each once.
#[derive(Debug, Clone, PartialEq)]
pub struct Topologies(pub Vec<Topology>);

/// Parses `--topology`: `all`, or one or more preset names separated by commas.
pub fn parse(text: &str) -> Result<Topologies, String> {
    let names = || {
        TOPOLOGIES
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if text.trim() == "all" {
        return Ok(Topologies(TOPOLOGIES.to_vec()));
    }
    let mut chosen: Vec<Topology> = Vec::new();
    for name in text.split(',').map(str::trim) {
        let Some(t) = TOPOLOGIES.iter().find(|t| t.name == name) else {
            return Err(format!(
                "unknown topology {name:?}; the topologies are {}, or all",
                names()
            ));
        };
        if !chosen.contains(t) {
            chosen.push(*t);
        }
    }
    Ok(Topologies(chosen))
}

/// Scenario names of the runs of one topology.
pub const EDGE: &str = "edge";
/// The edge with the shared tier on (`--shared-tier on`).
pub const EDGE_SHARED: &str = crate::report::EDGE_SHARED;
pub const EDGE_MISS: &str = "edge-miss";
/// The edge's Zipf reads from one connection (an L2 hit with nothing else in flight).
pub const EDGE_ONE: &str = "edge-1conn";
/// The hello-redis component behind the same hops (one `HGETALL` through Spin's binding), from every
/// connection and from one: Spin's and the network's share of an L2 hit.
pub const HELLO_REDIS: &str = crate::report::HELLO_REDIS;
pub const HELLO_REDIS_ONE: &str = "hello-redis-1conn";
pub const NO_CACHE: &str = "no-cache";
/// The hello-origin component in front of the cache-off origin, across the same client→edge and
/// edge→origin hops (a walk from every connection): Spin's and the network's share of a miss.
pub const HELLO_ORIGIN: &str = "hello-origin";

/// The runs of one topology.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyRuns {
    pub name: String,
    pub models: String,
    /// One-way delay per hop, in ms.
    pub delays_ms: BTreeMap<String, f64>,
    pub runs: Vec<Run>,
}

impl TopologyRuns {
    pub fn new(topology: &Topology, runs: Vec<Run>) -> Self {
        Self {
            name: topology.name.into(),
            models: topology.models.into(),
            delays_ms: Hop::ALL
                .iter()
                .map(|h| (h.name().to_string(), topology.delay_ms(*h)))
                .collect(),
            runs,
        }
    }

    fn run(&self, scenario: &str, keys: &str) -> Option<&LoadResult> {
        self.runs
            .iter()
            .find(|r| r.scenario == scenario && r.keys == keys)
            .map(|r| &r.result)
    }
}

/// `report-topology.json`: every topology's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyReport {
    pub started_at_unix: u64,
    pub machine: Machine,
    pub settings: Settings,
    pub edge_runtime: EdgeRuntimes,
    pub total_s: f64,
    pub topologies: Vec<TopologyRuns>,
}

/// A tier's latency as the chart and the table read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierLatency {
    pub p50_us: u64,
    pub p99_us: u64,
}

impl From<&Latency> for TierLatency {
    fn from(l: &Latency) -> Self {
        Self {
            p50_us: l.p50,
            p99_us: l.p99,
        }
    }
}

/// The columns of a topology line: tier-1, shared-tier and Redis hits of the edge run, misses through
/// the origin (the walk on an emptied Redis), every read of the edge run, and the same reads with no
/// cache.
pub const TIERS: [&str; 6] = [
    "L1 hit",
    "shared hit",
    "L2 hit",
    "miss via origin",
    "all reads",
    "no cache",
];

/// The index of the shared tier in [`TIERS`].
const SHARED_TIER: usize = 1;

impl TopologyRuns {
    /// The edge runs of this topology: [`EDGE`], and [`EDGE_SHARED`] when it ran.
    pub fn edges(&self) -> Vec<&'static str> {
        let mut edges = vec![EDGE];
        if self.runs.iter().any(|r| r.scenario == EDGE_SHARED) {
            edges.push(EDGE_SHARED);
        }
        edges
    }

    /// The latency of each of [`TIERS`] for the edge run `edge` ([`EDGE`] or [`EDGE_SHARED`]) with
    /// `keys` (`zipf` or `uniform`), where measured.
    pub fn tiers(&self, edge: &str, keys: &str) -> [Option<TierLatency>; 6] {
        let edge = self.run(edge, keys);
        let tier = |r: Option<&LoadResult>, t: &str| {
            r.and_then(|r| r.tier_latency_us.get(t))
                .map(TierLatency::from)
        };
        let all = |r: Option<&LoadResult>| {
            r.filter(|r| r.requests > 0)
                .map(|r| TierLatency::from(&r.latency_us))
        };
        [
            tier(edge, "L1"),
            tier(edge, "SHARED"),
            tier(edge, "L2"),
            tier(self.run(EDGE_MISS, "walk"), "MISS"),
            all(edge),
            all(self.run(NO_CACHE, keys)),
        ]
    }
}

/// How much faster the edge is than no cache, `ratio` = no-cache p50 ÷ edge p50: below 1 the edge is
/// slower, and says so ("2.0× slower", not "0.5× faster").
fn speedup(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{ratio:.1}× faster")
    } else {
        format!("{:.1}× slower", 1.0 / ratio)
    }
}

impl TopologyReport {
    /// One line per topology, edge run and key choice: p50 / p99 per tier, side by side with no cache,
    /// and the edge's hit ratio per tier. The shared tier's column is there when some topology ran
    /// the edge with the shared tier on.
    pub fn markdown_table(&self) -> String {
        let cell = |t: Option<TierLatency>| {
            t.map_or("–".into(), |t| {
                format!("{} / {}", ms(t.p50_us), ms(t.p99_us))
            })
        };
        let shared = self.topologies.iter().any(|t| t.edges().len() > 1);
        let columns: Vec<usize> = (0..TIERS.len())
            .filter(|i| shared || *i != SHARED_TIER)
            .collect();
        let mut header = vec!["topology", "edge", "keys"];
        header.extend(columns.iter().map(|i| TIERS[*i]));
        header.extend(["edge p50 vs no cache", "hits at the edge"]);
        let columns = &columns;
        let rows = self.topologies.iter().flat_map(|t| {
            t.edges().into_iter().flat_map(move |edge| {
                ["zipf", "uniform"].map(|keys| {
                    let tiers = t.tiers(edge, keys);
                    let [.., all, none] = tiers;
                    let saving = match (all, none) {
                        (Some(edge), Some(none)) if edge.p50_us > 0 => {
                            speedup(none.p50_us as f64 / edge.p50_us as f64)
                        }
                        _ => "–".into(),
                    };
                    let hits = t.run(edge, keys).map_or("–".into(), crate::report::hits);
                    let mut row = vec![t.name.clone(), edge.to_string(), keys.to_string()];
                    row.extend(columns.iter().map(|i| cell(tiers[*i])));
                    row.extend([saving, hits]);
                    row
                })
            })
        });
        let numeric = 3..3 + columns.len() + 1;
        md_table(&header, |i| numeric.contains(&i), rows)
    }

    /// An L2 hit's p50 / p99 from one connection and from every connection (Zipf), per topology,
    /// against the edge→Redis round trip; `None` when no topology ran [`EDGE_ONE`].
    pub fn l2_by_connections_table(&self) -> Option<String> {
        let l2 = |t: &TopologyRuns, scenario| {
            t.run(scenario, "zipf")
                .and_then(|r| r.tier_latency_us.get("L2"))
                .map(TierLatency::from)
        };
        if self.topologies.iter().all(|t| l2(t, EDGE_ONE).is_none()) {
            return None;
        }
        let cell = |t: Option<TierLatency>| {
            t.map_or("–".into(), |t| {
                format!("{} / {}", ms(t.p50_us), ms(t.p99_us))
            })
        };
        // hello-redis: the whole request (it has no tiers), the same hops and keys.
        let hello = |t: &TopologyRuns, scenario| {
            t.run(scenario, "zipf")
                .map(|r| TierLatency::from(&r.latency_us))
        };
        let many = format!("L2 hit, {} connections", self.settings.concurrency);
        let hello_many = format!("hello-redis, {} connections", self.settings.concurrency);
        let header = [
            "topology",
            "edge→Redis round trip ms",
            "L2 hit, 1 connection",
            many.as_str(),
            "hello-redis, 1 connection",
            hello_many.as_str(),
        ];
        let rows = self.topologies.iter().map(|t| {
            let round_trip = 2.0
                * t.delays_ms
                    .get(Hop::EdgeRedis.name())
                    .copied()
                    .unwrap_or(0.0);
            vec![
                t.name.clone(),
                format!("{round_trip}"),
                cell(l2(t, EDGE_ONE)),
                cell(l2(t, EDGE)),
                cell(hello(t, HELLO_REDIS_ONE)),
                cell(hello(t, HELLO_REDIS)),
            ]
        });
        Some(md_table(&header, |i| i > 0, rows))
    }

    /// Where a miss through the edge spends its time, per topology (means in ms over the [`EDGE_MISS`]
    /// run's misses, from each answer's `server-timing`): the edge's Redis miss (`l2`), the request to
    /// the origin as the edge timed it (`origin`), the origin's own Redis and PostgreSQL time (its
    /// `redis` and `db`, passed on as `origin-redis` and `origin-db`), what is left of the origin
    /// request (the edge→origin network and the HTTP exchange), and what is left of the client's wait
    /// (the client→edge hop, Spin and the component outside the tiers); beside no cache's mean. `None`
    /// when no run carried the origin's timing.
    pub fn miss_breakdown_table(&self) -> Option<String> {
        let parts = |t: &TopologyRuns| {
            let run = t.run(EDGE_MISS, "walk")?;
            let timing = run.server_timing_ms.get("MISS")?;
            let client = run.tier_latency_us.get("MISS")?.mean / 1000.0;
            let get = |name: &str| timing.get(name).copied().unwrap_or(0.0);
            let (origin_redis, origin_db) = (get("origin-redis"), *timing.get("origin-db")?);
            let edge_tiers = get("l1") + get("shared") + get("l2") + get("origin");
            let no_cache = t.run(NO_CACHE, "zipf").map(|r| r.latency_us.mean / 1000.0);
            Some([
                Some(client),
                Some(get("l2")),
                Some(get("origin")),
                Some(origin_redis),
                Some(origin_db),
                Some(get("origin") - origin_redis - origin_db),
                Some(client - edge_tiers),
                no_cache,
                no_cache.map(|n| client - n),
            ])
        };
        if self.topologies.iter().all(|t| parts(t).is_none()) {
            return None;
        }
        let header = [
            "topology",
            "edge→origin round trip ms",
            "miss, client's wait",
            "edge: Redis miss",
            "edge: origin request",
            "origin: Redis",
            "origin: lease + PostgreSQL",
            "origin request − origin's work",
            "client's wait − edge tiers",
            "no cache (Zipf)",
            "miss − no cache",
        ];
        let rows = self.topologies.iter().filter_map(|t| {
            let cells = parts(t)?;
            let round_trip = 2.0
                * t.delays_ms
                    .get(Hop::EdgeOrigin.name())
                    .copied()
                    .unwrap_or(0.0);
            let mut row = vec![t.name.clone(), format!("{round_trip}")];
            row.extend(cells.map(|c| c.map_or("–".into(), |ms| format!("{ms:.2}"))));
            Some(row)
        });
        Some(md_table(&header, |i| i > 0, rows))
    }

    /// A miss through the edge against its two baselines, per topology, p50 / p99 in ms: no cache
    /// (the client calls the cache-off origin across client→edge and edge→origin), hello-origin (the
    /// same call through a Spin component that only forwards it: Spin's HTTP server and client, and
    /// the hop through it), and the edge's miss (the walk on an emptied Redis); then the differences
    /// at p50: what Spin and the extra hop add to no cache, and what the edge adds to that. `None`
    /// when no topology ran [`HELLO_ORIGIN`].
    pub fn miss_baselines_table(&self) -> Option<String> {
        let whole = |t: &TopologyRuns, scenario, keys| {
            t.run(scenario, keys)
                .filter(|r| r.requests > 0)
                .map(|r| TierLatency::from(&r.latency_us))
        };
        let miss = |t: &TopologyRuns| {
            t.run(EDGE_MISS, "walk")
                .and_then(|r| r.tier_latency_us.get("MISS"))
                .map(TierLatency::from)
        };
        if self
            .topologies
            .iter()
            .all(|t| whole(t, HELLO_ORIGIN, "walk").is_none())
        {
            return None;
        }
        let cell = |t: Option<TierLatency>| {
            t.map_or("–".into(), |t| {
                format!("{} / {}", ms(t.p50_us), ms(t.p99_us))
            })
        };
        let gap = |a: Option<TierLatency>, b: Option<TierLatency>| match (a, b) {
            (Some(a), Some(b)) => format!("{:+.2}", (a.p50_us as f64 - b.p50_us as f64) / 1000.0),
            _ => "–".into(),
        };
        let header = [
            "topology",
            "edge→Redis / edge→origin round trip ms",
            "no cache (uniform)",
            "hello-origin",
            "miss via the edge",
            "hello-origin − no cache, p50",
            "miss − hello-origin, p50",
            "miss − no cache, p50",
        ];
        let rows = self.topologies.iter().map(|t| {
            let round_trip = |hop: Hop| 2.0 * t.delays_ms.get(hop.name()).copied().unwrap_or(0.0);
            let (none, hello, miss) = (
                whole(t, NO_CACHE, "uniform"),
                whole(t, HELLO_ORIGIN, "walk"),
                miss(t),
            );
            vec![
                t.name.clone(),
                format!(
                    "{} / {}",
                    round_trip(Hop::EdgeRedis),
                    round_trip(Hop::EdgeOrigin)
                ),
                cell(none),
                cell(hello),
                cell(miss),
                gap(hello, none),
                gap(miss, hello),
                gap(miss, none),
            ]
        });
        Some(md_table(&header, |i| i > 0, rows))
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(out, "# aside benchmark by topology\n");
        let _ = writeln!(
            out,
            "{} profiles, {} connections, {} s warm-up + {} s per run, Zipf s = {}; {} build; edge under {} ({}); {} s in all. Latency in ms, p50 / p99.\n",
            s.rows,
            s.concurrency,
            s.warmup_s,
            s.duration_s,
            s.zipf_s,
            s.build,
            self.edge_runtime.runtimes.join(" and "),
            self.edge_runtime.why,
            self.total_s.round()
        );
        out.push_str(&s.overrides_markdown());
        out.push_str(&self.markdown_table());
        if let Some(table) = self.l2_by_connections_table() {
            let _ = writeln!(
                out,
                "\nL2 hits (Zipf) from one connection and from every connection, p50 / p99 in ms:\n"
            );
            out.push_str(&table);
        }
        if let Some(table) = self.miss_baselines_table() {
            let _ = writeln!(
                out,
                "\nA miss through the edge against no cache and against hello-origin (a Spin component \
                 that only forwards the read to the same cache-off origin), p50 / p99 in ms:\n"
            );
            out.push_str(&table);
        }
        if let Some(table) = self.miss_breakdown_table() {
            let _ = writeln!(
                out,
                "\nWhere a miss through the edge spends its time (means in ms, from `server-timing`):\n"
            );
            out.push_str(&table);
        }
        let _ = writeln!(out, "\n## Topologies\n");
        for t in &self.topologies {
            let delays: Vec<String> = t
                .delays_ms
                .iter()
                .map(|(hop, ms)| format!("{hop} {ms} ms"))
                .collect();
            let _ = writeln!(
                out,
                "* **{}**: {}. One way: {}.",
                t.name,
                t.models,
                delays.join(", ")
            );
        }
        let _ = writeln!(out, "\n## Runs\n");
        for t in &self.topologies {
            for r in &t.runs {
                let _ = writeln!(
                    out,
                    "* {} / {}: {:.0} req/s, p50 {} ms, p99 {} ms, errors {}, {}{}",
                    t.name,
                    r.label(),
                    r.result.rps,
                    ms(r.result.latency_us.p50),
                    ms(r.result.latency_us.p99),
                    r.result.errors,
                    crate::report::hits(&r.result),
                    r.check_failed
                        .as_deref()
                        .map(|w| format!(" (did not measure what it claims: {w})"))
                        .unwrap_or_default()
                );
            }
        }
        let _ = writeln!(
            out,
            "\n![p50 and p99 per tier and topology](topology.svg)\n"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_by_name_list_or_all() {
        let names = |t: Topologies| t.0.iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(parse("edge").unwrap()), ["edge"]);
        assert_eq!(
            names(parse("far-redis, loopback,far-redis").unwrap()),
            ["far-redis", "loopback"]
        );
        assert_eq!(
            names(parse("all").unwrap()),
            ["loopback", "same-dc", "edge", "far-redis"]
        );
        let edge = parse("edge").unwrap().0[0];
        assert_eq!(edge.delay_ms(Hop::EdgeOrigin), 25.0);
        assert_eq!(edge.delay_ms(Hop::EdgeRedis), 1.0);
        assert_eq!(edge.delay_ms(Hop::OriginPostgres), 0.25);
        assert!(
            Hop::ALL
                .iter()
                .all(|h| parse("same-dc").unwrap().0[0].delay_ms(*h) == 0.25)
        );
    }

    /// A run of `scenario / keys` whose reads were answered by these tiers, each at `(p50, p99)` µs.
    fn run(scenario: &str, keys: &str, tiers: &[(&str, u64, (u64, u64))]) -> Run {
        let latency = |(p50, p99)| Latency {
            p50,
            p99,
            ..Default::default()
        };
        Run {
            scenario: scenario.into(),
            keys: keys.into(),
            target: "edge".into(),
            runtime: Some("spin".into()),
            description: String::new(),
            result: LoadResult {
                requests: 100,
                latency_us: latency((2000, 9000)),
                x_cache: tiers.iter().map(|(t, n, _)| (t.to_string(), *n)).collect(),
                tier_latency_us: tiers
                    .iter()
                    .map(|(t, _, l)| (t.to_string(), latency(*l)))
                    .collect(),
                ..Default::default()
            },
            check_failed: None,
        }
    }

    fn report(runs: Vec<Run>) -> TopologyReport {
        TopologyReport {
            started_at_unix: 0,
            machine: Machine::default(),
            settings: Settings::default(),
            edge_runtime: EdgeRuntimes::default(),
            total_s: 0.0,
            topologies: vec![TopologyRuns::new(&parse("edge").unwrap().0[0], runs)],
        }
    }

    #[test]
    fn the_shared_tier_is_a_tier_of_its_own_where_it_ran() {
        let plain = || {
            let mut no_cache = run(NO_CACHE, "zipf", &[("MISS", 100, (52_000, 60_000))]);
            no_cache.result.latency_us.p50 = 52_000;
            vec![
                run(
                    EDGE,
                    "zipf",
                    &[("L1", 25, (300, 900)), ("L2", 75, (2500, 4000))],
                ),
                no_cache,
            ]
        };
        let md = report(plain()).markdown_table();
        assert!(!md.contains("shared hit"), "{md}");
        assert!(
            md.contains("| edge | edge | zipf | 0.30 / 0.90 | 2.50 / 4.00 | – |"),
            "{md}"
        );

        let mut runs = plain();
        runs.push(run(
            EDGE_SHARED,
            "zipf",
            &[
                ("L1", 30, (300, 900)),
                ("SHARED", 45, (600, 1500)),
                ("L2", 25, (2500, 4000)),
            ],
        ));
        let r = report(runs);
        let t = &r.topologies[0];
        assert_eq!(t.edges(), [EDGE, EDGE_SHARED]);
        let tiers = t.tiers(EDGE_SHARED, "zipf");
        assert_eq!(
            tiers[SHARED_TIER],
            Some(TierLatency {
                p50_us: 600,
                p99_us: 1500
            })
        );
        // The no-cache reads are the same for both edges.
        assert_eq!(tiers[5], t.tiers(EDGE, "zipf")[5]);
        let md = r.markdown_table();
        assert!(md.contains("| L1 hit | shared hit | L2 hit |"), "{md}");
        assert!(
            md.contains("| edge | edge-shared | zipf | 0.30 / 0.90 | 0.60 / 1.50 | 2.50 / 4.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| edge | edge | zipf | 0.30 / 0.90 | – | 2.50 / 4.00 |"),
            "{md}"
        );
        assert!(
            md.contains("26.0× faster | SHARED 45.0% · L1 30.0% · L2 25.0% |"),
            "{md}"
        );
    }

    #[test]
    fn l2_hits_from_one_connection_sit_beside_those_from_every_connection() {
        let edge = run(
            EDGE,
            "zipf",
            &[("L2", 80, (4_000, 9_000)), ("L1", 20, (500, 900))],
        );
        let mut r = report(vec![edge.clone()]);
        assert_eq!(
            r.l2_by_connections_table(),
            None,
            "no 1-connection run, no table"
        );
        let one = run(EDGE_ONE, "zipf", &[("L2", 80, (2_600, 3_100))]);
        r = report(vec![edge, one]);
        r.settings.concurrency = 16;
        let md = r.l2_by_connections_table().unwrap();
        assert!(
            md.contains("| L2 hit, 1 connection | L2 hit, 16 connections |"),
            "{md}"
        );
        // `edge`: 1 ms one way to Redis, a 2 ms round trip.
        assert!(
            md.contains("| edge | 2 | 2.60 / 3.10 | 4.00 / 9.00 |"),
            "{md}"
        );
        assert!(r.markdown().contains(&md));
        // The extra run adds no line to the main table.
        assert!(!r.markdown_table().contains(EDGE_ONE));
    }

    #[test]
    fn a_miss_is_split_into_the_hops_its_timing_names() {
        let mut miss = run(EDGE_MISS, "walk", &[("MISS", 100, (60_000, 70_000))]);
        miss.result.tier_latency_us.get_mut("MISS").unwrap().mean = 60_000.0;
        let mut no_cache = run(NO_CACHE, "zipf", &[("MISS", 100, (52_000, 60_000))]);
        no_cache.result.latency_us.mean = 53_000.0;
        // Without the origin's timing (an older origin) there is nothing to split.
        assert!(
            report(vec![miss.clone(), no_cache.clone()])
                .miss_breakdown_table()
                .is_none()
        );
        miss.result.server_timing_ms.insert(
            "MISS".into(),
            [
                ("l1", 0.01),
                ("l2", 2.5),
                ("origin", 55.0),
                ("origin-redis", 0.75),
                ("origin-db", 2.25),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
        );
        let table = report(vec![miss, no_cache]).miss_breakdown_table().unwrap();
        // 55 − 0.75 − 2.25 = 52 for the origin request's network; 60 − 57.51 left to the edge.
        assert!(
            table.contains(
                "| edge | 50 | 60.00 | 2.50 | 55.00 | 0.75 | 2.25 | 52.00 | 2.49 | 53.00 | 7.00 |"
            ),
            "{table}"
        );
    }

    #[test]
    fn a_miss_sits_beside_no_cache_and_hello_origin() {
        let latency = |(p50, p99)| Latency {
            p50,
            p99,
            ..Default::default()
        };
        let miss = run(EDGE_MISS, "walk", &[("MISS", 100, (60_000, 70_000))]);
        let mut no_cache = run(NO_CACHE, "uniform", &[("MISS", 100, (52_000, 60_000))]);
        no_cache.result.latency_us = latency((52_000, 56_000));
        assert!(
            report(vec![miss.clone(), no_cache.clone()])
                .miss_baselines_table()
                .is_none(),
            "no hello-origin run, no table"
        );
        let mut hello = run(HELLO_ORIGIN, "walk", &[]);
        hello.result.latency_us = latency((55_500, 58_000));
        let r = report(vec![miss, no_cache, hello]);
        let table = r.miss_baselines_table().unwrap();
        // `edge`: 2 ms to Redis and 50 ms to the origin per round trip.
        assert!(
            table.contains(
                "| edge | 2 / 50 | 52.0 / 56.0 | 55.5 / 58.0 | 60.0 / 70.0 | +3.50 | +4.50 | +8.00 |"
            ),
            "{table}"
        );
        assert!(r.markdown().contains(&table));
        // hello-origin adds no line to the main table.
        assert!(!r.markdown_table().contains(HELLO_ORIGIN));
    }

    #[test]
    fn a_ratio_below_one_says_slower() {
        assert_eq!(speedup(11.3), "11.3× faster");
        assert_eq!(speedup(1.0), "1.0× faster");
        assert_eq!(speedup(0.5), "2.0× slower");
    }

    #[test]
    fn an_unknown_topology_is_a_clear_error() {
        for bad in ["mars", "edge,mars", "", "Edge"] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("unknown topology"), "{e}");
            assert!(
                e.contains("loopback, same-dc, edge, far-redis, or all"),
                "{e}"
            );
        }
    }
}
