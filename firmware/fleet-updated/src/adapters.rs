//! The station's real ports: RAUC (`fleet-rauc`) as the `Installer`, the boot flows of
//! `fleet-bootctl` (Pi 5 tryboot, U-Boot) as `BootControl`, the simulated ones for tests and
//! demos, and [`StationHealth`] as the health gate. Which ones is configuration:
//!
//! ```toml
//! installer = "rauc"                 # or "sim" (needs [sim])
//! boot-flow = "uboot"                # or "tryboot", "sim" (needs [sim])
//! bootctl-config = "/etc/fleet/bootctl.toml"      # the file RAUC's custom backend reads too
//! version-file = "/etc/fleet-version"             # the booted image's version
//! version-floor-file = "/data/fleet/update/version-floor"
//! reboot-command = ["systemctl", "reboot"]
//!
//! [rauc]
//! dbus-address = "unix:path=/run/dbus/system_bus_socket"
//! manifest-hash = "enforce"          # or "where-supported" (RAUC < 1.14)
//! ready-timeout-secs = 60            # wait this long for RAUC on the bus before an install
//! ```
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use fleet_bootctl::{BootctlError, TrybootBackend, UbootBackend};
use fleet_core::boot::uboot::View;
use fleet_core::boot::{RebootKind, tryboot_reboot_kind, uboot_needs_arming};
use fleet_core::ports::{
    BootControl, BootStatus, InstallProgress, InstallRequest, Installed, Installer, PortError,
};
use fleet_core::slot::Slot;
use fleet_rauc::{ManifestHashCheck, RaucClient, RaucError, RaucOptions};
use fleet_sim::{SimBootloader, SimError, SimInstaller};
use serde::Deserialize;

use crate::health::StationHealth;
use crate::ports::Deps;

/// Which installer writes the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallerKind {
    Rauc,
    Sim,
}

/// Which boot flow picks the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootFlowKind {
    Tryboot,
    Uboot,
    Sim,
}

/// `[rauc]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRauc {
    #[serde(default = "default_address")]
    dbus_address: String,
    #[serde(default)]
    manifest_hash: RawManifestHash,
    #[serde(default = "default_ready")]
    ready_timeout_secs: u64,
}

impl Default for RawRauc {
    fn default() -> Self {
        Self {
            dbus_address: default_address(),
            manifest_hash: RawManifestHash::default(),
            ready_timeout_secs: default_ready(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawManifestHash {
    #[default]
    Enforce,
    WhereSupported,
}

fn default_address() -> String {
    fleet_rauc::SYSTEM_BUS_ADDRESS.to_owned()
}
fn default_ready() -> u64 {
    60
}

/// The validated `[rauc]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucConfig {
    pub dbus_address: String,
    pub manifest_hash: ManifestHashCheck,
    /// How long an install waits for RAUC to answer on the bus (after a RAUC restart).
    pub ready_timeout: Duration,
}

impl RawRauc {
    pub fn validate(&self, problems: &mut Vec<String>) -> RaucConfig {
        if self.dbus_address.is_empty() {
            problems.push("rauc.dbus-address: must not be empty".into());
        }
        if !(1..=3600).contains(&self.ready_timeout_secs) {
            problems.push("rauc.ready-timeout-secs: must be 1..=3600".into());
        }
        RaucConfig {
            dbus_address: self.dbus_address.clone(),
            manifest_hash: match self.manifest_hash {
                RawManifestHash::Enforce => ManifestHashCheck::Enforce,
                RawManifestHash::WhereSupported => ManifestHashCheck::WhereSupported,
            },
            ready_timeout: Duration::from_secs(self.ready_timeout_secs),
        }
    }
}

/// A failed boot-flow call.
#[derive(Debug, thiserror::Error)]
pub enum BootFlowError {
    #[error(transparent)]
    Bootctl(#[from] BootctlError),
    #[error(transparent)]
    Sim(#[from] SimError),
}

impl PortError for BootFlowError {
    fn is_retryable(&self) -> bool {
        match self {
            BootFlowError::Bootctl(e) => e.is_retryable(),
            BootFlowError::Sim(e) => e.is_retryable(),
        }
    }
}

/// The configured boot flow as a `BootControl`.
#[derive(Debug, Clone)]
pub enum BootFlow {
    Tryboot(TrybootBackend),
    Uboot(UbootBackend),
    Sim(SimBootloader),
}

/// A boot flow plus where the booted image's version is read when the flow does not know it
/// (fleet-bootctl's flows keep no versions; the image carries its own).
#[derive(Debug, Clone)]
pub struct StationBoot {
    pub flow: BootFlow,
    pub version_file: Option<PathBuf>,
}

fn read_version(path: &Path) -> Option<semver::Version> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim();
    match semver::Version::parse(line) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "version file holds no semantic version");
            None
        }
    }
}

impl BootControl for StationBoot {
    type Error = BootFlowError;

