//! The simulated bootloader: U-Boot-like `BOOT_ORDER` and `BOOT_x_LEFT` persisted in
//! `<root>/boot/env.json`.
//!
//! Semantics of one [`SimBootloader::boot`] ("power on"):
//! 1. Walk `boot-order`. A `bad` slot is skipped. A `good` slot boots without counting.
//!    A `trial` slot boots only while its `left` counter is above zero, and every attempt
//!    decrements the counter before the kernel starts (as U-Boot's script does).
//! 2. An attempt on a slot whose image is unbootable ([`Behaviour::Unbootable`], or no image)
//!    fails: the (simulated) watchdog resets the board and the walk starts again.
//! 3. Out of attempts, the walk reaches the other slot: the fallback.
//!
//! The environment is written once per state change (temp + fsync + rename + fsync dir).
use std::path::{Path, PathBuf};

use fleet_core::ports::{BootControl, BootStatus, SlotStatus};
use fleet_core::slot::{Slot, SlotHealth};
use serde::{Deserialize, Serialize};

use crate::bundle::Behaviour;
use crate::{SimError, durable};

/// Boot attempts a trial slot gets (U-Boot's `BOOT_x_LEFT` default).
pub const DEFAULT_ATTEMPTS: u8 = 3;
/// Most resets one power-on may go through before giving up (bounds the walk).
const MAX_RESETS: usize = 16;

/// What one slot holds (the sidecar `<root>/slots/<slot>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SlotImage {
    pub version: semver::Version,
    pub behaviour: Behaviour,
    pub payload_sha256: String,
    pub size: u64,
}

/// The persisted bootloader environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BootEnv {
    /// `BOOT_ORDER`: the slot tried first comes first.
    pub boot_order: [Slot; 2],
    /// `BOOT_A_LEFT`, `BOOT_B_LEFT`.
    pub left: [u8; 2],
    pub health: [SlotHealth; 2],
    /// The slot the last power-on started (the simulated `rauc.slot=` kernel argument).
    pub booted: Slot,
    /// Attempts granted to a trial.
    pub attempts: u8,
    /// Power-ons so far (for tests and reports).
    pub boots: u64,
}

