//! The recordings on disk: scanning the recordings directory and describing one file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::index::NewRecording;
use crate::name;
use crate::wav;

/// A recording file found on disk. `rel` is relative to the recordings directory, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub rel: String,
    pub size_bytes: u64,
}

/// Why the archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("unable to read directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Lists every recording below `root` (depth-limited, hidden entries skipped).
///
/// # Errors
/// `root` itself cannot be read. Unreadable subdirectories are skipped with a warning.
pub fn scan(root: &Path, max_depth: usize) -> Result<Vec<Found>, ArchiveError> {
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    scan_changed(
        root,
        max_depth,
        true,
        &mut HashMap::new(),
        &mut out,
        &mut dirs,
    )?;
    Ok(out)
}

/// Like [`scan`] without the sizes (no `stat` per file): what reconciliation needs.
///
/// # Errors
/// `root` itself cannot be read.
pub fn scan_names(root: &Path, max_depth: usize) -> Result<Vec<Found>, ArchiveError> {
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    scan_changed(
        root,
        max_depth,
        false,
        &mut HashMap::new(),
        &mut out,
        &mut dirs,
    )?;
    Ok(out)
}

/// What the catch-up remembers of a directory: its modification time when last listed and its
/// subdirectories then (absolute path, relative prefix). Creating or removing an entry changes a
/// directory's mtime, so while it is unchanged the remembered subdirectories are still right.
pub type DirCache = HashMap<PathBuf, (SystemTime, Vec<(PathBuf, String)>)>;

/// Like [`scan`], but lists only directories whose modification time changed since `seen`
/// recorded it, and walks unchanged ones through their remembered subdirectories without reading
/// them: the periodic catch-up's cheap path. Sizes are read (one `stat` per file) only
/// `with_sizes`. Updates `seen`; returns the listed directories' prefixes in `listed`.
///
/// # Errors
/// `root` cannot be read.
pub fn scan_changed(
    root: &Path,
    max_depth: usize,
    with_sizes: bool,
    seen: &mut DirCache,
    out: &mut Vec<Found>,
    listed: &mut Vec<String>,
) -> Result<(), ArchiveError> {
    let mut stack = vec![(root.to_owned(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let mtime = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
        if let (Some(now), Some((before, subdirs))) = (mtime, seen.get(&dir))
            && now == *before
        {
            for (path, rel) in subdirs {
                stack.push((path.clone(), rel.clone(), depth + 1));
            }
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(source) if depth == 0 => return Err(ArchiveError::ReadDir { path: dir, source }),
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "unable to read directory, skipped");
                continue;
            }
        };
        listed.push(prefix.clone());
        let mut subdirs = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            if ft.is_dir() {
                if depth < max_depth {
                    subdirs.push((entry.path(), rel.clone()));
                    stack.push((entry.path(), rel, depth + 1));
                }
            } else if ft.is_file() && name::is_recording(name) {
                // A stat per file: only when the caller needs sizes (not the catch-up).
                let size = if with_sizes {
                    entry.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                };
                out.push(Found {
                    rel,
                    size_bytes: size,
                });
            }
        }
        if let Some(m) = mtime {
            seen.insert(dir, (m, subdirs));
        }
    }
    Ok(())
}

/// Describes a recording for the index from its name and its WAV header and GUANO. Tolerant:
/// anything unreadable is left unknown. `None` when the file is gone or is not a recording.
#[must_use]
pub fn describe(root: &Path, rel: &str) -> Option<NewRecording> {
    let file_name = rel.rsplit('/').next().unwrap_or(rel);
    let by_name = name::parse(file_name)?;
    let path = root.join(rel);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let info = wav::read(&path).unwrap_or_default();
    let g = |k: &str| info.guano_field(k).map(str::to_owned);
    let sequence = g("FLEET|Segment Seq")
        .and_then(|s| s.parse().ok())
        .or(by_name.sequence)
        .unwrap_or(0);
    let start_unix_ms = info
        .guano_field("Timestamp")
        .and_then(guano_timestamp_ms)
        .or(by_name.start_unix_ms);
    let start_trusted = g("FLEET|Clock Trusted").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let repaired = g("FLEET|Repaired").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || g("FLEET|Closed By").is_some_and(|v| v == "recovery");
    let sample_rate = info
        .sample_rate
        .or_else(|| g("Samplerate").and_then(|s| s.parse().ok()));
    let duration_ms = info.duration_ms().or_else(|| {
        g("Length")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            // Checked finite and non-negative; an absurd length saturates.
            .map(|s| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let ms = (s * 1000.0) as u64;
                ms
            })
    });
    Some(NewRecording {
        path: rel.to_owned(),
        station: g("FLEET|Station").or(by_name.station).unwrap_or_default(),
        device: g("FLEET|Device").or(by_name.device).unwrap_or_default(),
        sequence,
        start_unix_ms,
        start_trusted,
        duration_ms,
        sample_rate,
        size_bytes: meta.len(),
        data_bytes: info.data_bytes,
        repaired,
    })
}

/// GUANO `Timestamp` (`YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`) to Unix milliseconds.
#[must_use]
pub fn guano_timestamp_ms(text: &str) -> Option<i64> {
    // Reduce to the compact form the name parser reads.
    let compact: String = text
        .trim()
        .chars()
        .enumerate()
        .filter(|(i, c)| !((*i < 10 && *c == '-') || *c == ':'))
        .map(|(_, c)| c)
        .collect();
    name::parse_timestamp(&compact)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_catch_up_lists_only_directories_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("2026-11-22")).unwrap();
        std::fs::write(root.join("a_st_mic_1.wav"), b"x").unwrap();
        std::fs::write(root.join("2026-11-22/b_st_mic_2.wav"), b"x").unwrap();
        let mut cache = DirCache::new();
        let (mut out, mut listed) = (Vec::new(), Vec::new());
        scan_changed(root, 4, true, &mut cache, &mut out, &mut listed).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(listed.len(), 2);

        let (mut out, mut listed) = (Vec::new(), Vec::new());
        scan_changed(root, 4, true, &mut cache, &mut out, &mut listed).unwrap();
        assert!(
            out.is_empty() && listed.is_empty(),
            "nothing changed: nothing read"
        );

        // A new file in the subdirectory: only that directory is listed, through the cache.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("2026-11-22/c_st_mic_3.wav"), b"x").unwrap();
        let (mut out, mut listed) = (Vec::new(), Vec::new());
        scan_changed(root, 4, true, &mut cache, &mut out, &mut listed).unwrap();
        assert_eq!(listed, vec!["2026-11-22".to_owned()]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().any(|f| f.rel == "2026-11-22/c_st_mic_3.wav"));
    }

    #[test]
    fn guano_timestamps_with_offsets_convert_to_utc() {
        assert_eq!(
            guano_timestamp_ms("2026-11-22T19:53:00.250+01:00"),
            Some(1_795_373_580_250)
        );
        assert_eq!(
            guano_timestamp_ms("2026-11-22T18:53:00Z"),
            Some(1_795_373_580_000)
        );
        assert_eq!(
            guano_timestamp_ms("2026-11-22T18:53:00"),
            Some(1_795_373_580_000)
        );
        assert_eq!(guano_timestamp_ms("yesterday"), None);
    }
}
