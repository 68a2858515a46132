//! The results as markdown (for docs/benchmarks.md) and a one-line summary
//! per cell for the terminal; ticketvnc's ratios against the best peer in
//! each row, the rows with the most viewers joined to their 1-viewer row,
//! and the scaling of ticketvnc with cores.

use super::{Cell, Run};
use std::fmt::Write;

/// The server whose rows are compared with the peers'.
pub const OURS: &str = "ticketvnc";

/// A cell with the fewest viewers of its group, joined to the cell of the
/// same server, workload and encoding with the most viewers (if any).
pub struct Row<'a> {
    pub cell: &'a Cell,
    pub many: Option<&'a Cell>,
}

/// A metric compared between servers and charted.
pub struct Metric {
    pub title: &'static str,
    pub higher_is_better: bool,
    pub get: fn(&Row) -> Option<f64>,
}

fn ok(c: &Cell) -> Option<&Cell> {
    c.error.is_none().then_some(c)
}

pub const METRICS: &[Metric] = &[
    Metric {
        title: "updates/s",
        higher_is_better: true,
        get: |r| ok(r.cell).map(|c| c.updates_per_s),
    },
    Metric {
        title: "server CPU ms per update",
        higher_is_better: false,
        get: |r| ok(r.cell).and_then(|c| c.server_cpu_ms_per_update),
    },
    Metric {
        title: "server CPU %",
        higher_is_better: false,
        get: |r| ok(r.cell).map(|c| c.server_cpu_pct),
    },
    Metric {
        title: "KiB per update",
        higher_is_better: false,
        get: |r| ok(r.cell).and_then(|c| c.bytes_per_update.map(|b| b / 1024.0)),
    },
    Metric {
        title: "latency p50 ms",
        higher_is_better: false,
        get: |r| ok(r.cell).and_then(|c| c.latency_ms_p50),
    },
    Metric {
        title: "latency p95 ms",
        higher_is_better: false,
        get: |r| ok(r.cell).and_then(|c| c.latency_ms_p95),
    },
    Metric {
        title: "peak RSS MiB, 1 viewer",
        higher_is_better: false,
        get: |r| ok(r.cell).map(|c| c.server_peak_rss_mib),
    },
    Metric {
        title: "peak RSS MiB, most viewers",
        higher_is_better: false,
        get: |r| r.many.and_then(ok).map(|c| c.server_peak_rss_mib),
    },
];

/// Peak RSS added by each viewer beyond the first, MiB.
pub fn per_further_viewer(r: &Row) -> Option<f64> {
    let (one, many) = (ok(r.cell)?, r.many.and_then(ok)?);
    (many.clients > one.clients).then(|| {
        (many.server_peak_rss_mib - one.server_peak_rss_mib) / (many.clients - one.clients) as f64
    })
}

/// The rows of a run: every cell with the fewest viewers of the run, in run
/// order, each joined to its cell with the most viewers.
pub fn rows(run: &Run) -> Vec<Row<'_>> {
    let Some(base) = run.cells.iter().map(|c| c.clients).min() else {
        return Vec::new();
    };
    run.cells
        .iter()
        .filter(|c| c.clients == base)
        .map(|cell| Row {
            cell,
            many: run
                .cells
                .iter()
                .filter(|m| {
                    m.clients > base
                        && m.workload == cell.workload
                        && m.setting() == cell.setting()
                        && m.label() == cell.label()
                })
                .max_by_key(|m| m.clients),
        })
        .collect()
}

/// ticketvnc's value of a metric against the best peer's in the same row.
#[derive(Debug, PartialEq)]
pub struct Ratio {
    pub ours: f64,
    pub peer: String,
    pub best: f64,
    /// ours / best; None when the best is 0 or below (a per-viewer memory
    /// growth measured as slightly negative is noise, not a baseline).
    pub ratio: Option<f64>,
    /// ticketvnc is at least as good as the best peer.
    pub better: bool,
}

