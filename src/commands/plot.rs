//! The benchmark's plot: submissions per second (left) and their latency (right) against the
//! number of concurrent clients, drawn from the bench report into a PNG. Text needs a
//! TrueType font; a few usual system locations are tried.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

fn load_font() -> Result<(), String> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| {
            format!(
                "no TrueType font found for the plot (tried {}); install fonts-dejavu-core",
                FONT_PATHS.join(", ")
            )
        })?;
    // Fonts are registered for the life of the process; one leaked copy is fine.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font file could not be read".to_string())
}

struct Point {
    clients: f64,
    per_second: f64,
    median_ms: f64,
    p99_ms: f64,
}

fn points(report: &serde_json::Value) -> Vec<Point> {
    report["submissions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            // Each entry is `{"result": {...}, "cpu_cores": {...}}`, or the bare result.
            let r = r.get("result").unwrap_or(r);
            Some(Point {
                clients: r["clients"].as_f64()?,
                per_second: r["per_second"].as_f64()?,
                median_ms: r["latency"]["median_ms"].as_f64()?,
                p99_ms: r["latency"]["p99_ms"].as_f64()?,
            })
        })
        .collect()
}

fn draw_error<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw the plot: {e:?}")
}

/// The charts share a logarithmic x axis (clients); the y axis differs.
type Chart<'a, 'b, Y> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<LogCoord<f64>, Y>>;

/// One named series: a line through `values`, a dot on each, and a legend entry.
fn line_with_dots<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, '_, Y>,
    name: &str,
    color: RGBColor,
    values: &[(f64, f64)],
) -> Result<(), String> {
    chart
        .draw_series(LineSeries::new(
            values.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(draw_error)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    chart
        .draw_series(values.iter().map(|v| Circle::new(*v, 4, color.filled())))
        .map_err(draw_error)?;
    Ok(())
}

fn legend<'a, 'b: 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, Y>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(draw_error)
}

/// Draw `report`'s submission figures into `path` (PNG).
pub fn throughput_plot(report: &serde_json::Value, path: &Path) -> Result<(), String> {
    let points = points(report);
    if points.is_empty() {
        return Err("no submission figures to plot".into());
    }
    load_font()?;
    let max_clients = points.iter().map(|p| p.clients).fold(1.0, f64::max) * 2.0;
    let max_rate = points.iter().map(|p| p.per_second).fold(1.0, f64::max);
    let top_rate = max_rate * 1.25;
    let max_latency = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 2.0;
    let min_latency = points.iter().map(|p| p.median_ms).fold(f64::MAX, f64::min) / 2.0;

    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let title = format!(
        "dispatcher: submissions, {} durable replicas on loopback ({})",
        report["replicas"],
        report["machine"].as_str().unwrap_or("")
    );
    let root = root
        .titled(&title, ("sans-serif", 20))
        .map_err(draw_error)?;
    let (left, right) = root.split_horizontally(600);

    let caption = match report["grpc_ping"]["per_second"].as_f64() {
        Some(ping) => format!("acknowledged submissions per second (bare gRPC ping: {ping:.0}/s)"),
        None => "acknowledged submissions per second".to_string(),
    };
    let mut rate = ChartBuilder::on(&left)
        .caption(caption, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7f64..max_clients).log_scale(), 0f64..top_rate)
        .map_err(draw_error)?;
    rate.configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("submissions / s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(draw_error)?;
    let rates: Vec<(f64, f64)> = points.iter().map(|p| (p.clients, p.per_second)).collect();
    line_with_dots(&mut rate, "submissions / s", BLUE, &rates)?;
    rate.draw_series(points.iter().map(|p| {
        Text::new(
            format!("{:.0}/s", p.per_second),
            (p.clients, p.per_second + top_rate * 0.03),
            ("sans-serif", 13),
        )
    }))
    .map_err(draw_error)?;
    legend(&mut rate)?;

    let mut latency = ChartBuilder::on(&right)
        .caption("submission latency", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.7f64..max_clients).log_scale(),
            (min_latency.max(0.01)..max_latency).log_scale(),
        )
        .map_err(draw_error)?;
    latency
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(draw_error)?;
    let medians: Vec<(f64, f64)> = points.iter().map(|p| (p.clients, p.median_ms)).collect();
    let p99s: Vec<(f64, f64)> = points.iter().map(|p| (p.clients, p.p99_ms)).collect();
    line_with_dots(&mut latency, "median", GREEN, &medians)?;
    line_with_dots(&mut latency, "p99", RED, &p99s)?;
    legend(&mut latency)?;
    root.present().map_err(draw_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_from_a_report() {
        if FONT_PATHS.iter().all(|p| !Path::new(p).exists()) {
            return; // nothing to draw text with on this machine
        }
        let report = serde_json::json!({
            "replicas": 3, "machine": "test",
            "grpc_ping": {"per_second": 20000.0},
            "submissions": [
                {"clients": 1, "per_second": 500.0, "latency": {"median_ms": 1.8, "p99_ms": 30.0}},
                {"clients": 64, "per_second": 7000.0, "latency": {"median_ms": 6.0, "p99_ms": 50.0}},
            ],
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plot.png");
        throughput_plot(&report, &path).expect("plot");
        let bytes = std::fs::read(&path).expect("png");
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(throughput_plot(&serde_json::json!({}), &path).is_err());
    }
}
