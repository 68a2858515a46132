//! The PipeWire side of the GNOME source (issue 16): a thread that runs a
//! PipeWire main loop, connects to one video node (the stream Mutter's
//! ScreenCast names), takes shared-memory frames (BGRx and its byte-order
//! cousins) and hands the newest one, with its damage and the cursor
//! metadata, to the capture thread.
//!
//! PipeWire objects live on one thread (they are not `Send`); the capture
//! thread sees only [`PwStream`], which is.

use crate::capture::CursorShape;
use crate::framebuffer::{Frame, Rect};
use crate::rfb::limits::MAX_FRAMEBUFFER_EDGE;
use pipewire as pw;
use pw::spa;
use spa::buffer::meta::{MetaCursor, MetaVideoCrop, MetaVideoDamage};
use spa::param::video::{VideoFormat, VideoInfoRaw};
use spa::pod::{Object, Pod, Property, Value};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Damage rectangles kept per delivered frame; beyond this the frame is
/// compared whole (damage `None`).
const MAX_DAMAGE_RECTS: usize = 64;
/// The largest cursor image taken (Mutter's are 24..64 pixels; it offers
/// metadata room for up to 384x384).
const MAX_CURSOR_EDGE: u32 = 384;

/// One frame from the stream.
pub struct PwFrame {
    pub width: u16,
    pub height: u16,
    pub pixels: Frame,
    /// Where it changed since the previous delivered frame (`None`:
    /// unknown).
    pub damage: Option<Vec<Rect>>,
}

/// What the stream delivered since the last [`PwStream::take`].
#[derive(Default)]
pub struct Delivered {
    pub frame: Option<PwFrame>,
    /// A new pointer image.
    pub cursor: Option<CursorShape>,
    /// The pointer's hotspot moved (inner `None`: off the stream).
    pub pointer: Option<Option<(u16, u16)>>,
    /// The stream ended (error, node gone): why.
    pub ended: Option<String>,
}

impl Delivered {
    fn is_empty(&self) -> bool {
        self.frame.is_none()
            && self.cursor.is_none()
            && self.pointer.is_none()
            && self.ended.is_none()
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<Delivered>,
    ready: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Delivered)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        self.ready.notify_all();
    }
}

