//! FLAC encoding: lossless (decoded back by claxon and by the reference `flac`), GUANO recovered by
//! the reference GUANO reader through the reference `metaflac`, damage detected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use fleet_uploaderd::flac::{self, FlacError, PcmLayout};

fn encode(path: &std::path::Path, out: &std::path::Path) -> Result<flac::Encoded, FlacError> {
    let info = fleet_retentiond::wav::read(path).unwrap();
    flac::encode_verified(path, &info, out, &mut || true)
}

#[test]
fn recordings_at_48_and_384_khz_encode_losslessly_and_smaller() {
    let dir = tempfile::tempdir().unwrap();
    for (seq, rate, channels, bits, frames) in [
        (1, 48_000, 2, 16, 48_000 * 3 + 123),
        (2, 384_000, 1, 16, 384_000 * 2),
        (3, 48_000, 1, 24, 10_000),
        (4, 8_000, 1, 16, 100),
    ] {
        let wav = common::recording(
            dir.path(),
            "st-1",
            "mic-0",
            seq,
            common::Pcm {
                rate,
                channels,
                bits,
                frames,
            },
        );
        let out = dir.path().join(format!("{seq}.flac"));
        let e = encode(&wav, &out).unwrap();
        assert_eq!(e.frames, frames as u64);
        let wav_len = std::fs::metadata(&wav).unwrap().len();
        assert!(
            e.size_bytes < wav_len,
            "{rate} Hz: {} >= {wav_len}",
            e.size_bytes
        );
        if common::have("flac") {
            // The reference decoder checks every frame's CRC and the STREAMINFO MD5 of the samples.
            let st = Command::new("flac")
                .args(["-t", "-s"])
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success(), "flac -t refused {}", out.display());
        }
    }
}

#[test]
fn the_guano_text_survives_in_a_vorbis_comment_the_reference_reader_parses() {
    let dir = tempfile::tempdir().unwrap();
    let wav = common::recording(
        dir.path(),
        "st-7",
        "mic-2",
        42,
        common::Pcm {
            rate: 48_000,
            channels: 1,
            bits: 16,
            frames: 4800,
        },
    );
    let out = dir.path().join("r.flac");
    encode(&wav, &out).unwrap();
    let info = fleet_retentiond::wav::read(&wav).unwrap();
    let original = info.guano.unwrap();
    let stored = flac::read_guano(&out).unwrap().expect("a GUANO comment");
    assert_eq!(stored, original.trim_end_matches([' ', '\n', '\0']));
    assert!(
        common::have("metaflac") && common::have("python3"),
        "metaflac and python3 are needed (tests/setup.d/80-uploader.sh and 30-recorder.sh install them)"
    );
    // metaflac (the reference FLAC tool) extracts the comment; guano (the reference GUANO reader)
    // parses it.
    let script = r#"
import subprocess, sys, json
from guano import GuanoFile
out = subprocess.run(["metaflac", "--show-tag=GUANO", sys.argv[1]], check=True,
                     capture_output=True, text=True).stdout
assert out.startswith("GUANO="), out[:40]
g = GuanoFile.from_string(out[len("GUANO="):])
print(json.dumps({"station": g["FLEET", "Station"], "device": g["FLEET", "Device"],
                  "seq": g["FLEET", "Segment Seq"], "rate": g["Samplerate"],
                  "make": g["Make"], "ts": g["Timestamp"].isoformat()}))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["station"], "st-7");
    assert_eq!(v["device"], "mic-2");
    assert_eq!(v["seq"], "42");
    assert_eq!(v["rate"], 48_000);
    assert_eq!(v["make"], "Wildlife Acoustics");
    assert!(v["ts"].as_str().unwrap().ends_with("+01:00"), "{v}");
}

#[test]
fn a_damaged_flac_file_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let wav = common::recording(
        dir.path(),
        "st-1",
        "mic-0",
        5,
        common::Pcm {
            rate: 48_000,
            channels: 2,
            bits: 16,
            frames: 48_000,
        },
    );
    let out = dir.path().join("r.flac");
    encode(&wav, &out).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&out, bytes).unwrap();
    let info = fleet_retentiond::wav::read(&wav).unwrap();
    let layout = PcmLayout::of(&info).unwrap();
    let e = flac::verify(&wav, &layout, &out, &mut || true).unwrap_err();
    assert!(matches!(e, FlacError::Verify { .. }), "{e}");
}

#[test]
fn thirty_two_bit_recordings_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let wav = common::recording(
        dir.path(),
        "st-1",
        "mic-0",
        6,
        common::Pcm {
            rate: 48_000,
            channels: 1,
            bits: 32,
            frames: 100,
        },
    );
    let e = encode(&wav, &dir.path().join("r.flac")).unwrap_err();
    assert!(e.to_string().contains("32-bit"), "{e}");
}

#[test]
fn shutdown_interrupts_an_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let wav = common::recording(
        dir.path(),
        "st-1",
        "mic-0",
        8,
        common::Pcm {
            rate: 48_000,
            channels: 1,
            bits: 16,
            frames: 48_000,
        },
    );
    let info = fleet_retentiond::wav::read(&wav).unwrap();
    let mut turns = 0;
    let e = flac::encode_verified(&wav, &info, &dir.path().join("r.flac"), &mut || {
        turns += 1;
        turns < 3
    })
    .unwrap_err();
    assert!(matches!(e, FlacError::Interrupted { .. }), "{e}");
}
