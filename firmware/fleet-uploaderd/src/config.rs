//! Configuration: the three layers every daemon reads (ADR 0008, ADR 0011; `fleet_config::Stack`):
//! the image's defaults (`--config`, `/etc/fleet/uploaderd.toml`), the station's settings
//! (`--station-config`, provisioned to `/data/fleet/identity/uploaderd.toml`) and the pushed
//! settings (`--pushed-config`), each laid over the one before key by key. Kebab-case keys,
//! unknown keys refused; parsed into raw types, then validated into [`Config`], reporting every
//! invalid key with its path.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use fleet_core::upload::{Order, RetryPolicy, UntrustedClock, Window};
use serde::Deserialize;

/// Bounds the daemon holds itself to. Defaults are documented in `docs/reference/uploaderd.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest configuration or credentials file read.
    pub max_config_bytes: u64,
    /// Recordings read from the index per look at the queue.
    pub queue_batch: usize,
    /// Recordings whose retry state is remembered (the oldest entries go first past this).
    pub max_tracked: usize,
    /// Largest S3 response body read (XML of a multipart listing).
    pub max_response_bytes: u64,
    /// Parts of one multipart upload (S3 allows 10,000).
    pub max_parts: u64,
    /// Bytes sent between two watchdog pings and shutdown checks.
    pub chunk_bytes: usize,
    /// Size of one read of an uncapped SFTP read-back (libssh2 keeps up to four in flight).
    pub sftp_read_bytes: usize,
    /// Bytes an uncapped SFTP upload hands libssh2 at once: between half of it and all of it is
    /// in flight (written, not yet acknowledged), so the link never waits for an
    /// acknowledgement. Under a bandwidth cap, `chunk_bytes`.
    pub sftp_write_window_bytes: usize,
    /// Largest output read from the server's `sha256sum` (one line is about 100 bytes plus the
    /// path); more is not a hash line.
    pub sftp_hash_output_bytes: usize,
    /// The slowest hashing a server is granted: the remote `sha256sum` of an object of `n` bytes
    /// may take `timeout-seconds + n / this` before it counts as refused.
    pub sftp_hash_min_bytes_per_second: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_config_bytes: 64 << 10,
            queue_batch: 512,
            max_tracked: 4096,
            max_response_bytes: 4 << 20,
            max_parts: 10_000,
            chunk_bytes: 256 << 10,
            sftp_read_bytes: 512 << 10,
            sftp_write_window_bytes: 2 << 20,
            sftp_hash_output_bytes: 4 << 10,
            sftp_hash_min_bytes_per_second: 10_000_000,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to read config {path}: it is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("unable to parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unable to accept config {path}: {}", .problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    recordings_dir: PathBuf,
    index_path: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    status_path: Option<PathBuf>,
    #[serde(default)]
    credentials_file: Option<PathBuf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    boot_id_path: Option<PathBuf>,
    #[serde(default)]
    trust_time: Option<String>,
    #[serde(default)]
    clock_root: Option<PathBuf>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    poll_seconds: Option<f64>,
    #[serde(default)]
    destination: Option<RawDestination>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    bandwidth: RawBandwidth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDestination {
    kind: String,
    // kind = "s3"
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    url_style: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    multipart_threshold_mib: Option<u64>,
    #[serde(default)]
    part_size_mib: Option<u64>,
    #[serde(default)]
    timeout_seconds: Option<f64>,
    // kind = "sftp"
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    remote_dir: Option<String>,
    #[serde(default)]
    private_key_file: Option<PathBuf>,
    #[serde(default)]
    known_hosts_file: Option<PathBuf>,
    #[serde(default)]
    verify: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSchedule {
    #[serde(default)]
    windows: Vec<String>,
    #[serde(default)]
    utc_offset: Option<String>,
    #[serde(default)]
    when_clock_untrusted: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetry {
    base_seconds: Option<f64>,
    max_seconds: Option<f64>,
    dead_letter_after: Option<u32>,
    dead_letter_retry_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBandwidth {
    max_bytes_per_second: Option<u64>,
    burst_bytes: Option<u64>,
}

/// What leaves the station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lossless FLAC, verified by decoding; GUANO in a Vorbis comment. 32-bit recordings (beyond
    /// the encoder's 24 bits) go as WAV.
    Flac,
    /// The WAV file unchanged.
    Wav,
}

/// Whether the wall clock is trusted (as `fleet-retentiond`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustTime {
    /// The station's clock rule (ADR 0004), asked at every decision:
    /// `fleet_facts::clock::now` reads systemd-timesyncd's files and the RTC under
    /// `clock-root` and applies `fleet_core::clock::decide_trust`, as every fleet daemon does.
    Auto,
    Always,
    Never,
}

/// How the S3 bucket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlStyle {
    /// `https://endpoint/bucket/key` (MinIO, most self-hosted servers).
    Path,
    /// `https://bucket.endpoint/key` (AWS).
    VirtualHost,
}

/// An S3-compatible destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Destination {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub url_style: UrlStyle,
    /// Prepended to every key (`fleet/`); empty by default.
    pub prefix: String,
    /// Objects above this go as a multipart upload.
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    /// Connect timeout and the longest wait for one read or write (default 10 s, below half the
    /// unit's watchdog period).
    pub timeout: Duration,
}

