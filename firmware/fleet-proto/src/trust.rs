//! Key rotation on the wire: the topic, opening a signed [`Rotation`], and turning a
//! [`TrustState`] into the [`TrustedKeys`] that open every other envelope.
//!
//! | Topic | Payload | Retained | Published by |
//! |---|---|---|---|
//! | `fleet/v1/keys/rotation` | signed [`Rotation`] (kind `key-rotation`) | yes | operator |
//!
//! The rules a station applies are `fleet_core::trust::decide_rotation`; the contract is in
//! `docs/reference/mqtt-protocol.md` ("Key rotation").
use ed25519_dalek::VerifyingKey;

use fleet_core::trust::{Rotation, TrustState};
use fleet_core::update::{KeyId, PublicKey};

use crate::envelope::{self, EnvelopeError, Kind, Opened, TrustedKeys};
use crate::limits::Limits;

/// Where the operators publish the current rotation (retained).
pub const KEY_ROTATION_TOPIC: &str = "fleet/v1/keys/rotation";

/// A public key in a trust state or rotation that is not a valid ed25519 point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to use public key {0}: not a valid ed25519 point")]
pub struct NotAPoint(pub PublicKey);

/// The verifying keys of `state`, with its revoked ids marked.
pub fn trusted_keys(state: &TrustState) -> Result<TrustedKeys, NotAPoint> {
    let mut out = TrustedKeys::new();
    for k in state.keys() {
        out.insert(verifying_key(k)?);
    }
    for id in state.revoked() {
        out.revoke(*id);
    }
    Ok(out)
}

/// The ed25519 key of `key`.
pub fn verifying_key(key: &PublicKey) -> Result<VerifyingKey, NotAPoint> {
    VerifyingKey::from_bytes(key.as_bytes()).map_err(|_| NotAPoint(*key))
}

/// The wire form of a verifying key.
#[must_use]
pub fn public_key(key: &VerifyingKey) -> PublicKey {
    PublicKey::from_bytes(key.to_bytes())
}

/// Opens a rotation envelope against the keys the station trusts now and checks every key it
/// lists is a usable ed25519 point (refused as a bad payload otherwise). Whether the rotation
/// may be applied is then `fleet_core::trust::decide_rotation`'s call.
pub fn open_rotation(
    bytes: &[u8],
    trusted: &TrustedKeys,
    limits: &Limits,
) -> Result<Opened<Rotation>, EnvelopeError> {
    let opened = envelope::open_json::<Rotation>(bytes, Kind::KeyRotation, trusted, limits)?;
    if let Some(bad) = opened.value.keys.iter().find(|k| verifying_key(k).is_err()) {
        return Err(EnvelopeError::BadPayload {
            kind: Kind::KeyRotation,
            detail: NotAPoint(*bad).to_string(),
        });
    }
    Ok(opened)
}

