//! Hooks to the ticket system: on session start, session end, auth failure,
//! consent decisions and rights changes, ticketvnc POSTs a JSON payload to a webhook
//! (signed with HMAC-SHA256) and/or runs a command with the event in
//! environment variables and the same JSON on stdin.
//!
//! [`HookDispatcher::dispatch`] never blocks and never drops an event that
//! matters. Each target (webhook, command) has its own worker thread and
//! queue, so a hanging webhook does not hold up the command hook, and
//! neither ever touches a viewer's task. Session start and end, consent
//! and rights changes are queued without limit (their number is bounded
//! by the sessions) and always go first. Failed authentications never
//! queue one by one: they are added up per minute into one
//! `auth_failures` delivery (count, first and last time, the first 32
//! distinct addresses, the number of distinct addresses, the reasons), so
//! 4,000 guesses cost one delivery, and a summary waiting to be retried
//! steps aside as soon as a session event arrives. If summaries pile up
//! behind a slow receiver (more than `queue_len`), new ones are merged
//! into the newest waiting one.
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

use super::flood::{address_of, AuthSummary};
use super::{format_time, hex, now_ms, Journal, JournalError, Result};
use super::{Consent, Event, Rights, SessionId, SessionStart, SessionStats};
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
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
    /// Auth-failure summaries waiting per target; beyond this they are
    /// merged into the newest (nothing is dropped).
    pub queue_len: usize,
    /// Auth failures are delivered as one `auth_failures` summary per
    /// window of this length (aligned to the clock).
    pub auth_summary_window: Duration,
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
            auth_summary_window: Duration::from_millis(super::flood::AUTH_WINDOW_MS as u64),
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
                "--webhook-secret-file needs --webhook or --webhook-url-file".into(),
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
    Ok(read_line_file(path, "the webhook secret")?.into_bytes())
}

/// The first line of `path` (trimmed), which must not be empty: for
/// `--webhook-url-file` and `--hook-cmd-file`, so that a token in the URL
/// or the command does not show in `ps` or /proc/PID/cmdline.
pub fn read_line_file(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(JournalError::Invalid(format!(
            "{}: {what} is empty",
            path.display()
        )));
    }
    Ok(line.to_owned())
}

/// One event for the ticket system.
#[derive(Clone, Debug, PartialEq)]
pub struct HookEvent {
    /// "session_start", "session_end", "auth_failure", "consent",
    /// "rights_change"; "auth_failure" events are delivered as
    /// "auth_failures" summaries.
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
    /// Attempts already made (a summary put back behind a session event
    /// keeps its count).
    attempts_done: u32,
    /// For an `auth_failures` delivery: its counts (merged into when
    /// summaries pile up).
    summary: Option<AuthSummary>,
}

impl Delivery {
    fn new(ev: HookEvent, id: String, time: i64) -> Delivery {
        Delivery {
            ev,
            id,
            time,
            attempts_done: 0,
            summary: None,
        }
    }
}

fn delivery_id() -> String {
    let mut id = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    hex(&id)
}

/// What waits for one target.
#[derive(Default)]
struct Queue {
    /// Session start and end, consent, rights changes: never dropped,
    /// always delivered before any summary.
    important: VecDeque<Delivery>,
    /// Closed auth-failure summaries, oldest first.
    summaries: VecDeque<Delivery>,
    /// The auth failures of the current window.
    window: Option<AuthSummary>,
    /// No more events (shutdown): deliver what is queued, then exit.
    closed: bool,
    /// Give up now (shutdown grace is over, or dropped).
    stop: bool,
}

/// One target's queue, shared between `dispatch` and the worker.
#[derive(Default)]
struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

