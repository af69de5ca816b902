//! Whether a signed bundle manifest describes the bundle the station set out to fetch: one rule
//! for the daemon's transfer and the simulator. A mismatch ends the download as
//! `DownloadFailure::ManifestMismatch` with the returned detail.
use crate::ids::Version;
use crate::update::digest::BundleId;
use crate::update::offer::{MAX_COMPATIBLE_LEN, truncate};

/// What a manifest says about its bundle (the fields the rule compares).
#[derive(Debug, Clone, Copy)]
pub struct ManifestFacts<'a> {
    pub bundle_id: BundleId,
    pub size: u64,
    pub version: &'a Version,
    pub compatible: &'a str,
}

/// Why `got` is not the manifest of `expected` (the job's bundle) on a station of
/// `compatible`, if it is not. Checked in order: bundle id, size, version, compatible.
#[must_use]
pub fn manifest_mismatch(expected: ManifestFacts<'_>, got: ManifestFacts<'_>) -> Option<String> {
    if got.bundle_id != expected.bundle_id {
        Some("bundle-id differs from the offer".to_owned())
    } else if got.size != expected.size {
        Some(format!(
            "size {} differs from the offer's {}",
            got.size, expected.size
        ))
    } else if got.version != expected.version {
        Some(format!(
            "version {} differs from the offer's {}",
            got.version, expected.version
        ))
    } else if got.compatible != expected.compatible {
        Some(format!(
            "compatible {:?} is not this station's {:?}",
            truncate(got.compatible, MAX_COMPATIBLE_LEN),
            expected.compatible
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_that_differs_from_the_job_is_named_first_difference_first() {
        let v1 = Version::new(1, 1, 0);
        let v2 = Version::new(1, 2, 0);
        let want = ManifestFacts {
            bundle_id: BundleId::from_bytes([1; 32]),
            size: 10,
            version: &v1,
            compatible: "fleet-rpi5",
        };
        assert_eq!(manifest_mismatch(want, want), None);
        let table = [
            (
                ManifestFacts {
                    bundle_id: BundleId::from_bytes([2; 32]),
                    size: 11,
                    ..want
                },
                "bundle-id differs from the offer",
            ),
            (
                ManifestFacts { size: 11, ..want },
                "size 11 differs from the offer's 10",
            ),
            (
                ManifestFacts {
                    version: &v2,
                    ..want
                },
                "version 1.2.0 differs from the offer's 1.1.0",
            ),
            (
                ManifestFacts {
                    compatible: "other",
                    ..want
                },
                "compatible \"other\" is not this station's \"fleet-rpi5\"",
            ),
        ];
        for (got, detail) in table {
            assert_eq!(manifest_mismatch(want, got).as_deref(), Some(detail));
        }
    }
}
