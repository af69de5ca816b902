//! The signing envelope: ed25519 over the exact payload bytes, domain-separated by kind.
//!
//! ```json
//! {"v":1,"kind":"offer","key-id":"0123456789abcdef","payload":"<base64>","sig":"<base64>"}
//! ```
//! The signature covers `b"fleet/v1/" || kind || b"\0" || payload-bytes` (the payload after
//! base64 decoding), so nothing is canonicalised: the signer's bytes are the verifier's bytes,
//! and an offer signature can never pass as a manifest signature. Base64 is the standard
//! alphabet with padding, strictly decoded. [`open`] checks, in order: size, JSON shape (unknown
//! fields refused), version, kind, key id (revoked? trusted?), base64, signature
//! (`verify_strict`); only then is the payload handed out, and [`open_json`] parses it
//! (unknown fields refused).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use fleet_core::update::{KeyId, RejectReason};

use crate::limits::Limits;

/// The envelope format version this crate writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// What a signed payload is. The kind is part of the signed bytes. Halt/freeze controls and
/// key rotation will add kinds (issues 8 and 9); an unknown kind is refused as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Kind {
    /// An [`Offer`](fleet_core::update::Offer).
    Offer,
    /// A [`BundleManifest`](crate::payload::BundleManifest).
    Manifest,
    /// A rollout's plan and progress ([`RolloutRecord`](crate::rollout::RolloutRecord)).
    Rollout,
    /// A halt, freeze or pin ([`Control`](fleet_core::rollout::Control)).
    Control,
    /// A change of the trusted key set ([`Rotation`](fleet_core::trust::Rotation)).
    KeyRotation,
    /// A change of one daemon's station settings
    /// ([`ConfigPush`](fleet_core::config_push::ConfigPush)).
    Config,
    /// A request for a station's journal ([`LogRequest`](crate::logs::LogRequest)).
    LogRequest,
    /// A patch from a base bundle to an offered bundle
    /// ([`DeltaDescription`](crate::delta::DeltaDescription)).
    Delta,
    /// The zstd-compressed transfer of a bundle
    /// ([`CompressedDescription`](crate::delta::CompressedDescription)).
    Compressed,
}

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Manifest => "manifest",
            Kind::Rollout => "rollout",
            Kind::Control => "control",
            Kind::KeyRotation => "key-rotation",
            Kind::Config => "config",
            Kind::LogRequest => "log-request",
            Kind::Delta => "delta",
            Kind::Compressed => "compressed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Limits {
    /// The envelope size limit for `kind`.
    #[must_use]
    pub fn max_envelope_bytes(&self, kind: Kind) -> usize {
        match kind {
            Kind::Offer => self.max_offer_bytes,
            Kind::Manifest => self.max_manifest_bytes,
            // Rollout records and controls are offer-sized documents.
            Kind::Rollout
            | Kind::Control
            | Kind::KeyRotation
            | Kind::Config
            | Kind::LogRequest
            | Kind::Delta
            | Kind::Compressed => self.max_offer_bytes,
        }
    }
}

/// The envelope as it travels (JSON, kebab-case keys, unknown keys refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Envelope {
    /// Always [`ENVELOPE_VERSION`].
    pub v: u8,
    pub kind: Kind,
    pub key_id: KeyId,
    /// Base64 of the payload bytes (a JSON document for every current kind).
    pub payload: String,
    /// Base64 of the 64-byte ed25519 signature.
    pub sig: String,
}

/// The key id of a public key: the first 8 bytes of SHA-256 over its 32 bytes.
#[must_use]
pub fn key_id(key: &VerifyingKey) -> KeyId {
    let d = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    KeyId::from_bytes(id)
}

