//! `fleetctl pki`: the fleet's X.509 certificates (docs/security.md, "Certificates").
//!
//! One fleet CA issues every certificate the broker sees, as `docs/mosquitto/mosquitto.conf`
//! expects (`cafile` checks clients, `certfile` is the broker's own):
//!
//! - the **broker** certificate: every host name or IP address stations and operators use in its
//!   subjectAltName (the name checked, never the Common Name), extended key usage `serverAuth`;
//! - **station** certificates (`fleetctl provision`): Common Name = the device id (the broker's
//!   ACL user), extended key usage `clientAuth`, no subjectAltName;
//! - **operator** certificates: Common Name `operator` (the ACL's operator user), `clientAuth`.
//!
//! All are X.509 version 3 with ECDSA P-256 keys (rcgen with ring). A station id may never be
//! `operator`: the broker would give that station the operators' rights.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::keys::write_new_file;

/// The Common Name the broker's ACL gives the operators' rights (docs/mosquitto/acl).
pub const OPERATOR_CN: &str = "operator";

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("unable to make the certificate {what}: {reason}")]
    Make { what: String, reason: String },
    #[error("unable to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to use {path} as the fleet CA: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error(
        "unable to issue a station certificate for {0:?}: that name is the operators' identity on the broker"
    )]
    ReservedName(String),
    #[error(transparent)]
    Write(#[from] crate::keys::KeyError),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The fleet CA, loaded to issue certificates.
#[derive(Debug)]
pub struct FleetCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn make(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Make {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // An hour of slack for stations whose clock lags the operator's.
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f; // positive, as RFC 5280 wants
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "fleet");
    dn.push(DnType::CommonName, cn);
    dn
}

impl FleetCa {
    /// Makes a new CA (valid `days`), able to issue end-entity certificates only.
    pub fn generate(name: &str, days: u32) -> Result<(Self, Issued), PkiError> {
        let key = KeyPair::generate().map_err(make("fleet CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, days);
        let cert = params.self_signed(&key).map_err(make("fleet CA"))?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok((
            Self {
                cert_pem: issued.cert_pem.clone(),
                issuer: Issuer::new(params, key),
            },
            issued,
        ))
    }

    /// Loads the CA from its certificate and key files (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| PkiError::Read {
                path: p.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?).map_err(|e| PkiError::BadCa {
            path: key.to_owned(),
            reason: format!("not a private key ({e})"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::BadCa {
            path: cert.to_owned(),
            reason: format!("not a CA certificate for that key ({e})"),
        })?;
        Ok(Self { cert_pem, issuer })
    }

    /// The CA certificate (PEM): the `ca-file` of stations and operators, the broker's `cafile`.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issue(
        &self,
        what: &str,
        cn: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        days: u32,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(make(what))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer).map_err(make(what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The broker's certificate: each of `names` (DNS names or IP addresses) in its
    /// subjectAltName; the first is also its Common Name.
    pub fn issue_broker(&self, names: &[String], days: u32) -> Result<Issued, PkiError> {
        let mut sans = Vec::new();
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().map_err(make("broker"))?),
            });
        }
        let cn = names.first().map_or("broker", String::as_str);
        self.issue(
            "broker",
            cn,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            days,
        )
    }

    /// A station's client certificate: Common Name = its device id.
    pub fn issue_station(
        &self,
        device: &fleet_core::ids::DeviceId,
        days: u32,
    ) -> Result<Issued, PkiError> {
        if device.as_str() == OPERATOR_CN {
            return Err(PkiError::ReservedName(device.to_string()));
        }
        self.issue(
            device.as_str(),
            device.as_str(),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            days,
        )
    }

    /// An operator's client certificate (Common Name `operator`).
    pub fn issue_operator(&self, days: u32) -> Result<Issued, PkiError> {
        self.issue(
            "operator",
            OPERATOR_CN,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            days,
        )
    }
}

/// What `fleetctl pki init` wrote.
#[derive(Debug)]
pub struct PkiFiles {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// `fleetctl pki init`: a fleet CA, the broker's certificate and an operator certificate in `dir`
/// under the names `docs/mosquitto/mosquitto.conf` uses (`ca.crt`, `server.crt`, `server.key`)
/// plus `ca.key` and `operator.crt`/`operator.key`. Keys are mode 0600; existing files are
/// never overwritten (nothing is written when one exists).
pub fn init(dir: &Path, broker_names: &[String], days: u32) -> Result<PkiFiles, PkiError> {
    let names = [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "operator.crt",
        "operator.key",
    ];
    for n in names {
        if dir.join(n).exists() {
            return Err(PkiError::Write(crate::keys::KeyError::Exists {
                path: dir.join(n),
            }));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| {
        PkiError::Write(crate::keys::KeyError::Write {
            path: dir.to_owned(),
            source,
        })
    })?;
    let (ca, ca_files) = FleetCa::generate("fleet CA", days)?;
    let broker = ca.issue_broker(broker_names, days)?;
    let operator = ca.issue_operator(days)?;
    let contents = [
        (&ca_files.cert_pem, 0o644),
        (&ca_files.key_pem, 0o600),
        (&broker.cert_pem, 0o644),
        (&broker.key_pem, 0o600),
        (&operator.cert_pem, 0o644),
        (&operator.key_pem, 0o600),
    ];
    let mut files = Vec::new();
    for (name, (text, mode)) in names.iter().zip(contents) {
        let path = dir.join(name);
        write_new_file(&path, text.as_bytes(), mode)?;
        files.push(path);
    }
    Ok(PkiFiles {
        dir: dir.to_owned(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_station_named_operator_gets_no_certificate() {
        let (ca, _) = FleetCa::generate("t", 1).expect("ca");
        let id = fleet_core::ids::DeviceId::new("operator").expect("valid id");
        assert!(matches!(
            ca.issue_station(&id, 1),
            Err(PkiError::ReservedName(_))
        ));
    }

    #[test]
    fn init_writes_nothing_over_an_existing_pki() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("server.key"), "keep").expect("write");
        assert!(init(dir.path(), &["127.0.0.1".into()], 1).is_err());
        assert!(!dir.path().join("ca.crt").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("server.key")).expect("read"),
            "keep"
        );
    }
}
