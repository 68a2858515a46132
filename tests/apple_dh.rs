//! Mac technicians: Screen Sharing.app's RFB 003.889 and Apple's
//! Diffie-Hellman authentication (security type 30), against the real
//! `ticketvnc serve` binary over real sockets.
//!
//! Two clients nobody on the server side shares code with:
//! - `MacViewer` below, written from the public description of type 30
//!   (rfbproto "Diffie-Hellman Authentication"; libvncclient's
//!   HandleARDAuth): it takes generator, prime and key length from the
//!   wire, and reads the framebuffer itself (Raw) to compare pixel-exact;
//! - libvncclient (Debian's libvncclient1) through `tests/clients/ard_client.c`,
//!   built here with the system C compiler and forced to type 30.
//!
//! Screen Sharing.app itself cannot run here (no macOS); the journal rows
//! these tests check are the ones a real Mac viewer produces.

mod common;

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use common::{assert_same_image, require_commands, ChildGuard};
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U2048, U256};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const W: u16 = 320;
const H: u16 = 240;
const TIMEOUT: Duration = Duration::from_secs(40);
const MAC: &[u8; 12] = b"RFB 003.889\n";
const V38: &[u8; 12] = b"RFB 003.008\n";
const TECH_PASSWORD: &str = "correct horse battery";

// ------------------------------------------------------------ the server

/// `ticketvnc --db DIR/journal.db ARGS`; panics on failure.
fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(dir.join("journal.db"))
        .args(args)
        .env("TICKETVNC_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run ticketvnc");
    assert!(
        out.status.success(),
        "ticketvnc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add_technician(dir: &Path, name: &str, password: &str) {
    let pw = dir.join(format!("{name}.pw"));
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    cli(
        dir,
        &["tech", "add", name, "--password-file", pw.to_str().unwrap()],
    );
}

fn open_ticket(dir: &Path, id: &str) -> String {
    let out = cli(dir, &["ticket", "open", id, "--title", "Mac test"]);
    out.lines()
        .find_map(|l| l.strip_prefix("One-time code: "))
        .expect("a code")
        .trim()
        .to_string()
}

