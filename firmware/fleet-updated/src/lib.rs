//! `fleet-updated`: the station's update daemon.
//!
//! A shell around the pure station (`fleet_core::station::step`), which makes every update
//! decision: it wires the MQTT session (`fleet-mqtt`), a journal on the data partition
//! ([`journal`]), resumable chunked downloads ([`download`]) and the ports `BootControl`,
//! `Installer` and [`HealthCheck`] ([`ports`]) into one `select!` loop ([`run`], a folder of
//! small rooms: see [`daemon`]).
//!
//! # Entry points
//! - [`run`]`(config, deps, shutdown)`: the daemon on any ports. Returns
//!   [`Exit::Reboot`] when the engine wants a reboot (the journal already holds the intent):
//!   the binary exits with [`EXIT_REBOOT`] and the system reboots.
//! - [`sim::run_sim_station`]`(config, shutdown)`: a simulated station (config with a `[sim]`
//!   section). It powers the simulated board on ([`sim::power_on`]: provision on first use,
//!   then the simulated bootloader picks the slot and counts attempts), runs the daemon, and
//!   loops simulated reboots in-process until the shutdown watch turns true.
//! - The binary: `fleet-updated --config FILE [--check-config]`; on simulated stations
//!   `--sim-boot` runs one simulated power-on and exits, `--sim` runs
//!   [`sim::run_sim_station`] (in-process reboots). A process-per-boot runner (each daemon
//!   process is one boot; exit code 10 means "reboot me"):
//!
//!   ```sh
//!   while fleet-updated -c F --sim-boot; do fleet-updated -c F; [ $? -eq 10 ] || break; done
//!   ```
//!
//! # Ports
//! `BootControl` and `Installer` are `fleet-core` ports; [`HealthCheck`] lives here until
//! `fleet-core` has one. [`wiring::from_config`] builds them from the configuration
//! (`installer = "rauc" | "sim"`, `boot-flow = "tryboot" | "uboot" | "sim"`): RAUC over D-Bus
//! (`fleet-rauc`), `fleet-bootctl`'s boot flows, and [`health::StationHealth`] (systemd units,
//! the recorder's status file, the MQTT session, commands, and systemd's system state; judged by
//! the pure `fleet_core::health::gate`). The committed version goes to the version floor ([`floor`]) that the
//! bundles' install-check hook reads. Keys: `docs/reference/updated.md`. The reboot itself is not a port: [`run`] returns [`Exit::Reboot`]
//! after the journal holds the intent, and its caller reboots (the binary exits 10 so the
//! unit's `ExecStopPost=`/`OnFailure=` or the simulated runner does it).
//!
//! # Simulated stations in tests and demos
//! ```no_run
//! # async fn demo(cfg: fleet_updated::Config) -> Result<(), fleet_updated::sim::SimRunError> {
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let station = tokio::spawn(fleet_updated::sim::run_sim_station(cfg, stopped));
//! // ... publish bundles and offers, watch fleet/v1/devices/+/state ...
//! let _ = stop.send(true);
//! let summary = station.await.expect("station task")?;
//! println!("{} boots", summary.boots);
//! # Ok(()) }
//! ```
//!
//! # Exit codes
//! 0 stopped, 1 failure, 2 invalid configuration, 10 reboot requested ([`EXIT_REBOOT`]).
//!
//! # Files (all under `data-dir`)
//! - `fleet/updated/journal.json`: engine state and publication counters (temp + fsync +
//!   rename + fsync dir after every transition, before its actions).
//! - `fleet/updated/controls.json`: the newest operator control taken per control topic
//!   (written the same way before it takes effect; see `docs/reference/updated.md`).
//! - `fleet/updated/trust.json`: the offer-signing keys after the last applied key rotation
//!   ([`trust_store`]); absent until the first rotation.
//! - `fleet/downloads/<bundle-id>.part`: a download in progress (chunks at their offsets; what
//!   is held is found again by hashing, so nothing else needs to survive a power cut);
//!   `<bundle-id>.bundle` once the whole file hashed to its id; a delta's patch downloads
//!   there the same way under its patch id.
//! - `fleet/base/kept.json` and `fleet/base/<bundle-id>.bundle`: the committed bundle kept as
//!   the base of the next delta ([`base`]).
// Denied everywhere but the two memory maps of `rebuild` (ADR 0012), each with its SAFETY.
#![deny(unsafe_code)]

pub mod adapters;
pub mod base;
pub mod config;
pub mod config_apply;
pub mod daemon;
pub mod download;
pub mod durable;
pub mod floor;
pub mod health;
pub mod journal;
pub mod ports;
pub mod rebuild;
pub mod reservation;
pub mod sim;
pub mod trust_store;
pub mod wiring;

pub use config::Config;
pub use daemon::{Exit, RunError, RunStats, run};
pub use ports::{Deps, HealthCheck};

/// Exit code of the binary when the engine asks for a reboot.
pub const EXIT_REBOOT: i32 = 10;
/// Exit code for an invalid configuration (systemd does not restart on it).
pub const EXIT_INVALID_CONFIG: i32 = 2;
