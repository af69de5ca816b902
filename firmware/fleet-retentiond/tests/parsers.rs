//! The parsers that read from disk never panic, loop or over-read, whatever the input.
#![allow(clippy::unwrap_used)]

use fleet_retentiond::{name, wav};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_file_name_parses_or_is_refused_without_panicking(s in ".{0,80}") {
        let _ = name::parse(&s);
        let _ = name::parse(&format!("{s}.wav"));
    }

    #[test]
    fn recorder_like_names_round_trip_their_sequence(
        seq in 0u64..100_000_000, station in "[a-z0-9-]{1,12}", device in "[a-z0-9-]{1,12}",
    ) {
        let n = format!("20261122T185300.123Z_{station}_{device}_{seq:08}.wav");
        let info = name::parse(&n).unwrap();
        prop_assert_eq!(info.sequence, Some(seq));
        prop_assert_eq!(info.station.as_deref(), Some(station.as_str()));
        prop_assert_eq!(info.device.as_deref(), Some(device.as_str()));
    }

    #[test]
    fn any_bytes_read_as_a_wav_without_panicking(
        body in prop::collection::vec(any::<u8>(), 0..512), riff_header in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        let mut bytes = Vec::new();
        if riff_header {
            bytes.extend_from_slice(b"RIFF\xff\xff\xff\xffWAVE");
        }
        bytes.extend_from_slice(&body);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(info) = wav::read(&path) {
            if let Some(d) = info.data_bytes {
                prop_assert!(d <= bytes.len() as u64);
            }
            let _ = info.duration_ms();
        }
    }
}
