//! The boot-flow files: `autoboot.txt` (Pi 5 tryboot), the attempt record on /data, and the
//! U-Boot environment image (the CRC is fixed up so the fuzzer reaches the entry parser).
#![no_main]
use fleet_bootctl::uenv;
use fleet_core::boot::autoboot::{Autoboot, BootPartitions};
use fleet_core::boot::tryboot::Record;
use fleet_core::boot::{DEFAULT_ATTEMPTS, uboot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let partitions = BootPartitions::default();
            if let Ok(a) = Autoboot::parse(text, &partitions) {
                // What we render, we read back identically.
                let again = Autoboot::parse(&a.render(&partitions), &partitions)
                    .expect("a rendered autoboot.txt parses");
                assert_eq!(again, a);
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(r) = Record::parse(text) {
                assert_eq!(
                    Record::parse(&r.render()).expect("a rendered record parses"),
                    r
                );
            }
        }
        _ => {
            let mut image = Vec::with_capacity(rest.len() + 4);
            image.extend_from_slice(&uenv::crc32(rest).to_le_bytes());
            image.extend_from_slice(rest);
            let size = image.len();
            if let Ok(env) = uenv::decode(&image, size) {
                let _ = uboot::decide_boot(&env, DEFAULT_ATTEMPTS);
                let _ = uboot::View::of(&env, DEFAULT_ATTEMPTS);
                if let Ok(bytes) = uenv::encode(&env, size) {
                    assert_eq!(
                        uenv::decode(&bytes, size).expect("an encoded env decodes"),
                        env
                    );
                }
            }
        }
    }
});
