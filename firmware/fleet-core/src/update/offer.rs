//! Offers and their admission: [`decide_offer`] is the pure rule set a station applies to every
//! offer before it downloads a single byte.
//!
//! Rules, in the order they are checked (the first failing rule is the reported reason):
//! 1. the envelope was signed by a trusted key ([`SignatureVerdict::Trusted`]), not a revoked
//!    one;
//! 2. the offer is well formed (non-empty bundle, `expires-at` after `issued-at`);
//! 3. it targets this station: its device id, or one of its groups;
//! 4. its `compatible` equals the station's;
//! 5. its `sequence` is above the last accepted one (replay protection; never judged by time);
//! 6. it has not expired, **when wall-clock time is trusted**. With untrusted time expiry cannot
//!    be judged and is skipped (ADR 0004: a station with a dead RTC must stay updatable; the
//!    sequence number protects against replay, and operators revoke with a newer offer). The
//!    acceptance records `expiry_checked = false` so the report shows it;
//! 7. its version is above the installed one, unless the signed offer says `downgrade: allow`;
//! 8. the bundle fits the station's size limit;
//! 9. the station is in the rollout wave ([`crate::update::wave`]).
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, GroupId, UpdateId, Version};
use crate::time::Now;
use crate::update::digest::{BundleId, KeyId, Sha256Digest};
use crate::update::wave;
pub use crate::update::wave::{PercentError, RolloutPercent};

/// Longest `compatible` string accepted anywhere, in bytes.
pub const MAX_COMPATIBLE_LEN: usize = 64;

/// Whom an offer is for. Signed, so it is the authority (the topic an offer arrives on is not).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Target {
    /// One station: `{"device": "stn-0042"}`.
    Device(DeviceId),
    /// Every member of a group: `{"group": "canary"}`.
    Group(GroupId),
}

/// Whether the signer allows installing a version that is not above the installed one. The
/// safe value is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Downgrade {
    /// Only a strictly higher version is accepted.
    #[default]
    Refuse,
    /// Any version is accepted (rollback to an older release, or reinstalling the same one).
    Allow,
}

/// The signed payload of an offer (the envelope kind `offer`). JSON, kebab-case keys, unknown
/// keys refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Offer {
    /// Names this update; the wave hash and every report use it. Raising the rollout percentage
    /// means re-signing the same `update-id` with a higher `sequence`.
    pub update_id: UpdateId,
    /// Strictly increasing across every offer the operators' keys sign (device and group
    /// offers share one counter). A station accepts only a sequence above the last it accepted.
    pub sequence: u64,
    /// SHA-256 of the bundle file (its manifest and chunks live under this id).
    pub bundle_id: BundleId,
    /// Size of the bundle file in bytes.
    pub bundle_size: u64,
    /// Must equal the station's `compatible` (e.g. `fleet-rpi5`).
    pub compatible: String,
    /// Version of the release in the bundle.
    pub version: Version,
    /// Whether a version not above the installed one may be installed.
    #[serde(default)]
    pub downgrade: Downgrade,
    /// The device or group this offer is for.
    pub target: Target,
    /// Share of the targeted stations that take the update (see [`crate::update::wave`]).
    pub rollout_percent: RolloutPercent,
    /// Unix seconds when the offer was signed (informational; never judged).
    pub issued_at: i64,
    /// Unix seconds after which a station with trusted time refuses the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The RAUC manifest hash the installer must find in the bundle, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_hash: Option<Sha256Digest>,
}

/// Who a station is, for offer admission. Comes from the station's configuration (persisted
/// in the journal, so unknown fields are ignored: see [`crate::update::State`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Station {
    pub device_id: DeviceId,
    /// Groups this station belongs to (it subscribes to their offer topics).
    pub groups: Vec<GroupId>,
    /// Hardware/image compatibility string, e.g. `fleet-rpi5` or `fleet-qemuarm64`.
    pub compatible: String,
}

impl Station {
    /// True when `target` names this station or one of its groups.
    #[must_use]
    pub fn is_targeted_by(&self, target: &Target) -> bool {
        match target {
            Target::Device(d) => *d == self.device_id,
            Target::Group(g) => self.groups.contains(g),
        }
    }
}

/// What `fleet-proto` concluded about the envelope an offer came in. The core performs no
/// cryptography: the shell verifies with the trusted key set and passes the verdict here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVerdict {
    /// The signature verified against this trusted key.
    Trusted { key_id: KeyId },
    /// The envelope names a key that is not in the trusted set.
    UnknownKey { key_id: KeyId },
    /// The envelope names a key that was revoked (`crate::trust`).
    Revoked { key_id: KeyId },
    /// The signature did not verify.
    Invalid,
}

