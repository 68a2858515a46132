//! `ticketvnc ticket|sessions|kb`: the technician's commands around the
//! journal (binary side; the journal itself is `ticketvnc::tickets`).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ticketvnc::tickets::{self, format_time, Journal, SessionRow};

#[derive(Subcommand, Debug)]
pub enum TicketCmd {
    /// Create the ticket if needed (reopen it if closed) and print a fresh
    /// one-time code for the customer's VNC password prompt.
    #[command(after_help = "\
Example:
  ticketvnc ticket open 4711 --title \"Printer offline\" --expires 30m
  # Read the 8-character code to the customer; it works once, until it expires.")]
    Open {
        /// The helpdesk's ticket number.
        id: String,
        /// Ticket title (kept in the knowledge base).
        #[arg(long)]
        title: Option<String>,
        /// How long the code stays valid (1m to 7d), e.g. 30m, 2h.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// Language of the ticket's texts for the knowledge base: de, en,
        /// or auto (detected per note; both stemmers when unclear).
        #[arg(long, value_parser = ["de", "en", "auto"])]
        lang: Option<String>,
        /// Where technicians reach `serve`'s browser viewer, for the link
        /// printed with the code (default: $TICKETVNC_WEB_URL, else
        /// serve's default address, http://127.0.0.1:5900).
        #[arg(long, value_name = "URL")]
        web_url: Option<String>,
    },
    /// Close the ticket; its unused codes stop working. Without
    /// --resolution, asks for one on a terminal.
    #[command(after_help = "\
Example:
  ticketvnc ticket close 4711 --resolution \"Spooler neu gestartet, Treiber aktualisiert\"
  # The resolution is what the knowledge base shows first for this ticket.")]
    Close {
        id: String,
        /// How it was solved: the knowledge base ranks it above notes and
        /// shows it with every hit of this ticket.
        #[arg(long)]
        resolution: Option<String>,
    },
    /// Show a ticket: notes, sessions and its journal history.
    Show { id: String },
    /// Add a note to a ticket (kept in the knowledge base).
    Note {
        id: String,
        /// The note text (several words are joined with spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub cmd: Option<SessionsCmd>,
    /// Only sessions of this ticket.
    #[arg(long)]
    pub ticket: Option<String>,
    /// JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SessionsCmd {
    /// Check the journal's hash chain; exits non-zero naming the first broken row.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum KbCmd {
    /// Best matching tickets (titles, notes, resolutions): German and
    /// English stems, umlaut spellings, compound parts and small typos.
    /// Each hit shows the resolution, else the most relevant note.
    #[command(after_help = "\
Examples:
  ticketvnc kb search \"printer offline\"
  ticketvnc kb search Druckerwarteschlange --status closed --since 90d
  ticketvnc kb search vpn --technician alice --json
  journalctl -n 20 | ticketvnc kb search -     # the query from standard input

Score: 0.01 to 1. 60% is the share of the query's words the ticket has (a word
found only as part of a compound or through a typo correction counts 0.6),
40% its bm25 relative to the best hit.")]
    Search {
        /// Words to look for (any of them; more matches rank higher).
        /// A single `-` reads the query from standard input.
        #[arg(num_args = 0..)]
        query: Vec<String>,
        /// At most this many tickets.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// JSON (one array) instead of text.
        #[arg(long)]
        json: bool,
        /// Only open or only closed tickets.
        #[arg(long, value_parser = ["open", "closed"])]
        status: Option<String>,
        /// Only tickets opened at or after this date (2026-01-31, an
        /// RFC 3339 time, or a duration ago such as 90d).
        #[arg(long, value_parser = parse_when)]
        since: Option<i64>,
        /// Only tickets opened before this date (same forms as --since).
        #[arg(long, value_parser = parse_when)]
        until: Option<i64>,
        /// Only tickets this technician worked on (a session or a note).
        #[arg(long)]
        technician: Option<String>,
    },
    /// Rebuild the knowledge base from the tickets (done by itself when a
    /// new ticketvnc changes how texts are analysed).
    Reindex,
}

