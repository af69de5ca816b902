//! fleet-uploaderd's part of the provisioning folder: its station settings (`uploaderd.toml`,
//! the fleet definition's `[defaults.uploaderd]` with this station's credentials) and the
//! credentials themselves under `uploader/`, which fleet-provision puts under
//! `<data>/fleet/identity/uploader/`, readable by the uploader's user only.
//!
//! The uploader's own loader (`fleet_uploaderd::config::load_layers`, what its
//! `--check-config` runs) checks the settings over the image defaults, and its own credentials
//! reader checks the S3 credentials; the SFTP key and known-hosts files are checked here, in
//! the formats libssh2 reads. The folder holds `uploaderd.toml` only with a destination: retentiond's
//! `policy.uploader = "auto"` counts an uploader exactly while that file exists.
use std::path::{Path, PathBuf};

use base64::Engine;
use fleet_uploaderd::config::{Config, Destination};
use toml::{Table, Value};

use super::{ProvisionError, invalid};

/// The station settings file, in the folder and in `<data>/fleet/identity/`.
pub const STATION_FILE: &str = "uploaderd.toml";
/// S3: the access key (the uploader's credentials TOML).
pub const CREDENTIALS: &str = "uploader/credentials.toml";
/// SFTP: the station's private key (OpenSSH or PEM, no passphrase).
pub const SFTP_KEY: &str = "uploader/sftp-key";
/// SFTP: the server's host keys (OpenSSH `known_hosts`).
pub const KNOWN_HOSTS: &str = "uploader/known_hosts";

/// The credential files a folder may hold.
pub const FILES: [&str; 3] = [CREDENTIALS, SFTP_KEY, KNOWN_HOSTS];

/// Keys the fleet definition may not set: provisioning derives them from the credentials it is
/// given (they must name the files it writes).
const DERIVED: [(&str, &str); 3] = [
    ("", "credentials-file"),
    ("destination", "private-key-file"),
    ("destination", "known-hosts-file"),
];

/// One station's uploader credentials, as files on the operator's machine.
#[derive(Debug, Clone, Default)]
pub struct UploaderCredentials {
    /// S3: a TOML file with `access-key-id`, `secret-access-key` (and `session-token`).
    pub s3_credentials: Option<PathBuf>,
    /// SFTP: the station's private key.
    pub sftp_key: Option<PathBuf>,
    /// SFTP: the server's host key(s), `known_hosts` format (`ssh-keyscan -H host`).
    pub sftp_known_hosts: Option<PathBuf>,
    /// SFTP: the station's login on the server, replacing `destination.user` of the defaults.
    pub sftp_user: Option<String>,
}

impl UploaderCredentials {
    fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.s3_credentials.is_some() {
            out.push("--uploader-s3-credentials");
        }
        if self.sftp_key.is_some() {
            out.push("--uploader-sftp-key");
        }
        if self.sftp_known_hosts.is_some() {
            out.push("--uploader-sftp-known-hosts");
        }
        if self.sftp_user.is_some() {
            out.push("--uploader-sftp-user");
        }
        out
    }
}

/// A file of the folder: relative path, contents, mode.
pub type File = (String, Vec<u8>, u32);

fn read(path: &Path) -> Result<String, ProvisionError> {
    super::read(path)
}

