//! `fleetctl provision`: from the fleet definition and one station's facts, the provisioning
//! folder the image's first-boot service (`fleet-provision`) takes into `/data/fleet/identity/`
//! (ADR 0008).
//!
//! The folder holds the station's id, each daemon's station settings (laid over the image
//! defaults in `/etc/fleet/`), a client key and certificate issued by the fleet CA (Common Name =
//! the device id) with the broker's CA, the uploader's credentials (`uploader`), and Wi-Fi and
//! cellular settings (`cellular`). Every daemon's own checker validates
//! its merged settings (image defaults + station settings) before anything is written; the folder
//! is then written beside its final place and renamed into it, so it is complete or absent.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleet_config::{Layers, Merged};
use fleet_core::ids::{DeviceId, GroupId};
use serde::Deserialize;
use toml::{Table, Value};

use crate::pki::{FleetCa, OPERATOR_CN};

pub mod cellular;
pub mod uploader;

pub use cellular::Cellular;
pub use uploader::UploaderCredentials;

/// The image defaults as meta-fleet ships them (`/etc/fleet/<daemon>.toml`, before the recipe
/// fills in the placeholders).
const IMAGE_UPDATED: &str =
    include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/updated.toml");
const IMAGE_RECORDERD: &str =
    include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/recorderd.toml");
const IMAGE_RETENTIOND: &str =
    include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/retentiond.toml");
const IMAGE_UPLOADERD: &str =
    include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/uploaderd.toml");

/// The daemons with station settings read through fleet-config, by file name in the folder.
/// fleet-uploaderd's (`uploaderd.toml`) are the `uploader` module's.
pub const DAEMONS: [&str; 3] = ["updated", "recorderd", "retentiond"];

/// The `[defaults.<daemon>]` tables a fleet definition may hold.
const DEFAULTS: [&str; 4] = ["updated", "recorderd", "retentiond", "uploaderd"];

/// Where the folder's files land on the station (fleet-provision), under `data-dir`.
const IDENTITY: &str = "fleet/identity";

/// Why provisioning failed. Nothing is written when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("unable to read the fleet definition {path}: {reason}")]
    Definition { path: PathBuf, reason: String },
    #[error("unable to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to provision: {0}")]
    Invalid(String),
    #[error("unable to provision: {daemon} refuses its settings:\n{message}")]
    Refused { daemon: String, message: String },
    #[error("unable to write the provisioning folder {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

fn invalid(msg: impl Into<String>) -> ProvisionError {
    ProvisionError::Invalid(msg.into())
}

/// The fleet definition file (`fleet.toml`): what every station of a fleet shares. Relative
/// paths are relative to the file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDefinition {
    image: RawImage,
    broker: RawBroker,
    station_ca: RawStationCa,
    /// Offer-signing public keys stations trust: files with 64 hex digits (`fleetctl keys gen`)
    /// or a PEM public key (`keys/gen-dev-pki.sh`'s `offer.pub.pem`).
    trusted_key_files: Vec<PathBuf>,
    #[serde(default)]
    defaults: BTreeMap<String, Table>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawImage {
    /// The image's RAUC compatible (`FLEET_COMPATIBLE`, e.g. `fleet-raspberrypi5`).
    compatible: String,
    /// `FLEET_BOOT_FLOW`: tryboot (Pi 5) or uboot.
    boot_flow: String,
    /// `FLEET_DATA_DIR`.
    #[serde(default = "default_data_dir")]
    data_dir: String,
    /// A directory with the image's `/etc/fleet/` files, instead of the defaults this fleetctl
    /// was built with.
    defaults_dir: Option<PathBuf>,
}

fn default_data_dir() -> String {
    "/data".into()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawBroker {
    host: String,
    port: Option<u16>,
    /// The CA the broker's certificate chains to (given to stations as `mqtt/ca.crt`).
    ca_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawStationCa {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "default_days")]
    valid_days: u32,
}

