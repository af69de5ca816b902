//! The JSON examples in docs/reference/mqtt-protocol.md parse into the real types (and the
//! example envelope verifies), so the contract document cannot drift from the code.
mod common;

use common::{blocks, doc};

use fleet_core::update::{Offer, Report};
use fleet_proto::envelope::{self, Kind, TrustedKeys};
use fleet_proto::payload::{self, StationEvent, StationState};
use fleet_proto::{BundleManifest, Limits};

#[test]
fn the_documented_offer_and_manifest_parse_and_agree() {
    let d = doc();
    let offers = blocks(&d, "offer");
    let manifests = blocks(&d, "manifest");
    assert_eq!((offers.len(), manifests.len()), (1, 1));
    let o: Offer = serde_json::from_str(&offers[0]).expect("documented offer parses");
    let m: BundleManifest =
        serde_json::from_str(&manifests[0]).expect("documented manifest parses");
    m.validate(&Limits::DEFAULT)
        .expect("documented manifest is valid");
    m.matches_offer(&o)
        .expect("documented manifest matches the documented offer");
}

#[test]
fn the_documented_envelope_verifies_with_the_documented_key_and_carries_the_offer() {
    let d = doc();
    let env = blocks(&d, "envelope");
    assert_eq!(env.len(), 1);
    let key = TrustedKeys::parse_public_hex(
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
    )
    .expect("documented key parses");
    assert!(d.contains("8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"));
    let trusted: TrustedKeys = [key].into_iter().collect();
    let opened = envelope::open_json::<Offer>(
        env[0].trim().as_bytes(),
        Kind::Offer,
        &trusted,
        &Limits::DEFAULT,
    )
    .expect("documented envelope verifies");
    let documented: Offer =
        serde_json::from_str(&blocks(&d, "offer")[0]).expect("documented offer parses");
    assert_eq!(opened.value, documented);
    assert_eq!(opened.key_id, envelope::key_id(&key));
}

#[test]
fn the_documented_state_and_events_parse() {
    let d = doc();
    let states = blocks(&d, "state");
    assert_eq!(states.len(), 1);
    let s: StationState =
        payload::decode_state(states[0].as_bytes(), &Limits::DEFAULT).expect("state parses");
    assert!(s.progress.is_some());
    let delivery = s.delivery.expect("the sample shows a delivery");
    assert_eq!(
        delivery.transport,
        fleet_core::update::delta::DeliveryKind::Delta
    );
    let p = s.progress.expect("progress");
    assert_eq!(
        (p.done_bytes, p.total_bytes),
        (delivery.received_bytes, delivery.expected_bytes),
        "with a delta, progress counts the patch"
    );
    assert!(s.kept_base.is_some());
    let events = blocks(&d, "event");
    assert_eq!(events.len(), 3);
    let parsed: Vec<StationEvent> = events
        .iter()
        .map(|e| payload::decode_event(e.as_bytes(), &Limits::DEFAULT).expect("event parses"))
        .collect();
    assert!(matches!(parsed[0].event, Report::HealthFailed { .. }));
    assert!(matches!(
        &parsed[1].event,
        Report::TransportChosen { reason: Some(r), .. } if r.code() == "delta-failed"
    ));
    assert!(matches!(parsed[2].event, Report::OfferRejected { .. }));
}

/// Every variant name of a tagged enum `T`, as serde spells it: asking for a variant that
/// does not exist makes serde list them all ("unknown variant `x`, expected one of `a`, ...").
fn variants<T: serde::de::DeserializeOwned + std::fmt::Debug>(tag: &str) -> Vec<String> {
    let probe = serde_json::json!({ tag: "no-such-variant" });
    let err = serde_json::from_value::<T>(probe)
        .expect_err("an unknown variant is refused")
        .to_string();
    let expected = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("no variant list in {err:?}"))
        .1;
    let names: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!names.is_empty(), "no variants in {err:?}");
    names
}

/// The codes in the first column of the tables under the heading that starts with `heading`,
/// up to the next heading.
fn table_codes(doc: &str, heading: &str) -> Vec<String> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(heading));
    assert!(
        lines.next().is_some(),
        "no heading starting with {heading:?} in the document"
    );
    let codes: Vec<String> = lines
        .take_while(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(code, _)| code.to_owned()))
        .collect();
    assert!(!codes.is_empty(), "no code table under {heading:?}");
    codes
}