/// A date, an RFC 3339 time, or a duration before now, as Unix ms.
fn parse_when(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let t = if s.len() == 10 && s.as_bytes()[4] == b'-' {
        humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|e| e.to_string())
    } else {
        humantime::parse_rfc3339_weak(s).map_err(|e| e.to_string())
    };
    if let Ok(t) = t {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_millis();
        return Ok(ms as i64);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(tickets::now_ms() - d.as_millis().min(i64::MAX as u128) as i64),
        Err(_) => Err(format!(
            "{s:?}: expected a date (2026-01-31), an RFC 3339 time or a duration (90d)"
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum TechCmd {
    /// Add a technician account. The password is read from --password-file
    /// (first line), else typed at a prompt (not echoed), else one line of
    /// standard input; never from the command line.
    #[command(after_help = "\
Examples:
  ticketvnc tech add alice                                 # asks for the password twice
  ticketvnc tech add alice --password-file /run/secrets/alice
  printf '%s\\n' \"$PW\" | ticketvnc tech add alice          # one line on stdin")]
    Add {
        /// Account name: 1 to 64 bytes, no spaces or control characters.
        name: String,
        /// File whose first line is the password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove a technician account (its past sessions stay recorded).
    Remove { name: String },
    /// List technician accounts.
    List {
        /// JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Passwords shorter than this get a warning (not a refusal).
const SHORT_PASSWORD: usize = 8;

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim_end_matches('\r')
}

/// The new account's password: from the file, a prompt, or stdin.
fn read_new_password(name: &str, file: Option<&Path>) -> Result<String> {
    let pw = if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading password file {}", f.display()))?;
        first_line(&text).to_owned()
    } else if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password(format!("Password for {name}: "))
            .context("reading the password")?;
        let b =
            rpassword::prompt_password("Same password again: ").context("reading the password")?;
        if a != b {
            bail!("the two passwords differ");
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        first_line(&line).to_owned()
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    if pw.chars().count() < SHORT_PASSWORD {
        eprintln!(
            "warning: the password has fewer than {SHORT_PASSWORD} characters; \
             technician accounts are for logins over the network"
        );
    }
    Ok(pw)
}

pub fn tech(db: Option<&Path>, cmd: TechCmd) -> Result<()> {
    match cmd {
        TechCmd::Add {
            name,
            password_file,
        } => {
            tickets::check_technician_name(&name)?;
            let pw = read_new_password(&name, password_file.as_deref())?;
            let j = open_journal(db)?;
            j.add_technician(&name, pw.as_bytes())?;
            println!("Technician {name} added.");
        }
        TechCmd::Remove { name } => {
            open_journal(db)?.remove_technician(&name)?;
            println!("Technician {name} removed.");
        }
        TechCmd::List { json } => {
            let list = open_journal(db)?.technicians()?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "created_at": format_time(t.created_at)}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                println!("No technicians.");
            } else {
                let w = list.iter().map(|t| t.name.len()).max().unwrap_or(0).max(4);
                println!("{:<w$}  CREATED", "NAME");
                for t in &list {
                    println!("{:<w$}  {}", t.name, format_time(t.created_at));
                }
            }
        }
    }
    Ok(())
}

/// `--journal-key-file` (global), set once by main.
static JOURNAL_KEY_FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

pub fn set_journal_key_file(path: Option<PathBuf>) {
    let _ = JOURNAL_KEY_FILE.set(path);
}

fn journal_key() -> Result<Option<tickets::ChainKey>> {
    match JOURNAL_KEY_FILE.get().and_then(|p| p.as_deref()) {
        Some(p) => Ok(Some(tickets::ChainKey::load(p).with_context(|| {
            format!("reading the journal key {}", p.display())
        })?)),
        None => Ok(None),
    }
}

/// Where `serve` listens by default (its --listen default), as a URL.
const DEFAULT_WEB_URL: &str = "http://127.0.0.1:5900";

/// The browser viewer's link for a ticket: `BASE/?ticket=ID`, the id
/// percent-encoded (the page only shows it; the code is typed there).
pub fn browser_link(base: &str, ticket: &str) -> String {
    let mut id = String::new();
    for b in ticket.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}/?ticket={id}", base.trim_end_matches('/'))
}

