//! Rotation and revocation rules, table-driven, plus the invariants as properties.
use proptest::prelude::*;

use super::*;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn id(n: u8) -> KeyId {
    key(n).key_id()
}

/// A station trusting keys 1 and 2 after rotation 5.
fn state() -> TrustState {
    let mut s = TrustState::bootstrap([key(1), key(2)]).expect("two keys");
    s.sequence = 5;
    s
}

fn rotation(sequence: u64, keys: &[u8], revoke: &[u8]) -> Rotation {
    Rotation {
        sequence,
        keys: keys.iter().map(|n| key(*n)).collect(),
        revoke: revoke.iter().map(|n| id(*n)).collect(),
        issued_at: 1_700_000_000,
    }
}

fn code(r: &RotationReject) -> String {
    serde_json::to_value(r).expect("serializes")["code"]
        .as_str()
        .expect("has a code")
        .to_owned()
}

#[test]
fn a_rotation_signed_by_a_trusted_key_adds_and_retires_keys() {
    let r = decide_rotation(&state(), &rotation(6, &[2, 3], &[]), id(1)).expect("applies");
    assert_eq!(r.added, vec![id(3)]);
    assert_eq!(r.retired, vec![id(1)]);
    assert!(r.revoked.is_empty());
    assert_eq!(r.next.sequence, 6);
    assert!(matches!(r.next.status(&id(3)), KeyStatus::Trusted(k) if k == key(3)));
    assert_eq!(r.next.status(&id(1)), KeyStatus::Unknown);
}

#[test]
fn a_key_may_sign_its_own_retirement() {
    let r = decide_rotation(&state(), &rotation(6, &[3], &[]), id(1)).expect("applies");
    assert_eq!(r.retired.len(), 2);
    assert_eq!(r.next.keys().count(), 1);
}

#[test]
fn a_compromised_key_is_revoked_by_another_trusted_key_and_stays_revoked() {
    let r = decide_rotation(&state(), &rotation(6, &[2, 3], &[1]), id(2)).expect("applies");
    assert_eq!(r.revoked, vec![id(1)]);
    assert!(
        r.retired.is_empty(),
        "a revoked key is not reported as retired"
    );
    assert_eq!(r.next.status(&id(1)), KeyStatus::Revoked);
    // A later rotation that no longer names it does not lift the revocation ...
    let later = decide_rotation(&r.next, &rotation(7, &[2, 3], &[]), id(3)).expect("applies");
    assert_eq!(later.next.status(&id(1)), KeyStatus::Revoked);
    // ... and one that trusts it again is refused.
    let back = decide_rotation(&later.next, &rotation(8, &[1, 2], &[]), id(2));
    assert_eq!(
        back,
        Err(RotationReject::RevokedKeyListed { key_id: id(1) })
    );
}

