//! Knowledge-base benchmark (issue 17): the labelled set (tests/data/kb)
//! among synthetic filler tickets, recall@1/@3 and per-query latency.
//!
//!     cargo run --release --example kb_bench               # 10,000 tickets
//!     cargo run --release --example kb_bench -- 2000 /tmp/kb.db
//!
//! The journal goes to /dev/shm when there is no path (it fsyncs every
//! transaction; that is the loading time, not the search time).

#[path = "../tests/kbset/mod.rs"]
mod kbset;

use std::time::Instant;
use ticketvnc::tickets::Journal;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")?
    } else {
        tempfile::tempdir()?
    };
    let path = match args.get(2) {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("kb.db"),
    };
    let labelled = kbset::tickets();
    let filler = kbset::synthetic(total.saturating_sub(labelled.len()), 0x005e_ed17);
    let j = Journal::open(&path)?;
    let t0 = Instant::now();
    // The labelled tickets spread among the filler, not all at the start.
    let step = (filler.len() / labelled.len().max(1)).max(1);
    let mut li = labelled.iter();
    for (i, t) in filler.iter().enumerate() {
        if i % step == 0 {
            if let Some(l) = li.next() {
                kbset::load(&j, l);
            }
        }
        kbset::load(&j, t);
    }
    for l in li {
        kbset::load(&j, l);
    }
    let load = t0.elapsed();
    let n_notes: usize = labelled.iter().chain(&filler).map(|t| t.notes.len()).sum();
    println!(
        "loaded {} tickets ({} notes) in {:.1} s",
        labelled.len() + filler.len(),
        n_notes,
        load.as_secs_f64()
    );

    let qs = kbset::queries();
    // One warm-up pass (page cache, statement cache), then the measured one.
    let _ = kbset::evaluate(&j, &qs);
    let r = kbset::evaluate(&j, &qs);
    for (q, got) in &r.misses {
        println!(
            "miss [{}] {:?} -> want {}, got {got:?}",
            q.kind, q.text, q.ticket
        );
    }
    for (k, (n, f)) in &r.by_kind {
        println!("  {k:<12} recall@3 {f}/{n}");
    }
    println!(
        "recall@1 {:.3}  recall@3 {:.3}  ({} queries)",
        r.recall1(),
        r.recall3(),
        r.queries
    );
    let h = kbset::evaluate(&j, &kbset::heldout());
    for (q, got) in &h.misses {
        println!(
            "held-out miss {:?} -> want {}, got {got:?}",
            q.text, q.ticket
        );
    }
    println!(
        "held-out: recall@1 {:.3}  recall@3 {:.3}  ({} queries)",
        h.recall1(),
        h.recall3(),
        h.queries
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "latency per query: p50 {:.2} ms  p95 {:.2} ms  max {:.2} ms",
        ms(r.percentile(0.5)),
        ms(r.percentile(0.95)),
        ms(r.percentile(1.0))
    );
    drop(j);
    let c = rusqlite::Connection::open(&path)?;
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let size = std::fs::metadata(&path)?.len();
    println!("database: {:.1} MiB", size as f64 / (1 << 20) as f64);
    if let Ok(mut st) = c.prepare(
        "SELECT CASE WHEN name LIKE 'kb_vocab%' THEN 'vocabulary' WHEN name LIKE 'kb%' THEN 'kb index'
                ELSE 'journal' END AS part, SUM(pgsize) FROM dbstat GROUP BY part ORDER BY part",
    ) {
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (part, bytes) = row?;
            println!("  {part:<10} {:.1} MiB", bytes as f64 / (1 << 20) as f64);
        }
    }
    Ok(())
}
