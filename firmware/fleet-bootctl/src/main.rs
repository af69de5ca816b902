//! `fleet-bootctl`: RAUC's custom bootloader backend and a small console tool.
//!
//! RAUC (`[system] bootloader=custom`, `[handlers] bootloader-custom-backend=fleet-bootctl`)
//! runs it as `fleet-bootctl get-primary`, `set-primary <bootname>`, `get-state <bootname>`,
//! `set-state <bootname> good|bad` and `get-current`; answers go to stdout, one word, and a
//! non-zero exit is a failure. Exit codes: 0 done, 1 failed or refused, 2 invalid config.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use fleet_bootctl::Config;
use fleet_bootctl::config::DEFAULT_CONFIG_PATH;
use fleet_core::ports::BootControl;
use fleet_core::slot::{Slot, SlotHealth};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-bootctl",
    version,
    about = "Boot flows of a fleet station (tryboot, U-Boot) and RAUC's custom backend"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, env = "FLEET_BOOTCTL_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum State {
    Good,
    Bad,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// RAUC: print the bootname the next boot tries first.
    GetPrimary,
    /// RAUC: make a slot primary (the other slot: arm it for a trial).
    SetPrimary { bootname: Slot },
    /// RAUC: print `good` or `bad` for a slot.
    GetState { bootname: Slot },
    /// RAUC: mark a slot good (only the booted one) or bad.
    SetState { bootname: Slot, state: State },
    /// RAUC: print the booted slot's bootname.
    GetCurrent,
    /// Print both slots' state for a person at the console.
    Status,
    /// Early in every boot: retry or give up an unfinished trial, refresh counters.
    BootCheck,
    /// Tryboot flow: use one attempt of the pending trial and reboot into it.
    RebootTrial,
}

fn health_word(h: SlotHealth) -> &'static str {
    match h {
        SlotHealth::Good => "good",
        SlotHealth::Trial => "trial",
        SlotHealth::Bad => "bad",
    }
}

fn run(config: &Config, command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::GetPrimary => println!("{}", config.status()?.primary),
        Cmd::SetPrimary { bootname } => config.rauc_set_primary(bootname)?,
        Cmd::GetState { bootname } => println!(
            "{}",
            if config.is_bad(bootname)? {
                "bad"
            } else {
                "good"
            }
        ),
        Cmd::SetState {
            bootname,
            state: State::Good,
        } => config.mark_good(bootname)?,
        Cmd::SetState {
            bootname,
            state: State::Bad,
        } => config.mark_bad(bootname)?,
        Cmd::GetCurrent => println!("{}", config.booted()?),
        Cmd::Status => {
            let status = config.status()?;
            println!("flow:    {}", config.flow_name());
            println!("booted:  {}", status.booted);
            println!("primary: {}", status.primary);
            for s in &status.slots {
                let mark = if s.slot == status.booted {
                    " (booted)"
                } else {
                    ""
                };
                match s.health {
                    SlotHealth::Trial => println!(
                        "slot {}: trial, {} attempts left{mark}",
                        s.slot, s.attempts_left
                    ),
                    h => println!("slot {}: {}{mark}", s.slot, health_word(h)),
                }
            }
        }
        Cmd::BootCheck => {
            if config.boot_check()? {
                println!("rebooting into the trial slot");
            }
        }
        Cmd::RebootTrial => match config {
            Config::Tryboot(t) => {
                if !t.reboot_into_trial()? {
                    anyhow::bail!(
                        "unable to reboot into the trial: its attempts have run out, slot marked bad"
                    );
                }
            }
            Config::Uboot(_) => anyhow::bail!(
                "unable to reboot into a trial: the uboot flow needs no special reboot"
            ),
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // stdout carries RAUC's answers: logs go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet-bootctl: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!(
            "{}: valid ({} flow)",
            cli.config.display(),
            config.flow_name()
        );
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("fleet-bootctl: no command given (see --help)");
        return ExitCode::from(2);
    };
    match run(&config, command).context("fleet-bootctl") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
