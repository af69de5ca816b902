//! Following stations' retained state and events on the broker.
use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use fleet_mqtt::{Backoff, Session, SessionConfig, SessionEvent};
use fleet_proto::config_push::{ConfigEvent, decode_config_event};
use fleet_proto::payload::{StationEvent, StationState, decode_event, decode_state};
use fleet_proto::{Limits, Topic};
use tokio::sync::mpsc::Receiver;

use crate::Mosquitto;

/// Collects every station's latest state, presence and all its events.
#[derive(Debug)]
pub struct Watcher {
    session: Session,
    rx: Receiver<SessionEvent>,
    pub states: HashMap<String, StationState>,
    pub events: HashMap<String, Vec<StationEvent>>,
    /// Configuration push reports (`config-accepted`, ...), by station.
    pub config_events: HashMap<String, Vec<ConfigEvent>>,
    pub presence: HashMap<String, String>,
}

impl Watcher {
    pub async fn connect(broker: &Mosquitto, name: &str) -> anyhow::Result<Self> {
        let mut cfg = SessionConfig::new(name, broker.host(), broker.port());
        cfg.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        };
        let (session, rx) = Session::start(cfg);
        session
            .subscribe_many(&[
                "fleet/v1/devices/+/state".to_owned(),
                "fleet/v1/devices/+/events".to_owned(),
                "fleet/v1/devices/+/presence".to_owned(),
            ])
            .await?;
        Ok(Self {
            session,
            rx,
            states: HashMap::new(),
            events: HashMap::new(),
            config_events: HashMap::new(),
            presence: HashMap::new(),
        })
    }

    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    async fn pump(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<bool> {
        let ev = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => return Ok(false),
            Ok(None) => bail!("watcher session ended"),
            Ok(Some(ev)) => ev,
        };
        let SessionEvent::Message(m) = ev else {
            return Ok(true);
        };
        match Topic::parse(&m.topic) {
            Ok(Topic::DeviceState(d)) if !m.payload.is_empty() => {
                let s = decode_state(&m.payload, &Limits::DEFAULT)
                    .with_context(|| format!("bad state from {d}"))?;
                let newer = self
                    .states
                    .get(d.as_str())
                    .is_none_or(|old| s.seq > old.seq);
                if newer {
                    self.states.insert(d.to_string(), s);
                }
            }
            Ok(Topic::DeviceEvents(d)) => match decode_event(&m.payload, &Limits::DEFAULT) {
                Ok(e) => self.events.entry(d.to_string()).or_default().push(e),
                Err(update_error) => {
                    let e = decode_config_event(&m.payload, &Limits::DEFAULT)
                        .map_err(|config_error| anyhow::anyhow!("{config_error}"))
                        .with_context(|| format!("bad event from {d}: {update_error}"))?;
                    self.config_events.entry(d.to_string()).or_default().push(e);
                }
            },
            Ok(Topic::DevicePresence(d)) => {
                self.presence.insert(
                    d.to_string(),
                    String::from_utf8_lossy(&m.payload).into_owned(),
                );
            }
            _ => {}
        }
        Ok(true)
    }

    /// Waits until `device`'s latest state satisfies `pred`.
    pub async fn wait_state(
        &mut self,
        device: &str,
        timeout: Duration,
        pred: impl Fn(&StationState) -> bool,
    ) -> anyhow::Result<StationState> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.states.get(device)
                && pred(s)
            {
                return Ok(s.clone());
            }
            if !self.pump(deadline).await? {
                bail!(
                    "state of {device} did not match within {timeout:?}; last: {:#?}\nevents: {:#?}",
                    self.states.get(device),
                    self.events
                        .get(device)
                        .map(|v| v.iter().rev().take(12).collect::<Vec<_>>())
                );
            }
        }
    }

    /// Waits for an event of `device` satisfying `pred` (events already seen count).
    pub async fn wait_event(
        &mut self,
        device: &str,
        timeout: Duration,
        pred: impl Fn(&StationEvent) -> bool,
    ) -> anyhow::Result<StationEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .events
                .get(device)
                .and_then(|v| v.iter().find(|e| pred(e)))
            {
                return Ok(e.clone());
            }
            if !self.pump(deadline).await? {
                bail!(
                    "no matching event from {device} within {timeout:?}; events: {:#?}",
                    self.events
                        .get(device)
                        .map(|v| v.iter().rev().take(12).collect::<Vec<_>>())
                );
            }
        }
    }

    /// Waits for a configuration push report of `device` satisfying `pred` (reports already seen
    /// count).
    pub async fn wait_config_event(
        &mut self,
        device: &str,
        timeout: Duration,
        pred: impl Fn(&ConfigEvent) -> bool,
    ) -> anyhow::Result<ConfigEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .config_events
                .get(device)
                .and_then(|v| v.iter().find(|e| pred(e)))
            {
                return Ok(e.clone());
            }
            if !self.pump(deadline).await? {
                bail!(
                    "no matching config event from {device} within {timeout:?}; seen: {:#?}",
                    self.config_events.get(device)
                );
            }
        }
    }

    /// Waits until `device`'s retained presence is `expected` (`online`/`offline`).
    pub async fn wait_presence(
        &mut self,
        device: &str,
        expected: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.presence.get(device).is_some_and(|p| p == expected) {
                return Ok(());
            }
            if !self.pump(deadline).await? {
                bail!(
                    "presence of {device} is {:?}, not {expected:?}, after {timeout:?}",
                    self.presence.get(device)
                );
            }
        }
    }

    /// Forgets the events seen so far (so the next wait only sees new ones).
    pub fn clear_events(&mut self) {
        self.events.clear();
        self.config_events.clear();
    }
}
