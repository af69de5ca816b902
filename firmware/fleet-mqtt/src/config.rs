//! The `[mqtt]` table every station daemon reads, parsed into raw types and validated into
//! [`MqttConfig`] with every problem reported by its key path (`mqtt.tls.cert-file: ...`).
//!
//! ```toml
//! [mqtt]
//! host = "broker.example"           # the name the broker's certificate must carry
//! transport = "tls"                 # default; "plain" only for a loopback broker in tests
//! port = 8883                       # default 8883 with tls, 1883 plain
//! keep-alive-secs = 30
//! backoff-initial-ms = 500
//! backoff-max-ms = 60000
//! # username = "stn-0042"           # only for brokers that want a password
//! # password-file = "/data/fleet/identity/mqtt-password"
//!
//! [mqtt.tls]                        # files read at every connect (a renewal needs no restart)
//! ca-file = "/etc/fleet/broker-ca.crt"            # public: may be in the image or on /data
//! cert-file = "/data/fleet/identity/station.crt"  # must be under data-dir
//! key-file = "/data/fleet/identity/station.key"   # must be under data-dir
//! server-verify = "enforce"         # the only mode: chain to ca-file and name = host
//! ```
//! `fleet-updated`, `fleet-reporterd` and `fleet-uploaderd` all read `[mqtt]` with this module.
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Backoff, ClientAuth, Credentials, ServerVerify, SessionConfig, TlsConfig, Transport};

/// `[mqtt]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawMqtt {
    pub host: String,
    pub transport: Option<TransportKind>,
    pub port: Option<u16>,
    pub tls: Option<RawTls>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
}

/// `[mqtt.tls]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_verify: ServerVerifyKind,
}

/// `[mqtt] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// Plain TCP: only for a broker on the same machine (tests).
    Plain,
    /// TLS with the server verified; the default unless the host is a loopback address.
    Tls,
}

/// `[mqtt.tls] server-verify`: there is deliberately no value that turns verification off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerVerifyKind {
    #[default]
    Enforce,
}

const PLAIN_PORT: u16 = 1883;
const TLS_PORT: u16 = 8883;

fn default_keep_alive() -> u64 {
    30
}
fn default_backoff_initial() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    60_000
}

/// `localhost` or a loopback address: plain TCP to it never leaves the machine.
#[must_use]
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// True when `path` is absolute, has no `..` and lies inside `dir` (checked on the words).
fn is_inside(dir: &Path, path: &Path) -> bool {
    path.is_absolute()
        && !path.components().any(|c| c == Component::ParentDir)
        && path.starts_with(dir)
        && path != dir
}

/// The validated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub credentials: Option<Credentials>,
    pub keep_alive: Duration,
    pub backoff: Backoff,
}

impl MqttConfig {
    /// True when messages go in clear text to another machine.
    #[must_use]
    pub fn is_plain_over_a_network(&self) -> bool {
        self.transport == Transport::Plain && !is_loopback(&self.host)
    }

    /// The session settings for this connection (the caller adds its will and limits).
    #[must_use]
    pub fn session_config(&self, client_id: String) -> SessionConfig {
        let mut c = SessionConfig::new(client_id, self.host.clone(), self.port);
        c.transport = self.transport.clone();
        c.credentials = self.credentials.clone();
        c.keep_alive = self.keep_alive;
        c.backoff = self.backoff;
        c
    }
}