/// An SFTP destination: a directory on an OpenSSH server (a research group's machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpDestination {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The object keys go below it; relative to the login directory unless absolute.
    pub remote_dir: String,
    /// The station's private key (OpenSSH or PEM format, no passphrase), under `data-dir`;
    /// re-read at every connect.
    pub private_key_file: PathBuf,
    /// The server's host keys (OpenSSH `known_hosts` format), under `data-dir`; re-read at every
    /// connect. A host key not listed there is refused: there is no switch to skip the check.
    pub known_hosts_file: PathBuf,
    /// Connect timeout and the longest wait for one SSH operation.
    pub timeout: Duration,
    /// How an object on the server is confirmed.
    pub verify: SftpVerify,
}

/// How the station confirms an object on an SFTP server (`verify`). Whichever it is, a checksum
/// that differs from the station's fails the upload: nothing falls back after a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftpVerify {
    /// The server's `sha256sum` (an exec channel on the same session), tried once per
    /// connection; a server that refuses it (no exec, `ForceCommand internal-sftp`, no
    /// `sha256sum`, a non-zero exit, output that is not one hash line) is confirmed by reading
    /// the object back for the rest of that connection.
    Auto,
    /// The server's `sha256sum` only: a server that refuses it fails the upload.
    RemoteHash,
    /// Always read the object back and hash it on the station; never exec on the server.
    ReadBack,
}

/// Where recordings go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    S3(S3Destination),
    Sftp(SftpDestination),
}

impl Destination {
    /// How the status file names the destination (`s3://bucket`, `sftp://user@host:port/dir`).
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::S3(d) => format!("s3://{}", d.bucket),
            Self::Sftp(d) => format!("sftp://{}@{}:{}/{}", d.user, d.host, d.port, d.remote_dir),
        }
    }
}

/// When the link may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub windows: Vec<Window>,
    pub utc_offset_minutes: i32,
    pub when_clock_untrusted: UntrustedClock,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the recorder promotes finished segments (retentiond's `recordings-dir`).
    pub recordings_dir: PathBuf,
    /// retentiond's index (`<retentiond state-dir>/index.sqlite`).
    pub index_path: PathBuf,
    /// The uploader's state: `queue.json`, `spool/`.
    pub state_dir: PathBuf,
    pub status_path: PathBuf,
    /// The station's overlay, when one was read.
    pub station_config: Option<PathBuf>,
    pub credentials_file: PathBuf,
    /// The station's data partition: the SFTP key files must lie under it.
    pub data_dir: PathBuf,
    pub boot_id_path: PathBuf,
    pub trust_time: TrustTime,
    /// Where the clock facts are read (`<clock-root>/run`, `/var/lib`, `/sys`).
    pub clock_roots: fleet_facts::Roots,
    pub format: Format,
    pub order: Order,
    pub poll: Duration,
    /// `None`: no destination configured; the daemon idles and says so.
    pub destination: Option<Destination>,
    pub schedule: Schedule,
    pub retry: RetryPolicy,
    pub max_bytes_per_second: u64,
    pub burst_bytes: u64,
    pub limits: Limits,
}

impl Config {
    #[must_use]
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }
    #[must_use]
    pub fn queue_path(&self) -> PathBuf {
        self.state_dir.join("queue.json")
    }
}

