//! The loop: sample every `sample-secs`, publish when [`report::decide_publish`] says so, and
//! republish at once after every (re)connect (a clean session keeps nothing).
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fleet_mqtt::{Session, SessionEvent};
use fleet_proto::health::Health;
use fleet_proto::topic;
use tokio::sync::watch;

use crate::config::Config;
use crate::logs::Responder;
use crate::recorder::{self, RecorderWindows};
use crate::report::{self, Cadence, ChangeKey, Readings};
use crate::retention;
use crate::uploader;
use crate::window::Window;

/// How often the systemd watchdog is fed (the unit's WatchdogSec is 30 s).
const WATCHDOG_EVERY: Duration = Duration::from_secs(10);

/// The reporter's memory between samples.
#[derive(Debug)]
pub struct Reporter {
    cfg: Config,
    seq: u64,
    recorder: RecorderWindows,
    deletions: Window,
    started: Instant,
    last: Option<(u64, ChangeKey)>,
}

/// CLOCK_MONOTONIC in milliseconds (time since boot, without suspend).
#[must_use]
pub fn monotonic_ms() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1000) + (t.tv_nsec() as u64) / 1_000_000)
        .unwrap_or(0)
}

impl Reporter {
    #[must_use]
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            seq: 0,
            recorder: RecorderWindows::default(),
            deletions: Window::default(),
            started: Instant::now(),
            last: None,
        }
    }

    /// Milliseconds since this reporter started (its windows' clock).
    fn age_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Reads everything once (blocking file reads: run it off the async loop).
    #[must_use]
    pub fn sample(&mut self) -> Health {
        let now_ms = self.age_ms();
        let cfg = &self.cfg;
        let (clock, trust) = fleet_facts::clock::trust(&cfg.roots, &cfg.clock);
        let readings = Readings {
            recorder: recorder::read(
                &cfg.recorder_status,
                SystemTime::now(),
                now_ms,
                &mut self.recorder,
            ),
            retention: cfg
                .retention_metrics
                .as_deref()
                .and_then(|p: &Path| retention::read(p, now_ms, &mut self.deletions)),
            uploader: cfg.uploader_status.as_deref().and_then(uploader::read),
            system: fleet_facts::system::read(&cfg.roots, &cfg.version_file),
            storage: fleet_facts::storage::read(&cfg.roots),
            clock,
            trust,
            rtc_present: fleet_facts::clock::rtc_present(&cfg.roots),
        };
        self.seq += 1;
        report::assemble(&cfg.device_id, self.seq, monotonic_ms(), &readings)
    }

    /// Whether `h` goes out now; records it as published when it does.
    pub fn take_if_due(&mut self, h: &Health) -> bool {
        let now_ms = self.age_ms();
        let key = ChangeKey::of(h);
        let cadence = Cadence {
            heartbeat_ms: self.cfg.heartbeat.as_millis() as u64,
            min_interval_ms: self.cfg.min_interval.as_millis() as u64,
        };
        let due = report::decide_publish(
            self.last.as_ref().map(|(t, k)| (*t, k)),
            now_ms,
            &key,
            &cadence,
        );
        if due {
            self.last = Some((now_ms, key));
        }
        due
    }

    /// Forgets the last publication (after a reconnect: publish again at once).
    pub fn forget_published(&mut self) {
        self.last = None;
    }
}

/// Samples once off the async loop.
async fn sample(rep: Reporter) -> anyhow::Result<(Reporter, Health)> {
    tokio::task::spawn_blocking(move || {
        let mut rep = rep;
        let h = rep.sample();
        (rep, h)
    })
    .await
    .map_err(|e| anyhow::anyhow!("unable to sample the station's health: {e}"))
}

/// Runs until `shutdown` turns true.
pub async fn run(cfg: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client_id = format!("fleet-reporterd-{}", cfg.device_id);
    let health_topic = topic::device_health(&cfg.device_id);
    let request_topic = topic::device_log_request(&cfg.device_id);
    let reply_topic = topic::device_log_reply(&cfg.device_id);
    let mut responder = Responder::new(
        cfg.device_id.clone(),
        cfg.trusted_keys.clone(),
        cfg.state_dir.join("log-sequence"),
        cfg.journal.clone(),
    );
    let (roots, clock_policy) = (cfg.roots.clone(), cfg.clock);
    let sample_every = cfg.sample;
    let (session, mut events) = Session::start(cfg.mqtt.session_config(client_id));
    session.subscribe(&request_topic).await?;
    let mut rep = Reporter::new(cfg);
    let mut sampler = tokio::time::interval(sample_every);
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dog = tokio::time::interval(WATCHDOG_EVERY);
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut connected = false;
    loop {
        let publish_now = tokio::select! {
            _ = shutdown.changed() => break,
            _ = dog.tick() => {
                if watchdog {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                false
            }
            _ = sampler.tick() => true,
            ev = events.recv() => match ev {
                None => anyhow::bail!("the MQTT session stopped"),
                Some(SessionEvent::Connected) => {
                    tracing::info!("connected to the broker");
                    connected = true;
                    rep.forget_published();
                    true
                }
                Some(SessionEvent::Disconnected { reason, retry_in }) => {
                    connected = false;
                    tracing::warn!(reason = %reason, retry_in_ms = retry_in.as_millis() as u64, "broker connection lost");
                    false
                }
                // The drop it caused follows as `Disconnected`.
                Some(SessionEvent::TopicSkipped { topic, size, strikes, retry_in }) => {
                    tracing::warn!(topic = %topic, size, strikes, retry_in_ms = retry_in.as_millis() as u64, "message above the transport ceiling skipped");
                    false
                }
                Some(SessionEvent::Message(m)) => {
                    // Requests are never retained (the ACL lets only operators publish them);
                    // an empty payload is a cleared topic.
                    if m.topic == request_topic && !m.payload.is_empty() {
                        let now = fleet_facts::clock::now(&roots, &clock_policy, monotonic_ms());
                        for page in responder.handle(&m.payload, now).await {
                            session.publish(&reply_topic, page, false).await?;
                        }
                    }
                    false
                }
            },
        };
        if !publish_now || !connected {
            continue;
        }
        let (back, h) = sample(rep).await?;
        rep = back;
        if !rep.take_if_due(&h) {
            continue;
        }
        match report::encode_fitting(h.clone()) {
            Ok(bytes) => {
                let size = bytes.len();
                session.publish(&health_topic, bytes, true).await?;
                tracing::debug!(
                    seq = h.seq,
                    bytes = size,
                    recorder = h.recorder.state.as_str(),
                    "health published"
                );
            }
            Err(e) => tracing::error!(error = %e, "unable to encode the health message"),
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = session.disconnect().await;
    Ok(())
}
