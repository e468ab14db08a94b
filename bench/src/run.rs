//! Running the scenarios through `aside-load` and writing the report.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aside_bench::load::LoadResult;
use aside_bench::redis_admin::RedisAdmin;
use aside_bench::report::{self, Machine, Report, RoundTrip, Run, SCHEMA, Settings};
use indicatif::{ProgressBar, ProgressStyle};
use xtask::stack;

use crate::catalogue::{Cache, Plan, Target};
use crate::config::Config;
use crate::runtime::Rt;
use crate::stack::{Ports, Stack};
use crate::{STOP, check_stop};

/// Seed of the id order every `aside-load` run shares.
pub(crate) const KEY_SEED: u64 = 42;
/// Timed `HGETALL` round trips: the L2 goal is read against their p50.
const HGETALL_SAMPLES: usize = 1000;

/// What the scenarios measured.
pub(crate) struct Measured {
    pub(crate) runs: Vec<Run>,
    pub(crate) redis_hgetall: Option<RoundTrip>,
}

/// The URL a scenario's load goes to for a target.
pub(crate) type Route<'a> = dyn Fn(&Ports, Target) -> String + 'a;

/// Step 5: every plan in order, each on the cache state it needs; `route` gives the URL the load goes to
/// for a target, `topology` names the topology the plans run in.
pub(crate) fn run_scenarios(
    config: &Config,
    stack: &mut Stack,
    redis: &mut RedisAdmin,
    plans: &[Plan],
    (route, topology): (&Route, Option<&str>),
) -> anyhow::Result<Measured> {
    let bar = ProgressBar::new(((config.per_run() + 1.0) * plans.len() as f64 * 10.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut measured = Measured {
        runs: Vec::new(),
        redis_hgetall: None,
    };
    let mut filled = false;
    for plan in plans {
        check_stop()?;
        if let Some(name) = stack.services.first_exited() {
            bail!(
                "{name} exited during the benchmark; see {}/{name}.log",
                config.logs.display()
            );
        }
        match plan.cache {
            Cache::Empty => {
                redis.flush_all()?;
                filled = false;
            }
            Cache::Full if !filled => {
                fill_redis(config, stack, redis, &bar)?;
                filled = true;
                if measured.redis_hgetall.is_none() {
                    measured.redis_hgetall = Some(time_hgetall(redis, &bar)?);
                }
            }
            Cache::Full | Cache::Any => {}
        }
        let url = route(&stack.ports, plan.target);
        measured
            .runs
            .push(run_scenario(config, stack, plan, (url, topology), &bar)?);
        // Let the servers settle (background work of the previous run: fills, change capture).
        std::thread::sleep(Duration::from_millis(if config.quick { 200 } else { 1000 }));
    }
    bar.finish_and_clear();
    Ok(measured)
}

/// Reads every profile once through the origin, so that Redis holds them all.
pub(crate) fn fill_redis(
    config: &Config,
    stack: &Stack,
    redis: &mut RedisAdmin,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    bar.set_message("filling Redis with every profile");
    let fill = Instant::now();
    fill_through(config, stack, stack.ports.url(Target::Origin), "fill", bar)?;
    let keys = redis.db_size()?;
    anyhow::ensure!(
        keys >= config.rows,
        "Redis holds {keys} keys after the fill, expected {}",
        config.rows
    );
    bar.suspend(|| {
        eprintln!(
            "aside-bench: Redis filled with {keys} profiles in {:.1} s",
            fill.elapsed().as_secs_f64()
        )
    });
    Ok(())
}

/// Reads every profile once through the origin at `origin_url` (a walk over all ids), every answer a
/// success; `label` names the loader's log (`load-{label}.log`).
pub(crate) fn fill_through(
    config: &Config,
    stack: &Stack,
    origin_url: String,
    label: &str,
    bar: &ProgressBar,
) -> anyhow::Result<LoadResult> {
    let rows = config.rows.to_string();
    let args = loader_args(origin_url, Target::Origin, stack)
        .into_iter()
        .chain([
            "--keys".into(),
            "walk".into(),
            "--ids".into(),
            rows.clone(),
            "--requests".into(),
            rows,
            "--concurrency".into(),
            config.concurrency.to_string(),
        ])
        .collect::<Vec<_>>();
    let log = config.logs.join(format!("load-{label}.log"));
    let result = run_loader(&config.bin, &args, &log, None, bar)?;
    anyhow::ensure!(
        result.errors == 0,
        "{label}: reading every profile through the origin failed: {:?}",
        result.error_kinds
    );
    Ok(result)
}

/// What one L2 hit costs in Redis, to read the edge-l2 runs against.
pub(crate) fn time_hgetall(redis: &mut RedisAdmin, bar: &ProgressBar) -> anyhow::Result<RoundTrip> {
    let id = aside_shared::UserId::parse("1").expect("a valid id");
    let key = aside_shared::cache::profile_key(id);
    let rt = redis.time_hgetall(&key, HGETALL_SAMPLES)?;
    bar.suspend(|| {
        eprintln!(
            "aside-bench: one Redis round trip ({}, {} in a row): p50 {:.3} ms, p99 {:.3} ms",
            rt.command,
            rt.samples,
            rt.p50_us / 1000.0,
            rt.p99_us / 1000.0
        )
    });
    Ok(rt)
}

/// One scenario with one key choice through `aside-load`, its line printed. The requests go to `url`
/// (the target's own port, or the proxy in front of it), `topology` names the topology it runs in.
pub(crate) fn run_scenario(
    config: &Config,
    stack: &Stack,
    plan: &Plan,
    (url, topology): (String, Option<&str>),
    bar: &ProgressBar,
) -> anyhow::Result<Run> {
    let label = plan.keys_label();
    let runtime = plan.target.runtime().map(Rt::name);
    let scenario = match topology {
        Some(t) => format!("{t}/{}", plan.scenario),
        None => plan.scenario.to_string(),
    };
    bar.set_message(format!(
        "{scenario} / {label}{}",
        runtime.map(|r| format!(" / {r}")).unwrap_or_default()
    ));
    let mut args = loader_args(url, plan.target, stack);
    args.extend(
        [
            "--keys",
            &plan.keys.to_string(),
            "--ids",
            &config.rows.to_string(),
            "--zipf-s",
            &config.zipf_s.to_string(),
            "--concurrency",
            &plan.connections.unwrap_or(config.concurrency).to_string(),
            "--warmup",
            &format!("{}s", config.warmup),
            "--duration",
            &format!("{}s", config.duration),
            "--write-percent",
            &plan.write_percent.to_string(),
        ]
        .map(String::from),
    );
    if plan.hot {
        args.extend(["--hot".to_string(), config.hot_set.to_string()]);
    }
    let log = config.logs.join(format!(
        "load-{}-{label}{}.log",
        scenario.replace('/', "-"),
        runtime.map(|r| format!("-{r}")).unwrap_or_default()
    ));
    let result = run_loader(&config.bin, &args, &log, Some(config.per_run()), bar)?;
    let check_failed = check(plan, &result);
    bar.suspend(|| {
        eprintln!(
            "{:<14} {:<12} {:<5} {:>9.0} req/s  p50 {:>6} ms  p99 {:>6} ms  errors {:<4} {}{}",
            scenario,
            label,
            runtime.unwrap_or("-"),
            result.rps,
            report::ms(result.latency_us.p50),
            report::ms(result.latency_us.p99),
            result.errors,
            report::hits(&result),
            check_failed
                .as_deref()
                .map(|w| format!("  <- {w}"))
                .unwrap_or_default()
        )
    });
    Ok(Run {
        scenario: plan.scenario.to_string(),
        keys: label,
        target: plan.target.describe().to_string(),
        runtime: runtime.map(String::from),
        description: plan.description.to_string(),
        result,
        check_failed,
    })
}

/// Step 6: the report of the whole run.
pub(crate) fn collect(
    config: &Config,
    measured: Measured,
    setup_s: f64,
    started: Instant,
    started_at_unix: u64,
) -> Report {
    let mut report = Report {
        schema: SCHEMA,
        started_at_unix,
        machine: Machine::detect(),
        settings: collect_settings(config),
        setup_s,
        total_s: started.elapsed().as_secs_f64(),
        edge_runtime: config.runtimes.report(),
        redis_hgetall: measured.redis_hgetall,
        runs: measured.runs,
        skipped: Vec::new(),
        comparison: Default::default(),
    };
    report.finish();
    report
}

/// The settings of the run, as the report gives them.
pub(crate) fn collect_settings(config: &Config) -> Settings {
    Settings {
        mode: if config.quick { "quick" } else { "full" }.into(),
        build: config.build.clone(),
        rows: config.rows,
        concurrency: config.concurrency,
        warmup_s: config.warmup,
        duration_s: config.duration,
        zipf_s: config.zipf_s,
        hot_set: config.hot_set,
        edge_instance_reuse: "Spin's defaults: 128 requests per instance, 16 at once, 1 s idle"
            .into(),
        edge_vars: config
            .edge_vars
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect(),
        spin_nodelay: config.nodelay_shim.is_some(),
    }
}

/// Step 7: `report.json`, `report.md` and the charts written, the tables printed, and the check: of
/// the whole report, or with `--only` of each run that was made.
pub(crate) fn write_report(config: &Config, report: &Report) -> anyhow::Result<()> {
    let out = &config.out;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("report.md"), report.markdown())?;
    aside_bench::charts::write_all(out, &report.runs)?;
    println!("{}", report.table());
    println!("{}", report.comparison_markdown());
    println!(
        "report: {}  (and report.json, latency.svg/png, throughput.svg/png); {:.0} s in all",
        out.join("report.md").display(),
        report.total_s
    );
    if config.only.is_empty() {
        report::verify(report)
    } else {
        let failed: Vec<String> = report
            .runs
            .iter()
            .filter_map(|r| {
                r.check_failed
                    .as_ref()
                    .map(|w| format!("{} / {}: {w}", r.scenario, r.keys))
            })
            .collect();
        all_measured(failed)
    }
}

/// An error listing the runs that did not measure what they claim, if any.
pub(crate) fn all_measured(failed: Vec<String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        failed.is_empty(),
        "runs that did not measure what they claim:\n  {}",
        failed.join("\n  ")
    );
    Ok(())
}

