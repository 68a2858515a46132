//! Servers compared at equal output size (`ticketvnc bench --levels`).
//!
//! Servers map the viewer's compression level to different zlib levels
//! (TigerVNC's ZRLE ignores it), so bytes at the same level compare unlike
//! work. With levels swept, each server has a curve per workload and
//! encoding: bytes per update against server CPU per update, one point per
//! level. ticketvnc is compared with each peer's point at no more bytes
//! (its cheapest level that is at least as small: the CPU it needs for
//! that size) and at no more CPU (its smallest output within that CPU). No
//! interpolation: every number is a measured cell.

use super::chart::{colour, header, render, Area, DrawResult, HEADER_H};
use super::report::{self, OURS};
use super::Run;
use plotters::prelude::*;
use std::fmt::Write;

/// One level of one server's curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub level: u8,
    /// KiB per update in the measured window (None: no update came).
    pub kib: Option<f64>,
    /// Server CPU ms per update delivered.
    pub cpu_ms: Option<f64>,
    /// The first, full update: the same picture for every server.
    pub first_kib: f64,
}

impl Point {
    fn both(&self) -> Option<(f64, f64)> {
        Some((self.kib?, self.cpu_ms?)).filter(|(k, c)| k.is_finite() && c.is_finite())
    }
}

/// A server's points for one workload and encoding, in level order.
#[derive(Debug)]
pub struct Curve {
    pub workload: String,
    pub encoding: String,
    pub server: String,
    pub points: Vec<Point>,
}

/// The curves of a run: 1-viewer cells (the run's fewest viewers) that ran
/// at a swept level and did not fail, grouped by workload, encoding and
/// server (ticketvnc's core counts are servers of their own).
pub fn curves(run: &Run) -> Vec<Curve> {
    let mut out: Vec<Curve> = Vec::new();
    for r in report::rows(run) {
        let c = r.cell;
        let Some(level) = c.compress else { continue };
        if c.error.is_some() {
            continue;
        }
        let point = Point {
            level,
            kib: c.bytes_per_update.map(|b| b / 1024.0),
            cpu_ms: c.server_cpu_ms_per_update,
            first_kib: c.first_update_bytes as f64 / 1024.0,
        };
        let label = c.label();
        match out
            .iter_mut()
            .find(|k| k.workload == c.workload && k.encoding == c.encoding && k.server == label)
        {
            Some(k) => k.points.push(point),
            None => out.push(Curve {
                workload: c.workload.clone(),
                encoding: c.encoding.clone(),
                server: label,
                points: vec![point],
            }),
        }
    }
    for k in &mut out {
        k.points.sort_by_key(|p| p.level);
    }
    out
}

/// ticketvnc's answer to one peer point.
#[derive(Debug, PartialEq)]
pub struct Match {
    /// ticketvnc's cheapest point with at most the peer's bytes.
    pub at_size: Option<Point>,
    /// ticketvnc's smallest point with at most the peer's CPU.
    pub at_cpu: Option<Point>,
}

/// ticketvnc's points against one peer point (`kib`, `cpu_ms`).
pub fn match_point(ours: &Curve, kib: f64, cpu_ms: f64) -> Match {
    let with_both = || ours.points.iter().filter_map(|p| p.both().map(|b| (*p, b)));
    let at_size = with_both()
        .filter(|(_, (k, _))| *k <= kib)
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
        .map(|(p, _)| p);
    let at_cpu = with_both()
        .filter(|(_, (_, c))| *c <= cpu_ms)
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .map(|(p, _)| p);
    Match { at_size, at_cpu }
}

