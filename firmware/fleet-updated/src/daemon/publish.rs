//! What the station tells the fleet: the retained state, events, presence, and the goodbye
//! before a reboot or a shutdown.
use std::time::{Duration, Instant};

use fleet_core::ports::{BootControl, Installer};
use fleet_core::update::{Phase, PublicKey, Report};
use fleet_mqtt::SessionEvent;
use fleet_proto::payload::{self, Held, Presence, StationEvent, StationState, TrustReport};
use fleet_proto::topic;
use tokio::sync::mpsc;

use crate::daemon::{Exit, HealthCheck, Shell};

/// How long a reboot or shutdown waits for queued publications to reach the broker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Install progress goes into the retained state once per this many percent.
const INSTALL_STATE_STEP_PERCENT: u8 = 5;

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    pub(super) async fn publish_state(&mut self) {
        self.counters.state_seq += 1;
        let engine = self.station.engine();
        let mut state = StationState::from_engine(
            engine,
            self.boot_status.as_ref(),
            self.counters.state_seq,
            self.now(),
        );
        // While downloading, the bytes of the file that crosses the link (the bundle, or a
        // delta's patch); `delivery` says which.
        if let (Some(t), Some(progress)) = (&self.transfer, state.progress.as_mut()) {
            progress.total_bytes = t.fetch_size;
            progress.done_bytes = t.store.as_ref().map_or(0, |s| s.held_bytes());
            if let Some(d) = &mut self.delivery
                && d.bundle_id == t.bundle_id
                && let Some(store) = &t.store
            {
                d.received_bytes = store.held_bytes();
            }
        }
        state.kept_base = self.kept_base;
        state.delivery = self.delivery.clone().filter(|d| {
            engine
                .phase
                .job()
                .is_some_and(|j| j.bundle_id == d.bundle_id)
        });
        if matches!(engine.phase, Phase::Installing { .. }) {
            state.install_percent = self.install_percent;
            self.install_percent_published = self.install_percent;
        }
        state.held = self.station.held().map(|h| Held {
            update_id: h.update_id,
            version: h.version,
            reason: h.reason,
            scope: h.scope,
            control_sequence: h.control_sequence,
        });
        let trust = self.station.trust();
        state.trust = Some(TrustReport {
            sequence: trust.sequence,
            keys: trust.keys().map(PublicKey::key_id).collect(),
            revoked: trust.revoked().copied().collect(),
        });
        let topic = topic::device_state(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, payload::encode(&state), true)
            .await
        {
            tracing::warn!(error = %e, "unable to publish state");
        }
    }

    pub(super) async fn publish_event(
        &mut self,
        update_id: Option<fleet_core::ids::UpdateId>,
        report: Report,
    ) {
        self.counters.event_seq += 1;
        let event = StationEvent {
            device_id: self.cfg.device_id.clone(),
            seq: self.counters.event_seq,
            at: self.now().into(),
            update_id,
            event: report,
        };
        tracing::info!(event = ?event.event, "station event");
        let topic = topic::device_events(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, payload::encode(&event), false)
            .await
        {
            tracing::warn!(error = %e, "unable to publish event");
        }
    }

    /// A configuration push's outcome, on the events topic (same counter as update events).
    pub(super) async fn publish_config_event(
        &mut self,
        outcome: fleet_proto::config_push::ConfigOutcome,
    ) {
        self.counters.event_seq += 1;
        let event = fleet_proto::config_push::ConfigEvent {
            device_id: self.cfg.device_id.clone(),
            seq: self.counters.event_seq,
            at: self.now().into(),
            outcome,
        };
        let topic = topic::device_events(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, payload::encode(&event), false)
            .await
        {
            tracing::warn!(error = %e, "unable to publish a config push event");
        }
    }

    /// The installer's progress: into the retained state once per whole step (bounded
    /// chatter).
    pub(super) async fn install_progress(&mut self, percent: u8) {
        if !matches!(self.station.engine().phase, Phase::Installing { .. }) {
            return;
        }
        let percent = percent.min(100);
        self.install_percent = Some(percent);
        let last = self.install_percent_published.unwrap_or(0);
        let due = self.install_percent_published.is_none()
            || percent >= last.saturating_add(INSTALL_STATE_STEP_PERCENT)
            || (percent == 100 && last < 100);
        if due {
            self.publish_state().await;
        }
    }

    pub(super) async fn on_connected(&mut self) {
        let topic = topic::device_presence(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, Presence::Online.as_bytes().to_vec(), true)
            .await
        {
            tracing::warn!(error = %e, "unable to publish presence");
        }
        // A clean session lost whatever was queued while down: publish the state again.
        self.publish_state().await;
        if let Some(t) = &mut self.transfer {
            t.last_activity = Instant::now();
        }
    }

    /// Publishes what is queued, says goodbye and stops the session. Before a reboot it waits
    /// (bounded) until the broker hands back the last state: then it is retained there.
    pub(super) async fn leave(&mut self, exit: Exit, events: &mut mpsc::Receiver<SessionEvent>) {
        if let Some(t) = &self.transfer {
            self.stats.resent_chunk_bytes += t.resent_bytes;
        }
        let presence = topic::device_presence(&self.cfg.device_id);
        let _ = self
            .session
            .publish(&presence, Presence::Offline.as_bytes().to_vec(), true)
            .await;
        if matches!(exit, Exit::Reboot { .. }) && self.session.is_connected() {
            self.confirm_state(events).await;
        }
        // The download stops with the daemon (a restart resumes it and reserves again).
        self.space.close().await;
        let _ = self.session.disconnect().await;
        if tokio::time::timeout(FLUSH_TIMEOUT, self.session.join())
            .await
            .is_err()
        {
            tracing::warn!(?exit, "broker did not take the last messages in time");
            self.session.abort();
        }
    }

    /// Waits until the broker delivers this station's own last state back to it (it
    /// subscribes its state topic): the broker processed and retained it, and every event
    /// published before it (same connection, in order). fleet-mqtt does not surface PUBACKs;
    /// this echo is the stronger proof. Bounded by [`FLUSH_TIMEOUT`].
    async fn confirm_state(&mut self, events: &mut mpsc::Receiver<SessionEvent>) {
        let topic = topic::device_state(&self.cfg.device_id);
        let want = self.counters.state_seq;
        if let Err(e) = self.session.subscribe(&topic).await {
            tracing::warn!(error = %e, "unable to subscribe the own state topic");
            return;
        }
        let deadline = tokio::time::sleep(FLUSH_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    tracing::warn!(seq = want, "broker did not confirm the last state in time");
                    return;
                }
                ev = events.recv() => match ev {
                    Some(SessionEvent::Message(m)) if m.topic == topic => {
                        if payload::decode_state(&m.payload, &self.limits)
                            .is_ok_and(|s| s.seq >= want)
                        {
                            tracing::debug!(seq = want, "broker holds the last state");
                            return;
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
            }
        }
    }
}