fn default_days() -> u32 {
    825
}

/// A loaded fleet definition.
#[derive(Debug)]
pub struct Fleet {
    raw: RawDefinition,
    base: PathBuf,
    trusted_hex: Vec<String>,
}

/// One station's facts.
#[derive(Debug, Clone, Default)]
pub struct Station {
    pub id: Option<DeviceId>,
    pub groups: Vec<GroupId>,
    /// Latitude, longitude (degrees) and elevation (m) for the recordings' metadata and solar
    /// schedules.
    pub position: Option<(f64, f64, Option<f64>)>,
    pub microphone: Option<Microphone>,
    /// The recorder profile of the microphone (`audible` or `ultrasonic` in the image).
    pub profile: String,
    pub wifi: Option<Wifi>,
    /// The cellular modem's bearer settings.
    pub cellular: Option<Cellular>,
    /// The uploader's credentials for the fleet's destination (`[defaults.uploaderd]`).
    pub uploader: UploaderCredentials,
}

/// Where the microphone is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Microphone {
    /// A USB device by vendor and product id (four hex digits each), optionally its serial.
    Usb {
        vendor: String,
        product: String,
        serial: Option<String>,
    },
    /// An ALSA device name (`hw:CARD=...,DEV=0`).
    Alsa(String),
}

impl std::str::FromStr for Microphone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("usb:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let hex4 = |p: &str| p.len() == 4 && p.bytes().all(|b| b.is_ascii_hexdigit());
            return match parts.as_slice() {
                [v, p] if hex4(v) && hex4(p) => Ok(Self::Usb {
                    vendor: v.to_ascii_lowercase(),
                    product: p.to_ascii_lowercase(),
                    serial: None,
                }),
                [v, p, serial] if hex4(v) && hex4(p) && !serial.is_empty() => Ok(Self::Usb {
                    vendor: v.to_ascii_lowercase(),
                    product: p.to_ascii_lowercase(),
                    serial: Some((*serial).to_owned()),
                }),
                _ => Err(format!(
                    "{s:?}: give usb:<vendor>:<product>[:<serial>] with four hex digits each (lsusb shows them)"
                )),
            };
        }
        if let Some(name) = s.strip_prefix("alsa:")
            && !name.is_empty()
        {
            return Ok(Self::Alsa(name.to_owned()));
        }
        Err(format!(
            "{s:?}: give usb:<vendor>:<product>[:<serial>] or alsa:<device name>"
        ))
    }
}

/// Wi-Fi (WPA2/WPA3-personal).
#[derive(Debug, Clone)]
pub struct Wifi {
    pub ssid: String,
    pub passphrase: String,
}

impl Wifi {
    fn validate(&self) -> Result<(), ProvisionError> {
        let plain = |s: &str| s.chars().all(|c| (' '..='~').contains(&c) && c != '"');
        if self.ssid.is_empty() || self.ssid.len() > 32 || !plain(&self.ssid) {
            return Err(invalid(
                "the Wi-Fi name must be 1 to 32 printable ASCII characters without '\"'",
            ));
        }
        if !(8..=63).contains(&self.passphrase.len()) || !plain(&self.passphrase) {
            return Err(invalid(
                "the Wi-Fi passphrase must be 8 to 63 printable ASCII characters without '\"'",
            ));
        }
        Ok(())
    }

    /// wpa_supplicant's configuration of `wlan0` (fleet-wifi.service runs it).
    fn wpa_supplicant_conf(&self) -> String {
        format!(
            "# Written by fleetctl provision: the station's Wi-Fi (docs/adr/0009-network.md).\n\
             ctrl_interface=/run/wpa_supplicant\nupdate_config=0\n\nnetwork={{\n    ssid=\"{}\"\n    \
             psk=\"{}\"\n    key_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n    ieee80211w=1\n}}\n",
            self.ssid, self.passphrase
        )
    }
}

