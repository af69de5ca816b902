//! Signed configuration pushes as a station takes them (ADR 0011): opened on the station's own
//! topic, decided against its scope, sequence and the documented keys, applied to a layer.
#![no_main]
use std::collections::BTreeMap;

use fleet_core::config_push::{apply_push, decide_config_push, kind_of};
use fleet_proto::config_push::{config_topic, open_config_push};
use fleet_proto::{Kind, Limits, envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = fleet_fuzz::signing_key();
    let trusted = fleet_fuzz::trusted();
    let sealed = envelope::seal(Kind::Config, data, &key);
    let Ok(peek) = envelope::open_json::<fleet_core::config_push::ConfigPush>(
        &sealed,
        Kind::Config,
        &trusted,
        &Limits::DEFAULT,
    ) else {
        return;
    };
    // On its own topic it opens; the signed content decides the rest.
    let topic = config_topic(&peek.value.scope, peek.value.daemon);
    let opened = open_config_push(&topic, &sealed, &trusted, &Limits::DEFAULT)
        .expect("a push opens on the topic its own scope and daemon name");
    let push = opened.value;
    let station = fleet_fuzz::station();
    for last in [None, Some(5)] {
        match decide_config_push(&station, last, &push) {
            Ok(()) => {
                assert!(last.is_none_or(|l| push.sequence > l));
                for k in push.set.keys().chain(push.unset.iter()) {
                    assert!(
                        kind_of(push.daemon, k).is_some(),
                        "accepted an undocumented key {k}"
                    );
                }
                let layer = apply_push(&BTreeMap::new(), &push);
                assert!(layer.len() <= push.set.len());
            }
            Err(refused) => {
                let _ = (refused.to_string(), refused.code());
            }
        }
    }
});
