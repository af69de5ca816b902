//! What the engine reports: every step becomes a [`Report`] in an [`Action::Report`]
//! (`crate::update::engine::Action`), which the shell publishes as a station event
//! (`fleet-proto`'s `StationEvent`), and an [`Outcome`] kept in the state for the last update.
use serde::{Deserialize, Serialize};

use crate::ids::{UpdateId, Version};
use crate::rollout::Scope;
use crate::slot::Slot;
use crate::trust::RotationReject;
use crate::update::delta::{DeliveryKind, FullReason};
use crate::update::digest::{BundleId, KeyId, Sha256Digest};
use crate::update::offer::RejectReason;

/// Why a download was abandoned. Transient transport trouble (a broker restart, a lost
/// connection) is not a failure: the shell resumes by itself and never reports it here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum DownloadFailure {
    /// `/data` cannot hold the bundle within the space the station may use.
    NoSpace { needed: u64, available: u64 },
    /// The signed manifest is unusable (bad signature, limits exceeded, inconsistent).
    BadManifest { reason: RejectReason },
    /// The manifest disagrees with the offer (size, version, compatible).
    ManifestMismatch { detail: String },
    /// A chunk kept failing its hash after the shell's bounded retries.
    CorruptChunk { index: u32 },
    /// The signed manifest of the offered bundle did not come within the stall timeout
    /// (`[update] stall-timeout-secs`) while the broker connection was up: it was never
    /// published, or was cleared.
    NoManifest { waited_secs: u64 },
    /// Chunks stopped coming: none arrived within the stall timeout while the broker
    /// connection was up. `first_missing` lists up to 8 missing chunk indexes.
    Stalled {
        waited_secs: u64,
        missing_chunks: u64,
        first_missing: Vec<u32>,
    },
    /// A local I/O error the shell could not recover from.
    Io { detail: String },
}

/// Why the assembled bundle failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum VerifyFailure {
    /// The file's SHA-256 is not the bundle id.
    HashMismatch { actual: Sha256Digest },
    /// The file's size is not the offered size.
    SizeMismatch { expected: u64, actual: u64 },
    /// The file could not be read.
    Io { detail: String },
}

/// A boot-control operation, named in failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootOp {
    ArmTrial,
    MarkGood,
    MarkBad,
    Reboot,
}

/// Why a trial was abandoned and the station went (or goes) back to its committed slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum FallbackCause {
    /// The station came back on the committed slot instead of the trial slot (the trial hung,
    /// crashed, reset or never booted) and no attempts were left.
    TrialDidNotBoot { attempts: u8 },
    /// The trial slot booted but failed a health check on its last attempt.
    HealthCheckFailed { check: String, attempts: u8 },
    /// The installer wrote something other than what was offered.
    InstallMismatch { detail: String },
    /// The boot flow refused an operation the update needed.
    BootControl { op: BootOp, detail: String },
}

/// How the last update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "result",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum Outcome {
    /// The new slot runs and is committed.
    Committed {
        update_id: UpdateId,
        slot: Slot,
        version: Version,
    },
    /// The new slot was marked bad; the station runs its previous slot.
    RolledBack {
        update_id: UpdateId,
        bad_slot: Slot,
        cause: FallbackCause,
    },
    /// The update stopped before any slot changed (download, verification or install failed).
    Failed {
        update_id: UpdateId,
        stage: Stage,
        detail: String,
    },
    /// A newer offer replaced this one before it was installed.
    Superseded { update_id: UpdateId, by: UpdateId },
}

/// Where an update failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Download,
    Verify,
    Install,
    Rollback,
}