/// The id of a wire-form key, as [`envelope::key_id`] computes it for a verifying key.
#[must_use]
pub fn key_id(key: &PublicKey) -> KeyId {
    key.key_id()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use fleet_core::trust::{RotationReject, decide_rotation};

    use super::*;

    fn signer(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn pk(n: u8) -> PublicKey {
        public_key(&signer(n).verifying_key())
    }

    fn rotation(sequence: u64, keys: &[u8], revoke: &[u8]) -> Rotation {
        Rotation {
            sequence,
            keys: keys.iter().map(|n| pk(*n)).collect(),
            revoke: revoke.iter().map(|n| pk(*n).key_id()).collect(),
            issued_at: 1_700_000_000,
        }
    }

    fn seal(r: &Rotation, by: u8) -> Vec<u8> {
        envelope::seal_json(Kind::KeyRotation, r, &signer(by)).expect("serializes")
    }

    /// What a station does with a rotation message: open with the keys it trusts, decide,
    /// and return the state it trusts afterwards.
    fn receive(state: &TrustState, bytes: &[u8]) -> Result<TrustState, String> {
        let trusted = trusted_keys(state).map_err(|e| e.to_string())?;
        let opened = open_rotation(bytes, &trusted, &Limits::DEFAULT).map_err(|e| e.to_string())?;
        decide_rotation(state, &opened.value, opened.key_id)
            .map(|r| r.next)
            .map_err(|e| format!("{e:?}"))
    }

    fn offer_from(by: u8) -> Vec<u8> {
        envelope::seal(Kind::Offer, br#"{"not":"parsed"}"#, &signer(by))
    }

    #[test]
    fn the_documented_rotation_parses_and_applies() {
        let doc = include_str!("../../../docs/reference/mqtt-protocol.md");
        let block = doc
            .split("```json key-rotation\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the protocol reference has a key-rotation example");
        let r: Rotation = serde_json::from_str(block).expect("the example parses");
        let doc_key: PublicKey = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
            .parse()
            .expect("hex");
        assert_eq!(r.revoke, vec![doc_key.key_id()]);
        for k in &r.keys {
            verifying_key(k).expect("the example keys are valid points");
        }
        // Signed by the first listed key, it revokes the documented test key.
        let st = TrustState::bootstrap([doc_key, r.keys[0]]).expect("two keys");
        let next = decide_rotation(&st, &r, r.keys[0].key_id()).expect("applies");
        assert_eq!(next.revoked, vec![doc_key.key_id()]);
        assert_eq!(next.added, vec![r.keys[1].key_id()]);
    }

    #[test]
    fn the_wire_key_id_equals_the_envelope_key_id() {
        assert_eq!(pk(3).key_id(), envelope::key_id(&signer(3).verifying_key()));
    }

    #[test]
    fn a_signed_rotation_moves_trust_to_the_new_key() {
        let st = TrustState::bootstrap([pk(1)]).expect("one key");
        let next = receive(&st, &seal(&rotation(1, &[1, 2], &[]), 1)).expect("applies");
        let next = receive(&next, &seal(&rotation(2, &[2], &[]), 2)).expect("applies");
        let keys = trusted_keys(&next).expect("valid points");
        assert!(envelope::open(&offer_from(2), Kind::Offer, &keys, &Limits::DEFAULT).is_ok());
        assert_eq!(
            envelope::open(&offer_from(1), Kind::Offer, &keys, &Limits::DEFAULT),
            Err(EnvelopeError::UnknownKey(pk(1).key_id())),
            "a retired key's offers are unknown"
        );
    }

    #[test]
    fn a_revoked_keys_offers_are_refused_as_revoked() {
        let st = TrustState::bootstrap([pk(1), pk(2)]).expect("two keys");
        let next = receive(&st, &seal(&rotation(1, &[2], &[1]), 2)).expect("applies");
        let keys = trusted_keys(&next).expect("valid points");
        let err = envelope::open(&offer_from(1), Kind::Offer, &keys, &Limits::DEFAULT)
            .expect_err("refused");
        assert_eq!(err, EnvelopeError::RevokedKey(pk(1).key_id()));
        assert_eq!(
            serde_json::to_value(err.reject_reason()).expect("serializes")["code"],
            "revoked-key"
        );
        // The revoked key cannot sign its way back in either.
        let back = receive(&next, &seal(&rotation(2, &[1, 2], &[]), 1));
        assert!(back.expect_err("refused").contains("revoked"));
    }

    #[test]
    fn a_replayed_rotation_is_refused() {
        let st = TrustState::bootstrap([pk(1), pk(2)]).expect("two keys");
        let first = seal(&rotation(1, &[1, 2, 3], &[]), 1);
        let next = receive(&st, &first).expect("applies");
        let again = receive(&next, &first).expect_err("replay refused");
        assert!(again.contains("Replayed"), "{again}");
        // An older rotation, validly signed, cannot undo a newer one.
        let newer = receive(&next, &seal(&rotation(2, &[2, 3], &[]), 2)).expect("applies");
        assert!(receive(&newer, &first).is_err());
    }

    #[test]
    fn a_compromised_key_cannot_revoke_itself_or_the_last_key() {
        let st = TrustState::bootstrap([pk(1), pk(2)]).expect("two keys");
        let own = receive(&st, &seal(&rotation(1, &[2], &[1]), 1)).expect_err("refused");
        assert!(own.contains("SelfRevocation"), "{own}");
        let last = Rotation {
            keys: vec![],
            ..rotation(1, &[], &[1])
        };
        let none = receive(&st, &seal(&last, 2)).expect_err("refused");
        assert!(none.contains("NoKeys"), "{none}");
        assert_eq!(
            decide_rotation(&st, &rotation(1, &[], &[]), pk(1).key_id()),
            Err(RotationReject::NoKeys)
        );
    }

    #[test]
    fn a_rotation_signed_by_an_unknown_key_or_tampered_is_refused() {
        let st = TrustState::bootstrap([pk(1)]).expect("one key");
        let stranger = receive(&st, &seal(&rotation(1, &[1, 9], &[]), 9)).expect_err("refused");
        assert!(stranger.contains("not trusted"), "{stranger}");
        let mut env: envelope::Envelope =
            serde_json::from_slice(&seal(&rotation(1, &[1], &[]), 1)).expect("an envelope");
        env.kind = Kind::Offer;
        let relabelled = serde_json::to_vec(&env).expect("serializes");
        let trusted = trusted_keys(&st).expect("valid");
        assert!(matches!(
            envelope::open(&relabelled, Kind::Offer, &trusted, &Limits::DEFAULT),
            Err(EnvelopeError::BadSignature)
        ));
    }

    #[test]
    fn a_rotation_listing_an_invalid_point_is_refused_before_it_is_decided() {
        let st = TrustState::bootstrap([pk(1)]).expect("one key");
        // y = 2 is not on the curve for any x: not a valid compressed point.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        let r = Rotation {
            keys: vec![pk(1), PublicKey::from_bytes(bad)],
            ..rotation(1, &[], &[])
        };
        let err = receive(&st, &seal(&r, 1)).expect_err("refused");
        assert!(err.contains("not a valid ed25519 point"), "{err}");
    }
}
