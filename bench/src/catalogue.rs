//! The scenario catalogue: what each run targets, with which keys, on which cache state, and what it must
//! measure (its `x-cache` classes).

use aside_bench::keys::KeyDist::{self, Uniform, Walk, Zipf};
use aside_bench::{report, topology};

use crate::runtime::Rt;

/// What the requests of a scenario go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// The edge with Spin's defaults (tier 1 on).
    Edge(Rt),
    /// A second edge with tier 1 off: every read asks Redis.
    EdgeL1Off(Rt),
    /// An edge with the shared tier on as well (Spin's key-value store `default`, in memory; only
    /// under a runtime with a key-value store).
    EdgeShared(Rt),
    /// The edge with client authentication off (every other edge has it on): what auth costs.
    EdgeAuthOff(Rt),
    /// The hello-world component (bench/hello): what the runtime itself allows.
    Hello(Rt),
    /// The hello-redis component (bench/hello-redis): one `HGETALL` through the runtime's Redis binding
    /// per request, nothing else: what an L2 hit costs before the edge adds anything.
    HelloRedis(Rt),
    /// The hello-origin component (bench/hello-origin): each GET forwarded to the origin through the
    /// runtime's outbound HTTP, nothing else: what a miss through the edge costs before the edge adds
    /// anything. Only in `--topology` runs, in front of the cache-off origin.
    HelloOrigin(Rt),
    /// The origin, directly, with its bearer token.
    Origin,
    /// An origin started with `ASIDE_CACHE=off`: every read is a PostgreSQL query.
    OriginCacheOff,
}

impl Target {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Target::Edge(_) => "edge",
            Target::EdgeL1Off(_) => "edge with tier 1 off",
            Target::EdgeShared(_) => "edge with the shared tier on",
            Target::EdgeAuthOff(_) => "edge with client authentication off",
            Target::Hello(_) => "hello-world component",
            Target::HelloRedis(_) => "hello-redis component",
            Target::HelloOrigin(_) => "hello-origin component",
            Target::Origin => "origin",
            Target::OriginCacheOff => "origin with ASIDE_CACHE=off",
        }
    }

    /// The runtime of an edge or hello-world target.
    pub(crate) fn runtime(self) -> Option<Rt> {
        match self {
            Target::Edge(rt)
            | Target::EdgeL1Off(rt)
            | Target::EdgeShared(rt)
            | Target::EdgeAuthOff(rt)
            | Target::Hello(rt)
            | Target::HelloRedis(rt)
            | Target::HelloOrigin(rt) => Some(rt),
            Target::Origin | Target::OriginCacheOff => None,
        }
    }

    /// The same target under `rt` (origins have no runtime).
    pub(crate) fn under(self, rt: Rt) -> Self {
        match self {
            Target::Edge(_) => Target::Edge(rt),
            Target::EdgeL1Off(_) => Target::EdgeL1Off(rt),
            Target::EdgeShared(_) => Target::EdgeShared(rt),
            Target::EdgeAuthOff(_) => Target::EdgeAuthOff(rt),
            Target::Hello(_) => Target::Hello(rt),
            Target::HelloRedis(_) => Target::HelloRedis(rt),
            Target::HelloOrigin(_) => Target::HelloOrigin(rt),
            origin => origin,
        }
    }

    /// Every edge and baseline target the bench stack serves under `rt` (the shared tier only where
    /// `rt` has a key-value store). Not hello-origin, which only a topology run starts.
    pub(crate) fn served_under(rt: Rt) -> impl Iterator<Item = Target> {
        [
            Target::Edge(rt),
            Target::EdgeL1Off(rt),
            Target::EdgeShared(rt),
            Target::EdgeAuthOff(rt),
            Target::Hello(rt),
            Target::HelloRedis(rt),
        ]
        .into_iter()
        .filter(move |t| runs_under(*t, rt))
    }

    /// The service's name (and its log file's).
    pub(crate) fn service(self) -> &'static str {
        match self {
            Target::Edge(Rt::Spin) => "edge-spin",
            Target::Edge(Rt::Host) => "edge-host",
            Target::EdgeL1Off(Rt::Spin) => "edge-l1-off-spin",
            Target::EdgeL1Off(Rt::Host) => "edge-l1-off-host",
            Target::EdgeShared(Rt::Spin) => "edge-shared-spin",
            Target::EdgeShared(Rt::Host) => "edge-shared-host",
            Target::EdgeAuthOff(Rt::Spin) => "edge-auth-off-spin",
            Target::EdgeAuthOff(Rt::Host) => "edge-auth-off-host",
            Target::Hello(Rt::Spin) => "hello-spin",
            Target::Hello(Rt::Host) => "hello-host",
            Target::HelloRedis(Rt::Spin) => "hello-redis-spin",
            Target::HelloRedis(Rt::Host) => "hello-redis-host",
            Target::HelloOrigin(Rt::Spin) => "hello-origin-spin",
            Target::HelloOrigin(Rt::Host) => "hello-origin-host",
            Target::Origin => "origin",
            Target::OriginCacheOff => "origin-cache-off",
        }
    }
}

