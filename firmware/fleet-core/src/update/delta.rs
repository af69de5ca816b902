//! Whether a station fetches the offered bundle as a delta from the bundle it keeps, as the
//! zstd-compressed bundle, or as the raw bundle (ADR 0012): one pure rule for the daemon and
//! the simulator. Delta before compressed before raw; each step down says why.
//!
//! A delta is a patch from a base bundle (named by its SHA-256) to the offered bundle, published
//! by the operator next to the full bundle. The station takes it only when the base it keeps is
//! exactly that base (by hash and size) and the patch's decoding window fits its memory budget;
//! otherwise it fetches the full bundle and says why ([`FullReason`]). Whatever the transport,
//! the rebuilt or received file is installed only when its SHA-256 is the offer's bundle id
//! ([`judge_result`]).
use serde::{Deserialize, Serialize};

use crate::update::digest::BundleId;

/// The bundle a station keeps as the base of deltas (its committed bundle), by hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptBase {
    pub id: BundleId,
    pub size: u64,
}

/// A delta the operator published for the offered bundle, as the shell read it from its
/// signed description (`fleet_proto::delta::DeltaDescription`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaFacts {
    /// The bundle the patch rebuilds: must be the offer's.
    pub bundle_id: BundleId,
    pub bundle_size: u64,
    /// The bundle the patch applies to.
    pub base_id: BundleId,
    pub base_size: u64,
    /// The patch file (fetched through the chunk transport under this id).
    pub patch_id: BundleId,
    pub patch_size: u64,
    /// log2 of the decoder window the patch needs.
    pub window_log: u8,
}

impl DeltaFacts {
    /// Bytes of memory the decoder needs for its window: `2^window-log` (saturating).
    #[must_use]
    pub fn window_bytes(&self) -> u64 {
        1u64.checked_shl(u32::from(self.window_log))
            .unwrap_or(u64::MAX)
    }
}

/// The zstd-compressed bundle the operator published for the offered bundle, as the shell
/// read it from its signed description (`fleet_proto::delta::CompressedDescription`): a
/// delta with an empty base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedFacts {
    /// The bundle the file decodes to: must be the offer's.
    pub bundle_id: BundleId,
    pub bundle_size: u64,
    /// The compressed file (fetched through the chunk transport under this id).
    pub file_id: BundleId,
    pub file_size: u64,
    /// log2 of the decoder window the file declares.
    pub window_log: u8,
}

impl CompressedFacts {
    /// Bytes of the window the file declares: `2^window-log` (saturating).
    #[must_use]
    pub fn window_bytes(&self) -> u64 {
        1u64.checked_shl(u32::from(self.window_log))
            .unwrap_or(u64::MAX)
    }
}

/// How the offered bundle travels to this station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    tag = "transport"
)]
pub enum Transport {
    /// The patch `patch_id` from the kept base `base_id`.
    Delta {
        base_id: BundleId,
        patch_id: BundleId,
        patch_size: u64,
    },
    /// The whole bundle zstd-compressed (the file `file_id`), decoded on the station; `reason`
    /// says why no delta.
    Compressed {
        file_id: BundleId,
        file_size: u64,
        reason: FullReason,
    },
    /// The whole bundle as it is, for `reason`.
    Full { reason: FullReason },
}

/// How a bundle reaches the station, as its reports say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryKind {
    /// The whole bundle, in the chunk transport.
    Full,
    /// A patch from the kept base, rebuilt on the station.
    Delta,
    /// The whole bundle zstd-compressed, decoded on the station.
    Compressed,
}

impl Transport {
    /// `full`, `compressed` or `delta`.
    #[must_use]
    pub fn kind(&self) -> DeliveryKind {
        match self {
            Transport::Delta { .. } => DeliveryKind::Delta,
            Transport::Compressed { .. } => DeliveryKind::Compressed,
            Transport::Full { .. } => DeliveryKind::Full,
        }
    }

    /// Why no delta (`None` for a delta).
    #[must_use]
    pub fn reason(&self) -> Option<&FullReason> {
        match self {
            Transport::Delta { .. } => None,
            Transport::Compressed { reason, .. } | Transport::Full { reason } => Some(reason),
        }
    }
}

