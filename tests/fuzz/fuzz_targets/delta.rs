//! The delta path's readers (ADR 0012): a signed delta description and a signed compressed
//! bundle's description, a patch rebuilt against a fixed base and a compressed file decoded
//! with none through the real `fleet_updated::rebuild::rebuild` (mapped files, window cap,
//! output bounded), and the kept base's record read back from disk.
#![no_main]
use std::sync::OnceLock;

use fleet_proto::delta::{CompressedDescription, DeltaDescription, frame_window_log};
use fleet_proto::{Kind, Limits, envelope};
use fleet_updated::base::BaseStore;
use libfuzzer_sys::fuzz_target;

/// The fixed base the fuzzed patches apply to.
const BASE: &[u8] = b"fleet base bundle: a few kilobytes of text the patches may reference. \
    The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrstuvwxyz.";
/// The most a patch may make here.
const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = fleet_fuzz::scratch("delta");
        std::fs::write(d.join("base"), BASE).expect("base");
        d
    });
    // As a description (signed payload bytes).
    let sealed = envelope::seal(Kind::Delta, data, &fleet_fuzz::signing_key());
    if let Ok(o) = envelope::open_json::<DeltaDescription>(
        &sealed,
        Kind::Delta,
        &fleet_fuzz::trusted(),
        &Limits::DEFAULT,
    ) && o.value.validate(&Limits::DEFAULT).is_ok()
    {
        let _ = o.value.facts();
    }
    let sealed = envelope::seal(Kind::Compressed, data, &fleet_fuzz::signing_key());
    if let Ok(o) = envelope::open_json::<CompressedDescription>(
        &sealed,
        Kind::Compressed,
        &fleet_fuzz::trusted(),
        &Limits::DEFAULT,
    ) && o.value.validate(&Limits::DEFAULT).is_ok()
    {
        let _ = o.value.facts();
    }
    // As a patch, and as a compressed file: never more than the limit, never a panic.
    let _ = frame_window_log(data);
    if !data.is_empty() {
        std::fs::write(dir.join("patch"), data).expect("patch");
        let base = dir.join("base");
        for reference in [Some(base.as_path()), None] {
            if let Ok(r) = fleet_updated::rebuild::rebuild(
                reference,
                &dir.join("patch"),
                &dir.join("out"),
                20,
                LIMIT,
            ) {
                assert!(r.size <= LIMIT);
            }
        }
    }
    // As the kept base's record.
    let store = BaseStore::under(dir);
    std::fs::create_dir_all(store.dir()).expect("base dir");
    std::fs::write(store.dir().join("kept.json"), data).expect("record");
    let _ = store.find();
});