fn same_codes(doc: &str, heading: &str, code: Vec<String>) {
    let documented = table_codes(doc, heading);
    let missing: Vec<&String> = code.iter().filter(|c| !documented.contains(c)).collect();
    let unknown: Vec<&String> = documented.iter().filter(|c| !code.contains(c)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{heading}: codes a station can send but the document does not list: {missing:?}; \
         codes the document lists that do not exist: {unknown:?}"
    );
    let mut sorted = documented.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        documented.len(),
        "{heading}: a code listed twice"
    );
}

#[test]
fn every_code_a_station_can_send_is_in_the_document_and_every_documented_code_exists() {
    use fleet_core::trust::RotationReject;
    use fleet_core::update::{DownloadFailure, FallbackCause, RejectReason, VerifyFailure};
    let d = doc();
    same_codes(&d, "### Reject codes", variants::<RejectReason>("code"));
    same_codes(
        &d,
        "#### Rotation codes",
        variants::<RotationReject>("code"),
    );
    same_codes(
        &d,
        "### Download failure codes",
        variants::<DownloadFailure>("code"),
    );
    same_codes(
        &d,
        "### Verify failure codes",
        variants::<VerifyFailure>("code"),
    );
    same_codes(&d, "### Fallback causes", variants::<FallbackCause>("code"));
    same_codes(&d, "### Station events", variants::<Report>("kind"));
}

#[test]
fn the_documented_detail_sentences_are_the_ones_a_station_sends() {
    // The examples table under the offer: each payload change gives exactly the documented
    // `detail` (signed, opened and parsed as a station does).
    let d = doc();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let trusted: TrustedKeys = [key.verifying_key()].into_iter().collect();
    let offer: serde_json::Value =
        serde_json::from_str(&blocks(&d, "offer")[0]).expect("documented offer parses");
    let cases: [(&str, serde_json::Value); 4] = [
        ("expires-at", serde_json::Value::Null),
        ("rollout-percent", serde_json::json!(0)),
        (
            "target",
            serde_json::json!({"device": "stn-1", "group": "canary"}),
        ),
        ("sequence", serde_json::Value::Null),
    ];
    for (field, value) in cases {
        let text = if field == "sequence" && value.is_null() {
            // 2^64 does not fit a JSON value here: write it into the text.
            offer.to_string().replace(
                "\"sequence\":1763812800",
                "\"sequence\":18446744073709551616",
            )
        } else {
            let mut o = offer.clone();
            o[field] = value;
            o.to_string()
        };
        let sealed = envelope::seal(Kind::Offer, text.as_bytes(), &key);
        let err = envelope::open_json::<Offer>(&sealed, Kind::Offer, &trusted, &Limits::DEFAULT)
            .expect_err("refused");
        let fleet_core::update::RejectReason::Malformed { detail } = err.reject_reason() else {
            panic!("{field}: not malformed: {err:?}");
        };
        let documented = format!("| `` {detail} `` |");
        assert!(
            d.contains(&documented),
            "{field}: the station says {detail:?}, which the document does not show"
        );
    }
}

/// The topics of the document's tables with example ids filled in.
fn documented_topics(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `fleet/v1/"))
        .filter_map(|l| l.split('`').next())
        .map(|t| {
            format!("fleet/v1/{t}")
                .replace("{device-id}", "stn-0042")
                .replace("{group-id}", "canary")
                .replace("{update-id}", "rel-1")
                .replace("{index}", "3")
                .replace("{daemon}", "recorderd")
                .replace(
                    "{bundle-id}",
                    "3eec6f2df36b88a1a97c03224253e9d0c59f2696ff7b145203a5d43c736bc7e0",
                )
        })
        .collect()
}

#[test]
fn topic_parse_accepts_the_update_path_health_and_log_topics_and_no_other_documented_one() {
    let topics = documented_topics(&doc());
    assert_eq!(topics.len(), 20, "{topics:?}");
    let parsed: Vec<&String> = topics
        .iter()
        .filter(|t| fleet_proto::Topic::parse(t).is_ok())
        .collect();
    // Seven of the update path, health and the two remote-log topics.
    assert_eq!(parsed.len(), 10, "{parsed:?}");
    for t in parsed {
        assert!(
            !t.contains("control")
                && !t.contains("rotation")
                && !t.contains("rollouts")
                && !t.contains("/config"),
            "{t}"
        );
    }
}

