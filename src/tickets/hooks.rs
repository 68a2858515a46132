//! Hooks to the ticket system: on session start, session end, auth failure,
//! consent decisions and rights changes, ticketvnc POSTs a JSON payload to a webhook
//! (signed with HMAC-SHA256) and/or runs a command with the event in
//! environment variables and the same JSON on stdin.
//!
//! [`HookDispatcher::dispatch`] never blocks: it does a `try_send` into a
//! bounded queue per target. Each target (webhook, command) has its own
//! worker thread, so a hanging webhook does not hold up the command hook,
//! and neither ever touches a viewer's task. When a queue is full the NEW
//! event is refused (not the oldest dropped): events stay in order, and the
//! refusal is counted and journaled by the worker as a `hook_delivery`
//! event with outcome "dropped: queue full (N)" when it catches up.
//!
//! Every attempt's outcome (delivered / failed, will retry / gave up) is a
//! `hook_delivery` journal event. Retries back off exponentially
//! (`initial_backoff`, doubling, capped at `max_backoff`). HTTP 2xx is
//! success; 4xx other than 408 and 429 is not retried (the receiver refuses
//! the payload; retrying will not help).
//!
//! # Payload
//!
//! ```json
//! {"event": "session_start", "delivery": "9f2c…", "time": "2026-11-28T08:00:00Z",
//!  "ticket": "4711", "session": 12,
//!  "data": {"peer": "192.0.2.7:51234", "security": "VNC", ...},
//!  "journal_head": {"seq": 41, "hash": "5be1…"}}
//! ```
//! Webhook headers: `Content-Type: application/json`,
//! `X-Ticketvnc-Event`, `X-Ticketvnc-Delivery` (the same id on every retry:
//! receivers use it to ignore duplicates), and, when a secret is set,
//! `X-Ticketvnc-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//! The command gets `TICKETVNC_EVENT`, `TICKETVNC_DELIVERY`,
//! `TICKETVNC_TIME`, `TICKETVNC_TICKET`, `TICKETVNC_SESSION` and one
//! `TICKETVNC_<FIELD>` per scalar field of `data`; exit status 0 is success.

use super::{format_time, hex, now_ms, Journal, JournalError, Result};
use super::{Consent, Event, Rights, SessionId, SessionStart, SessionStats};
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where and how hooks are delivered.
#[derive(Clone)]
pub struct HookConfig {
    /// `http://` or `https://` URL to POST to.
    pub webhook: Option<String>,
    /// HMAC key for the signature header (from `--webhook-secret-file`).
    pub webhook_secret: Option<Vec<u8>>,
    /// Shell command (`sh -c`, or `cmd /C` on Windows).
    pub hook_cmd: Option<String>,
    /// Attempts per event and target, including the first.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest one attempt may take (HTTP request or command run).
    pub attempt_timeout: Duration,
    /// Events waiting per target before new ones are refused.
    pub queue_len: usize,
}

impl std::fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConfig")
            .field("webhook", &self.webhook)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| ".."),
            )
            .field("hook_cmd", &self.hook_cmd)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            webhook: None,
            webhook_secret: None,
            hook_cmd: None,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(10),
            queue_len: 256,
        }
    }
}

impl HookConfig {
    /// The configuration for `serve --webhook URL --webhook-secret-file FILE
    /// --hook-cmd CMD`, with the default retry policy; `None` when neither
    /// hook is asked for. A secret without a webhook, an empty secret file
    /// or a URL that is not http(s) is an error.
    pub fn from_options(
        webhook: Option<String>,
        secret_file: Option<&Path>,
        hook_cmd: Option<String>,
    ) -> Result<Option<HookConfig>> {
        if secret_file.is_some() && webhook.is_none() {
            return Err(JournalError::Invalid(
                "--webhook-secret-file needs --webhook".into(),
            ));
        }
        if let Some(u) = &webhook {
            check_url(u)?;
        }
        if webhook.is_none() && hook_cmd.is_none() {
            return Ok(None);
        }
        Ok(Some(HookConfig {
            webhook,
            webhook_secret: secret_file.map(read_secret_file).transpose()?,
            hook_cmd,
            ..Default::default()
        }))
    }
}

fn check_url(u: &str) -> Result<()> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(())
    } else {
        Err(JournalError::Invalid(format!(
            "webhook URL must start with http:// or https://, got {u:?}"
        )))
    }
}

/// Reads a webhook secret: the file's first line, which must not be empty.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(JournalError::Invalid(format!(
            "{}: the webhook secret is empty",
            path.display()
        )));
    }
    Ok(line.as_bytes().to_vec())
}

/// One event for the ticket system.
#[derive(Clone, Debug, PartialEq)]
pub struct HookEvent {
    /// "session_start", "session_end", "auth_failure", "consent",
    /// "rights_change".
    pub event: &'static str,
    pub ticket: Option<String>,
    pub session: Option<SessionId>,
    /// Event fields (never secrets).
    pub data: Value,
}