/// Before a run: which cache state it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    /// Redis emptied just before (miss scenarios).
    Empty,
    /// Redis holding every profile.
    Full,
    /// Whatever Redis holds (the hello-world baseline never asks it).
    Any,
}

/// One scenario with one key choice.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) scenario: &'static str,
    pub(crate) keys: KeyDist,
    /// Uniform over the hot set instead of every id.
    pub(crate) hot: bool,
    pub(crate) target: Target,
    pub(crate) cache: Cache,
    pub(crate) write_percent: f64,
    /// Connections of the load generator, when not `--concurrency`.
    pub(crate) connections: Option<usize>,
    pub(crate) description: &'static str,
    /// The `x-cache` values at least `share` of the successful reads must have, or the run did not
    /// measure what it claims.
    pub(crate) expect: (&'static [&'static str], f64),
}

impl Plan {
    pub(crate) fn keys_label(&self) -> String {
        if self.hot {
            "uniform-hot".into()
        } else {
            self.keys.to_string()
        }
    }
}

/// The name `--only` knows issue 24's invalidation-feed scenarios by (bench/src/feed_bench.rs: their own
/// stack steps and report file).
pub(crate) const FEED: &str = "feed";
/// The name `--only` knows issue 29's overload scenario by (bench/src/overload_bench.rs: a spike on the
/// edge and on hello-world, its own report file).
pub(crate) const OVERLOAD: &str = "overload";
/// The name `--only` knows issue 26's scenario by (bench/src/cluster_bench.rs: the edge's L2 and the
/// origin's hit on a 3-primary Redis Cluster against the single node, its own report file).
pub(crate) const CLUSTER: &str = "cluster";
/// Scenario groups with a report of their own, beside the catalogue's.
pub(crate) const EXTRA_SCENARIOS: &[&str] = &[FEED, OVERLOAD, CLUSTER];

// The scenarios' descriptions (the report prints them).
const ORIGIN_MISS: &str = "every request for an id not asked before (a shuffled walk over all ids, \
    on an emptied Redis) straight to the origin: Redis miss, one PostgreSQL query, a compare-and-set \
    fill. Zipf or uniform choices would repeat ids and turn into hits, so misses use the walk only.";
const EDGE_MISS: &str = "the same walk of fresh ids through the edge: tier 1 and Redis miss, the \
    edge forwards to the origin, which queries PostgreSQL and fills Redis.";
const ORIGIN_HIT: &str = "reads straight to the origin (bearer token) with every profile in \
    Redis: one HGETALL per read; what a request costs when the edge is bypassed or its tiers miss.";
const EDGE_L2: &str = "reads through a second edge whose tier 1 is off (l1_max_entries = 0, \
    l1_ttl_ms = 0), every profile in Redis: each read is a Redis HGETALL from the component.";
