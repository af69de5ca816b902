//! Table-driven tests of offer admission and the offer's wire form.
use crate::ids::{DeviceId, GroupId, UpdateId};
use crate::time::Now;
use crate::update::digest::KeyId;
use crate::update::fixtures::*;
use crate::update::offer::{
    AdmissionContext, Downgrade, Offer, RejectReason, RolloutPercent, SignatureVerdict, Target,
    decide_offer,
};
use crate::update::wave;

fn ctx_decide(offer: &Offer, verdict: SignatureVerdict, now: Now) -> Result<u8, RejectReason> {
    let st = station();
    let installed = v("1.0.0");
    let ctx = AdmissionContext {
        station: &st,
        installed: &installed,
        last_sequence: Some(9),
        max_bundle_bytes: 10_000,
    };
    decide_offer(&ctx, offer, verdict, now).map(|a| a.bucket)
}

fn code(r: &RejectReason) -> String {
    serde_json::to_value(r).expect("serializes")["code"]
        .as_str()
        .expect("has a code")
        .to_owned()
}

/// A percentage this station is outside of for `update`, if any.
fn excluding_percent(update: &UpdateId) -> Option<RolloutPercent> {
    let b = wave::bucket(&station().device_id, update);
    (b > 0).then(|| RolloutPercent::new(b).expect("1..=99"))
}

