//! `fleetctl demo`: the whole update path on one machine, with nothing installed.
//!
//! It starts an MQTT broker inside this process (rumqttd on a free loopback port), a handful of
//! simulated stations (the real `fleet-updated` daemon on `fleet-sim` ports, in-process, each
//! under its own temp root), makes a signing key and a small simulated bundle, pushes it to the
//! stations' group exactly as `fleetctl push` does, and watches. One station is told to fail
//! its health checks: it boots the new slot on trial, fails, retries, marks the slot bad and
//! falls back to its previous slot, reporting each step. Everything lives in one temp
//! directory that is removed at the end.
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use fleet_core::ids::{DeviceId, Version};
use fleet_core::update::PhaseName;
use fleet_proto::Limits;
use fleet_proto::payload::decode_state;
use fleet_proto::topic::{self, Topic};
use fleet_sim::Behaviour;
use fleet_updated::sim::{SimRunError, SimSummary, run_sim_station};
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connection::{BrokerAddr, Connection, ConnectionError};
use crate::embedded::{EmbeddedBroker, EmbeddedError};
use crate::publish::{PublishError, PushProgress, PushRequest};
use crate::watch::{StationEnd, Ui, WatchOptions, WatchSummary};

/// The `compatible` of the simulated stations.
pub const COMPATIBLE: &str = "fleet-sim";
/// The group every demo station is in.
pub const GROUP: &str = "demo";

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stations to simulate (2..=16); the last one fails its health checks.
    pub stations: usize,
    /// Payload bytes in the demo bundle.
    pub bundle_bytes: usize,
    /// Chunk size of the push.
    pub chunk_size: u32,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            stations: 4,
            bundle_bytes: 1536 * 1024,
            chunk_size: 64 * 1024,
            timeout: Duration::from_secs(45),
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("unable to run the demo with {0} stations: use 2..=16")]
    StationCount(usize),
    #[error("unable to create the demo directory")]
    TempDir(#[source] std::io::Error),
    #[error("unable to write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] EmbeddedError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Sim(#[from] fleet_sim::SimError),
    #[error("unable to configure station {id}: {detail}")]
    StationConfig { id: String, detail: String },
    #[error(transparent)]
    Push(#[from] PublishError),
    #[error("unable to start the demo: stations {0:?} did not come up within {1:?}")]
    StationsNotUp(Vec<String>, Duration),
    #[error("station {id} stopped with an error: {detail}")]
    Station { id: String, detail: String },
    #[error("interrupted")]
    Interrupted,
}

/// How the demo ended.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub version: Version,
    /// The station that was told to fail its health checks.
    pub sick: DeviceId,
    pub watch: WatchSummary,
    pub elapsed: Duration,
}

impl DemoOutcome {
    /// True when every healthy station updated and the sick one rolled back after failing its
    /// health checks: what the demo is meant to show.
    #[must_use]
    pub fn is_expected(&self, stations: usize) -> bool {
        let w = &self.watch;
        let updated = w.updated();
        let rolled = w.rolled_back();
        !w.timed_out
            && !w.interrupted
            && w.unfinished.is_empty()
            && w.failed().is_empty()
            && updated.len() == stations - 1
            && !updated.contains(&&self.sick)
            && rolled.len() == 1
            && rolled[0].0 == &self.sick
            && rolled[0].1.starts_with("health check failed")
    }

    /// `demo: 3 updated to 1.1.0, 1 rolled back (health check failed: ...), 0 failed`.
    #[must_use]
    pub fn summary_line(&self) -> String {
        let w = &self.watch;
        let rolled = w.rolled_back();
        let rolled_text = if rolled.is_empty() {
            "0 rolled back".to_owned()
        } else {
            let causes: BTreeSet<&str> = rolled.iter().map(|(_, c)| *c).collect();
            format!(
                "{} rolled back ({})",
                rolled.len(),
                causes.into_iter().collect::<Vec<_>>().join("; ")
            )
        };
        let failed = w.failed().len() + w.unfinished.len();
        let mut line = format!(
            "demo: {} updated to {}, {rolled_text}, {failed} failed",
            w.updated().len(),
            self.version
        );
        if w.timed_out {
            line.push_str(" (timed out)");
        }
        if w.interrupted {
            line.push_str(" (interrupted)");
        }
        line
    }
}