#[test]
fn the_documented_config_push_is_one_a_station_of_its_group_takes() {
    let d = doc();
    let pushes = blocks(&d, "config-push");
    assert_eq!(pushes.len(), 1);
    let p: fleet_core::config_push::ConfigPush =
        serde_json::from_str(&pushes[0]).expect("documented push parses");
    let station = fleet_core::update::Station {
        device_id: fleet_core::ids::DeviceId::new("stn-0042").expect("id"),
        groups: vec![fleet_core::ids::GroupId::new("canary").expect("id")],
        compatible: "fleet-raspberrypi5".into(),
    };
    fleet_core::config_push::decide_config_push(&station, Some(6), &p)
        .expect("documented push is accepted");
    let topic = fleet_proto::config_push::config_topic(&p.scope, p.daemon);
    assert!(d.contains("`fleet/v1/groups/{group-id}/config/{daemon}`"));
    assert_eq!(topic, "fleet/v1/groups/canary/config/recorderd");
}

#[test]
fn the_documented_config_events_parse_and_are_no_update_events() {
    use fleet_proto::config_push::{ConfigOutcome, decode_config_event};
    let d = doc();
    let events = blocks(&d, "config-event");
    assert_eq!(events.len(), 2);
    let parsed: Vec<_> = events
        .iter()
        .map(|e| decode_config_event(e.as_bytes(), &Limits::DEFAULT).expect("config event parses"))
        .collect();
    assert!(matches!(
        parsed[0].outcome,
        ConfigOutcome::ConfigRestored { .. }
    ));
    assert!(
        matches!(&parsed[1].outcome, ConfigOutcome::ConfigRefused { code, .. } if code == "replayed")
    );
    for e in &events {
        assert!(payload::decode_event(e.as_bytes(), &Limits::DEFAULT).is_err());
    }
    // Every outcome the station reports is documented.
    for name in variants::<ConfigOutcome>("event") {
        assert!(
            d.contains(&format!("`{name}`")),
            "{name} is not in the protocol document"
        );
    }
}

#[test]
fn the_documented_compressed_bundle_decodes_to_the_documented_offer() {
    use fleet_proto::delta::{CompressedDescription, compressed_topic, parse_compressed_topic};
    let d = doc();
    let samples = blocks(&d, "compressed");
    assert_eq!(samples.len(), 1);
    let c: CompressedDescription = fleet_proto::json::parse_signed(samples[0].as_bytes())
        .expect("documented compressed description parses");
    c.validate(&Limits::DEFAULT)
        .expect("documented description is valid");
    let o: Offer = serde_json::from_str(&blocks(&d, "offer")[0]).expect("documented offer parses");
    assert_eq!((c.bundle_id, c.bundle_size), (o.bundle_id, o.bundle_size));
    let topic = compressed_topic(&c.bundle_id);
    assert_eq!(parse_compressed_topic(&topic), Some(c.bundle_id));
    assert!(fleet_proto::Topic::parse(&topic).is_err());
    assert!(d.contains(&format!(
        "| `{}` |",
        "fleet/v1/bundles/{bundle-id}/compressed"
    )));
}

#[test]
fn the_documented_delta_rebuilds_the_documented_offer_and_its_reasons_are_listed() {
    use fleet_core::update::delta::FullReason;
    use fleet_proto::delta::{DeltaDescription, delta_topic, parse_delta_topic};
    let d = doc();
    let deltas = blocks(&d, "delta");
    assert_eq!(deltas.len(), 1);
    let delta: DeltaDescription =
        fleet_proto::json::parse_signed(deltas[0].as_bytes()).expect("documented delta parses");
    delta
        .validate(&Limits::DEFAULT)
        .expect("documented delta is valid");
    let o: Offer = serde_json::from_str(&blocks(&d, "offer")[0]).expect("documented offer parses");
    assert_eq!(
        (delta.bundle_id, delta.bundle_size),
        (o.bundle_id, o.bundle_size)
    );
    let topic = delta_topic(&delta.bundle_id, &delta.base_id);
    assert_eq!(
        parse_delta_topic(&topic),
        Some((delta.bundle_id, delta.base_id))
    );
    assert!(fleet_proto::Topic::parse(&topic).is_err());
    same_codes(
        &d,
        "#### Full-transfer reasons",
        variants::<FullReason>("code"),
    );
}
