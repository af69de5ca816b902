//! A real mosquitto broker on a free loopback port, killed when the guard drops: either an
//! open plain-TCP broker ([`Mosquitto::start`]) or the documented fleet broker
//! (`docs/mosquitto/`: TLS, client certificates, ACL) with a test PKI made by the `openssl` CLI
//! ([`Mosquitto::start_tls`], [`TestPki`]), or a plain broker admitting only password users
//! ([`Mosquitto::start_with_passwords`]).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::listen::{start_on_free_port, started_on};

/// A private broker directory with its persistence directory `db` and the `extra`
/// subdirectories. mosquitto started as root drops to the `mosquitto` user: it may write its
/// database and log there (mode 0777).
fn broker_dir(extra: &[&str]) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().context("unable to create broker directory")?;
    let data = dir.path().join("db");
    let mut dirs = vec![dir.path().to_path_buf(), data.clone()];
    dirs.extend(extra.iter().map(|e| dir.path().join(e)));
    for d in &dirs {
        std::fs::create_dir_all(d).with_context(|| format!("unable to create {}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))
            .context("unable to open the broker directory to the broker user")?;
    }
    Ok((dir, data))
}

/// How long a broker may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `mosquitto` with a private config and persistence directory. Retained messages
/// survive [`Mosquitto::restart`] (mosquitto saves its database on SIGTERM).
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts the fleet broker as documented: `docs/mosquitto/mosquitto.conf` and `acl`,
    /// rendered with this PKI's CA and server certificate (for 127.0.0.1), on a free port.
    /// Only the paths and port are filled in (and a log file added), so the test cannot drift
    /// from the documented configuration.
    pub fn start_tls(pki: &TestPki) -> anyhow::Result<Self> {
        let (dir, data) = broker_dir(&["conf"])?;
        let conf_dir = dir.path().join("conf");
        for (from, to) in [
            (pki.ca(), "ca.crt"),
            (pki.dir().join("server.crt"), "server.crt"),
            (pki.dir().join("server.key"), "server.key"),
            (docs_mosquitto().join("acl"), "acl"),
        ] {
            let dest = conf_dir.join(to);
            std::fs::copy(&from, &dest)
                .with_context(|| format!("unable to copy {}", from.display()))?;
            // Readable by the `mosquitto` user a root-started broker drops to (test keys).
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("unable to open {} to the broker", dest.display()))?;
        }
        let template_path = docs_mosquitto().join("mosquitto.conf");
        let template = std::fs::read_to_string(&template_path)
            .with_context(|| format!("unable to read {}", template_path.display()))?;
        let rendered = template
            .replace("@CONF_DIR@", &conf_dir.display().to_string())
            .replace("@DATA_DIR@", &data.display().to_string())
            .replace("@BIND@", "127.0.0.1");
        if rendered.replace("@PORT@", "").contains('@') {
            bail!(
                "{} has a placeholder this harness does not know",
                template_path.display()
            );
        }
        Self::launch(dir, |port| rendered.replace("@PORT@", &port.to_string()))
    }

    /// Starts a plain-TCP broker on loopback that admits only these users (name, password),
    /// from a `mosquitto_passwd` file: for clients that log in with a password.
    pub fn start_with_passwords(users: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (dir, data) = broker_dir(&[])?;
        let passwords = dir.path().join("passwords");
        std::fs::write(&passwords, "").context("unable to create the password file")?;
        for (user, password) in users {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwords)
                .arg(user)
                .arg(password)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .context("unable to run mosquitto_passwd")?;
            if !status.success() {
                bail!("unable to add {user} to the password file: {status}");
            }
        }
        std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644))
            .context("unable to open the password file to the broker user")?;
        Self::launch(dir, |port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 persistence true\npersistence_location {}/",
                passwords.display(),
                data.display(),
            )
        })
    }

    /// Starts an open broker on a free port of 127.0.0.1 and waits until it listens there.
    pub fn start() -> anyhow::Result<Self> {
        let (dir, data) = broker_dir(&[])?;
        Self::launch(dir, |port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nautosave_interval 1\nmax_queued_messages 10000",
                data.display(),
            )
        })
    }

    /// Starts the broker on a free port: writes `<dir>/mosquitto.conf` (`conf(port)`, then
    /// logging to `<dir>/mosquitto.log`) and runs mosquitto on it, again on another port if
    /// that one was taken before the broker bound it.
    fn launch(dir: tempfile::TempDir, conf: impl Fn(u16) -> String) -> anyhow::Result<Self> {
        let log = dir.path().join("mosquitto.log");
        let conf_path = dir.path().join("mosquitto.conf");
        let (child, port) = start_on_free_port(
            "mosquitto",
            START_TIMEOUT,
            |port| {
                let conf = format!(
                    "{}\nlog_dest file {}\nlog_type error\nlog_type warning\n\
                     log_type notice\n",
                    conf(port),
                    log.display()
                );
                std::fs::write(&conf_path, conf).context("unable to write mosquitto.conf")?;
                spawn_mosquitto(&conf_path)
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )?;
        Ok(Self {
            child: Some(child),
            port,
            dir,
        })
    }

    /// The loopback port the broker listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`.
    #[must_use]
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The broker's log file.
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Stops the broker gracefully (SIGTERM: it saves retained messages) and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .context("unable to run kill")?;
            if !status.success() {
                bail!("unable to signal mosquitto {}", child.id());
            }
            child.wait().context("unable to wait for mosquitto")?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port with the same database.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    /// Stops and starts the broker on the same port, keeping retained messages.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Starts the broker again on its own port: fails if something else took the port.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = spawn_mosquitto(&self.dir.path().join("mosquitto.conf"))?;
        let log = self.log_path();
        self.child = Some(started_on(
            "mosquitto",
            child,
            self.port,
            START_TIMEOUT,
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )?);
        Ok(())
    }
}

