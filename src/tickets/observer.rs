//! The journal as the server's [`SessionObserver`]: every session start
//! (committed before ServerInit), end, failed authentication, consent,
//! rights change, clipboard and resize event and server notice is recorded,
//! and the ticket system's hooks are told.
//!
//! Only the start of a session (and a failed authentication, which is a
//! session that starts and ends at once) is written by the caller, because
//! nobody may see the screen before it is committed; both are called from
//! tokio's blocking pool. Everything else goes to the journal writer thread
//! (see `writer.rs`) and never waits for the database.

use super::flood::address_of;
use super::hooks::{HookDispatcher, HookEvent};
use super::writer::{Entry, Writer};
use super::{now_ms, Consent, Event, Journal, SessionId, SessionStart, SessionStats};
use crate::session::{EndReason, ServerNotice, SessionEvent, SessionInfo, SessionObserver};
use std::sync::{Arc, Mutex};
use tracing::error;

pub struct JournalObserver {
    journal: Arc<Journal>,
    hooks: Mutex<Option<Arc<HookDispatcher>>>,
    writer: Writer,
}

impl JournalObserver {
    pub fn new(journal: Arc<Journal>, hooks: Option<HookDispatcher>) -> JournalObserver {
        let hooks = hooks.map(Arc::new);
        JournalObserver {
            writer: Writer::start(journal.clone(), hooks.clone()),
            journal,
            hooks: Mutex::new(hooks),
        }
    }

    /// Waits until every event reported so far is in the journal (clipboard
    /// sums included, however young).
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Writes everything still queued, then stops the hook workers, giving
    /// queued deliveries `grace` to finish. Events reported after this are
    /// written by their caller; hooks are no longer called.
    pub fn shutdown(&self, grace: std::time::Duration) {
        self.writer.stop();
        let hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = hooks {
            // The writer thread has exited and dropped its reference.
            match Arc::try_unwrap(h) {
                Ok(h) => {
                    h.shutdown(grace);
                }
                Err(_) => error!("hook dispatcher still in use at shutdown"),
            }
        }
    }

