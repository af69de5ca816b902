//! The station state journal as `fleet-updated` reads it back after a power cut: any bytes in
//! `fleet/updated/journal.json`, loaded through the real `Journal::load`.
#![no_main]
use std::sync::OnceLock;

use fleet_core::update::State;
use fleet_updated::journal::Journal;
use libfuzzer_sys::fuzz_target;

/// The daemon's journal record (`fleet-updated`'s private `Saved`), field for field.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(dead_code)]
struct Saved {
    engine: State,
    state_seq: u64,
    event_seq: u64,
}

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| fleet_fuzz::scratch("journal"));
    let journal = Journal::under(dir);
    let path = journal.path().to_path_buf();
    std::fs::create_dir_all(path.parent().expect("journal has a parent")).expect("journal dir");
    std::fs::write(&path, data).expect("write journal");
    if let Ok(Some(saved)) = journal.load::<Saved>() {
        // A state read back is one the engine can keep running from: it saves and loads again.
        journal.save(&saved.engine).expect("save a loaded state");
    }
});
