//! `fleetctl provision` and `fleetctl pki`: arguments and output (the work is in
//! `fleetctl::provision` and `fleetctl::pki`).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleet_core::ids::{DeviceId, GroupId};
use fleetctl::provision::{
    self, Cellular, Fleet, Microphone, ProvisionError, Station, UploaderCredentials, Wifi,
};

use crate::{BrokerArg, InvalidInput};

/// `fleetctl provision`.
#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Validate an existing provisioning folder (or a directory holding fleet-provision/) and
    /// write nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["station", "out"])]
    check: Option<PathBuf>,
    /// The fleet definition (docs/getting-started.md): image, broker, station CA, offer keys,
    /// fleet-wide defaults.
    #[arg(long, required_unless_present = "check")]
    fleet: Option<PathBuf>,
    /// The station's id (a-z, 0-9, '-', '_'; the Common Name of its certificate).
    #[arg(long, required_unless_present = "check", value_parser = parse_device)]
    station: Option<DeviceId>,
    /// A group the station belongs to (repeat).
    #[arg(long = "group", value_parser = parse_group)]
    groups: Vec<GroupId>,
    /// Where the station is: LAT,LON or LAT,LON,ELEVATION_M (degrees, metres).
    #[arg(long, value_parser = parse_position, allow_hyphen_values = true)]
    position: Option<(f64, f64, Option<f64>)>,
    /// The microphone: usb:<vendor>:<product>[:<serial>] (as lsusb shows) or alsa:<name>.
    /// Without one the recorder records nothing and says so.
    #[arg(long)]
    microphone: Option<Microphone>,
    /// The recorder profile of the microphone: audible (48 kHz) or ultrasonic (384 kHz).
    #[arg(long, default_value = "audible")]
    profile: String,
    /// Wi-Fi network name (Ethernet needs nothing; docs/adr/0009-network.md).
    #[arg(long, requires = "wifi_passphrase_file")]
    wifi_ssid: Option<String>,
    /// A file holding the Wi-Fi passphrase (first line), so it is not in your shell history.
    #[arg(long, requires = "wifi_ssid")]
    wifi_passphrase_file: Option<PathBuf>,
    /// The cellular modem's APN (docs/adr/0009-network.md); the modem connects with it at boot.
    #[arg(long)]
    cellular_apn: Option<String>,
    /// The user name the APN needs, if any.
    #[arg(long, requires = "cellular_apn")]
    cellular_user: Option<String>,
    /// A file holding the APN's password (first line).
    #[arg(long, requires = "cellular_user")]
    cellular_password_file: Option<PathBuf>,
    /// A file holding the SIM's PIN (first line), if the SIM is locked.
    #[arg(long, requires = "cellular_apn")]
    cellular_pin_file: Option<PathBuf>,
    /// S3 destination of the fleet (`[defaults.uploaderd.destination]`): this station's
    /// credentials file (access-key-id, secret-access-key; docs/reference/uploaderd.md).
    #[arg(long, value_name = "FILE")]
    uploader_s3_credentials: Option<PathBuf>,
    /// SFTP destination: the station's private key (OpenSSH or PEM, no passphrase).
    #[arg(long, value_name = "FILE")]
    uploader_sftp_key: Option<PathBuf>,
    /// SFTP destination: the server's host key(s), known_hosts format (`ssh-keyscan`).
    #[arg(long, value_name = "FILE")]
    uploader_sftp_known_hosts: Option<PathBuf>,
    /// SFTP destination: the station's login, instead of the fleet definition's user.
    #[arg(long, value_name = "USER")]
    uploader_sftp_user: Option<String>,
    /// Where to write fleet-provision/ (e.g. the mounted boot partition of the card).
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// `fleetctl pki`.
#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Make the fleet CA, the broker's certificate and an operator certificate: ca.crt, ca.key,
    /// server.crt, server.key, operator.crt, operator.key (docs/mosquitto/mosquitto.conf names).
    Init {
        /// Directory to write into (nothing is overwritten).
        #[arg(long)]
        out: PathBuf,
        /// A host name or IP address stations and operators reach the broker by (repeat).
        #[arg(long = "broker-host", required = true)]
        broker_hosts: Vec<String>,
        /// Validity of every certificate, in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn parse_device(s: &str) -> Result<DeviceId, String> {
    DeviceId::new(s).map_err(|e| e.to_string())
}