    fn status(&self) -> Result<BootStatus, BootFlowError> {
        let mut status = match &self.flow {
            BootFlow::Tryboot(b) => b.status()?,
            BootFlow::Uboot(b) => b.status()?,
            BootFlow::Sim(b) => b.status()?,
        };
        if let Some(file) = &self.version_file {
            let booted = status.booted;
            let i = match booted {
                Slot::A => 0,
                Slot::B => 1,
            };
            if status.slots[i].version.is_none() {
                status.slots[i].version = read_version(file);
            }
        }
        Ok(status)
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), BootFlowError> {
        match &self.flow {
            BootFlow::Tryboot(b) => Ok(b.arm_trial(slot)?),
            BootFlow::Uboot(b) => {
                // The rule is the core's (`fleet_core::boot::uboot_needs_arming`): running the
                // armed trial already, the boot script keeps counting its boots down.
                let view = View::of(&b.read_env()?, b.attempts);
                if !uboot_needs_arming(b.booted()?, &view, slot) {
                    tracing::info!(slot = %slot, "trial still armed; the boot script counts its attempts");
                    return Ok(());
                }
                Ok(b.arm_trial(slot)?)
            }
            BootFlow::Sim(b) => Ok(b.arm_trial(slot)?),
        }
    }

    fn mark_good(&self, slot: Slot) -> Result<(), BootFlowError> {
        match &self.flow {
            BootFlow::Tryboot(b) => Ok(b.mark_good(slot)?),
            BootFlow::Uboot(b) => Ok(b.mark_good(slot)?),
            BootFlow::Sim(b) => Ok(b.mark_good(slot)?),
        }
    }

    fn mark_bad(&self, slot: Slot) -> Result<(), BootFlowError> {
        match &self.flow {
            BootFlow::Tryboot(b) => Ok(b.mark_bad(slot)?),
            BootFlow::Uboot(b) => Ok(b.mark_bad(slot)?),
            BootFlow::Sim(b) => Ok(b.mark_bad(slot)?),
        }
    }

