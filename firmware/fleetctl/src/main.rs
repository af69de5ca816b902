//! `fleetctl`: the operator's command line. Parses arguments, calls the library, prints.
//!
//! Exit codes: 0 success, 1 failure (broker, I/O, an unexpected outcome), 2 invalid input
//! (arguments, bundle, key).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Host tool for fleet updates: keys, bundles, offers, station status.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the ed25519 key pair that signs offers and bundle manifests.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a key pair: <name>.key.pem (PKCS#8, mode 0600) and <name>.pub.pem.
    Gen {
        /// Directory to write the two files into.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Base name of the files.
        #[arg(long, default_value = "fleet-offer")]
        name: String,
    },
}

/// An error the user can fix by changing the input: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct InvalidInput(anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: unable to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InvalidInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keys {
            command: KeysCommand::Gen { out_dir, name },
        } => {
            let private = out_dir.join(format!("{name}.key.pem"));
            let public = out_dir.join(format!("{name}.pub.pem"));
            let made = fleetctl::keys::generate(&private, &public)
                .map_err(|e| InvalidInput(e.into()))
                .context("unable to generate a key pair")?;
            println!("private key: {} (mode 0600)", made.private_path.display());
            println!("public key:  {}", made.public_path.display());
            println!("key id:      {}", made.key_id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
