//! The consent prompt as an X11 window on the served display.
//!
//! Each question gets its own X connection and thread: a pending prompt
//! shares nothing with other sessions, and cancelling the question (the
//! viewer left, the session timed out) closes the window within a tick.
//! The window names the technician, the ticket and the viewer's address,
//! counts down to the automatic refusal, and has three buttons, each its
//! own child window named after its label ("Accept", "View only",
//! "Reject"), so assistive tools and tests can find them by name. Closing
//! the window rejects. Text uses the server's built-in `fixed` font, so no
//! font package is needed.

use super::{prompt_lines, ScreenRect, Shields};
use crate::security::Rights;
use crate::session::consent::{ConsentAnswer, ConsentAsker, ConsentFuture, ConsentRequest};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask,
    PropMode, Rectangle, StackMode, Window, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::wrapper::ConnectionExt as _;

/// The window's title (and WM_CLASS), which tests and window managers see.
pub const TITLE: &str = "ticketvnc: remote support request";
/// Button labels, which are also the buttons' window names.
pub const ACCEPT: &str = "Accept";
pub const VIEW_ONLY: &str = "View only";
pub const REJECT: &str = "Reject";

const WIDTH: u16 = 480;
const LINE: i16 = 18;
const MARGIN: i16 = 16;
const BUTTON_W: u16 = 120;
const BUTTON_H: u16 = 30;
/// How often the prompt checks for cancellation and redraws its countdown.
const TICK: Duration = Duration::from_millis(50);

/// Asks on X display `display` (None: $DISPLAY).
pub struct X11Prompt {
    pub display: Option<String>,
    pub shields: Arc<Shields>,
    next: AtomicU64,
}

impl X11Prompt {
    pub fn new(display: Option<String>, shields: Arc<Shields>) -> X11Prompt {
        X11Prompt {
            display,
            shields,
            next: AtomicU64::new(1),
        }
    }
}

