//! `ticketvnc bench`: ticketvnc, x11vnc and x0vncserver side by side on one
//! Xvfb, driven by one deterministic workload generator and measured by one
//! viewer. See docs/benchmarks.md.

mod chart;
mod client;
mod report;
mod servers;
mod sizes;
mod workload;

use anyhow::{bail, Context, Result};
use client::{DecodeSide, Encoding, Viewer};
use serde::{Deserialize, Serialize};
use servers::{Server, ServerProcess};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ticketvnc::capture::virtual_x::VirtualDisplay;
use workload::{Display, Events, Workload};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A few seconds per cell, every workload/encoding, 1 and 2 viewers:
    /// proves the harness end to end (what the test in tests/ runs).
    #[arg(long)]
    pub short: bool,
    /// Servers to measure (comma-separated): ticketvnc, x11vnc, x0vncserver.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ticketvnc,x11vnc,x0vncserver"
    )]
    pub servers: Vec<String>,
    /// Workloads: static, typing, scrolling, animation, photo, identical.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "static,typing,scrolling,animation,photo,identical"
    )]
    pub workloads: Vec<String>,
    /// Encodings: raw, zrle, tight (lossless), tight-jpeg.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw,zrle,tight,tight-jpeg"
    )]
    pub encodings: Vec<String>,
    /// Viewer counts; counts above 1 run only for --multi-workloads.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub clients: Vec<usize>,
    /// Workloads that also run with the larger viewer counts.
    #[arg(long, value_delimiter = ',', default_value = "static,typing,photo")]
    pub multi_workloads: Vec<String>,
    /// Seconds measured per cell (after the warm-up).
    #[arg(long, default_value_t = 6.0)]
    pub seconds: f64,
    /// Seconds of warm-up per cell.
    /// x11vnc reports no changes for about 2 s after a viewer connects.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Compression level sent to every server (0-9).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub compress: u8,
    /// Compression levels to sweep (e.g. `0,1,2,3,4,5,6,7,8,9`): every
    /// zrle, tight and tight-jpeg cell runs once per level instead of at
    /// `--compress`, and the report compares the servers at equal output
    /// size (bytes against CPU, since servers map levels differently).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(0..=9))]
    pub levels: Vec<u8>,
    /// JPEG quality level for tight-jpeg (0-9).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub quality: u8,
    /// The ticketvnc binary to measure (default: this one).
    #[arg(long, value_name = "PATH")]
    pub ticketvnc: Option<PathBuf>,
    /// Write results.json and results.md into this directory.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub out: PathBuf,
    /// Screen size of the bench's Xvfb.
    #[arg(long, default_value = "1920x1080")]
    pub size: String,
    /// Core counts to pin ticketvnc to, one run of its cells per count
    /// (`taskset -c 0-(N-1)`; e.g. `1,2`). The peers always run unpinned
    /// (they encode on one thread). Default: ticketvnc unpinned.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub cpus: Vec<usize>,
}

/// One measured cell: server x workload x encoding x viewers.
#[derive(Serialize, Deserialize, Default, Clone, Debug)]
#[serde(default)]
pub struct Cell {
    pub server: String,
    /// The server was pinned to this many cores (`--cpus`), else unpinned.
    pub cpus: Option<usize>,
    pub workload: String,
    pub encoding: String,
    /// The compression level of this cell when the run swept levels
    /// (`--levels`); else None (the run's `compress`, or Raw).
    pub compress: Option<u8>,
    pub clients: usize,
    pub seconds: f64,
    /// Updates per second received by viewer 1.
    pub updates_per_s: f64,
    /// Updates that showed a new marker value, per second (viewer 1).
    pub distinct_per_s: Option<f64>,
    /// Bytes per second received by viewer 1.
    pub bytes_per_s: f64,
    pub bytes_per_update: Option<f64>,
    /// Size of the first, full (non-incremental) update of viewer 1.
    pub first_update_bytes: u64,
    /// Updates per second over all viewers.
    pub total_updates_per_s: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub latency_samples: usize,
    /// Server CPU in % of one core.
    pub server_cpu_pct: f64,
    /// Server CPU per update delivered to viewer 1, ms.
    pub server_cpu_ms_per_update: Option<f64>,
    pub xvfb_cpu_pct: f64,
    pub server_rss_mib: f64,
    pub server_peak_rss_mib: f64,
    /// The viewers' pull loops (framing only), % of one core, all viewers.
    pub client_cpu_pct: f64,
    /// Viewer 1's decoder thread, % of one core.
    pub decoder_cpu_pct: f64,
    pub generator_missed_ticks: u64,
    /// Updates viewer 1 decoded without error (all of them, or the cell fails).
    pub decoded_updates: u64,
    /// Pixels of viewer 1's framebuffer differing from the screen at
    /// quiescence (lossless encodings only).
    pub mismatched_pixels: Option<u64>,
    /// Where they are (left,top to right,bottom).
    pub mismatch_box: Option<String>,
    pub error: Option<String>,
}