impl RawMqtt {
    /// Validates; credential files must lie under `data_dir`. Problems are added to
    /// `problems` (the result is then meaningless).
    pub fn validate(&self, data_dir: &Path, problems: &mut Vec<String>) -> MqttConfig {
        if self.host.is_empty() {
            problems.push("mqtt.host: must not be empty".into());
        }
        let kind = self.transport.unwrap_or(if is_loopback(&self.host) {
            TransportKind::Plain
        } else {
            TransportKind::Tls
        });
        let under_data = |problems: &mut Vec<String>, key: &str, p: &Path| {
            if !is_inside(data_dir, p) {
                problems.push(format!(
                    "{key}: must be an absolute path under data-dir {} (credentials live on the \
                     station's data partition, never in the image)",
                    data_dir.display()
                ));
            }
        };
        let credentials = match (&self.username, &self.password_file) {
            (None, None) => None,
            (None, Some(_)) => {
                problems.push("mqtt.password-file: needs mqtt.username".into());
                None
            }
            (Some(user), file) => {
                if user.is_empty() {
                    problems.push("mqtt.username: must not be empty".into());
                }
                if let Some(f) = file {
                    under_data(problems, "mqtt.password-file", f);
                }
                Some(Credentials {
                    username: user.clone(),
                    password_file: file.clone(),
                })
            }
        };
        let transport = match (kind, &self.tls) {
            (TransportKind::Plain, None) => {
                if self.password_file.is_some() {
                    problems.push(
                        "mqtt.password-file: a password is never sent over transport \"plain\""
                            .into(),
                    );
                }
                Transport::Plain
            }
            (TransportKind::Plain, Some(_)) => {
                problems.push("mqtt.tls: given, but mqtt.transport is \"plain\"".into());
                Transport::Plain
            }
            (TransportKind::Tls, None) => {
                problems.push(
                    "mqtt.tls: needed (ca-file, cert-file, key-file): the transport is \"tls\" \
                     unless mqtt.host is a loopback address or mqtt.transport = \"plain\""
                        .into(),
                );
                Transport::Plain
            }
            (TransportKind::Tls, Some(t)) => {
                if !t.ca_file.is_absolute() {
                    problems.push("mqtt.tls.ca-file: must be an absolute path".into());
                }
                let client_auth = match (&t.cert_file, &t.key_file) {
                    (Some(cert), Some(key)) => {
                        under_data(problems, "mqtt.tls.cert-file", cert);
                        under_data(problems, "mqtt.tls.key-file", key);
                        Some(ClientAuth {
                            cert: cert.clone(),
                            key: key.clone(),
                        })
                    }
                    (None, None) => {
                        if credentials.is_none() {
                            problems.push(
                                "mqtt.tls.cert-file: a station needs an identity: give \
                                 cert-file and key-file, or mqtt.username"
                                    .into(),
                            );
                        }
                        None
                    }
                    _ => {
                        problems
                            .push("mqtt.tls: give both cert-file and key-file, or neither".into());
                        None
                    }
                };
                let ServerVerifyKind::Enforce = t.server_verify;
                Transport::Tls(TlsConfig {
                    ca: t.ca_file.clone(),
                    client_auth,
                    server_verify: ServerVerify::Enforce,
                })
            }
        };
        let port = self.port.unwrap_or(match kind {
            TransportKind::Plain => PLAIN_PORT,
            TransportKind::Tls => TLS_PORT,
        });
        if port == 0 {
            problems.push("mqtt.port: must not be 0".into());
        }
        if self.keep_alive_secs < 5 || self.keep_alive_secs > 3600 {
            problems.push("mqtt.keep-alive-secs: must be 5..=3600".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            problems.push("mqtt.backoff-initial-ms: must be 1..=backoff-max-ms".into());
        }
        MqttConfig {
            host: self.host.clone(),
            port,
            transport,
            credentials,
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            backoff: Backoff {
                initial: Duration::from_millis(self.backoff_initial_ms),
                max: Duration::from_millis(self.backoff_max_ms.max(1)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MqttConfig, Vec<String>> {
        let raw: RawMqtt = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let c = raw.validate(Path::new("/data"), &mut problems);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn a_loopback_broker_defaults_to_plain_and_a_remote_one_needs_tls_under_data() {
        let c = parse("host = \"127.0.0.1\"\n").expect("valid");
        assert_eq!((c.transport.clone(), c.port), (Transport::Plain, 1883));
        let e = parse("host = \"broker.example\"\n").expect_err("needs tls");
        assert!(e[0].starts_with("mqtt.tls: needed"));
        let c = parse(
            "host = \"broker.example\"\n[tls]\nca-file = \"/etc/fleet/ca.crt\"\n\
             cert-file = \"/data/fleet/identity/station.crt\"\n\
             key-file = \"/data/fleet/identity/station.key\"\n",
        )
        .expect("valid");
        assert_eq!(c.port, 8883);
        let e = parse(
            "host = \"b\"\n[tls]\nca-file = \"/etc/ca\"\ncert-file = \"/etc/x.crt\"\n\
             key-file = \"/data/k\"\n",
        )
        .expect_err("cert outside data");
        assert!(
            e.iter()
                .any(|p| p.starts_with("mqtt.tls.cert-file: must be"))
        );
    }
}
