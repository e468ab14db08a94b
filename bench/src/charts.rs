//! The report's charts, each as SVG and PNG: the latency distribution of every run (latency against
//! percentile, "nines" on the x axis, as HDR histogram plots show it), the throughput of every run, and
//! with `--topology` the p50 and p99 of each tier in each topology.
//!
//! PNG text is drawn with DejaVu Sans compiled into the binary (plotters' `ab_glyph` font backend), so
//! charts render the same on a machine without fonts or fontconfig.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Run, SCENARIOS};
use crate::topology::{TIERS, TierLatency, TopologyRuns};

const SIZE: (u32, u32) = (1100, 650);

/// Writes `latency.{svg,png}` and `throughput.{svg,png}` into `dir`; returns their paths.
pub fn write_all(dir: &Path, runs: &[Run]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for name in ["latency", "throughput"] {
        written.extend(write_svg_png(
            dir,
            name,
            SIZE,
            |root| draw(name, root, runs),
            |root| draw(name, root, runs),
        )?);
    }
    Ok(written)
}

/// Writes `topology.{svg,png}` (p50 and p99 of each tier, Zipf keys, per topology) into `dir`.
pub fn write_topology(dir: &Path, topologies: &[TopologyRuns]) -> anyhow::Result<Vec<PathBuf>> {
    let rows = topology_rows(topologies);
    let size = (SIZE.0, (120 + 34 * rows.len() as u32).max(300));
    write_svg_png(
        dir,
        "topology",
        size,
        |root| topology(root, &rows),
        |root| topology(root, &rows),
    )
}

/// `<dir>/<name>.svg` and `.png`, each drawn by its function (one per backend type).
fn write_svg_png(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    svg_draw: impl Fn(&DrawingArea<SVGBackend, Shift>) -> anyhow::Result<()>,
    png_draw: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        svg_draw(&root)?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{name}.svg: {e}"))?;
    }
    let png = dir.join(format!("{name}.png"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        png_draw(&root)?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{name}.png: {e}"))?;
    }
    Ok(vec![svg, png])
}

fn draw<DB: DrawingBackend>(
    name: &str,
    root: &DrawingArea<DB, Shift>,
    runs: &[Run],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    match name {
        "latency" => latency(root, runs),
        _ => throughput(root, runs),
    }
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded face is a valid TrueType font; failing here would be a build problem.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The charts' colours (matplotlib's "tab10").
const COLOURS: [RGBColor; 9] = [
    RGBColor(127, 127, 127),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
];

/// One colour per scenario, the same in every chart; runs under the bundled host in a lighter shade of
/// it than runs under Spin (or the origin).
fn colour(run: &Run) -> RGBColor {
    let i = SCENARIOS
        .iter()
        .position(|s| *s == run.scenario)
        .unwrap_or(0);
    let RGBColor(r, g, b) = COLOURS[i % COLOURS.len()];
    if run.runtime.as_deref() == Some("host") {
        let lighter = |c: u8| c + (255 - c) / 2;
        RGBColor(lighter(r), lighter(g), lighter(b))
    } else {
        RGBColor(r, g, b)
    }
}

/// `scenario / keys`, and `/ runtime` for the edge runs.
fn label(run: &Run) -> String {
    run.label()
}

/// "Nines" of a quantile: 0.9 → 1, 0.99 → 2, 0.999 → 3 (capped at 5 for the maximum).
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        5.0
    } else {
        (-(1.0 - q).log10()).min(5.0)
    }
}

fn percentile_label(x: f64) -> String {
    match x.round() as i64 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        3 => "99.9%".into(),
        4 => "99.99%".into(),
        _ => "max".into(),
    }
}

