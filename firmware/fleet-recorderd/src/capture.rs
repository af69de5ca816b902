//! Capture sources. `CaptureSource` is the seam: the daemon uses `AlsaSource` (alsa-lib through the
//! `alsa` crate); unit tests use a scripted fake for the cases stock ALSA plugins cannot produce
//! (unplug, suspend, rejected format).
//!
//! The capture loop calls `read` with preallocated buffers: implementations must not allocate there.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::segment::{Stamp, frames_to_ns};

/// Sample format of a stream (little-endian signed integers, as WAV stores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    S16,
    S32,
}

impl SampleFormat {
    #[must_use]
    pub fn bytes(self) -> usize {
        match self {
            Self::S16 => 2,
            Self::S32 => 4,
        }
    }
    #[must_use]
    pub fn bits(self) -> u16 {
        (self.bytes() * 8) as u16
    }
}

/// What the recorder asks of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    pub rate: u32,
    pub channels: u16,
    pub format: SampleFormat,
    /// Requested period (wake-up interval).
    pub period: Duration,
    /// Requested device buffer (how long the reader may be late before an xrun).
    pub buffer: Duration,
    /// A wait longer than this without frames is a stall.
    pub stall_timeout: Duration,
}

impl StreamSpec {
    #[must_use]
    pub fn frame_bytes(&self) -> usize {
        usize::from(self.channels) * self.format.bytes()
    }
    #[must_use]
    pub fn frames_in(&self, d: Duration) -> u64 {
        (u128::from(self.rate) * d.as_nanos() / 1_000_000_000) as u64
    }
}

/// What a device granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub period_frames: u64,
    pub buffer_frames: u64,
}

/// One `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// `frames` frames were written to the start of the buffer; `stamp` is the capture-clock time of
    /// the first of them.
    Frames { frames: usize, stamp: Stamp },
    /// The device overran (EPIPE): frames were lost. Call `recover` before reading again.
    Overrun,
    /// No frame arrived within the stall timeout.
    Stalled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("unable to find capture device {device}")]
    Missing { device: String },
    #[error("unable to configure capture device {device}: {detail}")]
    FormatRejected { device: String, detail: String },
    #[error("unable to read capture device {device}: device disconnected")]
    Disconnected { device: String },
    #[error("unable to read capture device {device}: device suspended")]
    Suspended { device: String },
    #[error("unable to {op} capture device {device}: errno {errno}")]
    Io {
        device: String,
        op: &'static str,
        errno: i32,
    },
}

/// A source of interleaved frames.
pub trait CaptureSource: Send {
    /// Whether the device looks present (cheap; used to debounce a reappearing device).
    fn is_present(&mut self) -> bool;
    /// Opens and starts the stream.
    fn open(&mut self, spec: &StreamSpec) -> Result<Negotiated, CaptureError>;
    /// Waits up to the stall timeout and reads at most `buf.len() / frame_bytes` frames.
    fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, CaptureError>;
    /// Restarts the stream after `Overrun` (or `Suspended`).
    fn recover(&mut self) -> Result<(), CaptureError>;
    /// Closes the stream (idempotent).
    fn close(&mut self);
    /// A short human name for logs and the status file.
    fn describe(&self) -> &str;
}

/// What to do about a device that was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopen {
    /// Not there (or not there long enough): look again later.
    Wait { present_since_ms: Option<u64> },
    /// Present for the whole debounce: open it.
    Open,
}

/// Debounce a reappearing device: open it only once it has been present for `debounce_ms` (USB
/// devices flap while they enumerate).
#[must_use]
pub fn decide_reopen(
    present: bool,
    present_since_ms: Option<u64>,
    now_ms: u64,
    debounce_ms: u64,
) -> Reopen {
    match (present, present_since_ms) {
        (false, _) => Reopen::Wait {
            present_since_ms: None,
        },
        (true, None) if debounce_ms == 0 => Reopen::Open,
        (true, None) => Reopen::Wait {
            present_since_ms: Some(now_ms),
        },
        (true, Some(since)) if now_ms.saturating_sub(since) >= debounce_ms => Reopen::Open,
        (true, Some(since)) => Reopen::Wait {
            present_since_ms: Some(since),
        },
    }
}

/// Stable USB identity of a microphone (survives re-plugging into another port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbIdentity {
    /// Four hex digits, lowercase.
    pub vendor: String,
    pub product: String,
    pub serial: Option<String>,
}

