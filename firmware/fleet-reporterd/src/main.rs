//! `fleet-reporterd`: publishes the station's health over MQTT (docs/reference/reporterd.md).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fleet_reporterd::config::{Config, STATION_NEEDS, Settings};
use fleet_reporterd::daemon::{self, Reporter};

/// Invalid configuration: systemd must not restart the daemon (RestartPreventExitStatus=2).
const EXIT_INVALID_CONFIG: u8 = fleet_config::EXIT_INVALID;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-reporterd",
    about = "Publishes the station's health over MQTT"
)]
struct Args {
    #[arg(short, long, default_value = "/etc/fleet/reporterd.toml")]
    config: PathBuf,
    /// Validate the configuration (and the station configuration it names) and exit.
    #[arg(long)]
    check_config: bool,
    /// Read everything once, print the health message as JSON and exit (no broker).
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.once {
        // One sample, now: a station without its identity is an error, not a wait.
        let config = match Config::load(&args.config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
        };
        let h = Reporter::new(config).sample();
        return match fleet_reporterd::report::encode_fitting(h) {
            Ok(b) => {
                println!("{}", String::from_utf8_lossy(&b));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fleet-reporterd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    // An unprovisioned station: start, say what is missing and wait (ADR 0008); with
    // --check-config an incomplete identity exits 3.
    let layers = settings.station_layers();
    let config =
        match fleet_config::load_for_daemon(&layers, STATION_NEEDS, args.check_config, |merged| {
            settings.with_station(&merged.text)
        })
        .finish(&layers)
        {
            Ok(c) => c,
            Err((code, msg)) => {
                eprintln!("{}: {msg}", args.config.display());
                return ExitCode::from(code);
            }
        };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    if config.mqtt.is_plain_over_a_network() {
        tracing::warn!(host = %config.mqtt.host, "mqtt transport is plain to a host that is not loopback");
    }
    match real_main(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-reporterd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(config: Config) -> anyhow::Result<()> {
    // One thread: the reporter reads a few files every half minute.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
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
        daemon::run(config, rx).await
    })
}
