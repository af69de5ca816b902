//! Rollout controls and records: signed control payloads taken and merged as a station does,
//! signed rollout records as fleetctl reads them back from the broker, and the controls file a
//! station reads from /data after a power cut.
#![no_main]
use std::collections::BTreeMap;
use std::sync::OnceLock;

use fleet_core::ids::{UpdateId, Version};
use fleet_core::rollout::{Control, Effective, accept_control, decide_control};
use fleet_proto::rollout::RolloutRecord;
use fleet_proto::{Kind, Limits, envelope};
use fleet_updated::journal::Journal;
use libfuzzer_sys::fuzz_target;

/// fleet-updated's `controls.json` record (its private `SavedControls`), field for field.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SavedControls {
    #[serde(default)]
    controls: BTreeMap<String, Control>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let key = fleet_fuzz::signing_key();
    let trusted = fleet_fuzz::trusted();
    match which % 3 {
        0 => {
            let sealed = envelope::seal(Kind::Control, rest, &key);
            let Ok(opened) =
                envelope::open_json::<Control>(&sealed, Kind::Control, &trusted, &Limits::DEFAULT)
            else {
                return;
            };
            let c = opened.value;
            let station = fleet_fuzz::station();
            for last in [None, Some(5)] {
                if let Err(refused) = accept_control(&station, last, &c) {
                    // Refusals are reported: they must render.
                    let _ = refused.to_string();
                }
            }
            let effective = Effective::merge([&c, &c]);
            let update = UpdateId::new("2-0-0-5a5a5a5a").expect("a valid id");
            for version in [Version::new(1, 0, 0), Version::new(9, 9, 9)] {
                if let Err(reason) = decide_control(&effective, &update, &version) {
                    serde_json::to_vec(&reason).expect("a reject reason serializes");
                }
            }
            let bytes = serde_json::to_vec(&c).expect("a control serializes");
            let again: Control =
                serde_json::from_slice(&bytes).expect("a serialized control parses");
            assert_eq!(again, c);
        }
        1 => {
            let sealed = envelope::seal(Kind::Rollout, rest, &key);
            let Ok(opened) = envelope::open_json::<RolloutRecord>(
                &sealed,
                Kind::Rollout,
                &trusted,
                &Limits::DEFAULT,
            ) else {
                return;
            };
            let bytes = serde_json::to_vec(&opened.value).expect("a record serializes");
            let again: RolloutRecord =
                serde_json::from_slice(&bytes).expect("a serialized record parses");
            assert_eq!(again, opened.value);
        }
        _ => {
            static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
            let dir = DIR.get_or_init(|| fleet_fuzz::scratch("controls"));
            let file = Journal::named(dir, "controls.json");
            let path = file.path().to_path_buf();
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("controls dir");
            std::fs::write(&path, rest).expect("write controls");
            if let Ok(Some(saved)) = file.load::<SavedControls>() {
                let _ = Effective::merge(saved.controls.values());
            }
        }
    }
});