enum Wake {
    Timeout,
    Stop,
    /// An important event arrived while a summary was waiting to retry.
    Preempt,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Sleeps up to `d`. With `preemptible`, returns early when an
    /// important event is waiting.
    fn sleep(&self, d: Duration, preemptible: bool) -> Wake {
        let deadline = Instant::now() + d;
        let mut g = self.lock();
        loop {
            if g.stop {
                return Wake::Stop;
            }
            if preemptible && !g.important.is_empty() {
                return Wake::Preempt;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Timeout;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    fn set_stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }
    fn is_stopping(&self) -> bool {
        self.lock().stop
    }
}

struct Target {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Non-blocking hook delivery; see the module documentation.
pub struct HookDispatcher {
    targets: Vec<Target>,
    window_ms: i64,
    max_summaries: usize,
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
        let window_ms = (cfg.auth_summary_window.as_millis() as i64).max(1);
        let max_summaries = cfg.queue_len.max(1);
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
            let shared = Arc::new(Shared::default());
            let w = Worker {
                kind,
                cfg: cfg.clone(),
                journal: journal.clone(),
                shared: shared.clone(),
                window_ms,
                agent: None,
            };
            let thread = std::thread::Builder::new()
                .name(format!("hook-{}", kind.name()))
                .spawn(move || w.run())
                .map_err(|e| JournalError::Invalid(format!("cannot start hook thread: {e}")))?;
            targets.push(Target {
                shared,
                thread: Some(thread),
            });
        }
        Ok(HookDispatcher {
            targets,
            window_ms,
            max_summaries,
        })
    }

    /// Queues `ev` for every target. Never blocks and never drops a
    /// session start or end, consent or rights change: they go before any
    /// auth-failure traffic. An `auth_failure` is added to the current
    /// window's summary (one `auth_failures` delivery per window). Returns
    /// false only after shutdown.
    pub fn dispatch(&self, ev: HookEvent) -> bool {
        if ev.event == "auth_failure" {
            let address = address_of(ev.data["peer"].as_str());
            let reason = ev.data["reason"].as_str().unwrap_or("");
            return self.auth_failure(&address, reason, now_ms());
        }
        let id = delivery_id();
        let time = now_ms();
        let mut all = true;
        for t in &self.targets {
            let mut q = t.shared.lock();
            if q.closed {
                all = false;
                continue;
            }
            q.important
                .push_back(Delivery::new(ev.clone(), id.clone(), time));
            drop(q);
            t.shared.cv.notify_all();
        }
        if !all {
            tracing::warn!(event = ev.event, "hook event after shutdown not delivered");
        }
        all
    }

    fn auth_failure(&self, address: &str, reason: &str, at: i64) -> bool {
        let w = at.div_euclid(self.window_ms);
        let mut all = true;
        for t in &self.targets {
            let mut q = t.shared.lock();
            if q.closed {
                all = false;
                continue;
            }
            if q.window.as_ref().is_some_and(|s| s.window != w) {
                let old = q.window.take().expect("checked");
                push_summary(&mut q, old, self.max_summaries);
            }
            let opened = q.window.is_none();
            q.window
                .get_or_insert_with(|| AuthSummary::new(w))
                .add(address, reason, at);
            drop(q);
            if opened {
                // The worker may be asleep with no deadline: it must wake
                // when this window closes.
                t.shared.cv.notify_all();
            }
        }
        all
    }

    /// Stops accepting events, lets the workers deliver what is queued
    /// (the current auth-failure window included) for up to `grace`, then
    /// tells them to give up (no more retries). Returns true if all queued
    /// deliveries finished in time.
    pub fn shutdown(mut self, grace: Duration) -> bool {
        for t in &self.targets {
            t.shared.lock().closed = true;
            t.shared.cv.notify_all();
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
                for t in &self.targets {
                    t.shared.set_stop();
                }
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Queues a closed window's summary; when `max` are already waiting (a
/// slow or failing receiver), it is merged into the newest one instead,
/// so nothing is lost and the queue stays bounded.
fn push_summary(q: &mut Queue, mut s: AuthSummary, max: usize) {
    if s.is_empty() {
        return;
    }
    // Bounded memory while it waits: 32 addresses, not 4096.
    s.freeze();
    if q.summaries.len() >= max {
        if let Some(last) = q.summaries.back_mut() {
            if let Some(mut merged) = last.summary.take() {
                merged.merge(&s);
                last.ev = summary_event(&merged);
                last.summary = Some(merged);
                return;
            }
        }
    }
    let ev = summary_event(&s);
    let mut d = Delivery::new(ev, delivery_id(), now_ms());
    d.summary = Some(s);
    q.summaries.push_back(d);
}

fn summary_event(s: &AuthSummary) -> HookEvent {
    let mut data = s.to_json();
    data["first"] = json!(format_time(s.first));
    data["last"] = json!(format_time(s.last));
    HookEvent {
        event: "auth_failures",
        ticket: None,
        session: None,
        data,
    }
}

impl Drop for HookDispatcher {
    /// Dropping never blocks: workers are told to stop and left to exit.
    fn drop(&mut self) {
        for t in &self.targets {
            let mut q = t.shared.lock();
            q.closed = true;
            q.stop = true;
            drop(q);
            t.shared.cv.notify_all();
        }
    }
}

struct Worker {
    kind: Kind,
    cfg: Arc<HookConfig>,
    journal: Option<Arc<Journal>>,
    shared: Arc<Shared>,
    window_ms: i64,
    agent: Option<ureq::Agent>,
}

impl Worker {
    fn run(mut self) {
        while let Some(mut d) = self.next() {
            let body = self.body(&d);
            if let Some(back) = self.deliver(&mut d, &body) {
                // A summary interrupted by a session event: it goes first
                // again once the important events are out.
                self.shared.lock().summaries.push_front(back);
            }
        }
    }

    /// The next delivery: important events first, then closed summaries;
    /// waits for the current window to close. None when shut down and
    /// everything is out.
    fn next(&self) -> Option<Delivery> {
        let mut q = self.shared.lock();
        loop {
            if q.stop {
                return None;
            }
            if let Some(d) = q.important.pop_front() {
                return Some(d);
            }
            let now = now_ms();
            let due = q.window.as_ref().map(|s| (s.window + 1) * self.window_ms);
            if q.closed || due.is_some_and(|t| t <= now) {
                if let Some(s) = q.window.take() {
                    push_summary(&mut q, s, self.cfg.queue_len.max(1));
                }
            }
            if let Some(d) = q.summaries.pop_front() {
                return Some(d);
            }
            if q.closed {
                return None;
            }
            let wait = match due {
                Some(t) => Duration::from_millis((t - now).clamp(1, 60_000) as u64),
                None => Duration::from_secs(3600),
            };
            q = self
                .shared
                .cv
                .wait_timeout(q, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
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

    /// Delivers with retries. Returns the delivery when it was a summary
    /// interrupted (between attempts) by an important event.
    fn deliver(&mut self, d: &mut Delivery, body: &[u8]) -> Option<Delivery> {
        let mut backoff = self.cfg.initial_backoff;
        let attempts = self.cfg.max_attempts.max(1);
        let preemptible = d.summary.is_some();
        for attempt in (d.attempts_done + 1)..=attempts {
            if self.shared.is_stopping() {
                self.record(&d.ev, attempt, "gave up: shutting down", false);
                return None;
            }
            let outcome = match self.kind {
                Kind::Webhook => self.post(d, body),
                Kind::Command => self.run_cmd(d, body),
            };
            d.attempts_done = attempt;
            match outcome {
                Outcome::Delivered(what) => {
                    self.record(&d.ev, attempt, &format!("delivered: {what}"), false);
                    return None;
                }
                Outcome::Permanent(why) => {
                    self.record(&d.ev, attempt, &format!("gave up: {why}"), true);
                    return None;
                }
                Outcome::Retry(why) if attempt >= attempts => {
                    self.record(
                        &d.ev,
                        attempt,
                        &format!("gave up after {attempt} attempts: {why}"),
                        true,
                    );
                    return None;
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
                    match self.shared.sleep(backoff, preemptible) {
                        Wake::Timeout => {}
                        Wake::Stop => {
                            self.record(&d.ev, attempt, "gave up: shutting down", false);
                            return None;
                        }
                        Wake::Preempt => {
                            return Some(Delivery {
                                ev: d.ev.clone(),
                                id: d.id.clone(),
                                time: d.time,
                                attempts_done: d.attempts_done,
                                summary: d.summary.take(),
                            });
                        }
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
        None
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
                Ok(None) if Instant::now() >= deadline || self.shared.is_stopping() => {
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