/// The target and credentials part of an `aside-load` command line.
pub(crate) fn loader_args(url: String, target: Target, stack: &Stack) -> Vec<String> {
    let mut args = vec!["--url".to_string(), url];
    let bearer = match target {
        Target::Origin | Target::OriginCacheOff => Some(&stack.token_file),
        // A client token per connection, as users run the edge.
        Target::Edge(_) | Target::EdgeL1Off(_) | Target::EdgeShared(_) => {
            Some(&stack.client_auth.tokens_file)
        }
        // hello-origin sends the origin's token itself.
        Target::EdgeAuthOff(_)
        | Target::Hello(_)
        | Target::HelloRedis(_)
        | Target::HelloOrigin(_) => None,
    };
    if let Some(file) = bearer {
        args.extend(["--bearer-file".to_string(), file.display().to_string()]);
    }
    args.extend(["--seed".to_string(), KEY_SEED.to_string()]);
    args
}

/// Why a run did not measure what its scenario claims, if it did not.
pub(crate) fn check(plan: &Plan, result: &LoadResult) -> Option<String> {
    if result.requests == 0 {
        return Some("no requests were answered".into());
    }
    let attempts = result.requests
        + result
            .error_kinds
            .iter()
            .filter(|(k, _)| !k.starts_with("status_"))
            .map(|(_, v)| v)
            .sum::<u64>();
    if result.errors as f64 > attempts as f64 * 0.01 {
        return Some(format!(
            "{} errors in {attempts} requests: {:?}",
            result.errors, result.error_kinds
        ));
    }
    let (tiers, at_least) = plan.expect;
    let share = report::share_of(result, tiers);
    if share < at_least {
        return Some(format!(
            "{} answered {:.0}% of reads, expected at least {:.0}%",
            tiers.join("+"),
            share * 100.0,
            at_least * 100.0
        ));
    }
    if plan.write_percent > 0.0 && result.writes == 0 {
        return Some("no writes were made".into());
    }
    None
}

