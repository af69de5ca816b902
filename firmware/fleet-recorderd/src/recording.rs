//! One recording session of one device: a capture thread reads the device into preallocated blocks
//! and hands them over a bounded channel to the writer (the calling thread), which cuts segments by
//! sample count, writes them into `.buffer/` and promotes them into `data/`.
//!
//! The capture loop allocates nothing: blocks circulate between a free pool and a `full` channel,
//! both bounded and both sized at start. The pool is a stack (last returned, first reused), so in
//! steady state only the few blocks in flight are ever touched and resident; the rest of the ring
//! costs address space until the writer falls behind. If the writer falls behind by the whole ring, the capture thread
//! stops reading, the device overruns, and the overrun is recorded as a gap like any other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::audio::AudioMeter;
use crate::capture::{
    CaptureError, CaptureSource, ReadOutcome, Reopen, StreamSpec, clocks_now, decide_reopen,
};
use crate::guano::{ClosedBy, GapBefore, SegmentMeta};
use crate::metrics::{DeviceMetrics, DeviceState};
use crate::segment::{self, Stamp, plan_split};
use crate::wav::{SegmentFile, WavError, WavFormat};

/// Whether wall-clock time is trusted when a segment starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockTrust {
    Always,
    Never,
    /// The station's clock rule (ADR 0004), asked at each segment start:
    /// `fleet_facts::clock` reads systemd-timesyncd's files and the RTC under these roots and
    /// `fleet_core::clock::decide_trust` judges, as in every fleet daemon.
    System(fleet_facts::Roots),
}

impl ClockTrust {
    #[must_use]
    pub fn trusted(&self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::System(roots) => {
                let (_, trust) =
                    fleet_facts::clock::trust(roots, &fleet_core::clock::ClockPolicy::default());
                trust.is_trusted()
            }
        }
    }
}

/// Why a session should stop; shared with the daemon loop.
#[derive(Debug, Default)]
pub struct StopFlag(AtomicU8);

impl StopFlag {
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Ask the session to stop; its last segment is closed with `reason`.
    pub fn stop(&self, reason: ClosedBy) {
        let v = match reason {
            ClosedBy::Schedule => 2,
            _ => 1,
        };
        self.0.store(v, Ordering::SeqCst);
    }
    pub fn clear(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
    #[must_use]
    pub fn requested(&self) -> Option<ClosedBy> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            2 => Some(ClosedBy::Schedule),
            _ => Some(ClosedBy::Shutdown),
        }
    }
}

/// Everything a session needs.
#[derive(Debug, Clone)]
pub struct SessionSetup {
    pub spec: StreamSpec,
    pub frames_per_segment: u64,
    /// fdatasync the open segment after this many frames (bounds what a power cut takes).
    pub sync_every_frames: u64,
    pub buffer_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Station, device and position fields; seq, stamps, gap and file name are filled per segment.
    pub template: SegmentMeta,
    pub clock: ClockTrust,
    /// Total bytes of the ring between capture and writer.
    pub ring_bytes: usize,
    pub reopen_debounce: Duration,
    pub retry_interval: Duration,
    /// Stop after this many frames (a `--duration`), if set.
    pub max_frames: Option<u64>,
    /// First sequence number to use.
    pub first_seq: u64,
}

/// A preallocated block of frames.
#[derive(Debug)]
struct Block {
    data: Box<[u8]>,
    frames: usize,
    stamp: Stamp,
}

/// Free blocks, most recently returned on top.
#[derive(Debug)]
struct Pool {
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Debug)]
struct PoolState {
    blocks: Vec<Block>,
    /// The capture thread waits for a block: only then is a wake-up (a syscall) needed.
    waiting: bool,
}

impl Pool {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(PoolState {
                blocks: Vec::with_capacity(capacity),
                waiting: false,
            }),
            returned: Condvar::new(),
        }
    }
    /// Takes a block, waiting up to `timeout` for the writer to return one.
    fn take(&self, timeout: Duration) -> Option<Block> {
        let mut g = self.state.lock().ok()?;
        if g.blocks.is_empty() {
            g.waiting = true;
            g = self
                .returned
                .wait_timeout_while(g, timeout, |s| s.blocks.is_empty())
                .ok()?
                .0;
            g.waiting = false;
        }
        g.blocks.pop()
    }
    /// Returns a block; never allocates (the vector has room for every block).
    fn give(&self, b: Block) {
        if let Ok(mut g) = self.state.lock() {
            g.blocks.push(b);
            if g.waiting {
                self.returned.notify_one();
            }
        }
    }
}

