//! Contract with fleet-recorderd: segments written, promoted and crash-repaired by the recorder's
//! own code are found, parsed and indexed with the recorder's metadata.
#![allow(clippy::unwrap_used)]

use fleet_recorderd::guano::{ClosedBy, SegmentMeta};
use fleet_recorderd::segment::segment_name;
use fleet_recorderd::wav::{SegmentFile, WavFormat};
use fleet_retentiond::{archive, index::Index, name, reconcile};

fn meta(seq: u64, wall_unix_ms: i64, trusted: bool) -> SegmentMeta {
    SegmentMeta {
        station: "st 1".into(),
        device: "mic_0".into(),
        make: None,
        model: None,
        serial: None,
        position: None,
        elevation_m: None,
        rate: 48_000,
        channels: 1,
        seq,
        wall_unix_ms,
        clock_trusted: trusted,
        monotonic_ns: 1,
        stream_frame: 0,
        utc_offset_minutes: 60,
        file_name: segment_name(wall_unix_ms, "st 1", "mic_0", seq),
        gap_before: None,
    }
}

#[test]
fn segments_the_recorder_promotes_and_repairs_are_indexed_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join(".buffer");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&buffer).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let fmt = WavFormat {
        rate: 48_000,
        channels: 1,
        bits: 16,
    };
    let samples = vec![0u8; 48_000 * 2]; // one second

    // A finished segment, promoted by the recorder.
    let m = meta(41, 1_795_373_580_123, true);
    let mut seg = SegmentFile::create(&buffer, fmt, &m).unwrap();
    seg.append(&samples).unwrap();
    seg.finish(&data, ClosedBy::Length, None).unwrap();

    // A segment left open by a crash, then repaired and promoted by the recorder's recovery.
    let m2 = meta(42, 1_795_373_581_123, false);
    let mut open = SegmentFile::create(&buffer, fmt, &m2).unwrap();
    open.append(&samples[..48_000]).unwrap();
    open.sync_data().unwrap();
    drop(open);
    let repairs = fleet_recorderd::recovery::recover(&buffer, &data).unwrap();
    assert_eq!(repairs.len(), 1);

    let found = archive::scan(&data, 4).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let by_name = name::parse(&m.file_name).unwrap();
    assert_eq!(by_name.sequence, Some(41));
    assert_eq!(by_name.station.as_deref(), Some("st-1"));
    assert_eq!(by_name.device.as_deref(), Some("mic-0"));
    assert_eq!(by_name.start_unix_ms, Some(1_795_373_580_123));

    let first = archive::describe(&data, &m.file_name).unwrap();
    assert_eq!(first.sequence, 41);
    assert_eq!(
        (first.station.as_str(), first.device.as_str()),
        ("st 1", "mic_0")
    );
    assert_eq!(first.start_unix_ms, Some(1_795_373_580_123));
    assert!(first.start_trusted);
    assert_eq!(first.sample_rate, Some(48_000));
    assert_eq!(first.duration_ms, Some(1000));
    assert!(!first.repaired);

    let second = archive::describe(&data, &m2.file_name).unwrap();
    assert_eq!(second.sequence, 42);
    assert!(!second.start_trusted);
    assert!(second.repaired, "crash-repaired segments are marked");
    assert_eq!(second.duration_ms, Some(500));

    let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
    let report = reconcile::reconcile(&mut index, &data, None, 0.5, 4, 100, &[]).unwrap();
    assert_eq!(report.adopted, 2);
    let snap = index.snapshot().unwrap();
    assert_eq!(snap.len(), 2);
    assert!(snap.iter().all(|r| r.size_bytes > 48_000));
}