const EDGE_L1: &str = "reads through the edge with Spin's defaults (tier 1 on, 2 s TTL, an instance \
    serves up to 128 requests, 16 at once): Zipf over all ids, and uniform over a hot set small \
    enough to be answered from tier 1 for most of an instance's life. Every profile is in Redis, \
    so what tier 1 misses is an L2 hit.";
const EDGE_SHARED: &str = "the same reads through an edge with the shared tier on as well \
    (shared_tier_store = default: Spin's key-value store, in memory, runtime-config.toml), which \
    every instance of the Spin process reads and which outlives an instance: what tier 1 misses is \
    a SHARED hit when another instance (or a retired one) read the id within l1_ttl_ms, else an L2 \
    hit. Only under a runtime with a key-value store (Spin).";
const POSTGRES_ONLY: &str = "reads to an origin started with ASIDE_CACHE=off: every read is a \
    PostgreSQL query (the origin's single-flight still merges concurrent reads of one id). The \
    baseline the cache is measured against.";
const HELLO: &str = "the hello-world component (bench/hello: a spin-sdk 6 component that answers \
    every request with a fixed body the size of a profile, no x-cache) under the same runtime, keys \
    and load as the edge: what the runtime itself allows, the baseline of every edge run.";
const HELLO_REDIS: &str = "the hello-redis component (bench/hello-redis: a spin-sdk 6 component \
    that answers GET /users/{id} with one HGETALL of the profile's key through the runtime's Redis \
    binding, on a connection of its own per command like the edge, and nothing else: no tiers, no \
    authentication, no parsing) under the same runtime, keys and load as edge-l2: what an L2 hit \
    costs before the edge adds anything.";
const AUTH_OFF: &str = "the edge-l1-hot reads (uniform over the hot set) through an edge with \
    client authentication off (auth = off, no token sent). Every other edge scenario runs with it \
    on, as users run it: a client token per connection (8 subjects, signed EdDSA by a local \
    issuer, the keys a static auth_jwks), verified once per token and process, then remembered.";
const MIX: &str = "95 % reads, 5 % writes (PATCH with a new department, a small valid change) \
    through the edge; writes are forwarded to the origin, committed in PostgreSQL and written \
    through to Redis, and change capture follows them.";
const TOPO_EDGE_MISS: &str = "a walk of fresh ids through the edge on an emptied Redis: every read \
    crosses client→edge, edge→Redis (a miss) and edge→origin, where the origin asks Redis and \
    PostgreSQL.";
const TOPO_EDGE: &str = "reads through the edge with Spin's defaults, every profile in Redis: tier 1 \
    answers what it holds, Redis (across edge→Redis) the rest.";
const TOPO_NO_CACHE: &str = "the same reads with no cache at all: the client calls an origin started \
    with ASIDE_CACHE=off across client→edge and edge→origin; every read is a PostgreSQL query.";
const TOPO_EDGE_SHARED: &str = "the same reads through an edge with the shared tier on as well \
    (Spin's key-value store, in memory): tier 1, then the shared tier, then Redis across \
    edge→Redis.";
const TOPO_EDGE_ONE: &str = "the edge's Zipf reads from one connection, one request at a time: an L2 \
    hit's cost with nothing else in flight, beside the same reads from every connection.";
const TOPO_HELLO_REDIS: &str = "the hello-redis component (one HGETALL through Spin's Redis binding, \
    nothing else) behind the same client→edge and edge→Redis hops, from every connection and from one: \
    what Spin and the network cost an L2 hit before the edge adds anything.";
const TOPO_HELLO_ORIGIN: &str = "the hello-origin component (each GET forwarded through Spin's \
    outbound HTTP to the origin with ASIDE_CACHE=off, nothing else: no Redis, no tiers, no client \
    authentication) behind the same client→edge and edge→origin hops as the edge, the walk's keys: \
    what Spin's HTTP server, its HTTP client and the extra hop cost a miss before the edge adds \
    anything.";

