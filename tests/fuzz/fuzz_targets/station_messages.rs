//! What the operator tools read from stations (retained state, events, presence) and every
//! topic string a station or tool is handed by the broker.
#![no_main]
use fleet_proto::{Limits, Presence, Topic, payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::DEFAULT;
    if let Ok(state) = payload::decode_state(data, &limits) {
        let bytes = payload::encode(&state);
        payload::decode_state(&bytes, &limits).expect("an encoded state decodes");
    }
    if let Ok(event) = payload::decode_event(data, &limits) {
        let _ = payload::encode(&event);
    }
    let _ = Presence::parse(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(topic) = Topic::parse(text)
    {
        let _ = topic.is_retained();
    }
});