fn parse_group(s: &str) -> Result<GroupId, String> {
    GroupId::new(s).map_err(|e| e.to_string())
}

fn parse_position(s: &str) -> Result<(f64, f64, Option<f64>), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let num = |p: &str, what: &str| {
        p.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{what} {p:?} is not a number"))
    };
    let (lat, lon, elev) = match parts.as_slice() {
        [lat, lon] => (num(lat, "latitude")?, num(lon, "longitude")?, None),
        [lat, lon, e] => (
            num(lat, "latitude")?,
            num(lon, "longitude")?,
            Some(num(e, "elevation")?),
        ),
        _ => return Err("give LAT,LON or LAT,LON,ELEVATION_M".into()),
    };
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err("latitude must be within -90..90 and longitude within -180..180".into());
    }
    Ok((lat, lon, elev))
}

fn input(e: ProvisionError) -> anyhow::Error {
    match e {
        ProvisionError::Write { .. } | ProvisionError::Read { .. } => e.into(),
        other => InvalidInput(other.into()).into(),
    }
}

pub(crate) fn provision(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let fleet = match &args.fleet {
        Some(f) => Some(Fleet::load(f).map_err(input)?),
        None => None,
    };
    if let Some(dir) = &args.check {
        let report = provision::check(dir, fleet.as_ref()).map_err(input)?;
        for line in &report.lines {
            println!("{line}");
        }
        println!("{}: ready for station {}", dir.display(), report.device);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(fleet) = fleet else {
        return Err(InvalidInput(anyhow::anyhow!("give --fleet")).into());
    };
    let wifi = match (&args.wifi_ssid, &args.wifi_passphrase_file) {
        (Some(ssid), Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|source| {
                input(ProvisionError::Read {
                    path: file.clone(),
                    source,
                })
            })?;
            Some(Wifi {
                ssid: ssid.clone(),
                passphrase: text.lines().next().unwrap_or_default().to_owned(),
            })
        }
        _ => None,
    };
    let first_line = |file: &PathBuf| -> anyhow::Result<String> {
        let text = std::fs::read_to_string(file).map_err(|source| {
            input(ProvisionError::Read {
                path: file.clone(),
                source,
            })
        })?;
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    };
    let cellular = match &args.cellular_apn {
        Some(apn) => Some(Cellular {
            apn: apn.clone(),
            user: args.cellular_user.clone(),
            password: args
                .cellular_password_file
                .as_ref()
                .map(first_line)
                .transpose()?,
            pin: args
                .cellular_pin_file
                .as_ref()
                .map(first_line)
                .transpose()?,
        }),
        None => None,
    };
    let station = Station {
        id: args.station.clone(),
        groups: args.groups.clone(),
        position: args.position,
        microphone: args.microphone.clone(),
        profile: args.profile.clone(),
        wifi,
        cellular,
        uploader: UploaderCredentials {
            s3_credentials: args.uploader_s3_credentials.clone(),
            sftp_key: args.uploader_sftp_key.clone(),
            sftp_known_hosts: args.uploader_sftp_known_hosts.clone(),
            sftp_user: args.uploader_sftp_user.clone(),
        },
    };
    let folder = provision::build(&fleet, &station).map_err(input)?;
    let dest = provision::write(&args.out, &folder).map_err(input)?;
    for rel in folder.keys() {
        println!("  {rel}");
    }
    println!(
        "{}: provisioning folder of {} written; checked by fleet-updated{}{}{}",
        dest.display(),
        station
            .id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        if folder.contains_key("recorderd.toml") {
            ", fleet-recorderd"
        } else {
            ""
        },
        if folder.contains_key("retentiond.toml") {
            ", fleet-retentiond"
        } else {
            ""
        },
        if folder.contains_key(provision::uploader::STATION_FILE) {
            ", fleet-uploaderd"
        } else {
            ""
        },
    );
    if station.microphone.is_none() {
        println!("note: no --microphone: the station's recorder will wait for one");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn pki(command: PkiCommand) -> anyhow::Result<ExitCode> {
    match command {
        PkiCommand::Init {
            out,
            broker_hosts,
            days,
        } => {
            let made = fleetctl::pki::init(&out, &broker_hosts, days)
                .map_err(|e| InvalidInput(e.into()))?;
            for f in &made.files {
                println!("  {}", f.display());
            }
            println!(
                "fleet CA, broker certificate ({}) and operator certificate written to {}",
                broker_hosts.join(", "),
                made.dir.display()
            );
            println!("keep ca.key offline: it issues every station's and operator's identity");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fleetctl config`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Sign and publish (retained) a change of one daemon's settings for a scope (ADR 0011).
    Push(ConfigPushArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigPushArgs {
    #[command(flatten)]
    broker: BrokerArg,
    /// `fleet`, `group:<name>` or `device:<id>`.
    #[arg(long, value_parser = crate::rollout_cmd::parse_scope)]
    to: fleet_core::rollout::Scope,
    /// recorderd, retentiond or uploaderd (stations do not apply pushes to updated yet).
    #[arg(long, value_parser = parse_daemon)]
    daemon: fleet_core::config_push::Daemon,
    /// key=value to set (repeat); only the documented keys (docs/reference/mqtt-protocol.md).
    #[arg(long = "set")]
    set: Vec<String>,
    /// A key to return to its provisioned or image value (repeat).
    #[arg(long = "unset")]
    unset: Vec<String>,
    /// The daemon must be healthy this long after its restart, or the station restores the
    /// previous settings.
    #[arg(long, default_value = "120s")]
    deadline: humantime::Duration,
    /// The private key (PKCS#8 PEM) stations trust for offers.
    #[arg(long, env = "FLEET_SIGNING_KEY")]
    key: PathBuf,
    /// Sequence; default: one above the highest this key signed for the daemon.
    #[arg(long)]
    sequence: Option<u64>,
}

fn parse_daemon(s: &str) -> Result<fleet_core::config_push::Daemon, String> {
    use fleet_core::config_push::Daemon;
    match Daemon::from_name(s) {
        // Stations refuse these (`self-restart-unsupported`): the applier runs inside
        // fleet-updated and cannot yet watch its own restart (ADR 0011 §6). Say so here rather
        // than publish a push no station takes.
        Some(Daemon::Updated) => Err(
            "stations do not apply pushes to fleet-updated yet (ADR 0011 §6: it would restart \
             itself); change its settings by provisioning"
                .to_owned(),
        ),
        Some(d) => Ok(d),
        None => {
            let names: Vec<&str> = Daemon::ALL
                .into_iter()
                .filter(|d| *d != Daemon::Updated)
                .map(Daemon::as_str)
                .collect();
            Err(format!("expected one of {}", names.join(", ")))
        }
    }
}

pub(crate) async fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    use fleetctl::config_push::{self as cp, ConfigPushError};
    let ConfigCommand::Push(args) = command;
    let invalid = |e: ConfigPushError| -> anyhow::Error {
        match e {
            ConfigPushError::Broker(_) => e.into(),
            other => InvalidInput(other.into()).into(),
        }
    };
    let mut set = std::collections::BTreeMap::new();
    for a in &args.set {
        let (k, v) = cp::parse_assignment(a).map_err(invalid)?;
        set.insert(k, v);
    }
    let key = fleetctl::keys::load_signing_key(&args.key).map_err(|e| InvalidInput(e.into()))?;
    // Checked before the broker is asked anything: a refused push is never published.
    let mut push = cp::build(
        args.to.clone(),
        args.daemon,
        set,
        args.unset.clone(),
        args.deadline.into(),
        args.sequence.unwrap_or(1),
    )
    .map_err(invalid)?;
    if args.sequence.is_none() {
        push.sequence = cp::last_sequence(&args.broker.broker, &key, args.daemon)
            .await
            .map_err(invalid)?
            .saturating_add(1);
    }
    let topic = cp::publish(&args.broker.broker, &key, &push)
        .await
        .map_err(invalid)?;
    println!(
        "pushed sequence {} for {} to {topic} (retained)",
        push.sequence,
        args.daemon.as_str()
    );
    Ok(ExitCode::SUCCESS)
}
