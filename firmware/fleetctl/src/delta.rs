//! Deltas next to a pushed bundle (ADR 0012).
//!
//! For each base (a bundle file named with `--delta-from`, or a bundle in `--delta-dir` that a
//! station keeps as its base, by the `kept-base` of its retained state) a push makes a zstd
//! patch with the base as its reference prefix (`zstd --patch-from`), and publishes, all
//! retained (`crate::publish::push` publishes them): the patch's signed manifest and chunks under the patch's id (the ordinary chunk
//! transport), then the signed description on `fleet/v1/bundles/{bundle-id}/deltas/{base-id}`.
//! All of it is on the broker before the offer names the bundle. A station whose base has no
//! delta fetches the full bundle, which is always published.
//!
//! Next to the raw bundle a push also publishes it zstd-compressed (unless `--no-compress`):
//! the compressed file under its own id in the chunk transport, then its signed description on
//! `fleet/v1/bundles/{bundle-id}/compressed`. A station without a delta fetches that and
//! decodes it; older stations and any failure take the raw bundle, which stays published.
//!
//! Patches and compressed files share one encoder setting ([`encoder`]).
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use fleet_core::update::BundleId;
use fleet_proto::delta::{MAX_WINDOW_LOG, MIN_WINDOW_LOG, frame_window_log};
use sha2::{Digest as _, Sha256};

/// Making a delta failed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("unable to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to make the delta from {path}: {reason}")]
    MakePatch { path: PathBuf, reason: String },
}

/// zstd level of patches (ADR 0012's measurement: level 22, the optimal parser's longest
/// search, with long-distance matching and [`PATCH_TARGET_LENGTH`]: 14% smaller than xdelta3 -9
/// on the one-package pair).
pub const PATCH_LEVEL: i32 = 22;

/// How long a match the optimal parser looks for in a patch (zstd's own advice for
/// `--patch-from`: the default of level 22 stops early on long matches against the base).
pub const PATCH_TARGET_LENGTH: u32 = 4096;

/// zstd level of compressed bundles (ADR 0012: level 19 with long-distance matching; 22 would
/// cost the operator twice the time for about 1% fewer bytes).
pub const COMPRESS_LEVEL: i32 = 19;

/// The largest window of a compressed bundle: `zstd --long`'s default, as measured in ADR
/// 0012 (a window covering a whole bundle costs the encoder that much memory and gains
/// little). A smaller bundle declares its own size (a single-segment frame).
pub const COMPRESSED_WINDOW_LOG_MAX: u8 = 27;

/// A compressed transfer is published only when it saves at least this share of the bundle:
/// below it, decoding on the station buys nothing worth the second copy on the broker.
pub const MIN_COMPRESSED_SAVING_PERCENT: u64 = 1;

/// Whether a compressed file of `file_size` bytes is worth publishing for a bundle of
/// `bundle_size` bytes ([`MIN_COMPRESSED_SAVING_PERCENT`]).
#[must_use]
pub fn compression_pays(file_size: u64, bundle_size: u64) -> bool {
    u128::from(file_size) * 100
        <= u128::from(bundle_size) * u128::from(100 - MIN_COMPRESSED_SAVING_PERCENT)
}

/// The one place the encoder is configured, for patches (`reference`: the base) and
/// compressed bundles (`reference` empty): level, window, long-distance matching, and the
/// content size in the frame header.
///
/// # Errors
/// zstd refuses a parameter.
pub fn encoder<W: Write>(
    out: W,
    reference: &[u8],
    window_log: u8,
    content_size: u64,
) -> std::io::Result<zstd::stream::write::Encoder<'_, W>> {
    let mut enc = if reference.is_empty() {
        zstd::stream::write::Encoder::new(out, COMPRESS_LEVEL)?
    } else {
        let mut enc = zstd::stream::write::Encoder::with_ref_prefix(out, PATCH_LEVEL, reference)?;
        enc.set_parameter(zstd::zstd_safe::CParameter::TargetLength(
            PATCH_TARGET_LENGTH,
        ))?;
        enc
    };
    enc.window_log(u32::from(window_log))?;
    enc.long_distance_matching(true)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(content_size))?;
    Ok(enc)
}

/// One delta a push published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaReport {
    pub base_id: BundleId,
    pub patch_id: BundleId,
    pub patch_size: u64,
    pub bundle_size: u64,
    pub topic: String,
}