/// A simulated station running in this process: the real `fleet-updated` daemon on
/// `fleet-sim` ports, with in-process reboots, under `dir`. Used by the demo and by tests.
#[derive(Debug)]
pub struct SimStation {
    pub id: DeviceId,
    stop: tokio_watch::Sender<bool>,
    handle: Option<JoinHandle<Result<SimSummary, SimRunError>>>,
}

impl Drop for SimStation {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// How to set up a [`SimStation`].
#[derive(Debug, Clone)]
pub struct SimStationSpec<'a> {
    pub id: DeviceId,
    pub groups: Vec<String>,
    /// Its directory (config, data, simulated slots); created if missing.
    pub dir: &'a Path,
    pub broker: &'a BrokerAddr,
    /// The trusted offer key, 64 hex digits.
    pub key_hex: &'a str,
    /// Make every health check of the station fail (its new slots never commit).
    pub fail_health: bool,
}

impl SimStation {
    /// Writes the station's config and starts it.
    pub fn spawn(spec: &SimStationSpec<'_>) -> Result<Self, DemoError> {
        let dir = spec.dir;
        std::fs::create_dir_all(dir).map_err(|source| DemoError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let cfg_path = dir.join("updated.toml");
        write(&cfg_path, station_config(spec).as_bytes())?;
        if spec.fail_health {
            write(
                &dir.join("fail-health"),
                b"this station's new slots fail their health checks\n",
            )?;
        }
        let cfg = fleet_updated::Config::load(&cfg_path).map_err(|e| DemoError::StationConfig {
            id: spec.id.to_string(),
            detail: e.to_string(),
        })?;
        let (stop, stop_rx) = tokio_watch::channel(false);
        let handle = tokio::spawn(run_sim_station(cfg, stop_rx));
        Ok(Self {
            id: spec.id.clone(),
            stop,
            handle: Some(handle),
        })
    }

    /// Asks the daemon to stop (as SIGTERM would) without waiting.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Asks the daemon to stop (as SIGTERM would) and waits up to 10 s for it.
    pub async fn stop(mut self) -> Result<SimSummary, DemoError> {
        let _ = self.stop.send(true);
        let err = |detail: String| DemoError::Station {
            id: self.id.to_string(),
            detail,
        };
        let Some(handle) = self.handle.take() else {
            return Err(err("already stopped".into()));
        };
        match tokio::time::timeout(Duration::from_secs(10), handle).await {
            Ok(Ok(Ok(summary))) => Ok(summary),
            Ok(Ok(Err(e))) => Err(err(e.to_string())),
            Ok(Err(e)) => Err(err(e.to_string())),
            Err(_) => Err(err("did not stop within 10 s".into())),
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(|source| DemoError::Write {
        path: path.to_owned(),
        source,
    })
}

fn station_config(spec: &SimStationSpec<'_>) -> String {
    let dir = spec.dir;
    let groups = spec
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"device-id = "{id}"
groups = [{groups}]
compatible = "{COMPATIBLE}"
data-dir = "{data}"
trusted-keys = ["{key_hex}"]
# A simulated station has no timesyncd to ask: the documented override for simulations.
wall-clock = "trusted"

[mqtt]
host = "{host}"
port = {port}
keep-alive-secs = 10
backoff-initial-ms = 50
backoff-max-ms = 1000

[update]
download-space-bytes = 67108864
chunk-window = 8

[sim]
root = "{root}"
factory-version = "1.0.0"
fail-health-file = "{fail}"
"#,
        id = spec.id,
        key_hex = spec.key_hex,
        data = dir.join("data").display(),
        host = spec.broker.host,
        port = spec.broker.port,
        root = dir.join("sim").display(),
        fail = dir.join("fail-health").display(),
    )
}

/// Waits until every station in `ids` has published an idle state.
async fn wait_idle(addr: &BrokerAddr, ids: &[DeviceId], within: Duration) -> Result<(), DemoError> {
    let t = Duration::from_secs(10);
    let mut conn = Connection::open(addr, "fleetctl-demo", t).await?;
    conn.subscribe(&[topic::filter::ALL_STATES.to_owned()], t)
        .await?;
    let deadline = Instant::now() + within;
    let mut idle: BTreeSet<DeviceId> = BTreeSet::new();
    while idle.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let missing = ids
                .iter()
                .filter(|d| !idle.contains(*d))
                .map(ToString::to_string)
                .collect();
            return Err(DemoError::StationsNotUp(missing, within));
        }
        if let Some(m) = conn
            .next_message(left.min(Duration::from_millis(250)))
            .await?
            && let Ok(Topic::DeviceState(id)) = Topic::parse(&m.topic)
            && let Ok(s) = decode_state(&m.payload, &Limits::DEFAULT)
            && s.phase == PhaseName::Idle
        {
            idle.insert(id);
        }
    }
    let _ = conn.close(t).await;
    Ok(())
}