#[derive(Debug)]
enum Msg {
    Audio(Block),
    /// The stream broke (xrun, stall, device lost): close the segment, the next one starts after a gap.
    Break(ClosedBy),
    Opened(String),
    End(ClosedBy),
}

/// What a finished session did.
#[derive(Debug)]
pub struct SessionReport<S> {
    pub source: S,
    pub promoted: Vec<PathBuf>,
    pub next_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Wav(#[from] WavError),
    #[error("unable to start the capture thread for {device}")]
    Spawn {
        device: String,
        source: std::io::Error,
    },
    #[error("unable to join the capture thread for {device}")]
    Join { device: String },
}

/// Tolerance of the capture clock: four periods, at least 250 ms.
#[must_use]
pub fn discontinuity_ns(spec: &StreamSpec) -> u64 {
    (spec.period.as_nanos() as u64)
        .saturating_mul(4)
        .max(250_000_000)
}

/// Periods gathered into one block before it is handed to the writer (fewer thread wake-ups).
const BLOCK_PERIODS: usize = 8;

/// Blocks of `BLOCK_PERIODS` periods each.
fn block_layout(spec: &StreamSpec, ring_bytes: usize) -> (usize, usize) {
    let frame = spec.frame_bytes();
    let period_frames = spec.frames_in(spec.period).max(64) as usize;
    let block_bytes = period_frames * BLOCK_PERIODS * frame;
    let blocks = (ring_bytes / block_bytes).max(4);
    (block_bytes, blocks)
}

/// Records until the stop flag is set or `max_frames` are captured. The writer runs on the calling
/// thread, the capture on a new one.
pub fn run_session<S: CaptureSource + 'static>(
    source: S,
    setup: &SessionSetup,
    stop: &Arc<StopFlag>,
    metrics: &Arc<DeviceMetrics>,
) -> Result<SessionReport<S>, SessionError> {
    let (block_bytes, blocks) = block_layout(&setup.spec, setup.ring_bytes);
    // The pool holds every block when idle; `full` has room for every block plus control messages,
    // so no send blocks for long.
    let pool = Arc::new(Pool::new(blocks));
    let (full_tx, full_rx) = sync_channel::<Msg>(blocks + 16);
    for _ in 0..blocks {
        pool.give(Block {
            data: vec![0u8; block_bytes].into_boxed_slice(),
            frames: 0,
            stamp: Stamp::default(),
        });
    }
    let capture = {
        let spec = setup.spec;
        let debounce = setup.reopen_debounce;
        let retry = setup.retry_interval;
        let max_frames = setup.max_frames;
        let stop = Arc::clone(stop);
        let metrics = Arc::clone(metrics);
        let pool = Arc::clone(&pool);
        std::thread::Builder::new()
            .name(format!("capture-{}", setup.template.device))
            .spawn(move || {
                let mut source = source;
                capture_loop(
                    &mut source,
                    &CaptureLoop {
                        spec,
                        jump_ns: discontinuity_ns(&spec),
                        debounce,
                        retry,
                        max_frames,
                    },
                    &pool,
                    &full_tx,
                    &stop,
                    &metrics,
                );
                source
            })
            .map_err(|source| SessionError::Spawn {
                device: setup.template.device.clone(),
                source,
            })?
    };
    let written = write_loop(&full_rx, &pool, setup, metrics);
    // On a write error the receiver goes away with `full_rx`: the capture thread sees it and ends.
    drop(full_rx);
    let source = capture.join().map_err(|_| SessionError::Join {
        device: setup.template.device.clone(),
    })?;
    let (promoted, next_seq) = written?;
    Ok(SessionReport {
        source,
        promoted,
        next_seq,
    })
}

struct CaptureLoop {
    spec: StreamSpec,
    jump_ns: u64,
    debounce: Duration,
    retry: Duration,
    max_frames: Option<u64>,
}

