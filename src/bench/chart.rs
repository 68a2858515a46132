//! One SVG chart per workload (plotters, SVG backend only): a panel per
//! metric of [`report::METRICS`], a group of bars per encoding, one bar per
//! server (each ticketvnc core count is a server of its own).
//!
//! No font library is linked: plotters without its ttf/ab_glyph features
//! writes text as SVG `<text>` elements (the viewer's sans-serif) and
//! estimates label sizes itself. Bars are the only filled rectangles in a
//! series colour (the legend is coloured text), so a test can find them.

use super::report::{self, Row, METRICS};
use super::Run;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

/// ticketvnc's colours (one per core count, in run order): blues, purple.
const OURS_COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x5f, 0xbf),
    RGBColor(0x7f, 0xa8, 0xe8),
    RGBColor(0x6a, 0x3d, 0x9a),
    RGBColor(0xc0, 0xa0, 0xe0),
];
const X0VNCSERVER_COLOUR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const X11VNC_COLOUR: RGBColor = RGBColor(0xe0, 0x7b, 0x10);
const OTHER_COLOUR: RGBColor = RGBColor(0x80, 0x80, 0x80);

/// The colour of series `i` of `servers` (labels): each peer has its own,
/// ticketvnc's core counts are shades of blue.
pub fn colour(servers: &[String], i: usize) -> RGBColor {
    let label = &servers[i];
    if label.starts_with(report::OURS) {
        let nth = servers[..i]
            .iter()
            .filter(|s| s.starts_with(report::OURS))
            .count();
        OURS_COLOURS[nth % OURS_COLOURS.len()]
    } else if label.starts_with("x0vncserver") {
        X0VNCSERVER_COLOUR
    } else if label.starts_with("x11vnc") {
        X11VNC_COLOUR
    } else {
        OTHER_COLOUR
    }
}

const PANEL_W: u32 = 600;
const PANEL_H: u32 = 330;
pub const HEADER_H: u32 = 60;

/// The series (server labels) and encodings of one workload's 1-viewer rows,
/// in the order they appear in the run.
fn axes(rows: &[Row], workload: &str) -> (Vec<String>, Vec<String>) {
    let mut servers: Vec<String> = Vec::new();
    let mut encodings: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| r.cell.workload == workload) {
        let label = r.cell.label();
        if !servers.contains(&label) {
            servers.push(label);
        }
        if !encodings.contains(&r.cell.setting()) {
            encodings.push(r.cell.setting());
        }
    }
    (servers, encodings)
}

/// The workloads of the run that have 1-viewer rows, in run order.
pub fn workloads(run: &Run) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in report::rows(run) {
        if !v.contains(&r.cell.workload) {
            v.push(r.cell.workload.clone());
        }
    }
    v
}

/// File name of a workload's chart, next to results.md.
pub fn file_name(workload: &str) -> String {
    format!("chart-{workload}.svg")
}

/// The SVG of one workload.
pub fn workload_svg(run: &Run, workload: &str) -> Result<String, String> {
    let rows = report::rows(run);
    let (servers, encodings) = axes(&rows, workload);
    let cols = 2u32;
    let panel_rows = (METRICS.len() as u32).div_ceil(cols);
    let size = (PANEL_W * cols, HEADER_H + PANEL_H * panel_rows);
    render(size, |root| {
        draw(root, run, &rows, workload, &servers, &encodings)
    })
}

pub type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
pub type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// An SVG of `size` drawn by `draw`.
pub fn render(size: (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// White background, a title, and a legend of coloured server names
/// (text, not rectangles: `mark` is the symbol before each); returns the
/// area below the header.
pub fn header<'a>(
    root: &Area<'a>,
    title: String,
    servers: &[String],
    mark: char,
) -> Result<Area<'a>, DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER_H);
    header.draw(&Text::new(
        title,
        (10, 8),
        ("sans-serif", 15).into_font().color(&BLACK),
    ))?;
    let mut x = 10;
    for (i, s) in servers.iter().enumerate() {
        header.draw(&Text::new(
            format!("{mark} {s}"),
            (x, 32),
            ("sans-serif", 15).into_font().color(&colour(servers, i)),
        ))?;
        x += 30 + 8 * s.chars().count() as i32;
    }
    Ok(body)
}

