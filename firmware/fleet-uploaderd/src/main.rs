//! fleet-uploaderd: the daemon and its configuration check.
//!
//! Exit codes: 0 ok, 1 failure, 2 invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fleet_uploaderd::{config, run};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-uploaderd",
    version,
    about = "Uploads recordings and marks them uploaded once the server confirms them"
)]
struct Cli {
    /// The image's configuration file (defaults).
    #[arg(
        long,
        short,
        env = "FLEET_UPLOADERD_CONFIG",
        default_value = "/etc/fleet/uploaderd.toml"
    )]
    config: PathBuf,
    /// Station settings, laid over the image defaults of --config (ADR 0008: written by
    /// provisioning; without a destination in them the uploader idles); may be absent.
    #[arg(long, env = "FLEET_UPLOADERD_STATION_CONFIG")]
    station_config: Option<PathBuf>,
    /// Pushed settings laid over the image's and the station's (ADR 0011: written only by
    /// fleet-updated's applier of signed configuration pushes); may be absent.
    #[arg(long, env = "FLEET_UPLOADERD_PUSHED_CONFIG")]
    pushed_config: Option<PathBuf>,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    /// Upload until the queue is empty or must wait, then exit.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match config::load_layers(
        &cli.config,
        cli.station_config.as_deref(),
        cli.pushed_config.as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet-uploaderd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    match run::run(cfg, cli.once) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-uploaderd: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
