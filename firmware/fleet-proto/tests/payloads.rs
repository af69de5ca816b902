//! Payload round trips and limits, chunking and whole-bundle verification.
use fleet_core::ids::{DeviceId, GroupId, UpdateId, Version};
use fleet_core::ports::{BootStatus, SlotStatus};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_core::time::Now;
use fleet_core::update::{
    BundleId, FallbackCause, Outcome, Phase, Policy, RejectReason, Report, State, Station,
    VerifyFailure,
};
use fleet_proto::chunk::{self, ChunkError};
use fleet_proto::payload::{self, PayloadError, Presence, StationEvent, StationState, Timestamp};
use fleet_proto::{BundleManifest, Limits};
use serde_json::json;

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn manifest(data: &[u8], chunk_size: u32) -> BundleManifest {
    chunk::build_manifest(
        data,
        chunk_size,
        "fleet-test",
        Version::new(1, 1, 0),
        "fleet-1.1.0.raucb",
        &Limits::DEFAULT,
    )
    .expect("builds")
}

#[test]
fn a_file_is_cut_into_chunks_that_each_verify_against_the_manifest() {
    for size in [1usize, 4095, 4096, 4097, 3 * 4096, 50_000] {
        let data = bytes(size);
        let m = manifest(&data, 4096);
        assert_eq!(m.size, size as u64);
        assert_eq!(m.chunks.len(), size.div_ceil(4096));
        m.validate(&Limits::DEFAULT).expect("valid");
        let pieces: Vec<&[u8]> = chunk::split(&data, m.chunk_size).collect();
        assert_eq!(pieces.len(), m.chunks.len());
        for (i, piece) in pieces.iter().enumerate() {
            let i = u32::try_from(i).expect("small");
            chunk::verify_chunk(&m, i, piece).expect("chunk verifies");
            let (off, len) = m.chunk_range(i).expect("in range");
            assert_eq!(&data[off as usize..off as usize + len as usize], *piece);
        }
        chunk::verify_bundle(&data[..], &m.bundle_id, m.size).expect("whole file verifies");
    }
}

#[test]
fn corrupt_short_long_and_out_of_range_chunks_are_refused() {
    let data = bytes(10_000);
    let m = manifest(&data, 4096);
    let mut bad = data[..4096].to_vec();
    bad[100] ^= 1;
    assert!(matches!(
        chunk::verify_chunk(&m, 0, &bad),
        Err(ChunkError::HashMismatch { index: 0 })
    ));
    assert!(matches!(
        chunk::verify_chunk(&m, 0, &data[..4095]),
        Err(ChunkError::WrongLength { .. })
    ));
    assert!(matches!(chunk::verify_chunk(&m, 2, &data[8192..]), Ok(())));
    assert!(matches!(
        chunk::verify_chunk(&m, 2, &data[4096..8192]),
        Err(ChunkError::WrongLength { .. })
    ));
    // A valid chunk presented under another index.
    assert!(matches!(
        chunk::verify_chunk(&m, 1, &data[..4096]),
        Err(ChunkError::HashMismatch { index: 1 })
    ));
    assert!(matches!(
        chunk::verify_chunk(&m, 3, &data[..1]),
        Err(ChunkError::IndexOutOfRange { index: 3, count: 3 })
    ));
    assert!(matches!(
        chunk::verify_chunk(&m, u32::MAX, &data[..1]),
        Err(ChunkError::IndexOutOfRange { .. })
    ));
}

#[test]
fn a_whole_file_of_the_wrong_size_or_content_fails_verification() {
    let data = bytes(10_000);
    let m = manifest(&data, 4096);
    assert!(matches!(
        chunk::verify_bundle(&data[..9_999], &m.bundle_id, m.size),
        Err(VerifyFailure::SizeMismatch {
            expected: 10_000,
            actual: 9_999
        })
    ));
    let mut longer = data.clone();
    longer.push(0);
    assert!(matches!(
        chunk::verify_bundle(&longer[..], &m.bundle_id, m.size),
        Err(VerifyFailure::SizeMismatch {
            expected: 10_000,
            actual: 10_001
        })
    ));
    let mut flipped = data.clone();
    flipped[9_999] ^= 0x80;
    assert!(matches!(
        chunk::verify_bundle(&flipped[..], &m.bundle_id, m.size),
        Err(VerifyFailure::HashMismatch { .. })
    ));
}

