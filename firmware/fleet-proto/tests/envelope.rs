//! The signing envelope against every tampering a careful attacker or a broken tool produces.
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::update::{BundleId, Downgrade, KeyId, Offer, RejectReason, RolloutPercent, Target};
use fleet_proto::envelope::{self, EnvelopeError, Kind, TrustedKeys};
use fleet_proto::{BundleManifest, Limits};
use serde_json::{Value, json};

fn signer(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn trusted() -> TrustedKeys {
    [signer(1).verifying_key(), signer(2).verifying_key()]
        .into_iter()
        .collect()
}

fn offer() -> Offer {
    Offer {
        update_id: UpdateId::new("rel-2").expect("valid"),
        sequence: 7,
        bundle_id: BundleId::from_bytes([3; 32]),
        bundle_size: 4096,
        compatible: "fleet-test".into(),
        version: Version::new(1, 2, 0),
        downgrade: Downgrade::Refuse,
        target: Target::Device(DeviceId::new("stn-0001").expect("valid")),
        rollout_percent: RolloutPercent::ALL,
        issued_at: 1_700_000_000,
        expires_at: Some(1_800_000_000),
        manifest_hash: None,
    }
}

fn sealed() -> Vec<u8> {
    envelope::seal_json(Kind::Offer, &offer(), &signer(1)).expect("serializes")
}

fn open(bytes: &[u8]) -> Result<Offer, EnvelopeError> {
    envelope::open_json::<Offer>(bytes, Kind::Offer, &trusted(), &Limits::DEFAULT).map(|o| o.value)
}

/// Edits the envelope JSON and re-serializes it.
fn edit(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sealed()).expect("json");
    f(&mut v);
    serde_json::to_vec(&v).expect("json")
}

fn flip_b64(s: &str, at: usize) -> String {
    let mut bytes = B64.decode(s).expect("valid base64");
    let i = at % bytes.len();
    bytes[i] ^= 0x01;
    B64.encode(bytes)
}

#[test]
fn a_sealed_offer_opens_with_its_key_id() {
    let o = envelope::open_json::<Offer>(&sealed(), Kind::Offer, &trusted(), &Limits::DEFAULT)
        .expect("opens");
    assert_eq!(o.value, offer());
    assert_eq!(o.key_id, envelope::key_id(&signer(1).verifying_key()));
}

#[test]
fn the_key_id_is_the_first_eight_bytes_of_the_public_keys_sha256() {
    use sha2::{Digest, Sha256};
    let pk = signer(1).verifying_key();
    let d = Sha256::digest(pk.as_bytes());
    assert_eq!(envelope::key_id(&pk).to_string(), hex::encode(&d[..8]));
}

#[test]
fn flipped_payload_bytes_break_the_signature() {
    let payload_len = B64
        .decode(
            serde_json::from_slice::<Value>(&sealed()).expect("json")["payload"]
                .as_str()
                .expect("string"),
        )
        .expect("b64")
        .len();
    // Every 5th byte and the last one: each verification is slow in a debug build.
    for at in (0..payload_len).step_by(5).chain([payload_len - 1]) {
        let bytes = edit(|v| {
            let p = v["payload"].as_str().expect("string").to_owned();
            v["payload"] = json!(flip_b64(&p, at));
        });
        assert_eq!(open(&bytes), Err(EnvelopeError::BadSignature), "byte {at}");
    }
}

#[test]
fn every_flipped_signature_byte_is_refused() {
    for at in 0..64 {
        let bytes = edit(|v| {
            let s = v["sig"].as_str().expect("string").to_owned();
            v["sig"] = json!(flip_b64(&s, at));
        });
        assert_eq!(open(&bytes), Err(EnvelopeError::BadSignature), "byte {at}");
    }
}

#[test]
fn a_signature_of_the_wrong_length_is_refused() {
    for len in [0usize, 63, 65, 128] {
        let bytes = edit(|v| v["sig"] = json!(B64.encode(vec![0u8; len])));
        assert_eq!(
            open(&bytes),
            Err(EnvelopeError::BadSignature),
            "length {len}"
        );
    }
}

#[test]
fn an_untrusted_signer_is_refused_by_key_id() {
    let bytes = envelope::seal_json(Kind::Offer, &offer(), &signer(9)).expect("serializes");
    let id = envelope::key_id(&signer(9).verifying_key());
    assert_eq!(open(&bytes), Err(EnvelopeError::UnknownKey(id)));
    assert_eq!(
        EnvelopeError::UnknownKey(id).reject_reason(),
        RejectReason::UnknownKey { key_id: id }
    );
}

#[test]
fn an_untrusted_signer_claiming_a_trusted_key_id_is_refused() {
    let bytes = envelope::seal_json(Kind::Offer, &offer(), &signer(9)).expect("serializes");
    let mut v: Value = serde_json::from_slice(&bytes).expect("json");
    v["key-id"] = json!(envelope::key_id(&signer(2).verifying_key()).to_string());
    let bytes = serde_json::to_vec(&v).expect("json");
    assert_eq!(open(&bytes), Err(EnvelopeError::BadSignature));
}

