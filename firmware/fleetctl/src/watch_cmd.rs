//! `watch --rollout` in the binary: arguments, output style, exit code.
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use fleet_core::ids::UpdateId;
use fleetctl::connection::BrokerAddr;
use fleetctl::rollout_watch::{
    RolloutEnd, RolloutPrinter, RolloutWatchOptions, Style, watch_rollout,
};

use crate::{InvalidInput, classify};

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Show a rollout instead of one update: its current wave and target, stations per state,
    /// failures grouped by reason, stations not heard from, why it halted. Without ID: the
    /// only open rollout. Ends when the rollout completes (exit 0) or halts (exit 1).
    #[arg(
        long,
        value_name = "ID",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with_all = ["update", "devices"]
    )]
    pub rollout: Option<String>,
    /// With --rollout: one JSON object per line for every changed view.
    #[arg(long, requires = "rollout")]
    pub json: bool,
    /// With --rollout: verify the rollout record with this key (else it is shown unverified).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// With --rollout: a station whose state is older than this is not heard from.
    #[arg(long, default_value = "10m")]
    pub stale_after: humantime::Duration,
    /// With --rollout: recount the view at most this often.
    #[arg(long, default_value = "500ms")]
    pub refresh: humantime::Duration,
}

/// Runs `watch --rollout`.
pub async fn watch(
    broker: &BrokerAddr,
    args: RolloutArgs,
    timeout: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let update = match args.rollout.as_deref() {
        None | Some("") => None,
        Some(id) => Some(UpdateId::new(id).map_err(|e| InvalidInput(e.into()))?),
    };
    let trusted = match &args.key {
        Some(p) => {
            let key = fleetctl::keys::load_signing_key(p)
                .map_err(|e| InvalidInput(e.into()))
                .context("unable to load the signing key")?;
            Some(fleetctl::rollout::trusted_by(&key))
        }
        None => None,
    };
    let mut opts = RolloutWatchOptions::new(update);
    opts.trusted = trusted;
    opts.stale_after = args.stale_after.into();
    opts.refresh = args.refresh.into();
    if let Some(t) = timeout {
        opts.timeout = t;
    }
    let style = if args.json {
        Style::Json
    } else if std::io::stdout().is_terminal() {
        Style::Redraw
    } else {
        Style::Lines
    };
    let mut printer = RolloutPrinter::new(style, std::io::stdout());
    let summary = watch_rollout(broker, &opts, &mut printer, stop)
        .await
        .map_err(classify)
        .context("unable to watch the rollout")?;
    Ok(match summary.end {
        RolloutEnd::Completed | RolloutEnd::Interrupted => ExitCode::SUCCESS,
        RolloutEnd::Halted | RolloutEnd::TimedOut => ExitCode::FAILURE,
    })
}