fn monotonic_ms() -> u64 {
    clocks_now().monotonic_ns / 1_000_000
}

/// Sleeps up to `d`, waking early when asked to stop.
fn nap(d: Duration, stop: &StopFlag) {
    let step = Duration::from_millis(20);
    let mut left = d;
    while !left.is_zero() && stop.requested().is_none() {
        let s = left.min(step);
        std::thread::sleep(s);
        left = left.saturating_sub(s);
    }
}

fn capture_loop<S: CaptureSource>(
    src: &mut S,
    cfg: &CaptureLoop,
    pool: &Pool,
    full: &SyncSender<Msg>,
    stop: &StopFlag,
    metrics: &DeviceMetrics,
) {
    let frame_bytes = cfg.spec.frame_bytes();
    let mut open = false;
    let mut ever_opened = false;
    let mut present_since: Option<u64> = None;
    let period_frames = cfg.spec.frames_in(cfg.spec.period).max(64) as usize;
    // The block being filled, read by read, until it holds `BLOCK_PERIODS` periods.
    let mut filling: Option<Block> = None;
    let mut captured: u64 = 0;
    let end = loop {
        if let Some(reason) = stop.requested() {
            break reason;
        }
        if cfg.max_frames.is_some_and(|m| captured >= m) {
            break ClosedBy::Shutdown;
        }
        if !open {
            if ever_opened {
                match decide_reopen(
                    src.is_present(),
                    present_since,
                    monotonic_ms(),
                    cfg.debounce.as_millis() as u64,
                ) {
                    Reopen::Wait { present_since_ms } => {
                        present_since = present_since_ms;
                        nap(
                            cfg.retry.min(cfg.debounce.max(Duration::from_millis(50))),
                            stop,
                        );
                        continue;
                    }
                    Reopen::Open => present_since = None,
                }
            }
            match src.open(&cfg.spec) {
                Ok(neg) => {
                    open = true;
                    ever_opened = true;
                    metrics.set_state(DeviceState::Recording);
                    tracing::info!(
                        device = src.describe(),
                        period_frames = neg.period_frames,
                        buffer_frames = neg.buffer_frames,
                        "capture opened"
                    );
                    if full.send(Msg::Opened(src.describe().to_string())).is_err() {
                        break ClosedBy::Shutdown;
                    }
                }
                Err(e) => {
                    metrics.set_state(DeviceState::Missing);
                    if let CaptureError::FormatRejected { .. } = e {
                        tracing::error!(error = %e, "capture device rejected the profile");
                    } else {
                        tracing::warn!(error = %e, "capture device not available");
                    }
                    // Later opens of a device that was never there also go through the debounce.
                    ever_opened = true;
                    nap(cfg.retry, stop);
                }
            }
            continue;
        }
        let mut block = match filling.take() {
            Some(b) => b,
            None => match pool.take(Duration::from_millis(100)) {
                Some(mut b) => {
                    b.frames = 0;
                    b
                }
                // The writer is behind by the whole ring: stop reading; the device will overrun.
                None => continue,
            },
        };
        let capacity = block.data.len() / frame_bytes;
        let mut want = capacity - block.frames;
        if let Some(m) = cfg.max_frames {
            want = want.min((m - captured) as usize);
        }
        let at = block.frames * frame_bytes;
        let broke = match src.read(&mut block.data[at..at + want * frame_bytes]) {
            Ok(ReadOutcome::Frames { frames: 0, .. }) => {
                filling = Some(block);
                None
            }
            Ok(ReadOutcome::Frames { frames, stamp }) => {
                captured += frames as u64;
                let expected = block.stamp.advanced(block.frames as u64, cfg.spec.rate);
                if block.frames == 0 {
                    block.stamp = stamp;
                    block.frames = frames;
                } else if stamp.monotonic_ns > expected.monotonic_ns.saturating_add(cfg.jump_ns) {
                    // The clock jumped inside the block: hand over what came before, so the writer
                    // sees the jump exactly where it happened.
                    if let Some(mut next) = pool.take(Duration::from_millis(100)) {
                        let bytes = frames * frame_bytes;
                        next.data[..bytes].copy_from_slice(&block.data[at..at + bytes]);
                        next.frames = frames;
                        next.stamp = stamp;
                        if full.send(Msg::Audio(block)).is_err() {
                            break ClosedBy::Shutdown;
                        }
                        block = next;
                    } else {
                        block.frames += frames;
                    }
                } else {
                    block.frames += frames;
                }
                let room = capacity - block.frames;
                let limit_reached = cfg.max_frames.is_some_and(|m| captured >= m);
                if room < period_frames || limit_reached {
                    if full.send(Msg::Audio(block)).is_err() {
                        break ClosedBy::Shutdown;
                    }
                } else {
                    filling = Some(block);
                }
                None
            }
            Ok(ReadOutcome::Overrun) => {
                DeviceMetrics::add(&metrics.xruns, 1);
                tracing::warn!(device = src.describe(), "capture overrun");
                if let Err(e) = src.recover() {
                    tracing::warn!(error = %e, "unable to recover from overrun, reopening");
                    src.close();
                    open = false;
                }
                Some((block, ClosedBy::Xrun))
            }
            Ok(ReadOutcome::Stalled) => {
                DeviceMetrics::add(&metrics.stalls, 1);
                tracing::warn!(device = src.describe(), "capture stalled, reopening");
                src.close();
                open = false;
                Some((block, ClosedBy::Stall))
            }
            Err(CaptureError::Suspended { .. }) => {
                DeviceMetrics::add(&metrics.device_losses, 1);
                if src.recover().is_err() {
                    src.close();
                    open = false;
                }
                Some((block, ClosedBy::DeviceLost))
            }
            Err(e) => {
                DeviceMetrics::add(&metrics.device_losses, 1);
                tracing::warn!(error = %e, "capture device lost");
                metrics.set_state(DeviceState::Missing);
                src.close();
                open = false;
                Some((block, ClosedBy::DeviceLost))
            }
        };
        if let Some((block, cause)) = broke {
            // What was read before the break goes first; then the break.
            let sent = if block.frames > 0 {
                full.send(Msg::Audio(block)).is_ok()
            } else {
                filling = Some(block);
                true
            };
            if !sent || full.send(Msg::Break(cause)).is_err() {
                break ClosedBy::Shutdown;
            }
        }
    };
    if let Some(block) = filling.take()
        && block.frames > 0
    {
        let _ = full.send(Msg::Audio(block));
    }
    src.close();
    let _ = full.send(Msg::End(end));
}