pub fn open_journal(db: Option<&Path>) -> Result<Journal> {
    let target = tickets::DbTarget::from_arg(db)?;
    Journal::open_target(&target, journal_key()?)
        .with_context(|| format!("opening the journal {target}"))
}

/// Checks `--db` (or TICKETVNC_DB) once at startup: `sqlite:PATH` becomes
/// PATH, a PostgreSQL URL stays as it is, an unknown scheme is an error.
pub fn check_db_arg(db: Option<PathBuf>) -> Result<Option<PathBuf>> {
    let Some(p) = db else { return Ok(None) };
    Ok(Some(match tickets::DbTarget::from_arg(Some(&p))? {
        tickets::DbTarget::Sqlite(path) => path,
        tickets::DbTarget::Postgres(_) => p,
    }))
}

/// `--db` as it may be shown (a URL's password hidden).
pub fn shown_db(db: &Path) -> String {
    match tickets::DbTarget::from_arg(Some(db)) {
        Ok(t) => t.to_string(),
        Err(_) => db.display().to_string(),
    }
}

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Create or bring the journal's schema up to this version (sqlite or
    /// PostgreSQL). Every command does this when it opens a journal; this
    /// does only that, e.g. to prepare the team database (docs/team.md).
    Migrate,
    /// Copy a whole journal into an empty one, hashes and all, e.g. a
    /// single-machine journal into the team database. The source is not
    /// changed; check the copy with `ticketvnc --db TO sessions verify`.
    #[command(after_help = "\
Examples:
  ticketvnc db copy --from sqlite:$HOME/.local/share/ticketvnc/ticketvnc.db \\
                    --to postgres://ticketvnc_admin@db.example/helpdesk
  ticketvnc --db postgres://ticketvnc_admin@db.example/helpdesk sessions verify")]
    Copy {
        /// The journal to copy: sqlite:PATH (or PATH) or postgres://...
        #[arg(long, value_name = "PATH|URL")]
        from: PathBuf,
        /// An empty journal to fill (created and migrated if needed).
        #[arg(long, value_name = "PATH|URL")]
        to: PathBuf,
    },
}

