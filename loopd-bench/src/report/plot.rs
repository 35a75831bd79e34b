//! `--report PATH.svg`: the picture of a run, or of a comparison.
//!
//! Top: the latency percentile spectrum, the standard HdrHistogram plot. The x axis counts
//! "nines" (90%, 99%, 99.9%, ...) so the tail, where servers differ, gets as much room as
//! the median; latency is in µs or ms, whichever keeps the numbers short. In open loop the
//! uncorrected curve is drawn beside the corrected one; the gap between them is the queueing
//! that a closed-loop client would have hidden. Over TLS, full and resumed handshakes have a
//! curve each. With `--per-backend` each backend has a curve
//! of its own, and in `compare` each target. Bottom: the throughput of each second of the
//! whole run — the ramp and warm-up shaded before zero, the measurement after — which shows
//! warm-up effects, stalls and drift that an average hides.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::comparison::Comparison;
use super::{Latency, Report};
use crate::record::Second;

const WIDTH: u32 = 1024;
const HEIGHT: u32 = 768;
/// Tick labels and axis descriptions, large enough to read when the picture is scaled down.
const LABELS: (&str, u32) = ("sans-serif", 13);
const DESCRIPTIONS: (&str, u32) = ("sans-serif", 14);
/// Room on the right, so the last tick label ("99.9999%") is not cut off.
const RIGHT_MARGIN: u32 = 48;

/// Curves: ColorBrewer's "Dark2", readable on white and told apart by most colour vision
/// deficiencies. The first two are the run's own latency and its uncorrected latency.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 120, 180),
    RGBColor(217, 95, 2),
    RGBColor(27, 158, 119),
    RGBColor(117, 112, 179),
    RGBColor(231, 41, 138),
    RGBColor(102, 166, 30),
    RGBColor(166, 118, 29),
    RGBColor(102, 102, 102),
];

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

/// A labelled line: its points (nines, µs) and colour.
type Curve = (String, Vec<(f64, f64)>, RGBColor);

/// The curve of `latency`, if there is one.
fn curve(
    label: String,
    latency: &Option<Latency>,
    color: RGBColor,
) -> Result<Option<Curve>, String> {
    let Some(l) = latency else {
        return Ok(None);
    };
    let points = Latency::spectrum(&l.histogram()?)
        .into_iter()
        .map(|(p, us)| (nines(p), us))
        .collect();
    Ok(Some((label, points, color)))
}

/// Draws `report` as an SVG file at `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let mut curves = Vec::new();
    curves.extend(curve("latency".into(), &report.latency, COLORS[0])?);
    curves.extend(curve(
        "uncorrected (from actual send)".into(),
        &report.uncorrected_latency,
        COLORS[1],
    )?);
    // TLS: each kind of handshake has its own curve, from TCP established to the session.
    if let Some(t) = &report.tls {
        curves.extend(curve(
            "TLS handshake, full".into(),
            &t.handshake_latency.full,
            COLORS[2],
        )?);
        curves.extend(curve(
            "TLS handshake, resumed".into(),
            &t.handshake_latency.resumed,
            COLORS[3],
        )?);
    }
    for (i, b) in report.backends.iter().flatten().enumerate() {
        let color = COLORS[4 + i % (COLORS.len() - 4)];
        curves.extend(curve(
            format!("backend {}", b.server_id),
            &b.latency,
            color,
        )?);
    }
    let title = match report.runs.as_slice() {
        [c] => format!("{} {} — latency by percentile", c.mode, c.target),
        runs => format!("{} merged runs — latency by percentile", runs.len()),
    };
    let series = [("", report)];
    picture(path, &title, curves, &series)
}