#[test]
fn rotations_are_applied_or_refused_with_a_specific_reason() {
    let mut revoked = state();
    revoked.revoked.insert(id(9));
    let cases: Vec<(&str, TrustState, Rotation, KeyId, Option<&str>)> = vec![
        ("valid", state(), rotation(6, &[1, 3], &[]), id(1), None),
        (
            "unknown signer",
            state(),
            rotation(6, &[1, 3], &[]),
            id(7),
            Some("unknown-key"),
        ),
        (
            "revoked signer",
            revoked.clone(),
            rotation(6, &[1], &[]),
            id(9),
            Some("revoked-key"),
        ),
        (
            "replayed sequence",
            state(),
            rotation(5, &[1, 3], &[]),
            id(1),
            Some("replayed"),
        ),
        (
            "older sequence",
            state(),
            rotation(2, &[1, 3], &[]),
            id(1),
            Some("replayed"),
        ),
        (
            "retire the last key",
            state(),
            rotation(6, &[], &[]),
            id(1),
            Some("no-keys"),
        ),
        (
            "revoke every key",
            state(),
            rotation(6, &[], &[2]),
            id(1),
            Some("no-keys"),
        ),
        (
            "a key twice",
            state(),
            rotation(6, &[3, 3], &[]),
            id(1),
            Some("invalid-rotation"),
        ),
        (
            "kept and revoked",
            state(),
            rotation(6, &[1, 2], &[2]),
            id(1),
            Some("invalid-rotation"),
        ),
        (
            "self revocation",
            state(),
            rotation(6, &[2], &[1]),
            id(1),
            Some("self-revocation"),
        ),
        (
            "revoked key listed",
            revoked,
            rotation(6, &[1, 9], &[]),
            id(1),
            Some("revoked-key-listed"),
        ),
        (
            "too many keys",
            state(),
            rotation(6, &(1..=17).collect::<Vec<u8>>(), &[]),
            id(1),
            Some("invalid-rotation"),
        ),
    ];
    for (name, st, rot, signer, want) in cases {
        let got = decide_rotation(&st, &rot, signer);
        match (want, &got) {
            (None, Ok(_)) => {}
            (Some(w), Err(r)) => assert_eq!(code(r), w, "{name}"),
            _ => panic!("{name}: expected {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn too_many_remembered_revocations_are_refused() {
    let mut s = state();
    for n in 0..MAX_REVOKED_KEYS as u64 {
        s.revoked.insert(KeyId::from_bytes(n.to_be_bytes()));
    }
    let got = decide_rotation(&s, &rotation(6, &[1, 2], &[7]), id(1));
    assert_eq!(
        got,
        Err(RotationReject::TooManyRevoked {
            count: MAX_REVOKED_KEYS + 1,
            limit: MAX_REVOKED_KEYS
        })
    );
}

#[test]
fn bootstrap_refuses_an_empty_or_oversized_set() {
    assert_eq!(TrustState::bootstrap([]), Err(BootstrapError::Empty));
    assert_eq!(
        TrustState::bootstrap((0..=16).map(key)),
        Err(BootstrapError::TooMany { count: 17 })
    );
}

#[test]
fn a_state_read_back_from_disk_is_checked_like_a_rotation() {
    let ok: TrustState = serde_json::from_value(serde_json::json!({
        "sequence": 3,
        "keys": [key(1).to_string()],
        "revoked": [id(2).to_string()],
    }))
    .expect("parses");
    assert_eq!(ok.validate(), Ok(()));
    let listed: TrustState = serde_json::from_value(serde_json::json!({
        "sequence": 3,
        "keys": [key(1).to_string()],
        "revoked": [id(1).to_string()],
    }))
    .expect("parses");
    assert_eq!(
        listed.validate(),
        Err(RotationReject::RevokedKeyListed { key_id: id(1) })
    );
    let empty: TrustState =
        serde_json::from_value(serde_json::json!({"sequence": 3, "keys": []})).expect("parses");
    assert_eq!(empty.validate(), Err(RotationReject::NoKeys));
    assert!(
        serde_json::from_value::<TrustState>(
            serde_json::json!({"sequence": 3, "keys": [], "x": 1})
        )
        .is_err(),
        "unknown fields are refused"
    );
}

#[test]
fn a_rotation_round_trips_through_its_wire_form() {
    let r = rotation(6, &[1, 3], &[2]);
    let text = serde_json::to_string(&r).expect("serializes");
    assert!(text.contains("\"issued-at\""), "{text}");
    assert_eq!(serde_json::from_str::<Rotation>(&text).expect("parses"), r);
    let no_revoke = serde_json::to_string(&rotation(6, &[1], &[])).expect("serializes");
    assert!(!no_revoke.contains("revoke"), "{no_revoke}");
}

#[test]
fn the_key_id_is_the_first_eight_bytes_of_the_keys_sha256() {
    // sha256 of 32 zero bytes starts 66687aadf862bd77.
    assert_eq!(
        PublicKey::from_bytes([0; 32]).key_id().to_string(),
        "66687aadf862bd77"
    );
}

proptest! {
    /// Whatever sequence of rotations arrives, signed by whichever key: the set never empties,
    /// the sequence only grows, revocations never shrink, and a revoked key is never trusted.
    #[test]
    fn no_sequence_of_rotations_empties_the_set_or_lifts_a_revocation(
        steps in proptest::collection::vec(
            (0u64..20, proptest::collection::vec(0u8..8, 0..5),
             proptest::collection::vec(0u8..8, 0..3), 0u8..8),
            1..30,
        )
    ) {
        let mut st = TrustState::bootstrap([key(0), key(1)]).expect("two keys");
        for (seq, keys, revoke, signer) in steps {
            let before = st.clone();
            let rot = rotation(seq, &keys, &revoke);
            if let Ok(r) = decide_rotation(&st, &rot, id(signer)) {
                prop_assert!(r.next.sequence > before.sequence);
                prop_assert!(matches!(before.status(&id(signer)), KeyStatus::Trusted(_)));
                prop_assert!(!r.revoked.contains(&id(signer)));
                st = r.next;
            }
            prop_assert!(st.keys().next().is_some());
            prop_assert!(before.revoked().all(|k| st.revoked().any(|n| n == k)));
            prop_assert!(st.revoked().all(|k| st.status(k) == KeyStatus::Revoked));
            prop_assert_eq!(st.validate(), Ok(()));
        }
    }
}