/// The uploader's files for a station: none when the fleet has no uploader destination.
/// `defaults`: `[defaults.uploaderd]`; `identity`: `<data>/fleet/identity`; `image`: the
/// image's `uploaderd.toml`.
pub(super) fn build(
    defaults: Table,
    given: &UploaderCredentials,
    identity: &str,
    image: &str,
    header: &str,
) -> Result<Vec<File>, ProvisionError> {
    for (table, key) in DERIVED {
        let set = if table.is_empty() {
            defaults.contains_key(key)
        } else {
            defaults
                .get(table)
                .and_then(Value::as_table)
                .is_some_and(|t| t.contains_key(key))
        };
        if set {
            let dotted = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            return Err(invalid(format!(
                "defaults.uploaderd.{dotted}: provisioning sets it (the credentials go to \
                 {identity}/uploader/); remove it from the fleet definition"
            )));
        }
    }
    let Some(destination) = defaults.get("destination").and_then(Value::as_table) else {
        if !defaults.is_empty() {
            return Err(invalid(
                "defaults.uploaderd holds no [defaults.uploaderd.destination]: without one no \
                 uploader runs and retentiond counts none; add the destination or remove the table",
            ));
        }
        if let Some(first) = given.given().first() {
            return Err(invalid(format!(
                "{first}: the fleet definition has no uploader destination \
                 ([defaults.uploaderd.destination]) to use it with"
            )));
        }
        return Ok(Vec::new());
    };
    let kind = destination
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut settings = defaults.clone();
    let mut destination = destination.clone();
    let mut files = Vec::new();
    match kind.as_str() {
        "s3" => {
            if let Some(first) = given
                .given()
                .into_iter()
                .find(|o| o.starts_with("--uploader-sftp"))
            {
                return Err(invalid(format!(
                    "{first}: the uploader's destination is S3, not SFTP"
                )));
            }
            let Some(path) = &given.s3_credentials else {
                return Err(invalid(
                    "the uploader's destination is S3 (defaults.uploaderd.destination) but no \
                     credentials were given: add --uploader-s3-credentials FILE",
                ));
            };
            let text = read(path)?;
            check_credentials(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            settings.insert(
                "credentials-file".into(),
                Value::String(format!("{identity}/{CREDENTIALS}")),
            );
            files.push((CREDENTIALS.to_owned(), text.into_bytes(), 0o600));
        }
        "sftp" => {
            if given.s3_credentials.is_some() {
                return Err(invalid(
                    "--uploader-s3-credentials: the uploader's destination is SFTP, not S3",
                ));
            }
            let (Some(key), Some(hosts)) = (&given.sftp_key, &given.sftp_known_hosts) else {
                return Err(invalid(
                    "the uploader's destination is SFTP (defaults.uploaderd.destination) but its \
                     credentials are missing: give --uploader-sftp-key FILE and \
                     --uploader-sftp-known-hosts FILE",
                ));
            };
            if let Some(user) = &given.sftp_user {
                destination.insert("user".into(), Value::String(user.clone()));
            }
            let key_text = read(key)?;
            check_private_key(&key_text).map_err(|e| invalid(format!("{}: {e}", key.display())))?;
            let hosts_text = read(hosts)?;
            let host = destination
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let port = destination
                .get("port")
                .and_then(Value::as_integer)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(22);
            check_known_hosts(&hosts_text, host, port)
                .map_err(|e| invalid(format!("{}: {e}", hosts.display())))?;
            destination.insert(
                "private-key-file".into(),
                Value::String(format!("{identity}/{SFTP_KEY}")),
            );
            destination.insert(
                "known-hosts-file".into(),
                Value::String(format!("{identity}/{KNOWN_HOSTS}")),
            );
            files.push((SFTP_KEY.to_owned(), key_text.into_bytes(), 0o600));
            files.push((KNOWN_HOSTS.to_owned(), hosts_text.into_bytes(), 0o600));
        }
        // Any other kind: the uploader's checker below names the problem.
        _ => {}
    }
    settings.insert("destination".into(), Value::Table(destination));
    let body = toml::to_string(&settings).map_err(|e| invalid(e.to_string()))?;
    let text = format!("{header}{body}");
    check(image, &text)?;
    files.push((STATION_FILE.to_owned(), text.into_bytes(), 0o640));
    Ok(files)
}

/// Checks `station` (uploaderd.toml) over the image's `uploaderd.toml` with fleet-uploaderd's
/// own loader (what `--config <image> --station-config <station> --check-config` runs), and
/// that it names a destination.
pub fn check(image: &str, station: &str) -> Result<Config, ProvisionError> {
    let refused = |message: String| ProvisionError::Refused {
        daemon: "fleet-uploaderd".into(),
        message,
    };
    let dir = tempfile::tempdir().map_err(|source| ProvisionError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let station_path = dir.path().join(STATION_FILE);
    let image_path = dir.path().join("image-uploaderd.toml");
    for (p, text) in [(&image_path, image), (&station_path, station)] {
        std::fs::write(p, text).map_err(|source| ProvisionError::Write {
            path: p.clone(),
            source,
        })?;
    }
    let config = fleet_uploaderd::config::load_layers(&image_path, Some(&station_path), None)
        .map_err(|e| refused(e.to_string()))?;
    if config.destination.is_none() {
        return Err(refused(
            "uploaderd.toml names no destination: the uploader would idle while retentiond \
             counted it"
                .into(),
        ));
    }
    Ok(config)
}

/// The S3 credentials file, read by the uploader's own reader.
pub fn check_credentials(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let c = fleet_uploaderd::config::load_credentials(&path).map_err(|e| match e {
        fleet_uploaderd::config::ConfigError::Parse { message, .. } => format!(
            "not the uploader's credentials file (access-key-id, secret-access-key, \
             session-token): {message}"
        ),
        other => other.to_string(),
    })?;
    if c.access_key_id.trim().is_empty() || c.secret_access_key.trim().is_empty() {
        return Err("access-key-id and secret-access-key must not be empty".into());
    }
    Ok(())
}

fn pem_body(text: &str, label: &str) -> Option<Result<Vec<u8>, String>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let Some(stop) = text[start..].find(&end) else {
        return Some(Err(format!("no \"{end}\" line")));
    };
    let body: String = text[start..start + stop]
        .lines()
        .filter(|l| !l.contains(':'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("its body is not base64 ({e})")),
    )
}

/// An unencrypted private key the uploader's SSH library reads: OpenSSH's format, or PEM
/// (PKCS#1 RSA, SEC1 EC, unencrypted PKCS#8).
pub fn check_private_key(text: &str) -> Result<(), String> {
    const PASSPHRASE: &str = "is protected by a passphrase: the uploader reads its key unattended, give a key without one";
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(PASSPHRASE.into());
    }
    if let Some(body) = pem_body(text, "OPENSSH PRIVATE KEY") {
        let body = body?;
        let rest = body
            .strip_prefix(b"openssh-key-v1\0")
            .ok_or("not an OpenSSH private key (no openssh-key-v1 header)")?;
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("a truncated OpenSSH private key")?;
        let cipher = rest
            .get(4..4 + len)
            .ok_or("a truncated OpenSSH private key")?;
        if cipher != b"none" {
            return Err(PASSPHRASE.into());
        }
        return Ok(());
    }
    for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"] {
        if let Some(body) = pem_body(text, label) {
            let body = body?;
            // Every PEM key is a DER SEQUENCE.
            if body.first() != Some(&0x30) {
                return Err(format!("the {label} block is not a DER key"));
            }
            return Ok(());
        }
    }
    if text.contains("PUBLIC KEY") || text.trim_start().starts_with("ssh-") {
        return Err("is a public key: give the station's private key".into());
    }
    Err("is not a private key in OpenSSH or PEM format".into())
}

