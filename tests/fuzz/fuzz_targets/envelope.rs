//! Any bytes on an offer, manifest or rotation topic, opened as an envelope of each kind.
#![no_main]
use fleet_proto::{Kind, Limits, envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let trusted = fleet_fuzz::trusted();
    for kind in [Kind::Offer, Kind::Manifest] {
        match envelope::open(data, kind, &trusted, &Limits::DEFAULT) {
            // The fuzzer cannot forge an ed25519 signature: an opened envelope means a bug.
            Ok(_) => panic!("an unsigned input opened as {kind}"),
            Err(e) => {
                let _ = e.reject_reason();
                let _ = e.to_string();
            }
        }
    }
});