#[test]
fn an_unknown_key_id_format_is_malformed() {
    for bad in ["", "zz", "0102030405060708ff", "ABCDEF0123456789"] {
        let bytes = edit(|v| v["key-id"] = json!(bad));
        assert!(
            matches!(open(&bytes), Err(EnvelopeError::Malformed { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn a_manifest_signature_never_passes_as_an_offer() {
    // Same bytes, signed as a manifest: the kind field says manifest -> wrong kind.
    let payload = serde_json::to_vec(&offer()).expect("json");
    let as_manifest = envelope::seal(Kind::Manifest, &payload, &signer(1));
    assert_eq!(
        open(&as_manifest),
        Err(EnvelopeError::WrongKind {
            expected: Kind::Offer,
            got: Kind::Manifest
        })
    );
    // Relabelled as an offer: the domain-separated signature no longer verifies.
    let mut v: Value = serde_json::from_slice(&as_manifest).expect("json");
    v["kind"] = json!("offer");
    let relabelled = serde_json::to_vec(&v).expect("json");
    assert_eq!(open(&relabelled), Err(EnvelopeError::BadSignature));
}

#[test]
fn unknown_kinds_and_versions_are_refused() {
    let bytes = edit(|v| v["kind"] = json!("halt"));
    assert!(matches!(open(&bytes), Err(EnvelopeError::Malformed { .. })));
    let bytes = edit(|v| v["v"] = json!(2));
    assert_eq!(open(&bytes), Err(EnvelopeError::UnsupportedVersion(2)));
    let bytes = edit(|v| v["v"] = json!(-1));
    assert!(matches!(open(&bytes), Err(EnvelopeError::Malformed { .. })));
}

#[test]
fn an_oversize_envelope_is_refused_before_it_is_parsed() {
    let limits = Limits::DEFAULT;
    let mut big = sealed();
    big.resize(limits.max_offer_bytes + 1, b' ');
    assert_eq!(
        envelope::open(&big, Kind::Offer, &trusted(), &limits),
        Err(EnvelopeError::TooLarge {
            size: limits.max_offer_bytes + 1,
            limit: limits.max_offer_bytes
        })
    );
    // Not even JSON: the size check comes first.
    let junk = vec![0xffu8; limits.max_offer_bytes + 1];
    assert!(matches!(
        envelope::open(&junk, Kind::Offer, &trusted(), &limits),
        Err(EnvelopeError::TooLarge { .. })
    ));
    assert!(matches!(
        EnvelopeError::TooLarge { size: 2, limit: 1 }.reject_reason(),
        RejectReason::TooLarge { size: 2, limit: 1 }
    ));
}

#[test]
fn bad_base64_is_refused() {
    for bad in ["!!!!", "AAA", "AAA=A", "YQ", "YR==", "  ", "a-_b", "AAAA\n"] {
        let bytes = edit(|v| v["payload"] = json!(bad));
        assert_eq!(
            open(&bytes),
            Err(EnvelopeError::BadBase64 { field: "payload" }),
            "payload {bad:?}"
        );
        let bytes = edit(|v| v["sig"] = json!(bad));
        assert_eq!(
            open(&bytes),
            Err(EnvelopeError::BadBase64 { field: "sig" }),
            "sig {bad:?}"
        );
    }
}

#[test]
fn trailing_garbage_after_the_envelope_is_refused() {
    for tail in [&b"x"[..], b"{}", b"\0", b"]"] {
        let mut bytes = sealed();
        bytes.extend_from_slice(tail);
        assert!(
            matches!(open(&bytes), Err(EnvelopeError::Malformed { .. })),
            "{tail:?}"
        );
    }
    // Whitespace after a JSON document is not garbage.
    let mut bytes = sealed();
    bytes.extend_from_slice(b"\n");
    assert!(open(&bytes).is_ok());
}

#[test]
fn missing_and_unknown_envelope_fields_are_refused() {
    for field in ["v", "kind", "key-id", "payload", "sig"] {
        let bytes = edit(|v| {
            v.as_object_mut().expect("object").remove(field);
        });
        assert!(
            matches!(open(&bytes), Err(EnvelopeError::Malformed { .. })),
            "{field}"
        );
    }
    let bytes = edit(|v| v["extra"] = json!(true));
    assert!(matches!(open(&bytes), Err(EnvelopeError::Malformed { .. })));
    // Duplicate keys: serde refuses a struct with a field given twice.
    let s = String::from_utf8(sealed()).expect("utf8");
    let dup = s.replacen("{", "{\"v\":1,", 1);
    assert!(matches!(
        open(dup.as_bytes()),
        Err(EnvelopeError::Malformed { .. })
    ));
}

#[test]
fn signed_payloads_with_missing_or_unknown_fields_are_refused_after_verification() {
    let mut v = serde_json::to_value(offer()).expect("json");
    v["surprise"] = json!(1);
    let bytes = envelope::seal(
        Kind::Offer,
        &serde_json::to_vec(&v).expect("json"),
        &signer(1),
    );
    assert!(matches!(
        open(&bytes),
        Err(EnvelopeError::BadPayload { .. })
    ));
    let mut v = serde_json::to_value(offer()).expect("json");
    v.as_object_mut().expect("object").remove("bundle-id");
    let bytes = envelope::seal(
        Kind::Offer,
        &serde_json::to_vec(&v).expect("json"),
        &signer(1),
    );
    assert!(matches!(
        open(&bytes),
        Err(EnvelopeError::BadPayload { .. })
    ));
    for bad in [&b"not json"[..], b"", b"{}", b"null", b"[1]"] {
        let bytes = envelope::seal(Kind::Offer, bad, &signer(1));
        assert!(
            matches!(open(&bytes), Err(EnvelopeError::BadPayload { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn garbage_is_malformed_and_reported_as_such() {
    for bad in [&b""[..], b"null", b"[]", b"\xff\xfe", b"{\"v\":1"] {
        let e = open(bad).expect_err("garbage");
        assert!(
            matches!(e, EnvelopeError::Malformed { .. }),
            "{bad:?}: {e:?}"
        );
        let code = serde_json::to_value(e.reject_reason()).expect("json")["code"].clone();
        assert_eq!(code, json!("malformed"));
    }
}

#[test]
fn a_manifest_round_trips_through_its_envelope() {
    let m = fleet_proto::chunk::build_manifest(
        &vec![5u8; 10_000][..],
        4096,
        "fleet-test",
        Version::new(1, 2, 0),
        "fleet-1.2.0.raucb",
        &Limits::DEFAULT,
    )
    .expect("builds");
    let bytes = envelope::seal_json(Kind::Manifest, &m, &signer(2)).expect("json");
    let o =
        envelope::open_json::<BundleManifest>(&bytes, Kind::Manifest, &trusted(), &Limits::DEFAULT)
            .expect("opens");
    assert_eq!(o.value, m);
    assert_eq!(o.key_id, envelope::key_id(&signer(2).verifying_key()));
}

#[test]
fn public_keys_parse_from_hex_and_garbage_is_refused() {
    let pk = signer(1).verifying_key();
    let parsed = TrustedKeys::parse_public_hex(&format!("{}\n", hex::encode(pk.as_bytes())))
        .expect("parses");
    assert_eq!(parsed, pk);
    assert!(TrustedKeys::parse_public_hex("abcd").is_err());
    assert!(TrustedKeys::parse_public_hex(&"zz".repeat(32)).is_err());
    let _: KeyId = envelope::key_id(&parsed);
}

#[test]
fn an_unverified_read_accepts_any_signer_but_keeps_every_other_check() {
    let limits = Limits::DEFAULT;
    let read = |bytes: &[u8]| envelope::read_unverified_json::<Offer>(bytes, Kind::Offer, &limits);
    // An untrusted signer and a broken signature are no obstacle to reading (for display).
    let stranger = envelope::seal_json(Kind::Offer, &offer(), &signer(9)).expect("serializes");
    assert_eq!(read(&stranger).expect("read"), offer());
    let bad_sig = edit(|v| {
        let sig = v["sig"].as_str().expect("sig").to_owned();
        v["sig"] = json!(flip_b64(&sig, 5));
    });
    assert_eq!(read(&bad_sig).expect("read"), offer());
    assert!(open(&bad_sig).is_err(), "verification still refuses it");
    // Everything before the signature is checked as by `open`.
    assert!(matches!(
        envelope::read_unverified(&sealed(), Kind::Manifest, &limits),
        Err(EnvelopeError::WrongKind { .. })
    ));
    assert!(matches!(
        read(&edit(|v| v["v"] = json!(2))),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
    assert!(matches!(
        read(&edit(|v| v["extra"] = json!(1))),
        Err(EnvelopeError::Malformed { .. })
    ));
    assert!(matches!(
        read(&edit(|v| v["payload"] = json!("%%%"))),
        Err(EnvelopeError::BadBase64 { field: "payload" })
    ));
    let small = Limits {
        max_offer_bytes: 10,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        envelope::read_unverified(&sealed(), Kind::Offer, &small),
        Err(EnvelopeError::TooLarge { .. })
    ));
    let not_an_offer = envelope::seal(Kind::Offer, b"{\"x\":1}", &signer(1));
    assert!(matches!(
        read(&not_an_offer),
        Err(EnvelopeError::BadPayload {
            kind: Kind::Offer,
            ..
        })
    ));
}