/// Why a station fetches the whole bundle (compressed or raw): why no delta, or for the raw
/// bundle after a compressed one was published, why not that (`compressed-failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    tag = "code"
)]
pub enum FullReason {
    /// The station keeps no base bundle (fresh flash, factory reset, kept bundle missing).
    NoBase,
    /// The station's kept base is damaged: its bytes no longer hash to the id it was kept
    /// under, or its file is gone or unreadable. The station drops it.
    BaseCorrupt { detail: String },
    /// The operator published no delta from the station's base for this bundle.
    NoDelta,
    /// The published delta applies to another base than the one the station keeps, or it
    /// rebuilds another bundle than the offered one.
    BaseMismatch { detail: String },
    /// The patch needs a decoder window above the station's memory budget.
    WindowTooLarge {
        window_bytes: u64,
        budget_bytes: u64,
    },
    /// A delta of this update was tried and failed (a hostile or broken patch, a rebuilt file
    /// that is not the offered bundle, an unreadable base).
    DeltaFailed { detail: String },
    /// The published compressed bundle was refused (its description does not describe the
    /// offered bundle, or its window is above the budget) or tried and failed (a broken file,
    /// a decoded file that is not the offered bundle): the raw bundle travels.
    CompressedFailed { detail: String },
}

impl FullReason {
    /// The reason's code as reports write it.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            FullReason::NoBase => "no-base",
            FullReason::BaseCorrupt { .. } => "base-corrupt",
            FullReason::NoDelta => "no-delta",
            FullReason::BaseMismatch { .. } => "base-mismatch",
            FullReason::WindowTooLarge { .. } => "window-too-large",
            FullReason::DeltaFailed { .. } => "delta-failed",
            FullReason::CompressedFailed { .. } => "compressed-failed",
        }
    }
}

/// What the station knows when it chooses the transport of one offered bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportContext<'a> {
    /// The offer's bundle id and size.
    pub bundle_id: BundleId,
    pub bundle_size: u64,
    /// The base the station keeps, if any.
    pub kept: Option<KeptBase>,
    /// Why the kept base cannot be used, when the shell found it damaged (its hash or its
    /// file): then it counts as no base, with this reason.
    pub base_fault: Option<&'a str>,
    /// The delta published for this bundle and the station's base, if any.
    pub delta: Option<DeltaFacts>,
    /// The memory the station allows the patch decoder's window.
    pub budget_bytes: u64,
    /// Why the last delta attempt of this update failed, if one did: never tried twice.
    pub failed: Option<&'a str>,
    /// The compressed bundle published for this bundle, if any.
    pub compressed: Option<CompressedFacts>,
    /// Why the compressed bundle of this update failed, or why its published description was
    /// refused, if so: never tried (again).
    pub compressed_failed: Option<&'a str>,
}

/// Chooses how the offered bundle travels: a delta when [`delta_or_reason`] allows one, else
/// the compressed bundle when one is published for exactly the offered bundle (id and size),
/// under its own id, within the window budget, and not failed in this update; else the raw
/// bundle. The raw bundle's reason is `compressed-failed` when a compressed bundle was
/// published but refused or failed, and otherwise why no delta.
#[must_use]
pub fn decide_transport(cx: &TransportContext<'_>) -> Transport {
    let reason = match delta_or_reason(cx) {
        Ok(delta) => return delta,
        Err(reason) => reason,
    };
    let refused = |detail: String| Transport::Full {
        reason: FullReason::CompressedFailed { detail },
    };
    if let Some(detail) = cx.compressed_failed {
        return refused(detail.to_owned());
    }
    let Some(c) = cx.compressed else {
        return Transport::Full { reason };
    };
    if c.bundle_id != cx.bundle_id || c.bundle_size != cx.bundle_size {
        return refused(
            "the compressed file decodes to another bundle than the offered one".into(),
        );
    }
    if c.file_id == cx.bundle_id || c.file_size == 0 {
        return refused("the compressed file is empty or named as the bundle".into());
    }
    if c.window_bytes() > cx.budget_bytes {
        return refused(format!(
            "its window of {} bytes is above the budget of {}",
            c.window_bytes(),
            cx.budget_bytes
        ));
    }
    Transport::Compressed {
        file_id: c.file_id,
        file_size: c.file_size,
        reason,
    }
}