/// The bytes the signature covers.
#[must_use]
pub fn signed_bytes(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(b"fleet/v1/");
    m.extend_from_slice(kind.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

/// Signs `payload` as `kind` and returns the envelope's JSON bytes, ready to publish.
#[must_use]
pub fn seal(kind: Kind, payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig = key.sign(&signed_bytes(kind, payload));
    let env = Envelope {
        v: ENVELOPE_VERSION,
        kind,
        key_id: key_id(&key.verifying_key()),
        payload: B64.encode(payload),
        sig: B64.encode(sig.to_bytes()),
    };
    serde_json::to_vec(&env).expect("an envelope of strings always serializes")
}

/// Serializes `value` as JSON and seals it.
pub fn seal_json<T: Serialize>(
    kind: Kind,
    value: &T,
    key: &SigningKey,
) -> Result<Vec<u8>, serde_json::Error> {
    Ok(seal(kind, &serde_json::to_vec(value)?, key))
}

/// The public keys a station trusts, by key id, and the ids it refuses as revoked
/// (built from a [`fleet_core::trust::TrustState`] by [`crate::trust::trusted_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, VerifyingKey>,
    revoked: BTreeSet<KeyId>,
}

impl TrustedKeys {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `id` revoked: envelopes it signed are refused with [`EnvelopeError::RevokedKey`],
    /// even if the key is also inserted.
    pub fn revoke(&mut self, id: KeyId) {
        self.revoked.insert(id);
    }

    #[must_use]
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }

    /// Adds `key`; returns its id.
    pub fn insert(&mut self, key: VerifyingKey) -> KeyId {
        let id = key_id(&key);
        self.keys.insert(id, key);
        id
    }

    #[must_use]
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// The trusted keys, by key id (revoked ones included if they were inserted).
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a public key from 64 hex digits (the form `fleetctl keys gen` writes to `.pub`).
    pub fn parse_public_hex(s: &str) -> Result<VerifyingKey, KeyParseError> {
        let s = s.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| KeyParseError::NotHex)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeyParseError::NotAPoint)
    }
}

impl FromIterator<VerifyingKey> for TrustedKeys {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        let mut t = Self::new();
        for k in iter {
            t.insert(k);
        }
        t
    }
}

/// A public key that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("unable to parse public key: expected 64 hex digits")]
    NotHex,
    #[error("unable to parse public key: not a valid ed25519 point")]
    NotAPoint,
}

/// Why an envelope was refused. [`EnvelopeError::reject_reason`] maps each to the core's
/// [`RejectReason`] for reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("unable to accept envelope of {size} bytes: limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("unable to parse envelope: {detail}")]
    Malformed { detail: String },
    #[error("unable to accept envelope version {0}: expected {ENVELOPE_VERSION}")]
    UnsupportedVersion(u8),
    #[error("unable to accept envelope of kind {got}: expected {expected}")]
    WrongKind { expected: Kind, got: Kind },
    #[error("unable to verify envelope: key {0} is not trusted")]
    UnknownKey(KeyId),
    #[error("unable to verify envelope: key {0} is revoked")]
    RevokedKey(KeyId),
    #[error("unable to decode envelope {field}: bad base64")]
    BadBase64 { field: &'static str },
    #[error("unable to verify envelope signature")]
    BadSignature,
    #[error("unable to parse signed {kind} payload: {detail}")]
    BadPayload { kind: Kind, detail: String },
}

/// Longest parser message kept in an error, in bytes.
const MAX_ERROR_DETAIL: usize = 200;

fn bounded(e: &impl fmt::Display) -> String {
    fleet_core::update::offer::truncate(&e.to_string(), MAX_ERROR_DETAIL)
}

impl EnvelopeError {
    /// The reason a station reports for this refusal.
    #[must_use]
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            EnvelopeError::TooLarge { size, limit } => RejectReason::TooLarge {
                size: *size as u64,
                limit: *limit as u64,
            },
            EnvelopeError::UnknownKey(key_id) => RejectReason::UnknownKey { key_id: *key_id },
            EnvelopeError::RevokedKey(key_id) => RejectReason::RevokedKey { key_id: *key_id },
            EnvelopeError::BadSignature => RejectReason::BadSignature,
            other => RejectReason::Malformed {
                detail: bounded(other),
            },
        }
    }
}