fn read_limited(path: &Path, max: u64) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > max {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads one complete configuration file (the image's alone: no station or pushed layer).
///
/// # Errors
/// The file cannot be read or parsed, or values are invalid (all reported).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_layers(path, None, None)
}

/// Reads the image's defaults, lays the station's settings and then the pushed settings over
/// them key by key (`fleet_config::merge`: a pushed `bandwidth.burst-bytes` keeps the station's
/// `bandwidth.max-bytes-per-second`), and validates the result. An absent station file is an
/// unprovisioned station (no destination: the daemon idles); an absent pushed file is nothing
/// pushed yet.
///
/// # Errors
/// A file cannot be read or parsed, or values are invalid (all reported, naming the layers).
pub fn load_layers(
    image: &Path,
    station: Option<&Path>,
    pushed: Option<&Path>,
) -> Result<Config, ConfigError> {
    let stack = fleet_config::Stack::new(
        image,
        station.map(Path::to_owned),
        pushed.map(Path::to_owned),
    );
    let limits = fleet_config::Limits {
        max_layer_bytes: Limits::default().max_config_bytes,
        ..fleet_config::Limits::default()
    };
    let merged = fleet_config::Source::read(&stack, &limits).map_err(|e| match e {
        fleet_config::LayerError::Read { path, source } => ConfigError::Read { path, source },
        fleet_config::LayerError::TooLarge { path, max, .. } => ConfigError::TooLarge { path, max },
        fleet_config::LayerError::Parse { path, detail } => ConfigError::Parse {
            path,
            message: detail,
        },
    })?;
    let origin = merged.origin;
    let mut config = parse_table(merged.table).map_err(|e| match e {
        ParseError::Syntax(message) => ConfigError::Parse {
            path: origin.clone(),
            message,
        },
        ParseError::Invalid(problems) => ConfigError::Invalid {
            path: origin.clone(),
            problems,
        },
    })?;
    config.station_config = station
        .filter(|_| merged.station_present)
        .map(Path::to_owned);
    Ok(config)
}

/// Why a config text was refused.
#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<String>),
}

/// Parses and validates one config text (no overlay).
///
/// # Errors
/// Syntax errors, or every invalid value.
pub fn parse(text: &str) -> Result<Config, ParseError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| ParseError::Syntax(e.message().to_owned()))?;
    parse_table(table)
}

fn seconds(
    key: &str,
    value: Option<f64>,
    default: f64,
    range: std::ops::RangeInclusive<f64>,
    problems: &mut Vec<String>,
) -> Duration {
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        problems.push(format!(
            "{key}: {v} is not between {} and {} seconds",
            range.start(),
            range.end()
        ));
        return Duration::from_secs_f64(default);
    }
    Duration::from_secs_f64(v)
}