/// What [`publish_deltas`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub published: Vec<DeltaReport>,
    /// Bases stations keep with no file in `--delta-dir`.
    pub bases_without_file: Vec<BundleId>,
}

/// A patch made on disk.
#[derive(Debug)]
pub struct MadePatch {
    pub base_id: BundleId,
    pub base_size: u64,
    pub path: PathBuf,
    pub patch_id: BundleId,
    pub patch_size: u64,
    pub window_log: u8,
}

fn sha256_of(path: &Path) -> Result<(BundleId, u64), DeltaError> {
    let err = |source| DeltaError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(err)?;
    Ok((BundleId::from_bytes(h.finalize().into()), n))
}

/// The window a patch of `new_len` bytes against `base_len` needs: every byte of the base
/// within reach from the end of the output.
#[must_use]
pub fn window_log_for(base_len: u64, new_len: u64) -> u8 {
    let reach = base_len.saturating_add(new_len).max(1);
    let log = 64 - reach.leading_zeros();
    u8::try_from(log)
        .unwrap_or(MAX_WINDOW_LOG)
        .clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

/// Makes the patch from `base` to `bundle` in `dir`.
///
/// # Errors
/// A file cannot be read or written, or zstd refuses (a base above its 2 GiB window).
pub fn make_patch(base: &Path, bundle: &Path, dir: &Path) -> Result<MadePatch, DeltaError> {
    let base_bytes = std::fs::read(base).map_err(|source| DeltaError::Read {
        path: base.to_owned(),
        source,
    })?;
    let new = std::fs::read(bundle).map_err(|source| DeltaError::Read {
        path: bundle.to_owned(),
        source,
    })?;
    let base_id = BundleId::from_bytes(Sha256::digest(&base_bytes).into());
    let make = |reason: String| DeltaError::MakePatch {
        path: base.to_owned(),
        reason,
    };
    let window_log = window_log_for(base_bytes.len() as u64, new.len() as u64);
    let path = dir.join(format!("patch-{}.zst", &base_id.to_string()[..16]));
    let file = std::fs::File::create(&path).map_err(|e| make(e.to_string()))?;
    let mut enc = encoder(
        std::io::BufWriter::new(file),
        &base_bytes,
        window_log,
        new.len() as u64,
    )
    .map_err(|e| make(e.to_string()))?;
    enc.write_all(&new).map_err(|e| make(e.to_string()))?;
    let mut w = enc.finish().map_err(|e| make(e.to_string()))?;
    w.flush().map_err(|e| make(e.to_string()))?;
    drop(w);
    let (patch_id, patch_size) = sha256_of(&path)?;
    let window_log = declared_window(&path).map_err(make)?;
    Ok(MadePatch {
        base_id,
        base_size: base_bytes.len() as u64,
        path,
        patch_id,
        patch_size,
        window_log,
    })
}

/// What the frame in `path` declares is what the station checks: a description says exactly
/// that.
fn declared_window(path: &Path) -> Result<u8, String> {
    let mut head = [0u8; 18];
    let n = std::io::Read::read(
        &mut std::fs::File::open(path).map_err(|e| e.to_string())?,
        &mut head,
    )
    .map_err(|e| e.to_string())?;
    let declared = frame_window_log(&head[..n]).ok_or("zstd wrote no frame header")?;
    Ok(u8::try_from(declared)
        .map_err(|_| format!("window log {declared}"))?
        .max(MIN_WINDOW_LOG))
}

/// A compressed bundle made on disk.
#[derive(Debug)]
pub struct MadeCompressed {
    pub path: PathBuf,
    pub file_id: BundleId,
    pub file_size: u64,
    pub window_log: u8,
}

/// Compresses `bundle` into `dir`, streaming (the bundle is never whole in memory), calling
/// `progress(read, total)` as it goes.
///
/// # Errors
/// A file cannot be read or written, or zstd refuses.
pub fn make_compressed(
    bundle: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MadeCompressed, DeltaError> {
    let make = |reason: String| DeltaError::MakePatch {
        path: bundle.to_owned(),
        reason,
    };
    let read_err = |source| DeltaError::Read {
        path: bundle.to_owned(),
        source,
    };
    let mut input = std::fs::File::open(bundle).map_err(read_err)?;
    let total = input.metadata().map_err(read_err)?.len();
    let window_log = window_log_for(0, total).min(COMPRESSED_WINDOW_LOG_MAX);
    let path = dir.join("compressed.zst");
    let file = std::fs::File::create(&path).map_err(|e| make(e.to_string()))?;
    let mut enc = encoder(std::io::BufWriter::new(file), &[], window_log, total)
        .map_err(|e| make(e.to_string()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut read = 0u64;
    loop {
        let n = std::io::Read::read(&mut input, &mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n]).map_err(|e| make(e.to_string()))?;
        read += n as u64;
        progress(read, total);
    }
    if read != total {
        return Err(make(format!("read {read} bytes, the file had {total}")));
    }
    let mut w = enc.finish().map_err(|e| make(e.to_string()))?;
    w.flush().map_err(|e| make(e.to_string()))?;
    drop(w);
    let (file_id, file_size) = sha256_of(&path)?;
    let window_log = declared_window(&path).map_err(make)?;
    Ok(MadeCompressed {
        path,
        file_id,
        file_size,
        window_log,
    })
}

/// Bundle files in `dir` whose SHA-256 is one of `wanted`.
///
/// # Errors
/// The directory cannot be read.
pub fn bases_in_dir(
    dir: &Path,
    wanted: &BTreeSet<BundleId>,
) -> Result<BTreeMap<BundleId, PathBuf>, DeltaError> {
    let err = |source| DeltaError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if !entry.file_type().map_err(err)?.is_file() {
            continue;
        }
        let (id, _) = sha256_of(&entry.path())?;
        if wanted.contains(&id) {
            found.insert(id, entry.path());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_patch_rebuilds_the_bundle_from_its_base_and_declares_its_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new = base.clone();
        new[1000..1100].fill(7);
        new.extend_from_slice(b"appended");
        std::fs::write(dir.path().join("base"), &base).expect("base");
        std::fs::write(dir.path().join("new"), &new).expect("new");
        let made = make_patch(
            &dir.path().join("base"),
            &dir.path().join("new"),
            dir.path(),
        )
        .expect("patch");
        assert!(made.patch_size < 2_000, "{} bytes", made.patch_size);
        let patch = std::fs::read(&made.path).expect("read");
        // zstd may declare less than asked for when the content is smaller; the description
        // says what the frame declares.
        assert!(made.window_log <= window_log_for(300_000, new.len() as u64));
        assert_eq!(frame_window_log(&patch), Some(u32::from(made.window_log)));
        let mut d = zstd::stream::read::Decoder::with_ref_prefix(&patch[..], &base).expect("d");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).expect("decode");
        assert_eq!(out, new);
    }

    #[test]
    fn a_compressed_bundle_decodes_to_the_bundle_and_declares_its_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle: Vec<u8> = (0..400_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        std::fs::write(dir.path().join("bundle"), &bundle).expect("bundle");
        let mut seen = Vec::new();
        let made = make_compressed(&dir.path().join("bundle"), dir.path(), &mut |r, t| {
            seen.push((r, t));
        })
        .expect("compress");
        assert_eq!(seen.last(), Some(&(400_000, 400_000)));
        assert!(made.file_size < 40_000, "{} bytes", made.file_size);
        let file = std::fs::read(&made.path).expect("read");
        assert_eq!(frame_window_log(&file), Some(u32::from(made.window_log)));
        assert!(made.window_log <= COMPRESSED_WINDOW_LOG_MAX);
        assert_eq!(zstd::stream::decode_all(&file[..]).expect("decode"), bundle);
    }

    #[test]
    fn a_compressed_file_is_worth_publishing_only_when_it_saves_a_percent() {
        assert!(compression_pays(99, 100));
        assert!(!compression_pays(100, 100));
        assert!(!compression_pays(9_950, 10_000));
        assert!(compression_pays(1, u64::MAX));
    }

    #[test]
    fn the_window_covers_base_and_bundle_within_zstds_bounds() {
        assert_eq!(window_log_for(0, 0), MIN_WINDOW_LOG);
        assert_eq!(window_log_for(1 << 20, 1 << 20), 22);
        assert_eq!(window_log_for(u64::MAX, 1), MAX_WINDOW_LOG);
    }
}
