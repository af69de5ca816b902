//! Wave membership: which stations take an update at a given rollout percentage.
//!
//! A station's *bucket* for an update is `u64::from_be_bytes(sha256("fleet/v1/wave\0" ||
//! device-id || "\0" || update-id)[..8]) % 100`, and the station is in the wave when
//! `bucket < rollout-percent`. The bucket depends only on the two ids, so it is stable across
//! restarts and across offers: re-signing the same `update-id` with a higher percentage keeps
//! every station already in the wave and adds more (a station in the 10 % wave is in the 50 %
//! wave). A new `update-id` reshuffles the buckets, so the same stations are not always first.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{DeviceId, UpdateId};

/// A rollout percentage, 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct RolloutPercent(u8);

/// A percentage outside 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unable to accept rollout percentage {0}: expected 1..=100")]
pub struct PercentError(pub u8);

impl RolloutPercent {
    /// Everyone.
    pub const ALL: RolloutPercent = RolloutPercent(100);

    /// Validates `p` (1..=100).
    pub fn new(p: u8) -> Result<Self, PercentError> {
        if (1..=100).contains(&p) {
            Ok(Self(p))
        } else {
            Err(PercentError(p))
        }
    }

    #[must_use]
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for RolloutPercent {
    type Error = PercentError;
    fn try_from(p: u8) -> Result<Self, PercentError> {
        Self::new(p)
    }
}

impl From<RolloutPercent> for u8 {
    fn from(p: RolloutPercent) -> u8 {
        p.0
    }
}

/// Domain separation for the wave hash.
const WAVE_DOMAIN: &[u8] = b"fleet/v1/wave\0";

/// The station's bucket, 0..100, for `update`.
#[must_use]
pub fn bucket(device: &DeviceId, update: &UpdateId) -> u8 {
    let mut h = Sha256::new();
    h.update(WAVE_DOMAIN);
    h.update(device.as_str().as_bytes());
    h.update(b"\0");
    h.update(update.as_str().as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    let b = u64::from_be_bytes(first) % 100;
    u8::try_from(b).expect("a value below 100 fits in u8")
}

/// True when a station in `bucket` takes an update rolled out to `percent`.
#[must_use]
pub fn is_member(bucket: u8, percent: RolloutPercent) -> bool {
    bucket < percent.get()
}

/// True when `device` takes `update` at `percent`.
#[must_use]
pub fn in_wave(device: &DeviceId, update: &UpdateId, percent: RolloutPercent) -> bool {
    is_member(bucket(device, update), percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(i: u32) -> DeviceId {
        DeviceId::new(format!("stn-{i:04}")).expect("valid id")
    }

    #[test]
    fn everyone_is_in_a_full_wave() {
        let u = UpdateId::new("rel-1").expect("valid id");
        assert!((0..500).all(|i| in_wave(&dev(i), &u, RolloutPercent::ALL)));
    }

    #[test]
    fn a_ten_percent_wave_takes_roughly_a_tenth_of_a_large_fleet() {
        let u = UpdateId::new("rel-1").expect("valid id");
        let p = RolloutPercent::new(10).expect("valid percent");
        let n = (0..2000).filter(|i| in_wave(&dev(*i), &u, p)).count();
        assert!((120..=280).contains(&n), "{n} of 2000 in a 10% wave");
    }

    #[test]
    fn raising_the_percentage_keeps_every_station_already_in_the_wave() {
        let u = UpdateId::new("rel-7").expect("valid id");
        for i in 0..300 {
            let d = dev(i);
            for p in 1..100u8 {
                let lo = RolloutPercent::new(p).expect("valid");
                let hi = RolloutPercent::new(p + 1).expect("valid");
                assert!(!in_wave(&d, &u, lo) || in_wave(&d, &u, hi));
            }
        }
    }

    #[test]
    fn the_bucket_is_a_known_stable_value() {
        // Pinned so that a change of the hash (which would reshuffle running rollouts) is
        // seen. Computed independently: sha256(b"fleet/v1/wave\0stn-0042\0rel-1"), first 8
        // bytes as a big-endian u64, modulo 100.
        assert_eq!(
            bucket(&dev(42), &UpdateId::new("rel-1").expect("valid id")),
            8
        );
    }
}
