//! The per-segment audio figures through the real alsa-lib path (a file-backed capture PCM):
//! silence, a tone at a known level, a clipped signal and a DC offset each reach the segment's
//! GUANO and the status file the health reporter reads.

mod common;

use std::time::Duration;

use common::{Bench, Daemon, read_segment};
use fleet_recorderd::guano;

const RATE: u32 = 48_000;

/// Records `samples` (16-bit mono, looped to 2 s) for 1.5 s in 1 s segments; returns the first
/// (full) segment's GUANO text and the status file's `last-audio` of the device.
fn record(samples: impl Fn(usize) -> i16) -> (String, serde_json::Value) {
    let bench = Bench::new();
    let bytes: Vec<u8> = (0..2 * RATE as usize)
        .flat_map(|i| samples(i).to_le_bytes())
        .collect();
    std::fs::write(bench.path("src.raw"), &bytes).expect("source");
    let config = bench.config(
        &bench.vmic(),
        "rate = 48000\nsegment-seconds = 1\nperiod-ms = 20\nbuffer-ms = 1000",
    );
    let mut cmd = Daemon::command(&bench, &config, None);
    cmd.args(["--duration", "1.5"]);
    assert!(Daemon::spawn(cmd).wait(Duration::from_secs(30)).success());
    let mut files = bench.promoted();
    files.sort_by_key(|f| {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        fleet_recorderd::segment::seq_of(&name, "st-0042", "mic0").expect("our name")
    });
    let (_, text) = read_segment(&files[0]);
    let status = common::status(&bench).expect("status file");
    let audio = status["devices"][0]["last-audio"].clone();
    assert!(audio.is_object(), "status has last-audio: {status}");
    assert_eq!(status["devices"][0]["format"], "48000/1/16");
    (text, audio)
}

fn num(text: &str, key: &str) -> f64 {
    guano::field(text, key)
        .unwrap_or_else(|| panic!("{key} missing from GUANO:\n{text}"))
        .parse()
        .expect("number")
}

#[test]
fn digital_silence_is_flagged_flat_at_minus_200_dbfs() {
    let (text, audio) = record(|_| 0);
    assert_eq!(num(&text, "FLEET|RMS dBFS"), -200.0);
    assert_eq!(guano::field(&text, "FLEET|Flat"), Some("true"));
    assert_eq!(audio["flat"], true);
}

#[test]
fn a_one_kilohertz_tone_at_minus_twenty_dbfs_peak_measures_minus_twenty_three_rms() {
    let amp = 32768.0 * 0.1;
    let (text, audio) = record(|i| {
        (amp * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / f64::from(RATE)).sin()).round()
            as i16
    });
    assert!(
        (num(&text, "FLEET|Peak dBFS") - -20.0).abs() < 0.02,
        "{text}"
    );
    assert!(
        (num(&text, "FLEET|RMS dBFS") - -23.01).abs() < 0.02,
        "{text}"
    );
    assert_eq!(num(&text, "FLEET|Clipped Fraction"), 0.0);
    assert_eq!(guano::field(&text, "FLEET|Flat"), Some("false"));
    assert!((audio["rms-dbfs"].as_f64().expect("rms") - -23.01).abs() < 0.02);
}

#[test]
fn a_clipped_signal_reports_its_clipped_fraction() {
    // Every fourth sample at full scale: a quarter clipped.
    let (text, audio) = record(|i| match i % 4 {
        0 => i16::MAX,
        1 => 1000,
        2 => -1000,
        _ => 0,
    });
    assert!(
        (num(&text, "FLEET|Clipped Fraction") - 0.25).abs() < 1e-6,
        "{text}"
    );
    assert!((audio["clipped-fraction"].as_f64().expect("clipped") - 0.25).abs() < 1e-6);
    assert!(num(&text, "FLEET|Peak dBFS") > -0.01);
}

#[test]
fn a_dc_offset_with_a_small_signal_is_measured_and_a_pure_dc_level_is_flat() {
    let (text, _) = record(|i| 4096 + if i % 2 == 0 { 300 } else { -300 });
    assert!(
        (num(&text, "FLEET|DC Offset") - 0.125).abs() < 1e-4,
        "{text}"
    );
    assert_eq!(guano::field(&text, "FLEET|Flat"), Some("false"));
    let (text, audio) = record(|_| -8192);
    assert!(
        (num(&text, "FLEET|DC Offset") - -0.25).abs() < 1e-6,
        "{text}"
    );
    assert_eq!(audio["flat"], true);
}