fn idx(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// The simulated bootloader of one station rooted at `root`.
#[derive(Debug, Clone)]
pub struct SimBootloader {
    root: PathBuf,
}

impl SimBootloader {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[must_use]
    pub fn env_path(&self) -> PathBuf {
        self.root.join("boot").join("env.json")
    }

    #[must_use]
    pub fn image_path(&self, slot: Slot) -> PathBuf {
        self.root.join("slots").join(format!("{slot}.img"))
    }

    #[must_use]
    pub fn image_meta_path(&self, slot: Slot) -> PathBuf {
        self.root.join("slots").join(format!("{slot}.json"))
    }

    /// Creates a fresh station at the root if there is none: slot A holds `version` and is good
    /// and booted, slot B is empty (bad). Leaves an existing station alone.
    pub fn provision(&self, version: &semver::Version) -> Result<(), SimError> {
        if self.env_path().exists() {
            return Ok(());
        }
        for dir in [self.root.join("boot"), self.root.join("slots")] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| SimError::Write { path: dir, source })?;
        }
        let payload = format!("factory image {version}\n");
        let img = self.image_path(Slot::A);
        durable::write_atomic(&img, payload.as_bytes())
            .map_err(|source| SimError::Write { path: img, source })?;
        self.write_image_meta(
            Slot::A,
            &SlotImage {
                version: version.clone(),
                behaviour: Behaviour::Normal,
                payload_sha256: sha256_hex(payload.as_bytes()),
                size: payload.len() as u64,
            },
        )?;
        self.write_env(&BootEnv {
            boot_order: [Slot::A, Slot::B],
            left: [DEFAULT_ATTEMPTS, 0],
            health: [SlotHealth::Good, SlotHealth::Bad],
            booted: Slot::A,
            attempts: DEFAULT_ATTEMPTS,
            boots: 0,
        })
    }

    pub fn read_env(&self) -> Result<BootEnv, SimError> {
        let path = self.env_path();
        let bytes = std::fs::read(&path).map_err(|source| SimError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| SimError::Parse {
            path,
            reason: e.to_string(),
        })
    }

    fn write_env(&self, env: &BootEnv) -> Result<(), SimError> {
        let path = self.env_path();
        let bytes = serde_json::to_vec_pretty(env).map_err(|e| SimError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable::write_atomic(&path, &bytes).map_err(|source| SimError::Write { path, source })
    }

    fn update(&self, f: impl FnOnce(&mut BootEnv) -> Result<(), SimError>) -> Result<(), SimError> {
        let mut env = self.read_env()?;
        f(&mut env)?;
        self.write_env(&env)
    }

    /// What slot `slot` holds, if anything was installed there.
    pub fn image_meta(&self, slot: Slot) -> Result<Option<SlotImage>, SimError> {
        let path = self.image_meta_path(slot);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SimError::Parse {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SimError::Read { path, source }),
        }
    }

    pub(crate) fn write_image_meta(&self, slot: Slot, meta: &SlotImage) -> Result<(), SimError> {
        let path = self.image_meta_path(slot);
        let bytes = serde_json::to_vec_pretty(meta).map_err(|e| SimError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable::write_atomic(&path, &bytes).map_err(|source| SimError::Write { path, source })
    }

    pub(crate) fn forget_image(&self, slot: Slot) -> Result<(), SimError> {
        let path = self.image_meta_path(slot);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SimError::Write { path, source }),
        }
        let dir = self.root.join("slots");
        durable::sync_dir(&dir).map_err(|source| SimError::Write { path: dir, source })
    }

    fn comes_up(&self, slot: Slot) -> Result<bool, SimError> {
        Ok(matches!(self.image_meta(slot)?, Some(m) if m.behaviour != Behaviour::Unbootable))
    }

    /// The simulated power-on: picks the slot to boot by the rules in the module docs, persists
    /// the decremented counters and the booted slot, and returns the booted slot.
    pub fn boot(&self) -> Result<Slot, SimError> {
        let mut env = self.read_env()?;
        env.boots += 1;
        let mut resets = 0;
        let booted = 'power_on: loop {
            let mut attempted = false;
            for slot in env.boot_order {
                let i = idx(slot);
                match env.health[i] {
                    SlotHealth::Bad => continue,
                    SlotHealth::Good => {}
                    SlotHealth::Trial => {
                        if env.left[i] == 0 {
                            continue;
                        }
                        env.left[i] -= 1;
                    }
                }
                attempted = true;
                if self.comes_up(slot)? {
                    break 'power_on slot;
                }
                tracing::info!(slot = %slot, left = env.left[i], "simulated boot attempt failed");
                // The watchdog resets the board: the walk starts again from the top.
                break;
            }
            resets += 1;
            if !attempted || resets > MAX_RESETS {
                self.write_env(&env)?;
                return Err(SimError::NoBootableSlot);
            }
        };
        env.booted = booted;
        self.write_env(&env)?;
        tracing::info!(slot = %booted, boots = env.boots, "simulated boot");
        Ok(booted)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl BootControl for SimBootloader {
    type Error = SimError;

    fn status(&self) -> Result<BootStatus, SimError> {
        let env = self.read_env()?;
        let primary = env
            .boot_order
            .into_iter()
            .find(|s| match env.health[idx(*s)] {
                SlotHealth::Good => true,
                SlotHealth::Trial => env.left[idx(*s)] > 0,
                SlotHealth::Bad => false,
            })
            .unwrap_or(env.booted);
        let slot_status = |slot: Slot| -> Result<SlotStatus, SimError> {
            Ok(SlotStatus {
                slot,
                health: env.health[idx(slot)],
                attempts_left: env.left[idx(slot)],
                version: self.image_meta(slot)?.map(|m| m.version),
            })
        };
        Ok(BootStatus {
            booted: env.booted,
            primary,
            slots: [slot_status(Slot::A)?, slot_status(Slot::B)?],
        })
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), SimError> {
        self.update(|env| {
            env.health[idx(slot)] = SlotHealth::Trial;
            env.left[idx(slot)] = env.attempts;
            env.boot_order = [slot, slot.other()];
            Ok(())
        })
    }

    fn mark_good(&self, slot: Slot) -> Result<(), SimError> {
        self.update(|env| {
            env.health[idx(slot)] = SlotHealth::Good;
            env.left[idx(slot)] = env.attempts;
            env.boot_order = [slot, slot.other()];
            Ok(())
        })
    }

    fn mark_bad(&self, slot: Slot) -> Result<(), SimError> {
        self.update(|env| {
            env.health[idx(slot)] = SlotHealth::Bad;
            env.left[idx(slot)] = 0;
            env.boot_order = [slot.other(), slot];
            Ok(())
        })
    }

    fn set_primary(&self, slot: Slot) -> Result<(), SimError> {
        self.update(|env| {
            if env.health[idx(slot)] == SlotHealth::Bad {
                return Err(SimError::SlotBad { slot });
            }
            env.boot_order = [slot, slot.other()];
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn station() -> (tempfile::TempDir, SimBootloader) {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = SimBootloader::new(dir.path());
        b.provision(&semver::Version::new(1, 0, 0))
            .expect("provision");
        (dir, b)
    }

    fn install(b: &SimBootloader, slot: Slot, behaviour: Behaviour) {
        std::fs::write(b.image_path(slot), b"x").expect("image");
        b.write_image_meta(
            slot,
            &SlotImage {
                version: semver::Version::new(2, 0, 0),
                behaviour,
                payload_sha256: String::new(),
                size: 1,
            },
        )
        .expect("meta");
        b.arm_trial(slot).expect("arm");
    }

    #[test]
    fn a_fresh_station_boots_slot_a_again_and_again() {
        let (_d, b) = station();
        for _ in 0..5 {
            assert_eq!(b.boot().expect("boot"), Slot::A);
        }
        assert_eq!(b.status().expect("status").slot(Slot::A).attempts_left, 3);
    }

    #[test]
    fn a_trial_boot_decrements_its_attempts_and_mark_good_commits_it() {
        let (_d, b) = station();
        install(&b, Slot::B, Behaviour::Normal);
        assert_eq!(b.boot().expect("boot"), Slot::B);
        let s = b.status().expect("status");
        assert_eq!(s.booted, Slot::B);
        assert_eq!(s.slot(Slot::B).attempts_left, 2);
        assert_eq!(s.slot(Slot::B).health, SlotHealth::Trial);
        b.mark_good(Slot::B).expect("good");
        assert_eq!(b.boot().expect("boot"), Slot::B);
        assert_eq!(
            b.status().expect("status").slot(Slot::B).health,
            SlotHealth::Good
        );
    }

    #[test]
    fn unbootable_slot_falls_back_after_its_attempts_run_out() {
        let (_d, b) = station();
        install(&b, Slot::B, Behaviour::Unbootable);
        assert_eq!(b.boot().expect("boot"), Slot::A);
        let s = b.status().expect("status");
        assert_eq!(s.slot(Slot::B).attempts_left, 0);
        assert_eq!(s.slot(Slot::B).health, SlotHealth::Trial);
        assert_eq!(s.primary, Slot::A);
    }

    #[test]
    fn a_trial_that_keeps_rebooting_runs_out_after_three_boots() {
        let (_d, b) = station();
        install(&b, Slot::B, Behaviour::Unhealthy);
        let booted: Vec<Slot> = (0..4).map(|_| b.boot().expect("boot")).collect();
        assert_eq!(booted, [Slot::B, Slot::B, Slot::B, Slot::A]);
    }

    #[test]
    fn mark_bad_sends_the_next_boot_to_the_other_slot() {
        let (_d, b) = station();
        install(&b, Slot::B, Behaviour::Normal);
        assert_eq!(b.boot().expect("boot"), Slot::B);
        b.mark_bad(Slot::B).expect("bad");
        assert_eq!(b.boot().expect("boot"), Slot::A);
        assert!(b.set_primary(Slot::B).is_err());
    }
}