#[test]
fn manifests_that_break_a_rule_or_a_limit_are_refused() {
    let data = bytes(10_000);
    let good = manifest(&data, 4096);
    let limits = Limits::DEFAULT;
    type Tweak = Box<dyn Fn(&mut BundleManifest)>;
    let cases: Vec<(&str, Tweak)> = vec![
        ("empty", Box::new(|m| m.size = 0)),
        (
            "a chunk hash too few",
            Box::new(|m| {
                m.chunks.pop();
            }),
        ),
        (
            "a chunk hash too many",
            Box::new(|m| {
                let c = m.chunks[0];
                m.chunks.push(c);
            }),
        ),
        ("chunk size too small", Box::new(|m| m.chunk_size = 1)),
        (
            "chunk size too large",
            Box::new(|m| m.chunk_size = 2 * 1024 * 1024),
        ),
        (
            "bundle too large",
            Box::new(|m| m.size = 3 * 1024 * 1024 * 1024),
        ),
        (
            "path in file name",
            Box::new(|m| m.file_name = "../../etc/passwd".into()),
        ),
        (
            "hidden file name",
            Box::new(|m| m.file_name = ".raucb".into()),
        ),
        (
            "slash in file name",
            Box::new(|m| m.file_name = "a/b".into()),
        ),
        ("empty file name", Box::new(|m| m.file_name = String::new())),
        (
            "long file name",
            Box::new(|m| m.file_name = "a".repeat(129)),
        ),
        (
            "empty compatible",
            Box::new(|m| m.compatible = String::new()),
        ),
        (
            "long compatible",
            Box::new(|m| m.compatible = "c".repeat(65)),
        ),
    ];
    for (name, tweak) in cases {
        let mut m = good.clone();
        tweak(&mut m);
        assert!(m.validate(&limits).is_err(), "{name} must be refused");
    }
    let tiny = Limits {
        max_chunks: 2,
        ..Limits::DEFAULT
    };
    assert!(good.validate(&tiny).is_err(), "3 chunks over a limit of 2");
    let small = Limits {
        max_bundle_bytes: 9_999,
        ..Limits::DEFAULT
    };
    assert!(
        chunk::build_manifest(&data[..], 4096, "c", Version::new(1, 0, 0), "f", &small).is_err()
    );
    assert!(
        chunk::build_manifest(
            &b""[..],
            4096,
            "c",
            Version::new(1, 0, 0),
            "f",
            &Limits::DEFAULT
        )
        .is_err()
    );
}

#[test]
fn a_manifest_must_describe_the_offered_bundle() {
    let data = bytes(10_000);
    let m = manifest(&data, 4096);
    let mut offer: fleet_core::update::Offer = serde_json::from_value(json!({
        "update-id": "rel-2", "sequence": 1, "bundle-id": m.bundle_id.to_string(),
        "bundle-size": 10_000, "compatible": "fleet-test", "version": "1.1.0",
        "target": {"group": "canary"}, "rollout-percent": 100, "issued-at": 0
    }))
    .expect("offer");
    m.matches_offer(&offer).expect("matches");
    offer.bundle_size = 9_999;
    assert!(m.matches_offer(&offer).is_err());
    offer.bundle_size = 10_000;
    offer.version = Version::new(1, 1, 1);
    assert!(m.matches_offer(&offer).is_err());
    offer.version = Version::new(1, 1, 0);
    offer.bundle_id = BundleId::from_bytes([0; 32]);
    assert!(m.matches_offer(&offer).is_err());
}

fn engine_state() -> State {
    let mut s = State::new(
        Station {
            device_id: DeviceId::new("stn-0001").expect("valid"),
            groups: vec![GroupId::new("canary").expect("valid")],
            compatible: "fleet-test".into(),
        },
        Policy::default(),
        Slot::A,
        Version::new(1, 0, 0),
    );
    s.last_outcome = Some(Outcome::RolledBack {
        update_id: UpdateId::new("rel-1").expect("valid"),
        bad_slot: Slot::B,
        cause: FallbackCause::HealthCheckFailed {
            check: "mqtt".into(),
            attempts: 3,
        },
    });
    s
}

