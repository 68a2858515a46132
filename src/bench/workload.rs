//! The deterministic workload generator: draws on the bench's Xvfb with
//! x11rb. Every picture is computed from a fixed seed, uploaded once into
//! pixmaps, and then copied onto the root window on a fixed clock, so the
//! same run draws the same pixels for every server. Each change also
//! repaints a 32x32 marker at (0,0) whose colour encodes the change's
//! number modulo 512 (3 bits per channel, robust to JPEG), which the
//! measuring viewer reads back for latency.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeGCAux, ChangeWindowAttributesAux, ConnectionExt as _, CreateGCAux, ImageFormat,
    Rectangle, GX,
};
use x11rb::rust_connection::RustConnection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Static,
    Typing,
    Scrolling,
    Animation,
    Photo,
    Identical,
}

pub const ALL: [Workload; 6] = [
    Workload::Static,
    Workload::Typing,
    Workload::Scrolling,
    Workload::Animation,
    Workload::Photo,
    Workload::Identical,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Static => "static",
            Workload::Typing => "typing",
            Workload::Scrolling => "scrolling",
            Workload::Animation => "animation",
            Workload::Photo => "photo",
            Workload::Identical => "identical",
        }
    }
    pub fn parse(s: &str) -> Option<Workload> {
        ALL.into_iter().find(|w| w.name() == s)
    }
    /// Time between changes (None: drawn once).
    fn period(self) -> Option<Duration> {
        match self {
            Workload::Static => None,
            Workload::Typing => Some(Duration::from_millis(100)),
            _ => Some(Duration::from_micros(16_667)),
        }
    }
    /// Whether the changes move the marker (identical redraws do not).
    pub fn has_marker(self) -> bool {
        !matches!(self, Workload::Static | Workload::Identical)
    }
}

const MARKER: u16 = 32;

/// How many marker values there are (3 bits per channel): at 60 changes a
/// second a value comes back after 8.5 s, so latencies below that are
/// unambiguous.
pub const MARKER_VALUES: u64 = 512;

/// The marker colour (0x00RRGGBB) for change number `seq`.
pub fn marker_colour(seq: u64) -> u32 {
    let v = (seq % MARKER_VALUES) as u32;
    let c = |b: u32| (b & 7) * 255 / 7;
    (c(v >> 6) << 16) | (c(v >> 3) << 8) | c(v)
}

