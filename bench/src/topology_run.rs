//! `--topology`: the latency proxies, each topology's services and runs, and its report.

use std::process::Command;
use std::time::Instant;

use anyhow::bail;
use aside_bench::report::Machine;
use aside_bench::topology::{Hop, Topologies, Topology, TopologyReport, TopologyRuns};

use crate::catalogue::{Target, topology_plans};
use crate::config::Config;
use crate::run::{all_measured, collect_settings, run_scenarios};
use crate::runtime::Rt;
use crate::stack::{
    EDGE_START_TIMEOUT, Ports, Stack, edge_command, origin_command, seed, start_stack,
    wait_for_ports, warm,
};

/// A latency proxy of `--topology`: its service name, the hop whose delay it adds, its own port
/// (an index into [`Ports::proxies`]) and where it relays.
pub(crate) struct Proxy {
    pub(crate) name: &'static str,
    pub(crate) hop: Hop,
    pub(crate) port: u16,
    pub(crate) upstream: u16,
}

/// The proxies of a topology, by the step they start in: each step's upstreams are up before it.
pub(crate) struct Proxies {
    /// In front of Redis and PostgreSQL, for both origins.
    pub(crate) origin_side: [Proxy; 2],
    /// In front of Redis and the origin, for the edge; and the origin with its cache off as seen from
    /// the edge's place.
    pub(crate) edge_side: [Proxy; 3],
    /// In front of the edge, and of the previous proxy: the client's way to each.
    pub(crate) client_side: [Proxy; 2],
    /// With `--shared-tier on`: in front of the edge with the shared tier on.
    pub(crate) client_shared: Option<Proxy>,
    /// In front of the hello-redis component (which reads Redis through `edge_side`'s first proxy).
    pub(crate) client_hello_redis: Proxy,
    /// In front of the hello-origin component (which reaches the cache-off origin through
    /// `edge_side`'s last proxy).
    pub(crate) client_hello_origin: Proxy,
}

/// How many proxy ports a topology run needs (the one at [`SHARED_PROXY`] only with `--shared-tier on`).
pub(crate) const PROXY_COUNT: usize = 10;
const SHARED_PROXY: usize = 7;

impl Proxies {
    pub(crate) fn new(ports: &Ports, rt: Rt, shared_tier: bool) -> Self {
        let p = &ports.proxies;
        let proxy = |name, hop, i: usize, upstream| Proxy {
            name,
            hop,
            port: p[i],
            upstream,
        };
        Proxies {
            origin_side: [
                proxy("delay-origin-redis", Hop::OriginRedis, 0, ports.redis),
                proxy(
                    "delay-origin-postgres",
                    Hop::OriginPostgres,
                    1,
                    ports.postgres,
                ),
            ],
            edge_side: [
                proxy("delay-edge-redis", Hop::EdgeRedis, 2, ports.redis),
                proxy(
                    "delay-edge-origin",
                    Hop::EdgeOrigin,
                    3,
                    ports.port(Target::Origin),
                ),
                proxy(
                    "delay-no-cache-edge-origin",
                    Hop::EdgeOrigin,
                    4,
                    ports.port(Target::OriginCacheOff),
                ),
            ],
            client_side: [
                proxy(
                    "delay-client-edge",
                    Hop::ClientEdge,
                    5,
                    ports.port(Target::Edge(rt)),
                ),
                proxy("delay-no-cache-client-edge", Hop::ClientEdge, 6, p[4]),
            ],
            client_shared: shared_tier.then(|| {
                proxy(
                    "delay-client-edge-shared",
                    Hop::ClientEdge,
                    SHARED_PROXY,
                    ports.port(Target::EdgeShared(rt)),
                )
            }),
            client_hello_redis: proxy(
                "delay-client-hello-redis",
                Hop::ClientEdge,
                8,
                ports.port(Target::HelloRedis(rt)),
            ),
            client_hello_origin: proxy(
                "delay-client-hello-origin",
                Hop::ClientEdge,
                9,
                ports.port(Target::HelloOrigin(rt)),
            ),
        }
    }

    /// Where a client's requests for `target` go in the topology: through the client-side proxies.
    pub(crate) fn route(&self, target: Target) -> String {
        let [edge, no_cache] = &self.client_side;
        let port = match (target, &self.client_shared) {
            (Target::OriginCacheOff, _) => no_cache.port,
            (Target::EdgeShared(_), Some(shared)) => shared.port,
            (Target::HelloRedis(_), _) => self.client_hello_redis.port,
            (Target::HelloOrigin(_), _) => self.client_hello_origin.port,
            _ => edge.port,
        };
        format!("http://127.0.0.1:{port}")
    }
}

