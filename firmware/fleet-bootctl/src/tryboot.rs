//! The Pi 5 tryboot backend: `autoboot.txt` on the config partition, the attempt record on
//! `/data`, the booted partition from the device tree, the trial reboot through a command.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use fleet_core::boot::autoboot::{Autoboot, BootPartitions};
use fleet_core::boot::tryboot::{self, Plan, Record, TrybootState, Write};
use fleet_core::boot::{Attempts, Rejected};
use fleet_core::ports::{BootControl, BootStatus};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_durable::{Replace, WriteOptions, write_atomic};
use tracing::{debug, info, warn};

use crate::error::BootctlError;
use crate::lock;

/// Where the tryboot flow keeps and finds things. Every path is a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrybootPaths {
    /// `autoboot.txt` on the mounted config partition.
    pub autoboot: PathBuf,
    /// The attempt record (`<data-root>/fleet/boot/attempts`).
    pub record: PathBuf,
    /// The firmware's `chosen/bootloader` device-tree node (`partition`, `tryboot`).
    pub bootloader_dir: PathBuf,
    pub lock: PathBuf,
}

impl TrybootPaths {
    /// The contract's layout under the given roots.
    #[must_use]
    pub fn under(
        config_root: &Path,
        data_root: &Path,
        bootloader_dir: &Path,
        lock: &Path,
    ) -> TrybootPaths {
        TrybootPaths {
            autoboot: config_root.join("autoboot.txt"),
            record: data_root.join("fleet/boot/attempts"),
            bootloader_dir: bootloader_dir.to_path_buf(),
            lock: lock.to_path_buf(),
        }
    }
}

/// The tryboot flow over real files.
#[derive(Debug, Clone)]
pub struct TrybootBackend {
    pub paths: TrybootPaths,
    pub partitions: BootPartitions,
    pub attempts: Attempts,
    /// Reboots with the one-shot tryboot flag set (`systemctl reboot "0 tryboot"`).
    pub reboot_command: Vec<String>,
}

/// The command that reboots into the `[tryboot]` partition: systemd passes the argument to
/// `reboot(2)`, and the Raspberry Pi firmware driver turns `tryboot` into the one-shot flag.
#[must_use]
pub fn default_reboot_command() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into(), "0 tryboot".into()]
}

fn read_be_u32(path: &Path) -> Result<u32, BootctlError> {
    let bytes = fs::read(path).map_err(|source| BootctlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let arr: [u8; 4] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| BootctlError::Booted {
            path: path.to_path_buf(),
            reason: format!("expected 4 bytes, found {}", bytes.len()),
        })?;
    Ok(u32::from_be_bytes(arr))
}

