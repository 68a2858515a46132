//! The labelled knowledge-base set (tests/data/kb): loading it into a
//! journal, synthetic filler tickets, and recall/latency measurement.
//! Shared by tests/kb_recall.rs and examples/kb_bench.rs.
#![allow(dead_code)]

use std::time::{Duration, Instant};
use ticketvnc::tickets::{Journal, KbQuery};

pub const TICKETS: &str = include_str!("../data/kb/tickets.txt");
pub const QUERIES: &str = include_str!("../data/kb/queries.tsv");
pub const HELDOUT: &str = include_str!("../data/kb/queries_heldout.tsv");

#[derive(Debug, Default, Clone)]
pub struct Ticket {
    pub id: String,
    pub lang: String,
    pub title: String,
    pub notes: Vec<String>,
    pub resolution: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub ticket: String,
    pub kind: String,
    pub text: String,
}

pub fn tickets() -> Vec<Ticket> {
    let mut out = Vec::new();
    let mut cur: Option<Ticket> = None;
    for line in TICKETS.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            out.extend(cur.take());
            continue;
        }
        let (k, v) = line.split_once(' ').expect("key value");
        match k {
            "ticket" => {
                let (id, lang) = v.split_once(' ').expect("ticket ID LANG");
                out.extend(cur.replace(Ticket {
                    id: id.into(),
                    lang: lang.into(),
                    ..Default::default()
                }));
            }
            "title" => cur.as_mut().unwrap().title = v.into(),
            "note" => cur.as_mut().unwrap().notes.push(v.into()),
            "resolution" => cur.as_mut().unwrap().resolution = Some(v.into()),
            _ => panic!("bad line {line:?}"),
        }
    }
    out.extend(cur);
    out
}

pub fn queries() -> Vec<Query> {
    parse_queries(QUERIES)
}

/// Queries written after the analyzer was frozen, never used to tune it.
pub fn heldout() -> Vec<Query> {
    parse_queries(HELDOUT)
}

fn parse_queries(text: &str) -> Vec<Query> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            Query {
                ticket: f.next().unwrap().into(),
                kind: f.next().unwrap().into(),
                text: f.next().expect("three fields").into(),
            }
        })
        .collect()
}

pub fn load(j: &Journal, t: &Ticket) {
    j.open_ticket(&t.id, Some(&t.title)).unwrap();
    for n in &t.notes {
        j.add_note(&t.id, n, Some("tech")).unwrap();
    }
    if let Some(r) = &t.resolution {
        j.close_ticket(&t.id, Some(r)).unwrap();
    }
}

