//! Fixtures shared by the fuzz targets: a fixed signing key the station trusts (so the fuzzer
//! reaches the payload parsers behind the signature check), a station, and scratch files on a
//! RAM-backed directory for parsers that read from disk.
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, GroupId, Version};
use fleet_core::update::Station;
use fleet_proto::TrustedKeys;

/// The operator key of the fuzz runs (not a real key: 32 bytes of 0x11).
#[must_use]
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

/// A trusted set holding only [`signing_key`].
#[must_use]
pub fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(signing_key().verifying_key());
    t
}

#[must_use]
pub fn station() -> Station {
    Station {
        device_id: DeviceId::new("stn-0001").expect("a valid id"),
        groups: vec![GroupId::new("canary").expect("a valid id")],
        compatible: "fleet-rpi5".into(),
    }
}

#[must_use]
pub fn installed() -> Version {
    Version::new(1, 0, 0)
}

/// A per-process scratch directory, on tmpfs when there is one (fsync there costs nothing).
#[must_use]
pub fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("fleet-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}