struct Writer<'a> {
    setup: &'a SessionSetup,
    format: WavFormat,
    frame_bytes: usize,
    current: Option<SegmentFile>,
    in_segment: u64,
    since_sync: u64,
    seq: u64,
    stream_frame: u64,
    pending_gap: Option<ClosedBy>,
    last_end: Option<Stamp>,
    promoted: Vec<PathBuf>,
    metrics: &'a DeviceMetrics,
    /// A block starting later than this after the previous one ended is a discontinuity.
    jump_ns: u64,
    /// The current segment's audio figures, so far.
    meter: AudioMeter,
}

impl Writer<'_> {
    fn open_segment(
        &mut self,
        stamp: Stamp,
        offset: u64,
        gap: Option<GapBefore>,
    ) -> Result<(), WavError> {
        let wall_ms = stamp.wall_unix_ns.div_euclid(1_000_000);
        let t = &self.setup.template;
        let mut meta = t.clone();
        meta.seq = self.seq;
        meta.wall_unix_ms = wall_ms;
        meta.clock_trusted = self.setup.clock.trusted();
        meta.monotonic_ns = stamp.monotonic_ns;
        meta.stream_frame = self.stream_frame + offset;
        meta.gap_before = gap;
        meta.file_name = segment::segment_name(wall_ms, &t.station, &t.device, self.seq);
        self.current = Some(SegmentFile::create(
            &self.setup.buffer_dir,
            self.format,
            &meta,
        )?);
        self.seq += 1;
        self.in_segment = 0;
        self.since_sync = 0;
        self.meter.reset();
        if let Ok(mut g) = self.metrics.format.lock()
            && g.is_none()
        {
            *g = Some(format!(
                "{}/{}/{}",
                self.format.rate, self.format.channels, self.format.bits
            ));
        }
        Ok(())
    }

    fn close_segment(&mut self, why: ClosedBy) -> Result<(), WavError> {
        if let Some(seg) = self.current.take() {
            let bytes = seg.data_bytes();
            let name = seg.name().to_string();
            let figures = self.meter.figures();
            let path = seg.finish(&self.setup.data_dir, why, figures.as_ref())?;
            if let Ok(mut g) = self.metrics.last_audio.lock() {
                *g = figures;
            }
            DeviceMetrics::add(&self.metrics.segments_written, 1);
            DeviceMetrics::add(&self.metrics.bytes_written, bytes);
            if let Ok(mut g) = self.metrics.last_segment.lock() {
                *g = Some(name);
            }
            tracing::info!(path = %path.display(), closed_by = why.as_str(), "segment promoted");
            self.promoted.push(path);
        }
        Ok(())
    }

    fn audio(&mut self, block: &Block) -> Result<(), WavError> {
        let rate = self.setup.spec.rate;
        // Frames that arrive later than the capture clock allows were not all captured, even when
        // nothing reported an overrun: record a gap rather than splice.
        if self.pending_gap.is_none()
            && let Some(end) = self.last_end
            && block.stamp.monotonic_ns > end.monotonic_ns.saturating_add(self.jump_ns)
        {
            DeviceMetrics::add(&self.metrics.discontinuities, 1);
            tracing::warn!(
                late_ms = (block.stamp.monotonic_ns - end.monotonic_ns) / 1_000_000,
                "capture clock jumped ahead of the samples"
            );
            self.close_segment(ClosedBy::Discontinuity)?;
            self.pending_gap = Some(ClosedBy::Discontinuity);
        }
        let gap = self.pending_gap.take().map(|cause| GapBefore {
            cause,
            millis: self.last_end.map_or(0, |e| {
                block.stamp.monotonic_ns.saturating_sub(e.monotonic_ns) / 1_000_000
            }),
        });
        if let Some(g) = gap {
            DeviceMetrics::add(&self.metrics.gaps, 1);
            DeviceMetrics::add(&self.metrics.gap_ms_total, g.millis);
        }
        let mut gap = gap;
        let mut off = 0u64;
        let frames = block.frames as u64;
        while off < frames {
            if self.current.is_none() {
                self.open_segment(block.stamp.advanced(off, rate), off, gap.take())?;
                let wall = block.stamp.advanced(off, rate).wall_unix_ns / 1_000_000;
                self.metrics
                    .last_segment_wall_unix_ms
                    .store(wall.max(0) as u64, Ordering::Relaxed);
            }
            let split = plan_split(self.setup.frames_per_segment, self.in_segment, frames - off);
            let a = off as usize * self.frame_bytes;
            let b = (off + split.take) as usize * self.frame_bytes;
            if let Some(seg) = self.current.as_mut() {
                seg.append(&block.data[a..b])?;
                self.meter.add(&block.data[a..b]);
            }
            self.in_segment += split.take;
            self.since_sync += split.take;
            off += split.take;
            if split.completes {
                self.close_segment(ClosedBy::Length)?;
            } else if self.since_sync >= self.setup.sync_every_frames {
                if let Some(seg) = self.current.as_ref() {
                    seg.sync_data()?;
                }
                self.since_sync = 0;
            }
        }
        self.stream_frame += frames;
        self.last_end = Some(block.stamp.advanced(frames, rate));
        DeviceMetrics::add(&self.metrics.frames_captured, frames);
        self.metrics
            .last_progress_monotonic_ms
            .store(monotonic_ms(), Ordering::Relaxed);
        Ok(())
    }
}

