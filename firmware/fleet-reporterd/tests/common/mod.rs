//! A station for the reporter's integration tests: the documented broker (TLS, the ACL), a
//! fake /proc, /sys and /run tree, the station's updated.toml and reporterd.toml, and the
//! reporter binary, killed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_mqtt::{Session, SessionConfig, SessionEvent, Transport};
use fleet_testkit::mosquitto::{Mosquitto, TestPki};

pub const STATION: &str = "stn-0042";

pub fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

pub fn recorder_status(state: &str) -> String {
    format!(
        r#"{{"version":1,"station":"stn-0042","healthy":true,"repaired-at-start":0,
        "written-monotonic-ms":100000,"written-unix-ms":null,"devices":[{{"id":"mic0",
        "state":"{state}","pcm":"hw:CARD=UltraMic,DEV=0","format":"384000/1/16",
        "segments-written":12,"segments-repaired":0,"bytes-written":1,"frames-captured":1,
        "xruns":0,"stalls":0,"device-losses":0,"discontinuities":0,"gaps":1,"gap-ms-total":0,
        "write-errors":0,"last-segment":"a.wav","last-segment-unix-ms":1790000000000,
        "last-progress-monotonic-ms":99000,"last-audio":{{"rms-dbfs":-200.0,
        "peak-dbfs":-200.0,"clipped-fraction":0.0,"dc-offset":0.0,"flat":true}}}}]}}"#
    )
}

pub struct Station {
    pub pki: TestPki,
    pub broker: Mosquitto,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Station {
    /// Everything but the running reporter. `trusted_keys` go into updated.toml; `extra` is
    /// appended to reporterd.toml.
    pub fn new(trusted_keys: &[String], extra: &str) -> Self {
        let pki = TestPki::generate().expect("pki");
        let broker = Mosquitto::start_tls(&pki).expect("broker");
        let station = pki.client(STATION).expect("station certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        put(&root, "proc/uptime", "1234.5 100.0\n");
        put(&root, "proc/loadavg", "0.10 0.20 0.30 1/2 3\n");
        put(
            &root,
            "proc/meminfo",
            "MemTotal: 1000 kB\nMemAvailable: 500 kB\n",
        );
        put(
            &root,
            "proc/sys/kernel/random/boot_id",
            "6c1a0e6f-d2ad-4b0c-9d1f-6d0f1c0e2a31\n",
        );
        put(&root, "proc/cmdline", "rauc.slot=A\n");
        put(&root, "sys/class/thermal/thermal_zone0/temp", "51000\n");
        put(&root, "etc/fleet-version", "1.3.2\n");
        std::fs::create_dir_all(root.join("run/systemd/timesync")).expect("timesync dir");
        std::fs::write(dir.path().join("status.json"), recorder_status("recording"))
            .expect("status");
        let keys = trusted_keys
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let station_cfg = dir.path().join("updated.toml");
        std::fs::write(
            &station_cfg,
            format!(
                "device-id = \"{STATION}\"\ndata-dir = \"{data}\"\ncompatible = \"fleet-rpi5\"\n\
                 trusted-keys = [{keys}]\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 transport = \"tls\"\n[mqtt.tls]\nca-file = \"{ca}\"\ncert-file = \"{cert}\"\n\
                 key-file = \"{key}\"\n",
                data = pki.dir().display(),
                port = broker.port(),
                ca = pki.ca().display(),
                cert = station.cert.display(),
                key = station.key.display(),
            ),
        )
        .expect("station config");
        let config = dir.path().join("reporterd.toml");
        std::fs::write(
            &config,
            format!(
                "station-config = \"{}\"\nrecorder-status = \"{}\"\nversion-file = \"{}\"\n\
                 root = \"{}\"\nstate-dir = \"{}\"\nheartbeat-secs = 600\nsample-secs = 1\n\
                 min-interval-secs = 1\n{extra}",
                station_cfg.display(),
                dir.path().join("status.json").display(),
                root.join("etc/fleet-version").display(),
                root.display(),
                dir.path().join("state").display(),
            ),
        )
        .expect("config");
        Self {
            pki,
            broker,
            dir,
            config,
            child: None,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn status_file(&self) -> PathBuf {
        self.dir.path().join("status.json")
    }

    /// Starts the reporter binary.
    pub fn start(&mut self) {
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_fleet-reporterd"))
                .arg("--config")
                .arg(&self.config)
                .env("RUST_LOG", "debug")
                .env_remove("NOTIFY_SOCKET")
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(self.dir.path().join("reporter.log")).expect("log"),
                ))
                .spawn()
                .expect("spawn fleet-reporterd"),
        );
    }

    /// Kills the reporter and starts it again.
    pub fn restart(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.start();
    }

    /// An operator session on the broker.
    pub fn operator(&self, name: &str) -> (Session, tokio::sync::mpsc::Receiver<SessionEvent>) {
        let mut op = SessionConfig::new(name, self.broker.host(), self.broker.port());
        op.transport = Transport::Tls(self.pki.tls_config("operator").expect("operator"));
        Session::start(op)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("reporter.log")).unwrap_or_default()
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The next message on `topic` within 20 s.
pub async fn next_on(
    events: &mut tokio::sync::mpsc::Receiver<SessionEvent>,
    topic: &str,
) -> fleet_mqtt::Bytes {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap_or_else(|_| panic!("a message on {topic} within 20 s"))
            .expect("session open");
        if let SessionEvent::Message(m) = ev
            && m.topic == topic
            && !m.payload.is_empty()
        {
            return m.payload;
        }
    }
}
