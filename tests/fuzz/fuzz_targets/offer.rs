//! Signed offer payloads: any bytes, sealed with a trusted key, then opened, parsed and
//! admitted exactly as a station does.
#![no_main]
use fleet_core::time::Now;
use fleet_core::update::{AdmissionContext, Offer, SignatureVerdict, decide_offer};
use fleet_proto::{Kind, Limits, envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = fleet_fuzz::signing_key();
    let sealed = envelope::seal(Kind::Offer, data, &key);
    let trusted = fleet_fuzz::trusted();
    let Ok(opened) = envelope::open_json::<Offer>(&sealed, Kind::Offer, &trusted, &Limits::DEFAULT)
    else {
        return;
    };
    let station = fleet_fuzz::station();
    let installed = fleet_fuzz::installed();
    for last_sequence in [None, Some(10)] {
        let ctx = AdmissionContext {
            station: &station,
            installed: &installed,
            last_sequence,
            max_bundle_bytes: 1 << 30,
        };
        for now in [Now::untrusted(0), Now::trusted(0, 1_700_000_000)] {
            let verdict = SignatureVerdict::Trusted {
                key_id: opened.key_id,
            };
            if let Err(reason) = decide_offer(&ctx, &opened.value, verdict, now) {
                // Reports are published: every reason must serialize.
                serde_json::to_vec(&reason).expect("a reject reason serializes");
            }
        }
    }
    // The offer round-trips through its wire form.
    let bytes = serde_json::to_vec(&opened.value).expect("an offer serializes");
    let again: Offer = serde_json::from_slice(&bytes).expect("a serialized offer parses");
    assert_eq!(again, opened.value);
});