/// Why a station refused an offer (or a message that should have been one). Every refusal names
/// one; reports carry it as `{"code": "...", ...}`. More codes will come (halts, pins, key
/// rotation): match with a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum RejectReason {
    // --- the envelope (decided by fleet-proto before the payload is read) ---
    /// Signed with a key the station does not trust.
    UnknownKey { key_id: KeyId },
    /// Signed with a key that was revoked (compromised): see `crate::trust`.
    RevokedKey { key_id: KeyId },
    /// The signature does not verify (tampered payload or signature, wrong kind).
    BadSignature,
    /// The message is larger than the limit for its topic.
    TooLarge { size: u64, limit: u64 },
    /// The envelope or its payload could not be read (bad JSON, base64, missing or unknown
    /// fields, wrong envelope version or kind). `detail` is bounded by the shell.
    Malformed { detail: String },
    // --- the offer rules ---
    /// The offer's fields contradict each other (empty bundle, expiry before issue).
    InvalidOffer { detail: String },
    /// The offer targets another device or a group this station is not in.
    NotForThisStation,
    /// The offer's `compatible` is not this station's.
    Incompatible { offered: String, expected: String },
    /// The sequence is not above the last accepted one: a replay or an out-of-order offer.
    Replayed { sequence: u64, last_accepted: u64 },
    /// Expired by the trusted wall clock.
    Expired { expires_at: i64, now: i64 },
    /// The version is not above the installed one and the offer does not allow a downgrade.
    NotNewer {
        offered: Version,
        installed: Version,
    },
    /// The bundle is larger than this station may download.
    BundleTooLarge { size: u64, limit: u64 },
    /// The station's wave bucket is not below the rollout percentage (yet).
    NotInWave { bucket: u8, percent: u8 },
    /// An update is past the point where it can be abandoned; the shell re-offers the retained
    /// offer when the engine is idle again.
    Busy {
        phase: crate::update::phase::PhaseName,
    },
    // --- operator controls (see `crate::rollout::control`) ---
    /// An emergency freeze is in force: no new install starts.
    Frozen,
    /// The rollout of this update was halted.
    Halted { update_id: UpdateId },
    /// The station (or its group) is pinned below the offered version.
    Pinned { pin: Version, offered: Version },
}

/// What admission needs to know about the station beyond the offer.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionContext<'a> {
    pub station: &'a Station,
    /// The version of the committed (running, good) slot.
    pub installed: &'a Version,
    /// The highest sequence this station ever accepted, `None` before the first offer.
    pub last_sequence: Option<u64>,
    /// The largest bundle this station may download, in bytes.
    pub max_bundle_bytes: u64,
}

/// An admitted offer, with what was learned while admitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The trusted key that signed the offer.
    pub key_id: KeyId,
    /// False when time was untrusted and expiry could not be judged.
    pub expiry_checked: bool,
    /// This station's wave bucket for the update, 0..100.
    pub bucket: u8,
}

/// Applies the admission rules (see the module documentation) to one offer.
pub fn decide_offer(
    ctx: &AdmissionContext<'_>,
    offer: &Offer,
    verdict: SignatureVerdict,
    now: Now,
) -> Result<Admitted, RejectReason> {
    let key_id = match verdict {
        SignatureVerdict::Trusted { key_id } => key_id,
        SignatureVerdict::UnknownKey { key_id } => return Err(RejectReason::UnknownKey { key_id }),
        SignatureVerdict::Revoked { key_id } => return Err(RejectReason::RevokedKey { key_id }),
        SignatureVerdict::Invalid => return Err(RejectReason::BadSignature),
    };
    if offer.bundle_size == 0 {
        return Err(RejectReason::InvalidOffer {
            detail: "bundle-size is 0".into(),
        });
    }
    if let Some(exp) = offer.expires_at
        && exp <= offer.issued_at
    {
        return Err(RejectReason::InvalidOffer {
            detail: "expires-at is not after issued-at".into(),
        });
    }
    if !ctx.station.is_targeted_by(&offer.target) {
        return Err(RejectReason::NotForThisStation);
    }
    if offer.compatible != ctx.station.compatible {
        return Err(RejectReason::Incompatible {
            offered: truncate(&offer.compatible, MAX_COMPATIBLE_LEN),
            expected: ctx.station.compatible.clone(),
        });
    }
    if let Some(last) = ctx.last_sequence
        && offer.sequence <= last
    {
        return Err(RejectReason::Replayed {
            sequence: offer.sequence,
            last_accepted: last,
        });
    }
    let expiry_checked = match (offer.expires_at, now.wall_unix_s) {
        (Some(exp), Some(wall)) if wall >= exp => {
            return Err(RejectReason::Expired {
                expires_at: exp,
                now: wall,
            });
        }
        (_, Some(_)) => true,
        (None, None) => true,
        (Some(_), None) => false,
    };
    if offer.downgrade == Downgrade::Refuse && offer.version <= *ctx.installed {
        return Err(RejectReason::NotNewer {
            offered: offer.version.clone(),
            installed: ctx.installed.clone(),
        });
    }
    if offer.bundle_size > ctx.max_bundle_bytes {
        return Err(RejectReason::BundleTooLarge {
            size: offer.bundle_size,
            limit: ctx.max_bundle_bytes,
        });
    }
    let bucket = wave::bucket(&ctx.station.device_id, &offer.update_id);
    if !wave::is_member(bucket, offer.rollout_percent) {
        return Err(RejectReason::NotInWave {
            bucket,
            percent: offer.rollout_percent.get(),
        });
    }
    Ok(Admitted {
        key_id,
        expiry_checked,
        bucket,
    })
}

/// Cuts `s` to at most `max` bytes on a character boundary (reports stay bounded).
#[must_use]
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