/// Closes the window when the question is dropped.
struct Cancel(Arc<AtomicBool>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ConsentAsker for X11Prompt {
    fn ask(&self, req: ConsentRequest) -> ConsentFuture {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let cancel = Cancel(cancelled.clone());
        let display = self.display.clone();
        let shields = self.shields.clone();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let session = req.session;
        let spawned = std::thread::Builder::new()
            .name(format!("consent-prompt-{session}"))
            .spawn(move || {
                let answer = match run(display.as_deref(), &req, id, &shields, &cancelled) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(session, error = %e, "the consent prompt failed; rejecting");
                        ConsentAnswer::Reject
                    }
                };
                shields.remove(id);
                let _ = tx.send(answer);
            });
        if let Err(e) = spawned {
            tracing::warn!(session, error = %e, "cannot start the consent prompt; rejecting");
        }
        Box::pin(async move {
            let _cancel = cancel;
            rx.await.unwrap_or(ConsentAnswer::Reject)
        })
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Latin-1 bytes for the core font (others become '?'), at most `max`.
fn latin1(s: &str, max: usize) -> Vec<u8> {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .take(max.min(255))
        .collect()
}

struct Buttons {
    accept: Window,
    view_only: Window,
    reject: Window,
}

fn run(
    display: Option<&str>,
    req: &ConsentRequest,
    id: u64,
    shields: &Shields,
    cancelled: &AtomicBool,
) -> Res<ConsentAnswer> {
    let (conn, screen_num) = x11rb::connect(display)?;
    let screen = conn.setup().roots[screen_num].clone();
    let root = screen.root;
    let truecolor = screen.root_depth >= 24;
    let rgb = |v: u32, fallback: u32| if truecolor { v } else { fallback };
    let (white, black) = (screen.white_pixel, screen.black_pixel);
    let bg = rgb(0xf4f4f4, white);
    let accent = rgb(0x1f5fa8, black);
    let button_bg = rgb(0xe0e0e0, white);

    let max_chars = ((WIDTH as i16 - 2 * MARGIN) / 6) as usize;
    let lines: Vec<String> = prompt_lines(req)
        .iter()
        .flat_map(|l| wrap(l, max_chars))
        .collect();
    let text_top = MARGIN + LINE + 8; // below the heading
    let buttons_y = text_top + LINE * (lines.len() as i16 + 2);
    let height = (buttons_y + BUTTON_H as i16 + MARGIN) as u16;
    let x = (screen.width_in_pixels.saturating_sub(WIDTH) / 2) as i16;
    let y = (screen.height_in_pixels.saturating_sub(height) / 3) as i16;

    let win = conn.generate_id()?;
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        root,
        x,
        y,
        WIDTH,
        height,
        2,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new()
            .background_pixel(bg)
            .border_pixel(accent)
            .event_mask(EventMask::EXPOSURE | EventMask::STRUCTURE_NOTIFY),
    )?;
    set_name(&conn, win, TITLE)?;
    conn.change_property8(
        PropMode::REPLACE,
        win,
        AtomEnum::WM_CLASS,
        AtomEnum::STRING,
        b"ticketvnc-consent\0ticketvnc\0",
    )?;
    let atom = |name: &[u8]| -> Res<u32> { Ok(conn.intern_atom(false, name)?.reply()?.atom) };
    let wm_protocols = atom(b"WM_PROTOCOLS")?;
    let wm_delete = atom(b"WM_DELETE_WINDOW")?;
    conn.change_property32(
        PropMode::REPLACE,
        win,
        wm_protocols,
        AtomEnum::ATOM,
        &[wm_delete],
    )?;
    // A dialog that stays on top, for window managers that read the hints.
    let (wtype, dialog) = (
        atom(b"_NET_WM_WINDOW_TYPE")?,
        atom(b"_NET_WM_WINDOW_TYPE_DIALOG")?,
    );
    conn.change_property32(PropMode::REPLACE, win, wtype, AtomEnum::ATOM, &[dialog])?;
    let (wstate, above) = (atom(b"_NET_WM_STATE")?, atom(b"_NET_WM_STATE_ABOVE")?);
    conn.change_property32(PropMode::REPLACE, win, wstate, AtomEnum::ATOM, &[above])?;

    let gap = (WIDTH - 3 * BUTTON_W) / 4;
    let make_button = |i: u16, label: &str| -> Res<Window> {
        let b = conn.generate_id()?;
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            b,
            win,
            (gap + i * (BUTTON_W + gap)) as i16,
            buttons_y,
            BUTTON_W,
            BUTTON_H,
            1,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .background_pixel(button_bg)
                .border_pixel(black)
                .event_mask(EventMask::EXPOSURE | EventMask::BUTTON_PRESS),
        )?;
        set_name(&conn, b, label)?;
        Ok(b)
    };
    let buttons = Buttons {
        accept: make_button(0, ACCEPT)?,
        view_only: make_button(1, VIEW_ONLY)?,
        reject: make_button(2, REJECT)?,
    };

    let font = conn.generate_id()?;
    conn.open_font(font, b"fixed")?;
    let gc = conn.generate_id()?;
    conn.create_gc(
        gc,
        win,
        &CreateGCAux::new()
            .foreground(black)
            .background(bg)
            .font(font),
    )?;
    let gc_button = conn.generate_id()?;
    conn.create_gc(
        gc_button,
        win,
        &CreateGCAux::new()
            .foreground(black)
            .background(button_bg)
            .font(font),
    )?;
    let gc_accent = conn.generate_id()?;
    conn.create_gc(gc_accent, win, &CreateGCAux::new().foreground(accent))?;
    let gc_heading = conn.generate_id()?;
    conn.create_gc(
        gc_heading,
        win,
        &CreateGCAux::new()
            .foreground(white)
            .background(accent)
            .font(font),
    )?;

    conn.map_subwindows(win)?;
    conn.map_window(win)?;
    conn.flush()?;

    let started = Instant::now();
    let deadline = req.timeout.map(|t| started + t);
    let mut last_secs = u64::MAX;
    let draw = |secs_left: Option<u64>| -> Res<()> {
        conn.poly_fill_rectangle(
            win,
            gc_accent,
            &[Rectangle {
                x: 0,
                y: 0,
                width: WIDTH,
                height: (MARGIN + LINE - 2) as u16,
            }],
        )?;
        let heading = latin1("Remote support request", max_chars);
        conn.image_text8(win, gc_heading, MARGIN, MARGIN + 4, &heading)?;
        for (i, l) in lines.iter().enumerate() {
            conn.image_text8(
                win,
                gc,
                MARGIN,
                text_top + LINE * i as i16,
                &latin1(l, max_chars),
            )?;
        }
        let footer = match secs_left {
            Some(s) => format!("No answer rejects it in {s:>3} s."),
            None => "No answer rejects it.".to_string(),
        };
        conn.image_text8(
            win,
            gc,
            MARGIN,
            text_top + LINE * lines.len() as i16 + 4,
            &latin1(&footer, max_chars),
        )?;
        for (b, label) in [
            (buttons.accept, ACCEPT),
            (buttons.view_only, VIEW_ONLY),
            (buttons.reject, REJECT),
        ] {
            let tx = (BUTTON_W as i16 - 6 * label.len() as i16) / 2;
            conn.image_text8(b, gc_button, tx, 19, label.as_bytes())?;
        }
        conn.flush()?;
        Ok(())
    };

    loop {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        while let Some(ev) = conn.poll_for_event()? {
            match ev {
                Event::Expose(_) => last_secs = u64::MAX,
                Event::ButtonPress(e) if e.detail == 1 => {
                    if e.event == buttons.accept {
                        return finish(&conn, win, ConsentAnswer::Accept(req.rights));
                    } else if e.event == buttons.view_only {
                        let r = Rights::VIEW_ONLY.intersect(req.rights);
                        return finish(&conn, win, ConsentAnswer::Accept(r));
                    } else if e.event == buttons.reject {
                        return finish(&conn, win, ConsentAnswer::Reject);
                    }
                }
                Event::ClientMessage(e)
                    if e.type_ == wm_protocols && e.data.as_data32()[0] == wm_delete =>
                {
                    return finish(&conn, win, ConsentAnswer::Reject);
                }
                // Destroyed from outside: no answer is a refusal.
                Event::DestroyNotify(e) if e.window == win => return Ok(ConsentAnswer::Reject),
                _ => {}
            }
        }
        // Where the window really is (a window manager may have moved it):
        // viewers' clicks are kept off it.
        if let Ok(c) = conn.translate_coordinates(win, root, 0, 0) {
            if let Ok(p) = c.reply() {
                shields.set(
                    id,
                    ScreenRect {
                        x: p.dst_x.into(),
                        y: p.dst_y.into(),
                        w: u32::from(WIDTH) + 4,
                        h: u32::from(height) + 4,
                    },
                );
            }
        }
        let secs = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs());
        if secs.unwrap_or(0) != last_secs {
            // Stay on top of whatever the customer opens meanwhile.
            conn.configure_window(win, &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE))?;
            draw(secs)?;
            last_secs = secs.unwrap_or(0);
        }
        std::thread::sleep(TICK);
    }
    // Cancelled (the viewer left, the question timed out): just close.
    let _ = conn.destroy_window(win);
    let _ = conn.flush();
    Ok(ConsentAnswer::Reject)
}