/// Finds the ALSA card id (`/proc/asound/cardN/id`, `CARD=` in PCM names) of the USB device with
/// this identity by walking `<sys_root>/class/sound/card*`.
#[must_use]
pub fn find_usb_card(sys_root: &Path, id: &UsbIdentity) -> Option<String> {
    let dir = sys_root.join("class/sound");
    let mut cards: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("card"))
        })
        .collect();
    cards.sort();
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_ascii_lowercase())
    };
    for card in cards {
        // card/device is the USB interface; its parent is the USB device with the descriptors.
        let Ok(iface) = std::fs::canonicalize(card.join("device")) else {
            continue;
        };
        let Some(usb) = iface.parent() else { continue };
        if read(usb.join("idVendor")).as_deref() != Some(id.vendor.as_str())
            || read(usb.join("idProduct")).as_deref() != Some(id.product.as_str())
        {
            continue;
        }
        if let Some(serial) = &id.serial {
            let found = std::fs::read_to_string(usb.join("serial")).ok();
            if found.as_deref().map(str::trim) != Some(serial.as_str()) {
                continue;
            }
        }
        if let Ok(card_id) = std::fs::read_to_string(card.join("id")) {
            return Some(card_id.trim().to_string());
        }
    }
    None
}

/// Where an `AlsaSource` finds its device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLocator {
    /// ALSA PCM name; with `usb`, `{card}` is replaced by the card id found for it.
    pub alsa_name: String,
    pub usb: Option<UsbIdentity>,
    pub sys_root: PathBuf,
    /// Mixer control and gain to apply after opening (best effort).
    pub gain: Option<(String, f32)>,
}

impl DeviceLocator {
    /// The PCM name to open now, if the device can be found.
    #[must_use]
    pub fn resolve(&self) -> Option<(String, Option<String>)> {
        match &self.usb {
            None => Some((self.alsa_name.clone(), None)),
            Some(id) => {
                let card = find_usb_card(&self.sys_root, id)?;
                Some((self.alsa_name.replace("{card}", &card), Some(card)))
            }
        }
    }
}

/// Capture through alsa-lib.
pub struct AlsaSource {
    locator: DeviceLocator,
    name: String,
    pcm: Option<alsa::PCM>,
    spec: Option<StreamSpec>,
    /// The errno `recover` has to handle: EPIPE (overrun) or ESTRPIPE (suspended).
    recover_errno: i32,
}

impl std::fmt::Debug for AlsaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaSource")
            .field("name", &self.name)
            .field("open", &self.pcm.is_some())
            .finish()
    }
}

impl AlsaSource {
    #[must_use]
    pub fn new(locator: DeviceLocator) -> Self {
        let name = locator.alsa_name.clone();
        Self {
            locator,
            name,
            pcm: None,
            spec: None,
            recover_errno: libc_errno::EPIPE,
        }
    }

    fn io_err(&self, op: &'static str, e: &alsa::Error) -> CaptureError {
        let errno = e.errno();
        let device = self.name.clone();
        match errno {
            libc_errno::ENODEV | libc_errno::ENXIO | libc_errno::EBADFD => {
                CaptureError::Disconnected { device }
            }
            libc_errno::ESTRPIPE => CaptureError::Suspended { device },
            _ => CaptureError::Io { device, op, errno },
        }
    }