/// Draws a comparison: one latency curve and one throughput line per target.
pub fn draw_comparison(comparison: &Comparison, path: &Path) -> Result<(), String> {
    let mut curves = Vec::new();
    for (i, t) in comparison.targets.iter().enumerate() {
        curves.extend(curve(
            t.name.clone(),
            &t.report.latency,
            COLORS[i % COLORS.len()],
        )?);
    }
    let names: Vec<&str> = comparison.targets.iter().map(|t| t.name.as_str()).collect();
    let title = format!("{} — latency by percentile", names.join(" vs "));
    let series: Vec<(&str, &Report)> = comparison
        .targets
        .iter()
        .map(|t| (t.name.as_str(), &t.report))
        .collect();
    picture(path, &title, curves, &series)
}

fn picture(
    path: &Path,
    title: &str,
    curves: Vec<Curve>,
    series: &[(&str, &Report)],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
    spectrum(&top, title, curves)?;
    throughput(&bottom, series)?;
    root.present()
        .map_err(|e| format!("{}: {e}", path.display()))
}

type Frame<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A captioned chart over `x` by `0..max_y`, laid out the same for both panels.
fn frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    max_y: f64,
) -> Result<Frame<'a, DB>, String>
where
    DB::ErrorType: 'static,
{
    ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(x, 0f64..max_y)
        .map_err(|e| e.to_string())
}

/// The unit that keeps `max_us` readable, and the divisor from µs.
fn latency_unit(max_us: f64) -> (&'static str, f64) {
    if max_us >= 10_000.0 {
        ("ms", 1_000.0)
    } else {
        ("µs", 1.0)
    }
}

fn spectrum<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: Vec<Curve>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let max_x = curves
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|&(x, _)| x))
        .fold(2.0f64, f64::max)
        .ceil();
    let max_us = curves
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|&(_, y)| y))
        .fold(1.0f64, f64::max);
    let (unit, per) = latency_unit(max_us);
    let mut chart = frame(area, title, 0.0..max_x, max_us / per * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(format!("latency ({unit})"))
        .label_style(LABELS)
        .axis_desc_style(DESCRIPTIONS)
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    if curves.is_empty() {
        return Ok(()); // send and recv modes have no round trips
    }
    for (label, points, color) in curves {
        let points = points.into_iter().map(|(x, y)| (x, y / per));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())
}

/// Per-second rates of `report`, the lead-in (ramp and warm-up) at negative times.
fn rates(report: &Report, bytes: bool) -> Vec<(f64, f64)> {
    let value = |s: &Second| {
        if bytes {
            (s.bytes_sent + s.bytes_received) as f64 / (1024.0 * 1024.0)
        } else {
            s.messages as f64
        }
    };
    let mut points = report.lead_in_rates(value);
    points.extend(report.timeline_rates(value));
    points
}

fn throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[(&str, &Report)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    // Byte streams are measured in MiB/s; request/response runs in messages/s.
    let bytes = series.iter().all(|(_, r)| r.latency.is_none());
    let unit = if bytes {
        "MiB/s (both ways)"
    } else {
        "messages/s"
    };
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, r)| (*name, rates(r, bytes)))
        .collect();
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let (min_x, max_x, max_y) = all.fold((0.0f64, 1.0f64, 1.0f64), |(a, b, c), &(x, y)| {
        (a.min(x - 1.0), b.max(x), c.max(y))
    });
    let mut chart = frame(area, "throughput per second", min_x..max_x, max_y * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measurement (before 0: ramp and warm-up, not measured)")
        .y_desc(unit)
        .label_style(LABELS)
        .axis_desc_style(DESCRIPTIONS)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    if min_x < 0.0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(min_x, 0.0), (0.0, max_y * 1.1)],
                RGBColor(200, 200, 200).mix(0.35).filled(),
            )))
            .map_err(|e| e.to_string())?;
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let drawn = chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if !name.is_empty() {
            drawn.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if lines.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
    }
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

    #[test]
    fn units() {
        assert_eq!(latency_unit(900.0).0, "µs");
        assert_eq!(latency_unit(25_000.0), ("ms", 1_000.0));
    }
}