fn read(path: &Path) -> Result<String, ProvisionError> {
    std::fs::read_to_string(path).map_err(|source| ProvisionError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A trusted offer key file: 64 hex digits, or a PEM public key. Returns the hex form stations
/// read (`trusted-keys`).
pub fn trusted_key_hex(path: &Path) -> Result<String, ProvisionError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let text = read(path)?;
    if text.contains("PRIVATE KEY") {
        return Err(invalid(format!(
            "{} is a private key: give the public key (never copy a signing key to a station)",
            path.display()
        )));
    }
    let key = if text.contains("-----BEGIN PUBLIC KEY-----") {
        ed25519_dalek::VerifyingKey::from_public_key_pem(&text).map_err(|e| {
            invalid(format!(
                "{} is not an ed25519 public key: {e}",
                path.display()
            ))
        })?
    } else {
        fleet_proto::envelope::TrustedKeys::parse_public_hex(&text).map_err(|e| {
            invalid(format!(
                "{} is neither 64 hex digits nor a PEM public key: {e}",
                path.display()
            ))
        })?
    };
    Ok(hex::encode(key.as_bytes()))
}

impl Fleet {
    /// Reads the fleet definition at `path`.
    pub fn load(path: &Path) -> Result<Self, ProvisionError> {
        let text = read(path)?;
        let raw: RawDefinition = toml::from_str(&text).map_err(|e| ProvisionError::Definition {
            path: path.to_owned(),
            reason: e.message().to_owned(),
        })?;
        let base = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut problems = Vec::new();
        for key in raw.defaults.keys() {
            if !DEFAULTS.contains(&key.as_str()) {
                problems.push(format!(
                    "defaults.{key}: no such daemon (updated, recorderd, retentiond, uploaderd)"
                ));
            }
        }
        if !matches!(raw.image.boot_flow.as_str(), "tryboot" | "uboot") {
            problems.push("image.boot-flow: must be \"tryboot\" or \"uboot\"".into());
        }
        if raw.trusted_key_files.is_empty() {
            problems.push("trusted-key-files: stations need at least one offer key".into());
        }
        if !problems.is_empty() {
            return Err(ProvisionError::Definition {
                path: path.to_owned(),
                reason: problems.join("; "),
            });
        }
        let mut trusted_hex = Vec::new();
        for f in &raw.trusted_key_files {
            trusted_hex.push(trusted_key_hex(&base.join(f))?);
        }
        Ok(Self {
            raw,
            base,
            trusted_hex,
        })
    }

    fn path(&self, p: &Path) -> PathBuf {
        self.base.join(p)
    }

    fn data_dir(&self) -> &str {
        &self.raw.image.data_dir
    }

    /// The image's `/etc/fleet/<daemon>.toml` text.
    fn image_defaults(&self, daemon: &str) -> Result<String, ProvisionError> {
        image_defaults(
            daemon,
            self.raw
                .image
                .defaults_dir
                .as_ref()
                .map(|d| self.path(d))
                .as_deref(),
            &self.raw.image.compatible,
            &self.raw.image.boot_flow,
            self.data_dir(),
        )
    }
}

/// The image defaults of `daemon`: from `dir` (a copy of an image's `/etc/fleet/`), or the
/// meta-fleet files this fleetctl was built with, placeholders filled in as the recipe does.
fn image_defaults(
    daemon: &str,
    dir: Option<&Path>,
    compatible: &str,
    boot_flow: &str,
    data_dir: &str,
) -> Result<String, ProvisionError> {
    if let Some(dir) = dir {
        return read(&dir.join(format!("{daemon}.toml")));
    }
    let template = match daemon {
        "updated" => IMAGE_UPDATED,
        "recorderd" => IMAGE_RECORDERD,
        "uploaderd" => IMAGE_UPLOADERD,
        _ => IMAGE_RETENTIOND,
    };
    Ok(template
        .replace("@DATADIR@", data_dir)
        .replace("@COMPATIBLE@", compatible)
        .replace("@BOOT_FLOW@", boot_flow)
        .replace("@LIBEXECDIR@", "/usr/libexec"))
}

/// Checks `station` (one daemon's station settings) over its image defaults with the daemon's own
/// parser. `require_complete`: an incomplete result is an error too.
pub fn check_daemon(
    daemon: &str,
    image: &str,
    station: &str,
    require_complete: bool,
) -> Result<(), ProvisionError> {
    let refused = |message: String| ProvisionError::Refused {
        daemon: format!("fleet-{daemon}"),
        message,
    };
    let dir = tempfile::tempdir().map_err(|source| ProvisionError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let image_path = dir.path().join(format!("image-{daemon}.toml"));
    let station_path = dir.path().join(format!("{daemon}.toml"));
    for (p, text) in [(&image_path, image), (&station_path, station)] {
        std::fs::write(p, text).map_err(|source| ProvisionError::Write {
            path: p.clone(),
            source,
        })?;
    }
    let layers = Layers {
        image: image_path,
        station: Some(station_path),
    };
    let limits = fleet_config::Limits::default();
    // The same needs and parsers as the daemons' own --check-config.
    let out = match daemon {
        "updated" => fleet_config::load_once(
            &layers,
            fleet_updated::config::STATION_NEEDS,
            &limits,
            |m: &Merged| fleet_updated::Config::parse(&m.origin, &m.text).map(drop),
        ),
        "recorderd" => fleet_config::load_once(
            &layers,
            fleet_recorderd::config::STATION_NEEDS,
            &limits,
            |m: &Merged| {
                fleet_recorderd::config::Config::parse(
                    &m.text,
                    &m.origin,
                    &fleet_recorderd::config::Limits::default(),
                )
                .map(drop)
            },
        ),
        _ => fleet_config::load_once(&layers, &[], &limits, |m: &Merged| {
            fleet_retentiond::config::parse_at(&m.text, &m.origin).map(drop)
        }),
    };
    match out {
        fleet_config::Outcome::Ready(()) => Ok(()),
        fleet_config::Outcome::Invalid(m) => Err(refused(m)),
        fleet_config::Outcome::Incomplete(gaps) if require_complete => {
            Err(refused(format!("incomplete: {}", gaps.join("; "))))
        }
        fleet_config::Outcome::Incomplete(_) => Ok(()),
    }
}

fn header(daemon: &str, id: &DeviceId) -> String {
    format!(
        "# fleet-{daemon}'s station settings of {id}, written by fleetctl provision: laid over\n\
         # the image defaults in /etc/fleet/{daemon}.toml (docs/adr/0008-provisioning-and-layered-configuration.md).\n"
    )
}

/// The folder's files, relative path → (contents, mode).
pub type Folder = BTreeMap<String, (Vec<u8>, u32)>;

/// Builds and checks a station's folder in memory.
pub fn build(fleet: &Fleet, station: &Station) -> Result<Folder, ProvisionError> {
    let id = station
        .id
        .clone()
        .ok_or_else(|| invalid("give the station id (--station)"))?;
    if id.as_str() == OPERATOR_CN {
        return Err(invalid(
            "a station may not be called \"operator\": that is the operators' identity on the broker",
        ));
    }
    if let Some(w) = &station.wifi {
        w.validate()?;
    }
    if let Some(c) = &station.cellular {
        c.validate().map_err(invalid)?;
    }
    let data = fleet.data_dir();
    let identity = format!("{}/{IDENTITY}", data.trim_end_matches('/'));
    let defaults = |d: &str| fleet.raw.defaults.get(d).cloned().unwrap_or_default();

    // fleet-updated: fleet-wide defaults, then what only this station has.
    let mut updated = defaults("updated");
    let mut own = Table::new();
    own.insert("device-id".into(), Value::String(id.to_string()));
    // Groups given for the station replace the fleet-wide ones; none given keeps them.
    if !station.groups.is_empty() {
        own.insert(
            "groups".into(),
            Value::Array(
                station
                    .groups
                    .iter()
                    .map(|g| Value::String(g.to_string()))
                    .collect(),
            ),
        );
    }
    own.insert(
        "trusted-keys".into(),
        Value::Array(
            fleet
                .trusted_hex
                .iter()
                .map(|k| Value::String(k.clone()))
                .collect(),
        ),
    );
    let mut mqtt = Table::new();
    mqtt.insert("host".into(), Value::String(fleet.raw.broker.host.clone()));
    // Always TLS with the issued certificate, also to a broker on a loopback address.
    mqtt.insert("transport".into(), Value::String("tls".into()));
    if let Some(port) = fleet.raw.broker.port {
        mqtt.insert("port".into(), Value::Integer(port.into()));
    }
    let mut tls = Table::new();
    for (key, file) in [
        ("ca-file", "ca.crt"),
        ("cert-file", "client.crt"),
        ("key-file", "client.key"),
    ] {
        tls.insert(key.into(), Value::String(format!("{identity}/mqtt/{file}")));
    }
    mqtt.insert("tls".into(), Value::Table(tls));
    own.insert("mqtt".into(), Value::Table(mqtt));
    if station.microphone.is_some() {
        // The recorder's status file (its data-dir in the image defaults) gates updates too.
        let mut rec = Table::new();
        rec.insert(
            "status-file".into(),
            Value::String(format!(
                "{}/fleet/recordings/status.json",
                data.trim_end_matches('/')
            )),
        );
        let mut health = Table::new();
        health.insert("recorder".into(), Value::Table(rec));
        own.insert("health".into(), Value::Table(health));
    }
    fleet_config::merge(&mut updated, own);

    let mut folder = Folder::new();
    let mut put_toml = |daemon: &str, table: &Table| -> Result<(), ProvisionError> {
        let body = toml::to_string(table).map_err(|e| invalid(e.to_string()))?;
        folder.insert(
            format!("{daemon}.toml"),
            (format!("{}{body}", header(daemon, &id)).into_bytes(), 0o640),
        );
        Ok(())
    };
    put_toml("updated", &updated)?;

    // fleet-recorderd: only with something to record or to say where.
    let mut recorder = defaults("recorderd");
    if station.microphone.is_some() || station.position.is_some() {
        let mut own = Table::new();
        own.insert("station-id".into(), Value::String(id.to_string()));
        if let Some((lat, lon, elev)) = station.position {
            let mut pos = Table::new();
            pos.insert("lat".into(), Value::Float(lat));
            pos.insert("lon".into(), Value::Float(lon));
            if let Some(e) = elev {
                pos.insert("elevation-m".into(), Value::Float(e));
            }
            own.insert("position".into(), Value::Table(pos));
        }
        if let Some(mic) = &station.microphone {
            let mut dev = Table::new();
            dev.insert("id".into(), Value::String("mic".into()));
            match mic {
                Microphone::Usb {
                    vendor,
                    product,
                    serial,
                } => {
                    let mut usb = Table::new();
                    usb.insert("vendor".into(), Value::String(vendor.clone()));
                    usb.insert("product".into(), Value::String(product.clone()));
                    if let Some(s) = serial {
                        usb.insert("serial".into(), Value::String(s.clone()));
                    }
                    dev.insert("usb".into(), Value::Table(usb));
                }
                Microphone::Alsa(name) => {
                    dev.insert("alsa-name".into(), Value::String(name.clone()));
                }
            }
            dev.insert("profile".into(), Value::String(station.profile.clone()));
            own.insert("devices".into(), Value::Array(vec![Value::Table(dev)]));
        }
        fleet_config::merge(&mut recorder, own);
    }
    if !recorder.is_empty() {
        put_toml("recorderd", &recorder)?;
    }
    let retention = defaults("retentiond");
    if !retention.is_empty() {
        put_toml("retentiond", &retention)?;
    }
    // fleet-uploaderd: only with a destination, and then with its credentials.
    for (rel, bytes, mode) in uploader::build(
        defaults("uploaderd"),
        &station.uploader,
        &identity,
        &fleet.image_defaults("uploaderd")?,
        &header("uploaderd", &id),
    )? {
        folder.insert(rel, (bytes, mode));
    }

    // Every daemon's checker, over the image defaults, before anything is written.
    for daemon in DAEMONS {
        if let Some((text, _)) = folder.get(&format!("{daemon}.toml")) {
            let text = String::from_utf8_lossy(text).into_owned();
            check_daemon(
                daemon,
                &fleet.image_defaults(daemon)?,
                &text,
                daemon == "updated",
            )?;
        }
    }

    // retentiond counts an uploader exactly while uploaderd.toml exists.
    let retention_text = folder
        .get("retentiond.toml")
        .map(|(t, _)| String::from_utf8_lossy(t).into_owned());
    retention_follows_uploader(
        &fleet.image_defaults("retentiond")?,
        retention_text.as_deref(),
        &identity,
    )?;

    let ca = FleetCa::load(
        &fleet.path(&fleet.raw.station_ca.cert_file),
        &fleet.path(&fleet.raw.station_ca.key_file),
    )?;
    let client = ca.issue_station(&id, fleet.raw.station_ca.valid_days)?;
    let broker_ca = read(&fleet.path(&fleet.raw.broker.ca_file))?;
    folder.insert("device-id".into(), (format!("{id}\n").into_bytes(), 0o640));
    folder.insert("mqtt/ca.crt".into(), (broker_ca.into_bytes(), 0o644));
    folder.insert(
        "mqtt/client.crt".into(),
        (client.cert_pem.into_bytes(), 0o644),
    );
    folder.insert(
        "mqtt/client.key".into(),
        (client.key_pem.into_bytes(), 0o600),
    );
    if let Some(w) = &station.wifi {
        folder.insert(
            "network/wpa_supplicant-wlan0.conf".into(),
            (w.wpa_supplicant_conf().into_bytes(), 0o600),
        );
    }
    if let Some(c) = &station.cellular {
        folder.insert(
            cellular::FILE.into(),
            (c.to_file().map_err(invalid)?.into_bytes(), 0o600),
        );
    }
    Ok(folder)
}

/// Refuses retentiond settings whose `policy.uploader` would not follow the uploader: it must be
/// `"auto"` (the default) looking at `<identity>/uploaderd.toml`, which the folder holds exactly
/// when an uploader destination is provisioned.
fn retention_follows_uploader(
    image: &str,
    station: Option<&str>,
    identity: &str,
) -> Result<(), ProvisionError> {
    let dir = tempfile::tempdir().map_err(|source| ProvisionError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let image_path = dir.path().join("image-retentiond.toml");
    let station_path = dir.path().join("retentiond.toml");
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ProvisionError::Write { path, source }
    };
    std::fs::write(&image_path, image).map_err(werr(&image_path))?;
    if let Some(text) = station {
        std::fs::write(&station_path, text).map_err(werr(&station_path))?;
    }
    let layers = Layers {
        image: image_path,
        station: station.map(|_| station_path),
    };
    let out = fleet_config::load_once(&layers, &[], &fleet_config::Limits::default(), |m| {
        fleet_retentiond::config::parse_at(&m.text, &m.origin).map(|c| c.uploader)
    });
    let want = PathBuf::from(format!("{identity}/{}", uploader::STATION_FILE));
    match out {
        fleet_config::Outcome::Ready(fleet_retentiond::config::UploaderSwitch::Auto(p))
            if p == want =>
        {
            Ok(())
        }
        fleet_config::Outcome::Ready(other) => Err(invalid(format!(
            "retentiond's policy.uploader is {}: it must follow the uploader (\"auto\" \
             looking at {}, which the folder holds exactly when an uploader destination is \
             provisioned); remove policy.uploader and policy.uploader-config from \
             [defaults.retentiond]",
            match other {
                fleet_retentiond::config::UploaderSwitch::Fixed(v) => v.to_string(),
                fleet_retentiond::config::UploaderSwitch::Auto(p) =>
                    format!("\"auto\" looking at {}", p.display()),
            },
            want.display()
        ))),
        fleet_config::Outcome::Invalid(message) => Err(ProvisionError::Refused {
            daemon: "fleet-retentiond".into(),
            message,
        }),
        fleet_config::Outcome::Incomplete(gaps) => Err(ProvisionError::Refused {
            daemon: "fleet-retentiond".into(),
            message: gaps.join("; "),
        }),
    }
}

/// Writes `folder` as `<out>/fleet-provision/`: into a temporary directory beside it, then one
/// rename. Refuses when `<out>/fleet-provision` exists.
pub fn write(out: &Path, folder: &Folder) -> Result<PathBuf, ProvisionError> {
    use std::os::unix::fs::PermissionsExt;
    let dest = out.join("fleet-provision");
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ProvisionError::Write { path, source }
    };
    if dest.exists() {
        return Err(invalid(format!(
            "{} exists: remove it or give another --out",
            dest.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(werr(out))?;
    let tmp = tempfile::Builder::new()
        .prefix(".fleet-provision-")
        .tempdir_in(out)
        .map_err(werr(out))?;
    for (rel, (bytes, mode)) in folder {
        let path = tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(werr(parent))?;
        }
        std::fs::write(&path, bytes).map_err(werr(&path))?;
        // FAT ignores modes; on other file systems keep the secrets private until the station
        // sets its own.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode));
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(werr(&path))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, &dest).map_err(werr(&dest))?;
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .map_err(werr(out))?;
    Ok(dest)
}

/// What `provision --check` found.
#[derive(Debug)]
pub struct CheckReport {
    pub device: DeviceId,
    pub lines: Vec<String>,
}

/// `fleetctl provision --check DIR`: validates an existing folder as the station will (allowed
/// files, the id, each daemon's settings over the image defaults) and its credentials (the key
/// belongs to the certificate, the certificate names the station and is for client auth).
/// `fleet` gives the image defaults to check against; without it, the defaults this fleetctl was
/// built with for a Raspberry Pi 5 (`fleet-raspberrypi5`, tryboot, `/data`).
pub fn check(dir: &Path, fleet: Option<&Fleet>) -> Result<CheckReport, ProvisionError> {
    let dir = if dir.join("fleet-provision").is_dir() {
        dir.join("fleet-provision")
    } else {
        dir.to_owned()
    };
    let allowed = |rel: &str| {
        matches!(
            rel,
            "device-id"
                | "updated.toml"
                | "recorderd.toml"
                | "retentiond.toml"
                | "uploaderd.toml"
                | "mqtt"
                | "network"
                | "uploader"
                | "mqtt/ca.crt"
                | "mqtt/client.crt"
                | "mqtt/client.key"
                | cellular::FILE
        ) || uploader::FILES.contains(&rel)
            || (rel.starts_with("network/wpa_supplicant-") && rel.ends_with(".conf"))
    };
    let mut lines = Vec::new();
    for sub in ["", "mqtt", "network", "uploader"] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            };
            if !allowed(&rel) {
                return Err(invalid(format!(
                    "{rel} is not part of a provisioning folder (the station would refuse it)"
                )));
            }
        }
    }
    let id_text = read(&dir.join("device-id"))?;
    let device = DeviceId::new(id_text.trim()).map_err(|e| invalid(format!("device-id: {e}")))?;
    if device.as_str() == OPERATOR_CN {
        return Err(invalid(
            "device-id: \"operator\" is the operators' identity",
        ));
    }
    lines.push(format!("device-id: {device}"));
    let image = |daemon: &str| match fleet {
        Some(f) => f.image_defaults(daemon),
        None => image_defaults(daemon, None, "fleet-raspberrypi5", "tryboot", "/data"),
    };
    let identity = format!(
        "{}/{IDENTITY}",
        fleet
            .map_or("/data", |f| f.data_dir())
            .trim_end_matches('/')
    );
    for daemon in DAEMONS {
        let path = dir.join(format!("{daemon}.toml"));
        if !path.exists() {
            if daemon == "updated" {
                return Err(invalid("updated.toml is missing"));
            }
            lines.push(format!(
                "{daemon}.toml: none (image defaults{})",
                if daemon == "recorderd" {
                    "; the recorder waits for a microphone"
                } else {
                    ""
                }
            ));
            continue;
        }
        let text = read(&path)?;
        let table: Table = toml::from_str(&text)
            .map_err(|e| invalid(format!("{daemon}.toml: {}", e.message())))?;
        let named = match daemon {
            "updated" => table.get("device-id"),
            "recorderd" => table.get("station-id"),
            _ => None,
        };
        if let Some(v) = named
            && v.as_str() != Some(device.as_str())
        {
            return Err(invalid(format!(
                "{daemon}.toml names another station ({v}) than device-id ({device})"
            )));
        }
        check_daemon(daemon, &image(daemon)?, &text, daemon == "updated")?;
        lines.push(format!("{daemon}.toml: accepted by fleet-{daemon}"));
    }
    match uploader::check_folder(&dir, &identity, &image("uploaderd")?)? {
        Some(line) => lines.push(line),
        None => lines.push("uploaderd.toml: none (no uploader; retentiond counts none)".into()),
    }
    let retention = dir.join("retentiond.toml");
    let retention = if retention.exists() {
        Some(read(&retention)?)
    } else {
        None
    };
    retention_follows_uploader(&image("retentiond")?, retention.as_deref(), &identity)?;
    lines.push(format!(
        "retentiond: policy.uploader follows {identity}/uploaderd.toml"
    ));
    let cellular_file = dir.join(cellular::FILE);
    if cellular_file.exists() {
        let c = Cellular::parse_file(&read(&cellular_file)?)
            .map_err(|e| invalid(format!("{}: {e}", cellular::FILE)))?;
        lines.push(format!("{}: APN {}", cellular::FILE, c.apn));
    }
    let cert = dir.join("mqtt/client.crt");
    let key = dir.join("mqtt/client.key");
    let ca = dir.join("mqtt/ca.crt");
    if cert.exists() || key.exists() {
        let tls = fleet_mqtt::TlsConfig {
            ca: ca.clone(),
            client_auth: Some(fleet_mqtt::ClientAuth {
                cert: cert.clone(),
                key,
            }),
            server_verify: fleet_mqtt::ServerVerify::Enforce,
        };
        tls.client_config(fleet_mqtt::Limits::default().max_credential_file_bytes)
            .map_err(|e| invalid(e.to_string()))?;
        let (cn, client_auth) = client_cert_facts(&read(&cert)?)
            .map_err(|e| invalid(format!("mqtt/client.crt: {e}")))?;
        if cn.as_deref() != Some(device.as_str()) {
            return Err(invalid(format!(
                "mqtt/client.crt: its Common Name ({}) is not the device id {device}: the broker \
                 would give it another station's rights",
                cn.unwrap_or_else(|| "none".into())
            )));
        }
        if !client_auth {
            return Err(invalid(
                "mqtt/client.crt: it is not a client certificate (extended key usage clientAuth)",
            ));
        }
        lines.push(format!(
            "mqtt: key matches certificate, CN {device}, clientAuth"
        ));
    } else {
        lines.push("mqtt: no client certificate (the station gets none)".into());
    }
    Ok(CheckReport { device, lines })
}

/// The Common Name of the first certificate in `pem`, and whether it allows client auth.
fn client_cert_facts(pem: &str) -> Result<(Option<String>, bool), String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate ({e})"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let client_auth = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|e| e.value.client_auth);
    Ok((cn, client_auth))
}