/// A connected PipeWire video stream on its own thread.
pub struct PwStream {
    shared: Arc<Shared>,
    quit: pw::channel::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PwStream {
    fn drop(&mut self) {
        let _ = self.quit.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PwStream {
    /// Connect to node `node_id` on the user's PipeWire daemon
    /// ($XDG_RUNTIME_DIR/pipewire-0).
    pub fn connect(node_id: u32) -> Result<PwStream, String> {
        Self::connect_on(None, node_id)
    }

    /// Connect to node `node_id` through `remote`, a PipeWire connection
    /// the xdg-desktop-portal opened for us (OpenPipeWireRemote), which
    /// shows only the nodes the portal granted.
    #[cfg(feature = "portal")]
    pub fn connect_fd(remote: std::os::fd::OwnedFd, node_id: u32) -> Result<PwStream, String> {
        Self::connect_on(Some(remote), node_id)
    }

    fn connect_on(remote: Option<std::os::fd::OwnedFd>, node_id: u32) -> Result<PwStream, String> {
        let shared = Arc::new(Shared::default());
        let (quit_tx, quit_rx) = pw::channel::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pipewire".into())
            .spawn(move || {
                if let Err(e) = run(remote, node_id, sh.clone(), quit_rx, &ready_tx) {
                    let _ = ready_tx.send(Err(e.clone()));
                    sh.update(|d| d.ended = Some(e));
                }
            })
            .map_err(|e| format!("cannot start the PipeWire thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(PwStream {
                shared,
                quit: quit_tx,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err("the PipeWire thread ended".into())
            }
        }
    }

    /// Why the stream ended, if it has (frames waiting are left alone).
    pub fn ended(&self) -> Option<String> {
        let s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        s.ended.clone()
    }

    /// Wait up to `max_wait` for something to be delivered, and take it.
    pub fn take(&self, max_wait: Duration) -> Delivered {
        let deadline = Instant::now() + max_wait;
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .shared
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let ended = s.ended.clone();
        let mut out = std::mem::take(&mut *s);
        // An end is kept: every later call sees it too.
        s.ended = ended;
        out.ended = s.ended.clone();
        out
    }
}

struct StreamData {
    format: Option<VideoInfoRaw>,
    shared: Arc<Shared>,
    streaming: bool,
    /// Buffers the stream has (negotiated with the producer).
    buffers: u32,
}

fn pod_bytes(obj: Object) -> Result<Vec<u8>, String> {
    spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &Value::Object(obj),
    )
    .map(|(c, _)| c.into_inner())
    .map_err(|e| format!("cannot build a PipeWire parameter: {e:?}"))
}

/// The formats we take: shared memory in 4-byte pixels, any byte order.
fn enum_format() -> Object {
    pw::spa::pod::object!(
        spa::utils::SpaTypes::ObjectParamFormat,
        spa::param::ParamType::EnumFormat,
        pw::spa::pod::property!(
            spa::param::format::FormatProperties::MediaType,
            Id,
            spa::param::format::MediaType::Video
        ),
        pw::spa::pod::property!(
            spa::param::format::FormatProperties::MediaSubtype,
            Id,
            spa::param::format::MediaSubtype::Raw
        ),
        pw::spa::pod::property!(
            spa::param::format::FormatProperties::VideoFormat,
            Choice,
            Enum,
            Id,
            VideoFormat::BGRx,
            VideoFormat::BGRx,
            VideoFormat::BGRA,
            VideoFormat::xRGB,
            VideoFormat::ARGB,
            VideoFormat::RGBx,
            VideoFormat::RGBA,
            VideoFormat::xBGR,
            VideoFormat::ABGR
        ),
        pw::spa::pod::property!(
            spa::param::format::FormatProperties::VideoSize,
            Choice,
            Range,
            Rectangle,
            spa::utils::Rectangle {
                width: 1280,
                height: 800
            },
            spa::utils::Rectangle {
                width: 1,
                height: 1
            },
            spa::utils::Rectangle {
                width: MAX_FRAMEBUFFER_EDGE as u32,
                height: MAX_FRAMEBUFFER_EDGE as u32
            }
        ),
        pw::spa::pod::property!(
            spa::param::format::FormatProperties::VideoFramerate,
            Choice,
            Range,
            Fraction,
            spa::utils::Fraction { num: 30, denom: 1 },
            spa::utils::Fraction { num: 0, denom: 1 },
            spa::utils::Fraction {
                num: 1000,
                denom: 1
            }
        ),
    )
}

/// A SPA_PARAM_Meta object asking for metadata `kind` of `min..=max`
/// bytes (`default` preferred). A range, not one size: the producer's and
/// ours are intersected, and Mutter's own sizes differ between versions.
fn meta_param(kind: u32, default: usize, min: usize, max: usize) -> Object {
    use spa::utils::{Choice, ChoiceEnum, ChoiceFlags};
    let size = spa::pod::ChoiceValue::Int(Choice(
        ChoiceFlags::empty(),
        ChoiceEnum::Range {
            default: default as i32,
            min: min as i32,
            max: max as i32,
        },
    ));
    Object {
        type_: spa::sys::SPA_TYPE_OBJECT_ParamMeta,
        id: spa::sys::SPA_PARAM_Meta,
        properties: vec![
            Property::new(
                spa::sys::SPA_PARAM_META_type,
                Value::Id(spa::utils::Id(kind)),
            ),
            Property::new(spa::sys::SPA_PARAM_META_size, Value::Choice(size)),
        ],
    }
}

/// The cursor metadata's size for a `w`x`h` image.
fn cursor_meta_size(w: u32, h: u32) -> usize {
    std::mem::size_of::<spa::sys::spa_meta_cursor>()
        + std::mem::size_of::<spa::sys::spa_meta_bitmap>()
        + (w * h * 4) as usize
}

fn meta_params() -> Result<Vec<Vec<u8>>, String> {
    let region = std::mem::size_of::<spa::sys::spa_meta_region>();
    [
        meta_param(
            spa::sys::SPA_META_Cursor,
            cursor_meta_size(64, 64),
            cursor_meta_size(1, 1),
            cursor_meta_size(MAX_CURSOR_EDGE, MAX_CURSOR_EDGE),
        ),
        meta_param(
            spa::sys::SPA_META_VideoDamage,
            region * 16,
            region,
            region * 16,
        ),
        meta_param(spa::sys::SPA_META_VideoCrop, region, region, region),
    ]
    .into_iter()
    .map(pod_bytes)
    .collect()
}

/// Our stream drives the graph it shares with Mutter's (a higher
/// `priority.driver` than Mutter's stream, which has none) and pulls
/// Mutter's buffers itself. With Mutter 43 as the driver, frames are lost:
/// its `pw_stream_queue_buffer` (libpipewire 0.3.65) moves a buffer to us
/// only when the previous one has been taken, so a buffer queued before we
/// ran stays in Mutter's queue until Mutter queues the next one; the last
/// picture of a change (often the only one) then never arrives.
const DRIVER_PRIORITY: &str = "100000";
/// A pull every `PULL_TICK` while buffers are coming (within `ACTIVE_FOR`
/// of the last one), every `IDLE_PULL` on a screen at rest: each pull wakes
/// both processes, and a static screen needs few.
const PULL_TICK: Duration = Duration::from_millis(5);
const ACTIVE_FOR: Duration = Duration::from_secs(1);
const IDLE_PULL: Duration = Duration::from_millis(40);

fn run(
    remote: Option<std::os::fd::OwnedFd>,
    node_id: u32,
    shared: Arc<Shared>,
    quit: pw::channel::Receiver<()>,
    ready: &mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    pw::init();
    let pwe = |what: &str, e: pw::Error| format!("PipeWire: {what}: {e}");
    let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(|e| pwe("main loop", e))?;
    let context = pw::context::ContextRc::new(&mainloop, None).map_err(|e| pwe("context", e))?;
    let core = match remote {
        None => context.connect_rc(None),
        Some(fd) => context.connect_fd_rc(fd, None),
    }
    .map_err(|e| pwe("cannot connect to the PipeWire daemon", e))?;
    // Set to end the loop below (asked to, or the daemon is gone).
    let done = Rc::new(Cell::new(false));
    let d2 = done.clone();
    let _quit = quit.attach(mainloop.loop_(), move |_| d2.set(true));
    let sh = shared.clone();
    let d2 = done.clone();
    let _core_listener = core
        .add_listener_local()
        .error(move |id, _seq, res, message| {
            warn!(id, res, message, "PipeWire error");
            if id == 0 {
                // The core itself: the daemon closed us or went away.
                sh.update(|d| d.ended = Some(format!("PipeWire: {message}")));
                d2.set(true);
            }
        })
        .register();
    let props = pw::properties::properties! {
        *pw::keys::MEDIA_TYPE => "Video",
        *pw::keys::MEDIA_CATEGORY => "Capture",
        *pw::keys::MEDIA_ROLE => "Screen",
        *pw::keys::PRIORITY_DRIVER => DRIVER_PRIORITY,
    };
    let stream =
        pw::stream::StreamBox::new(&core, "ticketvnc", props).map_err(|e| pwe("stream", e))?;
    let data = StreamData {
        format: None,
        shared: shared.clone(),
        streaming: false,
        buffers: 0,
    };
    let metas = meta_params()?;
    // When the last buffer came (it sets the pace of the pulls).
    let last_buffer = Rc::new(Cell::new(None::<Instant>));
    let got_buffer = last_buffer.clone();
    let _listener = stream
        .add_local_listener_with_user_data(data)
        .state_changed(|stream, d, old, new| {
            debug!(?old, ?new, "PipeWire stream state");
            match new {
                pw::stream::StreamState::Streaming => {
                    if !d.streaming {
                        info!(
                            driving = stream.is_driving(),
                            "PipeWire stream is streaming"
                        );
                    }
                    d.streaming = true;
                }
                pw::stream::StreamState::Error(e) => {
                    warn!(error = %e, "PipeWire stream failed");
                    d.shared
                        .update(|s| s.ended = Some(format!("PipeWire stream failed: {e}")));
                }
                pw::stream::StreamState::Unconnected => {
                    warn!("PipeWire stream disconnected");
                    d.shared
                        .update(|s| s.ended = Some("PipeWire stream disconnected".into()));
                }
                pw::stream::StreamState::Paused if d.streaming => {
                    info!("PipeWire stream paused");
                }
                _ => {}
            }
        })
        .param_changed(move |stream, d, id, param| {
            let Some(param) = param else { return };
            if id != spa::param::ParamType::Format.as_raw() {
                return;
            }
            let mut info = VideoInfoRaw::new();
            if let Err(e) = info.parse(param) {
                warn!(error = ?e, "PipeWire: unreadable video format");
                return;
            }
            let size = info.size();
            info!(
                format = ?info.format(),
                width = size.width,
                height = size.height,
                "PipeWire stream format"
            );
            d.format = Some(info);
            let mut pods: Vec<&Pod> = metas.iter().filter_map(|b| Pod::from_bytes(b)).collect();
            if let Err(e) = stream.update_params(&mut pods) {
                warn!(error = %e, "PipeWire: cannot ask for cursor and damage metadata");
            }
        })
        .add_buffer(|_, d, _| {
            d.buffers += 1;
            tracing::trace!(buffers = d.buffers, "PipeWire buffer added");
        })
        .remove_buffer(|_, d, _| {
            d.buffers = d.buffers.saturating_sub(1);
            tracing::trace!(buffers = d.buffers, "PipeWire buffer removed");
        })
        .process(move |stream, d| {
            // Drain to the newest buffer: older ones are only history.
            // Everything queued, oldest first. Only the newest picture is
            // converted; older ones give their pointer news and go back to
            // Mutter at once (gnome-remote-desktop does the same): a buffer
            // held through a slow conversion is one Mutter cannot fill,
            // and a frame Mutter finds no free buffer for is dropped.
            let mut buffers = Vec::new();
            while let Some(buffer) = stream.dequeue_buffer() {
                buffers.push(buffer);
            }
            let newest = buffers.iter_mut().rposition(|b| has_picture(b));
            let n = buffers.len();
            for (i, mut buffer) in buffers.into_iter().enumerate() {
                let picture = Some(i) == newest;
                process(&mut buffer, d, picture, picture && i > 0);
            }
            if n > 0 {
                got_buffer.set(Some(Instant::now()));
                tracing::trace!(dequeued = n, "PipeWire process");
            }
        })
        .register()
        .map_err(|e| pwe("stream listener", e))?;
    let fmt = pod_bytes(enum_format())?;
    let mut params = [Pod::from_bytes(&fmt).ok_or("PipeWire: bad format parameter")?];
    stream
        .connect(
            spa::utils::Direction::Input,
            Some(node_id),
            pw::stream::StreamFlags::AUTOCONNECT
                | pw::stream::StreamFlags::MAP_BUFFERS
                | pw::stream::StreamFlags::DRIVER,
            &mut params,
        )
        .map_err(|e| pwe(&format!("cannot connect to node {node_id}"), e))?;
    let _ = ready.send(Ok(()));
    // The loop, run here rather than by `MainLoop::run` so that each wait
    // ends when the next pull is due.
    let mut last_pull = Instant::now();
    while !done.get() {
        let now = Instant::now();
        let active = last_buffer
            .get()
            .is_some_and(|t| now.duration_since(t) < ACTIVE_FOR);
        let pace = if active { PULL_TICK } else { IDLE_PULL };
        let due = last_pull + pace;
        if now >= due {
            last_pull = now;
            if stream.is_driving() {
                if let Err(e) = stream.trigger_process() {
                    tracing::trace!(error = %e, "PipeWire pull");
                }
            }
            continue;
        }
        // Whole milliseconds (the loop's unit), rounded up: a wait rounded
        // down to 0 would spin until the pull is due.
        let wait = Duration::from_millis((due - now).as_micros().div_ceil(1000) as u64);
        let r = mainloop.loop_().iterate(pw::loop_::Timeout::Finite(wait));
        if r < 0 && r != -rustix::io::Errno::INTR.raw_os_error() {
            return Err(format!("PipeWire: the loop failed ({r})"));
        }
    }
    let _ = stream.disconnect();
    Ok(())
}

/// Byte positions of red, green and blue in a 4-byte pixel of `f`.
fn rgb_offsets(f: VideoFormat) -> Option<(usize, usize, usize)> {
    Some(match f {
        VideoFormat::BGRx | VideoFormat::BGRA => (2, 1, 0),
        VideoFormat::xRGB | VideoFormat::ARGB => (1, 2, 3),
        VideoFormat::RGBx | VideoFormat::RGBA => (0, 1, 2),
        VideoFormat::xBGR | VideoFormat::ABGR => (3, 2, 1),
        _ => return None,
    })
}

/// Whether `buffer` carries a picture (a pointer-only update has an empty
/// chunk).
fn has_picture(buffer: &mut pw::buffer::Buffer<'_>) -> bool {
    buffer.datas_mut().first_mut().is_some_and(|data| {
        let chunk = data.chunk();
        chunk.size() > 0 && !chunk.flags().contains(spa::buffer::ChunkFlags::CORRUPTED)
    })
}

/// Take `buffer`'s pointer news, and its picture when `picture` (the newest
/// of a batch; `after_skipped`: older buffers of the batch were passed
/// over, so their damage is unknown and the frame is compared whole).
fn process(
    buffer: &mut pw::buffer::Buffer<'_>,
    d: &mut StreamData,
    picture: bool,
    after_skipped: bool,
) {
    let Some(info) = d.format else { return };
    let size = info.size();
    let Some((ro, go, bo)) = rgb_offsets(info.format()) else {
        return;
    };
    if size.width == 0
        || size.height == 0
        || size.width > MAX_FRAMEBUFFER_EDGE as u32
        || size.height > MAX_FRAMEBUFFER_EDGE as u32
    {
        return;
    }
    let (fw, fh) = (size.width, size.height);
    // The area to serve: the crop region when the stream has one.
    let mut area = (0u32, 0u32, fw, fh);
    if let Some(crop) = buffer.find_meta::<MetaVideoCrop>() {
        let r = crop.meta_region();
        if r.is_valid() {
            let (p, s) = (r.position(), r.size());
            if p.x >= 0 && p.y >= 0 {
                let (x, y) = (p.x as u32, p.y as u32);
                if x < fw && y < fh {
                    area = (x, y, s.width.min(fw - x), s.height.min(fh - y));
                }
            }
        }
    }
    let damage = buffer.find_meta::<MetaVideoDamage>().and_then(|m| {
        let mut v = Vec::new();
        for r in m.iter() {
            if !r.is_valid() {
                continue;
            }
            let (p, s) = (r.position(), r.size());
            let x0 = (i64::from(p.x) - i64::from(area.0)).clamp(0, i64::from(area.2)) as u32;
            let y0 = (i64::from(p.y) - i64::from(area.1)).clamp(0, i64::from(area.3)) as u32;
            let x1 = (i64::from(p.x) + i64::from(s.width) - i64::from(area.0))
                .clamp(0, i64::from(area.2)) as u32;
            let y1 = (i64::from(p.y) + i64::from(s.height) - i64::from(area.1))
                .clamp(0, i64::from(area.3)) as u32;
            if x1 > x0 && y1 > y0 {
                v.push(Rect::new(
                    x0 as u16,
                    y0 as u16,
                    (x1 - x0) as u16,
                    (y1 - y0) as u16,
                ));
            }
            if v.len() > MAX_DAMAGE_RECTS {
                return None;
            }
        }
        Some(v)
    });
    let damage = damage.filter(|_| !after_skipped);
    let (cursor, pointer) = read_cursor(buffer, area);
    let started = Instant::now();
    let pixels = if picture {
        read_frame(buffer, (fw, fh), area, (ro, go, bo))
    } else {
        None
    };
    let frame = pixels.map(|pixels| PwFrame {
        width: area.2 as u16,
        height: area.3 as u16,
        pixels,
        damage,
    });
    if let Some(f) = &frame {
        tracing::trace!(
            damage = ?f.damage.as_ref().map(Vec::len),
            copy_us = started.elapsed().as_micros() as u64,
            "PipeWire frame"
        );
    }
    if frame.is_none() && cursor.is_none() && pointer.is_none() {
        return;
    }
    d.shared.update(|s| {
        if let Some(f) = frame {
            let merged = match (s.frame.take(), f.damage) {
                (None, dmg) => dmg,
                (Some(old), Some(mut dmg))
                    if old.width == f.width && old.height == f.height && old.damage.is_some() =>
                {
                    let mut all = old.damage.unwrap_or_default();
                    all.append(&mut dmg);
                    (all.len() <= MAX_DAMAGE_RECTS).then_some(all)
                }
                _ => None,
            };
            s.frame = Some(PwFrame {
                damage: merged,
                ..f
            });
        }
        if cursor.is_some() {
            s.cursor = cursor;
        }
        if pointer.is_some() {
            s.pointer = pointer;
        }
    });
}

/// The frame's pixels in `area`, or `None` when this buffer carries no
/// picture (a cursor-only update has an empty chunk).
fn read_frame(
    buffer: &mut pw::buffer::Buffer<'_>,
    (fw, fh): (u32, u32),
    area: (u32, u32, u32, u32),
    offsets: (usize, usize, usize),
) -> Option<Frame> {
    let datas = buffer.datas_mut();
    let data = datas.first_mut()?;
    let chunk = data.chunk();
    let (csize, coffset, cstride) = (chunk.size(), chunk.offset(), chunk.stride());
    if csize == 0 || chunk.flags().contains(spa::buffer::ChunkFlags::CORRUPTED) {
        return None;
    }
    let stride = if cstride > 0 {
        cstride as usize
    } else {
        fw as usize * 4
    };
    let bytes = data.data()?;
    convert(bytes, coffset as usize, stride, (fw, fh), area, offsets)
}

/// The pixels of `area` (x, y, w, h) of a `fw`x`fh` frame of 4-byte
/// pixels starting at `start` in `bytes`, `stride` bytes a row, as
/// `0x00RRGGBB`; `None` (logged) when the buffer does not hold the frame.
fn convert(
    bytes: &[u8],
    start: usize,
    stride: usize,
    (fw, fh): (u32, u32),
    area: (u32, u32, u32, u32),
    (ro, go, bo): (usize, usize, usize),
) -> Option<Frame> {
    let (fw, fh) = (fw as usize, fh as usize);
    let (ax, ay, aw, ah) = (
        area.0 as usize,
        area.1 as usize,
        area.2 as usize,
        area.3 as usize,
    );
    if fw == 0 || fh == 0 || aw == 0 || ah == 0 || ax + aw > fw || ay + ah > fh {
        debug!(
            fw,
            fh,
            ?area,
            "PipeWire: empty frame or area outside it; skipped"
        );
        return None;
    }
    if stride < fw * 4 {
        debug!(stride, "PipeWire: stride shorter than a row; frame skipped");
        return None;
    }
    let need = stride
        .checked_mul(fh - 1)
        .and_then(|n| n.checked_add(fw * 4))
        .and_then(|n| n.checked_add(start));
    if need.is_none_or(|end| end > bytes.len()) {
        debug!(
            len = bytes.len(),
            start, stride, "PipeWire: buffer smaller than its frame; frame skipped"
        );
        return None;
    }
    Some(Frame::from_rows(aw as u16, ah as u16, |y, out| {
        let off = start + (ay + y as usize) * stride + ax * 4;
        out.extend(
            bytes[off..off + aw * 4]
                .chunks_exact(4)
                .map(|px| u32::from(px[ro]) << 16 | u32::from(px[go]) << 8 | u32::from(px[bo])),
        );
    }))
}

/// The cursor metadata of a buffer: a new image (when the buffer has one)
/// and the hotspot's position within `area`.
#[allow(clippy::type_complexity)]
fn read_cursor(
    buffer: &pw::buffer::Buffer<'_>,
    area: (u32, u32, u32, u32),
) -> (Option<CursorShape>, Option<Option<(u16, u16)>>) {
    let Some(c) = buffer.find_meta::<MetaCursor>() else {
        return (None, None);
    };
    if !c.is_valid() {
        return (None, None);
    }
    // libspa follows the offsets in the metadata without comparing them
    // with the metadata's size (which pipewire-rs does not expose): an
    // offset or stride past the largest metadata we accept is not read.
    let room = cursor_meta_size(MAX_CURSOR_EDGE, MAX_CURSOR_EDGE);
    let bitmap_at = c.bitmap_offset() as usize;
    let bitmap_fits = bitmap_at
        .checked_add(std::mem::size_of::<spa::sys::spa_meta_bitmap>())
        .is_some_and(|end| end <= room);
    tracing::trace!(
        id = c.id(),
        bitmap_offset = c.bitmap_offset(),
        bitmap = ?bitmap_fits.then(|| c.bitmap()).flatten(),
        "PipeWire cursor metadata"
    );
    let p = c.position();
    let (x, y) = (
        i64::from(p.x) - i64::from(area.0),
        i64::from(p.y) - i64::from(area.1),
    );
    let pointer = if x >= 0 && y >= 0 && x < i64::from(area.2) && y < i64::from(area.3) {
        Some((x as u16, y as u16))
    } else {
        None
    };
    let shape = bitmap_fits.then(|| c.bitmap()).flatten().and_then(|b| {
        let s = b.size();
        if s.width == 0 || s.height == 0 {
            // Mutter's "no pointer image" (a surface that set none): an
            // invisible pointer, as on the screen.
            return Some(CursorShape {
                width: 1,
                height: 1,
                hot_x: 0,
                hot_y: 0,
                pixels: vec![0],
            });
        }
        if s.width > MAX_CURSOR_EDGE || s.height > MAX_CURSOR_EDGE {
            return None;
        }
        // Byte positions of alpha, red, green, blue.
        let (ao, ro, go, bo) = match b.format() {
            VideoFormat::RGBA => (3, 0, 1, 2),
            VideoFormat::BGRA => (3, 2, 1, 0),
            VideoFormat::ARGB => (0, 1, 2, 3),
            VideoFormat::ABGR => (0, 3, 2, 1),
            _ => return None,
        };
        let (w, h) = (s.width as usize, s.height as usize);
        let stride = if b.stride() > 0 {
            b.stride() as usize
        } else {
            w * 4
        };
        // `bitmap_data` spans `height * |stride|` bytes from the bitmap's
        // own offset; all of it must lie in the metadata.
        let span = (b.stride().unsigned_abs() as usize).checked_mul(h)?;
        let end = bitmap_at
            .checked_add(b.offset() as usize)?
            .checked_add(span)?;
        if stride > MAX_CURSOR_EDGE as usize * 4 || end > room {
            return None;
        }
        let bytes = b.bitmap_data()?;
        if stride < w * 4 || bytes.len() < stride * (h - 1) + w * 4 {
            return None;
        }
        let mut pixels = Vec::with_capacity(w * h);
        for row in 0..h {
            for px in bytes[row * stride..row * stride + w * 4].chunks_exact(4) {
                pixels.push(unpremultiply(px[ao], px[ro], px[go], px[bo]));
            }
        }
        let hs = c.hotspot();
        Some(CursorShape {
            width: w as u16,
            height: h as u16,
            hot_x: hs.x.clamp(0, s.width as i32 - 1) as u16,
            hot_y: hs.y.clamp(0, s.height as i32 - 1) as u16,
            pixels,
        })
    });
    (shape, Some(pointer))
}

/// Mutter's cursor bitmaps carry premultiplied alpha; ours do not.
fn unpremultiply(a: u8, r: u8, g: u8, b: u8) -> u32 {
    let un = |c: u8| -> u32 {
        if a == 0 {
            0
        } else {
            (u32::from(c) * 255 / u32::from(a)).min(255)
        }
    };
    u32::from(a) << 24 | un(r) << 16 | un(g) << 8 | un(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_orders() {
        let px = [0x11u8, 0x22, 0x33, 0x44];
        let conv = |f| {
            let (r, g, b) = rgb_offsets(f).unwrap();
            u32::from(px[r]) << 16 | u32::from(px[g]) << 8 | u32::from(px[b])
        };
        assert_eq!(conv(VideoFormat::BGRx), 0x33_22_11);
        assert_eq!(conv(VideoFormat::xRGB), 0x22_33_44);
        assert_eq!(conv(VideoFormat::RGBx), 0x11_22_33);
        assert_eq!(conv(VideoFormat::xBGR), 0x44_33_22);
        assert!(rgb_offsets(VideoFormat::I420).is_none());
    }

    /// A 3x2 BGRx frame with 2 bytes of padding a row, after 5 bytes.
    fn frame() -> Vec<u8> {
        let mut b = vec![0xee; 5];
        for y in 0..2u8 {
            for x in 0..3u8 {
                b.extend_from_slice(&[x, y, 0x80, 0xff]);
            }
            b.extend_from_slice(&[0xee, 0xee]);
        }
        b
    }

    #[test]
    fn converts_with_offset_stride_and_crop() {
        let b = frame();
        let bgrx = rgb_offsets(VideoFormat::BGRx).unwrap();
        let all = convert(&b, 5, 14, (3, 2), (0, 0, 3, 2), bgrx).unwrap();
        assert_eq!(
            all.to_pixels(),
            [0x800000, 0x800001, 0x800002, 0x800100, 0x800101, 0x800102]
        );
        let crop = convert(&b, 5, 14, (3, 2), (1, 1, 2, 1), bgrx).unwrap();
        assert_eq!(crop.to_pixels(), [0x800101, 0x800102]);
        // The last row needs no padding after it.
        assert!(convert(&b[..b.len() - 2], 5, 14, (3, 2), (0, 0, 3, 2), bgrx).is_some());
    }

    #[test]
    fn refuses_buffers_that_do_not_hold_the_frame() {
        let b = frame();
        let bgrx = rgb_offsets(VideoFormat::BGRx).unwrap();
        // One byte short.
        assert!(convert(&b[..b.len() - 3], 5, 14, (3, 2), (0, 0, 3, 2), bgrx).is_none());
        // A stride shorter than a row.
        assert!(convert(&b, 5, 11, (3, 2), (0, 0, 3, 2), bgrx).is_none());
        // An offset beyond the buffer, and one that overflows.
        assert!(convert(&b, 100, 14, (3, 2), (0, 0, 3, 2), bgrx).is_none());
        assert!(convert(&b, usize::MAX, 14, (3, 2), (0, 0, 3, 2), bgrx).is_none());
        assert!(convert(&b, 5, usize::MAX / 2, (3, 2), (0, 0, 3, 2), bgrx).is_none());
        // An area outside the frame, and empty ones.
        assert!(convert(&b, 5, 14, (3, 2), (2, 0, 2, 2), bgrx).is_none());
        assert!(convert(&b, 5, 14, (3, 2), (0, 0, 0, 2), bgrx).is_none());
        assert!(convert(&b, 5, 14, (0, 2), (0, 0, 0, 2), bgrx).is_none());
    }

    #[test]
    fn unpremultiplied() {
        assert_eq!(unpremultiply(0, 0, 0, 0), 0);
        assert_eq!(unpremultiply(255, 1, 2, 3), 0xff01_0203);
        assert_eq!(unpremultiply(0x80, 0x40, 0x80, 0), 0x807f_ff00);
    }
}