pub fn db(db: Option<&Path>, cmd: DbCmd) -> Result<()> {
    match cmd {
        DbCmd::Migrate => {
            let target = tickets::DbTarget::from_arg(db)?;
            let j = Journal::open_target(&target, journal_key()?)
                .with_context(|| format!("migrating the journal {target}"))?;
            drop(j);
            println!(
                "Journal {target} is at schema version {}.",
                tickets::SCHEMA_VERSION
            );
        }
        DbCmd::Copy { from, to } => {
            let from = tickets::DbTarget::from_arg(Some(&from))?;
            let to = tickets::DbTarget::from_arg(Some(&to))?;
            let r = tickets::copy_journal(&from, &to)
                .with_context(|| format!("copying the journal {from} to {to}"))?;
            println!(
                "Copied {} rows ({} events) from {from} to {to} in {:.1} s.",
                r.rows,
                r.events,
                r.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

pub fn ticket(db: Option<&Path>, cmd: TicketCmd) -> Result<()> {
    let j = open_journal(db)?;
    match cmd {
        TicketCmd::Open {
            id,
            title,
            expires,
            lang,
            web_url,
        } => {
            tickets::check_code_ttl(expires)?;
            let (t, created) = j.open_ticket(&id, title.as_deref())?;
            if let Some(l) = lang {
                j.set_ticket_lang(&id, tickets::analyzer::Lang::parse(&l))?;
            }
            let code = j.issue_code(&id, expires)?;
            println!(
                "Ticket {} {}{}",
                t.id,
                if created { "created" } else { "open" },
                if t.title.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.title)
                }
            );
            println!("One-time code: {}", code.code);
            let base = web_url
                .or_else(|| std::env::var("TICKETVNC_WEB_URL").ok())
                .unwrap_or_else(|| DEFAULT_WEB_URL.to_string());
            println!("Browser: {}", browser_link(&base, &t.id));
            let left = Duration::from_millis((code.expires_at - tickets::now_ms()).max(0) as u64);
            println!(
                "Valid once, until {} (about {}).",
                format_time(code.expires_at),
                humantime::format_duration(Duration::from_secs(left.as_secs().div_ceil(60) * 60))
            );
        }
        TicketCmd::Close { id, resolution } => {
            let resolution = match resolution {
                Some(r) => Some(r),
                None => ask_resolution(&id)?,
            };
            let t = j.close_ticket(&id, resolution.as_deref())?;
            println!(
                "Ticket {} closed at {}.",
                t.id,
                format_time(t.closed_at.unwrap_or(0))
            );
        }
        TicketCmd::Note { id, text } => {
            let author = std::env::var("USER").ok();
            let n = j.add_note(&id, &text.join(" "), author.as_deref())?;
            println!("Note {n} added to ticket {id}.");
        }
        TicketCmd::Show { id } => {
            let Some(t) = j.ticket(&id)? else {
                bail!("ticket {id:?} does not exist")
            };
            println!("Ticket {}: {}", t.id, t.title);
            println!("  status:   {}", t.status.as_str());
            println!("  created:  {}", format_time(t.created_at));
            if let Some(c) = t.closed_at {
                println!("  closed:   {}", format_time(c));
            }
            if let Some(r) = &t.resolution {
                println!("  resolution: {r}");
            }
            println!("  live one-time codes: {}", t.live_codes);
            if !t.notes.is_empty() {
                println!("\nNotes:");
                for n in &t.notes {
                    println!(
                        "  #{} {} {}: {}",
                        n.id,
                        format_time(n.at),
                        n.author.as_deref().unwrap_or("-"),
                        n.text
                    );
                }
            }
            let sessions = j.sessions(Some(&id))?;
            if !sessions.is_empty() {
                println!("\nSessions:");
                print_table(&sessions);
            }
            let events = j.ticket_events(&id)?;
            if !events.is_empty() {
                println!("\nHistory:");
                for e in events {
                    println!(
                        "  {} {:<15} {}{}",
                        format_time(e.at),
                        e.kind,
                        e.session
                            .map(|s| format!("session {s} "))
                            .unwrap_or_default(),
                        e.details
                    );
                }
            }
        }
    }
    Ok(())
}

fn duration_text(s: &SessionRow) -> String {
    match s.ended_at {
        Some(e) => {
            let secs = ((e - s.started_at).max(0) / 1000) as u64;
            humantime::format_duration(Duration::from_secs(secs)).to_string()
        }
        None => "running".into(),
    }
}

fn print_table(rows: &[SessionRow]) {
    let header = [
        "ID",
        "TICKET",
        "STARTED",
        "DURATION",
        "PEER",
        "DIR",
        "SECURITY",
        "CREDENTIAL",
        "RIGHTS",
        "IN",
        "OUT",
        "UPDATES",
        "END",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.ticket.clone().unwrap_or_else(|| "-".into()),
                format_time(s.started_at),
                duration_text(s),
                s.peer.clone().unwrap_or_else(|| "-".into()),
                s.direction.clone(),
                s.security.clone(),
                s.credential.clone(),
                s.rights.summary(),
                s.stats.bytes_in.to_string(),
                s.stats.bytes_out.to_string(),
                s.stats.updates_sent.to_string(),
                s.end_reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |r: &[String]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(&header.map(String::from));
    for r in &cells {
        line(r);
    }
}

pub fn sessions(db: Option<&Path>, args: SessionsArgs) -> Result<()> {
    match args.cmd {
        Some(SessionsCmd::Verify) => {
            // Read-only: verify never creates, migrates or repairs a journal.
            let key = journal_key()?;
            let r = match tickets::DbTarget::from_arg(db)? {
                tickets::DbTarget::Sqlite(path) => Journal::verify_file(&path, key.as_ref())
                    .with_context(|| format!("verifying the journal {}", path.display()))?,
                target @ tickets::DbTarget::Postgres(_) => {
                    tickets::verify_target(&target, key.as_ref())
                        .with_context(|| format!("verifying the journal {target}"))?
                }
            };
            match r.broken {
                None => {
                    let keyed = match r.keyed_from {
                        Some(1) => ", HMAC-keyed".to_string(),
                        Some(s) => format!(", HMAC-keyed from seq {s}"),
                        None => String::new(),
                    };
                    println!(
                        "Journal OK: {} events{keyed}, chain head {}",
                        r.events, r.head
                    );
                    Ok(())
                }
                Some(b) => bail!("journal tampered: first broken row is {b}"),
            }
        }
        None => {
            let j = open_journal(db)?;
            let rows = j.sessions(args.ticket.as_deref())?;
            if args.json {
                let v: Vec<_> = rows.iter().map(|s| s.to_json()).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                println!("No sessions.");
            } else {
                print_table(&rows);
            }
            Ok(())
        }
    }
}

/// Asks for the resolution on a terminal; elsewhere says it is missing.
fn ask_resolution(id: &str) -> Result<Option<String>> {
    use std::io::Write;
    let mut err = std::io::stderr();
    if !std::io::stdin().is_terminal() {
        // A closed stderr must not stop the ticket from closing.
        let _ = writeln!(
            err,
            "note: ticket {id} closed without --resolution; the knowledge base shows a \
             resolution first, add one with --resolution next time"
        );
        return Ok(None);
    }
    let _ = write!(
        err,
        "How was ticket {id} solved? (one line for the knowledge base, empty to skip): "
    );
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the resolution")?;
    let line = line.trim();
    Ok((!line.is_empty()).then(|| line.to_string()))
}

/// The query: the words given, or with a single `-` standard input
/// (at most [`tickets::MAX_QUERY_BYTES`] of it is used).
fn query_text(words: &[String]) -> Result<String> {
    if words.len() == 1 && words[0] == "-" {
        use std::io::Read;
        let mut buf = Vec::new();
        std::io::stdin()
            .take(tickets::MAX_QUERY_BYTES as u64 + 4)
            .read_to_end(&mut buf)
            .context("reading the query from standard input")?;
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(words.join(" "))
}

pub fn kb(db: Option<&Path>, cmd: KbCmd) -> Result<()> {
    let j = open_journal(db)?;
    match cmd {
        KbCmd::Reindex => {
            let n = j.kb_reindex()?;
            println!("Knowledge base rebuilt: {n} tickets.");
            Ok(())
        }
        KbCmd::Search {
            query,
            limit,
            json,
            status,
            since,
            until,
            technician,
        } => {
            let text = query_text(&query)?;
            let mark = if json {
                ("**", "**")
            } else if std::io::stdout().is_terminal() {
                ("\x1b[1;33m", "\x1b[0m")
            } else {
                ("**", "**")
            };
            let q = tickets::KbQuery {
                text: &text,
                limit,
                status: status.as_deref().map(|s| {
                    if s == "closed" {
                        tickets::TicketStatus::Closed
                    } else {
                        tickets::TicketStatus::Open
                    }
                }),
                since,
                until,
                technician: technician.as_deref(),
                mark,
            };
            let hits = j.kb_search(&q)?;
            if json {
                let v: Vec<_> = hits.iter().map(|h| h.to_json()).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if hits.is_empty() {
                println!("No matching tickets.");
            }
            for (i, h) in hits.iter().enumerate() {
                println!(
                    "{}. Ticket {} [{}] {}  (score {:.2})",
                    i + 1,
                    h.ticket,
                    h.status,
                    h.title_marked,
                    h.score
                );
                let label = match &h.source {
                    tickets::KbSource::Resolution => "Resolution".to_string(),
                    tickets::KbSource::Note { at, author, .. } => format!(
                        "Note {} {}",
                        format_time(*at),
                        author.as_deref().unwrap_or("-")
                    ),
                    tickets::KbSource::Title => continue,
                };
                println!("   {label}: {}", h.excerpt);
            }
            Ok(())
        }
    }
}
