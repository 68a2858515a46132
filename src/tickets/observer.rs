//! The journal as the server's [`SessionObserver`]: every session start
//! (committed before ServerInit), end, failed authentication and clipboard
//! or resize event is recorded, and the ticket system's hooks are told.

use super::hooks::{HookDispatcher, HookEvent};
use super::{ClipboardDirection, Direction, Event, Journal, SessionId, SessionStart, SessionStats};
use crate::session::{EndReason, SessionEvent, SessionInfo, SessionObserver};
use std::sync::Arc;
use tracing::error;

pub struct JournalObserver {
    journal: Arc<Journal>,
    hooks: Option<HookDispatcher>,
}

impl JournalObserver {
    pub fn new(journal: Arc<Journal>, hooks: Option<HookDispatcher>) -> JournalObserver {
        JournalObserver { journal, hooks }
    }

    /// Stop the hook workers, giving queued deliveries `grace` to finish.
    pub fn shutdown(self, grace: std::time::Duration) {
        if let Some(h) = self.hooks {
            h.shutdown(grace);
        }
    }

    fn hook(&self, ev: HookEvent) {
        if let Some(h) = &self.hooks {
            h.dispatch(ev);
        }
    }
}

fn start_record(info: &SessionInfo) -> SessionStart {
    let p = info.principal.clone().unwrap_or_default();
    SessionStart {
        ticket: p.ticket,
        peer: info.peer.map(|a| a.to_string()),
        direction: Direction::Inbound,
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

    fn auth_failed(&self, info: &SessionInfo, reason: &str) {
        let start = start_record(info);
        match self.journal.auth_failed(&start, reason) {
            Ok(id) => self.hook(HookEvent::auth_failure(
                Some(id),
                start.peer.as_deref(),
                reason,
            )),
            Err(e) => {
                error!(error = %e, "cannot record a failed authentication");
                self.hook(HookEvent::auth_failure(None, start.peer.as_deref(), reason));
            }
        }
    }

    fn session_event(&self, info: &SessionInfo, ev: &SessionEvent) {
        let Some(id) = info.record.map(SessionId) else {
            return;
        };
        let ev = match *ev {
            SessionEvent::Clipboard { to_viewer, bytes } => Event::Clipboard {
                direction: if to_viewer {
                    ClipboardDirection::ToViewer
                } else {
                    ClipboardDirection::FromViewer
                },
                bytes: bytes as u64,
            },
            SessionEvent::Resize { width, height } => Event::Resize { width, height },
            SessionEvent::Consent { consent, .. } => Event::Consent { decision: consent },
            SessionEvent::RightsChange { rights, ref by } => Event::RightsChange {
                rights,
                by: Some(by.clone()),
            },
        };
        if let Err(e) = self.journal.event(id, &ev) {
            error!(error = %e, "cannot record a session event");
        }
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
        if let Err(e) = self.journal.session_ended(id, reason.as_str(), stats) {
            error!(error = %e, "cannot record the end of a session");
        }
        let ticket = info.principal.as_ref().and_then(|p| p.ticket.clone());
        self.hook(HookEvent::session_end(id, ticket, reason.as_str(), stats));
    }
}