/// A catalogue row: `scenario` with `keys` against `target` on `cache`, no writes, `--concurrency`
/// connections; `expect` is the `x-cache` classes and the share of reads they must answer.
const fn row(
    scenario: &'static str,
    keys: KeyDist,
    target: Target,
    cache: Cache,
    description: &'static str,
    expect: (&'static [&'static str], f64),
) -> Plan {
    Plan {
        scenario,
        keys,
        hot: false,
        target,
        cache,
        write_percent: 0.0,
        connections: None,
        description,
        expect,
    }
}

impl Plan {
    /// Uniform over the hot set instead of every id.
    const fn hot(self) -> Self {
        Plan { hot: true, ..self }
    }

    /// `percent` of the requests are writes.
    const fn writes(self, percent: f64) -> Self {
        Plan {
            write_percent: percent,
            ..self
        }
    }

    /// From `n` connections whatever `--concurrency` says.
    const fn connections(self, n: usize) -> Self {
        Plan {
            connections: Some(n),
            ..self
        }
    }
}

const MISS: &[&str] = &["MISS"];
const HIT: &[&str] = &["HIT"];
const NONE: &[&str] = &["none"];
const L2: &[&str] = &["L2"];
/// An edge answer from any tier that is not the origin.
const EDGE_HIT: &[&str] = &["L1", "SHARED", "L2"];

/// The scenarios, in the order they run: the miss scenarios first (each on an emptied Redis), then
/// Redis is filled once and the rest run on it. An edge target's `Rt::Spin` stands for every runtime
/// of the run ([`plans`] puts each in).
const CATALOGUE: &[Plan] = &[
    row(
        "origin-miss",
        Walk,
        Target::Origin,
        Cache::Empty,
        ORIGIN_MISS,
        (MISS, 0.9),
    ),
    row(
        "edge-miss",
        Walk,
        Target::Edge(Rt::Spin),
        Cache::Empty,
        EDGE_MISS,
        (MISS, 0.9),
    ),
    row(
        "origin-hit",
        Zipf,
        Target::Origin,
        Cache::Full,
        ORIGIN_HIT,
        (HIT, 0.9),
    ),
    row(
        "origin-hit",
        Uniform,
        Target::Origin,
        Cache::Full,
        ORIGIN_HIT,
        (HIT, 0.9),
    ),
    row(
        report::HELLO,
        Uniform,
        Target::Hello(Rt::Spin),
        Cache::Any,
        HELLO,
        (NONE, 0.99),
    ),
    row(
        report::HELLO_REDIS,
        Zipf,
        Target::HelloRedis(Rt::Spin),
        Cache::Full,
        HELLO_REDIS,
        (NONE, 0.99),
    ),
    row(
        report::HELLO_REDIS,
        Uniform,
        Target::HelloRedis(Rt::Spin),
        Cache::Full,
        HELLO_REDIS,
        (NONE, 0.99),
    ),
    row(
        "edge-l2",
        Zipf,
        Target::EdgeL1Off(Rt::Spin),
        Cache::Full,
        EDGE_L2,
        (L2, 0.9),
    ),
    row(
        "edge-l2",
        Uniform,
        Target::EdgeL1Off(Rt::Spin),
        Cache::Full,
        EDGE_L2,
        (L2, 0.9),
    ),
    row(
        "edge-l1-hot",
        Zipf,
        Target::Edge(Rt::Spin),
        Cache::Full,
        EDGE_L1,
        (EDGE_HIT, 0.9),
    ),
    row(
        "edge-l1-hot",
        Uniform,
        Target::Edge(Rt::Spin),
        Cache::Full,
        EDGE_L1,
        (report::EDGE_TIERS, 0.5),
    )
    .hot(),
    row(
        report::EDGE_SHARED,
        Zipf,
        Target::EdgeShared(Rt::Spin),
        Cache::Full,
        EDGE_SHARED,
        (EDGE_HIT, 0.9),
    ),
    row(
        report::EDGE_SHARED,
        Uniform,
        Target::EdgeShared(Rt::Spin),
        Cache::Full,
        EDGE_SHARED,
        (report::EDGE_TIERS, 0.5),
    )
    .hot(),
    row(
        report::EDGE_AUTH_OFF,
        Uniform,
        Target::EdgeAuthOff(Rt::Spin),
        Cache::Full,
        AUTH_OFF,
        (report::EDGE_TIERS, 0.5),
    )
    .hot(),
    row(
        "postgres-only",
        Zipf,
        Target::OriginCacheOff,
        Cache::Full,
        POSTGRES_ONLY,
        (MISS, 0.9),
    ),
    row(
        "postgres-only",
        Uniform,
        Target::OriginCacheOff,
        Cache::Full,
        POSTGRES_ONLY,
        (MISS, 0.9),
    ),
    row(
        "mix-95-5",
        Zipf,
        Target::Edge(Rt::Spin),
        Cache::Full,
        MIX,
        (EDGE_HIT, 0.8),
    )
    .writes(5.0),
    row(
        "mix-95-5",
        Uniform,
        Target::Edge(Rt::Spin),
        Cache::Full,
        MIX,
        (EDGE_HIT, 0.8),
    )
    .writes(5.0),
];

