//! Test fixtures shared by the update unit tests.
use crate::ids::{DeviceId, GroupId, UpdateId, Version};
use crate::ports::{BootStatus, SlotStatus};
use crate::slot::{Slot, SlotHealth};
use crate::time::Now;
use crate::update::digest::{BundleId, KeyId};
use crate::update::engine::{Job, Policy, State};
use crate::update::offer::{Downgrade, Offer, RolloutPercent, SignatureVerdict, Station, Target};

pub fn v(s: &str) -> Version {
    Version::parse(s).expect("valid version")
}

pub fn station() -> Station {
    Station {
        device_id: DeviceId::new("stn-0001").expect("valid"),
        groups: vec![GroupId::new("canary").expect("valid")],
        compatible: "fleet-test".into(),
    }
}

pub fn key() -> KeyId {
    KeyId::from_bytes([7; 8])
}

pub fn trusted() -> SignatureVerdict {
    SignatureVerdict::Trusted { key_id: key() }
}

pub fn bundle(n: u8) -> BundleId {
    BundleId::from_bytes([n; 32])
}

pub fn offer(seq: u64) -> Offer {
    Offer {
        update_id: UpdateId::new("rel-2").expect("valid"),
        sequence: seq,
        bundle_id: bundle(1),
        bundle_size: 1000,
        compatible: "fleet-test".into(),
        version: v("1.1.0"),
        downgrade: Downgrade::Refuse,
        target: Target::Device(DeviceId::new("stn-0001").expect("valid")),
        rollout_percent: RolloutPercent::ALL,
        issued_at: 1_700_000_000,
        expires_at: None,
        manifest_hash: None,
    }
}

pub fn job() -> Job {
    Job {
        update_id: UpdateId::new("rel-2").expect("valid"),
        sequence: 10,
        bundle_id: bundle(1),
        bundle_size: 1000,
        version: v("1.1.0"),
        manifest_hash: None,
        key_id: key(),
    }
}

/// An idle station running slot A with 1.0.0 that accepted sequence 9 before.
pub fn idle() -> State {
    let mut s = State::new(station(), Policy::default(), Slot::A, v("1.0.0"));
    s.last_sequence = Some(9);
    s
}

pub fn now() -> Now {
    Now::untrusted(1_000)
}

pub fn boot(booted: Slot) -> BootStatus {
    let slot = |s: Slot| SlotStatus {
        slot: s,
        health: if s == Slot::A {
            SlotHealth::Good
        } else {
            SlotHealth::Trial
        },
        attempts_left: 3,
        version: None,
    };
    BootStatus {
        booted,
        primary: booted,
        slots: [slot(Slot::A), slot(Slot::B)],
    }
}