/// A verified payload and the trusted key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<T> {
    pub key_id: KeyId,
    pub value: T,
}

/// The checks before any key is looked at: size, JSON shape (unknown fields refused),
/// version, kind.
fn parse(bytes: &[u8], kind: Kind, limits: &Limits) -> Result<Envelope, EnvelopeError> {
    let limit = limits.max_envelope_bytes(kind);
    if bytes.len() > limit {
        return Err(EnvelopeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    // serde_json refuses trailing garbage after the document.
    let env: Envelope = crate::json::parse(bytes).map_err(|e| EnvelopeError::Malformed {
        detail: bounded(&e),
    })?;
    if env.v != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(env.v));
    }
    if env.kind != kind {
        return Err(EnvelopeError::WrongKind {
            expected: kind,
            got: env.kind,
        });
    }
    Ok(env)
}

fn decode_payload(env: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
    B64.decode(env.payload.as_bytes())
        .map_err(|_| EnvelopeError::BadBase64 { field: "payload" })
}

fn parse_payload<T: DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, EnvelopeError> {
    crate::json::parse_signed(payload).map_err(|e| EnvelopeError::BadPayload {
        kind,
        detail: bounded(&e),
    })
}

/// Verifies an envelope of `kind` against `trusted` and returns the signed payload bytes.
pub fn open(
    bytes: &[u8],
    kind: Kind,
    trusted: &TrustedKeys,
    limits: &Limits,
) -> Result<Opened<Vec<u8>>, EnvelopeError> {
    let env = parse(bytes, kind, limits)?;
    if trusted.is_revoked(&env.key_id) {
        return Err(EnvelopeError::RevokedKey(env.key_id));
    }
    let key = trusted
        .get(&env.key_id)
        .ok_or(EnvelopeError::UnknownKey(env.key_id))?;
    let payload = decode_payload(&env)?;
    let sig_bytes = B64
        .decode(env.sig.as_bytes())
        .map_err(|_| EnvelopeError::BadBase64 { field: "sig" })?;
    let sig_arr: [u8; 64] = sig_bytes
        .as_slice()
        .try_into()
        .map_err(|_| EnvelopeError::BadSignature)?;
    let sig = Signature::from_bytes(&sig_arr);
    key.verify_strict(&signed_bytes(kind, &payload), &sig)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok(Opened {
        key_id: env.key_id,
        value: payload,
    })
}

/// [`open`], then parses the verified payload as JSON `T` strictly ([`crate::json`]: unknown
/// fields are refused by the payload types themselves, `null` anywhere is refused, and the
/// error names the key in a sentence).
pub fn open_json<T: DeserializeOwned>(
    bytes: &[u8],
    kind: Kind,
    trusted: &TrustedKeys,
    limits: &Limits,
) -> Result<Opened<T>, EnvelopeError> {
    let opened = open(bytes, kind, trusted, limits)?;
    let value = parse_payload(kind, &opened.value)?;
    Ok(Opened {
        key_id: opened.key_id,
        value,
    })
}

/// Reads the payload of an envelope of `kind` WITHOUT verifying its signature, for display
/// on the operator's side only (reading its own publications back to pick sequences, find
/// bundles, list rollouts). Every other check of [`open`] applies: size, JSON shape, version,
/// kind, base64. Nothing a station decides may rest on this: stations use [`open`].
pub fn read_unverified(
    bytes: &[u8],
    kind: Kind,
    limits: &Limits,
) -> Result<Vec<u8>, EnvelopeError> {
    decode_payload(&parse(bytes, kind, limits)?)
}

/// [`read_unverified`], then parses the payload as JSON `T`.
pub fn read_unverified_json<T: DeserializeOwned>(
    bytes: &[u8],
    kind: Kind,
    limits: &Limits,
) -> Result<T, EnvelopeError> {
    parse_payload(kind, &read_unverified(bytes, kind, limits)?)
}
