//! How a session reaches its broker: plain TCP (loopback tests) or TLS with a client
//! certificate, and the optional user name and password file.
//!
//! Credentials are files (on a station, under `/data`), read again at every connection attempt
//! so that a renewed certificate or rotated password is used without a restart. Every failure
//! names the file it is about. The server is always verified: its certificate must chain to the
//! configured CA and name the configured host. There is no switch to turn that off: a station
//! that cannot verify its broker must not take orders from it (make a test CA instead).
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Transport {
    /// Plain TCP: anyone on the path reads and forges everything. Only for loopback tests.
    #[default]
    Plain,
    /// TLS (1.2 or 1.3) with the server verified, and a client certificate when given.
    Tls(TlsConfig),
}

impl Transport {
    /// `"plain"` or `"tls"`, for logs.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::Tls(_) => "tls",
        }
    }
}

/// How the broker's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerVerify {
    /// The certificate chains to the configured CA and names the configured host (DNS name or
    /// IP address in its subjectAltName). The only mode: there is deliberately no way to skip.
    #[default]
    Enforce,
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The certificate (chain), leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// TLS settings: file paths, read at every connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to. Only these
    /// are trusted, never the system's store.
    pub ca: PathBuf,
    /// The client's own identity; `None` when the broker authenticates by password.
    pub client_auth: Option<ClientAuth>,
    pub server_verify: ServerVerify,
}

/// A user name and a file holding the password (read at every connection attempt; one
/// trailing newline is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password_file: Option<PathBuf>,
}

/// A credential file that cannot be used. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("unable to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to read {path}: larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("unable to parse {what} in {path}: {detail}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("unable to use {path} as CA: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "unable to use client certificate {cert} with key {key}: the key does not belong to the certificate"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("unable to use client certificate {cert} with key {key}: {source}")]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("unable to set up TLS: {0}")]
    Setup(#[source] rustls::Error),
    #[error("unable to read a password from {path}: the file is empty")]
    EmptyPassword { path: PathBuf },
}

impl CredentialError {
    /// A file may appear or be fixed later (provisioning, renewal): a session retries with
    /// backoff. Callers that run once (a CLI, `--check-config`) report it instead.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, CredentialError::Read { .. })
    }
}

impl TlsConfig {
    /// Reads the files and builds the rustls client configuration (ring provider, safe default
    /// protocol versions, only the configured CA as root). Files larger than `max_file_bytes`
    /// are refused.
    pub fn client_config(&self, max_file_bytes: u64) -> Result<Arc<ClientConfig>, CredentialError> {
        let ServerVerify::Enforce = self.server_verify;
        let ca_pem = read_limited(&self.ca, max_file_bytes)?;
        let ca_certs = certificates(&self.ca, &ca_pem, "CA certificate")?;
        let mut roots = RootCertStore::empty();
        for cert in ca_certs {
            roots.add(cert).map_err(|source| CredentialError::Ca {
                path: self.ca.clone(),
                source,
            })?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(CredentialError::Setup)?
                .with_root_certificates(roots);
        let config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => {
                let cert_pem = read_limited(&auth.cert, max_file_bytes)?;
                let chain = certificates(&auth.cert, &cert_pem, "client certificate")?;
                let key_pem = read_limited(&auth.key, max_file_bytes)?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CredentialError::Pem {
                        path: auth.key.clone(),
                        what: "private key",
                        detail: pem_detail(&e),
                    })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| match source {
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                            CredentialError::KeyMismatch {
                                cert: auth.cert.clone(),
                                key: auth.key.clone(),
                            }
                        }
                        source => CredentialError::ClientCert {
                            cert: auth.cert.clone(),
                            key: auth.key.clone(),
                            source,
                        },
                    })?
            }
        };
        Ok(Arc::new(config))
    }

    /// Every file this configuration reads.
    #[must_use]
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.ca.as_path()];
        if let Some(auth) = &self.client_auth {
            files.push(&auth.cert);
            files.push(&auth.key);
        }
        files
    }
}

impl Credentials {
    /// The password from the file (one trailing newline dropped), or `None` without a file.
    pub fn password(&self, max_file_bytes: u64) -> Result<Option<String>, CredentialError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let bytes = read_limited(path, max_file_bytes)?;
        let text = String::from_utf8(bytes).map_err(|_| CredentialError::Pem {
            path: path.clone(),
            what: "password",
            detail: "not UTF-8".into(),
        })?;
        let password = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(CredentialError::EmptyPassword { path: path.clone() });
        }
        Ok(Some(password.to_owned()))
    }
}

fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, CredentialError> {
    let read = |source| CredentialError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > max {
        return Err(CredentialError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

fn certificates(
    path: &Path,
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let bad = |detail: String| CredentialError::Pem {
        path: path.to_owned(),
        what,
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_detail(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn pem_detail(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM section of that kind".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn tls(ca: PathBuf) -> TlsConfig {
        TlsConfig {
            ca,
            client_auth: None,
            server_verify: ServerVerify::Enforce,
        }
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = tls(dir.path().join("nope.crt"))
            .client_config(64 * 1024)
            .expect_err("missing");
        assert!(err.to_string().contains("nope.crt"), "{err}");
        assert!(err.is_retryable());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "ca.crt", "not a certificate\n");
        let err = tls(p).client_config(64 * 1024).expect_err("not PEM");
        let msg = err.to_string();
        assert!(
            msg.contains("ca.crt") && msg.contains("CA certificate"),
            "{msg}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn an_oversized_file_is_refused_before_parsing() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "ca.crt", &"x".repeat(100));
        assert!(matches!(
            tls(p).client_config(99),
            Err(CredentialError::TooLarge { max: 99, .. })
        ));
    }

    #[test]
    fn a_password_file_loses_one_trailing_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = |text: &str| Credentials {
            username: "u".into(),
            password_file: Some(write(dir.path(), "pw", text)),
        };
        assert_eq!(
            creds("s3cret\n").password(100).expect("pw").as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            creds("a b\r\n").password(100).expect("pw").as_deref(),
            Some("a b")
        );
        assert!(matches!(
            creds("\n").password(100),
            Err(CredentialError::EmptyPassword { .. })
        ));
        let none = Credentials {
            username: "u".into(),
            password_file: None,
        };
        assert_eq!(none.password(100).expect("none"), None);
    }
}
