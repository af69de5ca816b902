//! Rebuilding a bundle from the kept base and a verified zstd patch (ADR 0012), streaming into
//! `<data>/fleet/downloads/<bundle-id>.part`, with the decoder's window capped and the output
//! bounded by the offered size. The result is hashed while it is written; the caller judges
//! it against the offer (`fleet_core::update::delta::judge_result`) and drops it otherwise.
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
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
    Decode(#[source] std::io::Error),
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

/// Rebuilds `out` from the base bytes `base` and the zstd patch file `patch`, decoding with a
/// window of at most `2^window_log_max` bytes and writing at most `limit` bytes (one more is a
/// [`RebuildError::TooLong`]). `out` is fsynced before this returns.
pub fn rebuild(
    base: &[u8],
    patch: &Path,
    out: &Path,
    window_log_max: u32,
    limit: u64,
) -> Result<Rebuilt, RebuildError> {
    let patch_err = |source| RebuildError::Patch {
        path: patch.to_path_buf(),
        source,
    };
    let write_err = |source| RebuildError::Write {
        path: out.to_path_buf(),
        source,
    };
    let input = File::open(patch).map_err(patch_err)?;
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(BufReader::new(input), base)
        .map_err(RebuildError::Decode)?;
    decoder
        .window_log_max(window_log_max)
        .map_err(RebuildError::Decode)?;
    // One frame only: anything after it is not part of the patch format.
    let mut decoder = decoder.single_frame();
    let mut file = File::create(out).map_err(write_err)?;
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RebuildError::Decode(e)),
        };
        size += n as u64;
        if size > limit {
            return Err(RebuildError::TooLong { limit });
        }
        hash.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(write_err)?;
    }
    let mut rest = decoder.finish();
    if !rest.fill_buf().map_err(patch_err)?.is_empty() {
        return Err(RebuildError::Trailing);
    }
    file.sync_all().map_err(write_err)?;
    Ok(Rebuilt {
        sha256: hash.finalize().into(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r =
            rebuild(&base, &dir.path().join("patch"), &out, 23, new.len() as u64).expect("rebuild");
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
            &other,
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
            &base,
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
            &base,
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
            &base,
            &dir.path().join("patch"),
            &dir.path().join("out"),
            20,
            new.len() as u64,
        )
        .expect_err("window above the cap");
        assert!(matches!(e, RebuildError::Decode(_)), "{e}");
    }

    #[test]
    fn trailing_bytes_after_the_patch_frame_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, new) = pair(1 << 20);
        let mut p = patch(&base, &new, 22);
        p.extend_from_slice(&patch(&base, &new, 22));
        std::fs::write(dir.path().join("patch"), &p).expect("write");
        let e = rebuild(
            &base,
            &dir.path().join("patch"),
            &dir.path().join("out"),
            22,
            2 * new.len() as u64,
        )
        .expect_err("trailing frame");
        assert!(matches!(e, RebuildError::Trailing), "{e}");
    }
}
