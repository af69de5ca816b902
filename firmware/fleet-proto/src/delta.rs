//! Delta updates on the wire (ADR 0012): a signed description (envelope kind `delta`) of a
//! patch from a base bundle to the offered bundle, retained on
//! `fleet/v1/bundles/{bundle-id}/deltas/{base-id}`.
//!
//! The patch itself travels in the ordinary chunk transport: it has its own signed manifest
//! on `fleet/v1/bundles/{patch-id}/manifest` (its `bundle-id` is the patch file's SHA-256, its
//! `version` and `compatible` are the offered bundle's) and its chunks on
//! `fleet/v1/bundles/{patch-id}/chunks/{index}`, each checked against that manifest. The
//! rebuilt file is then checked against the offer's `bundle-id` like a full download.
//!
//! The compressed bundle is the same thing with an empty base: a signed description (envelope
//! kind `compressed`) retained on `fleet/v1/bundles/{bundle-id}/compressed` names a zstd file
//! (`file-id`, its SHA-256) that decodes to the bundle; the file travels in the chunk
//! transport under its own id, with the offered bundle's `version` and `compatible`.
use serde::{Deserialize, Serialize};

use fleet_core::update::BundleId;
use fleet_core::update::delta::{CompressedFacts, DeltaFacts};

use crate::limits::Limits;
use crate::payload::BundleManifest;
use crate::topic::PREFIX;

/// The patch formats a station can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeltaFormat {
    /// A zstd frame compressed with the base bundle as its reference prefix
    /// (`zstd --patch-from=<base>`), decoded with a window of `2^window-log` bytes.
    ZstdPatchFrom,
}

/// Smallest and largest `window-log` a description may declare (zstd's own bounds on 64-bit).
pub const MIN_WINDOW_LOG: u8 = 10;
pub const MAX_WINDOW_LOG: u8 = 31;

/// The signed description of one delta (envelope kind `delta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeltaDescription {
    /// The bundle the patch rebuilds: the offer's `bundle-id`.
    pub bundle_id: BundleId,
    /// Its size: the offer's `bundle-size`.
    pub bundle_size: u64,
    /// SHA-256 of the base bundle the patch applies to.
    pub base_id: BundleId,
    pub base_size: u64,
    /// SHA-256 of the patch file: its manifest and chunks are published under this id.
    pub patch_id: BundleId,
    pub patch_size: u64,
    pub format: DeltaFormat,
    /// log2 of the decoder window the patch needs (the station's memory for it).
    pub window_log: u8,
}

/// A description that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to accept delta: {0}")]
pub struct DeltaError(pub String);

impl DeltaDescription {
    /// Checks the description against itself and `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), DeltaError> {
        let e = |s: &str| Err(DeltaError(s.to_owned()));
        for (what, size) in [
            ("bundle-size", self.bundle_size),
            ("base-size", self.base_size),
            ("patch-size", self.patch_size),
        ] {
            if size == 0 || size > limits.max_bundle_bytes {
                return Err(DeltaError(format!(
                    "{what} {size} is outside 1..={}",
                    limits.max_bundle_bytes
                )));
            }
        }
        if self.base_id == self.bundle_id {
            return e("base-id is the bundle-id");
        }
        if self.patch_id == self.bundle_id || self.patch_id == self.base_id {
            return e("patch-id is the bundle-id or the base-id");
        }
        if !(MIN_WINDOW_LOG..=MAX_WINDOW_LOG).contains(&self.window_log) {
            return Err(DeltaError(format!(
                "window-log {} is outside {MIN_WINDOW_LOG}..={MAX_WINDOW_LOG}",
                self.window_log
            )));
        }
        Ok(())
    }

    /// What the station's transport decision reads.
    #[must_use]
    pub fn facts(&self) -> DeltaFacts {
        DeltaFacts {
            bundle_id: self.bundle_id,
            bundle_size: self.bundle_size,
            base_id: self.base_id,
            base_size: self.base_size,
            patch_id: self.patch_id,
            patch_size: self.patch_size,
            window_log: self.window_log,
        }
    }

    /// Checks the patch's manifest against this description: the patch's id and size, and the
    /// offered bundle's version and compatible (the station compares those with the offer).
    pub fn matches_patch_manifest(&self, m: &BundleManifest) -> Result<(), DeltaError> {
        manifest_names(
            m,
            self.patch_id,
            self.patch_size,
            "the patch manifest's",
            "patch",
        )
    }
}

/// The formats a compressed bundle may travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressedFormat {
    /// One zstd frame with no reference (`zstd --long`), decoded with a window of
    /// `2^window-log` bytes.
    Zstd,
}

