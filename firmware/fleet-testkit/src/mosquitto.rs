//! A real mosquitto broker on a free loopback port, killed when the guard drops.
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

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
    /// Starts a broker on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("unable to create broker directory")?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        let data = dir.path().join("db");
        std::fs::create_dir_all(&data).context("unable to create persistence directory")?;
        // mosquitto started as root drops to the `mosquitto` user: let it write its database
        // and log in this private directory.
        for d in [dir.path(), data.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))
                .context("unable to open the broker directory to the broker user")?;
        }
        let mut f = std::fs::File::create(&conf).context("unable to write mosquitto.conf")?;
        writeln!(
            f,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\nmax_queued_messages 10000\n\
             log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n",
            data.display(),
            dir.path().join("mosquitto.log").display()
        )
        .context("unable to write mosquitto.conf")?;
        let mut broker = Self {
            child: None,
            port,
            dir,
        };
        broker.spawn()?;
        Ok(broker)
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

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("unable to start mosquitto (is it installed? tests/setup.d/00-apt.sh)")?;
        self.child = Some(child);
        wait_for_port(self.port, self.child.as_mut())
    }
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

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("unable to bind a loopback port")?;
    Ok(l.local_addr()
        .context("unable to read the bound port")?
        .port())
}

fn wait_for_port(port: u16, mut child: Option<&mut Child>) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!("mosquitto exited before listening on {port}: {status}");
        }
        if Instant::now() > deadline {
            bail!("mosquitto did not listen on {port} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