fn write_loop(
    full: &Receiver<Msg>,
    pool: &Pool,
    setup: &SessionSetup,
    metrics: &DeviceMetrics,
) -> Result<(Vec<PathBuf>, u64), WavError> {
    let mut w = Writer {
        setup,
        format: WavFormat {
            rate: setup.spec.rate,
            channels: setup.spec.channels,
            bits: setup.spec.format.bits(),
        },
        frame_bytes: setup.spec.frame_bytes(),
        current: None,
        in_segment: 0,
        since_sync: 0,
        seq: setup.first_seq,
        stream_frame: 0,
        pending_gap: None,
        last_end: None,
        promoted: Vec::new(),
        metrics,
        jump_ns: discontinuity_ns(&setup.spec),
        meter: AudioMeter::new(setup.spec.format),
    };
    while let Ok(msg) = full.recv() {
        match msg {
            Msg::Audio(block) => {
                let r = w.audio(&block);
                pool.give(block);
                r?;
            }
            Msg::Break(cause) => {
                w.close_segment(cause)?;
                w.pending_gap = Some(cause);
            }
            Msg::Opened(pcm) => {
                w.stream_frame = 0;
                if let Ok(mut g) = metrics.pcm.lock() {
                    *g = Some(pcm);
                }
            }
            Msg::End(reason) => {
                w.close_segment(reason)?;
                break;
            }
        }
    }
    w.close_segment(ClosedBy::Shutdown)?;
    Ok((w.promoted, w.seq))
}

