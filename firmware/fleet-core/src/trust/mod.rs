//! The offer-signing keys a station trusts, and how that set changes: [`decide_rotation`] is
//! the pure rule set a station applies to a signed key rotation before it trusts anything new.
//!
//! A rotation states the **whole** trusted set after it (`keys`), plus the keys it revokes
//! (`revoke`). Stating the whole set, not a delta, means a station that missed earlier
//! rotations still ends on the right set, as long as a key it trusts signed the latest one.
//! Comparing the new set with the old one gives what was added and what was retired.
//!
//! - **Retired**: a key left out of `keys`. No longer trusted; an offer it signs is
//!   `unknown-key`. A later rotation may trust it again.
//! - **Revoked**: a key named in `revoke` (compromised). Never trusted again on this station:
//!   revocations are sticky (a later rotation that leaves the id out of `revoke` does not
//!   lift it) and a rotation listing a revoked key in `keys` is refused. An offer it signs is
//!   refused as `revoked-key`.
//!
//! Rules, in the order they are checked (the first failing rule is the reported reason):
//! 1. the signer is trusted now: not revoked (`revoked-key`), not unknown (`unknown-key`);
//! 2. the `sequence` is above the last applied rotation's (`replayed`; never judged by time);
//! 3. `keys` is not empty: the last key can never be retired or revoked (`no-keys`);
//! 4. at most [`MAX_TRUSTED_KEYS`] keys, no key listed twice, no id both kept and revoked
//!    (`invalid-rotation`);
//! 5. the signer does not revoke itself: a revocation is signed by another trusted key
//!    (`self-revocation`);
//! 6. no key in `keys` was ever revoked here (`revoked-key-listed`);
//! 7. at most [`MAX_REVOKED_KEYS`] revocations are remembered (`too-many-revoked`).
//!
//! The signature itself is checked by `fleet-proto` (the core performs no cryptography), which
//! also refuses public keys that are not valid ed25519 points.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::update::digest::{KeyId, PublicKey};

/// Most keys a station trusts at once.
pub const MAX_TRUSTED_KEYS: usize = 16;
/// Most revoked key ids a station remembers.
pub const MAX_REVOKED_KEYS: usize = 256;

/// The signed payload of a key rotation (envelope kind `key-rotation`). JSON, kebab-case keys,
/// unknown keys refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rotation {
    /// Strictly increasing over every rotation the operators sign (its own counter, separate
    /// from the offers' sequence).
    pub sequence: u64,
    /// The whole trusted set after this rotation.
    pub keys: Vec<PublicKey>,
    /// Keys revoked by this rotation (compromised): never trusted again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoke: Vec<KeyId>,
    /// Unix seconds when the rotation was signed (informational; never judged).
    pub issued_at: i64,
}

/// What a station trusts now. Persisted on the data partition by the shell; the bootstrap set
/// comes from the station's configuration (sequence 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustState {
    /// The last applied rotation; 0 for the configured bootstrap set.
    pub sequence: u64,
    keys: BTreeSet<PublicKey>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    revoked: BTreeSet<KeyId>,
}

/// How a key id stands in a [`TrustState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Trusted(PublicKey),
    Revoked,
    Unknown,
}

/// A bootstrap set that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("unable to trust an empty key set")]
    Empty,
    #[error("unable to trust {count} keys: at most {MAX_TRUSTED_KEYS}")]
    TooMany { count: usize },
}

impl TrustState {
    /// The configured set a station starts from before any rotation.
    pub fn bootstrap(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, BootstrapError> {
        let keys: BTreeSet<PublicKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(BootstrapError::Empty);
        }
        if keys.len() > MAX_TRUSTED_KEYS {
            return Err(BootstrapError::TooMany { count: keys.len() });
        }
        Ok(Self {
            sequence: 0,
            keys,
            revoked: BTreeSet::new(),
        })
    }

    /// Whether `id` is trusted, revoked or unknown. A revoked id is reported as revoked even
    /// if a key with that id were somehow still in the set.
    #[must_use]
    pub fn status(&self, id: &KeyId) -> KeyStatus {
        if self.revoked.contains(id) {
            return KeyStatus::Revoked;
        }
        self.keys
            .iter()
            .find(|k| k.key_id() == *id)
            .map_or(KeyStatus::Unknown, |k| KeyStatus::Trusted(*k))
    }

    /// The trusted keys, in a stable order.
    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// The revoked key ids, in a stable order.
    pub fn revoked(&self) -> impl Iterator<Item = &KeyId> {
        self.revoked.iter()
    }

