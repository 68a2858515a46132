//! The journal test matrix (issue 15): the journal test files run on the
//! backend `TICKETVNC_TEST_DB` names, so CI runs them twice and no test is
//! copied:
//!
//! - unset or `sqlite`: an sqlite file in the test's directory;
//! - `postgres`: a private PostgreSQL cluster per test (common/pg.rs;
//!   initdb, loopback, stopped by PID when the test ends) and a fresh
//!   database in it.
//!
//! A [`TestDb`] derefs to the `--db` value as a `Path` (a file, or a
//! `postgres://` URL, which `--db` reads as a URL), so `.arg("--db").arg(&db)`
//! works unchanged on both backends; [`TestDb::open`] opens it in-process.
//! Cases that look inside the sqlite file itself ask [`TestDb::is_pg`].

#![allow(dead_code)]

#[path = "pg.rs"]
pub mod pg;

use std::path::{Path, PathBuf};
use ticketvnc::tickets::{ChainKey, DbTarget, Journal};

/// The backend of this test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `TICKETVNC_TEST_DB`; anything but `sqlite`, `postgres` is a mistake.
pub fn backend() -> Backend {
    match std::env::var("TICKETVNC_TEST_DB").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") | Ok("pg") => Backend::Postgres,
        Ok(other) => panic!("TICKETVNC_TEST_DB={other:?}: use sqlite or postgres"),
    }
}

/// On PostgreSQL every machine needs the team's code key file: one for
/// the whole test process (the environment is process-wide, and the
/// ticketvnc processes a test starts inherit it; each test database
/// records the fingerprint of the same key).
fn use_test_code_key() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // In cargo's temporary directory for tests, one per test process.
        let dir =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ticketvnc-test-code-keys");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join(format!("{}.key", std::process::id()));
        let _ = std::fs::remove_file(&key);
        std::env::set_var("TICKETVNC_CODE_KEY_FILE", key);
    });
}

/// One journal for one test.
pub struct TestDb {
    arg: PathBuf,
    cluster: Option<pg::PgCluster>,
}

impl TestDb {
    /// A journal at `file` on sqlite, or a fresh database in a private
    /// cluster on PostgreSQL.
    pub fn new(file: PathBuf) -> TestDb {
        match backend() {
            Backend::Sqlite => TestDb {
                arg: file,
                cluster: None,
            },
            Backend::Postgres => {
                use_test_code_key();
                let mut c = pg::PgCluster::start();
                let url = c.fresh_db();
                TestDb {
                    arg: PathBuf::from(url),
                    cluster: Some(c),
                }
            }
        }
    }

    /// Another empty journal beside this one (same cluster on PostgreSQL).
    pub fn sibling(&mut self, file: PathBuf) -> PathBuf {
        match &mut self.cluster {
            None => file,
            Some(c) => PathBuf::from(c.fresh_db()),
        }
    }

    pub fn is_pg(&self) -> bool {
        self.cluster.is_some()
    }

    pub fn cluster(&mut self) -> Option<&mut pg::PgCluster> {
        self.cluster.as_mut()
    }

    /// The `--db` value as a string (a path or a URL).
    pub fn url(&self) -> String {
        self.arg.to_str().expect("utf-8 test path").to_owned()
    }

    pub fn target(&self) -> DbTarget {
        DbTarget::from_arg(Some(&self.arg)).unwrap()
    }

    /// Opens the journal in this process (a plain thread: the sync
    /// PostgreSQL client must not run on a tokio thread).
    pub fn open(&self) -> Journal {
        self.open_with_key(None)
    }

    pub fn open_with_key(&self, key: Option<ChainKey>) -> Journal {
        Journal::open_target(&self.target(), key).unwrap()
    }

    /// A superuser connection to the test database (PostgreSQL only).
    pub fn pg_client(&self) -> postgres::Client {
        assert!(self.is_pg());
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }
}

impl std::ops::Deref for TestDb {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.arg
    }
}

impl AsRef<std::ffi::OsStr> for TestDb {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.arg.as_os_str()
    }
}

impl AsRef<Path> for TestDb {
    fn as_ref(&self) -> &Path {
        &self.arg
    }
}

/// Is this `--db` value a PostgreSQL URL (a [`TestDb`] on PostgreSQL or
/// one of its siblings)?
pub fn is_url(db: &Path) -> bool {
    db.to_str().is_some_and(|s| s.starts_with("postgres://"))
}

/// Opens the journal a `--db` value names, in this process.
pub fn open(db: &Path) -> Journal {
    Journal::open_target(&DbTarget::from_arg(Some(db)).unwrap(), None).unwrap()
}

/// Runs SQL statements as the file's owner / the superuser: an edit
/// outside ticketvnc, with triggers firing as for any other writer. On
/// sqlite foreign keys are not enforced (as in the sqlite3 shell).
pub fn exec_sql(db: &Path, sql: &str) {
    exec(db, sql, false)
}

/// [`exec_sql`] past the foreign keys on PostgreSQL too
/// (`session_replication_role = replica`, which also skips triggers): a
/// superuser deleting a row others point to.
pub fn exec_sql_past_fks(db: &Path, sql: &str) {
    exec(db, sql, true)
}