/// One reported step. Serialized with `"kind"` naming the variant, kebab-case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum Report {
    /// An offer passed admission; the download starts.
    OfferAccepted {
        update_id: UpdateId,
        sequence: u64,
        version: Version,
        key_id: KeyId,
        /// False when time was untrusted and the offer's expiry could not be judged.
        expiry_checked: bool,
    },
    /// A newer offer for the update being downloaded (e.g. a wider wave) was accepted; the
    /// download goes on.
    OfferRenewed {
        update_id: UpdateId,
        sequence: u64,
    },
    /// An offer (or a message on an offer topic) was refused. Nothing changes.
    OfferRejected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        update_id: Option<UpdateId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<u64>,
        reason: RejectReason,
    },
    /// An accepted update was replaced by a newer one before install.
    Superseded {
        update_id: UpdateId,
        by: UpdateId,
    },
    /// The download starts or resumes.
    DownloadStarted {
        bundle_id: BundleId,
        size: u64,
        /// True after a restart: chunks already held are kept.
        resumed: bool,
        held_bytes: u64,
    },
    /// Bytes held so far (reported when the whole percentage changes).
    DownloadProgress {
        held_bytes: u64,
        total_bytes: u64,
    },
    /// Every chunk is held.
    Downloaded {
        bundle_id: BundleId,
    },
    DownloadFailed {
        failure: DownloadFailure,
    },
    /// The whole file hashes to the bundle id.
    Verified {
        bundle_id: BundleId,
    },
    VerifyFailed {
        failure: VerifyFailure,
    },
    /// The install into `slot` starts (`attempt` counts from 1).
    InstallStarted {
        slot: Slot,
        attempt: u8,
    },
    InstallProgress {
        percent: u8,
    },
    Installed {
        slot: Slot,
        version: Version,
    },
    InstallFailed {
        detail: String,
        will_retry: bool,
    },
    /// `slot` is armed for trial boot number `attempt`.
    TrialArmed {
        slot: Slot,
        attempt: u8,
    },
    /// The station reboots, expecting to come up on `into`.
    Rebooting {
        into: Slot,
    },
    /// The trial slot came up.
    TrialBooted {
        slot: Slot,
        attempt: u8,
    },
    HealthPassed {
        slot: Slot,
    },
    HealthFailed {
        slot: Slot,
        check: String,
        attempt: u8,
        will_retry: bool,
    },
    /// The station came back on `to` instead of the trial slot `from`.
    TrialFellBack {
        from: Slot,
        to: Slot,
        attempt: u8,
        will_retry: bool,
    },
    Committed {
        slot: Slot,
        version: Version,
    },
    MarkedBad {
        slot: Slot,
    },
    /// The update is over: the station runs its last good slot `to`, `from` is bad.
    RolledBack {
        from: Slot,
        to: Slot,
        cause: FallbackCause,
    },
    /// A boot-control operation failed.
    BootControlFailed {
        op: BootOp,
        slot: Slot,
        detail: String,
    },
    /// The journal contradicted itself (it named the committed slot as the update's slot);
    /// the update was abandoned without touching the boot flow.
    JournalRepaired {
        detail: String,
    },
    /// The station is still on a slot it marked bad after every allowed reboot: a person must
    /// act. The engine stops trying.
    RollbackStuck {
        slot: Slot,
    },
    // --- reported by the station's shell, not the engine ---
    /// How the bundle of the download travels (ADR 0012): `full`, with the `reason`, or
    /// `delta`. `expected-bytes` is what crosses the link (the patch or the whole bundle),
    /// `bundle-bytes` the offered bundle's size. Reported again when a delta fails and the
    /// station falls back to the full bundle.
    TransportChosen {
        bundle_id: BundleId,
        transport: DeliveryKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<FullReason>,
        expected_bytes: u64,
        bundle_bytes: u64,
    },
    /// The bundle is on the station, received whole or rebuilt from a delta, before its
    /// whole-file check. `received-bytes`: the bytes of the fetched file (patch or bundle) the
    /// station holds, each verified chunk counted once (chunks held from before a restart
    /// included, duplicates not).
    Delivered {
        bundle_id: BundleId,
        transport: DeliveryKind,
        received_bytes: u64,
        expected_bytes: u64,
        bundle_bytes: u64,
    },
    /// An offer (or a verified bundle about to be installed) is held back by an operator
    /// control (`frozen`, `halted`, `pinned`) or because its signing key was revoked since.
    /// The station takes it up again when the controls change.
    OfferHeld {
        update_id: UpdateId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<u64>,
        reason: RejectReason,
        /// The control message that holds it back, when one does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control_sequence: Option<u64>,
    },
    /// A held-back offer or install goes ahead (the control holding it was lifted).
    OfferReleased {
        update_id: UpdateId,
    },
    /// A signed control message was taken: it replaces the previous one of its scope.
    ControlAccepted {
        scope: Scope,
        sequence: u64,
    },
    /// A message on a control topic was refused (bad signature, unknown or revoked key,
    /// replayed sequence, a scope that is not the topic's or not this station's). Nothing
    /// changes.
    ControlRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<u64>,
        reason: RejectReason,
    },
    /// A key rotation was applied: `keys` are the ids trusted from now on.
    KeysRotated {
        sequence: u64,
        keys: Vec<KeyId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        added: Vec<KeyId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retired: Vec<KeyId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revoked: Vec<KeyId>,
    },
    /// A key rotation was refused; the trusted set is unchanged.
    RotationRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<u64>,
        reason: RotationReject,
    },
}