impl TrybootBackend {
    /// Reads `autoboot.txt` (must be ours) and the record (missing or unreadable: none).
    pub fn read_state(&self) -> Result<TrybootState, BootctlError> {
        let path = &self.paths.autoboot;
        let text = fs::read_to_string(path).map_err(|source| BootctlError::Read {
            path: path.clone(),
            source,
        })?;
        let autoboot =
            Autoboot::parse(&text, &self.partitions).map_err(|source| BootctlError::Autoboot {
                path: path.clone(),
                source,
            })?;
        let record = match fs::read_to_string(&self.paths.record) {
            Ok(text) => match Record::parse(&text) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(path = %self.paths.record.display(), error = %e, "ignoring unreadable attempt record");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(BootctlError::Read {
                    path: self.paths.record.clone(),
                    source,
                });
            }
        };
        Ok(TrybootState { autoboot, record })
    }

    /// The slot the firmware booted, and whether it did so because of the tryboot flag.
    pub fn booted(&self) -> Result<(Slot, bool), BootctlError> {
        let path = self.paths.bootloader_dir.join("partition");
        let partition = read_be_u32(&path)?;
        let slot = u8::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.slot(p))
            .ok_or_else(|| BootctlError::Booted {
                path: path.clone(),
                reason: format!("partition {partition} is no slot's boot partition"),
            })?;
        let tryboot = match read_be_u32(&self.paths.bootloader_dir.join("tryboot")) {
            Ok(v) => v != 0,
            Err(BootctlError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                false
            }
            Err(e) => return Err(e),
        };
        Ok((slot, tryboot))
    }

    fn apply(&self, writes: &[Write]) -> Result<(), BootctlError> {
        for write in writes {
            debug!(?write, "applying");
            match write {
                Write::Autoboot(a) => {
                    let path = &self.paths.autoboot;
                    write_atomic(
                        path,
                        a.render(&self.partitions).as_bytes(),
                        Replace::Exchange,
                    )
                    .map_err(|e| BootctlError::Write {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                }
                Write::Record(r) => {
                    let path = &self.paths.record;
                    WriteOptions::new()
                        .create_parents()
                        .write(path, r.render().as_bytes())
                        .map_err(|e| BootctlError::Write {
                            path: path.clone(),
                            source: e.into(),
                        })?;
                }
            }
        }
        Ok(())
    }

    fn run_reboot(&self) -> Result<(), BootctlError> {
        let command = &self.reboot_command;
        info!(?command, "rebooting into the trial slot");
        let (program, args) = command
            .split_first()
            .ok_or_else(|| BootctlError::RebootSpawn {
                command: command.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
            })?;
        let status = Command::new(program)
            .args(args)
            .status()
            .map_err(|source| BootctlError::RebootSpawn {
                command: command.clone(),
                source,
            })?;
        if !status.success() {
            return Err(BootctlError::RebootFailed {
                command: command.clone(),
                status: status.to_string(),
            });
        }
        Ok(())
    }

    fn carry_out(&self, plan: &Plan) -> Result<(), BootctlError> {
        self.apply(&plan.writes)?;
        if plan.reboot_into_trial {
            self.run_reboot()?;
        }
        Ok(())
    }

    fn change(
        &self,
        operation: &'static str,
        plan: impl FnOnce(&TrybootState, Slot) -> Result<Vec<Write>, Rejected>,
    ) -> Result<(), BootctlError> {
        let _held = lock::exclusive(&self.paths.lock)?;
        let state = self.read_state()?;
        let (booted, _) = self.booted()?;
        let writes =
            plan(&state, booted).map_err(|source| BootctlError::Rejected { operation, source })?;
        info!(operation, booted = %booted, committed = %state.committed(), writes = writes.len(), "boot flow change");
        self.apply(&writes)
    }

    /// Early in every boot: retries a trial that came back without a verdict, or gives it up.
    /// Returns whether it is rebooting into the trial.
    pub fn boot_check(&self) -> Result<bool, BootctlError> {
        let _held = lock::exclusive(&self.paths.lock)?;
        let state = self.read_state()?;
        let (booted, via_tryboot) = self.booted()?;
        let plan = tryboot::plan_boot(&state, booted);
        info!(booted = %booted, via_tryboot, other = ?state.other(), retry = plan.reboot_into_trial, "boot check");
        self.carry_out(&plan)?;
        Ok(plan.reboot_into_trial)
    }

    /// Uses one attempt of the pending trial and reboots into it.
    pub fn reboot_into_trial(&self) -> Result<bool, BootctlError> {
        let _held = lock::exclusive(&self.paths.lock)?;
        let state = self.read_state()?;
        let plan = tryboot::plan_trial_reboot(&state).map_err(|source| BootctlError::Rejected {
            operation: "reboot into the trial",
            source,
        })?;
        self.carry_out(&plan)?;
        Ok(plan.reboot_into_trial)
    }

    /// RAUC's `set-primary`: the committed slot cancels a trial, the other slot is armed.
    pub fn rauc_set_primary(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("make the slot primary", |state, _| {
            if slot == state.committed() {
                tryboot::plan_set_primary(state, slot)
            } else {
                tryboot::plan_arm_trial(state, slot, attempts)
            }
        })
    }

    /// RAUC's `get-state`: everything but `Bad` is good to boot.
    pub fn is_bad(&self, slot: Slot) -> Result<bool, BootctlError> {
        Ok(self.status()?.slot(slot).health == SlotHealth::Bad)
    }
}

impl BootControl for TrybootBackend {
    type Error = BootctlError;

    fn status(&self) -> Result<BootStatus, BootctlError> {
        let state = self.read_state()?;
        let (booted, _) = self.booted()?;
        Ok(state.status(booted))
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("arm a trial", |state, _| {
            tryboot::plan_arm_trial(state, slot, attempts)
        })
    }

    fn mark_good(&self, slot: Slot) -> Result<(), BootctlError> {
        self.change("mark the slot good", |state, booted| {
            tryboot::plan_mark_good(state, booted, slot)
        })
    }

    fn mark_bad(&self, slot: Slot) -> Result<(), BootctlError> {
        self.change("mark the slot bad", |state, _| {
            tryboot::plan_mark_bad(state, slot)
        })
    }

    fn set_primary(&self, slot: Slot) -> Result<(), BootctlError> {
        self.change("make the slot primary", |state, _| {
            tryboot::plan_set_primary(state, slot)
        })
    }
}
