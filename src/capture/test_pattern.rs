//! A deterministic animated test pattern: gradients, solid colour blocks,
//! text with the frame number, fine stripes and a moving box. Frame N always
//! has the same pixels for a given size, so tests can compare exactly. A
//! [`PatternControl`] handle holds it still, steps it, or resizes it.

use super::{Capture, CaptureError, CursorShape, MoveHint, ScreenSource};
use crate::framebuffer::{Frame, Rect};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Shared {
    width: u16,
    height: u16,
    frame_no: u64,
    running: bool,
    /// Bumped on every external change so the source republishes.
    generation: u64,
}

/// Remote control for a running [`TestPattern`].
#[derive(Clone, Debug)]
pub struct PatternControl(Arc<Mutex<Shared>>);

impl PatternControl {
    /// Stop (`false`) or restart (`true`) the animation.
    pub fn set_running(&self, running: bool) {
        let mut s = self.0.lock().unwrap();
        s.running = running;
        s.generation += 1;
    }
    /// Show frame `n` (the animation continues from there if running).
    pub fn set_frame(&self, n: u64) {
        let mut s = self.0.lock().unwrap();
        s.frame_no = n;
        s.generation += 1;
    }
    pub fn frame(&self) -> u64 {
        self.0.lock().unwrap().frame_no
    }
    /// Change the screen size (as a RandR change would).
    pub fn resize(&self, width: u16, height: u16) {
        let mut s = self.0.lock().unwrap();
        s.width = width.max(1);
        s.height = height.max(1);
        s.generation += 1;
    }
}

pub struct TestPattern {
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
    last_tick: Instant,
    last_generation: Option<u64>,
    last_frame_no: u64,
    last_size: (u16, u16),
}

impl TestPattern {
    /// A pattern of `width`x`height` animating at `fps` frames per second
    /// (0: held still at frame 0).
    pub fn new(width: u16, height: u16, fps: u32) -> (TestPattern, PatternControl) {
        let shared = Arc::new(Mutex::new(Shared {
            width: width.max(1),
            height: height.max(1),
            frame_no: 0,
            running: fps > 0,
            generation: 0,
        }));
        let interval = Duration::from_micros(1_000_000 / fps.max(1) as u64);
        (
            TestPattern {
                shared: shared.clone(),
                interval,
                last_tick: Instant::now(),
                last_generation: None,
                last_frame_no: 0,
                last_size: (0, 0),
            },
            PatternControl(shared),
        )
    }
}

impl ScreenSource for TestPattern {
    fn name(&self) -> String {
        "ticketvnc test pattern".into()
    }

