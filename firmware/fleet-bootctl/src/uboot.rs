//! The U-Boot backend: `uboot.env` on the boot partition (read and written like
//! `fw_setenv`, but replaced atomically), the booted slot from the kernel command line.
use std::fs;
use std::io;
use std::path::PathBuf;

use fleet_core::boot::uboot::{self, Env, EnvWrite, View};
use fleet_core::boot::{Attempts, Rejected};
use fleet_core::ports::{BootControl, BootStatus};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_durable::{Replace, write_atomic};
use tracing::{debug, info};

use crate::error::BootctlError;
use crate::lock;
use crate::uenv;

/// Where the U-Boot flow keeps and finds things. Every path is a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UbootPaths {
    /// `uboot.env` on the mounted boot partition.
    pub env_file: PathBuf,
    /// The kernel command line (`/proc/cmdline`), carrying `rauc.slot=A|B`.
    pub cmdline: PathBuf,
    pub lock: PathBuf,
}

/// The U-Boot flow over real files.
#[derive(Debug, Clone)]
pub struct UbootBackend {
    pub paths: UbootPaths,
    pub env_size: usize,
    pub attempts: Attempts,
}

impl UbootBackend {
    /// The env as the boot script would import it. A missing file reads as empty (the
    /// script's defaults apply); a damaged one is an error, never silently replaced.
    pub fn read_env(&self) -> Result<Env, BootctlError> {
        let path = &self.paths.env_file;
        match fs::read(path) {
            Ok(bytes) => uenv::decode(&bytes, self.env_size).map_err(|source| BootctlError::Env {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Env::new()),
            Err(source) => Err(BootctlError::Read {
                path: path.clone(),
                source,
            }),
        }
    }

    /// The slot the boot script chose (`rauc.slot=` on the command line).
    pub fn booted(&self) -> Result<Slot, BootctlError> {
        let path = &self.paths.cmdline;
        let text = fs::read_to_string(path).map_err(|source| BootctlError::Read {
            path: path.clone(),
            source,
        })?;
        let value = text
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("rauc.slot="))
            .ok_or_else(|| BootctlError::Booted {
                path: path.clone(),
                reason: "no rauc.slot= argument".into(),
            })?;
        value
            .parse()
            .map_err(|e: fleet_core::slot::ParseSlotError| BootctlError::Booted {
                path: path.clone(),
                reason: e.to_string(),
            })
    }

    fn apply(&self, env: &Env, writes: &[EnvWrite]) -> Result<(), BootctlError> {
        if writes.is_empty() {
            return Ok(());
        }
        debug!(?writes, "applying");
        let mut next = env.clone();
        uboot::apply(&mut next, writes);
        let path = &self.paths.env_file;
        let bytes = uenv::encode(&next, self.env_size).map_err(|source| BootctlError::Env {
            path: path.clone(),
            source,
        })?;
        write_atomic(path, &bytes, Replace::Exchange).map_err(|e| BootctlError::Write {
            path: path.clone(),
            source: e.into(),
        })
    }

    fn change(
        &self,
        operation: &'static str,
        plan: impl FnOnce(&Env, Slot) -> Result<Vec<EnvWrite>, Rejected>,
    ) -> Result<(), BootctlError> {
        let _held = lock::exclusive(&self.paths.lock)?;
        let env = self.read_env()?;
        let booted = self.booted()?;
        let writes =
            plan(&env, booted).map_err(|source| BootctlError::Rejected { operation, source })?;
        info!(operation, booted = %booted, writes = writes.len(), "boot flow change");
        self.apply(&env, &writes)
    }

    /// Early in every boot: refreshes the good slot's counter and gives up a finished trial.
    pub fn boot_check(&self) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("check the boot", |env, booted| {
            Ok(uboot::plan_boot(env, booted, attempts))
        })
    }

    /// RAUC's `set-primary`: the booted slot becomes primary, the other slot is armed.
    pub fn rauc_set_primary(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("make the slot primary", |env, booted| {
            if slot == booted {
                uboot::plan_set_primary(env, booted, slot, attempts)
            } else {
                uboot::plan_arm_trial(env, booted, slot, attempts)
            }
        })
    }

    /// RAUC's `get-state`.
    pub fn is_bad(&self, slot: Slot) -> Result<bool, BootctlError> {
        Ok(View::of(&self.read_env()?, self.attempts).health(slot) == SlotHealth::Bad)
    }
}

impl BootControl for UbootBackend {
    type Error = BootctlError;

    fn status(&self) -> Result<BootStatus, BootctlError> {
        Ok(View::of(&self.read_env()?, self.attempts).status(self.booted()?))
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("arm a trial", |env, booted| {
            uboot::plan_arm_trial(env, booted, slot, attempts)
        })
    }

    fn mark_good(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("mark the slot good", |env, booted| {
            uboot::plan_mark_good(env, booted, slot, attempts)
        })
    }

    fn mark_bad(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("mark the slot bad", |env, booted| {
            uboot::plan_mark_bad(env, booted, slot, attempts)
        })
    }

    fn set_primary(&self, slot: Slot) -> Result<(), BootctlError> {
        let attempts = self.attempts;
        self.change("make the slot primary", |env, booted| {
            uboot::plan_set_primary(env, booted, slot, attempts)
        })
    }
}
