//! Properties of the parts that decide what ends up in a recording, and of the header parser that
//! reads whatever a crash left on disk.

use fleet_recorderd::recovery::{self, Repair};
use fleet_recorderd::segment::plan_split;
use fleet_recorderd::wav::{self, WavFormat};
use proptest::prelude::*;

proptest! {
    #[test]
    fn cutting_by_sample_count_keeps_every_frame_and_makes_equal_segments(
        len in 1u64..5000,
        chunks in prop::collection::vec(0u64..20_000, 0..60),
    ) {
        let mut inside = 0;
        let mut complete = 0u64;
        let mut total = 0u64;
        for chunk in &chunks {
            let mut left = *chunk;
            while left > 0 {
                let s = plan_split(len, inside, left);
                prop_assert!(s.take > 0, "progress on every step");
                inside += s.take;
                left -= s.take;
                total += s.take;
                if s.completes {
                    prop_assert_eq!(inside, len);
                    complete += 1;
                    inside = 0;
                }
            }
        }
        prop_assert_eq!(total, chunks.iter().sum::<u64>());
        prop_assert_eq!(complete * len + inside, total);
        prop_assert!(inside < len);
    }

    #[test]
    fn the_header_parser_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..5000),
    ) {
        let _ = wav::parse_header(&bytes);
    }

    #[test]
    fn headers_round_trip(
        rate in 1000u32..768_001,
        channels in 1u16..33,
        wide in any::<bool>(),
        text in "[A-Za-z0-9|:. \n-]{0,3000}",
        data in 0u64..wav::MAX_DATA_BYTES,
    ) {
        let format = WavFormat { rate, channels, bits: if wide { 32 } else { 16 } };
        let h = wav::header(format, &text, data).expect("fits");
        let p = wav::parse_header(&h).expect("ours");
        prop_assert_eq!(p.format, format);
        prop_assert_eq!(p.data_bytes_declared as u64, data);
        prop_assert_eq!(p.guano_text.as_str(), text.trim_end_matches([' ', '\n']));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn recovery_empties_the_buffer_whatever_a_crash_left_there(
        head in prop::collection::vec(any::<u8>(), 0..6000),
        ours in any::<bool>(),
        samples in 0usize..3000,
    ) {
        let root = tempfile::tempdir().expect("tempdir");
        let (buf, data) = (root.path().join(".buffer"), root.path().join("data"));
        std::fs::create_dir_all(&buf).expect("mkdir");
        std::fs::create_dir_all(&data).expect("mkdir");
        let bytes = if ours {
            let fmt = WavFormat { rate: 48_000, channels: 2, bits: 16 };
            let mut b = wav::header(fmt, "GUANO|Version: 1.0\n", 0).expect("fits").to_vec();
            b.extend(std::iter::repeat_n(7u8, samples));
            b
        } else {
            head
        };
        std::fs::write(buf.join("x.wav"), &bytes).expect("write");
        let out = recovery::recover(&buf, &data).expect("recover");
        prop_assert_eq!(out.len(), 1);
        prop_assert!(!buf.join("x.wav").exists(), "nothing stays in .buffer");
        if let Repair::Promoted { path, frames } = &out[0] {
            prop_assert!(ours);
            prop_assert_eq!(*frames, (samples / 4) as u64);
            let b = std::fs::read(path).expect("read");
            let p = wav::parse_header(&b).expect("ours");
            prop_assert_eq!(p.data_bytes_declared as usize, b.len() - wav::HEADER_LEN);
        }
    }
}