#[test]
fn station_state_round_trips_and_reflects_the_engine() {
    let mut s = engine_state();
    s.phase = Phase::Downloading {
        job: fleet_core::update::Job {
            update_id: UpdateId::new("rel-2").expect("valid"),
            sequence: 4,
            bundle_id: BundleId::from_bytes([1; 32]),
            bundle_size: 1000,
            version: Version::new(1, 1, 0),
            manifest_hash: None,
            key_id: fleet_core::update::KeyId::from_bytes([1; 8]),
        },
        held_bytes: 250,
    };
    let boot = BootStatus {
        booted: Slot::A,
        primary: Slot::A,
        slots: [
            SlotStatus {
                slot: Slot::A,
                health: SlotHealth::Good,
                attempts_left: 0,
                version: Some(Version::new(1, 0, 0)),
            },
            SlotStatus {
                slot: Slot::B,
                health: SlotHealth::Bad,
                attempts_left: 0,
                version: None,
            },
        ],
    };
    let st = StationState::from_engine(&s, Some(&boot), 17, Now::trusted(5, 1_700_000_000));
    assert_eq!(
        st.progress.map(|p| (p.done_bytes, p.total_bytes)),
        Some((250, 1000))
    );
    assert_eq!(st.update_id.as_ref().map(UpdateId::as_str), Some("rel-2"));
    assert!(st.time_trusted);
    let encoded = payload::encode(&st);
    let json: serde_json::Value = serde_json::from_slice(&encoded).expect("json");
    assert_eq!(json["phase"], "downloading");
    assert_eq!(json["last-outcome"]["result"], "rolled-back");
    assert_eq!(json["last-outcome"]["cause"]["code"], "health-check-failed");
    assert_eq!(payload::decode_state(&encoded, &Limits::DEFAULT), Ok(st));
}

#[test]
fn station_events_round_trip_with_their_kind_and_reason() {
    let e = StationEvent {
        device_id: DeviceId::new("stn-0001").expect("valid"),
        seq: 3,
        at: Timestamp {
            monotonic_ms: 10,
            wall_unix_s: None,
        },
        update_id: Some(UpdateId::new("rel-2").expect("valid")),
        event: Report::OfferRejected {
            update_id: Some(UpdateId::new("rel-2").expect("valid")),
            sequence: Some(3),
            reason: RejectReason::Replayed {
                sequence: 3,
                last_accepted: 9,
            },
        },
    };
    let encoded = payload::encode(&e);
    let json: serde_json::Value = serde_json::from_slice(&encoded).expect("json");
    assert_eq!(json["event"]["kind"], "offer-rejected");
    assert_eq!(json["event"]["reason"]["code"], "replayed");
    assert_eq!(payload::decode_event(&encoded, &Limits::DEFAULT), Ok(e));
}

#[test]
fn oversize_and_unknown_state_and_event_messages_are_refused() {
    let st = StationState::from_engine(&engine_state(), None, 1, Now::untrusted(0));
    let mut v = serde_json::to_value(&st).expect("json");
    v["extra"] = json!(1);
    assert!(matches!(
        payload::decode_state(&serde_json::to_vec(&v).expect("json"), &Limits::DEFAULT),
        Err(PayloadError::Malformed(_))
    ));
    let big = vec![b' '; Limits::DEFAULT.max_state_bytes + 1];
    assert!(matches!(
        payload::decode_state(&big, &Limits::DEFAULT),
        Err(PayloadError::TooLarge { .. })
    ));
    let big = vec![b' '; Limits::DEFAULT.max_event_bytes + 1];
    assert!(matches!(
        payload::decode_event(&big, &Limits::DEFAULT),
        Err(PayloadError::TooLarge { .. })
    ));
    assert!(payload::decode_event(br#"{"device-id":"stn-1","seq":1,"at":{"monotonic-ms":1},"event":{"kind":"no-such-kind"}}"#, &Limits::DEFAULT).is_err());
}

#[test]
fn presence_is_exactly_online_or_offline() {
    assert_eq!(Presence::parse(b"online"), Some(Presence::Online));
    assert_eq!(Presence::parse(b"offline"), Some(Presence::Offline));
    for bad in [&b""[..], b"Online", b"online\n", b"\"online\"", b"gone"] {
        assert_eq!(Presence::parse(bad), None);
    }
    assert_eq!(
        Presence::parse(Presence::Offline.as_bytes()),
        Some(Presence::Offline)
    );
}
