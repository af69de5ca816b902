//! The composition root: the ports a configuration names, built from it. Its own module so
//! the adapters never depend on the configuration (which names the adapters' settings).
use std::path::PathBuf;

use fleet_sim::SimBootloader;

use crate::adapters::{
    BootFlow, BootFlowKind, StationBoot, StationDeps, station_deps, station_installer,
};
use crate::health::StationHealth;

/// The ports named by a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unable to use the boot flow configuration: {0}")]
    Bootctl(#[from] fleet_bootctl::ConfigError),
    #[error("unable to use boot-flow {wanted:?}: {path} configures the {found} flow")]
    FlowMismatch {
        wanted: BootFlowKind,
        path: PathBuf,
        found: &'static str,
    },
    #[error("unable to build the {what}: {why}")]
    Missing {
        what: &'static str,
        why: &'static str,
    },
}

/// Builds the ports a configuration names (no connection is made yet: RAUC is reached at
/// the first install). Errors are configuration errors (exit code 2).
pub fn from_config(cfg: &crate::Config) -> Result<StationDeps, BuildError> {
    let sim_boot = cfg.sim.as_ref().map(|s| SimBootloader::new(&s.root));
    let flow = match cfg.boot_flow {
        BootFlowKind::Sim => BootFlow::Sim(sim_boot.clone().ok_or(BuildError::Missing {
            what: "simulated boot flow",
            why: "no [sim] section",
        })?),
        kind => {
            let path = cfg.bootctl_config.clone().ok_or(BuildError::Missing {
                what: "boot flow",
                why: "no bootctl-config",
            })?;
            match (kind, fleet_bootctl::Config::load(&path)?) {
                (BootFlowKind::Tryboot, fleet_bootctl::Config::Tryboot(t)) => BootFlow::Tryboot(t),
                (BootFlowKind::Uboot, fleet_bootctl::Config::Uboot(u)) => BootFlow::Uboot(u),
                (wanted, other) => {
                    return Err(BuildError::FlowMismatch {
                        wanted,
                        path,
                        found: other.flow_name(),
                    });
                }
            }
        }
    };
    let installer = station_installer(cfg.installer, &cfg.rauc, sim_boot.as_ref(), &cfg.compatible)
        .ok_or(BuildError::Missing {
            what: "simulated installer",
            why: "no [sim] section",
        })?;
    Ok(station_deps(
        StationBoot {
            flow,
            version_file: cfg.version_file.clone(),
        },
        installer,
        StationHealth::new(cfg.health.clone()),
    ))
}