#[test]
fn offers_are_admitted_or_refused_with_a_specific_reason() {
    let trusted_t = Now::trusted(0, 1_700_000_500);
    let untrusted = Now::untrusted(0);
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Offer)>,
        SignatureVerdict,
        Now,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "a valid offer",
            Box::new(|_| {}),
            trusted(),
            trusted_t,
            None,
        ),
        (
            "unknown key",
            Box::new(|_| {}),
            SignatureVerdict::UnknownKey {
                key_id: KeyId::from_bytes([9; 8]),
            },
            trusted_t,
            Some("unknown-key"),
        ),
        (
            "revoked key",
            Box::new(|_| {}),
            SignatureVerdict::Revoked {
                key_id: KeyId::from_bytes([9; 8]),
            },
            trusted_t,
            Some("revoked-key"),
        ),
        (
            "bad signature",
            Box::new(|_| {}),
            SignatureVerdict::Invalid,
            trusted_t,
            Some("bad-signature"),
        ),
        (
            "empty bundle",
            Box::new(|o| o.bundle_size = 0),
            trusted(),
            trusted_t,
            Some("invalid-offer"),
        ),
        (
            "expiry before issue",
            Box::new(|o| o.expires_at = Some(o.issued_at)),
            trusted(),
            untrusted,
            Some("invalid-offer"),
        ),
        (
            "another device",
            Box::new(|o| o.target = Target::Device(DeviceId::new("stn-0002").expect("valid"))),
            trusted(),
            trusted_t,
            Some("not-for-this-station"),
        ),
        (
            "a group we are in",
            Box::new(|o| o.target = Target::Group(GroupId::new("canary").expect("valid"))),
            trusted(),
            trusted_t,
            None,
        ),
        (
            "a group we are not in",
            Box::new(|o| o.target = Target::Group(GroupId::new("forest").expect("valid"))),
            trusted(),
            trusted_t,
            Some("not-for-this-station"),
        ),
        (
            "other hardware",
            Box::new(|o| o.compatible = "fleet-other".into()),
            trusted(),
            trusted_t,
            Some("incompatible"),
        ),
        (
            "replayed sequence",
            Box::new(|o| o.sequence = 9),
            trusted(),
            trusted_t,
            Some("replayed"),
        ),
        (
            "lower sequence",
            Box::new(|o| o.sequence = 1),
            trusted(),
            trusted_t,
            Some("replayed"),
        ),
        (
            "sequence zero",
            Box::new(|o| o.sequence = 0),
            trusted(),
            trusted_t,
            Some("replayed"),
        ),
        (
            "expired with trusted time",
            Box::new(|o| o.expires_at = Some(1_700_000_100)),
            trusted(),
            trusted_t,
            Some("expired"),
        ),
        (
            "expiring exactly now",
            Box::new(|o| o.expires_at = Some(1_700_000_500)),
            trusted(),
            trusted_t,
            Some("expired"),
        ),
        (
            "not yet expired",
            Box::new(|o| o.expires_at = Some(1_700_000_501)),
            trusted(),
            trusted_t,
            None,
        ),
        (
            "expired but time untrusted",
            Box::new(|o| o.expires_at = Some(1_700_000_100)),
            trusted(),
            untrusted,
            None,
        ),
        (
            "same version",
            Box::new(|o| o.version = v("1.0.0")),
            trusted(),
            trusted_t,
            Some("not-newer"),
        ),
        (
            "older version",
            Box::new(|o| o.version = v("0.9.0")),
            trusted(),
            trusted_t,
            Some("not-newer"),
        ),
        (
            "pre-release of the installed version",
            Box::new(|o| o.version = v("1.0.0-rc.1")),
            trusted(),
            trusted_t,
            Some("not-newer"),
        ),
        (
            "signed downgrade",
            Box::new(|o| {
                o.version = v("0.9.0");
                o.downgrade = Downgrade::Allow;
            }),
            trusted(),
            trusted_t,
            None,
        ),
        (
            "signed reinstall",
            Box::new(|o| {
                o.version = v("1.0.0");
                o.downgrade = Downgrade::Allow;
            }),
            trusted(),
            trusted_t,
            None,
        ),
        (
            "bundle too large",
            Box::new(|o| o.bundle_size = 10_001),
            trusted(),
            trusted_t,
            Some("bundle-too-large"),
        ),
    ];
    for (name, tweak, verdict, now, want) in cases {
        let mut o = offer(10);
        tweak(&mut o);
        let got = ctx_decide(&o, verdict, now);
        match (want, got) {
            (None, Ok(_)) => {}
            (Some(w), Err(r)) => assert_eq!(code(&r), w, "{name}: {r:?}"),
            (w, g) => panic!("{name}: wanted {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn expiry_is_reported_unchecked_when_time_is_untrusted() {
    let st = station();
    let installed = v("1.0.0");
    let ctx = AdmissionContext {
        station: &st,
        installed: &installed,
        last_sequence: None,
        max_bundle_bytes: u64::MAX,
    };
    let mut o = offer(1);
    o.expires_at = Some(1_700_000_100);
    let a = decide_offer(&ctx, &o, trusted(), Now::untrusted(5)).expect("admitted");
    assert!(!a.expiry_checked);
    let a = decide_offer(&ctx, &o, trusted(), Now::trusted(5, 1_700_000_000)).expect("admitted");
    assert!(a.expiry_checked);
}

#[test]
fn a_station_outside_the_wave_joins_when_the_percentage_is_raised() {
    // Find an update id for which this station's bucket is above 0.
    let update = (0..100)
        .map(|i| UpdateId::new(format!("rel-{i}")).expect("valid"))
        .find(|u| excluding_percent(u).is_some())
        .expect("some bucket is above 0");
    let mut o = offer(10);
    o.update_id = update.clone();
    o.rollout_percent = excluding_percent(&update).expect("found above");
    let r = ctx_decide(&o, trusted(), Now::untrusted(0)).expect_err("outside the wave");
    assert_eq!(code(&r), "not-in-wave");
    o.sequence = 11;
    o.rollout_percent = RolloutPercent::ALL;
    assert!(ctx_decide(&o, trusted(), Now::untrusted(0)).is_ok());
}

#[test]
fn rollout_percentages_outside_one_to_a_hundred_are_refused() {
    assert!(RolloutPercent::new(0).is_err());
    assert!(RolloutPercent::new(101).is_err());
    assert!(RolloutPercent::new(1).is_ok());
    assert!(serde_json::from_str::<RolloutPercent>("0").is_err());
    assert!(serde_json::from_str::<RolloutPercent>("300").is_err());
}

#[test]
fn the_offer_json_form_is_kebab_case_and_refuses_unknown_fields() {
    let o = offer(10);
    let json = serde_json::to_value(&o).expect("serializes");
    assert_eq!(json["update-id"], "rel-2");
    assert_eq!(json["rollout-percent"], 100);
    assert_eq!(json["target"]["device"], "stn-0001");
    assert_eq!(json["downgrade"], "refuse");
    let back: Offer = serde_json::from_value(json.clone()).expect("parses");
    assert_eq!(back, o);
    let mut extra = json.clone();
    extra["surprise"] = serde_json::json!(1);
    assert!(serde_json::from_value::<Offer>(extra).is_err());
    let mut missing = json;
    missing.as_object_mut().expect("object").remove("sequence");
    assert!(serde_json::from_value::<Offer>(missing).is_err());
}

#[test]
fn reject_reasons_serialize_with_a_code() {
    let r = RejectReason::Replayed {
        sequence: 3,
        last_accepted: 9,
    };
    let j = serde_json::to_value(&r).expect("serializes");
    assert_eq!(
        j,
        serde_json::json!({"code": "replayed", "sequence": 3, "last-accepted": 9})
    );
    let back: RejectReason = serde_json::from_value(j).expect("parses");
    assert_eq!(back, r);
}
