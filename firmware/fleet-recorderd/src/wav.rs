//! WAV segment files: a fixed 4096-byte header (RIFF, `fmt `, `guan`, `data` chunk header) followed by
//! the samples, so the audio starts page-aligned, the data chunk is always last (its size can be
//! repaired from the file length after a crash) and the GUANO text can be rewritten in place at close.
//!
//! Every completed file is fsynced, renamed from `.buffer/` into `data/`, and both directories are
//! fsynced: a file in `data/` is always complete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::guano::{self, ClosedBy, SegmentMeta};

/// Bytes before the first sample.
pub const HEADER_LEN: usize = 4096;
const FMT_AT: usize = 12;
const GUAN_AT: usize = 36;
const GUAN_LEN: usize = HEADER_LEN - GUAN_AT - 8 - 8;
const DATA_AT: usize = HEADER_LEN - 8;
/// Largest data chunk written: 2 GiB minus the header, so readers with signed 32-bit sizes cope.
pub const MAX_DATA_BYTES: u64 = (1 << 31) - HEADER_LEN as u64;
/// Largest GUANO text that fits the reserved chunk.
pub const MAX_GUANO_LEN: usize = GUAN_LEN;

/// Sample layout of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    pub rate: u32,
    pub channels: u16,
    pub bits: u16,
}

impl WavFormat {
    #[must_use]
    pub fn frame_bytes(&self) -> usize {
        usize::from(self.channels) * usize::from(self.bits / 8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("unable to create segment {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to write segment {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to sync segment {path}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Promoting a segment (move and directory fsyncs) or syncing a directory; the error
    /// names the paths.
    #[error(transparent)]
    Durable(fleet_durable::Error),
    #[error("unable to fit GUANO metadata of {len} bytes into {path} (max {MAX_GUANO_LEN})")]
    GuanoTooLong { path: PathBuf, len: usize },
    #[error("unable to read segment {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to parse segment header of {path}: {reason}")]
    Header { path: PathBuf, reason: &'static str },
}

/// The 4096-byte header for `data_bytes` of samples and the given GUANO text.
pub fn header(fmt: WavFormat, guano_text: &str, data_bytes: u64) -> Option<[u8; HEADER_LEN]> {
    if guano_text.len() > GUAN_LEN || data_bytes > MAX_DATA_BYTES {
        return None;
    }
    let mut h = [b' '; HEADER_LEN];
    let riff_size = (HEADER_LEN as u64 - 8 + data_bytes) as u32;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_size.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    let f = FMT_AT;
    h[f..f + 4].copy_from_slice(b"fmt ");
    h[f + 4..f + 8].copy_from_slice(&16u32.to_le_bytes());
    h[f + 8..f + 10].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[f + 10..f + 12].copy_from_slice(&fmt.channels.to_le_bytes());
    h[f + 12..f + 16].copy_from_slice(&fmt.rate.to_le_bytes());
    let block_align = fmt.frame_bytes() as u16;
    h[f + 16..f + 20].copy_from_slice(&(fmt.rate * u32::from(block_align)).to_le_bytes());
    h[f + 20..f + 22].copy_from_slice(&block_align.to_le_bytes());
    h[f + 22..f + 24].copy_from_slice(&fmt.bits.to_le_bytes());
    let g = GUAN_AT;
    h[g..g + 4].copy_from_slice(b"guan");
    h[g + 4..g + 8].copy_from_slice(&(GUAN_LEN as u32).to_le_bytes());
    // The text, padded with spaces (whitespace lines are ignored by GUANO readers).
    h[g + 8..g + 8 + guano_text.len()].copy_from_slice(guano_text.as_bytes());
    h[DATA_AT..DATA_AT + 4].copy_from_slice(b"data");
    h[DATA_AT + 4..DATA_AT + 8].copy_from_slice(&(data_bytes as u32).to_le_bytes());
    Some(h)
}

/// What `parse_header` finds in one of our headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub format: WavFormat,
    pub guano_text: String,
    pub data_bytes_declared: u32,
}

/// Parses a header written by `header`; anything else is rejected with the reason.
pub fn parse_header(h: &[u8]) -> Result<ParsedHeader, &'static str> {
    if h.len() < HEADER_LEN {
        return Err("shorter than the header");
    }
    let u16at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file");
    }
    if &h[FMT_AT..FMT_AT + 4] != b"fmt " || u32at(FMT_AT + 4) != 16 || u16at(FMT_AT + 8) != 1 {
        return Err("unexpected fmt chunk");
    }
    if &h[GUAN_AT..GUAN_AT + 4] != b"guan" || u32at(GUAN_AT + 4) as usize != GUAN_LEN {
        return Err("unexpected guan chunk");
    }
    if &h[DATA_AT..DATA_AT + 4] != b"data" {
        return Err("unexpected data chunk");
    }
    let format = WavFormat {
        channels: u16at(FMT_AT + 10),
        rate: u32at(FMT_AT + 12),
        bits: u16at(FMT_AT + 22),
    };
    if format.channels == 0 || !matches!(format.bits, 16 | 32) || format.rate == 0 {
        return Err("unsupported sample format");
    }
    let text = &h[GUAN_AT + 8..GUAN_AT + 8 + GUAN_LEN];
    let text = String::from_utf8_lossy(text)
        .trim_end_matches([' ', '\n', '\0'])
        .to_string();
    Ok(ParsedHeader {
        format,
        guano_text: text,
        data_bytes_declared: u32at(DATA_AT + 4),
    })
}

/// A segment being written in `.buffer/`.
#[derive(Debug)]
pub struct SegmentFile {
    file: File,
    path: PathBuf,
    name: String,
    format: WavFormat,
    opening_text: String,
    data_bytes: u64,
}

impl SegmentFile {
    /// Creates `buffer_dir/<meta.file_name>` with a provisional header (data size 0).
    pub fn create(
        buffer_dir: &Path,
        format: WavFormat,
        meta: &SegmentMeta,
    ) -> Result<Self, WavError> {
        let path = buffer_dir.join(&meta.file_name);
        let opening_text = guano::opening_text(meta);
        // Leave room for the closing lines.
        let worst = opening_text.len()
            + guano::closing_lines(u64::MAX, 1, ClosedBy::Recovery).len()
            + crate::audio::MAX_GUANO_LINES_LEN;
        let head = match header(format, &opening_text, 0) {
            Some(h) if worst <= MAX_GUANO_LEN => h,
            _ => {
                return Err(WavError::GuanoTooLong { path, len: worst });
            }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| WavError::Create {
                path: path.clone(),
                source,
            })?;
        file.write_all(&head).map_err(|source| WavError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            file,
            path,
            name: meta.file_name.clone(),
            format,
            opening_text,
            data_bytes: 0,
        })
    }

