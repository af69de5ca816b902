//! fleet-retentiond: the daemon and the small CLI other tools call.
//!
//! Exit codes: 0 ok, 1 failure, 2 invalid configuration, 3 reconciliation refused (`run --once`),
//! 4 reserved space not free in time (`reserve --wait-seconds`), 5 a path is not in the index
//! (`mark`), 6 unhealthy (`status`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fleet_retentiond::config::{self, Config};
use fleet_retentiond::daemon;
use fleet_retentiond::disk;
use fleet_retentiond::index::Index;
use fleet_retentiond::run::{self, Exit};

#[derive(Debug, Parser)]
#[command(
    name = "fleet-retentiond",
    version,
    about = "The recording index and the disk-retention supervisor"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "FLEET_RETENTIOND_CONFIG",
        default_value = "/etc/fleet/retentiond.toml"
    )]
    config: PathBuf,
    /// Station settings, laid over the image defaults of --config (ADR 0008); may be absent.
    #[arg(long, env = "FLEET_RETENTIOND_STATION_CONFIG")]
    station_config: Option<PathBuf>,
    /// Pushed settings, laid over both (ADR 0011: written only by fleet-updated's applier of
    /// signed configuration pushes); may be absent.
    #[arg(long, env = "FLEET_RETENTIOND_PUSHED_CONFIG")]
    pushed_config: Option<PathBuf>,
    /// Validate the merged configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run {
        /// Reconcile, run one plan cycle, write the metrics and exit (3 if refused).
        #[arg(long)]
        once: bool,
    },
    /// Set the uploaded and/or analysed flags of recordings (paths absolute or relative to the
    /// recordings directory).
    Mark {
        #[arg(long, conflicts_with = "not_uploaded")]
        uploaded: bool,
        #[arg(long)]
        not_uploaded: bool,
        #[arg(long, conflicts_with = "not_analysed")]
        analysed: bool,
        #[arg(long)]
        not_analysed: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Reserve free space for a download (the updater, before fetching a bundle); optionally wait
    /// until that much space is free and writing it keeps the disk below the housekeeping
    /// threshold.
    Reserve {
        #[arg(long)]
        holder: String,
        #[arg(long)]
        bytes: u64,
        /// The reservation lapses after this long (and at reboot).
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
        /// Wait up to this long for the space to be free (exit 4 if it is not).
        #[arg(long, default_value_t = 0)]
        wait_seconds: u64,
    },
    /// Drop a reservation.
    Release {
        #[arg(long)]
        holder: String,
    },
    /// Print the metrics (exit 6 when unhealthy): the updater's health check.
    Status,
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
    let layers = fleet_config::Stack::new(
        cli.config.clone(),
        cli.station_config.clone(),
        cli.pushed_config.clone(),
    );
    // Everything retentiond needs is in the image: it never waits for station settings.
    let out =
        fleet_config::load_for_daemon(&layers, &[], true, |m| config::parse_at(&m.text, &m.origin));
    let cfg = match out.finish(&layers) {
        Ok(c) => c,
        Err((code, e)) => {
            eprintln!("fleet-retentiond: {e}");
            return ExitCode::from(code);
        }
    };
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    match dispatch(cfg, cli.command.unwrap_or(Command::Run { once: false })) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fleet-retentiond: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn relative(cfg: &Config, p: &Path) -> String {
    p.strip_prefix(&cfg.recordings_dir)
        .unwrap_or(p)
        .to_string_lossy()
        .trim_start_matches('/')
        .to_owned()
}

fn dispatch(cfg: Config, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run { once } => match run::run(cfg, once)? {
            Exit::Stopped => Ok(0),
            Exit::Refused => Ok(3),
        },
        Command::Mark {
            uploaded,
            not_uploaded,
            analysed,
            not_analysed,
            paths,
        } => {
            let up = uploaded.then_some(true).or(not_uploaded.then_some(false));
            let an = analysed.then_some(true).or(not_analysed.then_some(false));
            anyhow::ensure!(
                up.is_some() || an.is_some(),
                "unable to mark: give --uploaded, --analysed or their negations"
            );
            let mut index = Index::open(&cfg.index_path())?;
            let rel: Vec<String> = paths.iter().map(|p| relative(&cfg, p)).collect();
            let changed = index.set_flags(&rel, up, an)?;
            println!("{changed} of {} recordings marked", rel.len());
            Ok(if changed == rel.len() { 0 } else { 5 })
        }
        Command::Reserve {
            holder,
            bytes,
            ttl_seconds,
            wait_seconds,
        } => {
            let index = Index::open(&cfg.index_path())?;
            let expires =
                daemon::now_boottime_ms().saturating_add(ttl_seconds.saturating_mul(1000));
            index.reserve(&holder, bytes, &daemon::boot_id(&cfg), expires)?;
            let deadline = Instant::now() + Duration::from_secs(wait_seconds);
            loop {
                let d = disk::measure(&cfg.recordings_dir).context("unable to measure the disk")?;
                // Free for the download, and the disk stays below every tier once it is written.
                let fits = d.available_bytes >= bytes
                    && d.used_bytes.saturating_add(bytes)
                        <= cfg.policy.housekeeping_at.of(d.capacity());
                if fits {
                    println!("{bytes} bytes free for {holder}");
                    return Ok(0);
                }
                if Instant::now() >= deadline {
                    println!(
                        "{} of {bytes} bytes free for {holder}; reservation kept",
                        d.available_bytes
                    );
                    return Ok(4);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Command::Release { holder } => {
            let index = Index::open(&cfg.index_path())?;
            let existed = index.release(&holder)?;
            println!(
                "{}",
                if existed {
                    "released"
                } else {
                    "no such reservation"
                }
            );
            Ok(0)
        }
        Command::Status => {
            let path = cfg
                .metrics_path
                .as_ref()
                .context("unable to report status: metrics-path is not configured")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("unable to read {}", path.display()))?;
            let m: serde_json::Value =
                serde_json::from_str(&text).context("unable to parse the metrics")?;
            println!("{text}");
            let healthy = m
                .get("healthy")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            Ok(if healthy { 0 } else { 6 })
        }
    }
}