/// The signed description of a bundle's compressed transfer (envelope kind `compressed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CompressedDescription {
    /// The bundle the file decodes to: the offer's `bundle-id`.
    pub bundle_id: BundleId,
    /// Its size: the offer's `bundle-size`.
    pub bundle_size: u64,
    /// SHA-256 of the compressed file: its manifest and chunks are published under this id.
    pub file_id: BundleId,
    pub file_size: u64,
    pub format: CompressedFormat,
    /// log2 of the decoder window the file's frame declares.
    pub window_log: u8,
}

impl CompressedDescription {
    /// Checks the description against itself and `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), DeltaError> {
        for (what, size) in [
            ("bundle-size", self.bundle_size),
            ("file-size", self.file_size),
        ] {
            if size == 0 || size > limits.max_bundle_bytes {
                return Err(DeltaError(format!(
                    "{what} {size} is outside 1..={}",
                    limits.max_bundle_bytes
                )));
            }
        }
        if self.file_id == self.bundle_id {
            return Err(DeltaError("file-id is the bundle-id".into()));
        }
        if !(MIN_WINDOW_LOG..=MAX_WINDOW_LOG).contains(&self.window_log) {
            return Err(DeltaError(format!(
                "window-log {} is outside {MIN_WINDOW_LOG}..={MAX_WINDOW_LOG}",
                self.window_log
            )));
        }
        Ok(())
    }

    /// What the station's transport decision reads.
    #[must_use]
    pub fn facts(&self) -> CompressedFacts {
        CompressedFacts {
            bundle_id: self.bundle_id,
            bundle_size: self.bundle_size,
            file_id: self.file_id,
            file_size: self.file_size,
            window_log: self.window_log,
        }
    }

    /// Checks the compressed file's manifest against this description: its id and size.
    pub fn matches_file_manifest(&self, m: &BundleManifest) -> Result<(), DeltaError> {
        manifest_names(
            m,
            self.file_id,
            self.file_size,
            "the compressed file's manifest",
            "file",
        )
    }
}

/// The one check of a fetched file's manifest against what its description says: `whose`
/// names the manifest, `field` the description's id/size fields (`<field>-id`, `<field>-size`).
fn manifest_names(
    m: &BundleManifest,
    id: BundleId,
    size: u64,
    whose: &str,
    field: &str,
) -> Result<(), DeltaError> {
    if m.bundle_id != id {
        return Err(DeltaError(format!(
            "{whose} bundle-id is not the {field}-id"
        )));
    }
    if m.size != size {
        return Err(DeltaError(format!(
            "{whose} size {} is not the {field}-size {size}",
            m.size
        )));
    }
    Ok(())
}

/// `fleet/v1/bundles/{bundle-id}/compressed`: the compressed transfer of `bundle`.
#[must_use]
pub fn compressed_topic(bundle: &BundleId) -> String {
    format!("{PREFIX}/bundles/{bundle}/compressed")
}

/// The bundle a compressed topic names, `None` for any other topic.
#[must_use]
pub fn parse_compressed_topic(topic: &str) -> Option<BundleId> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix("/bundles/")?;
    let bundle = rest.strip_suffix("/compressed")?;
    let bundle: BundleId = bundle.parse().ok()?;
    (compressed_topic(&bundle) == topic).then_some(bundle)
}

/// log2 of the window a zstd frame declares (`window-log` of a description is this of its
/// patch; the station checks it again before decoding), `None` when `frame` does not start with a zstd
/// frame header. A single-segment frame's window is its content size.
#[must_use]
pub fn frame_window_log(frame: &[u8]) -> Option<u32> {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    if frame.len() < 6 || frame[..4] != MAGIC {
        return None;
    }
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let w = frame[5];
        let exponent = u32::from(w >> 3) + 10;
        // The mantissa adds up to 7/8 of the base: the window is under the next power of two.
        let log = if w & 7 == 0 { exponent } else { exponent + 1 };
        return Some(log);
    }
    let dict_id_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let fcs_len = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dict_id_len;
    let bytes = frame.get(at..at + fcs_len)?;
    let mut size: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        size |= u64::from(*b) << (8 * i);
    }
    if fcs_len == 2 {
        size += 256;
    }
    Some(64 - size.max(1).leading_zeros() - u32::from(size.is_power_of_two()))
}

/// `fleet/v1/bundles/{bundle-id}/deltas/{base-id}`: the delta from `base` to `bundle`.
#[must_use]
pub fn delta_topic(bundle: &BundleId, base: &BundleId) -> String {
    format!("{PREFIX}/bundles/{bundle}/deltas/{base}")
}

