//! `fleet-updated`: see the library docs for the exit codes and the simulated runner.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fleet_updated::adapters::{self, BootFlowKind, InstallerKind};
use fleet_updated::wiring;
use fleet_updated::{Config, EXIT_INVALID_CONFIG, EXIT_REBOOT, Exit, sim};

#[derive(Debug, Parser)]
#[command(name = "fleet-updated", about = "The station update daemon")]
struct Args {
    /// Configuration file.
    #[arg(short, long, default_value = "/etc/fleet/updated.toml")]
    config: PathBuf,
    /// Station settings laid over --config (ADR 0008); absent on an unprovisioned station.
    #[arg(long)]
    station_config: Option<PathBuf>,
    /// Pushed settings laid over both (ADR 0011: written only by this daemon's applier of
    /// signed configuration pushes); may be absent.
    #[arg(long)]
    pushed_config: Option<PathBuf>,
    /// Validate the merged configuration and exit (2 invalid, 3 incomplete).
    #[arg(long)]
    check_config: bool,
    /// Print systemd's system state as the health gate reads it (`[health]`'s `systemctl` and
    /// `systemd-run-dir`: `starting`, `running`, `stopping`, ..., or `unavailable`) and exit.
    #[arg(long, conflicts_with_all = ["check_config", "sim_boot", "sim"])]
    system_state: bool,
    /// Simulated stations: run one simulated power-on (bootloader) and exit.
    #[arg(long, conflicts_with = "sim")]
    sim_boot: bool,
    /// Simulated stations: run the station with in-process reboots until SIGTERM/SIGINT.
    #[arg(long)]
    sim: bool,
}

/// What `--check-config` and every start say about `wall-clock = "trusted"` on a real station.
const TRUSTED_CLOCK_WARNING: &str = "wall-clock = \"trusted\" skips the clock rule (meant for \
     simulations and tests): offers are judged expired by a clock that may not be synchronized; \
     remove the key to follow the rule (\"system\")";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let layers = fleet_config::Stack::new(
        args.config.clone(),
        args.station_config.clone(),
        args.pushed_config.clone(),
    );
    // Not provisioned yet: start, report what is missing and wait (ADR 0008).
    let needs = fleet_updated::config::STATION_NEEDS;
    let out = fleet_config::load_for_daemon(&layers, needs, args.check_config, |m| {
        Config::parse(&m.origin, &m.text)
    });
    let config = match out.finish(&layers) {
        Ok(c) => c,
        Err((code, e)) => {
            eprintln!("{e}");
            return exit_code(i32::from(code));
        }
    };
    let simulated = config.installer == InstallerKind::Sim && config.boot_flow == BootFlowKind::Sim;
    if !simulated && let Err(e) = wiring::from_config(&config) {
        eprintln!("{}: {e}", args.config.display());
        return exit_code(EXIT_INVALID_CONFIG);
    }
    // `trusted` skips the clock rule: meant for simulations and tests, allowed (the operator
    // may know better) but never silent on a station with real ports.
    let clock_overridden = config.wall_clock.is_overridden_on_a_real_station(simulated);
    if args.system_state {
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let manager = rt.block_on(fleet_updated::health::system_state(&config.health));
                println!("{}", manager.as_str());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fleet-updated: unable to start the async runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.check_config {
        if clock_overridden {
            eprintln!(
                "{}: warning: {TRUSTED_CLOCK_WARNING}",
                args.config.display()
            );
        }
        if let Err(e) = check_credentials(&config) {
            eprintln!("{}: {e}", args.config.display());
            return exit_code(EXIT_INVALID_CONFIG);
        }
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    if clock_overridden {
        tracing::warn!(wall_clock = "trusted", "{TRUSTED_CLOCK_WARNING}");
    }
    if config.mqtt.is_plain_over_a_network() {
        tracing::warn!(host = %config.mqtt.host, "mqtt transport is plain to a host that is not loopback: anyone on the path can read and forge messages");
    }
    match real_main(args, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fleet-updated: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config` on a provisioned station: the MQTT credential files that exist must be
/// usable (PEM, key matching the certificate). Missing files are only reported: an image is
/// checked before any station's `/data` holds them, and the daemon waits for them.
fn check_credentials(config: &Config) -> Result<(), fleet_mqtt::CredentialError> {
    let limit = fleet_mqtt::Limits::default().max_credential_file_bytes;
    if let fleet_mqtt::Transport::Tls(tls) = &config.mqtt.transport {
        let missing: Vec<_> = tls.files().into_iter().filter(|p| !p.exists()).collect();
        if missing.is_empty() {
            tls.client_config(limit)?;
        } else {
            for p in missing {
                eprintln!("note: {} does not exist yet", p.display());
            }
        }
    }
    if let Some(creds) = &config.mqtt.credentials
        && creds.password_file.as_ref().is_some_and(|p| p.exists())
    {
        creds.password(limit)?;
    }
    Ok(())
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn real_main(args: Args, config: Config) -> anyhow::Result<ExitCode> {
    if args.sim_boot {
        let sim = config
            .sim
            .as_ref()
            .context("--sim-boot needs a [sim] section in the configuration")?;
        let slot = sim::power_on(sim)?;
        println!("booted slot {slot}");
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("unable to start the async runtime")?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("unable to install the SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let _ = tx.send(true);
        });
        if args.sim {
            let summary = sim::run_sim_station(config, rx).await?;
            tracing::info!(boots = summary.boots, "simulated station stopped");
            return Ok(ExitCode::SUCCESS);
        }
        let mut rx = rx;
        let stop = async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        if config.installer != InstallerKind::Sim || config.boot_flow != BootFlowKind::Sim {
            let deps = wiring::from_config(&config)?;
            let boot = deps.boot.clone();
            let command = config.reboot_command.clone();
            let (exit, _) = fleet_updated::run(config, deps, stop).await?;
            return Ok(match exit {
                Exit::Shutdown => ExitCode::SUCCESS,
                Exit::Reboot { into } => {
                    // The journal holds the intent: whatever happens now, the next start
                    // judges where the station came up. A reboot command that fails still
                    // exits 10: the unit (ExecStopPost) asks the root reboot service then,
                    // while exit 1 would restart the daemon into a station that never reboots.
                    match tokio::task::spawn_blocking(move || adapters::reboot(&boot, into, &command))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, into = %into, "reboot command failed; exiting for the service manager to reboot");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, into = %into, "reboot task failed; exiting for the service manager to reboot");
                        }
                    }
                    exit_code(EXIT_REBOOT)
                }
            });
        }
        let Some(sim_cfg) = config.sim.clone() else {
            anyhow::bail!("a simulated station needs a [sim] section");
        };
        let deps = sim::sim_deps(&sim_cfg, &config.compatible);
        let (exit, _) = fleet_updated::run(config, deps, stop).await?;
        Ok(match exit {
            Exit::Shutdown => ExitCode::SUCCESS,
            Exit::Reboot { .. } => exit_code(EXIT_REBOOT),
        })
    })
}