/// Runs `aside-load` to completion (its stderr to `log`), advancing the progress bar by the time it
/// takes; Ctrl-C stops it.
pub(crate) fn run_loader(
    bin: &Path,
    args: &[String],
    log: &Path,
    planned_secs: Option<f64>,
    bar: &ProgressBar,
) -> anyhow::Result<LoadResult> {
    let mut command = Command::new(bin.join("aside-load"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log)?));
    stack::detach(&mut command);
    let mut child = command.spawn().context("start aside-load")?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let start_pos = bar.position();
    // A timed run that takes far longer than planned is stuck; a fill has a generous bound.
    let limit = Duration::from_secs_f64(planned_secs.map_or(1800.0, |s| s * 3.0 + 60.0));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if STOP.load(Ordering::SeqCst) || started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            check_stop()?;
            bail!(
                "aside-load did not finish within {limit:?}; see {}",
                log.display()
            );
        }
        if let Some(planned) = planned_secs {
            let done = started.elapsed().as_secs_f64().min(planned);
            bar.set_position(start_pos + (done * 10.0) as u64);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(planned) = planned_secs {
        bar.set_position(start_pos + ((planned + 1.0) * 10.0) as u64);
    }
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading aside-load's output failed"))??;
    anyhow::ensure!(
        status.success(),
        "aside-load failed ({status}); see {}",
        log.display()
    );
    serde_json::from_str(text.trim())
        .with_context(|| format!("aside-load printed something else than its result: {text:?}"))
}

