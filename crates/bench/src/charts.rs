//! SVG charts of a report, drawn with `plotters`' SVG backend (no bitmap backend, no font
//! loading: text goes into the SVG as `<text>` for the viewer to render).
//!
//! Per run (one backend): throughput and p99 latency of each workload against directory size
//! (users, log scale), and with a concurrency sweep, throughput and p99 of the swept workloads
//! and the HTTP ceiling against concurrency (log scale). Throughput and latency axes are log
//! scale too: sign-ins run near 100 req/s, session checks at thousands.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::report::{Chart, Report};

/// Chart size in pixels.
const SIZE: (u32, u32) = (1000, 600);
/// Width of the legend column on the right, in pixels (the plot never hides under it).
const LEGEND_WIDTH: u32 = 190;

/// One line of a chart: its label and `(x, y)` points, x ascending.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

/// What a chart plots.
#[derive(Clone, Copy)]
enum Metric {
    /// Successful requests per second.
    Throughput,
    /// 99th percentile latency of successful requests, ms.
    P99,
}

impl Metric {
    fn of(self, rps: f64, p99: f64) -> f64 {
        match self {
            Metric::Throughput => rps,
            Metric::P99 => p99,
        }
    }

    fn axis(self) -> &'static str {
        match self {
            Metric::Throughput => "successful requests per second",
            Metric::P99 => "p99 latency, ms",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P99 => "p99",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Metric::Throughput => "Throughput",
            Metric::P99 => "p99 latency",
        }
    }
}

/// A file-name part for the run's backend: `sqlite`, `postgresql`, or `existing`.
fn backend_slug(backend: &str) -> &'static str {
    if backend.contains("existing") {
        "existing"
    } else if backend.starts_with("PostgreSQL") {
        "postgresql"
    } else {
        "sqlite"
    }
}

/// Draws every chart the report has data for into `dir` (created if missing) and returns them,
/// file names relative to `dir`.
///
/// # Errors
/// When the directory cannot be created or a chart cannot be written.
pub fn draw_all(r: &Report, dir: &Path) -> anyhow::Result<Vec<Chart>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let backend = backend_slug(&r.settings.backend);
    let mut charts = Vec::new();
    for metric in [Metric::Throughput, Metric::P99] {
        let lines = by_users(r, metric);
        if !lines.is_empty() {
            let file = format!("{}-by-users-{backend}.svg", metric.slug());
            let title = format!("{} by directory size, {}", metric.title(), r.settings.backend);
            draw(&dir.join(&file), &title, "users in the directory", metric.axis(), &lines)?;
            charts.push(Chart { file, title });
        }
    }
    if let Some(sw) = &r.sweep {
        for metric in [Metric::Throughput, Metric::P99] {
            let lines = by_concurrency(r, metric);
            if !lines.is_empty() {
                let file = format!("{}-by-concurrency-{backend}.svg", metric.slug());
                let title = format!("{} by concurrency, {} users, {}", metric.title(), sw.users, r.settings.backend);
                draw(&dir.join(&file), &title, "virtual clients (concurrency)", metric.axis(), &lines)?;
                charts.push(Chart { file, title });
            }
        }
    }
    Ok(charts)
}