/// (workload, encoding) pairs with curves, in run order.
fn groups(curves: &[Curve]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for k in curves {
        let g = (k.workload.clone(), k.encoding.clone());
        if !v.contains(&g) {
            v.push(g);
        }
    }
    v
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(ours: f64, peer: f64) -> String {
    if peer > 0.0 {
        let x = format!("{:.2}x", ours / peer);
        if ours <= peer {
            format!("**{x}**")
        } else {
            x
        }
    } else {
        "–".into()
    }
}

/// The section of results.md; empty when no level was swept.
pub fn markdown(run: &Run) -> String {
    let curves = curves(run);
    if curves.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Every level of each server, 1 viewer: KiB per update and server CPU ms per update in the measured window, and the first (full) update's KiB (the same picture for every server). Then ticketvnc against each peer's level: its cheapest level that sends no more bytes per update (the CPU that size costs it), and its smallest output within the peer's CPU per update. Measured cells only, no interpolation; **bold**: ticketvnc is as good or better.\n"
    );
    for (workload, encoding) in groups(&curves) {
        let here: Vec<&Curve> = curves
            .iter()
            .filter(|k| k.workload == workload && k.encoding == encoding)
            .collect();
        let mut levels: Vec<u8> = here
            .iter()
            .flat_map(|k| k.points.iter().map(|p| p.level))
            .collect();
        levels.sort_unstable();
        levels.dedup();
        let _ = writeln!(s, "#### {workload}, {encoding}\n");
        let mut head = String::from("| level |");
        let mut rule = String::from("|---|");
        for k in &here {
            let _ = write!(head, " {} KiB/upd, CPU ms/upd (first KiB) |", k.server);
            rule.push_str("---|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for l in &levels {
            let _ = write!(s, "| {l} |");
            for k in &here {
                let cell = k
                    .points
                    .iter()
                    .find(|p| p.level == *l)
                    .map_or("–".to_string(), |p| {
                        format!(
                            "{}, {} ({})",
                            p.kib.map_or("–".into(), num),
                            p.cpu_ms.map_or("–".into(), num),
                            num(p.first_kib)
                        )
                    });
                let _ = write!(s, " {cell} |");
            }
            let _ = writeln!(s);
        }
        // The smallest first update each server can send at any level.
        let _ = write!(s, "| smallest first update |");
        for k in &here {
            let best = k
                .points
                .iter()
                .min_by(|a, b| a.first_kib.total_cmp(&b.first_kib));
            let _ = write!(
                s,
                " {} |",
                best.map_or("–".into(), |p| format!(
                    "{} KiB at level {}",
                    num(p.first_kib),
                    p.level
                ))
            );
        }
        let _ = writeln!(s, "\n");
        let ours: Vec<&&Curve> = here.iter().filter(|k| k.server.starts_with(OURS)).collect();
        let peers: Vec<&&Curve> = here
            .iter()
            .filter(|k| !k.server.starts_with(OURS))
            .collect();
        let rows: Vec<(&Curve, &Curve, Point, f64, f64)> = ours
            .iter()
            .flat_map(|o| {
                peers.iter().flat_map(move |p| {
                    p.points
                        .iter()
                        .filter_map(move |pt| pt.both().map(|(k, c)| (**o, **p, *pt, k, c)))
                })
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| ticketvnc | peer, level | peer KiB/upd, CPU ms/upd | ticketvnc at no more bytes: level, KiB, CPU ms | CPU ratio | ticketvnc within its CPU: level, KiB, CPU ms | bytes ratio |\n|---|---|---|---|---:|---|---:|"
        );
        for (o, p, pt, kib, cpu) in rows {
            let m = match_point(o, kib, cpu);
            let show = |q: Option<Point>| {
                q.and_then(|q| q.both().map(|b| (q.level, b)))
                    .map_or("none".to_string(), |(l, (k, c))| {
                        format!("{l}, {}, {}", num(k), num(c))
                    })
            };
            let size_ratio = m
                .at_size
                .and_then(|q| q.cpu_ms)
                .map_or("–".into(), |c| ratio(c, cpu));
            let cpu_ratio = m
                .at_cpu
                .and_then(|q| q.kib)
                .map_or("–".into(), |k| ratio(k, kib));
            let _ = writeln!(
                s,
                "| {} | {}, {} | {}, {} | {} | {size_ratio} | {} | {cpu_ratio} |",
                o.server,
                p.server,
                pt.level,
                num(kib),
                num(cpu),
                show(m.at_size),
                show(m.at_cpu),
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// Workloads with points that have both bytes and CPU per update.
pub fn workloads(run: &Run) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for k in curves(run) {
        if k.points.iter().any(|p| p.both().is_some()) && !v.contains(&k.workload) {
            v.push(k.workload);
        }
    }
    v
}

pub fn file_name(workload: &str) -> String {
    format!("chart-sizes-{workload}.svg")
}

const PANEL_W: u32 = 600;
const PANEL_H: u32 = 400;

/// One panel per encoding: KiB per update (x) against server CPU ms per
/// update (y), a line per server through its levels, each point labelled
/// with its level. Lower left is better.
pub fn workload_svg(run: &Run, workload: &str) -> Result<String, String> {
    let curves: Vec<Curve> = curves(run)
        .into_iter()
        .filter(|k| k.workload == workload)
        .collect();
    let encodings: Vec<String> = groups(&curves).into_iter().map(|(_, e)| e).collect();
    if encodings.is_empty() {
        return Err("no levels were swept".into());
    }
    let mut servers: Vec<String> = Vec::new();
    for k in &curves {
        if !servers.contains(&k.server) {
            servers.push(k.server.clone());
        }
    }
    let cols = encodings.len().min(2) as u32;
    let rows = (encodings.len() as u32).div_ceil(cols);
    let size = (PANEL_W * cols, HEADER_H + PANEL_H * rows);
    render(size, |root| {
        draw(root, run, workload, &curves, &servers, &encodings)
    })
}

fn draw(
    root: &Area,
    run: &Run,
    workload: &str,
    curves: &[Curve],
    servers: &[String],
    encodings: &[String],
) -> DrawResult {
    let body = header(
        root,
        format!(
            "{workload}: bytes against CPU per update at each level, {}x{}, 1 viewer (lower left is better); {}",
            run.width, run.height, run.date
        ),
        servers,
        '●',
    )?;
    let cols = encodings.len().min(2);
    let panels = body.split_evenly((encodings.len().div_ceil(cols), cols));
    for (encoding, area) in encodings.iter().zip(panels.iter()) {
        let here: Vec<&Curve> = curves.iter().filter(|k| &k.encoding == encoding).collect();
        let all: Vec<(f64, f64)> = here
            .iter()
            .flat_map(|k| k.points.iter().filter_map(Point::both))
            .collect();
        let xmax = all.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-3) * 1.1;
        let ymax = all.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(encoding, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("KiB per update")
            .y_desc("server CPU ms per update")
            .draw()?;
        for k in here {
            let i = servers.iter().position(|s| *s == k.server).unwrap_or(0);
            let c = colour(servers, i);
            let pts: Vec<(u8, (f64, f64))> = k
                .points
                .iter()
                .filter_map(|p| p.both().map(|b| (p.level, b)))
                .collect();
            chart.draw_series(std::iter::once(PathElement::new(
                pts.iter().map(|p| p.1).collect::<Vec<_>>(),
                c.stroke_width(2),
            )))?;
            chart.draw_series(pts.iter().map(|(l, xy)| {
                EmptyElement::at(*xy)
                    + Circle::new((0, 0), 4, c.filled())
                    + Text::new(
                        l.to_string(),
                        (5, -14),
                        ("sans-serif", 11).into_font().color(&c),
                    )
            }))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Cell;

    fn cell(server: &str, level: Option<u8>, kib: f64, cpu: f64) -> Cell {
        Cell {
            server: server.into(),
            workload: "photo".into(),
            encoding: "zrle".into(),
            compress: level,
            clients: 1,
            updates_per_s: 10.0,
            bytes_per_update: Some(kib * 1024.0),
            server_cpu_ms_per_update: Some(cpu),
            first_update_bytes: (kib * 1024.0) as u64 + 1024,
            ..Cell::default()
        }
    }

    fn run(cells: Vec<Cell>) -> Run {
        let mut r = crate::bench::report::tests::fixture();
        r.levels = vec![1, 6, 9];
        r.cells = cells;
        r
    }

    #[test]
    fn the_match_is_the_cheapest_no_bigger_and_the_smallest_no_dearer() {
        let r = run(vec![
            cell("ticketvnc", Some(1), 5000.0, 10.0),
            cell("ticketvnc", Some(6), 4600.0, 30.0),
            cell("ticketvnc", Some(9), 4500.0, 80.0),
            cell("x0vncserver", Some(1), 4700.0, 60.0),
            cell("x0vncserver", Some(6), 4700.0, 61.0),
        ]);
        let k = curves(&r);
        assert_eq!(k.len(), 2);
        let ours = k.iter().find(|k| k.server == "ticketvnc").unwrap();
        assert_eq!(
            ours.points.iter().map(|p| p.level).collect::<Vec<_>>(),
            [1, 6, 9]
        );
        // x0vncserver 4700 KiB at 60 ms: ours at no more bytes is level 6
        // (4600 KiB, 30 ms; level 9 is smaller but dearer), within 60 ms the
        // smallest is level 6 too.
        let m = match_point(ours, 4700.0, 60.0);
        assert_eq!(m.at_size.map(|p| p.level), Some(6));
        assert_eq!(m.at_cpu.map(|p| p.level), Some(6));
        // A peer smaller than any of ours, and cheaper than any of ours.
        let m = match_point(ours, 4000.0, 5.0);
        assert_eq!(
            m,
            Match {
                at_size: None,
                at_cpu: None
            }
        );
        let md = markdown(&r);
        assert!(md.contains("#### photo, zrle"), "{md}");
        assert!(
            md.contains("| ticketvnc | x0vncserver, 1 | 4700, 60.0 | 6, 4600, 30.0 | **0.50x** | 6, 4600, 30.0 | **0.98x** |"),
            "{md}"
        );
        assert!(
            md.contains("| smallest first update | 4501 KiB at level 9 | 4701 KiB at level 1 |"),
            "{md}"
        );
        let svg = workload_svg(&r, "photo").unwrap();
        // One point per level per server, labelled.
        assert_eq!(svg.matches("<circle").count(), 5, "{svg}");
    }

    #[test]
    fn no_section_without_swept_levels_and_failed_cells_left_out() {
        let mut failed = cell("x0vncserver", Some(1), 4700.0, 60.0);
        failed.error = Some("no first update".into());
        let r = run(vec![cell("ticketvnc", None, 5000.0, 10.0), failed]);
        assert!(curves(&r).is_empty());
        assert!(markdown(&r).is_empty());
        assert!(workloads(&r).is_empty());
    }

    #[test]
    fn a_static_screen_has_first_sizes_but_no_comparison() {
        let mut a = cell("ticketvnc", Some(1), 0.0, 0.0);
        let mut b = cell("x11vnc", Some(1), 0.0, 0.0);
        for c in [&mut a, &mut b] {
            c.workload = "static".into();
            c.bytes_per_update = None;
            c.server_cpu_ms_per_update = None;
            c.first_update_bytes = 3 << 20;
        }
        let r = run(vec![a, b]);
        let md = markdown(&r);
        assert!(md.contains("| 1 | –, – (3072) | –, – (3072) |"), "{md}");
        assert!(!md.contains("peer KiB/upd"), "{md}");
        assert!(workloads(&r).is_empty());
    }
}
