//! A private PostgreSQL cluster per test: `initdb` into a temporary
//! directory, `postgres` listening on 127.0.0.1 on a free port (and on a
//! unix socket inside that directory, nowhere else), stopped by PID when
//! the guard drops. PostgreSQL refuses to run as root, so as root the
//! cluster runs as the `postgres` system user (Debian's package creates
//! it). Debian's `postgresql` package is installed by
//! scripts/install-deps.sh; a missing PostgreSQL fails the test, it never
//! skips it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of initdb/postgres: the newest /usr/lib/postgresql/N/bin
/// (Debian keeps them off PATH), else PATH.
pub fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.exists().then_some((v, p))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, p)) => p,
        None => PathBuf::from(name),
    }
}

/// (uid, gid) to run PostgreSQL as: the `postgres` user when we are root.
fn run_as() -> Option<(u32, u32)> {
    if rustix::process::getuid().as_raw() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            return Some((f[2].parse().unwrap(), f[3].parse().unwrap()));
        }
    }
    panic!(
        "running as root, but there is no `postgres` user to run PostgreSQL as: \
         install Debian's postgresql package (scripts/install-deps.sh)"
    );
}

fn command(bin: &Path, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = user {
        use std::os::unix::process::CommandExt;
        c.uid(uid).gid(gid);
    }
    c
}

/// A temporary directory owned by the user PostgreSQL runs as.
fn private_dir(user: Option<(u32, u32)>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ticketvnc-pg-")
        .tempdir()
        .unwrap();
    if let Some((uid, gid)) = user {
        rustix::fs::chown(
            dir.path(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    dir
}

/// The data directory of a freshly initialised cluster (superuser
/// `postgres`, trust, UTF8, C locale), made once per build and PostgreSQL
/// version in cargo's temporary directory for tests and copied by every
/// [`PgCluster`]. Built aside and renamed into place, so test binaries
/// running at once never see half of one.
fn template(user: Option<(u32, u32)>) -> PathBuf {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let initdb = pg_bin("initdb");
            let version: String = initdb
                .to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_digit())
                .collect();
            let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let done = base.join(format!("pg-template-{version}"));
            if done.join("PG_VERSION").exists() {
                return done;
            }
            let scratch = private_dir(user);
            let out = command(&initdb, user)
                .arg("-D")
                .arg(scratch.path().join("data"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {} ({e}): install Debian's postgresql package \
                         (scripts/install-deps.sh)",
                        initdb.display()
                    )
                });
            assert!(
                out.status.success(),
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::create_dir_all(&base).unwrap();
            let aside = base.join(format!("pg-template-{version}.{}.tmp", std::process::id()));
            let _ = std::fs::remove_dir_all(&aside);
            let status = Command::new("cp")
                .arg("-a")
                .arg(scratch.path().join("data"))
                .arg(&aside)
                .status()
                .expect("cp");
            assert!(status.success(), "copying the new cluster failed");
            // Another test binary may have won the race: theirs is as good.
            if std::fs::rename(&aside, &done).is_err() {
                let _ = std::fs::remove_dir_all(&aside);
            }
            assert!(done.join("PG_VERSION").exists());
            done
        })
        .clone()
}

/// Runs `f` on a thread of its own (the sync postgres client panics on a
/// thread of a tokio runtime, as in a `#[tokio::test]`).
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running private cluster. Superuser `postgres`, trust authentication
/// on loopback and the socket only.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    user: Option<(u32, u32)>,
    child: Option<Child>,
    next_db: u32,
    /// `ssl=on` with these certificate and key files.
    tls: Option<(PathBuf, PathBuf)>,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let mut c = PgCluster::init();
        c.start_server();
        c
    }

    /// A cluster with `ssl=on` (this certificate chain and key, PEM) that
    /// accepts TCP connections over TLS only (`hostssl` in pg_hba.conf;
    /// plain TCP is rejected), and trusts the unix socket.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PgCluster {
        let mut c = PgCluster::init();
        let cert = c.dir.path().join("server.crt");
        let key = c.dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(
            c.data_dir().join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        for f in [&cert, &key] {
            if let Some((uid, gid)) = c.user {
                rustix::fs::chown(
                    f,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .unwrap();
            }
        }
        c.tls = Some((cert, key));
        c.start_server();
        c
    }

    fn init() -> PgCluster {
        let user = run_as();
        let dir = private_dir(user);
        // A copy of a cluster initialised once per build: initdb takes
        // seconds (a few per test case, times every case of the journal
        // suite on PostgreSQL), a copy of its data directory a fraction.
        let status = Command::new("cp")
            .arg("-a")
            .arg(template(user))
            .arg(dir.path().join("data"))
            .status()
            .expect("cp");
        assert!(status.success(), "copying the template cluster failed");
        PgCluster {
            dir,
            port: 0,
            user,
            child: None,
            next_db: 0,
            tls: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after [`PgCluster::kill`]) on the same
    /// port when it has one, and waits until it accepts connections.
    pub fn start_server(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut tries = 0;
        loop {
            tries += 1;
            if self.port == 0 || tries > 1 && self.port_taken() {
                self.port = free_port();
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("server.log"))
                .unwrap();
            if let Some((uid, gid)) = self.user {
                let _ = rustix::fs::chown(
                    self.dir.path().join("server.log"),
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                );
            }
            let mut cmd = command(&pg_bin("postgres"), self.user);
            if let Some((cert, key)) = &self.tls {
                cmd.args(["-c", "ssl=on", "-c"])
                    .arg(format!("ssl_cert_file={}", cert.display()))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", key.display()));
            }
            let child = cmd
                .arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-k")
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "max_connections=60"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            self.child = Some(child);
            if self.wait_ready() {
                return;
            }
            self.kill();
            assert!(tries < 5, "postgres did not start: {}", self.log());
        }
    }

    fn port_taken(&self) -> bool {
        TcpListener::bind(("127.0.0.1", self.port)).is_err()
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited (port taken?)
            }
            let url = self.socket_url("postgres");
            if off_runtime(move || postgres::Client::connect(&url, postgres::NoTls).is_ok()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The superuser over the cluster's unix socket (no TLS there).
    pub fn socket_url(&self, db: &str) -> String {
        let dir: String = self
            .dir
            .path()
            .to_str()
            .unwrap()
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                b => (b as char).to_string(),
            })
            .collect();
        format!("postgres://postgres@{dir}:{}/{db}", self.port)
    }

    /// A superuser connection to `db` (from a plain thread: the sync
    /// client cannot run on a tokio thread; see [`off_runtime`]).
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.socket_url(db), postgres::NoTls).unwrap()
    }

    /// A new empty database; its URL.
    pub fn fresh_db(&mut self) -> String {
        self.next_db += 1;
        let name = format!("t{}", self.next_db);
        let url = self.socket_url("postgres");
        off_runtime(move || {
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap()
        });
        let name = format!("t{}", self.next_db);
        self.url(&name)
    }

    /// The postmaster's PID (from the child we started).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL to the postmaster and every backend it started (found by
    /// their parent PID): the database server dies as a machine that lost
    /// power would, without closing any connection politely.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let backends = children_of(c.id());
            let _ = c.kill();
            for pid in &backends {
                if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            let _ = c.wait();
            let deadline = Instant::now() + Duration::from_secs(30);
            while backends
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A fast shutdown (SIGINT to the postmaster, by PID) and a wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// PIDs whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|r| r.1) else {
            continue;
        };
        if rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            v.push(n);
        }
    }
    v
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
