//! ClientInit's shared flag over real sockets: shared viewers coexist; a
//! viewer that asks for exclusive access disconnects the others.

use std::sync::Arc;
use std::time::Duration;
use ticketvnc::capture::test_pattern::TestPattern;
use ticketvnc::input::NullInput;
use ticketvnc::server::{self, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Handshake with security None up to ServerInit.
async fn join(addr: std::net::SocketAddr, shared: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut v = [0u8; 12];
    s.read_exact(&mut v).await.unwrap();
    assert_eq!(&v, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").await.unwrap();
    let n = s.read_u8().await.unwrap();
    let mut types = vec![0u8; n as usize];
    s.read_exact(&mut types).await.unwrap();
    assert_eq!(types, vec![1]);
    s.write_all(&[1]).await.unwrap();
    assert_eq!(s.read_u32().await.unwrap(), 0, "SecurityResult");
    s.write_all(&[shared as u8]).await.unwrap();
    let mut init = [0u8; 24];
    s.read_exact(&mut init).await.unwrap();
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
    let mut name = vec![0u8; name_len as usize];
    s.read_exact(&mut name).await.unwrap();
    s
}

/// True when the server closes `s` (EOF) within `wait`.
async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // updates are fine; keep reading
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_viewer_disconnects_shared_ones() {
    let cfg = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()], None);
    let h = server::start(
        cfg,
        Box::new(TestPattern::new(64, 48, 0).0),
        Arc::new(NullInput),
    )
    .await
    .unwrap();
    let addr = h.local_addrs()[0];
    let mut a = join(addr, true).await;
    let mut b = join(addr, true).await;
    // Both shared viewers stay.
    let short = Duration::from_millis(500);
    let long = Duration::from_secs(10);
    assert!(!closed(&mut a, short).await);
    assert!(!closed(&mut b, short).await);
    assert_eq!(h.viewer_count(), 2);
    // An exclusive one disconnects them and stays itself.
    let mut c = join(addr, false).await;
    assert!(
        closed(&mut a, long).await,
        "shared viewer A survived an exclusive ClientInit"
    );
    assert!(
        closed(&mut b, long).await,
        "shared viewer B survived an exclusive ClientInit"
    );
    assert!(
        !closed(&mut c, short).await,
        "the exclusive viewer was closed"
    );
    assert_eq!(h.viewer_count(), 1);
    h.shutdown().await.unwrap();
}
