//! Bundle manifests (signed payload bytes) and chunks checked against them.
#![no_main]
use fleet_proto::{BundleManifest, Kind, Limits, chunk, envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes split the input into a manifest and a chunk.
    if data.len() < 2 {
        return;
    }
    let split = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let (manifest_bytes, chunk_bytes) = data[2..].split_at(split);
    let key = fleet_fuzz::signing_key();
    let sealed = envelope::seal(Kind::Manifest, manifest_bytes, &key);
    let trusted = fleet_fuzz::trusted();
    let Ok(opened) =
        envelope::open_json::<BundleManifest>(&sealed, Kind::Manifest, &trusted, &Limits::DEFAULT)
    else {
        return;
    };
    let manifest = opened.value;
    if manifest.validate(&Limits::DEFAULT).is_err() {
        return;
    }
    let count = manifest.chunk_count();
    for index in [0, 1, count.saturating_sub(1), count, u32::MAX] {
        let _ = manifest.chunk_range(index);
        let _ = chunk::verify_chunk(&manifest, index, chunk_bytes);
    }
    let _ = chunk::verify_bundle(chunk_bytes, &manifest.bundle_id, manifest.size);
});
