//! `ticketvnc bench --short` end to end: its own Xvfb, the workload
//! generator, ticketvnc and x0vncserver in turn, the measuring viewer with
//! every encoding and 1 and 2 viewers. No timing is asserted: only that
//! every cell produced its numbers, the viewer decoded every update it
//! received, and for lossless encodings its framebuffer equals the screen
//! at quiescence (docs/benchmarks.md).

mod common;

use std::process::Command;

/// `ticketvnc bench --short --size 400x300 ARGS --out DIR`, which must
/// succeed: its results.json, results.md and output directory.
fn short_bench(args: &[&str]) -> (serde_json::Value, String, tempfile::TempDir) {
    common::require_commands(&["Xvfb", "X0tigervnc"]);
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .args(["bench", "--short", "--size", "400x300"])
        .args(args)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run ticketvnc bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("results.json")).expect("results.json"),
    )
    .expect("valid JSON");
    let md = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    (json, md, out)
}

#[test]
fn short_bench_measures_every_cell_and_decodes_exactly() {
    let (json, md, out) = short_bench(&[
        "--servers",
        "ticketvnc,x0vncserver",
        "--workloads",
        "typing,photo",
        "--multi-workloads",
        "photo",
        "--encodings",
        "raw,zrle,tight,tight-jpeg",
    ]);
    let cells = json["cells"].as_array().expect("cells");
    // 2 workloads x 4 encodings x 2 servers with one viewer, plus the photo
    // cells again with two.
    assert_eq!(cells.len(), 2 * 4 * 2 + 4 * 2, "{md}");
    for c in cells {
        let name = format!(
            "{} {} {} x{}",
            c["server"], c["workload"], c["encoding"], c["clients"]
        );
        assert!(c["error"].is_null(), "{name}: {}", c["error"]);
        for k in [
            "updates_per_s",
            "bytes_per_s",
            "server_cpu_pct",
            "xvfb_cpu_pct",
            "server_rss_mib",
            "client_cpu_pct",
            "seconds",
        ] {
            assert!(
                c[k].as_f64().is_some_and(f64::is_finite),
                "{name}: {k} = {}",
                c[k]
            );
        }
        assert!(
            c["server_rss_mib"].as_f64().unwrap() > 0.0,
            "{name}: no RSS read"
        );
        assert!(c["first_update_bytes"].as_u64().unwrap() > 0, "{name}");
        // Every update viewer 1 received was decoded without error (the
        // cell fails otherwise) and it received some.
        assert!(c["decoded_updates"].as_u64().unwrap() > 0, "{name}");
        // The generator's marker changes were seen: latency was measured.
        assert!(c["latency_samples"].as_u64().unwrap() > 0, "{name}\n{md}");
        assert!(c["latency_ms_p50"].as_f64().is_some(), "{name}");
        if c["encoding"] == "tight-jpeg" {
            assert!(c["mismatched_pixels"].is_null(), "{name}");
        } else {
            assert_eq!(
                c["mismatched_pixels"].as_u64(),
                Some(0),
                "{name}: the viewer's framebuffer differs from the screen ({})\n{md}",
                c["mismatch_box"]
            );
        }
    }
    assert!(md.contains("| photo | zrle | 2 | x0vncserver |"), "{md}");
    // ticketvnc against the best peer (here x0vncserver) in every
    // ticketvnc row, and one chart per workload next to results.md.
    assert!(md.contains("### ticketvnc against the best peer"), "{md}");
    assert!(md.contains("peak RSS MiB, 2 viewers"), "{md}");
    for wl in ["typing", "photo"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {wl} | zrle | ticketvnc |")))
            .unwrap_or_else(|| panic!("no comparison row for {wl}\n{md}"));
        assert!(row.contains("x0vncserver)"), "{row}");
        let svg = std::fs::read_to_string(out.path().join(format!("chart-{wl}.svg")))
            .unwrap_or_else(|e| panic!("chart-{wl}.svg: {e}"));
        assert!(
            svg.starts_with("<svg") && svg.contains("x0vncserver"),
            "{wl}"
        );
        assert!(md.contains(&format!("![{wl}](chart-{wl}.svg)")), "{md}");
    }
}

/// `--levels`: every zrle cell once per level, compared at equal output
/// size, with a bytes-against-CPU chart. The level must reach the server:
/// ticketvnc's first update at level 9 is smaller than at level 1.
#[test]
fn swept_levels_compare_servers_at_equal_output_size() {
    let (json, md, out) = short_bench(&[
        "--servers",
        "ticketvnc,x0vncserver",
        "--workloads",
        "photo",
        "--multi-workloads",
        "",
        "--encodings",
        "zrle",
        "--levels",
        "1,9",
    ]);
    let cells = json["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4, "{md}");
    let first = |server: &str, level: u64| {
        cells
            .iter()
            .find(|c| c["server"] == server && c["compress"].as_u64() == Some(level))
            .unwrap_or_else(|| panic!("no {server} cell at level {level}\n{md}"))
            ["first_update_bytes"]
            .as_u64()
            .unwrap()
    };
    assert!(
        first("ticketvnc", 9) < first("ticketvnc", 1),
        "level 9 {} bytes, level 1 {}",
        first("ticketvnc", 9),
        first("ticketvnc", 1)
    );
    assert!(
        md.contains("| photo | zrle level 9 | 1 | x0vncserver |"),
        "{md}"
    );
    assert!(md.contains("### At equal output size"), "{md}");
    assert!(md.contains("| ticketvnc | x0vncserver, 9 |"), "{md}");
    let svg = std::fs::read_to_string(out.path().join("chart-sizes-photo.svg"))
        .expect("chart-sizes-photo.svg");
    assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
    assert!(md.contains("(chart-sizes-photo.svg)"), "{md}");
}
