//! Rebuilding a bundle from the kept base and a verified zstd patch, or decoding the
//! compressed bundle (the same with no base) (ADR 0012), into
//! `<data>/fleet/downloads/<bundle-id>.part`, output bounded by the offered size.
//!
//! Memory: the base, the patch and the output are memory-mapped, and the patch is decoded in
//! one pass straight into the mapped output. zstd then needs no window buffer of its own (the
//! output is its window) and reads the base in place, so the heap stays at the decoder's few
//! hundred KiB whatever the bundle's size; the mapped pages are file-backed and the kernel
//! reclaims them under pressure (the recorder keeps running). The frame's declared window is
//! still checked against the configured maximum (`[update] delta-window-log-max`).
//!
//! The mapped files are the updater's own (the kept base under `<data>/fleet/base/`, the
//! patch and the output under `<data>/fleet/downloads/`, mode 0600 in directories only the
//! updater writes); nothing else truncates them while they are mapped. The caller judges the
//! result against the offer (`fleet_core::update::delta::judge_result`) and drops it
//! otherwise.
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A rebuild that failed: every variant means the patch is not used (the station takes the
/// full bundle).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("unable to read the base bundle {path}: {source}")]
    Base {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to read the patch {path}: {source}")]
    Patch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to decode the patch: {0}")]
    Decode(String),
    #[error(
        "unable to decode the patch: its window of 2^{window_log} bytes is above the allowed 2^{max}"
    )]
    Window { window_log: u32, max: u32 },
    #[error("unable to rebuild: the patch makes more than the offered {limit} bytes")]
    TooLong { limit: u64 },
    #[error("unable to rebuild: bytes follow the patch's frame")]
    Trailing,
    #[error("unable to write the rebuilt bundle {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a rebuild produced: the output's SHA-256 and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Maps `file` read-only. The updater's own files only (see the module documentation).
#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the file is the updater's own, in a directory only the updater writes; no other
    // process truncates or rewrites it while this map lives (a truncation would be SIGBUS,
    // not a wrong byte, and the rebuilt file is hashed and judged before anything uses it).
    unsafe { memmap2::Mmap::map(file) }
}

/// Maps `file` read-write (the output, sized beforehand).
#[allow(unsafe_code)]
fn map_mut(file: &File) -> std::io::Result<memmap2::MmapMut> {
    // SAFETY: as for `map`: the output file was just created by this function's caller.
    unsafe { memmap2::MmapMut::map_mut(file) }
}