impl HookEvent {
    pub fn session_start(id: SessionId, s: &SessionStart) -> HookEvent {
        HookEvent {
            event: "session_start",
            ticket: s.ticket.clone(),
            session: Some(id),
            data: json!({
                "peer": s.peer,
                "direction": s.direction.as_str(),
                "security": s.security,
                "credential": s.credential,
                "technician": s.technician,
                "rights": s.rights.summary(),
                "consent": s.consent.as_str(),
            }),
        }
    }
    pub fn session_end(
        id: SessionId,
        ticket: Option<String>,
        reason: &str,
        stats: SessionStats,
    ) -> HookEvent {
        HookEvent {
            event: "session_end",
            ticket,
            session: Some(id),
            data: json!({
                "end_reason": reason,
                "bytes_in": stats.bytes_in,
                "bytes_out": stats.bytes_out,
                "updates_sent": stats.updates_sent,
            }),
        }
    }
    /// `id` is the session row `Journal::auth_failed` returned, if any.
    pub fn auth_failure(id: Option<SessionId>, peer: Option<&str>, reason: &str) -> HookEvent {
        HookEvent {
            event: "auth_failure",
            ticket: None,
            session: id,
            data: json!({ "peer": peer, "reason": reason }),
        }
    }
    pub fn consent(id: SessionId, ticket: Option<String>, decision: Consent) -> HookEvent {
        HookEvent {
            event: "consent",
            ticket,
            session: Some(id),
            data: json!({ "decision": decision.as_str() }),
        }
    }
    /// The local user's answer together with the rights it granted.
    pub fn consent_with_rights(
        id: SessionId,
        ticket: Option<String>,
        decision: Consent,
        rights: Rights,
    ) -> HookEvent {
        let mut ev = HookEvent::consent(id, ticket, decision);
        ev.data["rights"] = json!(rights.summary());
        ev
    }
    /// Rights changed during a session; `by` says who changed them.
    pub fn rights_change(
        id: SessionId,
        ticket: Option<String>,
        rights: Rights,
        by: &str,
    ) -> HookEvent {
        HookEvent {
            event: "rights_change",
            ticket,
            session: Some(id),
            data: json!({ "rights": rights.summary(), "by": by }),
        }
    }
}

struct Delivery {
    ev: HookEvent,
    id: String,
    time: i64,
}

#[derive(Default)]
struct Stop {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// Sleeps up to `d`; true if stopping.
    fn sleep(&self, d: Duration) -> bool {
        let g = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |stop| !*stop)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
    fn set(&self) {
        *self.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }
    fn is_set(&self) -> bool {
        *self.flag.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Target {
    tx: Option<SyncSender<Delivery>>,
    refused: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Non-blocking hook delivery; see the module documentation.
pub struct HookDispatcher {
    targets: Vec<Target>,
    stop: Arc<Stop>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    Command,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Command => "command",
        }
    }
}

enum Outcome {
    Delivered(String),
    Retry(String),
    Permanent(String),
}

impl HookDispatcher {
    /// Starts one worker thread per configured target. With a journal,
    /// every outcome is recorded and payloads carry the journal head.
    pub fn start(cfg: HookConfig, journal: Option<Arc<Journal>>) -> Result<HookDispatcher> {
        if let Some(u) = &cfg.webhook {
            check_url(u)?;
            if cfg.webhook_secret.is_none() {
                tracing::warn!("webhook without a secret: payloads are not signed");
            }
        }
        let stop = Arc::new(Stop::default());
        let cfg = Arc::new(cfg);
        let mut targets = Vec::new();
        for kind in [Kind::Webhook, Kind::Command] {
            let on = match kind {
                Kind::Webhook => cfg.webhook.is_some(),
                Kind::Command => cfg.hook_cmd.is_some(),
            };
            if !on {
                continue;
            }
            let (tx, rx) = sync_channel(cfg.queue_len.max(1));
            let refused = Arc::new(AtomicU64::new(0));
            let w = Worker {
                kind,
                cfg: cfg.clone(),
                journal: journal.clone(),
                stop: stop.clone(),
                refused: refused.clone(),
                agent: None,
            };
            let thread = std::thread::Builder::new()
                .name(format!("hook-{}", kind.name()))
                .spawn(move || w.run(rx))
                .map_err(|e| JournalError::Invalid(format!("cannot start hook thread: {e}")))?;
            targets.push(Target {
                tx: Some(tx),
                refused,
                thread: Some(thread),
            });
        }
        Ok(HookDispatcher { targets, stop })
    }

