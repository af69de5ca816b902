//! The `rollout`, `freeze`, `unfreeze`, `pin` and `sim` commands of the binary.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, GroupId, UpdateId};
use fleet_core::rollout::{Scope, Status};
use fleet_proto::Limits;
use fleetctl::publish::PushRequest;
use fleetctl::rollout::{self as ro, RolloutError};
use fleetctl::target::Target;

use crate::{BrokerArg, InvalidInput, classify};

#[derive(Debug, Args)]
pub struct KeyArg {
    /// The private key (PKCS#8 PEM) that signs offers, controls and the rollout record.
    #[arg(long, env = "FLEET_SIGNING_KEY")]
    key: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpdateArg {
    /// The rollout (its update id); default: the only one not completed.
    #[arg(long)]
    update: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Push a bundle and start a rollout of it by a plan (TOML).
    Start {
        #[command(flatten)]
        broker: BrokerArg,
        #[command(flatten)]
        key: KeyArg,
        /// The plan: group, waves, min-stations, success-percent, failure-percent, ...
        #[arg(long)]
        plan: PathBuf,
        /// The bundle file.
        bundle: PathBuf,
        #[arg(long)]
        version: semver::Version,
        #[arg(long)]
        compatible: String,
        #[arg(long, default_value_t = fleet_proto::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Also publish a delta from this bundle file (repeat for more bases; ADR 0012).
        #[arg(long = "delta-from", value_name = "BUNDLE")]
        delta_from: Vec<PathBuf>,
        /// Also publish a delta from every base the stations keep (their retained states'
        /// `kept-base`) whose bundle file is in this directory.
        #[arg(long, value_name = "DIR")]
        delta_dir: Option<PathBuf>,
        /// Do not publish the zstd-compressed bundle next to the raw one (ADR 0012).
        #[arg(long)]
        no_compress: bool,
    },
    /// Offer the next wave (only when the current one met the plan, unless --force).
    Advance {
        #[command(flatten)]
        broker: BrokerArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        update: UpdateArg,
        #[arg(long)]
        force: bool,
    },
    /// Halt: stations that have not started installing the update do not.
    Halt {
        #[command(flatten)]
        broker: BrokerArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        update: UpdateArg,
        /// Why (kept in the rollout's history).
        #[arg(long, default_value = "halted by hand")]
        note: String,
    },
    /// Lift a halt and continue at the current wave.
    Resume {
        #[command(flatten)]
        broker: BrokerArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        update: UpdateArg,
    },
    /// Show every rollout: waves, per-state counts, failures, stations not heard from.
    Status {
        #[command(flatten)]
        broker: BrokerArg,
        /// Verify the records with this key (else they are shown unverified).
        #[arg(long, env = "FLEET_SIGNING_KEY")]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Repeat every this long until Ctrl-C (a live view).
        #[arg(long)]
        follow: Option<humantime::Duration>,
        #[arg(long, default_value = "10m")]
        stale_after: humantime::Duration,
    },
    /// Drive a rollout: halt on failures, advance when a wave met the plan, until it
    /// completes (exit 0) or halts (exit 1).
    Run {
        #[command(flatten)]
        broker: BrokerArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        update: UpdateArg,
        #[arg(long, default_value = "2s")]
        interval: humantime::Duration,
        #[arg(long, default_value = "24h")]
        timeout: humantime::Duration,
        #[arg(long, default_value = "10m")]
        stale_after: humantime::Duration,
        /// One JSON view per round instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    broker: BrokerArg,
    #[command(flatten)]
    key: KeyArg,
    /// `fleet`, `group:<name>` or `device:<id>`.
    #[arg(long, default_value = "fleet", value_parser = parse_scope)]
    scope: Scope,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(flatten)]
    broker: BrokerArg,
    /// The public key file (hex) the stations trust.
    #[arg(long)]
    trust: PathBuf,
    #[arg(long, default_value_t = 100)]
    stations: usize,
    #[arg(long, default_value = "field")]
    group: String,
    #[arg(long, default_value = "sim")]
    prefix: String,
    #[arg(long, default_value = "fleet-sim")]
    compatible: String,
    #[arg(long, default_value = "1.0.0")]
    version: semver::Version,
    /// Share (0..1) of stations whose new slot fails its health check.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Share (0..1) of stations that install five times slower.
    #[arg(long, default_value_t = 0.0)]
    slow_rate: f64,
    /// Share (0..1) of stations whose link drops now and then.
    #[arg(long, default_value_t = 0.0)]
    flaky_rate: f64,
    #[arg(long, default_value = "20s")]
    flaky_every: humantime::Duration,
    #[arg(long, default_value = "200ms")]
    install_time: humantime::Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (default: at Ctrl-C).
    #[arg(long)]
    duration: Option<humantime::Duration>,
}

pub(crate) fn parse_scope(s: &str) -> Result<Scope, String> {
    if s == "fleet" {
        return Ok(Scope::Fleet);
    }
    if let Some(g) = s.strip_prefix("group:") {
        return GroupId::new(g).map(Scope::Group).map_err(|e| e.to_string());
    }
    if let Some(d) = s.strip_prefix("device:") {
        return DeviceId::new(d)
            .map(Scope::Device)
            .map_err(|e| e.to_string());
    }
    Err("expected fleet, group:<name> or device:<id>".into())
}

fn load_key(p: &std::path::Path) -> anyhow::Result<SigningKey> {
    fleetctl::keys::load_signing_key(p)
        .map_err(|e| InvalidInput(e.into()))
        .context("unable to load the signing key")
}

fn update_id(u: &UpdateArg) -> anyhow::Result<Option<UpdateId>> {
    u.update
        .as_deref()
        .map(|s| UpdateId::new(s).map_err(|e| InvalidInput(e.into()).into()))
        .transpose()
}

pub async fn rollout(cmd: RolloutCommand) -> anyhow::Result<ExitCode> {
    let limits = Limits::DEFAULT;
    match cmd {
        RolloutCommand::Start {
            broker,
            key,
            plan,
            bundle,
            version,
            compatible,
            chunk_size,
            delta_from,
            delta_dir,
            no_compress,
        } => {
            let key = load_key(&key.key)?;
            let plan = ro::read_plan(&plan).map_err(classify)?;
            let target = Target::Group(plan.group.clone());
            let mut req = PushRequest::new(bundle, target, version, compatible);
            req.chunk_size = chunk_size;
            req.delta_from = delta_from;
            req.delta_dir = delta_dir;
            req.compress = !no_compress;
            if req.compress {
                eprintln!("compressing the bundle (zstd level 19; --no-compress skips it)");
            }
            let rec = ro::start(&broker.broker, &key, plan, req)
                .await
                .map_err(classify)?;
            println!(
                "rollout {} started: wave 1/{} offered (sequence {})",
                rec.update_id,
                rec.plan.waves.len(),
                rec.offer_sequence
            );
        }
        RolloutCommand::Advance {
            broker,
            key,
            update,
            force,
        } => {
            let key = load_key(&key.key)?;
            let u = update_id(&update)?;
            let rec = ro::advance(&broker.broker, &key, u.as_ref(), force, &limits)
                .await
                .map_err(classify)?;
            println!(
                "rollout {}: wave {}/{} offered (sequence {})",
                rec.update_id,
                rec.progress.wave + 1,
                rec.plan.waves.len(),
                rec.offer_sequence
            );
        }
        RolloutCommand::Halt {
            broker,
            key,
            update,
            note,
        } => {
            let key = load_key(&key.key)?;
            let u = update_id(&update)?;
            let rec = ro::halt(&broker.broker, &key, u.as_ref(), &note, &limits)
                .await
                .map_err(classify)?;
            println!(
                "rollout {} halted at wave {}",
                rec.update_id,
                rec.progress.wave + 1
            );
        }
        RolloutCommand::Resume {
            broker,
            key,
            update,
        } => {
            let key = load_key(&key.key)?;
            let u = update_id(&update)?;
            let rec = ro::resume(&broker.broker, &key, u.as_ref(), &limits)
                .await
                .map_err(classify)?;
            println!(
                "rollout {} resumed at wave {}",
                rec.update_id,
                rec.progress.wave + 1
            );
        }
        RolloutCommand::Status {
            broker,
            key,
            json,
            follow,
            stale_after,
        } => {
            let key = key.as_deref().map(load_key).transpose()?;
            loop {
                let views = ro::views(&broker.broker, key.as_ref(), stale_after.into(), &limits)
                    .await
                    .map_err(classify)?;
                if json {
                    println!("{}", serde_json::to_string(&views)?);
                } else if views.is_empty() {
                    println!("no rollout on {}", broker.broker);
                } else {
                    for v in &views {
                        print!("{}", ro::render(v));
                    }
                }
                match follow {
                    Some(d) => tokio::time::sleep(d.into()).await,
                    None => break,
                }
            }
        }
        RolloutCommand::Run {
            broker,
            key,
            update,
            interval,
            timeout,
            stale_after,
            json,
        } => {
            let key = load_key(&key.key)?;
            let u = update_id(&update)?;
            let deadline = tokio::time::Instant::now() + Duration::from(timeout);
            loop {
                let tick = ro::tick(
                    &broker.broker,
                    &key,
                    u.as_ref(),
                    stale_after.into(),
                    &limits,
                )
                .await;
                let t = match tick {
                    Ok(t) => t,
                    // A busy or restarting broker: try again next round (until the timeout).
                    Err(RolloutError::Broker(e)) if tokio::time::Instant::now() < deadline => {
                        eprintln!("warning: {e}; trying again");
                        tokio::time::sleep(interval.into()).await;
                        continue;
                    }
                    Err(e) => return Err(classify(e)),
                };
                if json {
                    println!("{}", serde_json::to_string(&t.view)?);
                } else {
                    print!("{}", ro::render(&t.view));
                }
                match &t.record.progress.status {
                    Status::Completed => return Ok(ExitCode::SUCCESS),
                    Status::Halted { reason } => {
                        eprintln!("rollout halted: {}", ro::describe_halt(reason));
                        return Ok(ExitCode::FAILURE);
                    }
                    Status::Running => {}
                }
                if tokio::time::Instant::now() > deadline {
                    eprintln!("rollout still running after {timeout}");
                    return Ok(ExitCode::FAILURE);
                }
                tokio::time::sleep(interval.into()).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a control command changes.
#[derive(Debug, Clone)]
pub enum ControlChange {
    Freeze(bool),
    Pin(Option<semver::Version>),
}

pub async fn control(args: ControlArgs, change: ControlChange) -> anyhow::Result<ExitCode> {
    let key = load_key(&args.key.key)?;
    let limits = Limits::DEFAULT;
    let c = match change {
        ControlChange::Freeze(f) => {
            ro::freeze(&args.broker.broker, &key, args.scope, f, &limits).await
        }
        ControlChange::Pin(p) => ro::pin(&args.broker.broker, &key, args.scope, p, &limits).await,
    }
    .map_err(classify)?;
    if args.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!(
            "control {:?} sequence {}: freeze {}, pin {}, halted {}",
            c.scope,
            c.sequence,
            c.freeze,
            c.pin.map_or("none".into(), |p| p.to_string()),
            c.halted.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sim(
    args: SimArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let public = fleetctl::keys::load_verifying_key(&args.trust)
        .map_err(|e| InvalidInput(e.into()))
        .context("unable to load the trusted public key")?;
    let group = GroupId::new(args.group.clone()).map_err(|e| InvalidInput(e.into()))?;
    let specs = fleetctl::sim::specs(
        &args.prefix,
        args.stations,
        &group,
        args.install_time.into(),
        args.fail_rate,
        args.slow_rate,
        args.flaky_rate,
        args.flaky_every.into(),
        args.seed,
    );
    let opts = fleetctl::sim::FleetOptions {
        addr: args.broker.broker.clone(),
        trusted: [public].into_iter().collect(),
        compatible: args.compatible,
        factory_version: args.version,
        limits: Limits::DEFAULT,
        start_spacing: Duration::from_millis(2),
    };
    let n = specs.len();
    let fleet = fleetctl::sim::SimFleet::start(opts, specs).await;
    eprintln!("sim: {n} stations on {}", args.broker.broker);
    match args.duration {
        Some(d) => {
            tokio::select! {
                () = tokio::time::sleep(d.into()) => {}
                () = stop => {}
            }
        }
        None => stop.await,
    }
    let s = fleet.stop().await;
    println!(
        "sim: {n} stations, {} connections, {} installs",
        s.connects, s.installs
    );
    Ok(ExitCode::SUCCESS)
}