/// Rebuilds `out` from the base bundle file `base` (`None`: no reference, the compressed
/// bundle) and the zstd patch file `patch`. The patch
/// must be one frame whose window is at most `2^window_log_max` bytes; at most `limit` bytes
/// are written (more is [`RebuildError::TooLong`]). `out` is fsynced before this returns.
pub fn rebuild(
    base: Option<&Path>,
    patch: &Path,
    out: &Path,
    window_log_max: u32,
    limit: u64,
) -> Result<Rebuilt, RebuildError> {
    let base_err = |source| RebuildError::Base {
        path: base.map(Path::to_path_buf).unwrap_or_default(),
        source,
    };
    let patch_err = |source| RebuildError::Patch {
        path: patch.to_path_buf(),
        source,
    };
    let write_err = |source| RebuildError::Write {
        path: out.to_path_buf(),
        source,
    };
    let patch_file = File::open(patch).map_err(patch_err)?;
    let patch_map = map(&patch_file).map_err(patch_err)?;
    let window_log = fleet_proto::delta::frame_window_log(&patch_map)
        .ok_or_else(|| RebuildError::Decode("the patch is not a zstd frame".into()))?;
    if window_log > window_log_max {
        return Err(RebuildError::Window {
            window_log,
            max: window_log_max,
        });
    }
    // One frame only: anything after it is not part of the patch format.
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(&patch_map)
        .map_err(|c| RebuildError::Decode(zstd::zstd_safe::get_error_name(c).to_owned()))?;
    if frame_len != patch_map.len() {
        return Err(RebuildError::Trailing);
    }
    let base_map = match base {
        Some(base) => Some(map(&File::open(base).map_err(base_err)?).map_err(base_err)?),
        None => None,
    };
    let len = usize::try_from(limit).map_err(|_| RebuildError::TooLong { limit })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(write_err)?;
    file.set_len(limit).map_err(write_err)?;
    let made = if len == 0 {
        0
    } else {
        let mut output = map_mut(&file).map_err(write_err)?;
        let mut dctx = zstd::zstd_safe::DCtx::create();
        if let Some(base_map) = &base_map {
            dctx.ref_prefix(&base_map[..])
                .map_err(|c| RebuildError::Decode(zstd::zstd_safe::get_error_name(c).to_owned()))?;
        }
        let made = match dctx.decompress(&mut output[..], &patch_map) {
            Ok(n) => n,
            Err(c) => {
                let name = zstd::zstd_safe::get_error_name(c);
                // zstd's "Destination buffer is too small": the frame makes more than `limit`.
                if name.contains("too small") {
                    return Err(RebuildError::TooLong { limit });
                }
                return Err(RebuildError::Decode(name.to_owned()));
            }
        };
        output.flush().map_err(write_err)?;
        made
    };
    let made = made as u64;
    if made < limit {
        file.set_len(made).map_err(write_err)?;
    }
    file.sync_all().map_err(write_err)?;
    // Hash what is on disk (through the page cache), not what the decoder meant to write.
    let reread = map(&file).map_err(write_err)?;
    let sha256: [u8; 32] = if made == 0 {
        Sha256::digest([]).into()
    } else {
        Sha256::digest(&reread[..]).into()
    };
    Ok(Rebuilt { sha256, size: made })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// `bytes` as a base file in `dir`.
    fn on_disk(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    fn patch(base: &[u8], new: &[u8], window_log: u32) -> Vec<u8> {
        let mut e =
            zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), 3, base).expect("encoder");
        e.window_log(window_log).expect("window log");
        e.long_distance_matching(true)
            .expect("long distance matching");
        e.write_all(new).expect("compress");
        e.finish().expect("finish")
    }

    /// A base of pseudo-random bytes and a new version with a few changed regions.
    fn pair(len: usize) -> (Vec<u8>, Vec<u8>) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut new = base.clone();
        for at in [len / 7, len / 3, len / 2 + 11] {
            for b in &mut new[at..at + 300] {
                *b = b.wrapping_add(1);
            }
        }
        new.extend_from_slice(b"a new file at the end");
        (base, new)
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn a_patch_rebuilds_the_new_bundle_byte_for_byte_from_its_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(2 << 20);
        let p = patch(&base, &new, 23);
        assert!(p.len() < new.len() / 50, "patch of {} bytes", p.len());
        std::fs::write(dir.path().join("patch"), &p).expect("write patch");
        let out = dir.path().join("out");
        let r = rebuild(
            Some(&on_disk(dir.path(), "base", &base)),
            &dir.path().join("patch"),
            &out,
            23,
            new.len() as u64,
        )
        .expect("rebuild");
        assert_eq!(r.size, new.len() as u64);
        assert_eq!(r.sha256, sha(&new));
        assert_eq!(std::fs::read(&out).expect("read"), new);
    }

    #[test]
    fn a_patch_applied_to_another_base_does_not_make_the_offered_bundle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(1 << 20);
        let (other, _) = pair((1 << 20) + 1);
        std::fs::write(dir.path().join("patch"), patch(&base, &new, 22)).expect("write");
        let out = dir.path().join("out");
        match rebuild(
            Some(&on_disk(dir.path(), "base", &other)),
            &dir.path().join("patch"),
            &out,
            22,
            new.len() as u64,
        ) {
            Ok(r) => assert_ne!(r.sha256, sha(&new)),
            Err(e) => assert!(matches!(e, RebuildError::Decode(_)), "{e}"),
        }
    }

    #[test]
    fn a_truncated_patch_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(1 << 20);
        let p = patch(&base, &new, 22);
        std::fs::write(dir.path().join("patch"), &p[..p.len() / 2]).expect("write");
        let e = rebuild(
            Some(&on_disk(dir.path(), "base", &base)),
            &dir.path().join("patch"),
            &dir.path().join("out"),
            22,
            new.len() as u64,
        )
        .expect_err("truncated");
        assert!(matches!(e, RebuildError::Decode(_)), "{e}");
    }

    #[test]
    fn a_patch_that_makes_more_than_the_offered_size_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(1 << 20);
        std::fs::write(dir.path().join("patch"), patch(&base, &new, 22)).expect("write");
        let e = rebuild(
            Some(&on_disk(dir.path(), "base", &base)),
            &dir.path().join("patch"),
            &dir.path().join("out"),
            22,
            new.len() as u64 - 1,
        )
        .expect_err("too long");
        assert!(matches!(e, RebuildError::TooLong { .. }), "{e}");
    }

    #[test]
    fn a_patch_that_needs_a_larger_window_than_allowed_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(4 << 20);
        std::fs::write(dir.path().join("patch"), patch(&base, &new, 24)).expect("write");
        let e = rebuild(
            Some(&on_disk(dir.path(), "base", &base)),
            &dir.path().join("patch"),
            &dir.path().join("out"),
            20,
            new.len() as u64,
        )
        .expect_err("window above the cap");
        assert!(
            matches!(
                e,
                RebuildError::Window {
                    window_log: 24,
                    max: 20
                }
            ),
            "{e}"
        );
    }

    use fleet_proto::delta::frame_window_log;

    fn compressed(new: &[u8], window_log: u32) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        e.window_log(window_log).expect("window log");
        e.long_distance_matching(true).expect("ldm");
        e.write_all(new).expect("compress");
        e.finish().expect("finish")
    }

    #[test]
    fn a_compressed_bundle_decodes_with_no_base_and_hostile_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, new) = pair(1 << 20);
        let c = compressed(&new, 21);
        let file = on_disk(dir.path(), "file", &c);
        let out = dir.path().join("out");
        let r = rebuild(None, &file, &out, 21, new.len() as u64).expect("decode");
        assert_eq!((r.size, r.sha256), (new.len() as u64, sha(&new)));
        assert_eq!(std::fs::read(&out).expect("read"), new);
        // Truncated, oversized, a window above the cap.
        let cut = on_disk(dir.path(), "cut", &c[..c.len() / 2]);
        let e = rebuild(None, &cut, &out, 21, new.len() as u64).expect_err("truncated");
        assert!(matches!(e, RebuildError::Decode(_)), "{e}");
        let e = rebuild(None, &file, &out, 21, new.len() as u64 - 1).expect_err("too long");
        assert!(matches!(e, RebuildError::TooLong { .. }), "{e}");
        let e = rebuild(None, &file, &out, 20, new.len() as u64).expect_err("window");
        assert!(matches!(e, RebuildError::Window { .. }), "{e}");
    }

    #[test]
    fn the_declared_window_is_read_from_the_frame_header() {
        let (base, new) = pair(1 << 20);
        for log in [20u32, 22, 23] {
            assert_eq!(frame_window_log(&patch(&base, &new, log)), Some(log));
        }
        assert_eq!(frame_window_log(b"not a frame"), None);
        let small = zstd::bulk::compress(b"tiny", 3).expect("compress");
        assert!(frame_window_log(&small).is_some_and(|l| l <= 10));
    }

    #[test]
    fn trailing_bytes_after_the_patch_frame_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(1 << 20);
        let mut p = patch(&base, &new, 22);
        p.extend_from_slice(&patch(&base, &new, 22));
        std::fs::write(dir.path().join("patch"), &p).expect("write");
        let e = rebuild(
            Some(&on_disk(dir.path(), "base", &base)),
            &dir.path().join("patch"),
            &dir.path().join("out"),
            22,
            2 * new.len() as u64,
        )
        .expect_err("trailing frame");
        assert!(matches!(e, RebuildError::Trailing), "{e}");
    }
}