/// The change number modulo [`MARKER_VALUES`] a marker pixel shows.
pub fn marker_value(p: u32) -> u16 {
    let q = |c: u32| ((c & 0xff) * 7 + 127) / 255;
    ((q(p >> 16) << 6) | (q(p >> 8) << 3) | q(p)) as u16
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A photo-like picture: smooth gradients (a coarse grid of random colours,
/// bilinearly interpolated) plus per-pixel noise of +-12.
pub fn pseudo_photo(w: usize, h: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let (gw, gh) = (w / 120 + 2, h / 120 + 2);
    let grid: Vec<[i32; 3]> = (0..gw * gh)
        .map(|_| {
            let c = rng.next();
            [
                (c & 0xff) as i32,
                (c >> 8 & 0xff) as i32,
                (c >> 16 & 0xff) as i32,
            ]
        })
        .collect();
    let mut out = vec![0u32; w * h];
    for y in 0..h {
        let gy = y * 256 / 120;
        let (y0, fy) = (gy / 256, (gy % 256) as i32);
        for x in 0..w {
            let gx = x * 256 / 120;
            let (x0, fx) = (gx / 256, (gx % 256) as i32);
            let n = rng.next();
            let mut p = 0u32;
            for (ch, shift) in [(0usize, 16u32), (1, 8), (2, 0)] {
                let a = grid[y0 * gw + x0][ch] * (256 - fx) + grid[y0 * gw + x0 + 1][ch] * fx;
                let b = grid[(y0 + 1) * gw + x0][ch] * (256 - fx)
                    + grid[(y0 + 1) * gw + x0 + 1][ch] * fx;
                let v = (a * (256 - fy) + b * fy) >> 16;
                let noise = ((n >> (ch * 8)) & 0x1f) as i32 - 12;
                p |= ((v + noise).clamp(0, 255) as u32) << shift;
            }
            out[y * w + x] = p;
        }
    }
    out
}

/// Dark pseudo-glyphs (8x16 cells) on white, in words and lines like a
/// terminal or a document; `rows` text lines of 16 pixels.
pub fn text_page(w: usize, rows: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let h = rows * 16;
    let mut out = vec![0x00ff_ffffu32; w * h];
    let cols = w / 8;
    for row in 0..rows {
        let len = rng.below(cols as u64) as usize;
        let mut col = 0;
        while col < len {
            let word = 2 + rng.below(8) as usize;
            for _ in 0..word.min(len - col) {
                glyph_into(&mut out, w, col * 8, row * 16, rng.below(94) as u8);
                col += 1;
            }
            col += 1;
        }
    }
    out
}

/// Draws pseudo-glyph `c` (a fixed 6x11 bit pattern) into an 8x16 cell.
fn glyph_into(buf: &mut [u32], stride: usize, x: usize, y: usize, c: u8) {
    let mut rng = Rng::new(1000 + c as u64);
    for gy in 3..14 {
        let bits = rng.next();
        for gx in 1..7 {
            if bits >> gx & 1 == 1 {
                buf[(y + gy) * stride + x + gx] = 0x0020_2020;
            }
        }
    }
}

/// The still desktop the small-change workloads draw on: a photo-like
/// wallpaper with a text window.
pub fn desktop(w: usize, h: usize) -> Vec<u32> {
    let mut d = pseudo_photo(w, h, 1);
    let (wx, wy, ww, wh) = (w / 16, h / 10, w * 5 / 8, h * 7 / 10);
    let text = text_page(ww, wh / 16, 2);
    for y in 0..wh / 16 * 16 {
        let half = if y < wh / 32 * 16 { ww } else { 0 };
        d[(wy + y) * w + wx..(wy + y) * w + wx + half]
            .copy_from_slice(&text[y * ww..y * ww + half]);
        if half == 0 {
            d[(wy + y) * w + wx..(wy + y) * w + wx + ww].fill(0x00ff_ffff);
        }
    }
    d
}

/// The typing area (left, top, width, height) inside [`desktop`].
fn typing_area(w: usize, h: usize) -> (usize, usize, usize, usize) {
    let (wx, wy, ww, wh) = (w / 16, h / 10, w * 5 / 8, h * 7 / 10);
    (wx, wy + wh / 32 * 16, ww, wh / 16 * 16 - wh / 32 * 16)
}

/// A 256x256 animation frame: a bright disc orbiting over a gradient.
fn animation_frame(k: usize) -> Vec<u32> {
    let mut out = vec![0u32; 256 * 256];
    let a = k as f64 * std::f64::consts::TAU / 60.0;
    let (cx, cy) = (128.0 + 70.0 * a.cos(), 128.0 + 70.0 * a.sin());
    for y in 0..256 {
        for x in 0..256 {
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let v = if d < 40.0 {
                255
            } else {
                (255.0 - d).max(0.0) as u32 / 2
            };
            out[y * 256 + x] = (v << 16) | ((x as u32) << 8) | (y as u32 ^ (k as u32 * 4) & 0xff);
        }
    }
    out
}

/// Tints the photo workload cycles through, one per round of its pictures.
const PHOTO_TINTS: u64 = 25;

/// The photo workload's frame `seq` out of `pictures` pictures: which one,
/// and the mask its pixels are XORed with (the low bits of each channel).
/// Every frame of a cycle of pictures x [`PHOTO_TINTS`] (2.5 s at 60 Hz
/// with 6 pictures) differs from every other in every pixel, so a server
/// whose updates come every 6th frame (or any multiple) still sends whole
/// frames, not just the marker: with the pictures alone, bytes and CPU per
/// update depended on how a server's pace fell against the cycle.
pub fn photo_frame(seq: u64, pictures: usize) -> (usize, u32) {
    let n = pictures.max(1) as u64;
    let t = (seq / n) % PHOTO_TINTS;
    // 5 bits: 2 into blue, 2 into green, 1 into red.
    let mask = (t & 3) as u32 | ((t >> 2 & 3) as u32) << 8 | ((t >> 4 & 1) as u32) << 16;
    ((seq % n) as usize, mask)
}

pub struct Display {
    conn: RustConnection,
    root: u32,
    gc: u32,
    /// Draws with GXxor: the photo workload's tint.
    xor_gc: u32,
    pub width: u16,
    pub height: u16,
}

impl Display {
    pub fn open(name: &str) -> Result<Display> {
        let (conn, screen) = x11rb::connect(Some(name)).context("connect to the bench's Xvfb")?;
        let s = &conn.setup().roots[screen];
        let (root, width, height) = (s.root, s.width_in_pixels, s.height_in_pixels);
        let gc = conn.generate_id()?;
        conn.create_gc(gc, root, &CreateGCAux::new().graphics_exposures(0))?;
        let xor_gc = conn.generate_id()?;
        conn.create_gc(
            xor_gc,
            root,
            &CreateGCAux::new().graphics_exposures(0).function(GX::XOR),
        )?;
        // An invisible pointer in the bottom-right corner: servers that draw
        // the cursor into the framebuffer (x0vncserver does, whatever the
        // viewer supports) draw nothing, so every server's picture can be
        // compared with the screen.
        let blank = conn.generate_id()?;
        conn.create_pixmap(1, blank, root, 1, 1)?;
        let cursor = conn.generate_id()?;
        conn.create_cursor(cursor, blank, blank, 0, 0, 0, 0, 0, 0, 0, 0)?;
        conn.change_window_attributes(root, &ChangeWindowAttributesAux::new().cursor(cursor))?;
        conn.warp_pointer(
            x11rb::NONE,
            root,
            0,
            0,
            0,
            0,
            width as i16 - 1,
            height as i16 - 1,
        )?;
        conn.get_input_focus()?.reply()?;
        Ok(Display {
            conn,
            root,
            gc,
            xor_gc,
            width,
            height,
        })
    }

    fn put(&self, d: u32, x: i16, y: i16, w: u16, px: &[u32]) -> Result<()> {
        let rows_per = (60_000 / w as usize).max(1);
        let bytes: Vec<u8> = px.iter().flat_map(|p| p.to_le_bytes()).collect();
        let h = px.len() / w as usize;
        for (i, chunk) in bytes.chunks(rows_per * w as usize * 4).enumerate() {
            let rows = chunk.len() / (w as usize * 4);
            self.conn.put_image(
                ImageFormat::Z_PIXMAP,
                d,
                self.gc,
                w,
                rows as u16,
                x,
                y + (i * rows_per) as i16,
                0,
                24,
                chunk,
            )?;
        }
        debug_assert!(h * w as usize == px.len());
        Ok(())
    }

    fn pixmap(&self, w: u16, px: &[u32]) -> Result<u32> {
        let h = (px.len() / w as usize) as u16;
        let p = self.conn.generate_id()?;
        self.conn.create_pixmap(24, p, self.root, w, h)?;
        self.put(p, 0, 0, w, px)?;
        Ok(p)
    }

    #[allow(clippy::too_many_arguments)] // an X CopyArea has that many
    fn copy(&self, src: u32, sx: i16, sy: i16, dx: i16, dy: i16, w: u16, h: u16) -> Result<()> {
        self.conn
            .copy_area(src, self.root, self.gc, sx, sy, dx, dy, w, h)?;
        Ok(())
    }

    /// A full-screen picture, except the marker's block: a server that
    /// captures between this copy and the marker's repaint must not see a
    /// picture's pixel as a marker.
    fn copy_around_marker(&self, src: u32) -> Result<()> {
        let (w, h, m) = (self.width, self.height, MARKER);
        self.copy(src, m as i16, 0, m as i16, 0, w - m, m)?;
        self.copy(src, 0, m as i16, 0, m as i16, w, h - m)
    }

    /// XORs every pixel but the marker's block with `mask` (the X server
    /// does it: one request).
    fn tint_around_marker(&self, mask: u32) -> Result<()> {
        let (w, h, m) = (self.width, self.height, MARKER);
        self.conn
            .change_gc(self.xor_gc, &ChangeGCAux::new().foreground(mask))?;
        self.conn.poly_fill_rectangle(
            self.root,
            self.xor_gc,
            &[
                Rectangle {
                    x: m as i16,
                    y: 0,
                    width: w - m,
                    height: m,
                },
                Rectangle {
                    x: 0,
                    y: m as i16,
                    width: w,
                    height: h - m,
                },
            ],
        )?;
        Ok(())
    }

    fn marker(&self, seq: u64) -> Result<()> {
        self.conn
            .change_gc(self.gc, &ChangeGCAux::new().foreground(marker_colour(seq)))?;
        self.conn.poly_fill_rectangle(
            self.root,
            self.gc,
            &[Rectangle {
                x: 0,
                y: 0,
                width: MARKER,
                height: MARKER,
            }],
        )?;
        Ok(())
    }

    /// Waits until the X server has done everything sent so far.
    fn sync(&self) -> Result<()> {
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }

    /// The screen's pixels (0x00RRGGBB), read with GetImage.
    pub fn grab(&self) -> Result<Vec<u32>> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = Vec::with_capacity(w * h);
        let mut y = 0;
        while y < h {
            let rows = 64.min(h - y);
            let r = self
                .conn
                .get_image(
                    ImageFormat::Z_PIXMAP,
                    self.root,
                    0,
                    y as i16,
                    w as u16,
                    rows as u16,
                    !0,
                )?
                .reply()?;
            anyhow::ensure!(r.data.len() == w * rows * 4, "GetImage: unexpected size");
            out.extend(
                r.data
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0])),
            );
            y += rows;
        }
        Ok(out)
    }
}