/// Creates `<root>/.buffer` and `<root>/data` if missing.
pub fn ensure_dirs(root: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let buffer = root.join(".buffer");
    let data = root.join("data");
    std::fs::create_dir_all(&buffer)?;
    std::fs::create_dir_all(&data)?;
    Ok((buffer, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::SampleFormat;
    use crate::capture::fake::{FakeSource, Step};
    use crate::wav;

    fn setup(root: &Path, seg: u64) -> SessionSetup {
        let (buffer_dir, data_dir) = ensure_dirs(root).expect("dirs");
        SessionSetup {
            spec: StreamSpec {
                rate: 1000,
                channels: 1,
                format: SampleFormat::S16,
                period: Duration::from_millis(100),
                buffer: Duration::from_secs(1),
                stall_timeout: Duration::from_secs(1),
            },
            frames_per_segment: seg,
            sync_every_frames: 1000,
            buffer_dir,
            data_dir,
            template: SegmentMeta {
                station: "st".into(),
                device: "mic".into(),
                make: None,
                model: None,
                serial: None,
                position: None,
                elevation_m: None,
                rate: 1000,
                channels: 1,
                seq: 0,
                wall_unix_ms: 0,
                clock_trusted: false,
                monotonic_ns: 0,
                stream_frame: 0,
                utc_offset_minutes: 0,
                file_name: String::new(),
                gap_before: None,
            },
            clock: ClockTrust::Never,
            ring_bytes: 4096,
            reopen_debounce: Duration::from_millis(0),
            retry_interval: Duration::from_millis(1),
            max_frames: None,
            first_seq: 5,
        }
    }

    fn samples(path: &Path) -> Vec<u16> {
        let b = std::fs::read(path).expect("read");
        b[wav::HEADER_LEN..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    fn guano_of(path: &Path) -> String {
        let b = std::fs::read(path).expect("read");
        wav::parse_header(&b).expect("ours").guano_text
    }

    fn run(src: FakeSource, s: &SessionSetup) -> SessionReport<FakeSource> {
        let stop = StopFlag::new();
        let m = Arc::new(DeviceMetrics::default());
        run_session(src, s, &stop, &m).expect("session")
    }

    #[test]
    fn frames_are_cut_into_exact_segments_and_nothing_is_lost_or_duplicated() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = setup(root.path(), 250);
        s.max_frames = Some(1000);
        let src = FakeSource::new(vec![
            Step::Frames {
                start: 0,
                frames: 333,
            },
            Step::Frames {
                start: 333,
                frames: 667,
            },
        ]);
        let r = run(src, &s);
        assert_eq!(r.promoted.len(), 4);
        let all: Vec<u16> = r.promoted.iter().flat_map(|p| samples(p)).collect();
        assert_eq!(all, (0..1000).collect::<Vec<u16>>());
        assert!(
            r.promoted[0]
                .to_string_lossy()
                .ends_with("_st_mic_00000005.wav")
        );
        assert_eq!(r.next_seq, 9);
        let g = guano_of(&r.promoted[1]);
        assert_eq!(crate::guano::field(&g, "FLEET|Stream Frame"), Some("250"));
        assert_eq!(crate::guano::field(&g, "FLEET|Closed By"), Some("length"));
    }

    #[test]
    fn an_overrun_closes_the_segment_and_the_next_one_records_the_gap() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = setup(root.path(), 10_000);
        s.max_frames = Some(200);
        let src = FakeSource::new(vec![
            Step::Frames {
                start: 0,
                frames: 100,
            },
            Step::Overrun,
            Step::Frames {
                start: 100,
                frames: 100,
            },
        ]);
        let r = run(src, &s);
        assert_eq!(r.promoted.len(), 2);
        let (a, b) = (guano_of(&r.promoted[0]), guano_of(&r.promoted[1]));
        assert_eq!(crate::guano::field(&a, "FLEET|Closed By"), Some("xrun"));
        assert_eq!(crate::guano::field(&b, "FLEET|Gap Cause"), Some("xrun"));
        assert_eq!(crate::guano::field(&b, "FLEET|Gap Before Ms"), Some("500"));
        assert_eq!(crate::guano::field(&b, "FLEET|Closed By"), Some("shutdown"));
    }

    #[test]
    fn a_capture_clock_jump_without_overrun_is_recorded_as_a_gap() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = setup(root.path(), 10_000);
        s.max_frames = Some(200);
        let src = FakeSource::new(vec![
            Step::Frames {
                start: 0,
                frames: 100,
            },
            Step::Jump(3_000_000_000),
            Step::Frames {
                start: 100,
                frames: 100,
            },
        ]);
        let r = run(src, &s);
        assert_eq!(r.promoted.len(), 2);
        let (a, b) = (guano_of(&r.promoted[0]), guano_of(&r.promoted[1]));
        assert_eq!(
            crate::guano::field(&a, "FLEET|Closed By"),
            Some("discontinuity")
        );
        assert_eq!(
            crate::guano::field(&b, "FLEET|Gap Cause"),
            Some("discontinuity")
        );
        assert_eq!(crate::guano::field(&b, "FLEET|Gap Before Ms"), Some("3000"));
        let all: Vec<u16> = r.promoted.iter().flat_map(|p| samples(p)).collect();
        assert_eq!(all, (0..200).collect::<Vec<u16>>());
    }

    #[test]
    fn an_unplugged_device_is_reopened_and_the_loss_recorded_as_a_gap() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = setup(root.path(), 10_000);
        s.max_frames = Some(200);
        let mut src = FakeSource::new(vec![
            Step::Frames {
                start: 0,
                frames: 100,
            },
            Step::Fail(CaptureError::Disconnected {
                device: "fake".into(),
            }),
            Step::Frames {
                start: 100,
                frames: 100,
            },
        ]);
        // Gone twice, then back; one failed open while it enumerates.
        src.presence = [false, false, true, true].into();
        src.opens = [Err(CaptureError::Missing {
            device: "fake".into(),
        })]
        .into();
        let m = Arc::new(DeviceMetrics::default());
        let r = run_session(src, &s, &StopFlag::new(), &m).expect("session");
        assert_eq!(r.source.open_calls, 3);
        assert_eq!(r.promoted.len(), 2);
        let b = guano_of(&r.promoted[1]);
        assert_eq!(
            crate::guano::field(&b, "FLEET|Gap Cause"),
            Some("device-lost")
        );
        assert_eq!(m.device_losses.load(Ordering::Relaxed), 1);
        assert_eq!(m.gaps.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_stall_and_a_rejected_format_are_survived_without_losing_recorded_frames() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = setup(root.path(), 10_000);
        s.max_frames = Some(150);
        let mut src = FakeSource::new(vec![
            Step::Frames {
                start: 0,
                frames: 50,
            },
            Step::Stall,
            Step::Frames {
                start: 50,
                frames: 100,
            },
        ]);
        src.opens = [
            Ok(()),
            Err(CaptureError::FormatRejected {
                device: "fake".into(),
                detail: "rate 384000 granted instead of 48000".into(),
            }),
        ]
        .into();
        let r = run(src, &s);
        assert_eq!(r.source.open_calls, 3);
        let all: Vec<u16> = r.promoted.iter().flat_map(|p| samples(p)).collect();
        assert_eq!(all, (0..150).collect::<Vec<u16>>());
        let b = guano_of(&r.promoted[1]);
        assert_eq!(crate::guano::field(&b, "FLEET|Gap Cause"), Some("stall"));
    }
}