fn draw(
    root: &Area,
    run: &Run,
    rows: &[Row],
    workload: &str,
    servers: &[String],
    encodings: &[String],
) -> DrawResult {
    let body = header(
        root,
        format!(
            "{workload}: {}x{}, {}, JPEG quality {}, 1 viewer (RSS also with the most viewers); {}",
            run.width,
            run.height,
            report::levels(run),
            run.quality,
            run.date
        ),
        servers,
        '■',
    )?;
    let cols = 2usize;
    let panels = body.split_evenly((METRICS.len().div_ceil(cols), cols));
    for (metric, area) in METRICS.iter().zip(panels.iter()) {
        let value = |server: &str, encoding: &str| {
            rows.iter()
                .find(|r| {
                    r.cell.workload == workload
                        && r.cell.setting() == encoding
                        && r.cell.label() == server
                })
                .and_then(|r| (metric.get)(r))
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let max = servers
            .iter()
            .flat_map(|s| encodings.iter().filter_map(move |e| value(s, e)))
            .fold(0.0f64, f64::max);
        let top = if max > 0.0 { max * 1.15 } else { 1.0 };
        let n = encodings.len().max(1) as i32;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{} ({} is better)",
                    metric.title,
                    if metric.higher_is_better {
                        "higher"
                    } else {
                        "lower"
                    }
                ),
                ("sans-serif", 14),
            )
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(52)
            // An integer range includes its end: n - 1 makes n groups.
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(encodings.len().max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    encodings.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        // Bars in pixels: group i spans Exact(i)..Exact(i + 1).
        let k = servers.len().max(1) as i32;
        for (ei, e) in encodings.iter().enumerate() {
            let ei = ei as i32;
            let (x0, y0) = chart.backend_coord(&(SegmentValue::Exact(ei), 0.0));
            let (x1, _) = chart.backend_coord(&(SegmentValue::Exact(ei + 1), 0.0));
            let pad = (x1 - x0) / 8;
            let bw = ((x1 - x0 - 2 * pad) / k).max(1);
            for (si, s) in servers.iter().enumerate() {
                let left = x0 + pad + si as i32 * bw;
                let Some(v) = value(s, e) else {
                    // A cell that failed says so where its bar would be.
                    let failed = rows.iter().any(|r| {
                        r.cell.workload == workload
                            && r.cell.setting() == *e
                            && r.cell.label() == *s
                            && r.cell.error.is_some()
                    });
                    if failed {
                        root.draw(&Text::new(
                            "failed",
                            (left, y0 - 13),
                            ("sans-serif", 10).into_font().color(&RED),
                        ))?;
                    }
                    continue;
                };
                let (_, y) = chart.backend_coord(&(SegmentValue::Exact(ei), v));
                let colour = colour(servers, si);
                root.draw(&Rectangle::new(
                    [(left, y.min(y0 - 1)), (left + bw - 2, y0)],
                    colour.filled(),
                ))?;
                root.draw(&Text::new(
                    short(v),
                    (left, y.min(y0 - 1) - 13),
                    ("sans-serif", 10).into_font().color(&BLACK),
                ))?;
            }
        }
    }
    Ok(())
}