/// Every run of the catalogue under `runtimes`, in order: an edge scenario (and the baselines) once per
/// runtime that can run it, the runs of one key choice next to each other.
pub(crate) fn plans(runtimes: &[Rt]) -> Vec<Plan> {
    CATALOGUE
        .iter()
        .flat_map(|plan| match plan.target.runtime() {
            None => vec![*plan],
            Some(_) => runtimes
                .iter()
                .filter(|rt| runs_under(plan.target, **rt))
                .map(|rt| Plan {
                    target: plan.target.under(*rt),
                    ..*plan
                })
                .collect(),
        })
        .collect()
}

/// Whether `target` (of any runtime) can run under `rt`: the shared tier needs a key-value store.
pub(crate) fn runs_under(target: Target, rt: Rt) -> bool {
    !matches!(target, Target::EdgeShared(_)) || rt.has_key_value_store()
}

/// The runs of one topology: misses through the origin (a walk on an emptied Redis), then the edge
/// with every profile in Redis (Zipf and uniform from every connection, Zipf from one), hello-redis
/// behind the same hops (from every connection and from one: Spin's share of an L2 hit; and, with
/// `shared_tier`, the edge with the shared tier on), then the same reads with no cache, and
/// hello-origin's walk in front of the cache-off origin (Spin's share of a miss).
pub(crate) fn topology_plans(rt: Rt, shared_tier: bool) -> Vec<Plan> {
    let edge = Target::Edge(rt);
    let shared = Target::EdgeShared(rt);
    let mut plans = vec![
        row(
            topology::EDGE_MISS,
            Walk,
            edge,
            Cache::Empty,
            TOPO_EDGE_MISS,
            (MISS, 0.9),
        ),
        row(
            topology::EDGE,
            Zipf,
            edge,
            Cache::Full,
            TOPO_EDGE,
            (EDGE_HIT, 0.9),
        ),
        row(
            topology::EDGE,
            Uniform,
            edge,
            Cache::Full,
            TOPO_EDGE,
            (EDGE_HIT, 0.9),
        ),
        row(
            topology::EDGE_ONE,
            Zipf,
            edge,
            Cache::Full,
            TOPO_EDGE_ONE,
            (EDGE_HIT, 0.9),
        )
        .connections(1),
    ];
    plans.extend([
        row(
            topology::HELLO_REDIS,
            Zipf,
            Target::HelloRedis(rt),
            Cache::Full,
            TOPO_HELLO_REDIS,
            (NONE, 0.99),
        ),
        row(
            topology::HELLO_REDIS_ONE,
            Zipf,
            Target::HelloRedis(rt),
            Cache::Full,
            TOPO_HELLO_REDIS,
            (NONE, 0.99),
        )
        .connections(1),
    ]);
    if shared_tier {
        plans.extend([Zipf, Uniform].map(|keys| {
            row(
                topology::EDGE_SHARED,
                keys,
                shared,
                Cache::Full,
                TOPO_EDGE_SHARED,
                (EDGE_HIT, 0.9),
            )
        }));
    }
    plans.extend([Zipf, Uniform].map(|keys| {
        row(
            topology::NO_CACHE,
            keys,
            Target::OriginCacheOff,
            Cache::Any,
            TOPO_NO_CACHE,
            (MISS, 0.9),
        )
    }));
    plans.push(row(
        topology::HELLO_ORIGIN,
        Walk,
        Target::HelloOrigin(rt),
        Cache::Any,
        TOPO_HELLO_ORIGIN,
        (NONE, 0.99),
    ));
    plans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::stack::Ports;

    #[test]
    fn every_edge_scenario_and_the_baseline_run_under_each_runtime() {
        let both = plans(&[Rt::Spin, Rt::Host]);
        for scenario in report::RUNTIME_SCENARIOS {
            for rt in [Rt::Spin, Rt::Host] {
                // The shared tier needs a key-value store: under the bundled host it is not run.
                let expected = !report::KEY_VALUE_SCENARIOS.contains(scenario) || rt == Rt::Spin;
                assert_eq!(
                    both.iter()
                        .any(|p| p.scenario == *scenario && p.target.runtime() == Some(rt)),
                    expected,
                    "{scenario} under {rt:?}"
                );
            }
        }
        // The shared tier's runs go to the edge with it on, and count SHARED as an edge answer.
        let shared: Vec<&Plan> = both
            .iter()
            .filter(|p| p.scenario == report::EDGE_SHARED)
            .collect();
        assert_eq!(shared.len(), 2);
        for p in &shared {
            assert_eq!(p.target, Target::EdgeShared(Rt::Spin));
            assert!(p.expect.0.contains(&"SHARED"), "{:?}", p.expect);
        }
        let skipped = Config::skipped_under(&[Rt::Spin, Rt::Host], &[]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].scenario.as_str(), skipped[0].runtime.as_str()),
            (report::EDGE_SHARED, "host")
        );
        assert!(Config::skipped_under(&[Rt::Spin], &[]).is_empty());
        assert!(Config::skipped_under(&[Rt::Host], &["edge-l2".into()]).is_empty());
        // The origin's scenarios run once, without a runtime.
        let origin_hit: Vec<&Plan> = both.iter().filter(|p| p.scenario == "origin-hit").collect();
        assert_eq!(origin_hit.len(), 2);
        assert!(origin_hit.iter().all(|p| p.target.runtime().is_none()));
        // One runtime: the plans of the single-runtime layout, each edge run under it (Spin also
        // runs the shared tier's two).
        let host = plans(&[Rt::Host]);
        assert_eq!(
            both.len() - host.len(),
            host.iter().filter(|p| p.target.runtime().is_some()).count() + shared.len()
        );
        assert!(host.iter().all(|p| p.target.runtime() != Some(Rt::Spin)));
        // The baseline needs no cache and reads no x-cache.
        let hello = host.iter().find(|p| p.scenario == report::HELLO).unwrap();
        assert_eq!((hello.cache, hello.expect.0), (Cache::Any, &["none"][..]));
        // Every target has its own port and service name (hello-origin too, which only a topology
        // run starts).
        let ports = Ports::pick(&[Rt::Spin, Rt::Host], 0).unwrap();
        let mut seen: Vec<u16> = ports.targets.iter().map(|(_, p)| *p).collect();
        seen.extend([ports.redis, ports.postgres]);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 15 + 2);
        let mut names: Vec<&str> = ports.targets.iter().map(|(t, _)| t.service()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 15);
        assert!(names.contains(&"hello-origin-spin"));
        assert!(
            Target::served_under(Rt::Spin).all(|t| !matches!(t, Target::HelloOrigin(_))),
            "the loopback stack does not start hello-origin"
        );
        assert!(!names.contains(&"edge-shared-host"));
    }
}