/// `--topology`: after Redis and PostgreSQL are up and seeded, per topology its proxies, the two
/// origins and the edge behind them, its runs, then all of them stopped; the report of every topology.
pub(crate) fn run_topologies(
    config: &Config,
    topologies: &Topologies,
    started: Instant,
    started_at_unix: u64,
) -> anyhow::Result<()> {
    let delay = config.bin.join("aside-delay");
    anyhow::ensure!(
        delay.exists(),
        "{} is missing; run the benchmark through `cargo xtask bench`, which builds it",
        delay.display()
    );
    let [rt] = config.runtimes.list[..] else {
        bail!("--topology runs the edge under one runtime: choose --edge-runtime spin or host");
    };
    anyhow::ensure!(
        !config.shared_tier || rt.has_key_value_store(),
        "--shared-tier on needs a runtime with a key-value store (Spin); the {} runtime has none",
        rt.name()
    );
    crate::stop_on_signal()?;
    let plans = topology_plans(rt, config.shared_tier);
    let mut stack = start_stack(config, topologies.0.len() * plans.len(), PROXY_COUNT)?;
    seed(config, &stack)?;
    let proxies = Proxies::new(&stack.ports, rt, config.shared_tier);
    let mut redis = None;
    let mut results = Vec::new();
    for topology in &topologies.0 {
        eprintln!(
            "aside-bench: topology {}: {}",
            topology.name, topology.models
        );
        let started = start_topology(config, &mut stack, topology, &proxies, rt)?;
        let redis = match &mut redis {
            Some(redis) => redis,
            None => redis.insert(warm(&stack)?),
        };
        let route = |_: &Ports, target| proxies.route(target);
        let measured = run_scenarios(
            config,
            &mut stack,
            redis,
            &plans,
            (&route, Some(topology.name)),
        )?;
        for name in started.iter().rev() {
            stack.services.stop(name);
        }
        results.push(TopologyRuns::new(topology, measured.runs));
    }
    drop(redis);
    drop(stack);

    let report = TopologyReport {
        started_at_unix,
        machine: Machine::detect(),
        settings: collect_settings(config),
        edge_runtime: config.runtimes.report(),
        total_s: started.elapsed().as_secs_f64(),
        topologies: results,
    };
    write_topology_report(config, &report)
}