/// `ticketvnc serve` on the still test pattern at W x H, on loopback.
fn serve(dir: &Path, name: &str, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    use std::io::BufRead;
    let log =
        std::fs::File::create(common::artefact_dir().join(format!("{name}-server.log"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ticketvnc"))
        .arg("--db")
        .arg(dir.join("journal.db"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--source", "test-pattern", "--fps", "0"])
        .args(["--size", &format!("{W}x{H}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("run ticketvnc");
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let server = ChildGuard(child);
    for line in out.lines() {
        let line = line.expect("serve output");
        if let Some(a) = line.strip_prefix("ticketvnc listening on ") {
            return (server, a.trim().parse().unwrap());
        }
    }
    panic!("{name}: ticketvnc exited without listening");
}

fn sessions(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&cli(dir, &["sessions", "--json"])).expect("sessions --json")
}

/// The first journal row `pick` accepts, waiting for the writer.
fn wait_row(
    dir: &Path,
    what: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(s) = sessions(dir).into_iter().find(&pick) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in {:#?}",
            sessions(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------ the client

/// A Mac-style viewer written from the public description.
struct MacViewer {
    s: TcpStream,
    /// The server's version string.
    banner: [u8; 12],
    /// The security types the server offered.
    types: Vec<u8>,
}

fn read_exact<const N: usize>(s: &mut TcpStream) -> [u8; N] {
    let mut b = [0u8; N];
    s.read_exact(&mut b).expect("read from the server");
    b
}

fn read_u32(s: &mut TcpStream) -> u32 {
    u32::from_be_bytes(read_exact(s))
}

fn read_vec(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).expect("read from the server");
    b
}

/// A reason string (u32 length, bounded), as failures carry at 3.8.
fn read_reason(s: &mut TcpStream) -> String {
    let n = read_u32(s) as usize;
    assert!(n <= 4096, "reason of {n} bytes");
    String::from_utf8_lossy(&read_vec(s, n)).into_owned()
}

impl MacViewer {
    /// Connect and exchange versions; `Err(reason)` when the server
    /// offers no type (a refusal).
    fn connect(addr: SocketAddr, version: &[u8; 12]) -> Result<MacViewer, String> {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let banner = read_exact::<12>(&mut s);
        s.write_all(version).unwrap();
        let n = read_exact::<1>(&mut s)[0] as usize;
        if n == 0 {
            return Err(read_reason(&mut s));
        }
        let types = read_vec(&mut s, n);
        Ok(MacViewer { s, banner, types })
    }

    /// SecurityResult: `Ok` or the reason.
    fn result(&mut self) -> Result<(), String> {
        match read_u32(&mut self.s) {
            0 => Ok(()),
            _ => Err(read_reason(&mut self.s)),
        }
    }

    /// Security type 30 with `user` and `password`.
    fn apple_dh(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.s.write_all(&[30]).unwrap();
        let generator = u16::from_be_bytes(read_exact(&mut self.s));
        let key_len = u16::from_be_bytes(read_exact(&mut self.s)) as usize;
        // This client does 2048-bit groups (what the server sends).
        assert_eq!(key_len, 256, "key length");
        let prime = read_vec(&mut self.s, key_len);
        let server_public = read_vec(&mut self.s, key_len);
        let p = U2048::from_be_slice(&prime);
        let params =
            FixedMontyParams::new_vartime(Odd::new(p).into_option().expect("an odd prime"));
        let private = U256::from_be_slice(&rand::random::<[u8; 32]>());
        let pow = |base: &U2048| -> Vec<u8> {
            let r = FixedMontyForm::new(base, &params).pow(&private).retrieve();
            r.to_be_bytes().as_ref().to_vec()
        };
        let public = pow(&U2048::from(generator as u64));
        // The shared secret, key_len bytes big-endian, hashed with MD5.
        let shared = pow(&U2048::from_be_slice(&server_public));
        let key = Md5::digest(&shared);
        // username[64] + password[64], each NUL-terminated, random padding.
        let mut block: [u8; 128] = std::array::from_fn(|_| rand::random());
        for (field, text) in [(0, user), (64, password)] {
            let t = text.as_bytes();
            assert!(t.len() < 64);
            block[field..field + t.len()].copy_from_slice(t);
            block[field + t.len()] = 0;
        }
        let aes = aes::Aes128::new(&key);
        for b in block.chunks_exact_mut(16) {
            aes.encrypt_block(b.try_into().unwrap());
        }
        self.s.write_all(&block).unwrap();
        self.s.write_all(&public).unwrap();
        self.result()
    }

    /// Security type 2 with `password` (DES of the challenge).
    fn vnc_auth(&mut self, password: &str) -> Result<(), String> {
        self.s.write_all(&[2]).unwrap();
        let challenge = read_exact::<16>(&mut self.s);
        let pw = ticketvnc::security::VncPassword::new(password.as_bytes());
        let r = ticketvnc::security::vnc_auth_response(&pw, &challenge);
        self.s.write_all(&r).unwrap();
        self.result()
    }

    /// ClientInit, then one full Raw update in the server's 32-bit
    /// format: the picture as 0x00RRGGBB pixels.
    fn picture(&mut self) -> (u16, u16, Vec<u32>) {
        let s = &mut self.s;
        s.write_all(&[1]).unwrap();
        let w = u16::from_be_bytes(read_exact(s));
        let h = u16::from_be_bytes(read_exact(s));
        let _pf = read_exact::<16>(s);
        let name_len = read_u32(s) as usize;
        assert!(name_len <= 4096);
        read_vec(s, name_len);
        // SetPixelFormat: 32 bpp, depth 24, little-endian, RGB at 16/8/0.
        let mut msg = vec![0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0];
        msg.extend_from_slice(&[0, 0, 0]);
        // SetEncodings: Raw only.
        msg.extend_from_slice(&[2, 0, 0, 1, 0, 0, 0, 0]);
        // FramebufferUpdateRequest, not incremental, everything.
        msg.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
        msg.extend_from_slice(&w.to_be_bytes());
        msg.extend_from_slice(&h.to_be_bytes());
        s.write_all(&msg).unwrap();
        let mut px = vec![0u32; w as usize * h as usize];
        let mut covered = 0usize;
        while covered < px.len() {
            match read_exact::<1>(s)[0] {
                0 => {
                    read_exact::<1>(s);
                    let n = u16::from_be_bytes(read_exact(s));
                    for _ in 0..n {
                        let [x, y, rw, rh] = [0; 4].map(|_: u16| u16::from_be_bytes(read_exact(s)));
                        let enc = i32::from_be_bytes(read_exact(s));
                        assert_eq!(enc, 0, "only Raw was asked for");
                        assert!(x + rw <= w && y + rh <= h, "rect out of bounds");
                        let data = read_vec(s, rw as usize * rh as usize * 4);
                        for row in 0..rh as usize {
                            for col in 0..rw as usize {
                                let i = (row * rw as usize + col) * 4;
                                let v = u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
                                px[(y as usize + row) * w as usize + x as usize + col] =
                                    v & 0xFF_FFFF;
                            }
                        }
                        covered += rw as usize * rh as usize;
                    }
                }
                2 => {} // Bell
                3 => {
                    read_exact::<3>(s);
                    let n = read_u32(s) as usize;
                    assert!(n <= 1 << 20);
                    read_vec(s, n);
                }
                t => panic!("unexpected server message {t}"),
            }
        }
        (w, h, px)
    }
}

fn assert_pattern(name: &str, (w, h, px): (u16, u16, Vec<u32>)) {
    assert_eq!((w, h), (W, H));
    assert_same_image(
        name,
        W as usize,
        H as usize,
        &common::expected(W, H, 0),
        &px,
    );
}

// ------------------------------------------------------------ tests

/// Screen Sharing.app's path: RFB 003.889, Apple DH with a technician
/// account, pixel-exact; the journal row names the account and the Mac
/// profile.
#[test]
fn mac_viewer_logs_in_with_a_technician_account() {
    let dir = tempfile::tempdir().unwrap();
    add_technician(dir.path(), "anna", TECH_PASSWORD);
    // Loopback (an SSH tunnel): type 30 without --allow-apple-dh.
    let (_server, addr) = serve(dir.path(), "apple-dh-tech", &["--ticket", "5001"]);
    let mut v = MacViewer::connect(addr, MAC).expect("offered types");
    assert_eq!(&v.banner, V38, "no 003.889 banner without --allow-apple-dh");
    assert_eq!(
        v.types[0], 30,
        "Apple DH first for a Mac viewer: {:?}",
        v.types
    );
    assert!(
        !v.types.contains(&1),
        "never None for 003.889: {:?}",
        v.types
    );
    v.apple_dh("anna", TECH_PASSWORD).expect("authenticated");
    assert_pattern("apple-dh-tech", v.picture());
    let s = wait_row(dir.path(), "running apple-dh session", |s| {
        s["end_reason"].is_null()
    });
    assert_eq!(s["security"], "apple-dh (Mac viewer)", "{s:#}");
    assert_eq!(s["technician"], "anna", "{s:#}");
    assert_eq!(s["credential"], "technician account", "{s:#}");
    assert_eq!(s["ticket"], "5001", "{s:#}");
}

/// A one-time code as the password (empty name, as a technician without
/// an account types it), used once; a wrong password is refused with a
/// reason and journaled with the Mac profile; a used code is refused.
#[test]
fn mac_viewer_one_time_code_wrong_password_and_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let code = open_ticket(dir.path(), "5002");
    let (_server, addr) = serve(dir.path(), "apple-dh-code", &[]);

    let mut v = MacViewer::connect(addr, MAC).unwrap();
    let err = v
        .apple_dh("", "not-the-code")
        .expect_err("a wrong password");
    assert_eq!(err, "authentication failed");
    let failed = wait_row(dir.path(), "failed login", |s| {
        s["end_reason"] == "auth failed"
    });
    assert_eq!(failed["security"], "apple-dh (Mac viewer)", "{failed:#}");

    // A name that is no account: the password is still checked as a code.
    let mut v = MacViewer::connect(addr, MAC).unwrap();
    v.apple_dh("someone", &code).expect("the code lets in");
    assert_pattern("apple-dh-code", v.picture());
    let s = wait_row(dir.path(), "running session", |s| s["end_reason"].is_null());
    assert_eq!(s["ticket"], "5002", "{s:#}");
    assert!(
        s["credential"]
            .as_str()
            .unwrap()
            .starts_with("one-time code #"),
        "{s:#}"
    );
    assert!(
        s["technician"].is_null(),
        "an unchecked name is not a technician: {s:#}"
    );
    drop(v);

    let mut v = MacViewer::connect(addr, MAC).unwrap();
    assert_eq!(
        v.apple_dh("", &code).expect_err("single use"),
        "authentication failed"
    );
}

/// Screen Sharing.app's other choice: VNC authentication with an
/// 8-character password still works for a 003.889 viewer, and is
/// journaled as a downgrade.
#[test]
fn mac_viewer_vnc_auth_with_an_8_character_password() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("vnc.pw");
    std::fs::write(&pw, "pa55w0rd\n").unwrap();
    let (_server, addr) = serve(
        dir.path(),
        "apple-dh-vncauth",
        &["--password-file", pw.to_str().unwrap(), "--ticket", "5003"],
    );
    let mut v = MacViewer::connect(addr, MAC).unwrap();
    assert!(v.types.contains(&2), "{:?}", v.types);
    v.vnc_auth("pa55w0rd").expect("VNC authentication");
    assert_pattern("apple-dh-vncauth", v.picture());
    let s = wait_row(dir.path(), "running session", |s| s["end_reason"].is_null());
    assert_eq!(
        s["security"], "vnc-auth (Mac viewer; downgrade: chose it over apple-dh)",
        "{s:#}"
    );
    assert_eq!(s["credential"], "static password", "{s:#}");
    // The same password over Apple DH (Screen Sharing sends the name of
    // the Mac's user along; no such account, so the password counts).
    let mut v = MacViewer::connect(addr, MAC).unwrap();
    v.apple_dh("tech", "pa55w0rd")
        .expect("Apple DH with the static password");
    assert_pattern("apple-dh-static", v.picture());
}

/// `--allow-apple-dh`: the server says 003.889 (so Screen Sharing.app
/// answers with it instead of 3.3) and other viewers see type 30 last;
/// a 3.8 viewer that is not a Mac is journaled as a downgrade when it
/// takes 30 over VeNCrypt.
#[test]
fn allow_apple_dh_sends_the_apple_version() {
    let dir = tempfile::tempdir().unwrap();
    add_technician(dir.path(), "bob", TECH_PASSWORD);
    let (_server, addr) = serve(dir.path(), "apple-dh-allow", &["--allow-apple-dh"]);
    let mut v = MacViewer::connect(addr, V38).unwrap();
    assert_eq!(&v.banner, MAC);
    assert_eq!(v.types.last(), Some(&30), "{:?}", v.types);
    assert_eq!(v.types[0], 19, "VeNCrypt stays first: {:?}", v.types);
    v.apple_dh("bob", TECH_PASSWORD).expect("authenticated");
    assert_pattern("apple-dh-allow", v.picture());
    let s = wait_row(dir.path(), "running session", |s| s["end_reason"].is_null());
    assert_eq!(
        s["security"], "apple-dh (downgrade: chose it over VeNCrypt)",
        "{s:#}"
    );
    assert_eq!(s["technician"], "bob", "{s:#}");
}

/// Without --allow-apple-dh and off loopback a Mac viewer is not offered
/// type 30; with it, it is (the offer is computed without traffic).
#[test]
fn off_loopback_apple_dh_needs_the_flag() {
    use ticketvnc::rfb::SecurityType;
    use ticketvnc::security::{StaticPassword, VncPassword};
    let auth = std::sync::Arc::new(StaticPassword {
        password: VncPassword::new(b"x"),
        ticket: None,
    });
    let off: SocketAddr = "192.0.2.10:5900".parse().unwrap();
    let lo: SocketAddr = "127.0.0.1:5900".parse().unwrap();
    let mut cfg = ticketvnc::server::ServerConfig::new(vec![off, lo], Some(auth));
    cfg.insecure = true; // bare types off loopback, so the lists are comparable
    let o = cfg.offer_for(off).unwrap();
    assert_eq!(o.mac.as_deref(), Some(&[SecurityType::VncAuth][..]));
    assert!(!o.apple_version);
    let o = cfg.offer_for(lo).unwrap();
    assert_eq!(
        o.mac.as_deref(),
        Some(&[SecurityType::AppleDh, SecurityType::VncAuth][..])
    );
    cfg.allow_apple_dh = true;
    let o = cfg.offer_for(off).unwrap();
    assert_eq!(
        o.mac.as_deref(),
        Some(&[SecurityType::AppleDh, SecurityType::VncAuth][..])
    );
    assert_eq!(o.types.last(), Some(&SecurityType::AppleDh));
    assert!(o.apple_version);
}

/// Wrong Apple DH passwords count against the same per-address budget as
/// other types: after five, the address is locked out and told why.
#[test]
fn apple_dh_failures_lock_the_address_out() {
    let dir = tempfile::tempdir().unwrap();
    add_technician(dir.path(), "anna", TECH_PASSWORD);
    let (_server, addr) = serve(dir.path(), "apple-dh-lockout", &[]);
    for i in 0..5 {
        let mut v = MacViewer::connect(addr, MAC).unwrap();
        let err = v
            .apple_dh("anna", &format!("guess {i}"))
            .expect_err("wrong");
        assert_eq!(err, "authentication failed");
    }
    let refused = match MacViewer::connect(addr, MAC) {
        Err(reason) => reason,
        // Or refused when the credential would be checked.
        Ok(mut v) => v.apple_dh("anna", TECH_PASSWORD).expect_err("locked out"),
    };
    assert!(
        refused.starts_with("too many failed authentications from this address"),
        "{refused}"
    );
}

/// A degenerate public key (0) is refused with a reason before any
/// credential is looked at, and journaled as a refusal.
#[test]
fn apple_dh_degenerate_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    add_technician(dir.path(), "anna", TECH_PASSWORD);
    let (_server, addr) = serve(dir.path(), "apple-dh-badkey", &[]);
    let mut v = MacViewer::connect(addr, MAC).unwrap();
    v.s.write_all(&[30]).unwrap();
    read_exact::<4>(&mut v.s);
    read_vec(&mut v.s, 512);
    // Sent in two parts with a pause: the server waits for the whole.
    v.s.write_all(&[0u8; 200]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    v.s.write_all(&[0u8; 184]).unwrap();
    assert_eq!(
        v.result().expect_err("refused"),
        "invalid Apple DH public key from the client"
    );
    let mut rest = Vec::new();
    v.s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the reason");
    // Refusals are journaled as failed logins with their reason.
    let row = wait_row(dir.path(), "refusal", |s| s["end_reason"] == "auth failed");
    assert_eq!(row["security"], "apple-dh (Mac viewer)", "{row:#}");
}

// ------------------------------------------------------------ libvncclient

/// Build tests/clients/ard_client.c against libvncclient.
fn ard_client() -> PathBuf {
    require_commands(&["cc"]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ard_client.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ard_client");
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-lvncclient")
        .status()
        .expect("run cc");
    assert!(
        st.success(),
        "building {} failed: is libvncserver-dev installed (scripts/install-deps.sh)?",
        src.display()
    );
    out
}

/// An independent implementation of type 30 (libvncclient's
/// HandleARDAuth, with a 3.8 handshake) against the server: the right
/// password gets the picture pixel-exact, a wrong one exits refused.
#[test]
fn libvncclient_apple_dh_cross_check() {
    let client = ard_client();
    let dir = tempfile::tempdir().unwrap();
    add_technician(dir.path(), "anna", TECH_PASSWORD);
    let (_server, addr) = serve(dir.path(), "apple-dh-libvnc", &["--allow-apple-dh"]);
    let rgb = dir.path().join("fb.rgb");
    let run = |user: &str, pass: &str| {
        Command::new(&client)
            .args(["127.0.0.1", &addr.port().to_string(), user, pass])
            .arg(&rgb)
            .stdin(Stdio::null())
            .output()
            .expect("run ard_client")
    };
    let out = run("anna", TECH_PASSWORD);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ard_client: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok {W}x{H}")
    );
    let px = common::rgb_bytes_to_pixels(&std::fs::read(&rgb).unwrap());
    assert_same_image(
        "apple-dh-libvncclient",
        W as usize,
        H as usize,
        &common::expected(W, H, 0),
        &px,
    );
    let s = wait_row(dir.path(), "libvncclient session", |s| {
        s["technician"] == "anna" && s["end_reason"] != "auth failed"
    });
    assert_eq!(
        s["security"], "apple-dh (downgrade: chose it over VeNCrypt)",
        "{s:#}"
    );

    let out = run("anna", "wrong horse");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = wait_row(dir.path(), "failed login", |s| {
        s["end_reason"] == "auth failed"
    });
    assert_eq!(failed["technician"], "anna", "{failed:#}");
}

// ------------------------------------------------------------ keyboard

/// An in-process server on the test pattern with VNC password
/// "pa55w0rd", its input going to `input`.
struct InProcess {
    rt: Option<tokio::runtime::Runtime>,
    handle: ticketvnc::server::ServerHandle,
    addr: SocketAddr,
}

impl InProcess {
    fn start(
        input: std::sync::Arc<dyn ticketvnc::input::InputSink>,
        tweak: impl FnOnce(&mut ticketvnc::server::ServerConfig),
    ) -> InProcess {
        use ticketvnc::security::{Authenticator, StaticPassword, VncPassword};
        let auth: std::sync::Arc<dyn Authenticator> = std::sync::Arc::new(StaticPassword {
            password: VncPassword::new(b"pa55w0rd"),
            ticket: None,
        });
        let mut cfg =
            ticketvnc::server::ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()], Some(auth));
        tweak(&mut cfg);
        let (pattern, _control) = ticketvnc::capture::test_pattern::TestPattern::new(W, H, 0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt
            .block_on(ticketvnc::server::start(cfg, Box::new(pattern), input))
            .expect("server starts");
        let addr = handle.local_addrs()[0];
        InProcess {
            rt: Some(rt),
            handle,
            addr,
        }
    }

    /// A viewer (sending `version`) that logs in, gets its picture and
    /// presses `keys` without releasing them.
    fn press(&self, version: &[u8; 12], keys: &[u32]) -> MacViewer {
        let mut v = MacViewer::connect(self.addr, version).unwrap();
        v.vnc_auth("pa55w0rd").expect("in");
        v.picture();
        for k in keys {
            let mut msg = vec![4, 1, 0, 0];
            msg.extend_from_slice(&k.to_be_bytes());
            v.s.write_all(&msg).unwrap();
        }
        v
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.stopper().stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

const SUPER_L: u32 = 0xffeb;
const ALT_L: u32 = 0xffe9;
const CONTROL_L: u32 = 0xffe3;

fn key(down: bool, keysym: u32) -> ticketvnc::input::InputEvent {
    ticketvnc::input::InputEvent::Key { down, keysym }
}

/// Wait until `rec` holds every event of `want`.
fn wait_events(
    rec: &ticketvnc::input::RecordingInput,
    want: &[ticketvnc::input::InputEvent],
) -> Vec<ticketvnc::input::InputEvent> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ev = rec.events();
        if want.iter().all(|w| ev.contains(w)) {
            return ev;
        }
        assert!(Instant::now() < deadline, "{want:?} not all in {ev:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--keyboard mac` (Command and Control swapped) in front of a recording
/// input sink: a Mac viewer holds Command (Super_L) and Option (Alt_L)
/// and goes away without letting go. The desktop got Control and Alt
/// pressed, and gets both released when the viewer leaves, as what they
/// were injected as (a release of Super would leave Control stuck).
#[test]
fn mac_keyboard_held_command_is_released_on_disconnect() {
    use std::sync::Arc;
    use ticketvnc::input::mac_keys::MacKeyboard;
    use ticketvnc::input::RecordingInput;
    let rec = Arc::new(RecordingInput::default());
    let srv = InProcess::start(Arc::new(MacKeyboard::new(rec.clone())), |_| {});
    drop(srv.press(MAC, &[SUPER_L, ALT_L]));
    let ev = wait_events(&rec, &[key(false, CONTROL_L), key(false, ALT_L)]);
    assert_eq!(ev[..2], [key(true, CONTROL_L), key(true, ALT_L)], "{ev:?}");
    assert!(!ev.contains(&key(false, SUPER_L)), "{ev:?}");
}

/// `--keyboard auto` (the default; `mac_viewer_keyboard`): a Mac viewer's
/// Command is Control on the customer's PC, another viewer's Super stays
/// Super; the Mac viewer's held Command is released as Control when it
/// leaves.
#[test]
fn mac_viewers_get_the_mac_keyboard_automatically() {
    use std::sync::Arc;
    use ticketvnc::input::RecordingInput;
    let rec = Arc::new(RecordingInput::default());
    let srv = InProcess::start(rec.clone(), |c| c.mac_viewer_keyboard = true);
    let pc = srv.press(V38, &[SUPER_L]);
    wait_events(&rec, &[key(true, SUPER_L)]);
    drop(srv.press(MAC, &[SUPER_L]));
    let ev = wait_events(&rec, &[key(true, CONTROL_L), key(false, CONTROL_L)]);
    assert!(
        !ev.contains(&key(false, SUPER_L)),
        "the PC viewer still holds Super: {ev:?}"
    );
    drop(pc);
    wait_events(&rec, &[key(false, SUPER_L)]);
}
