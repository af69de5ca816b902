//! Payloads other than the offer (which is [`fleet_core::update::Offer`], re-exported here):
//! the bundle manifest, the retained station state, station events and presence. JSON with
//! kebab-case keys; readers refuse unknown keys and oversize messages.
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::ports::BootStatus;
use fleet_core::rollout::Scope;
use fleet_core::slot::{Slot, SlotHealth};
use fleet_core::time::Now;
use fleet_core::update::{
    BundleId, KeyId, Offer, Outcome, Phase, PhaseName, RejectReason, Report, Sha256Digest, State,
};

use fleet_core::update::delta::{DeliveryKind, FullReason};

use crate::limits::Limits;

/// The signed description of a bundle (envelope kind `manifest`), published retained on
/// `fleet/v1/bundles/{bundle-id}/manifest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BundleManifest {
    /// SHA-256 of the whole file.
    pub bundle_id: BundleId,
    /// File size in bytes.
    pub size: u64,
    /// Size of every chunk but the last (which holds the rest, 1..=chunk-size bytes).
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order; `ceil(size / chunk-size)` entries.
    pub chunks: Vec<Sha256Digest>,
    /// The `compatible` of the bundle (must equal the offer's).
    pub compatible: String,
    /// The version in the bundle (must equal the offer's).
    pub version: Version,
    /// File name to use on disk and in logs: `[A-Za-z0-9._-]`, not starting with `.`.
    pub file_name: String,
}

/// A manifest that breaks a rule or a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to accept manifest: {0}")]
pub struct ManifestError(pub String);

impl BundleManifest {
    /// Checks the manifest against itself and `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), ManifestError> {
        let e = |s: String| Err(ManifestError(s));
        if self.size == 0 {
            return e("size is 0".into());
        }
        if self.size > limits.max_bundle_bytes {
            return e(format!(
                "size {} is above the limit {}",
                self.size, limits.max_bundle_bytes
            ));
        }
        let cs = self.chunk_size as usize;
        if cs < limits.min_chunk_bytes || cs > limits.max_chunk_bytes {
            return e(format!(
                "chunk-size {cs} is outside {}..={}",
                limits.min_chunk_bytes, limits.max_chunk_bytes
            ));
        }
        let expected = self.size.div_ceil(u64::from(self.chunk_size));
        if expected > u64::from(limits.max_chunks) {
            return e(format!(
                "{expected} chunks is above the limit {}",
                limits.max_chunks
            ));
        }
        if self.chunks.len() as u64 != expected {
            return e(format!(
                "{} chunk hashes for {expected} chunks",
                self.chunks.len()
            ));
        }
        if self.compatible.is_empty() || self.compatible.len() > limits.max_compatible_len {
            return e("compatible is empty or too long".into());
        }
        let name_ok = !self.file_name.is_empty()
            && self.file_name.len() <= limits.max_file_name_len
            && !self.file_name.starts_with('.')
            && self
                .file_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return e(
                "file-name is empty, too long or has characters outside [A-Za-z0-9._-]".into(),
            );
        }
        Ok(())
    }

    /// Number of chunks.
    #[must_use]
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(self.chunks.len()).unwrap_or(u32::MAX)
    }

    /// Byte offset and length of chunk `index`, `None` past the end.
    #[must_use]
    pub fn chunk_range(&self, index: u32) -> Option<(u64, u32)> {
        if index as usize >= self.chunks.len() {
            return None;
        }
        let offset = u64::from(index) * u64::from(self.chunk_size);
        let len = (self.size - offset).min(u64::from(self.chunk_size));
        Some((
            offset,
            u32::try_from(len).expect("at most chunk-size, a u32"),
        ))
    }

    /// Checks that the manifest describes the bundle `offer` promises (id, size, version,
    /// compatible). A mismatch is a `DownloadFailure::ManifestMismatch`.
    pub fn matches_offer(&self, offer: &Offer) -> Result<(), ManifestError> {
        if self.bundle_id != offer.bundle_id {
            return Err(ManifestError("bundle-id differs from the offer".into()));
        }
        if self.size != offer.bundle_size {
            return Err(ManifestError(format!(
                "size {} differs from the offer's {}",
                self.size, offer.bundle_size
            )));
        }
        if self.version != offer.version {
            return Err(ManifestError(format!(
                "version {} differs from the offer's {}",
                self.version, offer.version
            )));
        }
        if self.compatible != offer.compatible {
            return Err(ManifestError("compatible differs from the offer".into()));
        }
        Ok(())
    }
}

/// A moment as the station knows it: monotonic always, wall-clock only when trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Timestamp {
    pub monotonic_ms: u64,
    /// Absent while the station's clock is untrusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_unix_s: Option<i64>,
}

impl From<Now> for Timestamp {
    fn from(n: Now) -> Self {
        Self {
            monotonic_ms: n.monotonic_ms,
            wall_unix_s: n.wall_unix_s,
        }
    }
}

/// Download progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// One slot as the station's boot flow sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SlotState {
    pub slot: Slot,
    pub health: SlotHealth,
    pub attempts_left: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