/// The bundle and base a delta topic names, `None` for any other topic.
#[must_use]
pub fn parse_delta_topic(topic: &str) -> Option<(BundleId, BundleId)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix("/bundles/")?;
    let (bundle, rest) = rest.split_once('/')?;
    let base = rest.strip_prefix("deltas/")?;
    let bundle: BundleId = bundle.parse().ok()?;
    let base: BundleId = base.parse().ok()?;
    (delta_topic(&bundle, &base) == topic).then_some((bundle, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> BundleId {
        BundleId::from_bytes([b; 32])
    }

    fn good() -> DeltaDescription {
        DeltaDescription {
            bundle_id: id(2),
            bundle_size: 1000,
            base_id: id(1),
            base_size: 900,
            patch_id: id(3),
            patch_size: 50,
            format: DeltaFormat::ZstdPatchFrom,
            window_log: 27,
        }
    }

    #[test]
    fn a_description_that_contradicts_itself_is_refused() {
        let l = Limits::DEFAULT;
        assert_eq!(good().validate(&l), Ok(()));
        let bad = [
            DeltaDescription {
                base_id: id(2),
                ..good()
            },
            DeltaDescription {
                patch_id: id(1),
                ..good()
            },
            DeltaDescription {
                patch_size: 0,
                ..good()
            },
            DeltaDescription {
                bundle_size: l.max_bundle_bytes + 1,
                ..good()
            },
            DeltaDescription {
                window_log: 32,
                ..good()
            },
            DeltaDescription {
                window_log: 9,
                ..good()
            },
        ];
        for d in bad {
            assert!(d.validate(&l).is_err(), "{d:?}");
        }
    }

    #[test]
    fn delta_topics_round_trip_and_nothing_else_parses() {
        let t = delta_topic(&id(2), &id(1));
        assert_eq!(parse_delta_topic(&t), Some((id(2), id(1))));
        for other in [
            format!("fleet/v1/bundles/{}/manifest", id(2)),
            format!("fleet/v1/bundles/{}/deltas/{}/x", id(2), id(1)),
            format!("fleet/v1/bundles/{}/deltas/+", id(2)),
            format!("fleet/v2/bundles/{}/deltas/{}", id(2), id(1)),
            t.to_uppercase(),
        ] {
            assert_eq!(parse_delta_topic(&other), None, "{other}");
        }
    }

    fn good_compressed() -> CompressedDescription {
        CompressedDescription {
            bundle_id: id(2),
            bundle_size: 1000,
            file_id: id(4),
            file_size: 700,
            format: CompressedFormat::Zstd,
            window_log: 10,
        }
    }

    #[test]
    fn a_compressed_description_that_contradicts_itself_is_refused() {
        let l = Limits::DEFAULT;
        assert_eq!(good_compressed().validate(&l), Ok(()));
        let bad = [
            CompressedDescription {
                file_id: id(2),
                ..good_compressed()
            },
            CompressedDescription {
                file_size: 0,
                ..good_compressed()
            },
            CompressedDescription {
                bundle_size: l.max_bundle_bytes + 1,
                ..good_compressed()
            },
            CompressedDescription {
                window_log: 32,
                ..good_compressed()
            },
        ];
        for d in bad {
            assert!(d.validate(&l).is_err(), "{d:?}");
        }
        let mut v = serde_json::to_value(good_compressed()).expect("serialize");
        assert_eq!(v["format"], "zstd");
        v["base-id"] = serde_json::json!(id(1).to_string());
        assert!(serde_json::from_value::<CompressedDescription>(v).is_err());
    }

    #[test]
    fn compressed_topics_round_trip_and_nothing_else_parses() {
        let t = compressed_topic(&id(2));
        assert_eq!(parse_compressed_topic(&t), Some(id(2)));
        for other in [
            format!("fleet/v1/bundles/{}/manifest", id(2)),
            format!("fleet/v1/bundles/{}/compressed/x", id(2)),
            "fleet/v1/bundles/+/compressed".to_owned(),
            delta_topic(&id(2), &id(1)),
            t.to_uppercase(),
        ] {
            assert_eq!(parse_compressed_topic(&other), None, "{other}");
        }
    }

    #[test]
    fn descriptions_refuse_unknown_keys() {
        let mut v = serde_json::to_value(good()).expect("serialize");
        assert_eq!(v["format"], "zstd-patch-from");
        v["colour"] = serde_json::json!(1);
        assert!(serde_json::from_value::<DeltaDescription>(v).is_err());
    }
}