/// `row` against the best of the peers' rows (other servers, same workload
/// and encoding) for `get`; None when either side has no value.
pub fn against_best_peer(
    rows: &[Row],
    row: &Row,
    get: fn(&Row) -> Option<f64>,
    higher_is_better: bool,
) -> Option<Ratio> {
    let ours = get(row).filter(|v| v.is_finite())?;
    let (peer, best) = rows
        .iter()
        .filter(|p| {
            p.cell.server != OURS
                && p.cell.workload == row.cell.workload
                && p.cell.setting() == row.cell.setting()
        })
        .filter_map(|p| Some((p, get(p).filter(|v| v.is_finite())?)))
        .reduce(|a, b| {
            let b_wins = if higher_is_better {
                b.1 > a.1
            } else {
                b.1 < a.1
            };
            if b_wins {
                b
            } else {
                a
            }
        })?;
    Some(Ratio {
        ours,
        peer: peer.cell.label(),
        best,
        ratio: ratio_of(ours, best),
        better: if higher_is_better {
            ours >= best
        } else {
            ours <= best
        },
    })
}

/// ours / best, only against a positive baseline.
fn ratio_of(ours: f64, best: f64) -> Option<f64> {
    (best > 0.0).then(|| ours / best)
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio_cell(r: Option<Ratio>) -> String {
    let Some(r) = r else { return "–".into() };
    let x = r.ratio.map_or("–".into(), |x| format!("{x:.2}x"));
    let x = if r.better { format!("**{x}**") } else { x };
    format!("{x} ({} vs {} {})", num(r.ours), num(r.best), r.peer)
}

/// ticketvnc against the best peer, one row per ticketvnc row.
pub fn comparison(run: &Run) -> String {
    let rows = rows(run);
    let mut s = String::new();
    let most = rows.iter().filter_map(|r| r.many.map(|m| m.clients)).max();
    let many = most.map_or("most viewers".into(), |n| format!("{n} viewers"));
    let _ = writeln!(
        s,
        "Each cell: ticketvnc's value divided by the best peer's in the same row (same workload and encoding, {} viewer{}), then both values and the peer. **Bold**: ticketvnc is as good or better (higher updates/s; lower everything else).\n",
        rows.first().map_or(1, |r| r.cell.clients),
        if rows.first().is_some_and(|r| r.cell.clients > 1) { "s" } else { "" }
    );
    let mut head = String::from("| workload | encoding | server |");
    let mut rule = String::from("|---|---|---|");
    for m in METRICS {
        let title = if m.title.ends_with("most viewers") {
            format!("peak RSS MiB, {many}")
        } else {
            m.title.to_owned()
        };
        let _ = write!(head, " {title} |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{head} MiB per further viewer |\n{rule}---|");
    for r in rows.iter().filter(|r| r.cell.server == OURS) {
        let _ = write!(
            s,
            "| {} | {} | {} |",
            r.cell.workload,
            r.cell.setting(),
            r.cell.label()
        );
        for m in METRICS {
            let _ = write!(
                s,
                " {} |",
                ratio_cell(against_best_peer(&rows, r, m.get, m.higher_is_better))
            );
        }
        let _ = writeln!(
            s,
            " {} |",
            ratio_cell(against_best_peer(&rows, r, per_further_viewer, false))
        );
    }
    s
}

/// ticketvnc pinned to different core counts side by side (empty when the
/// run has fewer than two).
pub fn scaling(run: &Run) -> String {
    let rows = rows(run);
    let mut counts: Vec<usize> = rows
        .iter()
        .filter(|r| r.cell.server == OURS)
        .filter_map(|r| r.cell.cpus)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() < 2 {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ticketvnc pinned to the first N cores (`taskset`); the peers ran unpinned. Per core count: updates/s, server CPU ms per update, latency p50 ms; then updates/s and CPU % with the most cores against the fewest.\n"
    );
    let mut head = String::from("| workload | encoding |");
    let mut rule = String::from("|---|---|");
    for n in &counts {
        let _ = write!(head, " {n} core{} |", if *n == 1 { "" } else { "s" });
        rule.push_str("---|");
    }
    let _ = writeln!(
        s,
        "{head} upd/s {} / {} | CPU % {} / {} |\n{rule}---:|---:|",
        counts[counts.len() - 1],
        counts[0],
        counts[counts.len() - 1],
        counts[0]
    );
    let mut seen: Vec<(&str, String)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.cell.server == OURS && r.cell.cpus.is_some())
    {
        let key = (r.cell.workload.as_str(), r.cell.setting());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let find = |n: usize| {
            rows.iter()
                .find(|o| {
                    o.cell.server == OURS
                        && o.cell.cpus == Some(n)
                        && o.cell.workload == key.0
                        && o.cell.setting() == key.1
                })
                .and_then(|o| ok(o.cell))
        };
        let _ = write!(s, "| {} | {} |", key.0, key.1);
        for &n in &counts {
            let _ = write!(
                s,
                " {} |",
                find(n).map_or("–".into(), |c| format!(
                    "{:.1} upd/s, {} ms/upd, p50 {} ms",
                    c.updates_per_s,
                    opt(c.server_cpu_ms_per_update, 2),
                    opt(c.latency_ms_p50, 1)
                ))
            );
        }
        let (lo, hi) = (find(counts[0]), find(counts[counts.len() - 1]));
        let div = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}x", a / b)
            } else {
                "–".into()
            }
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) => {
                let _ = writeln!(
                    s,
                    " {} | {} |",
                    div(hi.updates_per_s, lo.updates_per_s),
                    div(hi.server_cpu_pct, lo.server_cpu_pct)
                );
            }
            _ => {
                let _ = writeln!(s, " – | – |");
            }
        }
    }
    s
}

