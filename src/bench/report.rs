//! The results as markdown (for docs/benchmarks.md) and a one-line summary
//! per cell for the terminal.

use super::{Cell, Run};
use std::fmt::Write;

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

pub fn markdown(run: &Run) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run {} at commit `{}` on {}; load average {} at the start, {} at the end; {}x{}, compression level {}, JPEG quality {}.\n\nCommand: `{}`\n",
        run.date, run.commit, run.machine, run.load_start, run.load_end, run.width, run.height, run.compress, run.quality, run.command
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
                c.encoding,
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
            c.encoding,
            c.clients,
            c.server,
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
    s
}