fn exec(db: &Path, sql: &str, past_fks: bool) {
    if is_url(db) {
        let (url, sql) = (db.to_str().unwrap().to_owned(), sql.to_owned());
        let sql = if past_fks {
            format!("SET session_replication_role = replica; {sql}")
        } else {
            sql
        };
        pg::off_runtime(move || {
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        });
    } else {
        let c = rusqlite::Connection::open(db).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c.execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The first column of every row of a query, one per line (as the
/// sqlite3 shell prints it).
pub fn query_text(db: &Path, sql: &str) -> String {
    let rows: Vec<Option<String>> = if is_url(db) {
        let (url, sql) = (db.to_str().unwrap().to_owned(), sql.to_owned());
        pg::off_runtime(move || {
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .query(&format!("SELECT x::TEXT FROM ({sql}) AS q(x)"), &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
    } else {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c.prepare(sql).unwrap();
        let rows: Vec<Option<String>> = st
            .query_map([], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                    rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        Some(String::from_utf8_lossy(t).into_owned())
                    }
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    };
    rows.into_iter()
        .map(|r| r.unwrap_or_default() + "\n")
        .collect()
}

impl TestDb {
    /// Runs one SQL statement as the superuser / file owner (an edit
    /// outside ticketvnc, for tests that tamper). `$1`-style on both: on
    /// sqlite `?1` is written `$1` too.
    pub fn exec(&self, sql: &str, arg: i64) {
        let sql = sql.to_owned();
        if self.is_pg() {
            let url = self.url();
            pg::off_runtime(move || {
                postgres::Client::connect(&url, postgres::NoTls)
                    .unwrap()
                    .execute(&sql, &[&arg])
                    .unwrap()
            });
        } else {
            rusqlite::Connection::open(&self.arg)
                .unwrap()
                .execute(&sql, [arg])
                .unwrap();
        }
    }

    /// One integer from a query (same SQL on both backends).
    pub fn query_i64(&self, sql: &str) -> i64 {
        let sql = sql.to_owned();
        if self.is_pg() {
            let url = self.url();
            pg::off_runtime(move || {
                postgres::Client::connect(&url, postgres::NoTls)
                    .unwrap()
                    .query_one(&sql, &[])
                    .unwrap()
                    .get(0)
            })
        } else {
            rusqlite::Connection::open(&self.arg)
                .unwrap()
                .query_row(&sql, [], |r| r.get(0))
                .unwrap()
        }
    }

    /// Everything stored in the journal as text (PostgreSQL: every row of
    /// every table; sqlite: the file, its WAL and shm), to show a secret
    /// is nowhere in it.
    pub fn contents(&self) -> Vec<u8> {
        if self.is_pg() {
            let url = self.url();
            pg::off_runtime(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let tables: Vec<String> = c
                    .query(
                        "SELECT tablename::TEXT FROM pg_tables WHERE schemaname = 'public'",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut out = Vec::new();
                for t in tables {
                    for r in c.query(&format!("SELECT t::TEXT FROM {t} t"), &[]).unwrap() {
                        out.extend_from_slice(r.get::<_, String>(0).as_bytes());
                        out.push(b'\n');
                    }
                }
                out
            })
        } else {
            let mut out = Vec::new();
            for s in ["", "-wal", "-shm"] {
                let p = PathBuf::from(format!("{}{s}", self.arg.display()));
                out.extend(std::fs::read(p).unwrap_or_default());
            }
            out
        }
    }

    /// Holds the journal's write lock until the guard is released: the
    /// sqlite3 shell in `BEGIN IMMEDIATE`, or on PostgreSQL a session
    /// holding the chain's advisory lock (the one every writer takes).
    pub fn hold_write_lock(&self) -> WriteLock {
        if self.is_pg() {
            let url = self.url();
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                // tickets::pg::CHAIN_LOCK.
                c.execute("SELECT pg_advisory_lock($1)", &[&0x7469_636b_6574_0001i64])
                    .unwrap();
                ready_tx.send(()).unwrap();
                let _ = rx.recv();
                c.execute(
                    "SELECT pg_advisory_unlock($1)",
                    &[&0x7469_636b_6574_0001i64],
                )
                .unwrap();
            });
            ready_rx.recv().unwrap();
            WriteLock::Pg(Some((tx, t)))
        } else {
            use std::io::{BufRead, BufReader, Write};
            let mut shell = std::process::Command::new("sqlite3")
                .arg(&self.arg)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the sqlite3 shell is installed");
            let mut shell_in = shell.stdin.take().unwrap();
            writeln!(
                shell_in,
                ".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';"
            )
            .unwrap();
            let mut line = String::new();
            BufReader::new(shell.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "locked");
            WriteLock::Sqlite(Some((shell, shell_in)))
        }
    }
}

/// See [`TestDb::hold_write_lock`].
pub enum WriteLock {
    Sqlite(Option<(std::process::Child, std::process::ChildStdin)>),
    Pg(Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>),
}

impl WriteLock {
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        match self {
            WriteLock::Sqlite(s) => {
                if let Some((mut shell, mut shell_in)) = s.take() {
                    use std::io::Write;
                    writeln!(shell_in, "COMMIT;").unwrap();
                    drop(shell_in);
                    assert!(shell.wait().unwrap().success());
                }
            }
            WriteLock::Pg(p) => {
                if let Some((tx, t)) = p.take() {
                    let _ = tx.send(());
                    t.join().unwrap();
                }
            }
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.release_now();
        }
    }
}
