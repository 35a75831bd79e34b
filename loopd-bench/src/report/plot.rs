//! `--report PATH.svg`: the picture of a run.
//!
//! Top: the latency percentile spectrum, the standard HdrHistogram plot. The x axis counts
//! "nines" (90%, 99%, 99.9%, ...) so the tail, where servers differ, gets as much room as
//! the median. In open loop the uncorrected curve is drawn beside the corrected one; the gap
//! between them is the queueing that a closed-loop client would have hidden. With
//! `--per-backend` each backend has a curve of its own, so a slow one stands out. Bottom: the
//! throughput of each measured second, which shows warm-up effects, stalls and drift that
//! an average hides.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Latency, Report};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 720;

/// Percentile -> position on the "nines" axis: 0% -> 0, 90% -> 1, 99% -> 2, ...
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-7);
    -rest.log10()
}

fn nines_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if p < 99.0 {
        format!("{p:.0}%")
    } else {
        let digits = (*x - 2.0).round().max(0.0) as usize;
        format!("{p:.digits$}%")
    }
}

/// Draws `report` as an SVG file at `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
    spectrum(report, &top)?;
    throughput(report, &bottom)?;
    root.present()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Backend curves: ColorBrewer's "Dark2", readable on white and told apart by most colour
/// vision deficiencies.
const BACKEND_COLORS: [RGBColor; 8] = [
    RGBColor(27, 158, 119),
    RGBColor(217, 95, 2),
    RGBColor(117, 112, 179),
    RGBColor(231, 41, 138),
    RGBColor(102, 166, 30),
    RGBColor(230, 171, 2),
    RGBColor(166, 118, 29),
    RGBColor(102, 102, 102),
];

/// A labelled line: its points (nines, µs) and colour.
type Curve = (String, Vec<(f64, f64)>, RGBColor);

type Frame<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A captioned chart over `0..max_x` by `0..max_y`, laid out the same for both panels.
fn frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    max_x: f64,
    max_y: f64,
) -> Result<Frame<'a, DB>, String>
where
    DB::ErrorType: 'static,
{
    ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(|e| e.to_string())
}

fn spectrum<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let mut curves: Vec<Curve> = Vec::new();
    let mut add = |label: String, latency: &Option<Latency>, color: RGBColor| {
        if let Some(l) = latency {
            let h = l.histogram()?;
            let points: Vec<(f64, f64)> = Latency::spectrum(&h)
                .into_iter()
                .map(|(p, us)| (nines(p), us))
                .collect();
            curves.push((label, points, color));
        }
        Ok::<(), String>(())
    };
    add("latency (all)".into(), &report.latency, BLUE)?;
    add(
        "uncorrected (from actual send)".into(),
        &report.uncorrected_latency,
        RED,
    )?;
    // --per-backend: one line per backend, so a slow one stands out from the whole.
    for (i, b) in report.backends.iter().flatten().enumerate() {
        let color = BACKEND_COLORS[i % BACKEND_COLORS.len()];
        add(format!("backend {}", b.server_id), &b.latency, color)?;
    }
    let title = match report.runs.as_slice() {
        [c] => format!("{} {} — latency by percentile", c.mode, c.target),
        runs => format!("{} merged runs — latency by percentile", runs.len()),
    };
    let max_x = curves
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|&(x, _)| x))
        .fold(2.0f64, f64::max)
        .ceil();
    let max_y = curves
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|&(_, y)| y))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = frame(area, &title, max_x, max_y)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("µs")
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&nines_label)
        .draw()
        .map_err(|e| e.to_string())?;
    if curves.is_empty() {
        return Ok(()); // send and recv modes have no round trips
    }
    for (label, points, color) in curves {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())
}

fn throughput<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    // Byte streams are measured in MiB/s; request/response runs in messages/s.
    let (unit, points) = if report.latency.is_none() {
        let rates = report.timeline_rates(|s| (s.bytes_sent + s.bytes_received) as f64);
        let mib = 1024.0 * 1024.0;
        (
            "MiB/s (both ways)",
            rates.into_iter().map(|(t, r)| (t, r / mib)).collect(),
        )
    } else {
        ("messages/s", report.timeline_rates(|s| s.messages as f64))
    };
    let max_x = points.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let max_y = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = frame(area, "throughput per second", max_x, max_y)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measurement")
        .y_desc(unit)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            GREEN.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, GREEN.filled())))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nines axis puts 90, 99 and 99.9 at 1, 2 and 3, and labels them so.
    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&4.0), "99.99%");
    }
}