/// The delta rules, first that fails gives the reason:
/// no earlier delta failure of this update (`delta-failed`); an undamaged kept base
/// (`base-corrupt`); a kept base (`no-base`); a
/// published delta (`no-delta`); the delta rebuilds the offered bundle, id and size, from the
/// kept base, id and size, and is not the bundle itself (`base-mismatch`); its window fits the
/// budget (`window-too-large`).
fn delta_or_reason(cx: &TransportContext<'_>) -> Result<Transport, FullReason> {
    if let Some(detail) = cx.failed {
        return Err(FullReason::DeltaFailed {
            detail: detail.to_owned(),
        });
    }
    if let Some(detail) = cx.base_fault {
        return Err(FullReason::BaseCorrupt {
            detail: detail.to_owned(),
        });
    }
    let Some(kept) = cx.kept else {
        return Err(FullReason::NoBase);
    };
    let Some(delta) = cx.delta else {
        return Err(FullReason::NoDelta);
    };
    let mismatch = |detail: &str| {
        Err(FullReason::BaseMismatch {
            detail: detail.to_owned(),
        })
    };
    if delta.bundle_id != cx.bundle_id || delta.bundle_size != cx.bundle_size {
        return mismatch("the delta rebuilds another bundle than the offered one");
    }
    if delta.base_id != kept.id || delta.base_size != kept.size {
        return mismatch("the delta applies to another base than the kept bundle");
    }
    if kept.id == cx.bundle_id {
        return mismatch("the kept bundle is the offered bundle");
    }
    if delta.patch_size == 0 {
        return mismatch("the patch is empty");
    }
    if delta.window_bytes() > cx.budget_bytes {
        return Err(FullReason::WindowTooLarge {
            window_bytes: delta.window_bytes(),
            budget_bytes: cx.budget_bytes,
        });
    }
    Ok(Transport::Delta {
        base_id: delta.base_id,
        patch_id: delta.patch_id,
        patch_size: delta.patch_size,
    })
}

/// The verdict on a file the station rebuilt from a patch or received whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultVerdict {
    /// Its SHA-256 and size are the offer's: it may go on to the installer (which checks the
    /// bundle's signature).
    Install,
    /// Anything else: never installed.
    Refuse { detail: String },
}

