//! Start-up recovery: segments left in `.buffer/` by a crash or power cut are repaired (RIFF and data
//! sizes set to the whole frames actually on disk, GUANO closed with `FLEET|Repaired: true`) and
//! promoted into `data/`. Nothing already on disk is thrown away: a file whose header is not ours is
//! moved to `.buffer/damaged/` for a person to look at; only a file too short to hold any sample is
//! removed.

use std::fs;
use std::path::{Path, PathBuf};

use crate::guano::{self, ClosedBy};
use crate::wav::{self, HEADER_LEN, WavError};

/// What happened to one file found in `.buffer/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Repaired and promoted to this path, with this many frames.
    Promoted { path: PathBuf, frames: u64 },
    /// Held no sample (crash before the first write): removed.
    RemovedEmpty { path: PathBuf },
    /// Not one of our headers: moved aside.
    Quarantined { path: PathBuf, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("unable to list {path}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to remove {path}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to quarantine {path}")]
    Quarantine {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wav(#[from] WavError),
}

/// Repairs and promotes every `*.wav` in `buffer_dir` into `data_dir`, oldest name first.
pub fn recover(buffer_dir: &Path, data_dir: &Path) -> Result<Vec<Repair>, RecoveryError> {
    recover_matching(buffer_dir, data_dir, |_| true)
}

/// Like `recover`, for the files whose name `wanted` accepts only (one device's segments, while
/// the other devices keep writing theirs).
pub fn recover_matching(
    buffer_dir: &Path,
    data_dir: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Repair>, RecoveryError> {
    let list_err = |source| RecoveryError::List {
        path: buffer_dir.to_path_buf(),
        source,
    };
    let mut names: Vec<PathBuf> = fs::read_dir(buffer_dir)
        .map_err(list_err)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wav"))
        .filter(|p| p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for path in names {
        out.push(repair_one(&path, buffer_dir, data_dir)?);
    }
    Ok(out)
}

fn repair_one(path: &Path, buffer_dir: &Path, data_dir: &Path) -> Result<Repair, RecoveryError> {
    let len = fs::metadata(path)
        .map_err(|source| WavError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len <= HEADER_LEN as u64 {
        // The header is written in one call before any sample: a file this short holds no audio.
        fs::remove_file(path).map_err(|source| RecoveryError::Remove {
            path: path.to_path_buf(),
            source,
        })?;
        wav::sync_dir(buffer_dir)?;
        return Ok(Repair::RemovedEmpty {
            path: path.to_path_buf(),
        });
    }
    let (file, parsed, len) = match wav::read_header(path) {
        Ok(v) => v,
        Err(WavError::Header { reason, .. }) => return quarantine(path, buffer_dir, reason),
        Err(e) => return Err(e.into()),
    };
    let frame_bytes = parsed.format.frame_bytes() as u64;
    let on_disk = len - HEADER_LEN as u64;
    let data_bytes = (on_disk / frame_bytes * frame_bytes).min(wav::MAX_DATA_BYTES);
    if data_bytes != on_disk {
        // A partial frame at the end (torn write): cut it so the file stays frame-aligned.
        file.set_len(HEADER_LEN as u64 + data_bytes)
            .map_err(|source| WavError::Write {
                path: path.to_path_buf(),
                source,
            })?;
    }
    let frames = data_bytes / frame_bytes;
    let text = format!(
        "{}{}",
        guano::strip_closing(&parsed.guano_text),
        guano::closing_lines(frames, parsed.format.rate, ClosedBy::Recovery)
    );
    wav::finalize(&file, path, parsed.format, &text, data_bytes)?;
    drop(file);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let promoted = wav::promote(path, data_dir, &name)?;
    Ok(Repair::Promoted {
        path: promoted,
        frames,
    })
}

fn quarantine(path: &Path, buffer_dir: &Path, reason: &str) -> Result<Repair, RecoveryError> {
    let dir = buffer_dir.join("damaged");
    let q_err = |source| RecoveryError::Quarantine {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(&dir).map_err(q_err)?;
    let to = dir.join(path.file_name().unwrap_or_default());
    // Moves, then fsyncs `damaged/` and `.buffer/`.
    fleet_durable::rename(path, &to).map_err(|e| q_err(e.into()))?;
    Ok(Repair::Quarantined {
        path: to,
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guano::SegmentMeta;
    use crate::wav::{SegmentFile, WavFormat};

    fn meta(name: &str) -> SegmentMeta {
        SegmentMeta {
            station: "st".into(),
            device: "mic".into(),
            make: None,
            model: None,
            serial: None,
            position: None,
            elevation_m: None,
            rate: 8000,
            channels: 1,
            seq: 1,
            wall_unix_ms: 0,
            clock_trusted: false,
            monotonic_ns: 0,
            stream_frame: 0,
            utc_offset_minutes: 0,
            file_name: name.into(),
            gap_before: None,
        }
    }

    #[test]
    fn an_open_segment_is_repaired_to_its_whole_frames_and_promoted() {
        let root = tempfile::tempdir().expect("tempdir");
        let (buf, data) = (root.path().join(".buffer"), root.path().join("data"));
        fs::create_dir_all(&buf).expect("mkdir");
        fs::create_dir_all(&data).expect("mkdir");
        let fmt = WavFormat {
            rate: 8000,
            channels: 1,
            bits: 16,
        };
        let mut seg = SegmentFile::create(&buf, fmt, &meta("a.wav")).expect("create");
        seg.append(&[1, 0, 2, 0, 3]).expect("append"); // 2.5 frames: a torn write
        std::mem::forget(seg); // the "crash": no finish
        let out = recover(&buf, &data).expect("recover");
        assert_eq!(
            out,
            vec![Repair::Promoted {
                path: data.join("a.wav"),
                frames: 2
            }]
        );
        let bytes = fs::read(data.join("a.wav")).expect("read");
        assert_eq!(bytes.len(), HEADER_LEN + 4);
        let p = wav::parse_header(&bytes).expect("ours");
        assert_eq!(p.data_bytes_declared, 4);
        assert_eq!(guano::field(&p.guano_text, "FLEET|Repaired"), Some("true"));
        assert_eq!(guano::field(&p.guano_text, "FLEET|Frames"), Some("2"));
        assert!(fs::read_dir(&buf).expect("ls").next().is_none());
    }

    #[test]
    fn recovery_for_one_device_leaves_the_other_devices_segments_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let (buf, data) = (root.path().join(".buffer"), root.path().join("data"));
        fs::create_dir_all(&buf).expect("mkdir");
        fs::create_dir_all(&data).expect("mkdir");
        let fmt = WavFormat {
            rate: 8000,
            channels: 1,
            bits: 16,
        };
        for name in ["t_st_a_00000001.wav", "t_st_b_00000001.wav"] {
            let mut seg = SegmentFile::create(&buf, fmt, &meta(name)).expect("create");
            seg.append(&[1, 0]).expect("append");
            std::mem::forget(seg);
        }
        let out = recover_matching(&buf, &data, |n| {
            crate::segment::seq_of(n, "st", "a").is_some()
        })
        .expect("recover");
        assert_eq!(out.len(), 1);
        assert!(data.join("t_st_a_00000001.wav").exists());
        assert!(buf.join("t_st_b_00000001.wav").exists());
    }

    #[test]
    fn empty_files_are_removed_and_foreign_files_quarantined() {
        let root = tempfile::tempdir().expect("tempdir");
        let (buf, data) = (root.path().join(".buffer"), root.path().join("data"));
        fs::create_dir_all(&buf).expect("mkdir");
        fs::create_dir_all(&data).expect("mkdir");
        fs::write(buf.join("empty.wav"), [0u8; 100]).expect("write");
        fs::write(buf.join("foreign.wav"), vec![7u8; 5000]).expect("write");
        let out = recover(&buf, &data).expect("recover");
        assert!(matches!(&out[0], Repair::RemovedEmpty { .. }));
        assert!(matches!(&out[1], Repair::Quarantined { .. }));
        assert!(buf.join("damaged/foreign.wav").exists());
        assert!(fs::read_dir(&data).expect("ls").next().is_none());
    }
}
