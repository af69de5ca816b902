//! Reads what the index needs from a WAV file: the format, the audio length and the GUANO text.
//! Walks the RIFF chunks with seeks, so a 100 MB segment costs a few small reads.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The largest GUANO chunk read; larger ones are ignored.
pub const MAX_GUANO_BYTES: u32 = 64 * 1024;
/// The most chunks walked before giving up (a corrupt file cannot loop us).
const MAX_CHUNKS: usize = 64;

/// What the WAV header and its GUANO say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WavInfo {
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
    pub block_align: Option<u16>,
    pub bits_per_sample: Option<u16>,
    /// 1: integer PCM, 3: IEEE float, 0xFFFE: extensible.
    pub format_tag: Option<u16>,
    /// Where the samples start (the `data` chunk's body).
    pub data_offset: Option<u64>,
    pub data_bytes: Option<u64>,
    pub guano: Option<String>,
}

impl WavInfo {
    /// Duration from the data size and the format, in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> Option<u64> {
        let rate = u64::from(self.sample_rate?);
        let align = u64::from(self.block_align?);
        if rate == 0 || align == 0 {
            return None;
        }
        Some(self.data_bytes? / align * 1000 / rate)
    }

    /// Value of a GUANO key (`FLEET|Segment Seq`), trimmed.
    #[must_use]
    pub fn guano_field(&self, key: &str) -> Option<&str> {
        self.guano.as_deref()?.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim())
        })
    }
}

/// Reads the chunks of a RIFF/WAVE file. Errors only when the file cannot be read at all; a
/// malformed header yields what could be read.
///
/// # Errors
/// The file cannot be opened or its first 12 bytes cannot be read.
pub fn read(path: &Path) -> std::io::Result<WavInfo> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head)?;
    let mut info = WavInfo::default();
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Ok(info);
    }
    let mut pos = 12u64;
    for _ in 0..MAX_CHUNKS {
        if pos + 8 > len {
            break;
        }
        f.seek(SeekFrom::Start(pos))?;
        let mut hdr = [0u8; 8];
        if f.read_exact(&mut hdr).is_err() {
            break;
        }
        let id = [hdr[0], hdr[1], hdr[2], hdr[3]];
        let size = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let body = pos + 8;
        // A size past the end (a crash before the header was fixed) is clamped to the file.
        let avail = len.saturating_sub(body).min(u64::from(size));
        match &id {
            b"fmt " if avail >= 16 => {
                let mut fmt = [0u8; 16];
                f.read_exact(&mut fmt)?;
                info.format_tag = Some(u16::from_le_bytes([fmt[0], fmt[1]]));
                info.channels = Some(u16::from_le_bytes([fmt[2], fmt[3]]));
                info.sample_rate = Some(u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]));
                info.block_align = Some(u16::from_le_bytes([fmt[12], fmt[13]]));
                info.bits_per_sample = Some(u16::from_le_bytes([fmt[14], fmt[15]]));
            }
            b"data" => {
                info.data_offset = Some(body);
                info.data_bytes = Some(avail);
            }
            b"guan" if size <= MAX_GUANO_BYTES => {
                let mut text = vec![0u8; usize::try_from(avail).unwrap_or(0)];
                f.read_exact(&mut text)?;
                info.guano = Some(String::from_utf8_lossy(&text).into_owned());
            }
            _ => {}
        }
        pos = body + u64::from(size) + u64::from(size & 1);
    }
    Ok(info)
}
