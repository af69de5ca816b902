//! Shared by the integration tests: recordings written by the recorder's own code, a real S3
//! server with a fault proxy, a station in a temporary directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use fleet_recorderd::guano::{self, ClosedBy, SegmentMeta};
use fleet_recorderd::segment::segment_name;
use fleet_recorderd::wav::{self, WavFormat};

pub mod s3;
pub mod sftp;
pub mod station;

/// A reproducible test signal: a sine per channel plus noise from a small LCG, like a quiet field
/// recording (compresses somewhat, not trivially).
pub fn samples(frames: usize, channels: usize, bits: u16, seed: u64) -> Vec<i32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let amp = f64::from(1u32 << (bits - 4));
    let noise = i64::from(1u32 << (bits - 10));
    let mut out = Vec::with_capacity(frames * channels);
    for i in 0..frames {
        for ch in 0..channels {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((x >> 33) as i64 % (2 * noise + 1)) - noise;
            let t = i as f64 / 48_000.0;
            let s = amp * (2.0 * std::f64::consts::PI * (440.0 + 110.0 * ch as f64) * t).sin();
            out.push(s as i32 + n as i32);
        }
    }
    out
}

/// Writes a recording the way fleet-recorderd does (its header, its GUANO, its name) into `dir`,
/// returns its path.
/// Sample layout and length of a test recording.
#[derive(Debug, Clone, Copy)]
pub struct Pcm {
    pub rate: u32,
    pub channels: u16,
    pub bits: u16,
    pub frames: usize,
}

/// Two seconds of 48 kHz mono: a small recording.
pub const SMALL: Pcm = Pcm {
    rate: 48_000,
    channels: 1,
    bits: 16,
    frames: 48_000 * 2,
};

/// A WAV of about `mib` MiB (noise: incompressible enough for multipart and resume tests).
pub fn big(mib: usize) -> Pcm {
    Pcm {
        rate: 48_000,
        channels: 2,
        bits: 16,
        frames: mib * (1 << 20) / 4,
    }
}

/// One turn of the uploader that must try an upload; panics when it sleeps instead.
pub fn turn(up: &mut fleet_uploaderd::daemon::Uploader) -> fleet_uploaderd::upload::Outcome {
    match up.turn(&mut || true) {
        fleet_uploaderd::daemon::Turn::Tried(o) => o,
        fleet_uploaderd::daemon::Turn::Sleep(d) => panic!(
            "expected an upload, the uploader sleeps {d:?}: {:?}",
            up.status()
        ),
    }
}

/// The scope and reason of a failed upload; panics on any other outcome.
pub fn failure(o: &fleet_uploaderd::upload::Outcome) -> (fleet_core::upload::FailureScope, String) {
    match o {
        fleet_uploaderd::upload::Outcome::Failed { failure, message } => {
            eprintln!("failure: {} ({message})", failure.reason);
            (failure.scope, failure.reason.clone())
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

pub fn recording(dir: &Path, station: &str, device: &str, seq: u64, pcm: Pcm) -> PathBuf {
    let Pcm {
        rate,
        channels,
        bits,
        frames,
    } = pcm;
    let wall_unix_ms = 1_764_979_200_000 + i64::try_from(seq).unwrap() * 60_000;
    let name = segment_name(wall_unix_ms, station, device, seq);
    let meta = SegmentMeta {
        station: station.into(),
        device: device.into(),
        make: Some("Wildlife Acoustics".into()),
        model: Some("SMM-U2".into()),
        serial: None,
        position: Some((51.5, -0.12)),
        elevation_m: None,
        rate,
        channels,
        seq,
        wall_unix_ms,
        clock_trusted: true,
        monotonic_ns: 0,
        stream_frame: 0,
        utc_offset_minutes: 60,
        file_name: name.clone(),
        gap_before: None,
    };
    let text = format!(
        "{}{}",
        guano::opening_text(&meta),
        guano::closing_lines(frames as u64, rate, ClosedBy::Length)
    );
    let s = samples(frames, usize::from(channels), bits, seq);
    let bps = usize::from(bits / 8);
    let mut data = Vec::with_capacity(s.len() * bps);
    for v in s {
        data.extend_from_slice(&v.to_le_bytes()[..bps]);
    }
    let fmt = WavFormat {
        rate,
        channels,
        bits,
    };
    let header = wav::header(fmt, &text, data.len() as u64).expect("header fits");
    let path = dir.join(name);
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&data);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Whether an external tool is on PATH.
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