/// Runs the demo, printing through `ui`, until the update ended everywhere, the timeout, or
/// `stop` resolves (Ctrl-C).
pub async fn run(
    opts: &DemoOptions,
    ui: &mut Ui,
    stop: impl Future<Output = ()>,
) -> Result<DemoOutcome, DemoError> {
    if !(2..=16).contains(&opts.stations) {
        return Err(DemoError::StationCount(opts.stations));
    }
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("fleetctl-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let broker = EmbeddedBroker::start()?;
    let addr = broker.addr().clone();
    ui.println(&format!(
        "demo: embedded MQTT broker on {addr}, work directory {}",
        tmp.path().display()
    ));

    let keys = crate::keys::generate(
        &tmp.path().join("demo-offer.key.pem"),
        &tmp.path().join("demo-offer.pub"),
    )?;
    let key = crate::keys::load_signing_key(&keys.private_path)?;
    let key_hex = hex::encode(key.verifying_key().as_bytes());
    ui.println(&format!("demo: offer-signing key {}", keys.key_id));

    // Stations.
    let ids: Vec<DeviceId> = (1..=opts.stations)
        .map(|i| DeviceId::new(format!("stn-{i:02}")).expect("stn-NN is a valid id"))
        .collect();
    let sick = ids.last().expect("at least two stations").clone();
    let mut stations = Vec::new();
    for id in &ids {
        let dir = tmp.path().join(id.as_str());
        stations.push(SimStation::spawn(&SimStationSpec {
            id: id.clone(),
            groups: vec![GROUP.to_owned()],
            dir: &dir,
            broker: &addr,
            key_hex: &key_hex,
            fail_health: *id == sick,
        })?);
    }
    let result = drive(opts, ui, stop, &addr, &key, &ids, &sick, tmp.path()).await;

    // Stop the stations (as SIGTERM would) before their directories go.
    for s in &stations {
        s.request_stop();
    }
    let mut station_error = None;
    for s in stations {
        if let Err(e) = s.stop().await {
            station_error.get_or_insert(e);
        }
    }
    drop(tmp);
    let (version, watch) = result?;
    if let Some(e) = station_error {
        return Err(e);
    }
    Ok(DemoOutcome {
        version,
        sick,
        watch,
        elapsed: started.elapsed(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    opts: &DemoOptions,
    ui: &mut Ui,
    stop: impl Future<Output = ()>,
    addr: &BrokerAddr,
    key: &ed25519_dalek::SigningKey,
    ids: &[DeviceId],
    sick: &DeviceId,
    dir: &Path,
) -> Result<(Version, WatchSummary), DemoError> {
    tokio::pin!(stop);
    let up = tokio::select! {
        r = wait_idle(addr, ids, Duration::from_secs(20)) => r,
        () = &mut stop => Err(DemoError::Interrupted),
    };
    up?;
    ui.println(&format!(
        "demo: {} stations up on 1.0.0 in group {GROUP}; {sick} is set to fail its health checks",
        ids.len()
    ));

    // A small simulated bundle, made on the fly.
    let version = Version::new(1, 1, 0);
    let payload: Vec<u8> = {
        use rand::RngCore as _;
        let mut p = vec![0u8; opts.bundle_bytes];
        rand::thread_rng().fill_bytes(&mut p);
        p
    };
    let bundle = dir.join(format!("fleet-demo-{version}.bundle"));
    fleet_sim::bundle::write(&bundle, &version, COMPATIBLE, Behaviour::Normal, &payload)?;
    let mut req = PushRequest::new(
        bundle,
        format!("group:{GROUP}").parse().expect("a valid target"),
        version.clone(),
        COMPATIBLE.to_owned(),
    );
    req.chunk_size = opts.chunk_size;
    // Subscribe before the offer goes out, so every station's first step is seen.
    let watcher = crate::watch::Watcher::subscribe(addr).await?;
    let report = crate::publish::push(addr, key, &req, &mut |p| {
        if let PushProgress::Described {
            bundle_id,
            size,
            chunks,
        } = p
        {
            ui.println(&format!(
                "demo: pushing bundle {bundle_id} ({size} bytes, {chunks} chunks) to group:{GROUP}"
            ));
        }
    })
    .await?;
    ui.println(&format!(
        "demo: offer {} published on {} (sequence {})",
        report.update_id, report.offer_topic, report.sequence
    ));

    let watch_opts = WatchOptions {
        update_id: report.update_id,
        devices: Some(ids.iter().cloned().collect()),
        settle: Duration::ZERO,
        timeout: opts.timeout.saturating_sub(Duration::from_secs(5)),
        limits: Limits::DEFAULT,
    };
    let summary = watcher.run(&watch_opts, ui, &mut stop).await?;
    if summary.interrupted {
        return Err(DemoError::Interrupted);
    }
    // Each station's health report, as fleet-reporterd publishes it: the first station's
    // microphone records digital silence (a dead or unplugged microphone).
    let rows = crate::status::read(addr, Duration::from_secs(600), &Limits::DEFAULT).await?;
    let silent = ids.first().expect("at least two stations");
    {
        let mut conn = crate::connection::Connection::open(
            addr,
            "fleetctl-demo-health",
            Duration::from_secs(10),
        )
        .await?;
        for r in &rows {
            let Some(state) = &r.state else { continue };
            let h = crate::health::simulated(
                &r.device_id,
                1,
                &state.version,
                &r.device_id == silent,
                crate::rollout::unix_now(),
            );
            if let Ok(bytes) = fleet_proto::health::encode(&h) {
                conn.publish(
                    &fleet_proto::topic::device_health(&r.device_id),
                    bytes,
                    true,
                )
                .await?;
            }
        }
        conn.close(Duration::from_secs(10)).await?;
    }
    ui.println(&format!(
        "demo: every station reports its health; {silent}'s microphone records silence"
    ));
    // What an operator's `fleetctl status` shows now, from the stations' retained messages.
    let rows = crate::status::read(addr, Duration::from_secs(600), &Limits::DEFAULT).await?;
    ui.println(&format!(
        "demo: fleetctl status\n{}",
        crate::status::render_table(&rows)
    ));
    Ok((version, summary))
}

/// The end expected for each station, for messages.
#[must_use]
pub fn describe_end(end: &StationEnd) -> String {
    match end {
        StationEnd::Updated { version } => format!("updated to {version}"),
        StationEnd::RolledBack { cause } => format!("rolled back: {cause}"),
        StationEnd::Failed { detail } => format!("failed: {detail}"),
        StationEnd::OutsideWave { bucket, percent } => {
            format!("outside the wave (bucket {bucket}, rollout {percent}%)")
        }
        StationEnd::Refused { reason } => format!("refused: {reason}"),
        StationEnd::Superseded { by } => format!("superseded by {by}"),
    }
}