/// A number in 3 significant digits or so, for axis and bar labels.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::fixture;
    use super::*;

    /// (x, y, width, height) of every filled rectangle of `colour`.
    fn bars(svg: &str, colour: RGBColor) -> Vec<(f64, f64, f64, f64)> {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", colour.0, colour.1, colour.2);
        let attr = |el: &str, name: &str| -> f64 {
            let key = format!(" {name}=\"");
            let at = el.find(&key).expect(name) + key.len();
            el[at..].split('"').next().unwrap().parse().unwrap()
        };
        svg.split("<rect")
            .skip(1)
            .map(|el| el.split("/>").next().unwrap())
            .filter(|el| el.contains(&fill))
            .map(|el| {
                (
                    attr(el, "x"),
                    attr(el, "y"),
                    attr(el, "width"),
                    attr(el, "height"),
                )
            })
            .collect()
    }

    #[test]
    fn one_bar_per_value_heights_in_proportion() {
        let run = fixture();
        assert_eq!(workloads(&run), ["photo", "typing"]);
        let svg = workload_svg(&run, "photo").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        // Series in run order: ticketvnc 1 core, ticketvnc 2 cores,
        // x0vncserver, x11vnc (x11vnc's tight-jpeg cell failed).
        let rows = report::rows(&run);
        let (servers, encodings) = axes(&rows, "photo");
        assert_eq!(
            servers,
            [
                "ticketvnc (1 core)",
                "ticketvnc (2 cores)",
                "x0vncserver",
                "x11vnc"
            ]
        );
        assert_eq!(encodings, ["zrle", "tight-jpeg"]);
        for s in &servers {
            assert!(svg.contains(s.as_str()), "legend names {s}");
        }
        for m in METRICS {
            assert!(svg.contains(m.title), "panel {}", m.title);
        }
        let tv1 = bars(&svg, colour(&servers, 0));
        let tv2 = bars(&svg, colour(&servers, 1));
        let x0v = bars(&svg, colour(&servers, 2));
        let x11 = bars(&svg, colour(&servers, 3));
        let all = [
            colour(&servers, 0),
            colour(&servers, 1),
            colour(&servers, 2),
            colour(&servers, 3),
        ];
        assert!(
            (1..4).all(|i| !all[..i].contains(&all[i])),
            "distinct colours"
        );
        assert_eq!(
            tv2.len(),
            METRICS.len() * 2 - 2,
            "no 10-viewer row: {tv2:?}"
        );
        assert_eq!(
            svg.matches(">\nfailed\n<").count(),
            METRICS.len(),
            "x11vnc's failed cell"
        );
        // Every metric has a value for both encodings for these, except
        // peak RSS with the most viewers (only tight-jpeg has 10-viewer
        // rows); x11vnc's tight-jpeg cell failed and it has no 10-viewer row.
        assert_eq!(tv1.len(), METRICS.len() * 2 - 1, "{tv1:?}");
        assert_eq!(x0v.len(), METRICS.len() * 2 - 1);
        assert_eq!(x11.len(), METRICS.len() - 1);
        // First panel is updates/s; its bars in encoding order: zrle then
        // tight-jpeg. ticketvnc (1 core) had 8 and 30, x0vncserver 6 and 60
        // (one axis per panel: heights in proportion to the values).
        assert_eq!(METRICS[0].title, "updates/s");
        let px_per_unit = x0v[1].3 / 60.0;
        for (bar, v) in [(tv1[0], 8.0), (tv1[1], 30.0), (x0v[0], 6.0)] {
            assert!((bar.3 - v * px_per_unit).abs() <= 1.5, "{v}: {bar:?}");
        }
        // Bars stand on the same base line and in server order.
        assert!((tv1[1].1 + tv1[1].3 - (x0v[1].1 + x0v[1].3)).abs() < 1.5);
        assert!(tv1[1].0 < x0v[1].0);
        // The tallest bar of the panel (x0vncserver's 60 upd/s) leaves room
        // above it.
        assert!(x0v[1].1 > 0.0);
    }

    #[test]
    fn a_workload_without_values_still_draws() {
        let mut run = fixture();
        for c in &mut run.cells {
            c.error = Some("x".into());
        }
        let svg = workload_svg(&run, "photo").unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(bars(&svg, OURS_COLOURS[0]).is_empty());
        assert_eq!(svg.matches(">\nfailed\n<").count(), METRICS.len() * 8);
    }
}