    /// Queues `ev` for every target. Never blocks; returns false if any
    /// target's queue was full (that target refused it).
    pub fn dispatch(&self, ev: HookEvent) -> bool {
        if self.targets.is_empty() {
            return true;
        }
        let mut id = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let id = hex(&id);
        let time = now_ms();
        let mut all = true;
        for t in &self.targets {
            let Some(tx) = &t.tx else { continue };
            let d = Delivery {
                ev: ev.clone(),
                id: id.clone(),
                time,
            };
            match tx.try_send(d) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    t.refused.fetch_add(1, Ordering::Relaxed);
                    all = false;
                }
            }
        }
        all
    }

    /// Stops accepting events, lets the workers finish what is queued for
    /// up to `grace`, then tells them to give up (no more retries). Returns
    /// true if all queued deliveries finished in time.
    pub fn shutdown(mut self, grace: Duration) -> bool {
        for t in &mut self.targets {
            t.tx = None;
        }
        let deadline = Instant::now() + grace;
        loop {
            let done = self
                .targets
                .iter()
                .all(|t| t.thread.as_ref().is_none_or(|h| h.is_finished()));
            if done {
                for t in &mut self.targets {
                    if let Some(h) = t.thread.take() {
                        let _ = h.join();
                    }
                }
                return true;
            }
            if Instant::now() >= deadline {
                self.stop.set();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for HookDispatcher {
    /// Dropping never blocks: workers are told to stop and left to exit.
    fn drop(&mut self) {
        for t in &mut self.targets {
            t.tx = None;
        }
        self.stop.set();
    }
}

struct Worker {
    kind: Kind,
    cfg: Arc<HookConfig>,
    journal: Option<Arc<Journal>>,
    stop: Arc<Stop>,
    refused: Arc<AtomicU64>,
    agent: Option<ureq::Agent>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Delivery>) {
        while let Ok(d) = rx.recv() {
            self.report_refused();
            let body = self.body(&d);
            self.deliver(&d, &body);
        }
        self.report_refused();
    }

    /// The JSON payload, built here (not in `dispatch`) so the caller never
    /// waits for the journal.
    fn body(&self, d: &Delivery) -> Vec<u8> {
        let head = self.journal.as_ref().and_then(|j| j.head().ok().flatten());
        json!({
            "event": d.ev.event,
            "delivery": d.id,
            "time": format_time(d.time),
            "ticket": d.ev.ticket,
            "session": d.ev.session.map(|s| s.0),
            "data": d.ev.data,
            "journal_head": head.map(|(seq, hash)| json!({"seq": seq, "hash": hash})),
        })
        .to_string()
        .into_bytes()
    }

    /// Journals events refused while the queue was full (not tied to a
    /// session: they were never delivered).
    fn report_refused(&self) {
        let n = self.refused.swap(0, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let outcome = format!("dropped: queue full ({n} events)");
        tracing::warn!(hook = self.kind.name(), %outcome, "hook delivery");
        if let Some(j) = &self.journal {
            let e = Event::HookDelivery {
                target: self.kind.name().into(),
                event: "(refused)".into(),
                attempt: 0,
                outcome,
            };
            if let Err(err) = j.ticket_event(None, &e) {
                tracing::error!(error = %err, "cannot journal a hook delivery");
            }
        }
    }

    fn deliver(&mut self, d: &Delivery, body: &[u8]) {
        let mut backoff = self.cfg.initial_backoff;
        let attempts = self.cfg.max_attempts.max(1);
        for attempt in 1..=attempts {
            if self.stop.is_set() {
                self.record(&d.ev, attempt, "gave up: shutting down", false);
                return;
            }
            let outcome = match self.kind {
                Kind::Webhook => self.post(d, body),
                Kind::Command => self.run_cmd(d, body),
            };
            match outcome {
                Outcome::Delivered(what) => {
                    self.record(&d.ev, attempt, &format!("delivered: {what}"), false);
                    return;
                }
                Outcome::Permanent(why) => {
                    self.record(&d.ev, attempt, &format!("gave up: {why}"), true);
                    return;
                }
                Outcome::Retry(why) if attempt == attempts => {
                    self.record(
                        &d.ev,
                        attempt,
                        &format!("gave up after {attempt} attempts: {why}"),
                        true,
                    );
                    return;
                }
                Outcome::Retry(why) => {
                    self.record(
                        &d.ev,
                        attempt,
                        &format!(
                            "failed: {why}; retrying in {}",
                            humantime::format_duration(backoff)
                        ),
                        false,
                    );
                    if self.stop.sleep(backoff) {
                        self.record(&d.ev, attempt, "gave up: shutting down", false);
                        return;
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    fn record(&self, ev: &HookEvent, attempt: u32, outcome: &str, warn: bool) {
        if warn {
            tracing::warn!(
                hook = self.kind.name(),
                event = ev.event,
                attempt,
                outcome,
                "hook delivery"
            );
        } else {
            tracing::debug!(
                hook = self.kind.name(),
                event = ev.event,
                attempt,
                outcome,
                "hook delivery"
            );
        }
        let Some(j) = &self.journal else { return };
        let e = Event::HookDelivery {
            target: self.kind.name().into(),
            event: ev.event.into(),
            attempt,
            outcome: outcome.into(),
        };
        let r = match ev.session {
            Some(id) => j.event(id, &e),
            None => j.ticket_event(ev.ticket.as_deref(), &e),
        };
        if let Err(err) = r {
            tracing::error!(error = %err, "cannot journal a hook delivery");
        }
    }

    fn post(&mut self, d: &Delivery, body: &[u8]) -> Outcome {
        let Some(url) = &self.cfg.webhook else {
            return Outcome::Permanent("no URL".into());
        };
        let timeout = self.cfg.attempt_timeout;
        let agent = self.agent.get_or_insert_with(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .user_agent(concat!("ticketvnc/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        });
        let mut req = agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Ticketvnc-Event", d.ev.event)
            .header("X-Ticketvnc-Delivery", &d.id);
        if let Some(secret) = &self.cfg.webhook_secret {
            req = req.header(
                "X-Ticketvnc-Signature",
                format!("sha256={}", sign(secret, body)),
            );
        }
        match req.send(body) {
            Ok(resp) => {
                let s = resp.status().as_u16();
                match s {
                    200..=299 => Outcome::Delivered(format!("HTTP {s}")),
                    408 | 429 => Outcome::Retry(format!("HTTP {s}")),
                    400..=499 => Outcome::Permanent(format!("HTTP {s}")),
                    _ => Outcome::Retry(format!("HTTP {s}")),
                }
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    fn run_cmd(&self, d: &Delivery, body: &[u8]) -> Outcome {
        let Some(cmd) = &self.cfg.hook_cmd else {
            return Outcome::Permanent("no command".into());
        };
        let mut c = if cfg!(windows) {
            let mut c = Command::new("cmd");
            c.arg("/C").arg(cmd);
            c
        } else {
            let mut c = Command::new("sh");
            c.arg("-c").arg(cmd);
            c
        };
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("TICKETVNC_EVENT", d.ev.event)
            .env("TICKETVNC_DELIVERY", &d.id)
            .env("TICKETVNC_TIME", format_time(d.time))
            .env("TICKETVNC_TICKET", d.ev.ticket.as_deref().unwrap_or(""))
            .env(
                "TICKETVNC_SESSION",
                d.ev.session.map(|s| s.0.to_string()).unwrap_or_default(),
            );
        if let Value::Object(m) = &d.ev.data {
            for (k, v) in m {
                let val = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => continue,
                };
                let key: String = k
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                c.env(format!("TICKETVNC_{key}"), val);
            }
        }
        // Its own process group: on a timeout everything the command
        // started (a backgrounded `sleep 1000`, a stuck curl) is killed with
        // it, not only the shell.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => return Outcome::Retry(format!("cannot run the hook command: {e}")),
        };
        if let Some(mut stdin) = child.stdin.take() {
            // The payload is far below a pipe buffer: this does not block even
            // if the command never reads; EPIPE (it did not read) is fine.
            let _ = stdin.write_all(body);
        }
        let deadline = Instant::now() + self.cfg.attempt_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => return Outcome::Delivered("exit 0".into()),
                Ok(Some(st)) => return Outcome::Retry(format!("command {st}")),
                Ok(None) if Instant::now() >= deadline || self.stop.is_set() => {
                    kill_tree(&mut child);
                    let _ = child.wait();
                    return Outcome::Retry("command timed out (killed)".into());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Outcome::Retry(format!("waiting for the command: {e}")),
            }
        }
    }
}

/// Kills a hook command started in its own process group: the whole group
/// (the shell and everything it started that did not leave the group),
/// then the shell itself in case the group could not be signalled.
fn kill_tree(child: &mut std::process::Child) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{kill_process_group, Pid, Signal};
        if let Err(e) = kill_process_group(Pid::from_child(child), Signal::KILL) {
            tracing::warn!(error = %e, "cannot kill the hook command's process group");
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}

/// Hex HMAC-SHA256 of `body` under `secret` (the signature header's value
/// after `sha256=`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes any key length");
    m.update(body);
    hex(&m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(HookConfig::from_options(None, None, None)
            .unwrap()
            .is_none());
        assert!(HookConfig::from_options(None, Some(&secret), None).is_err());
        assert!(HookConfig::from_options(Some("ftp://x/".into()), None, None).is_err());
        assert!(HookConfig::from_options(Some("https://x/".into()), Some(&empty), None).is_err());
        let c = HookConfig::from_options(Some("https://x/".into()), Some(&secret), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.webhook_secret.as_deref(), Some(&b"s3cret"[..]));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug shows the secret"
        );
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