impl Cell {
    /// The server's name in tables and charts, with its core count when
    /// pinned: "ticketvnc (2 cores)".
    pub fn label(&self) -> String {
        match self.cpus {
            None => self.server.clone(),
            Some(1) => format!("{} (1 core)", self.server),
            Some(n) => format!("{} ({n} cores)", self.server),
        }
    }

    /// The encoding with its level when the run swept levels:
    /// "zrle level 6"; else the encoding's name.
    pub fn setting(&self) -> String {
        match self.compress {
            Some(l) => format!("{} level {l}", self.encoding),
            None => self.encoding.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Run {
    pub date: String,
    pub commit: String,
    pub machine: String,
    /// /proc/loadavg at the start and the end: the machine may be shared.
    pub load_start: String,
    pub load_end: String,
    pub command: String,
    pub compress: u8,
    /// The levels swept (`--levels`); empty when every cell used `compress`.
    #[serde(default)]
    pub levels: Vec<u8>,
    pub quality: u8,
    pub width: u16,
    pub height: u16,
    pub server_versions: Vec<(String, String)>,
    pub cells: Vec<Cell>,
}

fn ticks_per_s() -> f64 {
    100.0 // USER_HZ on Linux
}

fn parse_list<T>(v: &[String], f: fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>> {
    // An empty list (`--multi-workloads ''`) names nothing.
    v.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| f(s.trim()).with_context(|| format!("unknown {what} {s:?}")))
        .collect()
}

pub fn run(args: BenchArgs, command_line: String) -> Result<()> {
    let mut args = args;
    if args.short {
        args.seconds = args.seconds.min(2.0);
        args.warmup = args.warmup.min(1.0);
        args.clients = vec![1, 2];
    }
    let servers = parse_list(&args.servers, Server::parse, "server")?;
    let workloads = parse_list(&args.workloads, Workload::parse, "workload")?;
    let multi = parse_list(&args.multi_workloads, Workload::parse, "workload")?;
    let encodings = parse_list(&args.encodings, Encoding::parse, "encoding")?;
    let (w, h) = args
        .size
        .split_once('x')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .context("--size WxH")?;
    let exe = match &args.ticketvnc {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    for s in &servers {
        s.check(&exe)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(&n) = args.cpus.iter().find(|&&n| n == 0 || n > cores) {
        bail!("--cpus {n}: this machine has {cores} cores");
    }
    if !args.cpus.is_empty() {
        servers::check_taskset()?;
    }
    // ticketvnc once per core count; the peers once, unpinned.
    let pinnings = |server: Server| -> Vec<Option<usize>> {
        if server == Server::Ticketvnc && !args.cpus.is_empty() {
            args.cpus.iter().map(|&n| Some(n)).collect()
        } else {
            vec![None]
        }
    };
    std::fs::create_dir_all(&args.out)?;
    let (date, commit, load_start) = (utc_now(), commit(), load());
    let xvfb = VirtualDisplay::start(w, h, None).context("start the bench's Xvfb")?;
    let xvfb_pid = xvfb.pid();
    let display = Some(Display::open(&xvfb.display)?);
    // Server logs (one per cell) and ticketvnc's journal.
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut cells = Vec::new();
    // The levels of an encoding's cells: each swept level, or the run's one.
    let levels_of = |enc: Encoding| -> Vec<Option<u8>> {
        if args.levels.is_empty() || enc == Encoding::Raw {
            vec![None]
        } else {
            args.levels.iter().map(|&l| Some(l)).collect()
        }
    };
    let total = servers.iter().map(|&s| pinnings(s).len()).sum::<usize>()
        * workloads.len()
        * encodings.iter().map(|&e| levels_of(e).len()).sum::<usize>();
    let mut n = 0;
    for &wl in &workloads {
        let d = display.as_ref().expect("display");
        let prepared = workload::prepare(d, wl, 6)?;
        for (enc, compress) in encodings
            .iter()
            .flat_map(|&e| levels_of(e).into_iter().map(move |l| (e, l)))
        {
            for &server in &servers {
                for cpus in pinnings(server) {
                    n += 1;
                    for &clients in &args.clients {
                        if clients > 1 && !multi.contains(&wl) {
                            continue;
                        }
                        let ctx = CellCtx {
                            args: &args,
                            exe: &exe,
                            xvfb: &xvfb,
                            xvfb_pid,
                            tmp: &logs,
                            cpus,
                            compress,
                        };
                        let named = Cell {
                            server: server.name().into(),
                            cpus,
                            encoding: enc.name().into(),
                            compress,
                            ..Cell::default()
                        };
                        eprintln!(
                            "[{n}/{total}] {} {} {} x{clients}",
                            named.label(),
                            wl.name(),
                            named.setting()
                        );
                        let cell = run_cell(&ctx, server, wl, enc, clients, d, &prepared);
                        eprintln!("    {}", report::one_line(&cell));
                        cells.push(cell);
                    }
                }
            }
        }
        prepared.free(d);
    }
    let run = Run {
        date,
        commit,
        machine: machine(),
        load_start,
        load_end: load(),
        command: command_line,
        compress: args.compress,
        levels: args.levels.clone(),
        quality: args.quality,
        width: w,
        height: h,
        server_versions: servers
            .iter()
            .map(|s| (s.name().into(), s.version(&exe)))
            .collect(),
        cells,
    };
    let json = serde_json::to_string_pretty(&run)?;
    std::fs::write(args.out.join("results.json"), json)?;
    // One chart per workload next to results.md; a chart that cannot be
    // drawn is reported and left out, the tables stay.
    let mut charts = Vec::new();
    for workload in chart::workloads(&run) {
        let file = chart::file_name(&workload);
        match chart::workload_svg(&run, &workload) {
            Ok(svg) => {
                std::fs::write(args.out.join(&file), svg)?;
                charts.push((workload, file));
            }
            Err(e) => eprintln!("chart of {workload}: {e}"),
        }
    }
    // Bytes against CPU per level, where levels were swept.
    for workload in sizes::workloads(&run) {
        let file = sizes::file_name(&workload);
        match sizes::workload_svg(&run, &workload) {
            Ok(svg) => {
                std::fs::write(args.out.join(&file), svg)?;
                charts.push((format!("{workload}: bytes against CPU per level"), file));
            }
            Err(e) => eprintln!("size chart of {workload}: {e}"),
        }
    }
    let md = report::markdown(&run, &charts);
    std::fs::write(args.out.join("results.md"), &md)?;
    println!("{md}");
    let failed: Vec<_> = run.cells.iter().filter(|c| c.error.is_some()).collect();
    if !failed.is_empty() {
        bail!("{} of {} cells failed", failed.len(), run.cells.len());
    }
    Ok(())
}

struct CellCtx<'a> {
    args: &'a BenchArgs,
    exe: &'a std::path::Path,
    xvfb: &'a VirtualDisplay,
    xvfb_pid: u32,
    tmp: &'a std::path::Path,
    /// Pin the server to the first this many cores.
    cpus: Option<usize>,
    /// The swept compression level of the cell (else `args.compress`).
    compress: Option<u8>,
}

fn proc_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| client::stat_ticks(&s))
        .unwrap_or(0)
}

/// (VmRSS, VmHWM) in MiB.
fn proc_rss(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

fn run_cell(
    ctx: &CellCtx,
    server: Server,
    wl: Workload,
    enc: Encoding,
    clients: usize,
    d: &Display,
    p: &workload::Prepared,
) -> Cell {
    let mut cell = Cell {
        server: server.name().into(),
        cpus: ctx.cpus,
        workload: wl.name().into(),
        encoding: enc.name().into(),
        compress: ctx.compress,
        clients,
        ..Cell::default()
    };
    if let Err(e) = measure(ctx, server, wl, enc, clients, d, p, &mut cell) {
        cell.error = Some(format!("{e:#}"));
    }
    cell
}

#[allow(clippy::too_many_arguments)]
fn measure(
    ctx: &CellCtx,
    server: Server,
    wl: Workload,
    enc: Encoding,
    clients: usize,
    d: &Display,
    p: &workload::Prepared,
    cell: &mut Cell,
) -> Result<()> {
    let stop = AtomicBool::new(false);
    let events = Mutex::new(Events::default());
    std::thread::scope(|s| {
        // The first picture is on the screen before the server starts.
        let generator = std::thread::Builder::new()
            .name("bench-generator".into())
            .spawn_scoped(s, || workload::run(d, p, &stop, &events))?;
        let r = measure_with(ctx, server, wl, enc, clients, d, &stop, &events, cell);
        stop.store(true, Ordering::SeqCst);
        match generator.join() {
            Ok(g) => g.context("workload generator")?,
            Err(_) => bail!("workload generator panicked"),
        }
        r
    })
}

#[allow(clippy::too_many_arguments)]
fn measure_with(
    ctx: &CellCtx,
    server: Server,
    wl: Workload,
    enc: Encoding,
    clients: usize,
    d: &Display,
    stop: &AtomicBool,
    events: &Mutex<Events>,
    cell: &mut Cell,
) -> Result<()> {
    let args = ctx.args;
    let drawn = Instant::now() + Duration::from_secs(30);
    while events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drawn
        .is_empty()
    {
        if Instant::now() > drawn || stop.load(Ordering::SeqCst) {
            bail!("the generator did not draw its first picture");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let proc = ServerProcess::start(
        server,
        ctx.exe,
        &ctx.xvfb.display,
        ctx.xvfb.xauthority(),
        ctx.tmp,
        &format!(
            "{}{}-{}-{}{}-{clients}",
            server.name(),
            ctx.cpus.map_or(String::new(), |n| format!("-cpus{n}")),
            wl.name(),
            enc.name(),
            ctx.compress.map_or(String::new(), |l| format!("-level{l}"))
        ),
        ctx.cpus,
    )?;
    let (tx, rx) = mpsc::channel();
    let (back_tx, back_rx) = mpsc::channel();
    let mut viewers = Vec::new();
    let compress = ctx.compress.unwrap_or(args.compress);
    let first = Viewer::connect(
        proc.addr,
        enc,
        compress,
        args.quality,
        Some(tx),
        Some(back_rx),
    )?;
    let decode = DecodeSide::start(first.width, first.height, rx, back_tx);
    viewers.push(first);
    for _ in 1..clients {
        viewers.push(Viewer::connect(
            proc.addr,
            enc,
            compress,
            args.quality,
            None,
            None,
        )?);
    }
    let result = (|| -> Result<(Instant, Instant)> {
        // Every viewer has its first (full) update.
        let deadline = Instant::now() + Duration::from_secs(60);
        while viewers
            .iter()
            .any(|v| v.counters.updates.load(Ordering::SeqCst) == 0)
        {
            if let Some(i) = viewers.iter().position(|v| v.failed()) {
                let why = viewers
                    .swap_remove(i)
                    .finish()
                    .err()
                    .map_or("it ended without an error".into(), |e| format!("{e:#}"));
                bail!("a viewer stopped before its first update: {why}");
            }
            if Instant::now() > deadline {
                bail!("no first update within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first update of viewer 1 is complete once it was counted.
        std::thread::sleep(Duration::from_secs_f64(args.warmup));
        let snap = |viewers: &[Viewer]| {
            (
                Instant::now(),
                viewers
                    .iter()
                    .map(|v| {
                        (
                            v.counters.updates.load(Ordering::SeqCst),
                            v.counters.bytes.load(Ordering::SeqCst),
                            v.counters.cpu_ticks.load(Ordering::SeqCst),
                        )
                    })
                    .collect::<Vec<_>>(),
                proc_ticks(proc.pid),
                proc_ticks(ctx.xvfb_pid),
                decode.cpu_ticks.load(Ordering::SeqCst),
            )
        };
        let a = snap(&viewers);
        cell.first_update_bytes = viewers[0]
            .counters
            .first_pixels_bytes
            .load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        let b = snap(&viewers);
        let secs = (b.0 - a.0).as_secs_f64();
        cell.seconds = secs;
        let pct = |t0: u64, t1: u64| t1.saturating_sub(t0) as f64 / ticks_per_s() / secs * 100.0;
        let ups = b.1[0].0 - a.1[0].0;
        cell.updates_per_s = ups as f64 / secs;
        cell.bytes_per_s = (b.1[0].1 - a.1[0].1) as f64 / secs;
        cell.bytes_per_update = (ups > 0).then(|| (b.1[0].1 - a.1[0].1) as f64 / ups as f64);
        cell.total_updates_per_s =
            b.1.iter()
                .zip(&a.1)
                .map(|(y, x)| (y.0 - x.0) as f64)
                .sum::<f64>()
                / secs;
        cell.server_cpu_pct = pct(a.2, b.2);
        cell.xvfb_cpu_pct = pct(a.3, b.3);
        cell.server_cpu_ms_per_update =
            (ups > 0).then(|| b.2.saturating_sub(a.2) as f64 / ticks_per_s() * 1000.0 / ups as f64);
        cell.client_cpu_pct = b.1.iter().zip(&a.1).map(|(y, x)| pct(x.2, y.2)).sum();
        let (rss, peak) = proc_rss(proc.pid);
        cell.server_rss_mib = rss;
        cell.server_peak_rss_mib = peak;
        cell.decoder_cpu_pct = pct(a.4, b.4);
        Ok((a.0, b.0))
    })();
    // Stop drawing, let the servers settle and the decoder catch up (it
    // yields to the servers while they work), compare with the screen.
    stop.store(true, Ordering::SeqCst);
    let (t0, t1) = result?;
    // Quiescence: the decoder has caught up and, for lossless encodings,
    // viewer 1 shows what is on the screen (checked again after every new
    // update, for up to 3 minutes: ten viewers of a slow server may wait
    // seconds for their last update); for JPEG, 2 s without an update.
    let settle = Instant::now() + Duration::from_secs(180);
    let mut checked = u64::MAX;
    let mut last = u64::MAX;
    let mut quiet_since = Instant::now();
    while !events.lock().unwrap_or_else(|p| p.into_inner()).finished {
        if Instant::now() > settle {
            bail!("the generator does not stop");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let screen = if enc.lossless() {
        Some(d.grab()?)
    } else {
        None
    };
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(e) = decode
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            bail!("{e}");
        }
        let now = viewers[0].counters.updates.load(Ordering::SeqCst);
        let done = decode.decoded.load(Ordering::SeqCst);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        let timeout = Instant::now() > settle;
        if done < now && !timeout {
            continue;
        }
        match &screen {
            Some(screen) if done != checked || timeout => {
                checked = done;
                let fb = decode.fb.lock().unwrap_or_else(|p| p.into_inner());
                let w = fb.width as usize;
                let mut diff = 0u64;
                let mut bbox = (usize::MAX, usize::MAX, 0, 0);
                for (i, (s, f)) in screen.iter().zip(&fb.pixels).enumerate() {
                    if *s != *f & 0x00ff_ffff {
                        diff += 1;
                        let (x, y) = (i % w, i / w);
                        bbox = (bbox.0.min(x), bbox.1.min(y), bbox.2.max(x), bbox.3.max(y));
                    }
                }
                cell.mismatched_pixels = Some(diff);
                cell.mismatch_box =
                    (diff > 0).then(|| format!("{},{} to {},{}", bbox.0, bbox.1, bbox.2, bbox.3));
                if diff == 0 || timeout {
                    break;
                }
            }
            Some(_) => {}
            None if quiet_since.elapsed() > Duration::from_secs(2) || timeout => break,
            None => {}
        }
    }
    if wl.has_marker() {
        let (a0, b0) = (t0, t1);
        // Latency: each new marker value that arrived in the window,
        // against the latest change with that number drawn before it.
        let seen = decode
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let events = events.lock().unwrap_or_else(|p| p.into_inner());
        let mut lat = Vec::new();
        for &(at, m) in seen.iter().filter(|(at, _)| *at >= a0 && *at <= b0) {
            let hit = events.drawn.iter().enumerate().rev().find(|(seq, t)| {
                *seq > 0 && *seq as u64 % workload::MARKER_VALUES == m as u64 && **t <= at
            });
            if let Some((_, t)) = hit {
                lat.push((at - *t).as_secs_f64() * 1000.0);
            }
        }
        cell.distinct_per_s = Some(lat.len() as f64 / (b0 - a0).as_secs_f64());
        lat.sort_by(f64::total_cmp);
        let q = |f: f64| {
            lat.get(((lat.len() as f64 * f) as usize).min(lat.len().saturating_sub(1)))
                .copied()
        };
        cell.latency_samples = lat.len();
        cell.latency_ms_p50 = q(0.50);
        cell.latency_ms_p95 = q(0.95);
        cell.latency_ms_p99 = q(0.99);
        cell.generator_missed_ticks = events.missed;
    }
    cell.decoded_updates = decode.decoded.load(Ordering::SeqCst);
    for v in viewers {
        v.finish()?;
    }
    decode.join();
    drop(proc);
    Ok(())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} GiB RAM, Linux {}",
        kernel.trim()
    )
}
