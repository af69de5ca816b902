//! The recorder's status file (`fleet-recorderd`'s `<data-dir>/status.json`, rewritten every
//! 5 s and on every change), read into the health message's `recorder` part.
//!
//! Only the keys used here are read; the recorder may add others. A file older than
//! [`STALE_AFTER`] means the recorder does not run.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fleet_core::health::{AudioFigures, RecorderState};
use fleet_proto::health::{DeviceHealth, MAX_DEVICES, MAX_TEXT, RecorderHealth};
use serde::Deserialize;

use crate::window::Window;

/// A status file older than this is a recorder that stopped writing it.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// A recording device without progress for this long is stalled (the recorder's own
/// watchdog restarts it after 15 s; this is the reporter's view after a restart failed too).
pub const STALL_MS: u64 = 30_000;
/// Largest status file read, in bytes.
pub const MAX_STATUS_BYTES: u64 = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct StatusFile {
    version: u32,
    written_monotonic_ms: u64,
    devices: Vec<DeviceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DeviceFile {
    id: String,
    state: String,
    pcm: Option<String>,
    #[serde(default)]
    format: Option<String>,
    segments_written: u64,
    xruns: u64,
    gaps: u64,
    #[serde(default)]
    write_errors: u64,
    last_segment_unix_ms: Option<u64>,
    last_progress_monotonic_ms: u64,
    #[serde(default)]
    last_audio: Option<AudioFigures>,
}

/// 24-hour windows per device.
#[derive(Debug, Default)]
pub struct RecorderWindows {
    by_device: BTreeMap<String, [Window; 3]>,
}

fn text(s: &str) -> String {
    let mut t: String = s.chars().filter(|c| !c.is_control()).collect();
    if t.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    t
}

/// Reads the status file at wall time `now` (for the file's age) and the reporter's monotonic
/// time `now_ms` (for the 24-hour windows).
#[must_use]
pub fn read(
    path: &Path,
    now: SystemTime,
    now_ms: u64,
    windows: &mut RecorderWindows,
) -> RecorderHealth {
    let not_running = |reason: String| RecorderHealth {
        state: RecorderState::NotRunning,
        reason: Some(text(&reason)),
        devices: Vec::new(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return not_running(format!("no status file at {}", path.display())),
    };
    if meta.len() > MAX_STATUS_BYTES {
        return not_running(format!("status file larger than {MAX_STATUS_BYTES} bytes"));
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default();
    if age > STALE_AFTER {
        return not_running(format!("status file not written for {} s", age.as_secs()));
    }
    let status: StatusFile = match std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(s) => s,
        None => return not_running("status file unreadable".into()),
    };
    if status.version != 1 {
        return not_running(format!("status file version {} unknown", status.version));
    }
    let mut devices = Vec::new();
    let mut worst = RecorderState::Idle;
    let mut reason = None;
    let rank = |s: RecorderState| match s {
        RecorderState::Idle => 0,
        RecorderState::Recording => 1,
        RecorderState::Stalled => 2,
        RecorderState::NoDevice => 3,
        RecorderState::Error => 4,
        RecorderState::NotRunning => 5,
    };
    for d in status.devices.iter().take(MAX_DEVICES) {
        // Both times are the recorder's CLOCK_MONOTONIC; the file itself is fresh (above).
        let stalled = status
            .written_monotonic_ms
            .saturating_sub(d.last_progress_monotonic_ms)
            > STALL_MS;
        let (state, why) = match d.state.as_str() {
            "recording" if stalled => (
                RecorderState::Stalled,
                Some(format!(
                    "{}: no frames for over {} s",
                    d.id,
                    STALL_MS / 1000
                )),
            ),
            "recording" | "starting" => (RecorderState::Recording, None),
            "idle" | "stopped" => (RecorderState::Idle, None),
            "missing" => (
                RecorderState::NoDevice,
                Some(format!("{}: device not found", d.id)),
            ),
            "failing" => (
                RecorderState::Error,
                Some(format!("{}: {} write errors", d.id, d.write_errors)),
            ),
            other => (
                RecorderState::Error,
                Some(format!("{}: unknown state {other}", d.id)),
            ),
        };
        if rank(state) > rank(worst) {
            worst = state;
            reason = why;
        }
        let w = windows.by_device.entry(d.id.clone()).or_default();
        devices.push(DeviceHealth {
            id: text(&d.id),
            state: text(&d.state),
            pcm: d.pcm.as_deref().map(text),
            format: d.format.as_deref().map(text),
            last_segment_unix_s: d.last_segment_unix_ms.map(|ms| (ms / 1000) as i64),
            segments_24h: w[0].observe(now_ms, d.segments_written),
            gaps_24h: w[1].observe(now_ms, d.gaps),
            xruns_24h: w[2].observe(now_ms, d.xruns),
            audio: d.last_audio,
        });
    }
    if devices.is_empty() {
        worst = RecorderState::NoDevice;
        reason = Some("no device configured".into());
    }
    RecorderHealth {
        state: worst,
        reason: reason.map(|r| text(&r)),
        devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, progress_ms: u64, audio: &str) -> String {
        format!(
            r#"{{"version":1,"station":"stn-1","healthy":true,"repaired-at-start":0,
            "written-monotonic-ms":100000,"written-unix-ms":null,"devices":[{{"id":"mic0",
            "state":"{state}","pcm":"hw:0","format":"48000/1/16","segments-written":3,
            "segments-repaired":0,"bytes-written":1,"frames-captured":1,"xruns":1,"stalls":0,
            "device-losses":0,"discontinuities":0,"gaps":2,"gap-ms-total":0,"write-errors":0,
            "last-segment":"a.wav","last-segment-unix-ms":1790000000000,
            "last-progress-monotonic-ms":{progress_ms}{audio}}}]}}"#
        )
    }

    #[test]
    fn each_recorder_state_word_maps_to_the_health_state() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("status.json");
        let now = SystemTime::now();
        let mut w = RecorderWindows::default();
        let cases = [
            ("recording", 99_000, RecorderState::Recording),
            ("recording", 10_000, RecorderState::Stalled),
            ("idle", 0, RecorderState::Idle),
            ("missing", 0, RecorderState::NoDevice),
            ("failing", 0, RecorderState::Error),
        ];
        for (word, progress, want) in cases {
            std::fs::write(&p, status(word, progress, "")).expect("write");
            let r = read(&p, now, 100_000, &mut w);
            assert_eq!(r.state, want, "{word}");
            assert_eq!(r.devices[0].segments_24h, 3);
            assert_eq!(r.devices[0].format.as_deref(), Some("48000/1/16"));
        }
    }

    #[test]
    fn a_missing_stale_or_garbled_status_file_means_the_recorder_is_not_running() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("status.json");
        let mut w = RecorderWindows::default();
        let r = read(&p, SystemTime::now(), 0, &mut w);
        assert_eq!(r.state, RecorderState::NotRunning);
        std::fs::write(&p, "{").expect("write");
        assert_eq!(
            read(&p, SystemTime::now(), 0, &mut w).state,
            RecorderState::NotRunning
        );
        std::fs::write(&p, status("recording", 0, "")).expect("write");
        let later = SystemTime::now() + Duration::from_secs(120);
        let r = read(&p, later, 0, &mut w);
        assert_eq!(r.state, RecorderState::NotRunning);
        assert!(r.reason.expect("reason").contains("not written for"));
    }

    #[test]
    fn the_last_segments_audio_figures_reach_the_device() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("status.json");
        let audio = r#","last-audio":{"rms-dbfs":-200.0,"peak-dbfs":-200.0,"clipped-fraction":0.0,"dc-offset":0.0,"flat":true}"#;
        std::fs::write(&p, status("recording", 100_000, audio)).expect("write");
        let r = read(
            &p,
            SystemTime::now(),
            100_000,
            &mut RecorderWindows::default(),
        );
        assert!(r.devices[0].audio.expect("audio").flat);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn the_status_file_documented_for_the_recorder_is_read_with_its_audio_figures() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/reference/recorderd.md"),
        )
        .expect("recorderd.md");
        let body: String = doc
            .split("```json status\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a json status block")
            .to_string();
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("status.json");
        std::fs::write(&p, body).expect("write");
        let r = read(&p, SystemTime::now(), 0, &mut RecorderWindows::default());
        assert_eq!(r.state, RecorderState::Recording, "{r:?}");
        let dev = &r.devices[0];
        assert_eq!(dev.format.as_deref(), Some("384000/1/16"));
        assert_eq!(dev.segments_24h, 4);
        let a = dev.audio.expect("audio figures");
        assert!(!a.flat && (a.rms_dbfs - -48.21).abs() < 1e-3);
    }
}