/// When each change was on the screen (after a round trip to the X
/// server), by change number.
#[derive(Default)]
pub struct Events {
    pub drawn: Vec<Instant>,
    /// Ticks the generator could not keep (it was late by a whole period).
    pub missed: u64,
    /// The generator has stopped drawing.
    pub finished: bool,
}

/// Pictures a workload copies from, uploaded once.
pub struct Prepared {
    workload: Workload,
    base: u32,
    frames: Vec<u32>,
    extra: Option<u32>,
}

pub fn prepare(d: &Display, workload: Workload, photos: usize) -> Result<Prepared> {
    let (w, h) = (d.width as usize, d.height as usize);
    let base_px = match workload {
        Workload::Scrolling => text_page(w, h / 16 + 1, 3)[..w * h].to_vec(),
        Workload::Photo => pseudo_photo(w, h, 100),
        _ => desktop(w, h),
    };
    let base = d.pixmap(d.width, &base_px)?;
    let mut frames = Vec::new();
    let mut extra = None;
    match workload {
        Workload::Photo => {
            for k in 0..photos.max(2) {
                frames.push(d.pixmap(d.width, &pseudo_photo(w, h, 100 + k as u64))?);
            }
        }
        Workload::Animation => {
            for k in 0..60 {
                frames.push(d.pixmap(256, &animation_frame(k))?);
            }
        }
        Workload::Scrolling => {
            // 64 further lines of text to scroll in.
            extra = Some(d.pixmap(d.width, &text_page(w, 64, 4))?);
        }
        _ => {}
    }
    d.sync()?;
    Ok(Prepared {
        workload,
        base,
        frames,
        extra,
    })
}