    fn next(&mut self, max_wait: Duration) -> Result<Option<Capture>, CaptureError> {
        let deadline = Instant::now() + max_wait;
        loop {
            let (w, h, n, generation) = {
                let mut s = self.shared.lock().unwrap();
                if s.running && self.last_tick.elapsed() >= self.interval {
                    s.frame_no += 1;
                    s.generation += 1;
                    self.last_tick = Instant::now();
                }
                (s.width, s.height, s.frame_no, s.generation)
            };
            if self.last_generation != Some(generation) {
                let first = self.last_generation.is_none();
                let moves = if self.last_size == (w, h) && n == self.last_frame_no + 1 {
                    box_move(w, h, self.last_frame_no, n).into_iter().collect()
                } else {
                    Vec::new()
                };
                self.last_generation = Some(generation);
                self.last_frame_no = n;
                self.last_size = (w, h);
                super::note_grab();
                return Ok(Some(Capture {
                    frame: std::sync::Arc::new(render(w, h, n)),
                    damage: None,
                    moves,
                    cursor: first.then(CursorShape::arrow),
                    screens: None,
                    pointer: None,
                    leds: None,
                }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).min(Duration::from_millis(5));
            std::thread::sleep(wait);
        }
    }
}

const BOX: u16 = 64;
/// Top of the band the box moves in.
fn box_band(h: u16) -> u16 {
    h.saturating_sub(BOX + 8) / 2 + h / 4
}

fn box_x(w: u16, n: u64) -> Option<u16> {
    if w <= BOX {
        return None;
    }
    let span = (w - BOX) as u64;
    let t = (n * 4) % (2 * span);
    Some(if t < span { t } else { 2 * span - t } as u16)
}

/// The move of the box from frame `from` to frame `to`, if it moved.
pub fn box_move(w: u16, h: u16, from: u64, to: u64) -> Option<MoveHint> {
    let (a, b) = (box_x(w, from)?, box_x(w, to)?);
    let y = box_band(h);
    if y as u32 + BOX as u32 > h as u32 || a == b {
        return None;
    }
    Some(MoveHint {
        src_x: a,
        src_y: y,
        dst: Rect::new(b, y, BOX, BOX),
    })
}

/// The pixels of frame `n` at `width`x`height`.
pub fn render(width: u16, height: u16, n: u64) -> Frame {
    let (w, h) = (width as usize, height as usize);
    let mut f = Canvas {
        px: vec![0; w * h],
        w,
        h,
    };
    // Background: a smooth 2D gradient.
    for y in 0..h {
        for x in 0..w {
            let r = (x * 255 / w.max(1)) as u32;
            let g = (y * 255 / h.max(1)) as u32;
            let b = ((x + y) * 255 / (w + h).max(1)) as u32;
            f.px[y * w + x] = (r << 16) | (g << 8) | b;
        }
    }
    // Solid colour blocks along the top: the eight corners of the RGB cube and greys.
    const COLOURS: [u32; 12] = [
        0x000000, 0xffffff, 0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0x00ffff, 0xff00ff, 0x808080,
        0x404040, 0xc0c0c0, 0x7f3f1f,
    ];
    let bw = (w / COLOURS.len()).max(1);
    let bh = (h / 8).max(1);
    for (i, c) in COLOURS.iter().enumerate() {
        fill(&mut f, i * bw, 0, bw, bh, *c);
    }
    // A frame-counter block in the top-left corner: its colour changes with
    // every frame, so even a tiny pattern animates.
    let c = n as u32;
    let tick = ((c * 37) & 0xff) << 16 | ((c * 101) & 0xff) << 8 | ((c * 211) & 0xff);
    fill(&mut f, 0, 0, 8.min(w), 8.min(h), tick);
    // Fine stripes and a checkerboard (hard for lossy and palette encoders).
    let sy = bh + 4;
    for y in sy..(sy + 16).min(h) {
        for x in 0..w {
            let c = if (x + y) % 2 == 0 { 0xffffff } else { 0x000000 };
            let c = if x > w / 2 {
                if (x / 3) % 2 == 0 {
                    0x0080ff
                } else {
                    0xff8000
                }
            } else {
                c
            };
            f.px[y * w + x] = c;
        }
    }
    // Text with the frame number.
    let ty = sy + 24;
    draw_text(
        &mut f,
        8,
        ty,
        2,
        0x000000,
        0xffffdd,
        "TICKETVNC TEST PATTERN",
    );
    draw_text(
        &mut f,
        8,
        ty + 20,
        2,
        0xffffff,
        0x203040,
        &format!("FRAME {n:08}"),
    );
    // The moving box over a solid band.
    let band = box_band(height) as usize;
    if band + BOX as usize <= h {
        fill(&mut f, 0, band, w, BOX as usize, 0x102030);
        if let Some(bx) = box_x(width, n) {
            let bx = bx as usize;
            for yy in 0..BOX as usize {
                for xx in 0..BOX as usize {
                    let c = if (xx / 8 + yy / 8) % 2 == 0 {
                        0xe0e000
                    } else {
                        0x2040c0
                    };
                    f.px[(band + yy) * w + bx + xx] = c;
                }
            }
            draw_text(&mut f, bx + 4, band + 24, 2, 0xff0000, 0xe0e000, "BOX");
        }
    }
    Frame::from_pixels(width, height, f.px)
}

/// Pixels being drawn, row-major, `w` x `h`.
struct Canvas {
    px: Vec<u32>,
    w: usize,
    h: usize,
}

fn fill(f: &mut Canvas, x: usize, y: usize, w: usize, h: usize, c: u32) {
    let (fw, fh) = (f.w, f.h);
    for yy in y..(y + h).min(fh) {
        for xx in x..(x + w).min(fw) {
            f.px[yy * fw + xx] = c;
        }
    }
}

fn draw_text(f: &mut Canvas, x: usize, y: usize, scale: usize, fg: u32, bg: u32, text: &str) {
    let (fw, fh) = (f.w, f.h);
    for (i, ch) in text.chars().enumerate() {
        let glyph = glyph(ch);
        for gy in 0..8 {
            let bits = glyph.get(gy).copied().unwrap_or(0);
            for gx in 0..6 {
                let on = gx < 5 && bits & (0x10 >> gx) != 0;
                let c = if on { fg } else { bg };
                for sy in 0..scale {
                    for sx in 0..scale {
                        let px = x + (i * 6 + gx) * scale + sx;
                        let py = y + gy * scale + sy;
                        if px < fw && py < fh {
                            f.px[py * fw + px] = c;
                        }
                    }
                }
            }
        }
    }
}

/// A 5x7 glyph, one byte per row, bit 4 leftmost.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_animated() {
        assert_eq!(render(320, 240, 5), render(320, 240, 5));
        assert_ne!(render(320, 240, 5), render(320, 240, 6));
    }

    #[test]
    fn move_hint_is_true() {
        let (w, h) = (400, 300);
        let a = render(w, h, 10);
        let b = render(w, h, 11);
        let m = box_move(w, h, 10, 11).unwrap();
        for y in 0..m.dst.h {
            assert_eq!(
                a.row(m.src_y + y, m.src_x, m.dst.w),
                b.row(m.dst.y + y, m.dst.x, m.dst.w)
            );
        }
    }

    #[test]
    fn tiny_sizes_do_not_panic() {
        for (w, h) in [(1, 1), (2, 3), (64, 64), (65, 65), (100, 10)] {
            let f = render(w, h, 3);
            assert_eq!(f.pixels().count(), w as usize * h as usize);
        }
    }

    #[test]
    fn held_still_publishes_once() {
        let (mut p, ctl) = TestPattern::new(64, 48, 0);
        assert!(p.next(Duration::from_millis(1)).unwrap().is_some());
        assert!(p.next(Duration::from_millis(20)).unwrap().is_none());
        ctl.set_frame(7);
        let c = p.next(Duration::from_millis(1)).unwrap().unwrap();
        assert_eq!(*c.frame, render(64, 48, 7));
    }
}
