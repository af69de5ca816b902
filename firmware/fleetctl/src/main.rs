//! `fleetctl`: the operator's command line. Parses arguments, calls the library, prints.
//!
//! Exit codes: 0 success, 1 failure (broker, I/O, an unexpected outcome), 2 invalid input
//! (arguments, bundle, key), 3 `status --problems` found a station with a problem.
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fleet_core::ids::{DeviceId, UpdateId};
use fleet_core::update::{BundleId, Downgrade, RolloutPercent};
use fleet_proto::Limits;
use fleetctl::connection::BrokerAddr;
use fleetctl::publish::{ClearScope, PushProgress, PushRequest};
use fleetctl::target::Target;
use indicatif::{ProgressBar, ProgressStyle};

mod provision_cmd;
mod rollout_cmd;
mod watch_cmd;

/// Host tool for fleet updates: keys, bundles, offers, station status, and a demo.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS towards the broker (every command that connects): the broker's certificate must chain to
/// `--tls-ca` and name the host of `--broker`; `--tls-cert`/`--tls-key` are the operator's
/// identity.
#[derive(Debug, Args)]
struct TlsArgs {
    /// CA certificate (PEM) of the broker; turns TLS on (with --tls-cert and --tls-key).
    #[arg(long = "tls-ca", global = true, env = "FLEETCTL_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// The operator's client certificate (PEM).
    #[arg(
        long = "tls-cert",
        global = true,
        env = "FLEETCTL_TLS_CERT",
        requires = "tls_ca"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long = "tls-key",
        global = true,
        env = "FLEETCTL_TLS_KEY",
        requires = "tls_ca"
    )]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn transport(&self) -> fleetctl::connection::Transport {
        use fleetctl::connection::{ClientAuth, ServerVerify, TlsConfig, Transport};
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Transport::Tls(TlsConfig {
                ca: ca.clone(),
                client_auth: Some(ClientAuth {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                server_verify: ServerVerify::Enforce,
            }),
            // clap's `requires` rules out the partial combinations.
            _ => Transport::Plain,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct BrokerArg {
    /// The MQTT broker: mqtt://host:port, host:port or host.
    #[arg(long, env = "FLEET_BROKER", default_value = "mqtt://127.0.0.1:1883")]
    pub(crate) broker: BrokerAddr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the ed25519 key pair that signs offers and bundle manifests.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Publish a bundle (retained chunks and a signed manifest), then a signed offer.
    Push(PushArgs),
    /// Remove retained bundle topics from the broker.
    Clear(ClearArgs),
    /// Show every station from its retained state.
    Status {
        #[command(flatten)]
        broker: BrokerArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Mark a station STALE when its state is older than this (e.g. 10m, 1h).
        #[arg(long, default_value = "10m")]
        stale_after: humantime::Duration,
        /// Show only stations with a problem, and exit 3 while any has one (for cron and
        /// monitoring).
        #[arg(long)]
        problems: bool,
    },
    /// Serve the fleet's health as Prometheus metrics on http://ADDR/metrics (read from the
    /// broker's retained messages at every scrape).
    Exporter {
        #[command(flatten)]
        broker: BrokerArg,
        /// Where to listen, e.g. 127.0.0.1:9464.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Mark a station down when its state is older than this.
        #[arg(long, default_value = "10m")]
        stale_after: humantime::Duration,
    },
    /// Ask one station for its journal: a signed request, answered by its fleet-reporterd.
    Logs {
        #[command(flatten)]
        broker: BrokerArg,
        /// The station.
        #[arg(value_parser = parse_device_id)]
        station: DeviceId,
        /// Only this systemd unit (e.g. fleet-updated.service).
        #[arg(long)]
        unit: Option<String>,
        /// The newest this many lines (1..=2000).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
        lines: u32,
        /// Only lines from this long ago on (e.g. 2h, 30m).
        #[arg(long)]
        since: Option<humantime::Duration>,
        /// The private key (PKCS#8 PEM) of an offer-signing key the station trusts.
        #[arg(long, env = "FLEET_SIGNING_KEY")]
        key: PathBuf,
        /// How long to wait for the answer (and how long the request stays valid).
        #[arg(long, default_value = "60s")]
        wait: humantime::Duration,
        /// Print the lines as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one station's whole health message (recorder, microphone, disk, system, clock).
    Health {
        #[command(flatten)]
        broker: BrokerArg,
        /// The station.
        #[arg(value_parser = parse_device_id)]
        station: DeviceId,
        /// Print the message as JSON, with its problems.
        #[arg(long)]
        json: bool,
    },
    /// Follow an update live on every station until each one ended (or Ctrl-C).
    Watch {
        #[command(flatten)]
        broker: BrokerArg,
        /// The update to follow; default: the one in the newest retained offer.
        #[arg(long, value_parser = parse_update_id)]
        update: Option<UpdateId>,
        /// Only these stations (repeat); default: every station that takes part.
        #[arg(long = "device", value_parser = parse_device_id)]
        devices: Vec<DeviceId>,
        /// Give up after this long (default 1h; 24h with --rollout).
        #[arg(long)]
        timeout: Option<humantime::Duration>,
        /// Without --device: how long no new station may join before the watch ends.
        #[arg(long, default_value = "5s")]
        settle: humantime::Duration,
        #[command(flatten)]
        rollout: watch_cmd::RolloutArgs,
    },
    /// Run the update path end to end on this machine: embedded broker, simulated stations,
    /// a signed bundle, one station that fails its health checks and falls back.
    Demo {
        /// Simulated stations (2..=16); the last one fails its health checks.
        #[arg(long, default_value_t = 4)]
        stations: usize,
    },
    /// Staged rollouts: start, advance, halt, resume, status, run.
    Rollout {
        #[command(subcommand)]
        command: rollout_cmd::RolloutCommand,
    },
    /// Emergency freeze: no station in the scope starts a new install (signed, retained).
    Freeze(rollout_cmd::ControlArgs),
    /// Lift a freeze.
    Unfreeze(rollout_cmd::ControlArgs),
    /// Pin the stations of a scope at a version (they take nothing above it).
    Pin {
        #[command(flatten)]
        control: rollout_cmd::ControlArgs,
        /// The highest version they may take; leave out with --clear.
        #[arg(long, required_unless_present = "clear")]
        version: Option<semver::Version>,
        /// Lift the pin.
        #[arg(long)]
        clear: bool,
    },
    /// Run many simulated stations in this process against a broker.
    Sim(rollout_cmd::SimArgs),
    /// Write (or --check) a station's provisioning folder: identity, certificate, settings.
    Provision(Box<provision_cmd::ProvisionArgs>),
    /// The fleet's certificates: CA, broker and operator (docs/security.md).
    Pki {
        #[command(subcommand)]
        command: provision_cmd::PkiCommand,
    },
    /// Signed configuration changes for the stations' daemons (ADR 0011).
    Config {
        #[command(subcommand)]
        command: provision_cmd::ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a key pair: <name>.key.pem (PKCS#8, mode 0600) and <name>.pub (hex).
    Gen {
        /// Directory to write the two files into.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Base name of the files.
        #[arg(long, default_value = "fleet-offer")]
        name: String,
    },
}

#[derive(Debug, Args)]
struct PushArgs {
    #[command(flatten)]
    broker: BrokerArg,
    /// The bundle file.
    bundle: PathBuf,
    /// Whom to offer it to: device:<id> or group:<name>.
    #[arg(long)]
    to: Target,
    /// Share of the targeted stations that take it (1..=100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    percent: u8,
    /// The version in the bundle (semantic version, e.g. 1.2.0).
    #[arg(long)]
    version: semver::Version,
    /// The compatible string the stations must match (e.g. fleet-rpi5).
    #[arg(long)]
    compatible: String,
    /// The private key (PKCS#8 PEM) that signs the manifest and the offer.
    #[arg(long, env = "FLEET_SIGNING_KEY")]
    key: PathBuf,
    /// Offer sequence; default: one above the highest on the broker.
    #[arg(long)]
    sequence: Option<u64>,
    /// Stations with trusted time refuse the offer after this long (e.g. 7d).
    #[arg(long)]
    expires_in: Option<humantime::Duration>,
    /// Allow installing a version not above the installed one.
    #[arg(long)]
    allow_downgrade: bool,
    /// Update id; default: derived from the version and the bundle id.
    #[arg(long, value_parser = parse_update_id)]
    update_id: Option<UpdateId>,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = fleet_proto::DEFAULT_CHUNK_SIZE)]
    chunk_size: u32,
    #[command(flatten)]
    deltas: DeltaArgs,
}

/// Deltas published next to the bundle (ADR 0012).
#[derive(Debug, Args)]
struct DeltaArgs {
    /// Also publish a delta from this bundle file (repeat for more bases).
    #[arg(long = "delta-from", value_name = "BUNDLE")]
    delta_from: Vec<PathBuf>,
    /// Also publish a delta from every base the stations keep (the `kept-base` of their
    /// retained states) whose bundle file is in this directory.
    #[arg(long, value_name = "DIR")]
    delta_dir: Option<PathBuf>,
    /// Do not publish the zstd-compressed bundle next to the raw one (compressing runs at
    /// about 1 MiB/s at level 19 on one core; stations then fetch the raw bundle).
    #[arg(long)]
    no_compress: bool,
}

impl DeltaArgs {
    fn apply(self, req: &mut PushRequest) {
        req.delta_from = self.delta_from;
        req.delta_dir = self.delta_dir;
        req.compress = !self.no_compress;
    }
}

/// What a push says about its deltas.
fn print_deltas(report: &fleetctl::publish::PushReport) {
    if let Some(c) = &report.compressed {
        println!(
            "compressed: {} bytes, {:.1}% of the bundle, on {}",
            c.file_size,
            c.file_size as f64 * 100.0 / c.bundle_size.max(1) as f64,
            c.topic
        );
    }
    for d in &report.deltas {
        println!(
            "delta:    from {} ({} bytes, {:.1}% of the bundle) on {}",
            d.base_id,
            d.patch_size,
            d.patch_size as f64 * 100.0 / d.bundle_size.max(1) as f64,
            d.topic
        );
    }
    for b in &report.bases_without_file {
        println!(
            "no delta: stations keep base {b}, which is not in --delta-dir: they fetch the full bundle"
        );
    }
}

#[derive(Debug, Args)]
struct ClearArgs {
    #[command(flatten)]
    broker: BrokerArg,
    /// Clear this bundle (its id, 64 hex digits); default: every bundle no offer names.
    #[arg(long)]
    bundle: Option<BundleId>,
    /// Clear the bundle even while an offer names it.
    #[arg(long, requires = "bundle")]
    force: bool,
    /// First retract the retained offer to this target (device:<id> or group:<name>;
    /// repeat for more): its bundle is then no longer offered.
    #[arg(long = "offer")]
    offers: Vec<Target>,
    /// Only say what would be cleared.
    #[arg(long)]
    dry_run: bool,
}

fn parse_update_id(s: &str) -> Result<UpdateId, String> {
    UpdateId::new(s).map_err(|e| e.to_string())
}

fn parse_device_id(s: &str) -> Result<DeviceId, String> {
    DeviceId::new(s).map_err(|e| e.to_string())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM; never if the handlers cannot be installed. The
/// handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives early still lets the command clean up.
fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
}

/// An error the user can fix by changing the input: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct InvalidInput(pub(crate) anyhow::Error);

/// A command's error that tells whether the operator's input was at fault.
pub(crate) trait InputFault: Into<anyhow::Error> {
    fn input_at_fault(&self) -> bool;
}

impl InputFault for fleetctl::publish::PublishError {
    fn input_at_fault(&self) -> bool {
        self.is_invalid_input()
    }
}

impl InputFault for fleetctl::rollout::RolloutError {
    fn input_at_fault(&self) -> bool {
        self.is_invalid_input()
    }
}

impl InputFault for fleetctl::rollout_watch::RolloutWatchError {
    fn input_at_fault(&self) -> bool {
        self.is_invalid_input()
    }
}

/// `e` as an [`InvalidInput`] (exit code 2) when the input was at fault, else as a failure.
pub(crate) fn classify(e: impl InputFault) -> anyhow::Error {
    if e.input_at_fault() {
        InvalidInput(e.into()).into()
    } else {
        e.into()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo runs station daemons in this process: their warnings (a health check failing
    // on purpose) are part of the story the demo prints itself.
    let default_filter = match cli.command {
        Command::Demo { .. } => "error,rumqttd=off",
        _ => "warn,rumqttd=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEETCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
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
    fleetctl::connection::set_default_transport(cli.tls.transport());
    match cli.command {
        Command::Keys {
            command: KeysCommand::Gen { out_dir, name },
        } => {
            let private = out_dir.join(format!("{name}.key.pem"));
            let public = out_dir.join(format!("{name}.pub"));
            let made = fleetctl::keys::generate(&private, &public)
                .map_err(|e| InvalidInput(e.into()))
                .context("unable to generate a key pair")?;
            println!("private key: {} (mode 0600)", made.private_path.display());
            println!("public key:  {}", made.public_path.display());
            println!("key id:      {}", made.key_id);
        }
        Command::Push(args) => push(args).await?,
        Command::Watch {
            broker,
            update,
            devices,
            timeout,
            settle,
            rollout,
        } => {
            let timeout = timeout.map(Into::into);
            if rollout.rollout.is_some() {
                return watch_cmd::watch(&broker.broker, rollout, timeout, interrupted()).await;
            }
            let timeout = timeout.unwrap_or(std::time::Duration::from_secs(3600));
            return watch(&broker.broker, update, devices, timeout, settle.into()).await;
        }
        Command::Demo { stations } => return demo(stations).await,
        Command::Rollout { command } => return rollout_cmd::rollout(command).await,
        Command::Provision(args) => return provision_cmd::provision(*args),
        Command::Pki { command } => return provision_cmd::pki(command),
        Command::Config { command } => return provision_cmd::config(command).await,
        Command::Freeze(c) => {
            return rollout_cmd::control(c, rollout_cmd::ControlChange::Freeze(true)).await;
        }
        Command::Unfreeze(c) => {
            return rollout_cmd::control(c, rollout_cmd::ControlChange::Freeze(false)).await;
        }
        Command::Pin {
            control,
            version,
            clear,
        } => {
            let pin = if clear { None } else { version };
            return rollout_cmd::control(control, rollout_cmd::ControlChange::Pin(pin)).await;
        }
        Command::Sim(args) => return rollout_cmd::sim(args, interrupted()).await,
        Command::Clear(args) => clear(args).await?,
        Command::Exporter {
            broker,
            listen,
            stale_after,
        } => {
            let listener = fleetctl::exporter::bind(listen)
                .await
                .with_context(|| format!("unable to listen on {listen}"))?;
            eprintln!(
                "serving fleet metrics on http://{listen}/metrics from {}",
                broker.broker
            );
            tokio::select! {
                r = fleetctl::exporter::serve(listener, broker.broker.clone(), stale_after.into()) => {
                    r.context("the metrics listener failed")?;
                }
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Command::Logs {
            broker,
            station,
            unit,
            lines,
            since,
            key,
            wait,
            json,
        } => {
            if let Some(u) = &unit
                && !fleet_proto::logs::is_unit_name(u)
            {
                return Err(InvalidInput(anyhow::anyhow!(
                    "--unit {u:?} is not a systemd unit name"
                ))
                .into());
            }
            let key = fleetctl::keys::load_signing_key(&key)
                .map_err(|e| InvalidInput(e.into()))
                .context("unable to load the signing key")?;
            let since_unix_s = since.map(|d| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |n| n.as_secs());
                now.saturating_sub(std::time::Duration::from(d).as_secs()) as i64
            });
            let ask = fleetctl::logs::Ask {
                station,
                unit,
                lines,
                since_unix_s,
                wait: wait.into(),
            };
            let entries = fleetctl::logs::fetch(&broker.broker, &key, &ask).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in &entries {
                    println!("{}", fleetctl::logs::render(e));
                }
            }
        }
        Command::Health {
            broker,
            station,
            json,
        } => {
            let found = fleetctl::health::read_one(&broker.broker, &station)
                .await
                .context("unable to read the station's health")?;
            let h = match found {
                None => anyhow::bail!(
                    "station {station} has published no health message on {} (is fleet-reporterd running?)",
                    broker.broker
                ),
                Some(Err(e)) => {
                    anyhow::bail!("station {station}'s health message is unreadable: {e}")
                }
                Some(Ok(h)) => h,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let silent =
                h.at.wall_unix_s
                    .map(|t| now.saturating_sub(t).max(0) as u64);
            let problems = fleet_core::health::decide_problems(
                &h.signals(silent.or(Some(0))),
                &fleet_core::health::ProblemPolicy::default(),
            );
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "health": h, "problems": problems
                    }))?
                );
            } else {
                print!("{}", fleetctl::health::render(&h, &problems));
            }
        }
        Command::Status {
            broker,
            json,
            stale_after,
            problems,
        } => {
            let mut rows =
                fleetctl::status::read(&broker.broker, stale_after.into(), &Limits::DEFAULT)
                    .await
                    .context("unable to read station states")?;
            if problems {
                rows.retain(|r| !r.problems.is_empty());
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else if rows.is_empty() {
                    println!("no station has a problem");
                } else {
                    println!("{}", fleetctl::status::render_table(&rows));
                }
                return Ok(if rows.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                });
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no station has published a state on {}", broker.broker);
            } else {
                println!("{}", fleetctl::status::render_table(&rows));
            }
            if !json {
                // Open rollouts under the table (unverified: status needs no key; the JSON of
                // rollouts is `fleetctl rollout status --json`).
                let recs = fleetctl::rollout::list(&broker.broker, None, &Limits::DEFAULT)
                    .await
                    .context("unable to read the rollouts")?;
                for r in recs
                    .iter()
                    .filter(|r| r.progress.status != fleet_core::rollout::Status::Completed)
                {
                    print!(
                        "{}",
                        fleetctl::rollout::render(&fleetctl::rollout::view_of(r, &rows, false))
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn push(args: PushArgs) -> anyhow::Result<()> {
    let key = fleetctl::keys::load_signing_key(&args.key)
        .map_err(|e| InvalidInput(e.into()))
        .context("unable to load the signing key")?;
    let mut req = PushRequest::new(args.bundle, args.to, args.version, args.compatible);
    req.percent = RolloutPercent::new(args.percent).map_err(|e| InvalidInput(e.into()))?;
    req.sequence = args.sequence;
    req.expires_in = args.expires_in.map(Into::into);
    req.downgrade = if args.allow_downgrade {
        Downgrade::Allow
    } else {
        Downgrade::Refuse
    };
    req.update_id = args.update_id;
    req.chunk_size = args.chunk_size;
    args.deltas.apply(&mut req);

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("chunks");
    let mut on_progress = |p: PushProgress| match p {
        PushProgress::Described {
            bundle_id,
            size,
            chunks,
        } => {
            bar.set_length(size);
            bar.println(format!(
                "bundle {bundle_id}: {size} bytes in {chunks} chunks"
            ));
        }
        PushProgress::Chunks { acked_bytes, .. } => bar.set_position(acked_bytes),
        PushProgress::Compressing { read_bytes, .. } => {
            bar.set_message("compress");
            bar.set_position(read_bytes);
        }
        PushProgress::Compressed {
            file_size,
            bundle_size,
        } => bar.println(format!(
            "compressed bundle published: {file_size} of {bundle_size} bytes"
        )),
        PushProgress::Delta { base_id, .. } => {
            bar.println(format!("delta from {base_id} published"))
        }
        PushProgress::Offer { .. } => {}
    };
    let result = fleetctl::publish::push(&args.broker.broker, &key, &req, &mut on_progress).await;
    bar.finish_and_clear();
    let report = result.map_err(classify)?;
    println!("manifest: {}", report.manifest_topic);
    println!(
        "chunks:   {} ({} bytes) under fleet/v1/bundles/{}/chunks/",
        report.chunks, report.size, report.bundle_id
    );
    print_deltas(&report);
    if report.offer_kept {
        println!(
            "offer:    {} unchanged (update {}, sequence {}): this bundle is already offered",
            report.offer_topic, report.update_id, report.sequence
        );
    } else {
        println!(
            "offer:    {} (update {}, sequence {}, {}%)",
            report.offer_topic, report.update_id, report.sequence, args.percent
        );
    }
    Ok(())
}

async fn clear(args: ClearArgs) -> anyhow::Result<()> {
    let scope = match args.bundle {
        Some(id) => ClearScope::Bundle(id),
        None => ClearScope::Unreferenced,
    };
    let mut req = fleetctl::publish::ClearRequest::new(scope);
    req.retract = args.offers;
    req.force = args.force;
    req.dry_run = args.dry_run;
    let report = fleetctl::publish::clear(&args.broker.broker, &req)
        .await
        .map_err(classify)?;
    let verb = if args.dry_run {
        "would clear"
    } else {
        "cleared"
    };
    for topic in &report.retracted {
        let verb = if args.dry_run {
            "would retract"
        } else {
            "retracted"
        };
        println!("{verb} offer {topic}");
    }
    for (id, topics) in &report.cleared {
        println!("{verb} bundle {id} ({topics} topics)");
    }
    for id in &report.kept {
        println!("kept bundle {id}: an offer names it");
    }
    if report.cleared.is_empty() && report.retracted.is_empty() {
        println!("nothing to clear");
    }
    Ok(())
}

async fn watch(
    broker: &BrokerAddr,
    update: Option<UpdateId>,
    devices: Vec<DeviceId>,
    timeout: std::time::Duration,
    settle: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let update_id = match update {
        Some(u) => u,
        None => {
            let book = fleetctl::publish::OfferBook::read(broker, &Limits::DEFAULT)
                .await
                .context("unable to read the retained offers")?;
            let newest = book
                .offers
                .values()
                .max_by_key(|o| o.sequence)
                .ok_or_else(|| {
                    InvalidInput(anyhow::anyhow!(
                        "no retained offer on {broker}: name the update with --update"
                    ))
                })?;
            newest.update_id.clone()
        }
    };
    println!("watching update {update_id} on {broker} (Ctrl-C to stop)");
    let opts = fleetctl::watch::WatchOptions {
        update_id,
        devices: (!devices.is_empty()).then(|| devices.into_iter().collect()),
        settle,
        timeout,
        limits: Limits::DEFAULT,
    };
    let mut ui = fleetctl::watch::Ui::auto();
    let summary = fleetctl::watch::watch(broker, &opts, &mut ui, interrupted())
        .await
        .context("unable to watch the stations")?;
    let rolled = summary.rolled_back();
    let failed = summary.failed();
    println!(
        "watch: {} updated, {} outside the wave, {} rolled back, {} failed or refused, {} unfinished{}",
        summary.updated().len(),
        summary.outside_wave().len(),
        rolled.len(),
        failed.len(),
        summary.unfinished.len(),
        if summary.timed_out {
            " (timed out)"
        } else if summary.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    for (d, why) in &rolled {
        println!("  {d}: rolled back: {why}");
    }
    for (d, why) in &failed {
        println!("  {d}: {why}");
    }
    Ok(
        if summary.timed_out
            || !summary.unfinished.is_empty()
            || !failed.is_empty()
            || !rolled.is_empty()
        {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

async fn demo(stations: usize) -> anyhow::Result<ExitCode> {
    let opts = fleetctl::demo::DemoOptions {
        stations,
        ..Default::default()
    };
    let mut ui = fleetctl::watch::Ui::auto();
    let outcome = fleetctl::demo::run(&opts, &mut ui, interrupted())
        .await
        .map_err(|e| match e {
            fleetctl::demo::DemoError::StationCount(_) => InvalidInput(e.into()).into(),
            other => anyhow::Error::from(other),
        })
        .context("demo failed")?;
    for (id, end) in &outcome.watch.ends {
        println!("  {id}: {}", fleetctl::demo::describe_end(end));
    }
    println!(
        "{} in {:.1} s",
        outcome.summary_line(),
        outcome.elapsed.as_secs_f64()
    );
    if outcome.is_expected(opts.stations) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the demo did not end as expected (all healthy stations updated, {} rolled back)",
            outcome.sick
        );
        Ok(ExitCode::FAILURE)
    }
}
