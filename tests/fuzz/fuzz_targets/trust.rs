//! Key rotations: any bytes as a rotation envelope (must never open unsigned), signed rotation
//! payloads decided against a trusted set, and trust files read back from /data.
#![no_main]
use fleet_core::trust::{Rotation, TrustState, decide_rotation};
use fleet_proto::{Limits, envelope, trust};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let key = fleet_fuzz::signing_key();
    let state = TrustState::bootstrap([trust::public_key(&key.verifying_key())])
        .expect("one key is a valid set");
    let trusted = trust::trusted_keys(&state).expect("a valid point");
    match which % 3 {
        0 => {
            assert!(
                trust::open_rotation(rest, &trusted, &Limits::DEFAULT).is_err(),
                "an unsigned input opened as a rotation"
            );
        }
        1 => {
            let sealed = envelope::seal(envelope::Kind::KeyRotation, rest, &key);
            let Ok(opened) = trust::open_rotation(&sealed, &trusted, &Limits::DEFAULT) else {
                return;
            };
            if let Ok(r) = decide_rotation(&state, &opened.value, opened.key_id) {
                // Whatever was applied is a set a station can keep and use.
                assert!(r.next.validate().is_ok());
                assert!(r.next.sequence > state.sequence);
                trust::trusted_keys(&r.next).expect("applied keys are valid points");
                let text = serde_json::to_vec(&r.next).expect("serializes");
                let back: TrustState = serde_json::from_slice(&text).expect("parses");
                assert_eq!(back, r.next);
            }
            let _ = serde_json::to_vec::<Rotation>(&opened.value);
        }
        _ => {
            if let Ok(st) = serde_json::from_slice::<TrustState>(rest)
                && st.validate().is_ok()
            {
                let _ = trust::trusted_keys(&st);
            }
        }
    }
});
