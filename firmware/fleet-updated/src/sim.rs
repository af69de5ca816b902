//! Running `fleet-updated` on a simulated station (`fleet-sim`): the ports, and a runner that
//! loops "reboots" in-process.
use std::future::Future;
use std::sync::Arc;

use fleet_core::slot::Slot;
use fleet_sim::{SimBootloader, SimError, SimHealth, SimInstaller};
use tokio::sync::watch;

use crate::config::{Config, SimConfig};
use crate::daemon::{self, Exit, RunError, RunStats};
use crate::ports::{Deps, HealthCheck};
use fleet_core::health::gate::Verdict;

/// Most boots one [`run_sim_station`] call goes through (bounds a station that keeps
/// rebooting).
pub const MAX_BOOTS: u32 = 64;

/// The simulated health check as a daemon port; it takes `delay` before answering.
#[derive(Debug, Clone)]
pub struct SimHealthCheck {
    pub health: SimHealth,
    pub delay: std::time::Duration,
}

impl HealthCheck for SimHealthCheck {
    fn check(&self, booted: Slot) -> impl Future<Output = Verdict> + Send {
        let h = self.health.clone();
        let delay = self.delay;
        async move {
            tokio::time::sleep(delay).await;
            let r = tokio::task::spawn_blocking(move || h.check(booted)).await;
            match r {
                Ok(Ok(Ok(()))) => Verdict::Healthy,
                Ok(Ok(Err(f))) => Verdict::Unhealthy {
                    check: f.check,
                    detail: f.detail,
                },
                Ok(Err(e)) => Verdict::Unhealthy {
                    check: "sim-read".into(),
                    detail: e.to_string(),
                },
                Err(e) => Verdict::Unhealthy {
                    check: "sim-panic".into(),
                    detail: e.to_string(),
                },
            }
        }
    }
}

/// The ports of a simulated station.
pub type SimDeps = Deps<SimBootloader, SimInstaller, SimHealthCheck>;

/// Builds the simulated ports for `sim`, with installs checked against `compatible`.
#[must_use]
pub fn sim_deps(sim: &SimConfig, compatible: &str) -> SimDeps {
    let boot = SimBootloader::new(&sim.root);
    Deps {
        boot: Arc::new(boot.clone()),
        installer: Arc::new(SimInstaller::new(boot.clone(), compatible)),
        health: Arc::new(SimHealthCheck {
            health: SimHealth::new(boot, sim.fail_health_file.clone()),
            delay: sim.health_delay,
        }),
    }
}

/// A failed simulated run.
#[derive(Debug, thiserror::Error)]
pub enum SimRunError {
    #[error("unable to run a simulated station: the config has no [sim] section")]
    NotSimulated,
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("unable to settle: the station rebooted {0} times")]
    TooManyBoots(u32),
}

/// How a simulated run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSummary {
    /// Boots (daemon starts) in this run.
    pub boots: u32,
    pub stats: RunStats,
}

/// Powers on once: provisions the station if its root is empty, then runs the simulated
/// bootloader. What `fleet-updated --sim-boot` does between two daemon processes.
pub fn power_on(sim: &SimConfig) -> Result<Slot, SimError> {
    let boot = SimBootloader::new(&sim.root);
    boot.provision(&sim.factory_version)?;
    boot.boot()
}

/// Runs a simulated station until `shutdown` turns true: power on, run the daemon, and on
/// [`Exit::Reboot`] power on again (a simulated boot between two daemon runs), as a real
/// station would reboot.
pub async fn run_sim_station(
    cfg: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SimSummary, SimRunError> {
    let sim = cfg.sim.clone().ok_or(SimRunError::NotSimulated)?;
    let deps = sim_deps(&sim, &cfg.compatible);
    let mut summary = SimSummary {
        boots: 0,
        stats: RunStats::default(),
    };
    loop {
        if *shutdown.borrow() {
            return Ok(summary);
        }
        if summary.boots >= MAX_BOOTS {
            return Err(SimRunError::TooManyBoots(summary.boots));
        }
        let s = sim.clone();
        let slot = tokio::task::spawn_blocking(move || power_on(&s))
            .await
            .map_err(|e| SimRunError::Run(RunError::Join(e)))??;
        summary.boots += 1;
        tracing::info!(device = %cfg.device_id, slot = %slot, boots = summary.boots, "simulated station booted");
        let mut rx = shutdown.clone();
        let stop = async move {
            // A dropped sender means nobody can ask to stop any more: run on.
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let (exit, stats) = daemon::run(cfg.clone(), deps.clone(), stop).await?;
        summary.stats.resent_chunk_bytes += stats.resent_chunk_bytes;
        summary.stats.stored_chunk_bytes += stats.stored_chunk_bytes;
        summary.stats.transfer.add(&stats.transfer);
        match exit {
            Exit::Shutdown => return Ok(summary),
            Exit::Reboot { into } => {
                tracing::info!(device = %cfg.device_id, into = %into, "simulated reboot");
                if shutdown.has_changed().unwrap_or(false) && *shutdown.borrow_and_update() {
                    return Ok(summary);
                }
            }
        }
    }
}