/// Writes a scenario group's report beside the main one: `<out>/<file>` (JSON) and the same name with
/// `.md`, whose text is also printed.
pub(crate) fn write_beside<T: serde::Serialize>(
    config: &Config,
    file: &str,
    report: &T,
    markdown: &str,
) -> anyhow::Result<()> {
    let path = config.out.join(file);
    std::fs::write(&path, serde_json::to_string_pretty(report)?)?;
    std::fs::write(path.with_extension("md"), markdown)?;
    println!("{markdown}");
    Ok(())
}

/// The report `file` beside `main` (`report.json`), read as a `what` report: its path and contents.
pub(crate) fn read_beside<T: serde::de::DeserializeOwned>(
    main: &Path,
    file: &str,
    what: &str,
) -> anyhow::Result<(std::path::PathBuf, T)> {
    let path = main.with_file_name(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no {what} report at {}", path.display()))?;
    let report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a report of the {what} scenarios", path.display()))?;
    Ok((path, report))
}

/// `aside-load` arguments for Zipf reads over every id from `connections` connections for `seconds`,
/// no warm-up of its own.
pub(crate) fn zipf_reads(config: &Config, connections: usize, seconds: f64) -> Vec<String> {
    [
        "--keys",
        "zipf",
        "--ids",
        &config.rows.to_string(),
        "--zipf-s",
        &config.zipf_s.to_string(),
        "--concurrency",
        &connections.to_string(),
        "--warmup",
        "0s",
        "--duration",
        &format!("{seconds}s"),
    ]
    .map(String::from)
    .to_vec()
}