/// Deterministic filler tickets in German and English that share the
/// labelled set's vocabulary (devices, programs, symptoms, fixes), so
/// they compete with the right answers.
pub fn synthetic(n: usize, seed: u64) -> Vec<Ticket> {
    const DEV_DE: &[&str] = &[
        "Drucker",
        "Laptop",
        "Monitor",
        "Scanner",
        "Telefon",
        "Headset",
        "Dockingstation",
        "Tastatur",
        "Maus",
        "Beamer",
        "Router",
        "Smartphone",
        "Tablet",
        "Webcam",
        "Kopierer",
        "Netzwerkkarte",
        "Festplatte",
        "USB-Stick",
        "Server",
        "Etikettendrucker",
    ];
    const APP_DE: &[&str] = &[
        "Outlook",
        "Excel",
        "Word",
        "Teams",
        "SAP",
        "DATEV",
        "Firefox",
        "Chrome",
        "Adobe Reader",
        "VPN-Client",
        "OneDrive",
        "SharePoint",
        "Zeiterfassung",
        "Warenwirtschaft",
        "CRM",
    ];
    const SYM_DE: &[&str] = &[
        "startet nicht",
        "ist sehr langsam",
        "stürzt regelmäßig ab",
        "reagiert nicht mehr",
        "zeigt eine Warnung",
        "verliert die Verbindung",
        "lässt sich nicht installieren",
        "meldet einen unbekannten Fehler",
        "friert ein",
        "wird nicht erkannt",
        "fragt nach Anmeldedaten",
        "zeigt falsche Daten",
        "ist nicht erreichbar",
    ];
    const FIX_DE: &[&str] = &[
        "Neustart durchgeführt",
        "Treiber aktualisiert",
        "Cache geleert",
        "Profil neu angelegt",
        "Kabel getauscht",
        "Update installiert",
        "Benutzer eingewiesen",
        "Einstellungen zurückgesetzt",
        "Gerät getauscht",
        "Berechtigungen angepasst",
        "Dienst neu gestartet",
        "Firmware aktualisiert",
        "Lizenz zugewiesen",
    ];
    const DEV_EN: &[&str] = &[
        "printer",
        "laptop",
        "monitor",
        "scanner",
        "desk phone",
        "headset",
        "docking station",
        "keyboard",
        "mouse",
        "projector",
        "router",
        "smartphone",
        "tablet",
        "webcam",
        "network card",
        "hard drive",
        "USB stick",
        "label printer",
    ];
    const APP_EN: &[&str] = &[
        "Outlook",
        "Excel",
        "Word",
        "Teams",
        "SAP",
        "Firefox",
        "Chrome",
        "Adobe Reader",
        "VPN client",
        "OneDrive",
        "SharePoint",
        "time tracking",
        "CRM",
        "ERP client",
    ];
    const SYM_EN: &[&str] = &[
        "does not start",
        "is very slow",
        "crashes regularly",
        "stopped responding",
        "shows a warning",
        "loses the connection",
        "cannot be installed",
        "reports an unknown error",
        "freezes",
        "is not detected",
        "asks for credentials",
        "shows wrong data",
        "is unreachable",
    ];
    const FIX_EN: &[&str] = &[
        "restarted it",
        "updated the driver",
        "cleared the cache",
        "recreated the profile",
        "replaced the cable",
        "installed the update",
        "showed the user how to do it",
        "reset the settings",
        "swapped the device",
        "adjusted permissions",
        "restarted the service",
        "updated the firmware",
        "assigned a license",
    ];
    let mut s = seed | 1;
    let mut rnd = move |m: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % m as u64) as usize
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let de = rnd(2) == 0;
        let (dev, app, sym, fix) = if de {
            (DEV_DE, APP_DE, SYM_DE, FIX_DE)
        } else {
            (DEV_EN, APP_EN, SYM_EN, FIX_EN)
        };
        let thing = if rnd(2) == 0 {
            dev[rnd(dev.len())]
        } else {
            app[rnd(app.len())]
        };
        let s1 = sym[rnd(sym.len())];
        let s2 = sym[rnd(sym.len())];
        let room = 100 + rnd(400);
        let code = format!("0x{:08x}", rnd(1 << 30));
        let (title, notes, res) = if de {
            (
                format!("{thing} {s1}"),
                vec![
                    format!("Benutzer in Raum {room} meldet: {thing} {s1}, Fehlercode {code}."),
                    format!("Nach Rückruf: {thing} {s2}, betrifft nur diesen Arbeitsplatz."),
                ],
                format!(
                    "{}, {} - danach funktioniert es.",
                    fix[rnd(fix.len())],
                    fix[rnd(fix.len())]
                ),
            )
        } else {
            (
                format!("{thing} {s1}"),
                vec![
                    format!("User in room {room} reports the {thing} {s1}, error code {code}."),
                    format!("Called back: the {thing} {s2}; only this workstation is affected."),
                ],
                format!(
                    "{}, {}; works again.",
                    fix[rnd(fix.len())],
                    fix[rnd(fix.len())]
                ),
            )
        };
        out.push(Ticket {
            id: format!("S{i:05}"),
            lang: if de { "de" } else { "en" }.into(),
            title,
            notes,
            resolution: (rnd(4) != 0).then_some(res),
        });
    }
    out
}

#[derive(Debug, Default)]
pub struct Report {
    pub queries: usize,
    pub at1: usize,
    pub at3: usize,
    pub latencies: Vec<Duration>,
    /// (query, expected, what came first)
    pub misses: Vec<(Query, Vec<String>)>,
    /// kind -> (queries, found at 3)
    pub by_kind: std::collections::BTreeMap<String, (usize, usize)>,
}

impl Report {
    pub fn recall1(&self) -> f64 {
        self.at1 as f64 / self.queries.max(1) as f64
    }
    pub fn recall3(&self) -> f64 {
        self.at3 as f64 / self.queries.max(1) as f64
    }
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

pub fn evaluate(j: &Journal, qs: &[Query]) -> Report {
    let mut r = Report::default();
    for q in qs {
        let mut kq = KbQuery::new(&q.text);
        kq.limit = 3;
        let t = Instant::now();
        let hits = j.kb_search(&kq).unwrap();
        r.latencies.push(t.elapsed());
        let ids: Vec<String> = hits.iter().map(|h| h.ticket.clone()).collect();
        r.queries += 1;
        let e = r.by_kind.entry(q.kind.clone()).or_default();
        e.0 += 1;
        if ids.first() == Some(&q.ticket) {
            r.at1 += 1;
        }
        if ids.iter().take(3).any(|i| *i == q.ticket) {
            r.at3 += 1;
            e.1 += 1;
        } else {
            r.misses.push((q.clone(), ids));
        }
    }
    r
}