/// Splits `s` at spaces into lines of at most `max` characters.
fn wrap(s: &str, max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    for word in s.split(' ') {
        let cur = out.last_mut().unwrap();
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > max {
            out.push(String::from("  "));
        }
        let cur = out.last_mut().unwrap();
        if !cur.trim().is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    out
}

fn set_name(conn: &impl Connection, win: Window, name: &str) -> Res<()> {
    conn.change_property8(
        PropMode::REPLACE,
        win,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        &latin1(name, 255),
    )?;
    let utf8 = conn.intern_atom(false, b"UTF8_STRING")?.reply()?.atom;
    let net_name = conn.intern_atom(false, b"_NET_WM_NAME")?.reply()?.atom;
    conn.change_property8(PropMode::REPLACE, win, net_name, utf8, name.as_bytes())?;
    Ok(())
}

fn finish(conn: &impl Connection, win: Window, a: ConsentAnswer) -> Res<ConsentAnswer> {
    conn.destroy_window(win)?;
    conn.flush()?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::{latin1, wrap};

    #[test]
    fn long_lines_wrap_at_spaces() {
        assert_eq!(wrap("ab cd ef", 5), vec!["ab cd", "  ef"]);
        assert_eq!(wrap("short", 20), vec!["short"]);
    }

    #[test]
    fn text_for_the_core_font_is_latin1_and_bounded() {
        assert_eq!(latin1("Jürgen €", 80), b"J\xfcrgen ?".to_vec());
        assert_eq!(latin1("a\nb\x1b", 80), b"ab".to_vec());
        assert_eq!(latin1(&"x".repeat(1000), 300).len(), 255);
        assert_eq!(latin1("abcdef", 3), b"abc".to_vec());
    }
}