/// Judges a rebuilt or received file by its SHA-256 and size against the offer's.
#[must_use]
pub fn judge_result(
    bundle_id: BundleId,
    bundle_size: u64,
    actual_id: BundleId,
    actual_size: u64,
) -> ResultVerdict {
    if actual_size != bundle_size {
        return ResultVerdict::Refuse {
            detail: format!("rebuilt {actual_size} bytes, the offer says {bundle_size}"),
        };
    }
    if actual_id != bundle_id {
        return ResultVerdict::Refuse {
            detail: format!("rebuilt file has sha256 {actual_id}, the offer says {bundle_id}"),
        };
    }
    ResultVerdict::Install
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    fn id(b: u8) -> BundleId {
        BundleId::from_bytes([b; 32])
    }

    fn delta() -> DeltaFacts {
        DeltaFacts {
            bundle_id: id(2),
            bundle_size: 300 * MIB,
            base_id: id(1),
            base_size: 290 * MIB,
            patch_id: id(3),
            patch_size: 5 * MIB,
            window_log: 27,
        }
    }

    fn cx(kept: Option<KeptBase>, delta: Option<DeltaFacts>) -> TransportContext<'static> {
        TransportContext {
            bundle_id: id(2),
            bundle_size: 300 * MIB,
            kept,
            delta,
            budget_bytes: 256 * MIB,
            failed: None,
            base_fault: None,
            compressed: None,
            compressed_failed: None,
        }
    }

    fn kept() -> Option<KeptBase> {
        Some(KeptBase {
            id: id(1),
            size: 290 * MIB,
        })
    }

    #[test]
    fn each_rule_names_its_reason_first_failure_first() {
        let code = |t: Transport| match t {
            Transport::Full { reason } => reason.code(),
            Transport::Compressed { .. } => "compressed",
            Transport::Delta { .. } => "delta",
        };
        let other_base = DeltaFacts {
            base_id: id(9),
            ..delta()
        };
        let other_result = DeltaFacts {
            bundle_id: id(9),
            ..delta()
        };
        let other_size = DeltaFacts {
            bundle_size: 1,
            ..delta()
        };
        let big = DeltaFacts {
            window_log: 29,
            ..delta()
        };
        let table: Vec<(TransportContext<'static>, &str)> = vec![
            (cx(kept(), Some(delta())), "delta"),
            (cx(None, Some(delta())), "no-base"),
            (cx(kept(), None), "no-delta"),
            (cx(kept(), Some(other_base)), "base-mismatch"),
            (cx(kept(), Some(other_result)), "base-mismatch"),
            (cx(kept(), Some(other_size)), "base-mismatch"),
            (
                cx(Some(KeptBase { id: id(1), size: 1 }), Some(delta())),
                "base-mismatch",
            ),
            (cx(kept(), Some(big)), "window-too-large"),
            (
                TransportContext {
                    failed: Some("patch truncated"),
                    ..cx(kept(), Some(delta()))
                },
                "delta-failed",
            ),
            (cx(None, None), "no-base"),
            (
                TransportContext {
                    base_fault: Some("sha256 differs"),
                    ..cx(kept(), Some(delta()))
                },
                "base-corrupt",
            ),
            (
                TransportContext {
                    base_fault: Some("sha256 differs"),
                    failed: Some("patch truncated"),
                    ..cx(kept(), Some(delta()))
                },
                "delta-failed",
            ),
        ];
        for (c, want) in table {
            assert_eq!(code(decide_transport(&c)), want, "{c:?}");
        }
    }

    fn compressed() -> CompressedFacts {
        CompressedFacts {
            bundle_id: id(2),
            bundle_size: 300 * MIB,
            file_id: id(4),
            file_size: 200 * MIB,
            window_log: 28,
        }
    }

    #[test]
    fn a_delta_comes_before_the_compressed_bundle_and_that_before_the_raw_one() {
        let with = |c: TransportContext<'static>, failed: Option<&'static str>| TransportContext {
            compressed: Some(compressed()),
            compressed_failed: failed,
            ..c
        };
        let show = |t: Transport| match t {
            Transport::Delta { .. } => "delta".to_owned(),
            Transport::Compressed {
                reason, file_id, ..
            } => {
                assert_eq!(file_id, id(4));
                format!("compressed {}", reason.code())
            }
            Transport::Full { reason } => format!("full {}", reason.code()),
        };
        let other = |f: fn(&mut CompressedFacts)| {
            let mut c = compressed();
            f(&mut c);
            TransportContext {
                compressed: Some(c),
                ..cx(None, None)
            }
        };
        let table: Vec<(TransportContext<'static>, &str)> = vec![
            (with(cx(kept(), Some(delta())), None), "delta"),
            (with(cx(None, None), None), "compressed no-base"),
            (with(cx(kept(), None), None), "compressed no-delta"),
            (
                with(
                    TransportContext {
                        failed: Some("patch truncated"),
                        ..cx(kept(), Some(delta()))
                    },
                    None,
                ),
                "compressed delta-failed",
            ),
            (
                with(cx(None, None), Some("broken")),
                "full compressed-failed",
            ),
            (cx(None, None), "full no-base"),
            (other(|c| c.bundle_id = id(9)), "full compressed-failed"),
            (other(|c| c.bundle_size = 1), "full compressed-failed"),
            (other(|c| c.file_id = id(2)), "full compressed-failed"),
            (other(|c| c.file_size = 0), "full compressed-failed"),
            (other(|c| c.window_log = 29), "full compressed-failed"),
        ];
        for (c, want) in table {
            assert_eq!(show(decide_transport(&c)), want, "{c:?}");
        }
    }

    #[test]
    fn reasons_serialize_with_kebab_case_fields() {
        let t = Transport::Full {
            reason: FullReason::WindowTooLarge {
                window_bytes: 2,
                budget_bytes: 1,
            },
        };
        let v = serde_json::to_value(&t).expect("serialize");
        assert_eq!(v["transport"], "full");
        assert_eq!(v["reason"]["code"], "window-too-large");
        assert_eq!(v["reason"]["window-bytes"], 2);
        let d = Transport::Delta {
            base_id: id(1),
            patch_id: id(2),
            patch_size: 3,
        };
        assert_eq!(
            serde_json::to_value(&d).expect("serialize")["patch-size"],
            3
        );
    }

    #[test]
    fn a_window_exactly_at_the_budget_fits() {
        let d = DeltaFacts {
            window_log: 28,
            ..delta()
        };
        assert!(matches!(
            decide_transport(&cx(kept(), Some(d))),
            Transport::Delta { .. }
        ));
        assert_eq!(
            DeltaFacts {
                window_log: 200,
                ..delta()
            }
            .window_bytes(),
            u64::MAX
        );
    }

    #[test]
    fn only_the_offered_hash_and_size_are_installed() {
        assert_eq!(judge_result(id(2), 5, id(2), 5), ResultVerdict::Install);
        assert!(matches!(
            judge_result(id(2), 5, id(3), 5),
            ResultVerdict::Refuse { .. }
        ));
        assert!(matches!(
            judge_result(id(2), 5, id(2), 6),
            ResultVerdict::Refuse { .. }
        ));
    }

    fn any_id() -> impl Strategy<Value = BundleId> {
        (0u8..4).prop_map(id)
    }

    prop_compose! {
        fn any_delta()(bundle_id in any_id(), bundle_size in 1u64..4, base_id in any_id(),
                       base_size in 1u64..4, patch_id in any_id(), patch_size in 0u64..3,
                       window_log in 0u8..70) -> DeltaFacts {
            DeltaFacts { bundle_id, bundle_size, base_id, base_size, patch_id, patch_size, window_log }
        }
    }

    prop_compose! {
        fn any_compressed()(bundle_id in any_id(), bundle_size in 1u64..4, file_id in any_id(),
                            file_size in 0u64..3, window_log in 0u8..70) -> CompressedFacts {
            CompressedFacts { bundle_id, bundle_size, file_id, file_size, window_log }
        }
    }

    proptest! {
        /// A delta is chosen only from the exact kept base to the exact offered bundle, within
        /// the budget; and whatever is chosen, a file is installed only when it is the
        /// offered bundle by hash and size.
        #[test]
        fn nothing_is_installed_whose_hash_is_not_the_offers(
            offered in any_id(), size in 1u64..4,
            kept in proptest::option::of((any_id(), 1u64..4)),
            delta in proptest::option::of(any_delta()),
            budget_log in 0u32..64, failed in any::<bool>(), fault in any::<bool>(),
            rebuilt in any_id(), rebuilt_size in 1u64..4,
            compressed in proptest::option::of(any_compressed()),
            compressed_failed in any::<bool>(),
        ) {
            let c = TransportContext {
                bundle_id: offered,
                bundle_size: size,
                kept: kept.map(|(id, size)| KeptBase { id, size }),
                delta,
                budget_bytes: 1u64 << budget_log,
                failed: failed.then_some("earlier failure"),
                base_fault: fault.then_some("damaged base"),
                compressed,
                compressed_failed: compressed_failed.then_some("earlier failure"),
            };
            let without_compressed = decide_transport(&TransportContext { compressed: None, ..c });
            match decide_transport(&c) {
                Transport::Delta { base_id, patch_id, .. } => {
                    let d = delta.expect("a delta was published");
                    let k = c.kept.expect("a base is kept");
                    prop_assert!(!failed);
                    prop_assert!(!fault);
                    prop_assert_eq!(base_id, k.id);
                    prop_assert_eq!(d.base_size, k.size);
                    prop_assert_eq!(patch_id, d.patch_id);
                    prop_assert_eq!(d.bundle_id, offered);
                    prop_assert_eq!(d.bundle_size, size);
                    prop_assert!(k.id != offered);
                    prop_assert!(d.window_bytes() <= c.budget_bytes);
                    // A compressed bundle never stands in the way of a delta.
                    prop_assert_eq!(&without_compressed, &decide_transport(&c));
                }
                Transport::Compressed { file_id, file_size, reason } => {
                    let f = compressed.expect("a compressed bundle was published");
                    prop_assert!(!compressed_failed);
                    prop_assert_eq!(f.bundle_id, offered);
                    prop_assert_eq!(f.bundle_size, size);
                    prop_assert_eq!(file_id, f.file_id);
                    prop_assert_eq!(file_size, f.file_size);
                    prop_assert!(file_id != offered && file_size > 0);
                    prop_assert!(f.window_bytes() <= c.budget_bytes);
                    // Only when no delta: with the same reason the raw bundle would give.
                    prop_assert_eq!(without_compressed, Transport::Full { reason });
                }
                Transport::Full { reason } => {
                    // The raw bundle after a compressed one was published says why not that.
                    if compressed.is_some() || compressed_failed {
                        prop_assert_eq!(reason.code(), "compressed-failed");
                    } else {
                        prop_assert_eq!(without_compressed, Transport::Full { reason });
                    }
                }
            }
            let installs = judge_result(offered, size, rebuilt, rebuilt_size) == ResultVerdict::Install;
            prop_assert_eq!(installs, rebuilt == offered && rebuilt_size == size);
        }
    }
}