fn spawn_mosquitto(conf: &Path) -> anyhow::Result<Child> {
    Command::new(mosquitto_bin())
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("unable to start mosquitto (is it installed? tests/setup.d/00-apt.sh)")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing to report from a guard; the process is gone either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The documented broker configuration (`docs/mosquitto/` of this repository).
fn docs_mosquitto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/mosquitto")
}

/// A throw-away PKI made with the `openssl` CLI (P-256 keys, valid two days): the broker CA,
/// a server certificate for 127.0.0.1 (IP subjectAltName only), another CA nobody trusts, and
/// client certificates issued on demand with the identity as Common Name (which the
/// documented broker uses as the user name in its ACL).
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the two CAs and the server certificate.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("unable to create the PKI directory")?;
        let pki = Self { dir };
        pki.make_ca("ca", "fleet test broker CA")?;
        pki.make_ca("other-ca", "someone else's CA")?;
        pki.issue(
            "ca",
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )?;
        Ok(pki)
    }

    /// The directory holding every file.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA the broker's and the clients' certificates chain to.
    #[must_use]
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A CA that signed nothing the broker knows.
    #[must_use]
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// A client certificate and key for `identity` (the CN), signed by [`TestPki::ca`]. Files
    /// are `<identity>.crt` and `<identity>.key`; issuing the same identity again replaces them.
    pub fn client(&self, identity: &str) -> anyhow::Result<fleet_mqtt::ClientAuth> {
        self.issue("ca", identity, identity, "extendedKeyUsage=clientAuth\n")
    }

    /// A client certificate for `identity` signed by [`TestPki::other_ca`].
    pub fn client_of_other_ca(&self, identity: &str) -> anyhow::Result<fleet_mqtt::ClientAuth> {
        self.issue(
            "other-ca",
            &format!("{identity}.other"),
            identity,
            "extendedKeyUsage=clientAuth\n",
        )
    }

    /// TLS settings for `identity` against a broker of this PKI (issues the certificate).
    pub fn tls_config(&self, identity: &str) -> anyhow::Result<fleet_mqtt::TlsConfig> {
        Ok(fleet_mqtt::TlsConfig {
            ca: self.ca(),
            client_auth: Some(self.client(identity)?),
            server_verify: fleet_mqtt::ServerVerify::Enforce,
        })
    }

    fn make_ca(&self, name: &str, subject: &str) -> anyhow::Result<()> {
        let d = self.dir.path();
        openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "ec".as_ref(),
            "-pkeyopt".as_ref(),
            "ec_paramgen_curve:prime256v1".as_ref(),
            "-nodes".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-subj".as_ref(),
            format!("/CN={subject}").as_ref(),
            "-keyout".as_ref(),
            d.join(format!("{name}.key")).as_os_str(),
            "-out".as_ref(),
            d.join(format!("{name}.crt")).as_os_str(),
        ])
    }

    fn issue(
        &self,
        ca: &str,
        name: &str,
        cn: &str,
        extensions: &str,
    ) -> anyhow::Result<fleet_mqtt::ClientAuth> {
        let d = self.dir.path();
        let key = d.join(format!("{name}.key"));
        let csr = d.join(format!("{name}.csr"));
        let cert = d.join(format!("{name}.crt"));
        let ext = d.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions).context("unable to write the extensions file")?;
        openssl(&[
            "req".as_ref(),
            "-newkey".as_ref(),
            "ec".as_ref(),
            "-pkeyopt".as_ref(),
            "ec_paramgen_curve:prime256v1".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            format!("/CN={cn}").as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            csr.as_os_str(),
        ])?;
        // A random serial instead of a serial file: tests may issue in parallel.
        let serial = format!("0x{:016x}{:016x}", rand_u64(), rand_u64());
        openssl(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            d.join(format!("{ca}.crt")).as_os_str(),
            "-CAkey".as_ref(),
            d.join(format!("{ca}.key")).as_os_str(),
            "-set_serial".as_ref(),
            serial.as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ])?;
        Ok(fleet_mqtt::ClientAuth { cert, key })
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

fn openssl(args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("unable to run openssl (tests/setup.d/00-apt.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "unable to run openssl {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}
