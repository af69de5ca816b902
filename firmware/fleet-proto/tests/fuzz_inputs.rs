//! Arbitrary network input never panics a parser and never yields something unsigned.
//! (Property tests standing in for cargo-fuzz targets, which need a nightly toolchain.)
use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::update::{BundleId, Downgrade, Offer, RolloutPercent, Target};
use fleet_proto::envelope::{self, Kind, TrustedKeys};
use fleet_proto::payload::{self, BundleManifest};
use fleet_proto::{Limits, Topic};
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[4; 32])
}

fn trusted() -> TrustedKeys {
    [key().verifying_key()].into_iter().collect()
}

fn offer() -> Offer {
    Offer {
        update_id: UpdateId::new("rel-9").expect("valid"),
        sequence: 99,
        bundle_id: BundleId::from_bytes([8; 32]),
        bundle_size: 123,
        compatible: "fleet-test".into(),
        version: Version::new(2, 0, 0),
        downgrade: Downgrade::Refuse,
        target: Target::Device(DeviceId::new("stn-1").expect("valid")),
        rollout_percent: RolloutPercent::ALL,
        issued_at: 0,
        expires_at: None,
        manifest_hash: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_open_as_a_signed_offer(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(envelope::open(&bytes, Kind::Offer, &trusted(), &Limits::DEFAULT).is_err());
        let _ = payload::decode_state(&bytes, &Limits::DEFAULT);
        let _ = payload::decode_event(&bytes, &Limits::DEFAULT);
        let _ = serde_json::from_slice::<BundleManifest>(&bytes);
    }

}

proptest! {
    // Each case verifies a signature; few cases keep the debug-build test fast.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn a_bit_flipped_anywhere_in_a_sealed_offer_never_yields_another_offer(at in any::<usize>(), bit in 0u8..8) {
        let mut bytes = envelope::seal_json(Kind::Offer, &offer(), &key()).expect("serializes");
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(o) = envelope::open_json::<Offer>(&bytes, Kind::Offer, &trusted(), &Limits::DEFAULT) {
            prop_assert_eq!(o.value, offer());
        }
    }

    #[test]
    fn arbitrary_topics_never_panic_and_parsed_topics_print_back_identically(s in "\\PC{0,80}") {
        if let Ok(t) = Topic::parse(&s) {
            prop_assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn topic_shaped_strings_parse_only_to_their_own_text(
        kind in 0usize..5, id in "[a-zA-Z0-9_./+#-]{0,70}", index in "[0-9+-]{0,12}"
    ) {
        let s = match kind {
            0 => format!("fleet/v1/devices/{id}/offer"),
            1 => format!("fleet/v1/groups/{id}/offer"),
            2 => format!("fleet/v1/bundles/{id}/manifest"),
            3 => format!("fleet/v1/bundles/{}/chunks/{index}", "ab".repeat(32)),
            _ => format!("fleet/v1/devices/{id}/state"),
        };
        if let Ok(t) = Topic::parse(&s) {
            prop_assert_eq!(t.to_string(), s);
        }
    }
}
