//! Health and metrics, shared between the recording threads (atomics, no locks in the capture path)
//! and the daemon loop, which writes them as JSON for the updater's health check and the station
//! state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use fleet_core::health::AudioFigures;
use serde::Serialize;

/// Where a device's recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    Starting,
    Recording,
    /// Lost or not found: looking for it again.
    Missing,
    /// Outside its schedule.
    Idle,
    /// Writing failed (e.g. disk full); retried.
    Failing,
    Stopped,
}

impl DeviceState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Recording => "recording",
            Self::Missing => "missing",
            Self::Idle => "idle",
            Self::Failing => "failing",
            Self::Stopped => "stopped",
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Recording,
            2 => Self::Missing,
            3 => Self::Idle,
            4 => Self::Failing,
            5 => Self::Stopped,
            _ => Self::Starting,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Recording => 1,
            Self::Missing => 2,
            Self::Idle => 3,
            Self::Failing => 4,
            Self::Stopped => 5,
        }
    }
}

/// Counters of one device since the daemon started.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    state: AtomicU8,
    pub segments_written: AtomicU64,
    pub segments_repaired: AtomicU64,
    pub bytes_written: AtomicU64,
    pub frames_captured: AtomicU64,
    pub xruns: AtomicU64,
    pub stalls: AtomicU64,
    pub device_losses: AtomicU64,
    pub discontinuities: AtomicU64,
    pub gaps: AtomicU64,
    pub gap_ms_total: AtomicU64,
    pub write_errors: AtomicU64,
    /// CLOCK_MONOTONIC (ms) of the last frame block that reached the writer: the watchdog's proof of
    /// progress.
    pub last_progress_monotonic_ms: AtomicU64,
    pub last_segment_wall_unix_ms: AtomicU64,
    pub last_segment: Mutex<Option<String>>,
    pub pcm: Mutex<Option<String>>,
    /// `{rate}/{channels}/{bits}` of the stream, once a segment was opened.
    pub format: Mutex<Option<String>>,
    /// The last closed segment's audio figures.
    pub last_audio: Mutex<Option<AudioFigures>>,
}

impl DeviceMetrics {
    pub fn set_state(&self, s: DeviceState) {
        self.state.store(s.to_u8(), Ordering::Relaxed);
    }
    #[must_use]
    pub fn state(&self) -> DeviceState {
        DeviceState::from_u8(self.state.load(Ordering::Relaxed))
    }
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy for the status file.
    #[must_use]
    pub fn snapshot(&self, id: &str) -> DeviceStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let text = |m: &Mutex<Option<String>>| m.lock().ok().and_then(|g| g.clone());
        let last_wall = get(&self.last_segment_wall_unix_ms);
        DeviceStatus {
            id: id.to_string(),
            state: self.state(),
            pcm: text(&self.pcm),
            segments_written: get(&self.segments_written),
            segments_repaired: get(&self.segments_repaired),
            bytes_written: get(&self.bytes_written),
            frames_captured: get(&self.frames_captured),
            xruns: get(&self.xruns),
            stalls: get(&self.stalls),
            device_losses: get(&self.device_losses),
            discontinuities: get(&self.discontinuities),
            gaps: get(&self.gaps),
            gap_ms_total: get(&self.gap_ms_total),
            write_errors: get(&self.write_errors),
            last_segment: text(&self.last_segment),
            last_segment_unix_ms: (last_wall > 0).then_some(last_wall),
            last_progress_monotonic_ms: get(&self.last_progress_monotonic_ms),
            format: text(&self.format),
            last_audio: self.last_audio.lock().ok().and_then(|g| *g),
        }
    }
}

/// One device in the status file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceStatus {
    pub id: String,
    pub state: DeviceState,
    pub pcm: Option<String>,
    pub segments_written: u64,
    pub segments_repaired: u64,
    pub bytes_written: u64,
    pub frames_captured: u64,
    pub xruns: u64,
    pub stalls: u64,
    pub device_losses: u64,
    pub discontinuities: u64,
    pub gaps: u64,
    pub gap_ms_total: u64,
    pub write_errors: u64,
    pub last_segment: Option<String>,
    pub last_segment_unix_ms: Option<u64>,
    pub last_progress_monotonic_ms: u64,
    /// `{rate}/{channels}/{bits}`, once a segment was opened.
    pub format: Option<String>,
    /// The last closed segment's audio figures (`fleet-reporterd` publishes them).
    pub last_audio: Option<AudioFigures>,
}

/// The status file (`<data-dir>/status.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    pub version: u32,
    pub station: String,
    /// True when every device that should record is recording and making progress.
    pub healthy: bool,
    /// Segments found open in `.buffer/` at start, repaired and promoted.
    pub repaired_at_start: u64,
    pub written_monotonic_ms: u64,
    pub written_unix_ms: Option<i64>,
    pub devices: Vec<DeviceStatus>,
}

/// A device is healthy when it is idle by schedule, or recording with progress in the last
/// `stale_ms`.
#[must_use]
pub fn is_healthy(d: &DeviceStatus, now_monotonic_ms: u64, stale_ms: u64) -> bool {
    match d.state {
        DeviceState::Idle | DeviceState::Stopped => true,
        DeviceState::Recording => {
            now_monotonic_ms.saturating_sub(d.last_progress_monotonic_ms) <= stale_ms
        }
        DeviceState::Starting | DeviceState::Missing | DeviceState::Failing => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_device_without_recent_progress_is_unhealthy() {
        let m = DeviceMetrics::default();
        m.set_state(DeviceState::Recording);
        m.last_progress_monotonic_ms
            .store(10_000, Ordering::Relaxed);
        let s = m.snapshot("mic0");
        assert!(is_healthy(&s, 12_000, 5_000));
        assert!(!is_healthy(&s, 16_000, 5_000));
        m.set_state(DeviceState::Idle);
        assert!(is_healthy(&m.snapshot("mic0"), 99_000, 5_000));
        m.set_state(DeviceState::Missing);
        assert!(!is_healthy(&m.snapshot("mic0"), 10_000, 5_000));
    }

    #[test]
    fn status_serialises_with_kebab_case_keys() {
        let m = DeviceMetrics::default();
        let json = serde_json::to_string(&m.snapshot("mic0")).expect("json");
        assert!(json.contains("\"segments-written\":0"));
        assert!(json.contains("\"state\":\"starting\""));
    }
}