/// One line per workload (and the open-loop mix) over the directory sizes; points without a
/// success are left out.
fn by_users(r: &Report, metric: Metric) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    let mut add = |label: &str, x: f64, ok: u64, y: f64| {
        if ok == 0 || y <= 0.0 || !y.is_finite() {
            return;
        }
        match lines.iter_mut().find(|l| l.label == label) {
            Some(l) => l.points.push((x, y)),
            None => lines.push(Line { label: label.to_owned(), points: vec![(x, y)] }),
        }
    };
    for size in &r.sizes {
        let x = size.users as f64;
        for w in &size.workloads {
            let m = &w.measurement;
            add(&w.key, x, m.ok, metric.of(m.rps, m.latency_ms.p99));
        }
        if let Some(o) = &size.open_mix {
            let m = &o.measurement;
            add(&o.key, x, m.ok, metric.of(m.rps, m.latency_ms.p99));
        }
    }
    for l in &mut lines {
        l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// One line per swept workload, and the HTTP ceiling, over the sweep's concurrencies.
fn by_concurrency(r: &Report, metric: Metric) -> Vec<Line> {
    let Some(sw) = &r.sweep else { return Vec::new() };
    let mut lines: Vec<Line> = Vec::new();
    let keep = |ok: u64, y: f64| ok > 0 && y > 0.0 && y.is_finite();
    let ceiling: Vec<(f64, f64)> = sw
        .ceiling
        .iter()
        .map(|(c, m)| (*c as f64, metric.of(m.rps, m.latency_ms.p99), m.ok))
        .filter(|&(_, y, ok)| keep(ok, y))
        .map(|(x, y, _)| (x, y))
        .collect();
    if !ceiling.is_empty() {
        lines.push(Line { label: "http ceiling".into(), points: ceiling });
    }
    for p in &sw.points {
        let m = &p.measurement;
        let y = metric.of(m.rps, m.latency_ms.p99);
        if !keep(m.ok, y) {
            continue;
        }
        let point = (p.concurrency as f64, y);
        match lines.iter_mut().find(|l| l.label == p.key) {
            Some(l) => l.points.push(point),
            None => lines.push(Line { label: p.key.clone(), points: vec![point] }),
        }
    }
    for l in &mut lines {
        l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// `lo..hi` widened to a usable log range: positive, and a factor of 2 either side when the
/// data has a single value.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    let lo = lo.max(f64::MIN_POSITIVE);
    if hi / lo < 1.5 { (lo / 2.0, hi * 2.0) } else { (lo / 1.25, hi * 1.25) }
}

/// A number for an axis label: `1,000`-style grouping of integers, two significant decimals
/// below 10.
fn axis_label(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{}M", trim(v / 1_000_000.0))
    } else if v >= 1000.0 {
        format!("{}k", trim(v / 1000.0))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = if v >= 10.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// Draws `lines` (log x, log y) with a legend on the right into an SVG file at `path`.
fn draw(path: &Path, title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> anyhow::Result<()> {
    let (x0, x1) = log_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)));
    let (y0, y1) = log_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
    // Down to a power of ten, so that the lowest values always have a labelled line below them.
    let y0 = 10f64.powf(y0.log10().floor());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).context("drawing the background")?;
    let root = root.titled(title, ("sans-serif", 22)).context("drawing the title")?;
    let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .context("laying out the chart")?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| axis_label(*v))
        .y_label_formatter(&|v| axis_label(*v))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .context("drawing the axes")?;
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = ShapeStyle::from(color).stroke_width(2);
        chart.draw_series(LineSeries::new(line.points.iter().copied(), style)).context("drawing a line")?;
        chart
            .draw_series(line.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .context("drawing the points")?;
        let y = 40 + 22 * i32::try_from(i).unwrap_or(i32::MAX / 44);
        legend.draw(&PathElement::new(vec![(8, y), (32, y)], style)).context("drawing the legend")?;
        legend.draw(&Circle::new((20, y), 3, color.filled())).context("drawing the legend")?;
        legend.draw(&Text::new(line.label.clone(), (40, y - 7), ("sans-serif", 14))).context("drawing the legend")?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ranges_are_positive_and_widened() {
        assert_eq!(log_range([100.0].into_iter()), (50.0, 200.0));
        assert_eq!(log_range(std::iter::empty()), (1.0, 10.0));
        let (lo, hi) = log_range([10.0, 1000.0].into_iter());
        assert!(lo < 10.0 && hi > 1000.0);
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(axis_label(1000.0), "1k");
        assert_eq!(axis_label(1_000_000.0), "1M");
        assert_eq!(axis_label(2500.0), "2.5k");
        assert_eq!(axis_label(0.5), "0.5");
        assert_eq!(axis_label(32.0), "32");
    }
}