    /// Checks a state read back from disk against the same limits a rotation must meet (a
    /// corrupt or hand-edited file must not widen what the station trusts).
    pub fn validate(&self) -> Result<(), RotationReject> {
        if self.keys.is_empty() {
            return Err(RotationReject::NoKeys);
        }
        if self.keys.len() > MAX_TRUSTED_KEYS {
            return Err(invalid(format!(
                "{} keys: at most {MAX_TRUSTED_KEYS}",
                self.keys.len()
            )));
        }
        if self.revoked.len() > MAX_REVOKED_KEYS {
            return Err(RotationReject::TooManyRevoked {
                count: self.revoked.len(),
                limit: MAX_REVOKED_KEYS,
            });
        }
        if let Some(k) = self
            .keys
            .iter()
            .find(|k| self.revoked.contains(&k.key_id()))
        {
            return Err(RotationReject::RevokedKeyListed { key_id: k.key_id() });
        }
        Ok(())
    }
}

/// Why a station refused a key rotation. Reports carry it as `{"code": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[non_exhaustive]
pub enum RotationReject {
    /// Signed by a key the station does not trust.
    UnknownKey { key_id: KeyId },
    /// Signed by a revoked key.
    RevokedKey { key_id: KeyId },
    /// The sequence is not above the last applied rotation's.
    Replayed { sequence: u64, last_applied: u64 },
    /// The rotation would leave no trusted key.
    NoKeys,
    /// The rotation contradicts itself or breaks a limit.
    InvalidRotation { detail: String },
    /// The message is larger than the limit for its topic (checked before anything is read;
    /// also one above the transport ceiling, which the station never reads at all).
    TooLarge { size: u64, limit: u64 },
    /// The signer revokes itself; a revocation must be signed by another trusted key.
    SelfRevocation { key_id: KeyId },
    /// A key in `keys` was revoked on this station before.
    RevokedKeyListed { key_id: KeyId },
    /// More revocations than a station remembers.
    TooManyRevoked { count: usize, limit: usize },
}

fn invalid(detail: String) -> RotationReject {
    RotationReject::InvalidRotation { detail }
}

/// An applied rotation: the next state and what changed (for the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub next: TrustState,
    /// Keys trusted now that were not before.
    pub added: Vec<KeyId>,
    /// Keys trusted before, left out now, not revoked.
    pub retired: Vec<KeyId>,
    /// Keys this rotation revoked that were not revoked before.
    pub revoked: Vec<KeyId>,
}

/// Applies the rotation rules (see the module documentation) to a rotation whose signature
/// verified against `signer`.
pub fn decide_rotation(
    state: &TrustState,
    rotation: &Rotation,
    signer: KeyId,
) -> Result<Rotated, RotationReject> {
    match state.status(&signer) {
        KeyStatus::Trusted(_) => {}
        KeyStatus::Revoked => return Err(RotationReject::RevokedKey { key_id: signer }),
        KeyStatus::Unknown => return Err(RotationReject::UnknownKey { key_id: signer }),
    }
    if rotation.sequence <= state.sequence {
        return Err(RotationReject::Replayed {
            sequence: rotation.sequence,
            last_applied: state.sequence,
        });
    }
    if rotation.keys.is_empty() {
        return Err(RotationReject::NoKeys);
    }
    if rotation.keys.len() > MAX_TRUSTED_KEYS {
        return Err(invalid(format!(
            "{} keys: at most {MAX_TRUSTED_KEYS}",
            rotation.keys.len()
        )));
    }
    let keys: BTreeSet<PublicKey> = rotation.keys.iter().copied().collect();
    if keys.len() != rotation.keys.len() {
        return Err(invalid("a key is listed twice".into()));
    }
    if rotation.revoke.len() > MAX_REVOKED_KEYS {
        return Err(RotationReject::TooManyRevoked {
            count: rotation.revoke.len(),
            limit: MAX_REVOKED_KEYS,
        });
    }
    let new_revoked: BTreeSet<KeyId> = rotation.revoke.iter().copied().collect();
    let ids: BTreeSet<KeyId> = keys.iter().map(PublicKey::key_id).collect();
    if let Some(id) = new_revoked.intersection(&ids).next() {
        return Err(invalid(format!("key {id} is both kept and revoked")));
    }
    if new_revoked.contains(&signer) {
        return Err(RotationReject::SelfRevocation { key_id: signer });
    }
    if let Some(id) = ids.iter().find(|id| state.revoked.contains(id)) {
        return Err(RotationReject::RevokedKeyListed { key_id: *id });
    }
    let revoked: BTreeSet<KeyId> = state.revoked.union(&new_revoked).copied().collect();
    if revoked.len() > MAX_REVOKED_KEYS {
        return Err(RotationReject::TooManyRevoked {
            count: revoked.len(),
            limit: MAX_REVOKED_KEYS,
        });
    }
    let old_ids: BTreeSet<KeyId> = state.keys.iter().map(PublicKey::key_id).collect();
    let added = ids.difference(&old_ids).copied().collect();
    let retired = old_ids
        .difference(&ids)
        .filter(|id| !new_revoked.contains(id))
        .copied()
        .collect();
    let newly_revoked = new_revoked.difference(&state.revoked).copied().collect();
    Ok(Rotated {
        next: TrustState {
            sequence: rotation.sequence,
            keys,
            revoked,
        },
        added,
        retired,
        revoked: newly_revoked,
    })
}

#[cfg(test)]
mod tests;