    fn configure(pcm: &alsa::PCM, spec: &StreamSpec) -> Result<Negotiated, String> {
        use alsa::pcm::{Access, Format, HwParams};
        let hw = HwParams::any(pcm).map_err(|e| e.to_string())?;
        hw.set_access(Access::RWInterleaved)
            .map_err(|e| format!("access: {e}"))?;
        let format = match spec.format {
            SampleFormat::S16 => Format::S16LE,
            SampleFormat::S32 => Format::S32LE,
        };
        hw.set_format(format)
            .map_err(|e| format!("format {format}: {e}"))?;
        hw.set_channels(u32::from(spec.channels))
            .map_err(|e| format!("channels {}: {e}", spec.channels))?;
        hw.set_rate_resample(false)
            .map_err(|e| format!("rate resample: {e}"))?;
        hw.set_rate(spec.rate, alsa::ValueOr::Nearest)
            .map_err(|e| format!("rate {}: {e}", spec.rate))?;
        let period = spec.frames_in(spec.period).max(32) as alsa::pcm::Frames;
        hw.set_period_size_near(period, alsa::ValueOr::Nearest)
            .map_err(|e| format!("period {period}: {e}"))?;
        let buffer = spec.frames_in(spec.buffer).max(period as u64 * 2) as alsa::pcm::Frames;
        hw.set_buffer_size_near(buffer)
            .map_err(|e| format!("buffer {buffer}: {e}"))?;
        pcm.hw_params(&hw).map_err(|e| format!("hw params: {e}"))?;
        let cur = pcm.hw_params_current().map_err(|e| e.to_string())?;
        let rate = cur.get_rate().map_err(|e| e.to_string())?;
        if rate != spec.rate {
            return Err(format!("rate {} granted instead of {}", rate, spec.rate));
        }
        let period_frames = cur.get_period_size().map_err(|e| e.to_string())? as u64;
        let buffer_frames = cur.get_buffer_size().map_err(|e| e.to_string())? as u64;
        let sw = pcm.sw_params_current().map_err(|e| e.to_string())?;
        sw.set_avail_min(period_frames as alsa::pcm::Frames)
            .map_err(|e| format!("avail min: {e}"))?;
        sw.set_tstamp_mode(true)
            .map_err(|e| format!("tstamp mode: {e}"))?;
        pcm.sw_params(&sw).map_err(|e| format!("sw params: {e}"))?;
        Ok(Negotiated {
            period_frames,
            buffer_frames,
        })
    }

    fn apply_gain(card: &str, control: &str, db: f32) -> Result<(), String> {
        let mixer = alsa::mixer::Mixer::new(&format!("hw:CARD={card}"), false)
            .map_err(|e| e.to_string())?;
        let id = alsa::mixer::SelemId::new(control, 0);
        let selem = mixer
            .find_selem(&id)
            .ok_or_else(|| format!("no mixer control {control}"))?;
        selem
            .set_capture_db_all(alsa::mixer::MilliBel::from_db(db), alsa::Round::Floor)
            .map_err(|e| e.to_string())
    }
}

impl AlsaSource {
    fn read_inner(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, CaptureError> {
        let (Some(pcm), Some(spec)) = (self.pcm.as_ref(), self.spec.as_ref()) else {
            return Err(CaptureError::Disconnected {
                device: self.name.clone(),
            });
        };
        let timeout = spec.stall_timeout.as_millis().min(u128::from(u32::MAX)) as u32;
        match pcm.wait(Some(timeout)) {
            Ok(true) => {}
            Ok(false) => return Ok(ReadOutcome::Stalled),
            Err(e) if e.errno() == libc_errno::EPIPE => return Ok(ReadOutcome::Overrun),
            Err(e) if e.errno() == libc_errno::EINTR => {
                return Ok(ReadOutcome::Frames {
                    frames: 0,
                    stamp: Stamp::default(),
                });
            }
            Err(e) => return Err(self.io_err("wait on", &e)),
        }
        let frame_bytes = spec.frame_bytes();
        let whole = buf.len() / frame_bytes * frame_bytes;
        let io = pcm.io_bytes();
        let n = match io.readi(&mut buf[..whole]) {
            Ok(n) => n,
            Err(e) if e.errno() == libc_errno::EPIPE => return Ok(ReadOutcome::Overrun),
            Err(e) if e.errno() == libc_errno::EAGAIN || e.errno() == libc_errno::EINTR => 0,
            Err(e) => return Err(self.io_err("read", &e)),
        };
        drop(io);
        // The first frame read was captured (n + frames still waiting) frames ago.
        let now = clocks_now();
        let waiting = pcm.avail_update().unwrap_or(0).max(0) as u64;
        let back = frames_to_ns(n as u64 + waiting, spec.rate);
        Ok(ReadOutcome::Frames {
            frames: n,
            stamp: Stamp {
                monotonic_ns: now.monotonic_ns.saturating_sub(back),
                wall_unix_ns: now.wall_unix_ns.saturating_sub(back as i64),
            },
        })
    }
}

/// The errno values ALSA returns that the recorder branches on.
mod libc_errno {
    pub const EPIPE: i32 = nix::errno::Errno::EPIPE as i32;
    pub const EAGAIN: i32 = nix::errno::Errno::EAGAIN as i32;
    pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
    pub const ENXIO: i32 = nix::errno::Errno::ENXIO as i32;
    pub const EBADFD: i32 = nix::errno::Errno::EBADFD as i32;
    pub const ESTRPIPE: i32 = nix::errno::Errno::ESTRPIPE as i32;
    pub const EINTR: i32 = nix::errno::Errno::EINTR as i32;
}

/// CLOCK_MONOTONIC and CLOCK_REALTIME now, ns.
#[must_use]
pub fn clocks_now() -> Stamp {
    use nix::time::{ClockId, clock_gettime};
    let ns = |c| {
        clock_gettime(c)
            .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
            .unwrap_or(0)
    };
    Stamp {
        monotonic_ns: ns(ClockId::CLOCK_MONOTONIC).max(0) as u64,
        wall_unix_ns: ns(ClockId::CLOCK_REALTIME),
    }
}

impl CaptureSource for AlsaSource {
    fn is_present(&mut self) -> bool {
        match self.locator.resolve() {
            None => false,
            Some((name, _)) if self.locator.usb.is_some() => !name.is_empty(),
            Some((name, _)) => {
                // No USB identity: present when it opens (non-blocking, closed at once).
                alsa::PCM::new(&name, alsa::Direction::Capture, true).is_ok()
            }
        }
    }

