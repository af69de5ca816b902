//! The station health message and the remote-log messages, as the operator's tools and the
//! station's reporter read them from the broker: never a panic, and what decodes and
//! validates encodes and decodes to the same value.
#![no_main]
use fleet_core::ids::DeviceId;
use fleet_core::time::Now;
use fleet_proto::envelope::{self, Kind, TrustedKeys};
use fleet_proto::logs::{self, LogRequest};
use fleet_proto::{Limits, health};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(h) = health::decode(rest) {
                let bytes = health::encode(&h).expect("a decoded message encodes");
                assert_eq!(health::decode(&bytes).expect("and decodes"), h);
                let _ = fleet_core::health::decide_problems(
                    &h.signals(Some(0)),
                    &fleet_core::health::ProblemPolicy::default(),
                );
            }
        }
        1 => {
            if let Ok(r) = logs::decode_reply(rest) {
                let again = serde_json::to_vec(&r).expect("a reply encodes");
                assert_eq!(logs::decode_reply(&again).expect("and decodes"), r);
            }
        }
        _ => {
            // The station's path: an envelope that cannot verify (no trusted key), then the
            // admission rule over the bare payload.
            let _ = envelope::open_json::<LogRequest>(
                rest,
                Kind::LogRequest,
                &TrustedKeys::new(),
                &Limits::DEFAULT,
            );
            if let Ok(req) = serde_json::from_slice::<LogRequest>(rest) {
                let me = DeviceId::new("stn-1").expect("id");
                let _ = logs::admit(&req, &me, Some(5), Now::trusted(0, 1_790_000_000));
            }
        }
    }
});