/// `known_hosts` as OpenSSH writes it (`ssh-keyscan`): every entry's key decodes and names its
/// type, and one entry is for `host` (plain, `[host]:port`, a pattern, or hashed). Returns the
/// number of entries.
pub fn check_known_hosts(text: &str, host: &str, port: u16) -> Result<usize, String> {
    let mut entries = 0;
    let mut for_host = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace().peekable();
        if fields.peek().is_some_and(|f| f.starts_with('@')) {
            fields.next();
        }
        let (Some(hosts), Some(kind), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!(
                "line {}: not \"<hosts> <key type> <base64 key>\"",
                i + 1
            ));
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|e| format!("line {}: the key is not base64 ({e})", i + 1))?;
        let named = blob
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .and_then(|n| blob.get(4..4 + n));
        if named != Some(kind.as_bytes()) {
            return Err(format!(
                "line {}: the key is not a {kind} key (copy the line ssh-keyscan prints)",
                i + 1
            ));
        }
        entries += 1;
        let bracketed = format!("[{host}]:{port}");
        for_host |= hosts.split(',').any(|h| {
            h.starts_with("|1|")
                || h.contains('*')
                || h.contains('?')
                || (port == 22 && h == host)
                || h == bracketed
        });
    }
    if entries == 0 {
        return Err("lists no host key".into());
    }
    if !for_host {
        let name = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        return Err(format!(
            "lists no key for {name}, the destination (ssh-keyscan -p {port} {host})"
        ));
    }
    Ok(entries)
}

