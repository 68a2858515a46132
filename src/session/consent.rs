//! Asking the person at the screen: "let this technician in?"
//!
//! The question is asked between authentication and ServerInit (TigerVNC's
//! "querying the local user"): the SecurityResult waits for the answer, so
//! a refusal reaches the viewer with its reason. Each question runs in the
//! asking session's own task, never under a shared lock, so a pending
//! answer holds up nobody else.

use crate::security::Rights;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What the person at the screen is asked about.
#[derive(Clone, Debug, Default)]
pub struct ConsentRequest {
    pub session: u64,
    pub peer: Option<String>,
    pub ticket: Option<String>,
    pub technician: Option<String>,
    /// The rights the viewer would get.
    pub rights: Rights,
    /// How long the person has to answer (a prompt can count down).
    pub timeout: Option<Duration>,
}

/// The answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentAnswer {
    /// Let in with these rights (at most the requested ones).
    Accept(Rights),
    Reject,
}

pub type ConsentFuture = Pin<Box<dyn Future<Output = ConsentAnswer> + Send>>;

/// Something that can ask the local user (a command, the tray's prompt).
/// The session applies the timeout; dropping the future must cancel the
/// question (kill the command, close the prompt).
pub trait ConsentAsker: Send + Sync {
    fn ask(&self, req: ConsentRequest) -> ConsentFuture;
}

/// The consent policy of a server.
#[derive(Clone)]
pub enum ConsentPolicy {
    /// Let everyone in who authenticated (journaled as "auto").
    Auto,
    /// Let nobody in (journaled as "rejected").
    Deny,
    /// Ask, and treat no answer within `timeout` as a refusal.
    Ask {
        asker: std::sync::Arc<dyn ConsentAsker>,
        timeout: Duration,
    },
}

impl std::fmt::Debug for ConsentPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsentPolicy::Auto => f.write_str("Auto"),
            ConsentPolicy::Deny => f.write_str("Deny"),
            ConsentPolicy::Ask { timeout, .. } => write!(f, "Ask({timeout:?})"),
        }
    }
}

/// Largest part of a consent command's output that is read.
const MAX_COMMAND_OUTPUT: usize = 4096;

/// `--consent cmd:PROGRAM`: PROGRAM runs with the request in `TICKETVNC_*`
/// variables; exit status 0 accepts (x11vnc's `-accept` convention), and
/// `view-only` on its standard output grants only viewing. It runs in its
/// own process group, which is killed when the question is cancelled or
/// times out.
pub struct CommandAsker {
    pub program: std::path::PathBuf,
}

impl ConsentAsker for CommandAsker {
    fn ask(&self, req: ConsentRequest) -> ConsentFuture {
        let program = self.program.clone();
        Box::pin(async move {
            match run_command(&program, &req).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(program = %program.display(), error = %e, "consent command failed; rejecting");
                    ConsentAnswer::Reject
                }
            }
        })
    }
}

/// Kills a process group when dropped (a cancelled or timed-out question).
/// Elsewhere `kill_on_drop` ends the direct child only.
#[cfg_attr(not(unix), allow(dead_code))]
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

async fn run_command(
    program: &std::path::Path,
    req: &ConsentRequest,
) -> std::io::Result<ConsentAnswer> {
    use tokio::io::AsyncReadExt;
    let mut cmd = tokio::process::Command::new(program);
    cmd.env("TICKETVNC_SESSION", req.session.to_string())
        .env("TICKETVNC_PEER", req.peer.as_deref().unwrap_or(""))
        .env("TICKETVNC_TICKET", req.ticket.as_deref().unwrap_or(""))
        .env(
            "TICKETVNC_TECHNICIAN",
            req.technician.as_deref().unwrap_or(""),
        )
        .env("TICKETVNC_RIGHTS", req.rights.summary())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn()?;
    let _group = GroupGuard(child.id());
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(MAX_COMMAND_OUTPUT as u64)
            .read_to_end(&mut out)
            .await?;
    }
    let status = child.wait().await?;
    if !status.success() {
        return Ok(ConsentAnswer::Reject);
    }
    let text = String::from_utf8_lossy(&out);
    let view_only = text.split_whitespace().any(|w| w == "view-only");
    Ok(ConsentAnswer::Accept(if view_only {
        Rights::VIEW_ONLY.intersect(req.rights)
    } else {
        req.rights
    }))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn script(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("consent.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, p)
    }

    fn req() -> ConsentRequest {
        ConsentRequest {
            session: 7,
            peer: Some("127.0.0.1:5".into()),
            ticket: Some("4711".into()),
            technician: Some("anna".into()),
            rights: Rights::FULL,
            timeout: None,
        }
    }

    #[tokio::test]
    async fn exit_status_and_view_only_word_decide() {
        let (_d, yes) = script("exit 0");
        let (_d2, no) = script("exit 1");
        let (_d3, vo) = script("echo view-only");
        let (_d4, env) =
            script("[ \"$TICKETVNC_TICKET\" = 4711 ] && [ \"$TICKETVNC_TECHNICIAN\" = anna ] && [ \"$TICKETVNC_RIGHTS\" = view,keys,pointer,clipboard ]");
        let ask = |p| CommandAsker { program: p }.ask(req());
        assert_eq!(ask(yes).await, ConsentAnswer::Accept(Rights::FULL));
        assert_eq!(ask(no).await, ConsentAnswer::Reject);
        assert_eq!(ask(vo).await, ConsentAnswer::Accept(Rights::VIEW_ONLY));
        assert_eq!(ask(env).await, ConsentAnswer::Accept(Rights::FULL));
        let missing = CommandAsker {
            program: "/nonexistent/consent".into(),
        };
        assert_eq!(missing.ask(req()).await, ConsentAnswer::Reject);
    }

    #[tokio::test]
    async fn a_cancelled_question_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let (_d, p) = script(&format!(
            "sleep 300 & echo $! > {}; wait",
            pidfile.display()
        ));
        let fut = CommandAsker { program: p }.ask(req());
        let r = tokio::time::timeout(Duration::from_millis(1500), fut).await;
        assert!(r.is_err(), "the script never answers");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild (sleep) must be gone too, not just the shell.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.contains(") Z ") {
                break; // a zombie waiting for its reaper is dead
            }
            assert!(std::time::Instant::now() < deadline, "sleep {pid} survived");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