    fn hook(&self, ev: HookEvent) {
        if let Some(h) = self
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            h.dispatch(ev);
        }
    }

    fn has_hooks(&self) -> bool {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

fn start_record(info: &SessionInfo) -> SessionStart {
    let p = info.principal.clone().unwrap_or_default();
    SessionStart {
        ticket: p.ticket,
        peer: info.peer.map(|a| a.to_string()),
        direction: info.direction,
        security: match info.security {
            Some("vnc-auth") => "VNC".into(),
            Some("none") => "None".into(),
            Some(other) => other.into(),
            None => "unknown".into(),
        },
        credential: p.credential,
        technician: p.technician,
        rights: info.rights,
        consent: info.consent,
    }
}

impl SessionObserver for JournalObserver {
    fn session_starting(&self, info: &SessionInfo) -> Result<i64, String> {
        let start = start_record(info);
        let id = self
            .journal
            .session_started(&start)
            .map_err(|e| e.to_string())?;
        self.hook(HookEvent::session_start(id, &start));
        Ok(id.0)
    }

    /// `reason` (what the viewer was told: wrong password, type not
    /// offered, locked out, consent rejected, ...) goes into the
    /// `auth_failure` event; the session row's consent column says what
    /// the local user answered, if asked.
    ///
    /// A flood of guesses cannot fill the disk: only the first few failures
    /// per address and minute (and at most 64 a minute in all) get their
    /// own row; the rest are counted into one `auth_failures` summary per
    /// minute (see [`flood`](super::flood)). The hooks get every failure in
    /// their per-minute summary. A refusal by the person at the screen is
    /// a consent decision, not a guess: it always gets its row and a
    /// `consent` hook.
    fn auth_failed(&self, info: &SessionInfo, reason: &str) {
        let start = start_record(info);
        let consent = matches!(info.consent, Consent::Rejected | Consent::Timeout);
        let address = address_of(start.peer.as_deref());
        if !consent && !self.writer.auth_failure(&address, reason, now_ms()) {
            self.hook(HookEvent::auth_failure(None, start.peer.as_deref(), reason));
            return;
        }
        let id = match self.journal.auth_failed(&start, reason) {
            Ok(id) => Some(id),
            Err(e) if e.is_unavailable() => {
                // The team database is away: the refusal waits in the
                // writer's queue and is recorded once it is back.
                error!(error = %e, "team database unreachable; the refusal is recorded when it is back");
                self.writer.push(Entry::AuthFailed {
                    at: now_ms(),
                    start: Box::new(start.clone()),
                    reason: reason.to_owned(),
                });
                None
            }
            Err(e) => {
                error!(error = %e, "cannot record a failed authentication");
                None
            }
        };
        if consent {
            let mut ev = match id {
                Some(id) => HookEvent::consent(id, start.ticket.clone(), info.consent),
                None => HookEvent {
                    event: "consent",
                    ticket: start.ticket.clone(),
                    session: None,
                    data: serde_json::json!({ "decision": info.consent.as_str() }),
                },
            };
            ev.data["reason"] = serde_json::json!(reason);
            ev.data["peer"] = serde_json::json!(start.peer);
            self.hook(ev);
        } else {
            self.hook(HookEvent::auth_failure(id, start.peer.as_deref(), reason));
        }
    }

    fn session_event(&self, info: &SessionInfo, ev: &SessionEvent) {
        let Some(id) = info.record.map(SessionId) else {
            return;
        };
        let ticket = || info.principal.as_ref().and_then(|p| p.ticket.clone());
        let hooks = self.has_hooks();
        let (ev, hook) = match *ev {
            SessionEvent::Clipboard { to_viewer, bytes } => {
                self.writer.clipboard(id, to_viewer, bytes as u64);
                return;
            }
            SessionEvent::Resize { width, height } => (Event::Resize { width, height }, None),
            SessionEvent::Consent { consent, rights } => (
                Event::Consent { decision: consent },
                hooks.then(|| HookEvent::consent_with_rights(id, ticket(), consent, rights)),
            ),
            SessionEvent::RightsChange { rights, ref by } => (
                Event::RightsChange {
                    rights,
                    by: Some(by.clone()),
                },
                hooks.then(|| HookEvent::rights_change(id, ticket(), rights, by)),
            ),
        };
        self.writer.push(Entry::Event {
            session: id,
            at: now_ms(),
            ev,
            hook,
        });
    }

    fn session_ended(&self, info: &SessionInfo, reason: &EndReason) {
        let Some(id) = info.record.map(SessionId) else {
            return;
        };
        let stats = SessionStats {
            bytes_in: info.bytes_in,
            bytes_out: info.bytes_out,
            updates_sent: info.updates_sent,
        };
        let ticket = info.principal.as_ref().and_then(|p| p.ticket.clone());
        let hook = self
            .has_hooks()
            .then(|| HookEvent::session_end(id, ticket, reason.as_str(), stats));
        self.writer.push(Entry::End {
            session: id,
            at: now_ms(),
            reason: reason.as_str().into(),
            stats,
            hook,
        });
    }

    fn server_notice(&self, notice: &ServerNotice) {
        let ev = match notice {
            ServerNotice::TlsCertificate { sha256, generated } => Event::TlsCertificate {
                sha256: sha256.clone(),
                generated: *generated,
            },
            // The server itself warns about this in its log.
            ServerNotice::Insecure { addresses } => Event::Insecure {
                addresses: addresses.clone(),
            },
            ServerNotice::Lockout { address, seconds } => Event::Lockout {
                address: address.clone(),
                seconds: *seconds,
            },
        };
        self.writer.push(Entry::Notice { at: now_ms(), ev });
    }
}