/// `provision --check`: the uploader's files of a folder at `dir`. `None` when the folder has
/// no uploader settings; otherwise the report line.
pub(super) fn check_folder(
    dir: &Path,
    identity: &str,
    image: &str,
) -> Result<Option<String>, ProvisionError> {
    let station = dir.join(STATION_FILE);
    if !station.exists() {
        if let Some(f) = FILES.iter().find(|f| dir.join(f).exists()) {
            return Err(invalid(format!(
                "{f} without uploaderd.toml: credentials with no destination to use them"
            )));
        }
        return Ok(None);
    }
    let config = check(image, &read(&station)?)?;
    // Every credential the settings name is one of the folder's files, at the place
    // fleet-provision puts it, and valid.
    let mut named = Vec::new();
    let place = |path: &Path, rel: &str, key: &str| -> Result<PathBuf, ProvisionError> {
        let want = PathBuf::from(format!("{identity}/{rel}"));
        if path != want {
            return Err(invalid(format!(
                "uploaderd.toml: {key} is {}, not {} where fleet-provision puts the folder's {rel}",
                path.display(),
                want.display()
            )));
        }
        let file = dir.join(rel);
        if !file.exists() {
            return Err(invalid(format!(
                "{rel} is missing: uploaderd.toml's {key} names it"
            )));
        }
        Ok(file)
    };
    let Some(destination) = config.destination.as_ref() else {
        return Err(invalid("uploaderd.toml names no destination"));
    };
    let what = match destination {
        Destination::S3(d) => {
            let f = place(&config.credentials_file, CREDENTIALS, "credentials-file")?;
            check_credentials(&read(&f)?).map_err(|e| invalid(format!("{CREDENTIALS}: {e}")))?;
            named.push(CREDENTIALS);
            format!("s3://{}, credentials checked", d.bucket)
        }
        Destination::Sftp(d) => {
            let f = place(
                &d.private_key_file,
                SFTP_KEY,
                "destination.private-key-file",
            )?;
            check_private_key(&read(&f)?).map_err(|e| invalid(format!("{SFTP_KEY}: {e}")))?;
            let f = place(
                &d.known_hosts_file,
                KNOWN_HOSTS,
                "destination.known-hosts-file",
            )?;
            check_known_hosts(&read(&f)?, &d.host, d.port)
                .map_err(|e| invalid(format!("{KNOWN_HOSTS}: {e}")))?;
            named.extend([SFTP_KEY, KNOWN_HOSTS]);
            format!(
                "sftp://{}@{}:{}, key and host key checked",
                d.user, d.host, d.port
            )
        }
    };
    if let Some(f) = FILES
        .iter()
        .find(|f| !named.contains(f) && dir.join(f).exists())
    {
        return Err(invalid(format!(
            "{f}: the uploader's destination does not use it"
        )));
    }
    Ok(Some(format!(
        "uploaderd.toml: accepted by fleet-uploaderd ({what})"
    )))
}