/// A station's retained state on `fleet/v1/devices/{device-id}/state`: replaced on every
/// transition; `seq` increases with every publication of this station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StationState {
    pub device_id: DeviceId,
    /// Increases with every state message this station publishes.
    pub seq: u64,
    pub updated_at: Timestamp,
    /// False while the station's wall clock is untrusted (offer expiry is then not judged).
    pub time_trusted: bool,
    pub booted: Slot,
    /// The last good slot.
    pub committed: Slot,
    /// The version running in the committed slot.
    pub version: Version,
    /// Both slots, when the boot flow could be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotState>,
    pub phase: PhaseName,
    /// The update being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_id: Option<UpdateId>,
    /// The version being installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<Version>,
    /// Trial attempt (from 1) while on trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The highest offer sequence accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
    /// How the last update ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// The installer's progress in percent while installing (throttled by the station).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_percent: Option<u8>,
    /// An offer or install held back by an operator control (or a revoked signing key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// The offer-signing keys the station trusts now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustReport>,
    /// How the bundle of the update in progress travels (ADR 0012): from the transport's
    /// choice until the update ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// The bundle the station keeps as the base of deltas (its last committed bundle): the
    /// base an operator publishes deltas from (`fleetctl push --delta-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_base: Option<BundleId>,
}

/// How the bundle of an update reaches the station (`delivery` in its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Delivery {
    pub bundle_id: BundleId,
    /// `full` or `delta`.
    pub transport: DeliveryKind,
    /// Why the whole bundle travels (`full` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FullReason>,
    /// Bytes that cross the link: the patch's size for `delta`, the bundle's for `full`.
    pub expected_bytes: u64,
    /// Of those, the bytes the station holds now (chunks verified and written).
    pub received_bytes: u64,
    /// The offered bundle's size.
    pub bundle_bytes: u64,
}

/// What a station holds back and why (`held` in its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Held {
    pub update_id: UpdateId,
    pub version: Version,
    /// `frozen`, `halted`, `pinned` or `revoked-key`, with their fields.
    pub reason: RejectReason,
    /// The control message that holds it back, when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_sequence: Option<u64>,
}

/// The trusted key set as a station reports it (`trust` in its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustReport {
    /// The last applied key rotation; 0 for the configured set.
    pub sequence: u64,
    pub keys: Vec<KeyId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<KeyId>,
}

impl StationState {
    /// The state message for an engine state.
    #[must_use]
    pub fn from_engine(state: &State, boot: Option<&BootStatus>, seq: u64, now: Now) -> Self {
        let (progress, attempt) = match &state.phase {
            Phase::Downloading { job, held_bytes } => (
                Some(Progress {
                    done_bytes: *held_bytes,
                    total_bytes: job.bundle_size,
                }),
                None,
            ),
            Phase::ArmingTrial { attempt, .. }
            | Phase::Rebooting { attempt, .. }
            | Phase::HealthChecking { attempt, .. }
            | Phase::Committing { attempt, .. } => (None, Some(*attempt)),
            _ => (None, None),
        };
        let job = state.phase.job();
        Self {
            device_id: state.station.device_id.clone(),
            seq,
            updated_at: now.into(),
            time_trusted: now.wall_unix_s.is_some(),
            booted: state.booted,
            committed: state.committed,
            version: state.committed_version.clone(),
            slots: boot
                .map(|b| {
                    b.slots
                        .iter()
                        .map(|s| SlotState {
                            slot: s.slot,
                            health: s.health,
                            attempts_left: s.attempts_left,
                            version: s.version.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            phase: state.phase.name(),
            update_id: job.map(|j| j.update_id.clone()),
            target_version: job.map(|j| j.version.clone()),
            attempt,
            progress,
            last_sequence: state.last_sequence,
            last_outcome: state.last_outcome.clone(),
            install_percent: None,
            held: None,
            trust: None,
            delivery: None,
            kept_base: None,
        }
    }
}

/// One event on `fleet/v1/devices/{device-id}/events` (not retained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StationEvent {
    pub device_id: DeviceId,
    /// Increases with every event this station publishes (shares no counter with state).
    pub seq: u64,
    pub at: Timestamp,
    /// The update this event belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_id: Option<UpdateId>,
    /// What happened: `{"kind": "...", ...}`.
    pub event: Report,
}

/// A station's presence, published retained as the plain text `online` at connect; the broker
/// publishes `offline` (the last will) when the station vanishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    Online,
    Offline,
}

impl Presence {
    #[must_use]
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Presence::Online => b"online",
            Presence::Offline => b"offline",
        }
    }

    /// Parses the exact payload; anything else is `None`.
    #[must_use]
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        match bytes {
            b"online" => Some(Presence::Online),
            b"offline" => Some(Presence::Offline),
            _ => None,
        }
    }
}

/// A payload that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("unable to accept payload of {size} bytes: limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("unable to parse payload: {0}")]
    Malformed(String),
}

fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, PayloadError> {
    if bytes.len() > limit {
        return Err(PayloadError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    crate::json::parse(bytes)
        .map_err(|e| PayloadError::Malformed(fleet_core::update::offer::truncate(&e, 200)))
}

/// Reads a state message (bounded by `limits.max_state_bytes`).
pub fn decode_state(bytes: &[u8], limits: &Limits) -> Result<StationState, PayloadError> {
    decode(bytes, limits.max_state_bytes)
}

/// Reads an event message (bounded by `limits.max_event_bytes`).
pub fn decode_event(bytes: &[u8], limits: &Limits) -> Result<StationEvent, PayloadError> {
    decode(bytes, limits.max_event_bytes)
}

/// Serializes a payload as JSON.
#[must_use]
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("payload types always serialize")
}