    fn open(&mut self, spec: &StreamSpec) -> Result<Negotiated, CaptureError> {
        self.close();
        let (name, card) = self
            .locator
            .resolve()
            .ok_or_else(|| CaptureError::Missing {
                device: self.locator.alsa_name.clone(),
            })?;
        self.name = name;
        let cname = CString::new(self.name.clone()).map_err(|_| CaptureError::Missing {
            device: self.name.clone(),
        })?;
        // Non-blocking: `read` waits with a timeout and then takes only what is there, so a stalled
        // device can never hang the thread.
        // Any failure to open (no such card, no JACK server, busy) is "missing": retried with debounce.
        let pcm = alsa::PCM::open(&cname, alsa::Direction::Capture, true).map_err(|_| {
            CaptureError::Missing {
                device: self.name.clone(),
            }
        })?;
        let negotiated =
            Self::configure(&pcm, spec).map_err(|detail| CaptureError::FormatRejected {
                device: self.name.clone(),
                detail,
            })?;
        if let (Some((control, db)), Some(card)) = (&self.locator.gain, card.as_deref())
            && let Err(e) = Self::apply_gain(card, control, *db)
        {
            tracing::warn!(device = %self.name, control = %control, error = %e, "unable to set gain");
        }
        pcm.start().map_err(|e| self.io_err("start", &e))?;
        self.pcm = Some(pcm);
        self.spec = Some(*spec);
        Ok(negotiated)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, CaptureError> {
        let r = self.read_inner(buf);
        self.recover_errno = match r {
            Err(CaptureError::Suspended { .. }) => libc_errno::ESTRPIPE,
            _ => libc_errno::EPIPE,
        };
        r
    }

    fn recover(&mut self) -> Result<(), CaptureError> {
        let Some(pcm) = self.pcm.as_ref() else {
            return Err(CaptureError::Disconnected {
                device: self.name.clone(),
            });
        };
        // Overrun: prepare again. Suspended: resume, or prepare when the device cannot.
        pcm.recover(self.recover_errno, true)
            .map_err(|e| self.io_err("recover", &e))?;
        pcm.start().map_err(|e| self.io_err("restart", &e))
    }

    fn close(&mut self) {
        if let Some(pcm) = self.pcm.take() {
            let _ = pcm.drop();
        }
    }

    fn describe(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
pub mod fake {
    //! A scripted source for unit tests of the capture loop.
    use super::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    pub enum Step {
        /// Deliver these frames (the sample value of frame i is `start + i`, 16-bit mono).
        Frames {
            start: u16,
            frames: usize,
        },
        Overrun,
        Stall,
        Fail(CaptureError),
        /// The clock moves on by this many ns and nothing is reported (a silent loss).
        Jump(u64),
    }

    #[derive(Debug)]
    pub struct FakeSource {
        pub steps: VecDeque<Step>,
        /// Results of successive `open` calls (Ok when empty).
        pub opens: VecDeque<Result<(), CaptureError>>,
        /// Results of successive `is_present` calls (true when empty).
        pub presence: VecDeque<bool>,
        pub open_calls: usize,
        pub rate: u32,
        pub clock_ns: u64,
    }

    impl FakeSource {
        #[must_use]
        pub fn new(steps: Vec<Step>) -> Self {
            Self {
                steps: steps.into(),
                opens: VecDeque::new(),
                presence: VecDeque::new(),
                open_calls: 0,
                rate: 1000,
                clock_ns: 1_000_000_000,
            }
        }
    }

    impl CaptureSource for FakeSource {
        fn is_present(&mut self) -> bool {
            self.presence.pop_front().unwrap_or(true)
        }
        fn open(&mut self, spec: &StreamSpec) -> Result<Negotiated, CaptureError> {
            self.open_calls += 1;
            self.rate = spec.rate;
            self.opens.pop_front().unwrap_or(Ok(()))?;
            Ok(Negotiated {
                period_frames: 10,
                buffer_frames: 100,
            })
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, CaptureError> {
            if let Some(Step::Jump(ns)) = self.steps.front() {
                self.clock_ns += ns;
                self.steps.pop_front();
            }
            match self.steps.pop_front() {
                None => Err(CaptureError::Missing {
                    device: "fake".into(),
                }),
                Some(Step::Frames { start, frames }) => {
                    let n = frames.min(buf.len() / 2);
                    for i in 0..n {
                        let v = start.wrapping_add(i as u16).to_le_bytes();
                        buf[2 * i..2 * i + 2].copy_from_slice(&v);
                    }
                    if n < frames {
                        self.steps.push_front(Step::Frames {
                            start: start.wrapping_add(n as u16),
                            frames: frames - n,
                        });
                    }
                    let stamp = Stamp {
                        monotonic_ns: self.clock_ns,
                        wall_unix_ns: self.clock_ns as i64,
                    };
                    self.clock_ns += frames_to_ns(n as u64, self.rate);
                    Ok(ReadOutcome::Frames { frames: n, stamp })
                }
                Some(Step::Overrun) => {
                    self.clock_ns += 500_000_000; // the frames lost
                    Ok(ReadOutcome::Overrun)
                }
                Some(Step::Stall) => {
                    self.clock_ns += 2_000_000_000;
                    Ok(ReadOutcome::Stalled)
                }
                Some(Step::Jump(_)) => Ok(ReadOutcome::Frames {
                    frames: 0,
                    stamp: Stamp::default(),
                }),
                Some(Step::Fail(e)) => {
                    self.clock_ns += 1_000_000_000;
                    Err(e)
                }
            }
        }
        fn recover(&mut self) -> Result<(), CaptureError> {
            Ok(())
        }
        fn close(&mut self) {}
        fn describe(&self) -> &str {
            "fake"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reappearing_device_is_opened_only_after_the_debounce() {
        // table: (present, since, now, debounce) -> decision
        let cases = [
            (
                false,
                Some(5),
                10,
                100,
                Reopen::Wait {
                    present_since_ms: None,
                },
            ),
            (
                true,
                None,
                10,
                100,
                Reopen::Wait {
                    present_since_ms: Some(10),
                },
            ),
            (
                true,
                Some(10),
                50,
                100,
                Reopen::Wait {
                    present_since_ms: Some(10),
                },
            ),
            (true, Some(10), 110, 100, Reopen::Open),
            (true, None, 10, 0, Reopen::Open),
        ];
        for (present, since, now, debounce, want) in cases {
            assert_eq!(decide_reopen(present, since, now, debounce), want);
        }
    }

    #[test]
    fn usb_identity_resolves_to_the_card_id_through_sysfs() {
        let sys = tempfile::tempdir().expect("tempdir");
        let usb = sys.path().join("devices/usb1/1-1");
        std::fs::create_dir_all(usb.join("1-1:1.0")).expect("mkdir");
        std::fs::write(usb.join("idVendor"), "0869\n").expect("write");
        std::fs::write(usb.join("idProduct"), "0001\n").expect("write");
        std::fs::write(usb.join("serial"), "ABC\n").expect("write");
        let card = sys.path().join("class/sound/card2");
        std::fs::create_dir_all(&card).expect("mkdir");
        std::os::unix::fs::symlink(usb.join("1-1:1.0"), card.join("device")).expect("symlink");
        std::fs::write(card.join("id"), "UltraMic\n").expect("write");
        let mut id = UsbIdentity {
            vendor: "0869".into(),
            product: "0001".into(),
            serial: Some("ABC".into()),
        };
        assert_eq!(find_usb_card(sys.path(), &id), Some("UltraMic".into()));
        let loc = DeviceLocator {
            alsa_name: "hw:CARD={card},DEV=0".into(),
            usb: Some(id.clone()),
            sys_root: sys.path().into(),
            gain: None,
        };
        assert_eq!(
            loc.resolve(),
            Some(("hw:CARD=UltraMic,DEV=0".into(), Some("UltraMic".into())))
        );
        id.serial = Some("OTHER".into());
        assert_eq!(find_usb_card(sys.path(), &id), None);
    }
}