fn latency<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[Run]) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("latency chart: {e}");
    root.fill(&WHITE).map_err(err)?;
    let values = runs
        .iter()
        .flat_map(|r| r.result.spectrum.iter().map(|(_, us)| *us as f64 / 1000.0));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi <= 0.0 {
        (0.01, 1.0)
    } else {
        ((lo * 0.8).max(0.005), hi * 1.25)
    };
    let mut chart = ChartBuilder::on(root)
        .caption("Latency by percentile (ms, log scale)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5f64, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| crate::report::ms((*y * 1000.0) as u64))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    for run in runs {
        let colour = colour(run);
        let points: Vec<(f64, f64)> = run
            .result
            .spectrum
            .iter()
            .map(|(q, us)| (nines(*q), (*us as f64 / 1000.0).max(lo)))
            .collect();
        let secondary = run.keys == "uniform" || run.keys == "uniform-hot";
        let style = ShapeStyle::from(&colour).stroke_width(if secondary { 1 } else { 2 });
        let series = LineSeries::new(points, style).point_size(if secondary { 2 } else { 0 });
        chart
            .draw_series(series)
            .map_err(err)?
            .label(label(run))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn throughput<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[Run]) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("throughput chart: {e}");
    root.fill(&WHITE).map_err(err)?;
    let n = runs.len().max(1);
    let max = runs.iter().map(|r| r.result.rps).fold(1.0f64, f64::max);
    // Segment 0 is at the bottom: list the runs from the top in report order.
    let slot = |i: usize| n - 1 - i;
    let labels: Vec<String> = runs.iter().rev().map(label).collect();
    let mut chart = ChartBuilder::on(root)
        .caption("Throughput (requests/s)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(290)
        .build_cartesian_2d(0f64..max * 1.18, (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| segment_label(&labels, v))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("requests/s")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(runs.iter().enumerate().map(|(i, run)| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(slot(i))),
                    (run.result.rps, SegmentValue::Exact(slot(i) + 1)),
                ],
                colour(run).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(runs.iter().enumerate().map(|(i, run)| {
            Text::new(
                format!("  {:.0}", run.result.rps),
                (run.result.rps, SegmentValue::CenterOf(slot(i))),
                TextStyle::from(("sans-serif", 14).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(err)?;
    Ok(())
}

/// The label of a horizontal bar chart's row.
fn segment_label(labels: &[String], v: &SegmentValue<usize>) -> String {
    match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            labels.get(*i).cloned().unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    }
}

/// One bar of the topology chart: `topology / tier`, its tier's index, and its latency.
type TopologyRow = (String, usize, TierLatency);

/// The measured tiers of every topology's edge runs (Zipf keys), top to bottom; the edge with the
/// shared tier on (when it ran) adds its tier-1, shared and Redis hits and all its reads.
fn topology_rows(topologies: &[TopologyRuns]) -> Vec<TopologyRow> {
    topologies
        .iter()
        .flat_map(|t| {
            t.edges()
                .into_iter()
                .enumerate()
                .flat_map(move |(n, edge)| {
                    let shared_edge = n > 0;
                    t.tiers(edge, "zipf")
                        .into_iter()
                        .enumerate()
                        .filter(move |(i, _)| {
                            !shared_edge || !TOPOLOGY_SHARED_SKIP.contains(&TIERS[*i])
                        })
                        .filter_map(move |(i, l)| {
                            let label = if shared_edge {
                                format!("{} / {edge} / {}", t.name, TIERS[i])
                            } else {
                                format!("{} / {}", t.name, TIERS[i])
                            };
                            l.map(|l| (label, i, l))
                        })
                })
        })
        .collect()
}

/// The bars the edge with the shared tier on leaves out: the same as the plain edge's.
const TOPOLOGY_SHARED_SKIP: [&str; 2] = ["miss via origin", "no cache"];

/// Horizontal bars on a log scale: p99 light, p50 solid over it, one colour per tier.
fn topology<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[TopologyRow],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    // L1 green, shared brown, L2 blue, miss orange, all reads purple, no cache red.
    const TIER_COLOURS: [usize; 6] = [3, 6, 1, 2, 5, 4];
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("topology chart: {e}");
    root.fill(&WHITE).map_err(err)?;
    let n = rows.len().max(1);
    let ms = |us: u64| (us as f64 / 1000.0).max(0.01);
    let hi = rows.iter().map(|r| ms(r.2.p99_us)).fold(1.0f64, f64::max) * 3.0;
    let lo = rows.iter().map(|r| ms(r.2.p50_us)).fold(hi, f64::min) * 0.5;
    let slot = |i: usize| n - 1 - i;
    let labels: Vec<String> = rows.iter().rev().map(|r| r.0.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(
            "p50 (solid) and p99 (light) per tier and topology, Zipf keys (ms, log scale)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(260)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| segment_label(&labels, v))
        .x_label_formatter(&|x| crate::report::ms((*x * 1000.0) as u64))
        .x_desc("latency (ms)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (light, value) in [
        (
            true,
            (|l: &TierLatency| l.p99_us) as fn(&TierLatency) -> u64,
        ),
        (false, |l: &TierLatency| l.p50_us),
    ] {
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, tier, l))| {
                let colour = COLOURS[TIER_COLOURS[*tier % TIER_COLOURS.len()]];
                let style = if light {
                    colour.mix(0.35).filled()
                } else {
                    colour.filled()
                };
                let mut bar = Rectangle::new(
                    [
                        (lo, SegmentValue::Exact(slot(i))),
                        (ms(value(l)), SegmentValue::Exact(slot(i) + 1)),
                    ],
                    style,
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(err)?;
    }
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, _, l))| {
            Text::new(
                format!(
                    "  {} / {}",
                    crate::report::ms(l.p50_us),
                    crate::report::ms(l.p99_us)
                ),
                (ms(l.p99_us), SegmentValue::CenterOf(slot(i))),
                TextStyle::from(("sans-serif", 14).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadResult, SPECTRUM};

    fn run(scenario: &str, keys: &str, base_us: u64, rps: f64) -> Run {
        Run {
            scenario: scenario.into(),
            keys: keys.into(),
            target: "edge".into(),
            runtime: None,
            description: String::new(),
            result: LoadResult {
                requests: 100,
                rps,
                spectrum: SPECTRUM
                    .iter()
                    .map(|q| (*q, base_us + (nines(*q) * base_us as f64) as u64))
                    .collect(),
                ..Default::default()
            },
            check_failed: None,
        }
    }

    #[test]
    fn charts_render_as_svg_and_png_with_text() {
        let dir = std::env::temp_dir().join(format!("aside-bench-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut runs = vec![
            run("edge-l1-hot", "zipf", 300, 9000.0),
            run("edge-l2", "uniform", 700, 5000.0),
            run("edge-l2", "uniform", 900, 4000.0),
            run("postgres-only", "zipf", 2500, 1200.0),
        ];
        runs[0].runtime = Some("spin".into());
        runs[1].runtime = Some("spin".into());
        runs[2].runtime = Some("host".into());
        // The two runtimes of one scenario: one colour, the host's lighter.
        assert_eq!(colour(&runs[1]), RGBColor(255, 127, 14));
        assert_eq!(colour(&runs[2]), RGBColor(255, 191, 134));
        let written = write_all(&dir, &runs).unwrap();
        assert_eq!(written.len(), 4);
        let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        assert!(
            svg.contains("edge-l1-hot / zipf / spin") && svg.contains("99.9%"),
            "{svg}"
        );
        assert!(svg.contains("edge-l2 / uniform / host"), "{svg}");
        let svg = std::fs::read_to_string(dir.join("throughput.svg")).unwrap();
        assert!(svg.contains("postgres-only / zipf"));

        // The PNGs are real images.
        for name in ["latency.png", "throughput.png"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_topology_chart_has_the_shared_tier_where_it_ran() {
        let tiers = |scenario: &str, names: &[&str]| {
            let mut r = run(scenario, "zipf", 1000, 100.0);
            r.result.latency_us.p50 = 1000;
            r.result.tier_latency_us = names
                .iter()
                .map(|t| (t.to_string(), crate::load::Latency::default()))
                .collect();
            r
        };
        let edge = crate::topology::parse("edge").unwrap().0[0];
        let mut miss = tiers("edge-miss", &["MISS"]);
        miss.keys = "walk".into();
        let runs = vec![
            tiers("edge", &["L1", "L2"]),
            miss,
            tiers("no-cache", &["MISS"]),
        ];
        let labels = |runs: Vec<Run>| -> Vec<String> {
            topology_rows(&[TopologyRuns::new(&edge, runs)])
                .into_iter()
                .map(|r| r.0)
                .collect()
        };
        let plain = labels(runs.clone());
        assert_eq!(
            plain,
            [
                "edge / L1 hit",
                "edge / L2 hit",
                "edge / miss via origin",
                "edge / all reads",
                "edge / no cache"
            ]
        );
        let mut with_shared = runs;
        with_shared.push(tiers("edge-shared", &["L1", "SHARED", "L2"]));
        let shared = labels(with_shared);
        // The plain edge's bars, then the shared tier's edge without repeating misses and no cache.
        assert_eq!(shared[..5], plain[..]);
        assert_eq!(
            shared[5..],
            [
                "edge / edge-shared / L1 hit",
                "edge / edge-shared / shared hit",
                "edge / edge-shared / L2 hit",
                "edge / edge-shared / all reads"
            ]
        );
    }

    #[test]
    fn bitmap_text_renders_with_the_embedded_font() {
        register_font();
        let (w, h) = (220u32, 40u32);
        let mut pixels = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
            root.draw_text(
                "p99.9 12.5 ms",
                &("sans-serif", 20).into_font().color(&BLACK),
                (4, 8),
            )
            .expect("text draws without system fonts");
            root.present().unwrap();
        }
        let dark = pixels.iter().filter(|b| **b < 128).count();
        assert!(dark > 100, "only {dark} dark subpixels: no text was drawn");
    }
}