/// `report-topology.{json,md}` and the charts written, the tables printed, and the check of every run.
fn write_topology_report(config: &Config, report: &TopologyReport) -> anyhow::Result<()> {
    let out = &config.out;
    std::fs::write(
        out.join("report-topology.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("report-topology.md"), report.markdown())?;
    aside_bench::charts::write_topology(out, &report.topologies)?;
    println!("{}", report.markdown_table());
    if let Some(table) = report.l2_by_connections_table() {
        println!("L2 hits (Zipf), 1 connection and every connection:\n{table}");
    }
    if let Some(table) = report.miss_baselines_table() {
        println!("A miss, its baselines (p50 / p99, ms):\n{table}");
    }
    if let Some(table) = report.miss_breakdown_table() {
        println!("Where a miss through the edge spends its time (means, ms):\n{table}");
    }
    println!(
        "report: {}  (and report-topology.json, topology.svg/png); {:.0} s in all",
        out.join("report-topology.md").display(),
        report.total_s
    );
    let failed: Vec<String> = report
        .topologies
        .iter()
        .flat_map(|t| {
            t.runs.iter().filter_map(move |r| {
                r.check_failed
                    .as_ref()
                    .map(|w| format!("{} / {}: {w}", t.name, r.label()))
            })
        })
        .collect();
    all_measured(failed)
}

/// Starts a topology's proxies, origins and edge, each step once its upstreams listen; returns the
/// services' names, in start order.
pub(crate) fn start_topology(
    config: &Config,
    stack: &mut Stack,
    topology: &Topology,
    proxies: &Proxies,
    rt: Rt,
) -> anyhow::Result<Vec<&'static str>> {
    let logs = &config.logs;
    let mut started = Vec::new();
    let mut start_proxies = |stack: &mut Stack, list: &[Proxy]| -> anyhow::Result<()> {
        for proxy in list {
            let mut command = Command::new(config.bin.join("aside-delay"));
            command
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", proxy.port))
                .arg("--upstream")
                .arg(format!("127.0.0.1:{}", proxy.upstream))
                .arg("--delay-ms")
                .arg(topology.delay_ms(proxy.hop).to_string());
            stack
                .services
                .spawn(proxy.name, command, logs, libc::SIGTERM)?;
            stack.services.wait_for_port(proxy.port, logs)?;
            started.push(proxy.name);
        }
        Ok(())
    };
    start_proxies(stack, &proxies.origin_side)?;
    let [redis, postgres] = &proxies.origin_side;
    for target in [Target::Origin, Target::OriginCacheOff] {
        let port = stack.ports.port(target);
        let origin = origin_command(config, stack, target, port, (redis.port, postgres.port));
        stack
            .services
            .spawn(target.service(), origin, logs, libc::SIGTERM)?;
        stack.services.wait_for_port(port, logs)?;
    }
    start_proxies(stack, &proxies.edge_side)?;
    let [redis, origin, no_cache_origin] = &proxies.edge_side;
    let upstreams = (redis.port, format!("http://127.0.0.1:{}", origin.port));
    // hello-origin forwards to the cache-off origin across the same edge→origin hop as no cache's reads.
    let no_cache_upstreams = (
        redis.port,
        format!("http://127.0.0.1:{}", no_cache_origin.port),
    );
    let mut names = vec![Target::Origin.service(), Target::OriginCacheOff.service()];
    let mut listening = Vec::new();
    let edges = [
        Some(Target::Edge(rt)),
        proxies
            .client_shared
            .as_ref()
            .map(|_| Target::EdgeShared(rt)),
        Some(Target::HelloRedis(rt)),
        Some(Target::HelloOrigin(rt)),
    ];
    for target in edges.into_iter().flatten() {
        let port = stack.ports.port(target);
        let upstreams = match target {
            Target::HelloOrigin(_) => &no_cache_upstreams,
            _ => &upstreams,
        };
        let edge = edge_command(config, stack, target, port, upstreams);
        stack
            .services
            .spawn(target.service(), edge, logs, libc::SIGTERM)?;
        listening.push((target.service(), port));
        names.push(target.service());
    }
    wait_for_ports(&mut stack.services, &listening, logs, EDGE_START_TIMEOUT)?;
    start_proxies(stack, &proxies.client_side)?;
    start_proxies(stack, proxies.client_shared.as_slice())?;
    start_proxies(stack, std::slice::from_ref(&proxies.client_hello_redis))?;
    start_proxies(stack, std::slice::from_ref(&proxies.client_hello_origin))?;
    names.extend(started);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Cache, Plan};
    use aside_bench::topology;

    #[test]
    fn topology_runs_add_the_shared_tier_only_when_asked() {
        let off = topology_plans(Rt::Spin, false);
        assert_eq!(off.len(), 9);
        // Two runs read from one connection (an L2 hit alone, and hello-redis's HGETALL alone), the
        // others from `--concurrency`.
        let single: Vec<(&str, Target)> = off
            .iter()
            .filter(|p| p.connections.is_some())
            .inspect(|p| assert_eq!(p.connections, Some(1)))
            .map(|p| (p.scenario, p.target))
            .collect();
        assert_eq!(
            single,
            [
                (topology::EDGE_ONE, Target::Edge(Rt::Spin)),
                (topology::HELLO_REDIS_ONE, Target::HelloRedis(Rt::Spin))
            ]
        );
        // hello-redis reaches Redis through the edge's proxy and is reached through its own.
        let ports = Ports::pick(&[Rt::Spin], PROXY_COUNT).unwrap();
        let proxies = Proxies::new(&ports, Rt::Spin, false);
        assert_eq!(
            proxies.route(Target::HelloRedis(Rt::Spin)),
            format!("http://127.0.0.1:{}", proxies.client_hello_redis.port)
        );
        assert_eq!(
            proxies.client_hello_redis.upstream,
            ports.port(Target::HelloRedis(Rt::Spin))
        );
        // hello-origin: one walk from every connection, reached through its own client-side proxy.
        let hello_origin: Vec<&Plan> = off
            .iter()
            .filter(|p| p.target == Target::HelloOrigin(Rt::Spin))
            .collect();
        assert_eq!(hello_origin.len(), 1);
        assert_eq!(hello_origin[0].scenario, topology::HELLO_ORIGIN);
        assert_eq!(hello_origin[0].connections, None);
        assert_eq!(
            proxies.route(Target::HelloOrigin(Rt::Spin)),
            format!("http://127.0.0.1:{}", proxies.client_hello_origin.port)
        );
        assert_eq!(
            proxies.client_hello_origin.upstream,
            ports.port(Target::HelloOrigin(Rt::Spin))
        );
        assert!(
            off.iter()
                .all(|p| !matches!(p.target, Target::EdgeShared(_)))
        );
        let on = topology_plans(Rt::Spin, true);
        assert_eq!(on.len(), 11);
        let shared: Vec<&Plan> = on
            .iter()
            .filter(|p| p.scenario == topology::EDGE_SHARED)
            .collect();
        assert_eq!(shared.len(), 2);
        assert!(
            shared
                .iter()
                .all(|p| p.target == Target::EdgeShared(Rt::Spin)
                    && p.cache == Cache::Full
                    && p.expect.0.contains(&"SHARED"))
        );
        // The edge's hits count SHARED too, in either case.
        let edge = off.iter().find(|p| p.scenario == topology::EDGE).unwrap();
        assert!(edge.expect.0.contains(&"SHARED"));
        // Each client-side proxy relays to its own target.
        let ports = Ports::pick(&[Rt::Spin], PROXY_COUNT).unwrap();
        let proxies = Proxies::new(&ports, Rt::Spin, true);
        let shared_url = proxies.route(Target::EdgeShared(Rt::Spin));
        assert_ne!(shared_url, proxies.route(Target::Edge(Rt::Spin)));
        assert_eq!(
            proxies.client_shared.as_ref().map(|p| p.upstream),
            Some(ports.port(Target::EdgeShared(Rt::Spin)))
        );
        assert!(
            Proxies::new(&ports, Rt::Spin, false)
                .client_shared
                .is_none()
        );
    }
}
