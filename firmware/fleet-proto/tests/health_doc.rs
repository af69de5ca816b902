//! The health (and log) examples in docs/reference/mqtt-protocol.md parse into the real types
//! and pass their validation, so the document cannot drift from the code.
mod common;

use common::{blocks, doc};

use fleet_core::health::{Microphone, ProblemPolicy, decide_problems};
use fleet_proto::health;

#[test]
fn the_documented_health_message_parses_validates_and_shows_its_one_problem() {
    let d = doc();
    let samples = blocks(&d, "health");
    assert_eq!(samples.len(), 1);
    let h = health::decode(samples[0].as_bytes()).expect("documented health message parses");
    assert_eq!(h.device_id.as_str(), "stn-0042");
    assert!(samples[0].len() < health::MAX_HEALTH_BYTES);
    let s = h.signals(Some(60));
    assert_eq!(s.microphone, Microphone::Ok);
    // The example's under-voltage since boot is its only problem.
    let problems = decide_problems(&s, &ProblemPolicy::default());
    assert_eq!(
        problems.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["under-voltage"]
    );
    // Encoding it again stays within the limit and decodes to the same message.
    let again = health::decode(&health::encode(&h).expect("encodes")).expect("decodes");
    assert_eq!(again, h);
}

#[test]
fn the_documented_log_request_and_replies_parse() {
    use fleet_core::ids::DeviceId;
    use fleet_core::time::Now;
    use fleet_proto::logs::{self, LogOutcome, LogRequest};
    let d = doc();
    let reqs = blocks(&d, "log-request");
    assert_eq!(reqs.len(), 1);
    let r: LogRequest = serde_json::from_str(&reqs[0]).expect("documented request parses");
    let me = DeviceId::new("stn-0042").expect("id");
    logs::admit(&r, &me, None, Now::trusted(0, r.issued_at + 1)).expect("it is admitted");
    let replies = blocks(&d, "log-reply");
    assert_eq!(replies.len(), 2);
    let outcomes: Vec<LogOutcome> = replies
        .iter()
        .map(|b| {
            logs::decode_reply(b.as_bytes())
                .expect("documented reply parses")
                .outcome
        })
        .collect();
    assert!(matches!(outcomes[0], LogOutcome::Lines { last: true, .. }));
    assert!(matches!(outcomes[1], LogOutcome::Refused { .. }));
}