/// The compression level(s) of the run, for headers.
pub fn levels(run: &Run) -> String {
    if run.levels.is_empty() {
        format!("compression level {}", run.compress)
    } else {
        let l: Vec<String> = run.levels.iter().map(u8::to_string).collect();
        format!("compression levels {}", l.join(","))
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn latency(c: &Cell) -> String {
    match (c.latency_ms_p50, c.latency_ms_p95, c.latency_ms_p99) {
        (Some(a), Some(b), Some(d)) => format!("{a:.1} / {b:.1} / {d:.1}"),
        _ => "–".into(),
    }
}

fn exact(c: &Cell) -> String {
    match c.mismatched_pixels {
        None => "lossy".into(),
        Some(0) => "yes".into(),
        Some(n) => format!(
            "**{n} px differ** ({})",
            c.mismatch_box.as_deref().unwrap_or("")
        ),
    }
}

pub fn one_line(c: &Cell) -> String {
    if let Some(e) = &c.error {
        return format!("FAILED: {e}");
    }
    format!(
        "{:.1} upd/s, {} distinct/s, {:.0} KiB/s, first {:.0} KiB, latency {} ms, server {:.0}% cpu {:.1} MiB, xvfb {:.0}%, client {:.1}% + decoder {:.0}%, exact {}",
        c.updates_per_s,
        opt(c.distinct_per_s, 1),
        c.bytes_per_s / 1024.0,
        c.first_update_bytes as f64 / 1024.0,
        latency(c),
        c.server_cpu_pct,
        c.server_rss_mib,
        c.xvfb_cpu_pct,
        c.client_cpu_pct,
        c.decoder_cpu_pct,
        exact(c)
    )
}

/// The report: the run, every cell, ticketvnc against the best peer, the
/// scaling with cores, and links to the charts (`(workload, file name)`,
/// written next to results.md).
pub fn markdown(run: &Run, charts: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run {} at commit `{}` on {}; load average {} at the start, {} at the end; {}x{}, {}, JPEG quality {}.\n\nCommand: `{}`\n",
        run.date, run.commit, run.machine, run.load_start, run.load_end, run.width, run.height, levels(run), run.quality, run.command
    );
    for (name, v) in &run.server_versions {
        let _ = writeln!(s, "- {name}: {v}");
    }
    let _ = writeln!(
        s,
        "\n| workload | encoding | viewers | server | upd/s | distinct/s | KiB/upd | first KiB | MiB/s | latency p50/p95/p99 ms | server CPU % | CPU ms/upd | Xvfb CPU % | RSS / peak MiB | client CPU % | exact |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---|"
    );
    for c in &run.cells {
        if let Some(e) = &c.error {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | failed: {} ||||||||||||",
                c.workload,
                c.setting(),
                c.clients,
                c.server,
                e.replace('|', "/").replace('\n', " ")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {} | {} | {:.0} | {:.2} | {} | {:.1} | {} | {:.1} | {:.1} / {:.1} | {:.1} + {:.1} | {} |",
            c.workload,
            c.setting(),
            c.clients,
            c.label(),
            c.updates_per_s,
            opt(c.distinct_per_s, 1),
            opt(c.bytes_per_update.map(|b| b / 1024.0), 1),
            c.first_update_bytes as f64 / 1024.0,
            c.bytes_per_s / (1024.0 * 1024.0),
            latency(c),
            c.server_cpu_pct,
            opt(c.server_cpu_ms_per_update, 2),
            c.xvfb_cpu_pct,
            c.server_rss_mib,
            c.server_peak_rss_mib,
            c.client_cpu_pct,
            c.decoder_cpu_pct,
            exact(c)
        );
    }
    let _ = writeln!(
        s,
        "\n### ticketvnc against the best peer\n\n{}",
        comparison(run)
    );
    let equal = super::sizes::markdown(run);
    if !equal.is_empty() {
        let _ = writeln!(s, "### At equal output size\n\n{equal}");
    }
    let scale = scaling(run);
    if !scale.is_empty() {
        let _ = writeln!(s, "### Scaling with cores\n\n{scale}");
    }
    if !charts.is_empty() {
        let _ = writeln!(s, "### Charts\n");
        for (workload, file) in charts {
            let _ = writeln!(s, "![{workload}]({file})\n");
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small fixed run: photo with ticketvnc on 1 and 2 cores, x0vncserver
    /// and x11vnc (whose tight-jpeg cell failed), 10-viewer rows for
    /// tight-jpeg; typing with ticketvnc (1 core) and x0vncserver.
    pub(crate) fn fixture() -> Run {
        serde_json::from_str(include_str!("testdata/results-small.json")).expect("fixture")
    }

    fn row<'a>(rows: &'a [Row<'a>], label: &str, workload: &str, encoding: &str) -> &'a Row<'a> {
        rows.iter()
            .find(|r| {
                r.cell.label() == label
                    && r.cell.workload == workload
                    && r.cell.encoding == encoding
            })
            .expect("row")
    }

    fn metric(title: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.title == title).expect(title)
    }

    fn vs(rows: &[Row], r: &Row, title: &str) -> Ratio {
        let m = metric(title);
        against_best_peer(rows, r, m.get, m.higher_is_better).expect(title)
    }

    #[test]
    fn the_best_peer_depends_on_the_metric_and_its_direction() {
        let run = fixture();
        let rows = rows(&run);
        // One row per 1-viewer cell; the 10-viewer cells are joined.
        assert_eq!(rows.len(), 10);
        let zrle = row(&rows, "ticketvnc (1 core)", "photo", "zrle");
        // updates/s: higher is better; x0vncserver 6, x11vnc 7: x11vnc.
        let r = vs(&rows, zrle, "updates/s");
        assert_eq!((r.peer.as_str(), r.best, r.better), ("x11vnc", 7.0, true));
        assert!((r.ratio.unwrap() - 8.0 / 7.0).abs() < 1e-9);
        // CPU per update: lower is better; 150 vs 120: x11vnc.
        let r = vs(&rows, zrle, "server CPU ms per update");
        assert_eq!((r.peer.as_str(), r.best, r.better), ("x11vnc", 120.0, true));
        assert!((r.ratio.unwrap() - 100.0 / 120.0).abs() < 1e-9);
        // Bytes: 5478 vs 5400 KiB: x11vnc; ticketvnc's 5448 is worse.
        let r = vs(&rows, zrle, "KiB per update");
        assert_eq!(
            (r.peer.as_str(), r.best, r.better),
            ("x11vnc", 5400.0, false)
        );
        // Latency p95: x0vncserver 200, x11vnc 300.
        let r = vs(&rows, zrle, "latency p95 ms");
        assert_eq!((r.peer.as_str(), r.best), ("x0vncserver", 200.0));
        assert!((r.ratio.unwrap() - 0.8).abs() < 1e-9);
        // A failed peer cell is no peer: x11vnc's tight-jpeg.
        let jpeg = row(&rows, "ticketvnc (2 cores)", "photo", "tight-jpeg");
        let r = vs(&rows, jpeg, "updates/s");
        assert_eq!(
            (r.peer.as_str(), r.best, r.better),
            ("x0vncserver", 60.0, false)
        );
        assert!((r.ratio.unwrap() - 0.75).abs() < 1e-9);
        // ticketvnc on other core counts is not a peer.
        let r = vs(
            &rows,
            row(&rows, "ticketvnc (1 core)", "photo", "tight-jpeg"),
            "updates/s",
        );
        assert_eq!(r.peer, "x0vncserver");
    }

    /// The full run of 2026-11-30 printed -382x against x11vnc's -0.00 MiB
    /// per further viewer: no ratio against a baseline of zero or below.
    #[test]
    fn no_ratio_against_a_baseline_of_zero_or_below() {
        assert_eq!(ratio_of(0.33, -0.001), None);
        assert_eq!(ratio_of(0.33, 0.0), None);
        assert_eq!(ratio_of(1.0, 4.0), Some(0.25));
    }

    #[test]
    fn the_most_viewers_row_is_joined_to_its_one_viewer_row() {
        let run = fixture();
        let rows = rows(&run);
        let jpeg = row(&rows, "ticketvnc (1 core)", "photo", "tight-jpeg");
        assert_eq!(jpeg.many.map(|c| c.clients), Some(10));
        let r = vs(&rows, jpeg, "peak RSS MiB, most viewers");
        assert_eq!(
            (r.ours, r.peer.as_str(), r.best),
            (35.0, "x0vncserver", 43.0)
        );
        assert!(r.better);
        // (35 - 32) / 9 against x0vncserver's (43 - 27) / 9.
        let r = against_best_peer(&rows, jpeg, per_further_viewer, false).unwrap();
        assert!((r.ours - 3.0 / 9.0).abs() < 1e-9 && (r.best - 16.0 / 9.0).abs() < 1e-9);
        // No 10-viewer row: no value, no ratio.
        let two = row(&rows, "ticketvnc (2 cores)", "photo", "tight-jpeg");
        assert!(two.many.is_none());
        assert!(
            against_best_peer(&rows, two, metric("peak RSS MiB, most viewers").get, false)
                .is_none()
        );
    }

    #[test]
    fn markdown_has_ratios_scaling_and_chart_links() {
        let run = fixture();
        let charts = [("photo".to_string(), "chart-photo.svg".to_string())];
        let md = markdown(&run, &charts);
        assert!(md.contains("### ticketvnc against the best peer"), "{md}");
        // ticketvnc (1 core), photo, zrle: 8 vs 7 upd/s (x11vnc) -> 1.14x,
        // better, in bold.
        let line = md
            .lines()
            .find(|l| l.starts_with("| photo | zrle | ticketvnc (1 core) |"))
            .expect("comparison row");
        assert!(line.contains("**1.14x** (8.00 vs 7.00 x11vnc)"), "{line}");
        assert!(line.contains("1.01x (5448 vs 5400 x11vnc)"), "{line}");
        // Peak RSS with 10 viewers is a column of its own.
        assert!(md.contains("peak RSS MiB, 10 viewers"), "{md}");
        let jpeg = md
            .lines()
            .find(|l| l.starts_with("| photo | tight-jpeg | ticketvnc (1 core) |"))
            .unwrap();
        assert!(
            jpeg.contains("**0.81x** (35.0 vs 43.0 x0vncserver)"),
            "{jpeg}"
        );
        // Peers get no comparison row of their own.
        assert!(!md.contains("| photo | zrle | x0vncserver | **"), "{md}");
        // Scaling: 1 vs 2 cores, ZRLE 8 -> 14 upd/s, CPU 80 -> 154 %.
        assert!(md.contains("### Scaling with cores"), "{md}");
        let zrle = md
            .lines()
            .skip_while(|l| !l.starts_with("### Scaling"))
            .find(|l| l.starts_with("| photo | zrle |"))
            .unwrap();
        assert!(zrle.ends_with("| 1.75x | 1.93x |"), "{zrle}");
        assert!(md.contains("![photo](chart-photo.svg)"), "{md}");
        // The main table names the pinning.
        assert!(
            md.contains("| photo | zrle | 1 | ticketvnc (2 cores) | 14.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| photo | tight-jpeg | 1 | x11vnc | failed: "),
            "{md}"
        );
    }

    #[test]
    fn no_scaling_table_without_two_core_counts() {
        let mut run = fixture();
        run.cells.retain(|c| c.cpus != Some(2));
        assert!(scaling(&run).is_empty());
        assert!(!markdown(&run, &[]).contains("Scaling with cores"));
    }
}