    /// Appends samples (whole frames).
    pub fn append(&mut self, samples: &[u8]) -> Result<(), WavError> {
        self.file
            .write_all(samples)
            .map_err(|source| WavError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.data_bytes += samples.len() as u64;
        Ok(())
    }

    /// Flushes samples to the disk (bounds what a power cut can take).
    pub fn sync_data(&self) -> Result<(), WavError> {
        self.file.sync_data().map_err(|source| WavError::Sync {
            path: self.path.clone(),
            source,
        })
    }

    #[must_use]
    pub fn frames(&self) -> u64 {
        self.data_bytes / self.format.frame_bytes() as u64
    }

    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes the final header, fsyncs, renames into `data_dir` and fsyncs both directories.
    /// Returns the promoted path.
    pub fn finish(
        self,
        data_dir: &Path,
        closed_by: ClosedBy,
        audio: Option<&fleet_core::health::AudioFigures>,
    ) -> Result<PathBuf, WavError> {
        let text = format!(
            "{}{}{}",
            self.opening_text,
            guano::closing_lines(self.frames(), self.format.rate, closed_by),
            audio.map(crate::audio::guano_lines).unwrap_or_default()
        );
        finalize(&self.file, &self.path, self.format, &text, self.data_bytes)?;
        drop(self.file);
        promote(&self.path, data_dir, &self.name)
    }
}

/// Rewrites the header of an open file for `data_bytes` and fsyncs it.
pub fn finalize(
    file: &File,
    path: &Path,
    format: WavFormat,
    text: &str,
    data_bytes: u64,
) -> Result<(), WavError> {
    let head = header(format, text, data_bytes).ok_or_else(|| WavError::GuanoTooLong {
        path: path.to_path_buf(),
        len: text.len(),
    })?;
    file.write_all_at(&head, 0)
        .map_err(|source| WavError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    file.sync_all().map_err(|source| WavError::Sync {
        path: path.to_path_buf(),
        source,
    })
}

/// Renames `from` to `data_dir/name` and fsyncs both directories.
pub fn promote(from: &Path, data_dir: &Path, name: &str) -> Result<PathBuf, WavError> {
    let to = data_dir.join(name);
    fleet_durable::rename(from, &to).map_err(WavError::Durable)?;
    Ok(to)
}

/// fsync on a directory, so a rename or creation in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), WavError> {
    fleet_durable::sync_dir(dir).map_err(WavError::Durable)
}

/// Reads the header of a file on disk.
pub fn read_header(path: &Path) -> Result<(File, ParsedHeader, u64), WavError> {
    let read_err = |source| WavError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(read_err)?;
    let len = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut h = vec![0u8; HEADER_LEN.min(len as usize)];
    file.read_exact(&mut h).map_err(read_err)?;
    let parsed = parse_header(&h).map_err(|reason| WavError::Header {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok((file, parsed, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT: WavFormat = WavFormat {
        rate: 48_000,
        channels: 2,
        bits: 16,
    };

    #[test]
    fn header_round_trips_and_places_data_at_4096() {
        let h = header(FMT, "GUANO|Version: 1.0\n", 1000).expect("fits");
        assert_eq!(&h[4088..4092], b"data");
        let p = parse_header(&h).expect("ours");
        assert_eq!(p.format, FMT);
        assert_eq!(p.guano_text, "GUANO|Version: 1.0");
        assert_eq!(p.data_bytes_declared, 1000);
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 4088 + 1000);
    }

    #[test]
    fn oversized_text_or_data_is_refused() {
        assert!(header(FMT, &"x".repeat(MAX_GUANO_LEN + 1), 0).is_none());
        assert!(header(FMT, "", MAX_DATA_BYTES + 1).is_none());
    }

    #[test]
    fn foreign_headers_are_rejected_with_a_reason() {
        let mut h = header(FMT, "", 0).expect("fits");
        h[GUAN_AT] = b'j';
        assert_eq!(parse_header(&h), Err("unexpected guan chunk"));
        assert_eq!(parse_header(&h[..100]), Err("shorter than the header"));
    }
}
