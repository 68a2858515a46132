//! A real viewer (vnc-rs, its own DES) against the real server with the
//! journal's `CodeAuthenticator`: the code gets in once, then never again.
//! (Session rows come when the lead wires the journal into the session host.)

mod binary;
#[path = "common/testdb.rs"]
mod testdb;

use std::sync::Arc;
use std::time::Duration;
use ticketvnc::capture::test_pattern::TestPattern;
use ticketvnc::input::NullInput;
use ticketvnc::security::VncPassword;
use ticketvnc::server::{self, ServerConfig};
use ticketvnc::tickets::CodeAuthenticator;

async fn viewer(addr: std::net::SocketAddr, password: String) -> Result<(), vnc::VncError> {
    binary::viewer(addr, password, false).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_code_lets_a_real_viewer_in_once() {
    let dir = tempfile::tempdir().unwrap();
    // sqlite, or PostgreSQL with TICKETVNC_TEST_DB=postgres (common/testdb.rs).
    let db = testdb::TestDb::new(dir.path().join("ticketvnc.db"));
    let j = Arc::new(db.open());
    j.open_ticket("4711", Some("Printer offline")).unwrap();
    let code = j.issue_code("4711", Duration::from_secs(600)).unwrap().code;
    let auth = CodeAuthenticator::new(j.clone(), Some(VncPassword::new(b"static1")), None).unwrap();
    let cfg = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()], Some(Arc::new(auth)));
    let handle = server::start(
        cfg,
        Box::new(TestPattern::new(64, 48, 0).0),
        Arc::new(NullInput),
    )
    .await
    .unwrap();
    let addr = handle.local_addrs()[0];

    viewer(addr, code.clone())
        .await
        .expect("first use of the code");
    assert!(
        viewer(addr, code.clone()).await.is_err(),
        "the code worked twice"
    );
    assert!(viewer(addr, "WRONG234".into()).await.is_err());
    // The static password keeps working alongside codes.
    viewer(addr, "static1".into())
        .await
        .expect("static password");
    viewer(addr, "static1".into())
        .await
        .expect("static password again");
    let used = j
        .events(None)
        .unwrap()
        .iter()
        .filter(|e| e.kind == "code_used")
        .count();
    assert_eq!(used, 1);
    handle.shutdown().await.unwrap();
}
