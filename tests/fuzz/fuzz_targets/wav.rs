//! WAV files the station reads back from disk: the recorder's header parser, its start-up
//! repair of segments left in `.buffer/` (the real `recover` on a tmpfs directory), and the
//! retention daemon's chunk walker. The first byte picks the reader.
#![no_main]
use std::sync::OnceLock;

use fleet_recorderd::{recovery, wav};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| fleet_fuzz::scratch("wav"));
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = wav::parse_header(rest);
        }
        1 => {
            // A segment as the recorder leaves it after a power cut: one of our headers (built
            // from fuzzed format and GUANO text, then one fuzzed byte patched in) and a tail of
            // samples of any length.
            if rest.len() < 12 {
                return;
            }
            let fmt = wav::WavFormat {
                channels: u16::from_le_bytes([rest[0], rest[1]]),
                rate: u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]),
                bits: if rest[6] & 1 == 0 { 16 } else { 32 },
            };
            let declared = u64::from(u32::from_le_bytes([rest[7], rest[8], rest[9], rest[10]]));
            let text_len = usize::from(rest[11]).min(rest.len() - 12);
            let text = String::from_utf8_lossy(&rest[12..12 + text_len]);
            let tail = &rest[12 + text_len..];
            let Some(mut file) = wav::header(fmt, &text, declared).map(|h| h.to_vec()) else {
                return;
            };
            if let [at_lo, at_hi, value, ..] = *tail {
                let at = usize::from(u16::from_le_bytes([at_lo, at_hi])) % file.len();
                file[at] = value;
            }
            file.extend_from_slice(tail);
            let buffer = dir.join(".buffer");
            let out = dir.join("data");
            let _ = std::fs::remove_dir_all(&buffer);
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&buffer).expect("buffer dir");
            std::fs::create_dir_all(&out).expect("data dir");
            std::fs::write(buffer.join("20260101T000000Z_stn.wav"), &file).expect("write segment");
            let _ = recovery::recover(&buffer, &out);
        }
        _ => {
            let path = dir.join("retention.wav");
            std::fs::write(&path, rest).expect("write wav");
            if let Ok(info) = fleet_retentiond::wav::read(&path) {
                let _ = info.duration_ms();
                let _ = info.guano_field("Timestamp");
            }
        }
    }
});