/// `+HH:MM` / `-HH:MM` / `Z` to minutes.
fn utc_offset(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

fn is_inside(dir: &Path, path: &Path) -> bool {
    path.is_absolute()
        && !path.components().any(|c| c == Component::ParentDir)
        && path.starts_with(dir)
        && path != dir
}

/// Keys of one kind set on a destination of another.
fn foreign_keys(kind: &str, keys: &[(&str, bool)], problems: &mut Vec<String>) {
    for (key, set) in keys {
        if *set {
            problems.push(format!("destination.{key}: is not a key of kind {kind:?}"));
        }
    }
}

fn destination(
    d: RawDestination,
    data_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<Destination> {
    match d.kind.as_str() {
        "s3" => s3_destination(d, problems),
        "sftp" => sftp_destination(d, data_dir, problems),
        other => {
            problems.push(format!(
                "destination.kind: {other:?} is not a known kind (s3, sftp)"
            ));
            None
        }
    }
}

fn sftp_destination(
    d: RawDestination,
    data_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<Destination> {
    foreign_keys(
        "sftp",
        &[
            ("endpoint", d.endpoint.is_some()),
            ("bucket", d.bucket.is_some()),
            ("region", d.region.is_some()),
            ("url-style", d.url_style.is_some()),
            ("prefix", d.prefix.is_some()),
            (
                "multipart-threshold-mib",
                d.multipart_threshold_mib.is_some(),
            ),
            ("part-size-mib", d.part_size_mib.is_some()),
        ],
        problems,
    );
    let mut required = |key: &str, v: Option<String>| {
        let v = v.unwrap_or_default();
        if v.is_empty() {
            problems.push(format!("destination.{key}: is required for kind \"sftp\""));
        }
        v
    };
    let host = required("host", d.host);
    let user = required("user", d.user);
    let remote_dir = required("remote-dir", d.remote_dir);
    // A line break would split the path the server's hash command reads (one line).
    if remote_dir.split('/').any(|c| c == "..") || remote_dir.contains(['\0', '\n']) {
        problems.push(format!(
            "destination.remote-dir: {remote_dir:?} must not contain .., NUL or a line break"
        ));
    }
    let port = d.port.unwrap_or(22);
    if port == 0 {
        problems.push("destination.port: 0 is not a port".into());
    }
    let mut file = |key: &str, p: Option<PathBuf>| match p {
        None => {
            problems.push(format!("destination.{key}: is required for kind \"sftp\""));
            PathBuf::new()
        }
        Some(p) => {
            if !is_inside(data_dir, &p) {
                problems.push(format!(
                    "destination.{key}: {} must be an absolute path under data-dir {} \
                     (credentials live on the station's data partition, never in the image)",
                    p.display(),
                    data_dir.display()
                ));
            }
            p
        }
    };
    let private_key_file = file("private-key-file", d.private_key_file);
    let known_hosts_file = file("known-hosts-file", d.known_hosts_file);
    let timeout = seconds(
        "destination.timeout-seconds",
        d.timeout_seconds,
        10.0,
        1.0..=3600.0,
        problems,
    );
    let verify = match d.verify.as_deref() {
        None | Some("auto") => SftpVerify::Auto,
        Some("remote-hash") => SftpVerify::RemoteHash,
        Some("read-back") => SftpVerify::ReadBack,
        Some(other) => {
            problems.push(format!(
                "destination.verify: {other:?} is not one of auto, remote-hash, read-back"
            ));
            SftpVerify::Auto
        }
    };
    Some(Destination::Sftp(SftpDestination {
        host,
        port,
        user,
        remote_dir: remote_dir.trim_end_matches('/').to_owned(),
        private_key_file,
        known_hosts_file,
        timeout,
        verify,
    }))
}

fn s3_destination(d: RawDestination, problems: &mut Vec<String>) -> Option<Destination> {
    foreign_keys(
        "s3",
        &[
            ("host", d.host.is_some()),
            ("port", d.port.is_some()),
            ("user", d.user.is_some()),
            ("remote-dir", d.remote_dir.is_some()),
            ("private-key-file", d.private_key_file.is_some()),
            ("known-hosts-file", d.known_hosts_file.is_some()),
            ("verify", d.verify.is_some()),
        ],
        problems,
    );
    let endpoint = d.endpoint.unwrap_or_default();
    let bucket = d.bucket.unwrap_or_default();
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
        problems.push(format!(
            "destination.endpoint: {endpoint:?} is not an http:// or https:// URL"
        ));
    }
    if bucket.is_empty() {
        problems.push("destination.bucket: is empty".into());
    }
    let url_style = match d.url_style.as_deref() {
        None | Some("path") => UrlStyle::Path,
        Some("virtual-host") => UrlStyle::VirtualHost,
        Some(other) => {
            problems.push(format!(
                "destination.url-style: {other:?} is not one of path, virtual-host"
            ));
            UrlStyle::Path
        }
    };
    let prefix = d.prefix.unwrap_or_default();
    if prefix.starts_with('/') || prefix.contains("..") {
        problems.push(format!(
            "destination.prefix: {prefix:?} must not start with / or contain .."
        ));
    }
    let threshold = d.multipart_threshold_mib.unwrap_or(16);
    let part = d.part_size_mib.unwrap_or(8);
    // S3: parts are at least 5 MiB (but the last) and at most 5 GiB.
    if !(5..=5120).contains(&part) {
        problems.push(format!(
            "destination.part-size-mib: {part} is not between 5 and 5120 (S3's part limits)"
        ));
    }
    if threshold < part {
        problems.push(format!(
            "destination.multipart-threshold-mib: {threshold} is below part-size-mib ({part})"
        ));
    }
    // Below half the unit's watchdog period (30 s): a request waits at most this long between
    // two watchdog pings.
    let timeout = seconds(
        "destination.timeout-seconds",
        d.timeout_seconds,
        10.0,
        1.0..=3600.0,
        problems,
    );
    Some(Destination::S3(S3Destination {
        endpoint,
        bucket,
        region: d.region.unwrap_or_else(|| "us-east-1".into()),
        url_style,
        prefix,
        multipart_threshold_bytes: threshold << 20,
        part_size_bytes: part << 20,
        timeout,
    }))
}

fn parse_table(table: toml::Table) -> Result<Config, ParseError> {
    let raw: RawConfig = table
        .try_into()
        .map_err(|e: toml::de::Error| ParseError::Syntax(e.message().to_owned()))?;
    let mut problems = Vec::new();
    for (key, path) in [
        ("recordings-dir", &raw.recordings_dir),
        ("index-path", &raw.index_path),
        ("state-dir", &raw.state_dir),
    ] {
        if !path.is_absolute() {
            problems.push(format!("{key}: {} is not an absolute path", path.display()));
        }
    }
    let trust_time = match raw.trust_time.as_deref() {
        None | Some("auto") => TrustTime::Auto,
        Some("always") => TrustTime::Always,
        Some("never") => TrustTime::Never,
        Some(other) => {
            problems.push(format!(
                "trust-time: {other:?} is not one of auto, always, never"
            ));
            TrustTime::Never
        }
    };
    let clock_root = raw.clock_root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !clock_root.is_absolute() {
        problems.push(format!(
            "clock-root: {} is not an absolute path",
            clock_root.display()
        ));
    }
    let format = match raw.format.as_deref() {
        None | Some("flac") => Format::Flac,
        Some("wav") => Format::Wav,
        Some(other) => {
            problems.push(format!("format: {other:?} is not one of flac, wav"));
            Format::Flac
        }
    };
    let order = match raw.order.as_deref() {
        None | Some("oldest-first") => Order::OldestFirst,
        Some("newest-first") => Order::NewestFirst,
        Some(other) => {
            problems.push(format!(
                "order: {other:?} is not one of oldest-first, newest-first"
            ));
            Order::OldestFirst
        }
    };
    let poll = seconds(
        "poll-seconds",
        raw.poll_seconds,
        30.0,
        0.05..=3600.0,
        &mut problems,
    );
    let data_dir = raw
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/data"));
    if !data_dir.is_absolute() {
        problems.push(format!(
            "data-dir: {} is not an absolute path",
            data_dir.display()
        ));
    }
    // The S3 credentials, like the SFTP key files, live on the data partition only.
    let credentials_file = raw
        .credentials_file
        .clone()
        .unwrap_or_else(|| raw.state_dir.join("credentials.toml"));
    if !is_inside(&data_dir, &credentials_file) {
        problems.push(format!(
            "credentials-file: {} must be an absolute path under data-dir {} (credentials live \
             on the station's data partition, never in the image)",
            credentials_file.display(),
            data_dir.display()
        ));
    }
    let destination = raw
        .destination
        .and_then(|d| destination(d, &data_dir, &mut problems));
    let mut windows = Vec::new();
    for (i, w) in raw.schedule.windows.iter().enumerate() {
        match Window::parse(w) {
            Ok(w) => windows.push(w),
            Err(e) => problems.push(format!("schedule.windows[{i}]: {e}")),
        }
    }
    let utc_offset_minutes = match raw.schedule.utc_offset.as_deref() {
        None => 0,
        Some(t) => utc_offset(t).unwrap_or_else(|| {
            problems.push(format!(
                "schedule.utc-offset: {t:?} is not +HH:MM, -HH:MM or Z"
            ));
            0
        }),
    };
    let when_clock_untrusted = match raw.schedule.when_clock_untrusted.as_deref() {
        None | Some("upload") => UntrustedClock::Upload,
        Some("wait") => UntrustedClock::Wait,
        Some(other) => {
            problems.push(format!(
                "schedule.when-clock-untrusted: {other:?} is not one of upload, wait"
            ));
            UntrustedClock::Upload
        }
    };
    let r = &raw.retry;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let base = seconds(
        "retry.base-seconds",
        r.base_seconds,
        30.0,
        0.01..=86_400.0,
        &mut problems,
    );
    let max = seconds(
        "retry.max-seconds",
        r.max_seconds,
        3600.0,
        0.01..=604_800.0,
        &mut problems,
    );
    let dl_retry = seconds(
        "retry.dead-letter-retry-seconds",
        r.dead_letter_retry_seconds,
        86_400.0,
        0.0..=2_592_000.0,
        &mut problems,
    );
    let retry = match RetryPolicy::new(
        ms(base),
        ms(max),
        r.dead_letter_after.unwrap_or(5),
        ms(dl_retry),
    ) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(format!("retry: {e}"));
            None
        }
    };
    let config = retry.map(|retry| Config {
        recordings_dir: raw.recordings_dir,
        index_path: raw.index_path,
        status_path: raw
            .status_path
            .unwrap_or_else(|| raw.state_dir.join("status.json")),
        station_config: None,
        credentials_file,
        state_dir: raw.state_dir,
        data_dir,
        boot_id_path: raw
            .boot_id_path
            .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id")),
        trust_time,
        clock_roots: fleet_facts::Roots::under(&clock_root),
        format,
        order,
        poll,
        destination,
        schedule: Schedule {
            windows,
            utc_offset_minutes,
            when_clock_untrusted,
        },
        retry,
        max_bytes_per_second: raw.bandwidth.max_bytes_per_second.unwrap_or(0),
        burst_bytes: raw.bandwidth.burst_bytes.unwrap_or(0),
        limits: Limits::default(),
    });
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ParseError::Invalid(problems)),
    }
}

