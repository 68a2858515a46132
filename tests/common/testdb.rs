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