    fn set_primary(&self, slot: Slot) -> Result<(), BootFlowError> {
        match &self.flow {
            BootFlow::Tryboot(b) => Ok(b.set_primary(slot)?),
            BootFlow::Uboot(b) => Ok(b.set_primary(slot)?),
            BootFlow::Sim(b) => Ok(b.set_primary(slot)?),
        }
    }
}

/// A failed install. The message is what the station reports: RAUC's own reason when it
/// refused the bundle.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("rauc refused the bundle: {reason}")]
    Refused { reason: String },
    #[error("rauc restarted during the install; installing again")]
    Restarted(#[source] RaucError),
    #[error("rauc did not answer on the bus within {seconds} s")]
    NotReady { seconds: u64 },
    #[error("{0}")]
    Rauc(#[source] RaucError),
    #[error(transparent)]
    Sim(#[from] SimError),
}

impl InstallError {
    fn from_rauc(e: RaucError) -> InstallError {
        if let Some(reason) = e.rauc_reason() {
            return InstallError::Refused {
                reason: reason.to_owned(),
            };
        }
        match e {
            RaucError::Restarted { .. } => InstallError::Restarted(e),
            other => InstallError::Rauc(other),
        }
    }

    /// RAUC's words when it refused the bundle.
    #[must_use]
    pub fn rauc_reason(&self) -> Option<&str> {
        match self {
            InstallError::Refused { reason } => Some(reason),
            _ => None,
        }
    }
}

impl PortError for InstallError {
    fn is_retryable(&self) -> bool {
        match self {
            InstallError::Refused { .. } => false,
            InstallError::Restarted(_) | InstallError::NotReady { .. } => true,
            InstallError::Rauc(e) => e.is_retryable(),
            InstallError::Sim(e) => e.is_retryable(),
        }
    }

    fn armed_slot(&self) -> Option<Slot> {
        match self {
            InstallError::Restarted(e) | InstallError::Rauc(e) => e.armed_slot(),
            _ => None,
        }
    }
}

/// RAUC on the bus at a configured address; reconnects after a lost connection and waits
/// (bounded) for RAUC to come back before an install.
#[derive(Debug)]
pub struct RaucInstaller {
    cfg: RaucConfig,
    client: tokio::sync::Mutex<Option<Arc<RaucClient>>>,
}

impl RaucInstaller {
    #[must_use]
    pub fn new(cfg: RaucConfig) -> Self {
        Self {
            cfg,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// A client whose RAUC answers, within the ready timeout.
    async fn ready_client(&self) -> Result<Arc<RaucClient>, InstallError> {
        let deadline = tokio::time::Instant::now() + self.cfg.ready_timeout;
        let mut guard = self.client.lock().await;
        let mut wait = Duration::from_millis(100);
        loop {
            if guard.is_none() {
                let options = RaucOptions {
                    manifest_hash: self.cfg.manifest_hash,
                    ..RaucOptions::default()
                };
                match RaucClient::connect(&self.cfg.dbus_address, options).await {
                    Ok(c) => *guard = Some(Arc::new(c)),
                    Err(e) => tracing::warn!(error = %e, "unable to connect to rauc's bus"),
                }
            }
            if let Some(c) = guard.as_ref() {
                match tokio::time::timeout(Duration::from_secs(5), c.compatible()).await {
                    Ok(Ok(_)) => return Ok(c.clone()),
                    Ok(Err(e)) if !e.is_retryable() => return Err(InstallError::Rauc(e)),
                    Ok(Err(e @ (RaucError::Connect { .. } | RaucError::ConnectionLost { .. }))) => {
                        tracing::warn!(error = %e, "rauc's bus connection lost; reconnecting");
                        *guard = None;
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "waiting for rauc"),
                    Err(_) => tracing::info!("waiting for rauc to answer"),
                }
            }
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(InstallError::NotReady {
                    seconds: self.cfg.ready_timeout.as_secs(),
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    async fn install(
        &self,
        request: InstallRequest<'_>,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> Result<Installed, InstallError> {
        let client = self.ready_client().await?;
        // RAUC sends a Progress change per step; pass on only whole-percent changes.
        let last = AtomicU16::new(u16::MAX);
        let throttled = |p: InstallProgress| {
            let pct = u16::from(p.percent);
            if last.swap(pct, Ordering::Relaxed) != pct {
                progress(p);
            }
        };
        let r = client.install_bundle(request, &throttled).await;
        if let Err(e @ (RaucError::ConnectionLost { .. } | RaucError::Connect { .. })) = &r {
            tracing::warn!(error = %e, "dropping the rauc connection");
            *self.client.lock().await = None;
        }
        r.map_err(InstallError::from_rauc)
    }
}

/// The configured installer.
#[derive(Debug)]
pub enum StationInstaller {
    Rauc(RaucInstaller),
    Sim(SimInstaller),
}

impl Installer for StationInstaller {
    type Error = InstallError;

    async fn install(
        &self,
        request: InstallRequest<'_>,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> Result<Installed, InstallError> {
        match self {
            StationInstaller::Rauc(r) => r.install(request, progress).await,
            StationInstaller::Sim(s) => Ok(s.install(request, progress).await?),
        }
    }
}

/// The ports of a station built from its configuration.
pub type StationDeps = Deps<StationBoot, StationInstaller, StationHealth>;

/// Reboots a station after [`crate::Exit::Reboot`]: on the tryboot flow into a trial with
/// the firmware's one-shot flag (`fleet-bootctl`'s trial reboot, which spends an attempt from
/// the record), otherwise with `command`. When the record has no attempt left, the trial
/// reboot marks the slot bad instead and the station reboots plainly onto its committed slot,
/// where the engine finds the slot given up. Simulated flows do nothing (their runner boots
/// them).
pub fn reboot(boot: &StationBoot, into: Slot, command: &[String]) -> Result<(), RebootError> {
    match &boot.flow {
        BootFlow::Sim(_) => return Ok(()),
        BootFlow::Tryboot(t) => {
            let committed = t.read_state().map_err(RebootError::Flow)?.committed();
            if tryboot_reboot_kind(into, committed) == RebootKind::Trial {
                match t.reboot_into_trial() {
                    Ok(true) => return Ok(()),
                    Ok(false) => {
                        tracing::warn!(slot = %into, "the trial's attempts have run out and the slot is marked bad; rebooting onto the committed slot")
                    }
                    // The record does not hold the trial (given up, or never armed): the slot
                    // is not booted on trial.
                    Err(BootctlError::Rejected { source, .. }) => {
                        tracing::warn!(slot = %into, reason = %source, "no trial reboot; rebooting onto the committed slot")
                    }
                    Err(e) => return Err(RebootError::Flow(e)),
                }
            }
        }
        BootFlow::Uboot(_) => {}
    }
    let (program, args) = command.split_first().ok_or(RebootError::NoCommand)?;
    tracing::info!(?command, into = %into, "rebooting");
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|source| RebootError::Spawn {
            command: command.to_vec(),
            source,
        })?;
    if !status.success() {
        return Err(RebootError::Failed {
            command: command.to_vec(),
            status: status.to_string(),
        });
    }
    Ok(())
}

/// A reboot that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RebootError {
    #[error("unable to reboot: {0}")]
    Flow(#[source] BootctlError),
    #[error("unable to reboot: no reboot-command configured")]
    NoCommand,
    #[error("unable to run the reboot command {command:?}")]
    Spawn {
        command: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to reboot: {command:?} exited with {status}")]
    Failed {
        command: Vec<String>,
        status: String,
    },
}

/// Builds the installer.
#[must_use]
pub fn station_installer(
    kind: InstallerKind,
    rauc: &RaucConfig,
    sim: Option<&SimBootloader>,
    compatible: &str,
) -> Option<StationInstaller> {
    match kind {
        InstallerKind::Rauc => Some(StationInstaller::Rauc(RaucInstaller::new(rauc.clone()))),
        InstallerKind::Sim => {
            sim.map(|b| StationInstaller::Sim(SimInstaller::new(b.clone(), compatible)))
        }
    }
}

/// Wraps the three ports into `Deps`.
#[must_use]
pub fn station_deps(
    boot: StationBoot,
    installer: StationInstaller,
    health: StationHealth,
) -> StationDeps {
    Deps {
        boot: Arc::new(boot),
        installer: Arc::new(installer),
        health: Arc::new(health),
    }
}
