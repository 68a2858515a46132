//! Knowledge-base quality on the labelled set (tests/data/kb): recall@3
//! must stay >= 0.9. Not a timing test: latency at 10,000 tickets is
//! measured by `cargo run --release --example kb_bench`.

#[path = "kbset/mod.rs"]
mod kbset;
#[path = "common/testdb.rs"]
mod testdb;

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: the journal fsyncs every transaction.
    if std::path::Path::new("/dev/shm").is_dir() {
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn labelled_set_is_big_enough() {
    let t = kbset::tickets();
    let q = kbset::queries();
    assert!(t.len() >= 60, "{} tickets", t.len());
    assert!(q.len() >= 120, "{} queries", q.len());
    assert!(t.iter().any(|t| t.lang == "de") && t.iter().any(|t| t.lang == "en"));
    for q in &q {
        assert!(t.iter().any(|t| t.id == q.ticket), "{q:?} names no ticket");
    }
}

#[test]
fn recall_at_3_on_the_labelled_set_is_at_least_0_9() {
    let dir = scratch();
    // sqlite, or PostgreSQL with TICKETVNC_TEST_DB=postgres (common/testdb.rs).
    let db = testdb::TestDb::new(dir.path().join("kb.db"));
    let j = db.open();
    for t in kbset::tickets() {
        kbset::load(&j, &t);
    }
    let qs = kbset::queries();
    let r = kbset::evaluate(&j, &qs);
    for (q, got) in &r.misses {
        eprintln!(
            "miss [{}] {:?} -> want {}, got {got:?}",
            q.kind, q.text, q.ticket
        );
    }
    for (k, (n, f)) in &r.by_kind {
        eprintln!("{k:<12} {f}/{n}");
    }
    eprintln!(
        "recall@1 {:.3}  recall@3 {:.3}  ({} queries, {} tickets)",
        r.recall1(),
        r.recall3(),
        r.queries,
        kbset::tickets().len()
    );
    let h = kbset::evaluate(&j, &kbset::heldout());
    for (q, got) in &h.misses {
        eprintln!(
            "held-out miss {:?} -> want {}, got {got:?}",
            q.text, q.ticket
        );
    }
    eprintln!(
        "held-out: recall@1 {:.3}  recall@3 {:.3}  ({} queries)",
        h.recall1(),
        h.recall3(),
        h.queries
    );
    assert!(r.recall3() >= 0.9, "recall@3 {:.3}", r.recall3());
}
