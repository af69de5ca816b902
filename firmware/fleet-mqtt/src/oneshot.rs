//! What a short-lived client (a CLI command) needs from a [`Session`] besides what a daemon
//! does: fail at once when the first connection cannot be made instead of retrying
//! ([`Session::start_connected`]), and learn when the broker has acknowledged its publishes
//! and subscriptions ([`Session::acks`]), to pace a large upload and to know a subscription is
//! in place.
use std::time::Duration;

use rumqttc::Packet;
use tokio::sync::{mpsc, watch};

use crate::{Session, SessionConfig, SessionEvent};

/// Acknowledgements the broker sent a session since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acks {
    /// QoS 1 publishes acknowledged (PUBACK).
    pub published: u64,
    /// Subscribe requests acknowledged (SUBACK; one per request, however many topics it
    /// carried).
    pub subscribed: u64,
}

/// Counts `packet` if it is an acknowledgement (called by the session's driver).
pub(crate) fn record(acks: &watch::Sender<Acks>, packet: &Packet) {
    match packet {
        Packet::PubAck(_) => acks.send_modify(|a| a.published += 1),
        Packet::SubAck(_) => acks.send_modify(|a| a.subscribed += 1),
        _ => {}
    }
}

/// Why [`Session::start_connected`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The first attempt failed (refused, unreachable, TLS, credentials): the reason given.
    #[error("unable to connect to {host}:{port}: {reason}")]
    Refused {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("unable to connect to {host}:{port}: no answer within {timeout:?}")]
    Timeout {
        host: String,
        port: u16,
        timeout: Duration,
    },
}

impl Session {
    /// Starts a session and waits for its first connection. Where a daemon's session retries
    /// with backoff, this fails on the first failed attempt (or after `timeout`) and stops the
    /// session: a command reports the broker it cannot reach and is run again.
    ///
    /// # Errors
    /// The first attempt failed, or nothing was heard within `timeout`.
    pub async fn start_connected(
        config: SessionConfig,
        timeout: Duration,
    ) -> Result<(Session, mpsc::Receiver<SessionEvent>), ConnectError> {
        let (host, port) = (config.host.clone(), config.port);
        let (session, mut events) = Session::start(config);
        let refused = |reason: String| ConnectError::Refused {
            host: host.clone(),
            port,
            reason,
        };
        match tokio::time::timeout(timeout, events.recv()).await {
            // CONNACK is the first packet a broker sends (MQTT 3.1.1, 3.2), so the first event
            // is `Connected` or `Disconnected`.
            Ok(Some(SessionEvent::Connected | SessionEvent::Message(_))) => Ok((session, events)),
            Ok(Some(SessionEvent::Disconnected { reason, .. })) => {
                session.abort();
                Err(refused(reason))
            }
            // Cannot come first (topics are subscribed after the connect); a drop follows it.
            Ok(Some(SessionEvent::TopicSkipped { topic, size, .. })) => {
                session.abort();
                Err(refused(format!(
                    "{topic} brought a packet of {size} bytes, above the transport ceiling"
                )))
            }
            Ok(None) => Err(refused("the session ended".into())),
            Err(_) => {
                session.abort();
                Err(ConnectError::Timeout {
                    host: host.clone(),
                    port,
                    timeout,
                })
            }
        }
    }

    /// The broker's acknowledgements so far; the receiver is told of every new one.
    #[must_use]
    pub fn acks(&self) -> watch::Receiver<Acks> {
        self.acks.clone()
    }
}