impl Prepared {
    pub fn free(self, d: &Display) {
        for p in std::iter::once(self.base)
            .chain(self.frames)
            .chain(self.extra)
        {
            let _ = d.conn.free_pixmap(p);
        }
        let _ = d.sync();
    }
}

/// Draws the workload's first picture (change 0), then changes on its
/// clock until `stop`.
pub fn run(d: &Display, p: &Prepared, stop: &AtomicBool, events: &Mutex<Events>) -> Result<()> {
    let r = draw(d, p, stop, events);
    let _ = d.sync();
    events.lock().unwrap_or_else(|x| x.into_inner()).finished = true;
    r
}

fn draw(d: &Display, p: &Prepared, stop: &AtomicBool, events: &Mutex<Events>) -> Result<()> {
    let (w, h) = (d.width, d.height);
    let workload = p.workload;
    // A change counts from the moment its first request is sent (a server
    // may capture it before the round trip that follows returns).
    let record = |seq: u64, at: Instant| -> Result<()> {
        d.sync()?;
        let mut e = events.lock().unwrap_or_else(|x| x.into_inner());
        debug_assert_eq!(e.drawn.len() as u64, seq);
        e.drawn.push(at);
        Ok(())
    };
    let at = Instant::now();
    d.copy(p.base, 0, 0, 0, 0, w, h)?;
    d.marker(0)?;
    record(0, at)?;
    let Some(period) = workload.period() else {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(());
    };
    let (tx, ty, tw, th) = typing_area(w as usize, h as usize);
    let start = Instant::now();
    let mut tick = 0u64;
    let mut seq = 0u64;
    let mut glyphs = Rng::new(7);
    let mut typing_buf = vec![0x00ff_ffffu32; 8 * 16];
    while !stop.load(Ordering::SeqCst) {
        tick += 1;
        let due = start + period * tick as u32;
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now - due > period {
            events.lock().unwrap_or_else(|x| x.into_inner()).missed += 1;
            continue;
        }
        seq += 1;
        let at = Instant::now();
        match workload {
            Workload::Static => unreachable!("no period"),
            Workload::Typing => {
                let cols = (tw / 8) as u64;
                let rows = (th / 16) as u64;
                let n = (seq - 1) % (cols * rows);
                let (cx, cy) = (tx + (n % cols) as usize * 8, ty + (n / cols) as usize * 16);
                typing_buf.fill(0x00ff_ffff);
                glyph_into(&mut typing_buf, 8, 0, 0, glyphs.below(94) as u8);
                d.put(d.root, cx as i16, cy as i16, 8, &typing_buf)?;
            }
            Workload::Scrolling => {
                // Everything below the marker's band scrolls.
                let m = MARKER as i16;
                d.copy(d.root, 0, m + 16, 0, m, w, h - MARKER - 16)?;
                let line = ((seq - 1) % 64) as i16 * 16;
                d.copy(
                    p.extra.expect("scroll text"),
                    0,
                    line,
                    0,
                    h as i16 - 16,
                    w,
                    16,
                )?;
            }
            Workload::Animation => {
                let f = p.frames[(seq as usize) % p.frames.len()];
                d.copy(
                    f,
                    0,
                    0,
                    (w as i16 - 256) / 2,
                    (h as i16 - 256) / 2,
                    256,
                    256,
                )?;
            }
            Workload::Photo => {
                let (picture, tint) = photo_frame(seq, p.frames.len());
                d.copy_around_marker(p.frames[picture])?;
                d.tint_around_marker(tint)?;
            }
            Workload::Identical => {
                // The same pixels again: damage without change. The
                // marker keeps its colour.
                d.copy_around_marker(p.base)?;
                d.sync()?;
                continue;
            }
        }
        d.marker(seq)?;
        record(seq, at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_frames_differ_from_every_other_in_a_cycle() {
        let n = 6;
        let cycle = n as u64 * PHOTO_TINTS;
        let frames: Vec<(usize, u32)> = (0..cycle).map(|s| photo_frame(s, n)).collect();
        for (i, a) in frames.iter().enumerate() {
            for b in &frames[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(photo_frame(cycle + 7, n), photo_frame(7, n));
    }

    #[test]
    fn marker_survives_small_errors() {
        for seq in 0..MARKER_VALUES {
            let c = marker_colour(seq);
            assert_eq!(marker_value(c) as u64, seq);
            // JPEG-like error of up to +-17 per channel.
            let bent = |c: u32, d: i32| -> u32 {
                let ch = |s: u32| (((c >> s) & 0xff) as i32 + d).clamp(0, 255) as u32;
                (ch(16) << 16) | (ch(8) << 8) | ch(0)
            };
            assert_eq!(marker_value(bent(c, 17)) as u64, seq);
            assert_eq!(marker_value(bent(c, -17)) as u64, seq);
        }
    }

    #[test]
    fn pictures_are_deterministic() {
        assert_eq!(pseudo_photo(200, 100, 5), pseudo_photo(200, 100, 5));
        assert_ne!(pseudo_photo(200, 100, 5), pseudo_photo(200, 100, 6));
        assert_eq!(text_page(160, 4, 1), text_page(160, 4, 1));
    }
}
