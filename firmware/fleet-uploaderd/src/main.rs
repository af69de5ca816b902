//! fleet-uploaderd: the daemon and its configuration check.
//!
//! Exit codes: 0 ok, 1 failure, 2 invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fleet_uploaderd::config;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-uploaderd",
    version,
    about = "Uploads recordings and marks them uploaded once the server confirms them"
)]
struct Cli {
    /// The image's configuration file (the station's overlay is named inside it).
    #[arg(
        long,
        short,
        env = "FLEET_UPLOADERD_CONFIG",
        default_value = "/etc/fleet/uploaderd.toml"
    )]
    config: PathBuf,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match config::load(&cli.config) {
        Ok(_) if cli.check_config => {
            println!("{}: ok", cli.config.display());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("fleet-uploaderd: the daemon loop is not built yet");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fleet-uploaderd: {e}");
            ExitCode::from(2)
        }
    }
}