/// The destination's credentials, re-read at every connect.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Reads the credentials file.
///
/// # Errors
/// The file is missing, too large, or not the documented TOML.
pub fn load_credentials(path: &Path) -> Result<Credentials, ConfigError> {
    let text = read_limited(path, Limits::default().max_config_bytes)?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = "recordings-dir = \"/data/recorder/data\"\n\
        index-path = \"/data/fleet/retention/index.sqlite\"\n\
        state-dir = \"/data/fleet/uploader\"\n";

    #[test]
    fn a_minimal_config_takes_the_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.format, Format::Flac);
        assert_eq!(c.order, Order::OldestFirst);
        assert_eq!(c.destination, None);
        assert_eq!(
            c.status_path,
            PathBuf::from("/data/fleet/uploader/status.json")
        );
        assert_eq!(
            c.credentials_file,
            PathBuf::from("/data/fleet/uploader/credentials.toml")
        );
        assert_eq!(c.retry.dead_letter_after(), 5);
        assert_eq!(c.poll, Duration::from_secs(30));
        assert_eq!(c.trust_time, TrustTime::Auto, "the clock rule decides");
        assert_eq!(c.clock_roots, fleet_facts::Roots::system());
    }

    #[test]
    fn the_clock_rule_reads_its_facts_under_clock_root() {
        let c = parse(&format!("{MINIMAL}clock-root = \"/tmp/fake\"\n")).unwrap();
        assert_eq!(
            c.clock_roots,
            fleet_facts::Roots::under(std::path::Path::new("/tmp/fake"))
        );
        let ParseError::Invalid(problems) =
            parse(&format!("{MINIMAL}clock-root = \"fake\"\n")).unwrap_err()
        else {
            panic!("expected invalid values");
        };
        assert!(
            problems.iter().any(|p| p.starts_with("clock-root:")),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_in_every_table() {
        for extra in [
            "colour = 1\n",
            "[retry]\nbase = 1\n",
            "[schedule]\nwindow = []\n",
        ] {
            let e = parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert!(matches!(e, ParseError::Syntax(_)), "{extra}: {e:?}");
        }
    }

    #[test]
    fn every_invalid_value_is_reported_with_its_key() {
        let text = "recordings-dir = \"rel\"\nindex-path = \"/i\"\nstate-dir = \"/s\"\n\
            format = \"mp3\"\norder = \"random\"\n\
            [destination]\nkind = \"s3\"\nendpoint = \"ftp://x\"\nbucket = \"\"\npart-size-mib = 1\n\
            [schedule]\nwindows = [\"6-18\"]\nutc-offset = \"+25:00\"\n\
            [retry]\ndead-letter-after = 0\n";
        let ParseError::Invalid(problems) = parse(text).unwrap_err() else {
            panic!("expected invalid values");
        };
        for key in [
            "recordings-dir",
            "format",
            "order",
            "destination.endpoint",
            "destination.bucket",
            "destination.part-size-mib",
            "schedule.windows[0]",
            "schedule.utc-offset",
            "retry",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn the_pushed_layer_changes_single_keys_over_the_station_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let station = dir.path().join("station.toml");
        let pushed = dir.path().join("pushed.toml");
        let image = dir.path().join("uploaderd.toml");
        std::fs::write(
            &image,
            "recordings-dir = \"/data/r\"\nindex-path = \"/data/i.sqlite\"\nstate-dir = \"/data/u\"\n",
        )
        .expect("write");
        std::fs::write(
            &station,
            "[bandwidth]\nmax-bytes-per-second = 1000\nburst-bytes = 4000\n",
        )
        .expect("write");
        std::fs::write(
            &pushed,
            "order = \"newest-first\"\n[bandwidth]\nburst-bytes = 9000\n",
        )
        .expect("write");
        let c = load_layers(&image, Some(&station), Some(&pushed)).expect("valid");
        assert_eq!(c.order, Order::NewestFirst);
        assert_eq!(c.max_bytes_per_second, 1000);
        assert_eq!(c.burst_bytes, 9000);
        std::fs::write(&pushed, "order = \"sideways\"\n").expect("write");
        let e = load_layers(&image, Some(&station), Some(&pushed)).expect_err("invalid");
        assert!(e.to_string().contains("pushed.toml"), "{e}");
        // Nothing pushed yet.
        let c = load_layers(
            &image,
            Some(&station),
            Some(&dir.path().join("absent.toml")),
        )
        .expect("valid");
        assert_eq!(c.order, Order::OldestFirst);
    }

    #[test]
    fn the_station_file_is_laid_over_the_image_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let station = dir.path().join("station.toml");
        let image = dir.path().join("image.toml");
        std::fs::write(
            &image,
            format!("{MINIMAL}[retry]\nbase-seconds = 5\nmax-seconds = 600\n"),
        )
        .unwrap();
        // Not provisioned yet: no destination, the daemon idles.
        let c = load_layers(&image, Some(&station), None).unwrap();
        assert_eq!(c.destination, None);
        assert_eq!(c.station_config, None);
        std::fs::write(
            &station,
            "order = \"newest-first\"\n[retry]\nmax-seconds = 60\n[destination]\nkind = \"s3\"\n\
             endpoint = \"https://s3.example.org\"\nbucket = \"rec\"\n",
        )
        .unwrap();
        let c = load_layers(&image, Some(&station), None).unwrap();
        assert_eq!(c.order, Order::NewestFirst);
        // The station's retry table keeps the image's base-seconds.
        assert_eq!(c.retry.base_ms(), 5000);
        assert_eq!(c.retry.max_ms(), 60_000);
        assert_eq!(c.station_config.as_deref(), Some(station.as_path()));
        let Some(Destination::S3(d)) = c.destination else {
            panic!("expected an S3 destination");
        };
        assert_eq!(d.part_size_bytes, 8 << 20);
        assert_eq!(d.url_style, UrlStyle::Path);
        // The key that named the station file inside the image file is gone.
        std::fs::write(&station, "station-config = \"/data/other.toml\"\n").unwrap();
        let e = load_layers(&image, Some(&station), None).unwrap_err();
        assert!(e.to_string().contains("station-config"), "{e}");
    }

    #[test]
    fn an_sftp_destination_needs_its_keys_and_key_files_under_the_data_dir() {
        let ok = format!(
            "{MINIMAL}[destination]\nkind = \"sftp\"\nhost = \"sftp.example.org\"\n\
             user = \"st-1\"\nremote-dir = \"incoming/\"\n\
             private-key-file = \"/data/fleet/uploader/sftp/id_ed25519\"\n\
             known-hosts-file = \"/data/fleet/uploader/sftp/known_hosts\"\n"
        );
        let Some(Destination::Sftp(d)) = parse(&ok).unwrap().destination else {
            panic!("expected an SFTP destination");
        };
        assert_eq!((d.port, d.remote_dir.as_str()), (22, "incoming"));
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert_eq!(
            d.verify,
            SftpVerify::Auto,
            "the server's hash where it has one"
        );
        for (text, want) in [
            ("remote-hash", SftpVerify::RemoteHash),
            ("read-back", SftpVerify::ReadBack),
        ] {
            let Some(Destination::Sftp(d)) = parse(&format!("{ok}verify = \"{text}\"\n"))
                .unwrap()
                .destination
            else {
                panic!("expected an SFTP destination");
            };
            assert_eq!(d.verify, want);
        }
        let ParseError::Invalid(problems) =
            parse(&format!("{ok}verify = \"trust-me\"\n")).unwrap_err()
        else {
            panic!("expected an invalid verify");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("destination.verify:")),
            "{problems:?}"
        );
        let bad = format!(
            "{MINIMAL}[destination]\nkind = \"sftp\"\nhost = \"h\"\nremote-dir = \"a/../b\"\n\
             bucket = \"x\"\nprivate-key-file = \"/etc/fleet/id_ed25519\"\n\
             known-hosts-file = \"known_hosts\"\n"
        );
        let ParseError::Invalid(problems) = parse(&bad).unwrap_err() else {
            panic!("expected invalid values");
        };
        for key in [
            "destination.user",
            "destination.remote-dir",
            "destination.bucket",
            "destination.private-key-file",
            "destination.known-hosts-file",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn s3_credentials_outside_the_data_dir_are_refused() {
        for bad in [
            "credentials-file = \"/etc/fleet/credentials.toml\"\n",
            "credentials-file = \"credentials.toml\"\n",
            "credentials-file = \"/data/../etc/credentials.toml\"\n",
        ] {
            let ParseError::Invalid(problems) = parse(&format!("{MINIMAL}{bad}")).unwrap_err()
            else {
                panic!("expected invalid values for {bad}");
            };
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("credentials-file:")
                        && p.contains("under data-dir /data")),
                "{problems:?}"
            );
        }
        let moved = "data-dir = \"/srv/station\"\nstate-dir = \"/srv/station/uploader\"\n";
        let text = MINIMAL.replace("state-dir = \"/data/fleet/uploader\"\n", moved);
        assert_eq!(
            parse(&text).unwrap().credentials_file,
            PathBuf::from("/srv/station/uploader/credentials.toml"),
            "the default follows state-dir and is accepted under a moved data-dir"
        );
    }

    fn doc_blocks(lang: &str) -> Vec<String> {
        let doc = include_str!("../../../docs/reference/uploaderd.md");
        let fence = format!("```{lang}\n");
        doc.split(fence.as_str())
            .skip(1)
            .map(|b| b.split("```").next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_reference_samples_parse_as_documented() {
        let toml_blocks = doc_blocks("toml");
        assert_eq!(
            toml_blocks.len(),
            4,
            "image, station (S3), station (SFTP) and credentials samples"
        );
        let dir = tempfile::tempdir().unwrap();
        let station = dir.path().join("station.toml");
        std::fs::write(&station, &toml_blocks[1]).unwrap();
        let image = dir.path().join("image.toml");
        std::fs::write(&image, &toml_blocks[0]).unwrap();
        let c = load_layers(&image, Some(&station), None).unwrap();
        let Some(Destination::S3(d)) = &c.destination else {
            panic!("the station sample holds a destination");
        };
        assert_eq!(d.bucket, "field-recordings");
        assert_eq!(c.schedule.windows.len(), 1);
        assert_eq!(c.schedule.utc_offset_minutes, 60);
        assert_eq!(c.max_bytes_per_second, 250_000);
        assert_eq!(c.retry.dead_letter_after(), 5);
        // The SFTP station sample, over the same image file.
        std::fs::write(&station, &toml_blocks[2]).unwrap();
        let c = load_layers(&image, Some(&station), None).unwrap();
        let Some(Destination::Sftp(d)) = &c.destination else {
            panic!("the SFTP sample holds an SFTP destination");
        };
        assert_eq!(d.user, "fleet-st-0042");
        assert_eq!(d.remote_dir, "/srv/recordings/fleet");
        assert!(d.known_hosts_file.starts_with(&c.data_dir));
        assert_eq!(d.verify, SftpVerify::Auto);
        let creds = dir.path().join("credentials.toml");
        std::fs::write(&creds, &toml_blocks[3]).unwrap();
        assert_eq!(
            load_credentials(&creds).unwrap().access_key_id,
            "AKIAFLEETSTATION0042"
        );
        // The status sample is what the daemon writes.
        let json = doc_blocks("json");
        let status: crate::status::Status = serde_json::from_str(&json[0]).unwrap();
        assert_eq!(status.state, crate::status::State::Waiting);
    }

    #[test]
    fn credentials_never_show_the_secret() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: None,
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
