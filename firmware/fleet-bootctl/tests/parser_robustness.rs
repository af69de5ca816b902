//! The parsers that read files from disk (autoboot.txt, the attempt record, the U-Boot env)
//! never panic on arbitrary input, and accept only what they would write themselves.
use fleet_bootctl::uenv;
use fleet_core::boot::autoboot::{Autoboot, BootPartitions};
use fleet_core::boot::tryboot::Record;
use proptest::prelude::*;

proptest! {
    #[test]
    fn autoboot_parser_never_panics_and_accepts_only_what_renders_back(text in "(\\[all\\]|\\[tryboot\\]|tryboot_a_b=[01]|boot_partition=[0-9]|#.*|\\s|[a-z=]){0,12}") {
        let partitions = BootPartitions::default();
        if let Ok(parsed) = Autoboot::parse(&text, &partitions) {
            prop_assert_eq!(Autoboot::parse(&parsed.render(&partitions), &partitions), Ok(parsed));
        }
    }

    #[test]
    fn autoboot_parser_never_panics_on_any_string(text in ".{0,300}") {
        let _ = Autoboot::parse(&text, &BootPartitions::default());
    }

    #[test]
    fn record_parser_never_panics_and_round_trips_what_it_accepts(text in "((slot|state|attempts-left|x)=(A|B|good|bad|trial|[0-9]{1,3})?\\n?){0,4}") {
        if let Ok(r) = Record::parse(&text) {
            prop_assert_eq!(Record::parse(&r.render()), Ok(r));
        }
    }

    #[test]
    fn env_decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = uenv::decode(&bytes, 256);
    }

    #[test]
    fn env_decoder_reads_whatever_crc_valid_entries_it_is_given(entries in proptest::collection::vec(any::<u8>(), 0..250)) {
        let mut image = vec![0u8; 256];
        image[4..4 + entries.len()].copy_from_slice(&entries);
        let crc = uenv::crc32(&image[4..]);
        image[..4].copy_from_slice(&crc.to_le_bytes());
        if let Ok(env) = uenv::decode(&image, 256) {
            // Whatever decodes encodes back to something that decodes the same.
            if let Ok(again) = uenv::encode(&env, 256) {
                prop_assert_eq!(uenv::decode(&again, 256), Ok(env));
            }
        }
    }
}
