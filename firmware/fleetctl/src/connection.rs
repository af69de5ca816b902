//! One short-lived MQTT connection for a CLI command, on the station's session adapter
//! (`fleet_mqtt::Session`): connect, publish (QoS 1, counted acks), subscribe and read. No
//! reconnects: a command that loses its broker fails and is re-run (every publishing command
//! is idempotent).
//!
//! The transport (plain or TLS with the operator's client certificate, `fleet_mqtt::Transport`)
//! is looked up per broker address: [`use_transport`] for one broker, [`set_default_transport`]
//! for every broker of the process (the CLI's `--ca/--cert/--key`). Credential files are read at
//! every [`Connection::open`].
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

pub use fleet_mqtt::{ClientAuth, ServerVerify, TlsConfig, Transport};

use fleet_mqtt::{Acks, Session, SessionConfig, SessionEvent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest MQTT packet this tool sends or accepts (a chunk plus topic and header).
pub const MAX_PACKET_BYTES: usize = 2 * 1024 * 1024;
/// Inbound messages buffered between the event loop and the command (bounded: the event loop
/// waits when the command is slower).
const INBOUND_CAPACITY: usize = 1024;
/// Requests buffered towards the event loop.
const REQUEST_CAPACITY: usize = 64;

/// Why talking to the broker failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectionError {
    #[error("unable to parse broker address {0:?}: expected [mqtt://]host[:port]")]
    BadAddress(String),
    #[error("unable to connect to broker {addr}: {reason}")]
    Connect { addr: BrokerAddr, reason: String },
    #[error("unable to connect to broker {addr}: {reason}")]
    Credentials { addr: BrokerAddr, reason: String },
    #[error("unable to connect to broker {addr}: no answer within {timeout:?}")]
    ConnectTimeout { addr: BrokerAddr, timeout: Duration },
    #[error("unable to talk to broker {addr}: connection lost ({reason})")]
    Lost { addr: BrokerAddr, reason: String },
    #[error("unable to {what} on broker {addr}: no acknowledgement within {timeout:?}")]
    Timeout {
        addr: BrokerAddr,
        what: &'static str,
        timeout: Duration,
    },
}

/// A broker address: `mqtt://host:port`, `host:port` or `host` (port 1883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

impl FromStr for BrokerAddr {
    type Err = ConnectionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConnectionError::BadAddress(s.to_owned());
        let rest = s.strip_prefix("mqtt://").unwrap_or(s);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (rest, 1883),
        };
        if host.is_empty() || host.contains('/') || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// Largest credential file (CA, certificate, key) read.
const MAX_CREDENTIAL_FILE_BYTES: u64 = 256 * 1024;

/// Transports chosen per broker address, and the one for every other address.
#[derive(Debug, Default)]
struct Transports {
    by_addr: BTreeMap<(String, u16), Transport>,
    default: Option<Transport>,
}

static TRANSPORTS: Mutex<Transports> = Mutex::new(Transports {
    by_addr: BTreeMap::new(),
    default: None,
});

fn transports() -> std::sync::MutexGuard<'static, Transports> {
    // Plain inserts and reads: a panic elsewhere cannot leave the map half-written.
    TRANSPORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Connections to `addr` use `transport` from now on (overrides the default).
pub fn use_transport(addr: &BrokerAddr, transport: Transport) {
    transports()
        .by_addr
        .insert((addr.host.clone(), addr.port), transport);
}

/// Connections to every broker without its own [`use_transport`] use `transport` (the CLI
/// sets this from `--ca/--cert/--key`).
pub fn set_default_transport(transport: Transport) {
    transports().default = Some(transport);
}

/// The transport for `addr`: its own, else the default, else plain.
#[must_use]
pub fn transport_for(addr: &BrokerAddr) -> Transport {
    let t = transports();
    t.by_addr
        .get(&(addr.host.clone(), addr.port))
        .or(t.default.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// A message read from the broker.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A session configuration for `addr` with a random client id starting with `prefix`: the
/// transport chosen for that broker ([`transport_for`]), this tool's packet limit.
#[must_use]
pub fn session_config(addr: &BrokerAddr, prefix: &str) -> SessionConfig {
    let id = format!("{prefix}-{:016x}", rand::random::<u64>());
    let mut config = SessionConfig::new(id, addr.host.clone(), addr.port);
    config.transport = transport_for(addr);
    config.limits.max_packet_bytes = MAX_PACKET_BYTES;
    config.limits.event_capacity = INBOUND_CAPACITY;
    config.limits.request_capacity = REQUEST_CAPACITY;
    config.limits.max_credential_file_bytes = MAX_CREDENTIAL_FILE_BYTES;
    config
}

/// Starts a session to `addr` and waits for its first connection; fails at once when that
/// cannot be made (no retry: the command is run again).
pub async fn start_session(
    addr: &BrokerAddr,
    config: SessionConfig,
    timeout: Duration,
) -> Result<(Session, mpsc::Receiver<SessionEvent>), ConnectionError> {
    if let Transport::Tls(tls) = &config.transport {
        // Read the credential files once up front, so an unusable one is reported as such.
        tls.client_config(MAX_CREDENTIAL_FILE_BYTES)
            .map_err(|e| ConnectionError::Credentials {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    Session::start_connected(config, timeout)
        .await
        .map_err(|e| match e {
            fleet_mqtt::ConnectError::Timeout { timeout, .. } => ConnectionError::ConnectTimeout {
                addr: addr.clone(),
                timeout,
            },
            fleet_mqtt::ConnectError::Refused { reason, .. } => ConnectionError::Connect {
                addr: addr.clone(),
                reason,
            },
        })
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    error: Option<String>,
    closed: bool,
}

/// An open connection: a [`fleet_mqtt::Session`] used once. Dropping it drops the session
/// without a disconnect.
#[derive(Debug)]
pub struct Connection {
    addr: BrokerAddr,
    client_id: String,
    session: Session,
    acks: watch::Receiver<Acks>,
    state: watch::Receiver<LinkState>,
    inbound: mpsc::Receiver<Message>,
    task: JoinHandle<()>,
    published: u64,
    subscribed: u64,
    filters: BTreeSet<String>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.session.abort();
        self.task.abort();
    }
}

impl Connection {
    /// Connects with a clean session and a random client id starting with `prefix`.
    pub async fn open(
        addr: &BrokerAddr,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectionError> {
        let config = session_config(addr, prefix);
        let client_id = config.client_id.clone();
        let (session, mut events) = start_session(addr, config, timeout).await?;
        let (state_tx, state) = watch::channel(LinkState::default());
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_CAPACITY);
        // A command does not live through a reconnect: the first drop is final for it.
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    SessionEvent::Message(m) => {
                        let msg = Message {
                            topic: m.topic,
                            payload: m.payload.to_vec(),
                            retain: m.retain,
                        };
                        // The command may have stopped reading; that is not an error.
                        let _ = inbound_tx.send(msg).await;
                    }
                    SessionEvent::Disconnected { reason, .. } => {
                        state_tx.send_modify(|s| s.error = Some(reason));
                        return;
                    }
                    SessionEvent::Connected => {}
                    // The drop it caused follows as `Disconnected`.
                    SessionEvent::TopicSkipped { topic, size, .. } => {
                        tracing::warn!(topic, size, "message above the transport ceiling skipped");
                    }
                }
            }
            state_tx.send_modify(|s| s.closed = true);
        });
        Ok(Self {
            addr: addr.clone(),
            client_id,
            acks: session.acks(),
            session,
            state,
            inbound,
            task,
            published: 0,
            subscribed: 0,
            filters: BTreeSet::new(),
        })
    }

    #[must_use]
    pub fn addr(&self) -> &BrokerAddr {
        &self.addr
    }

    fn lost(&self) -> Option<ConnectionError> {
        let s = self.state.borrow();
        s.error.as_ref().map(|reason| ConnectionError::Lost {
            addr: self.addr.clone(),
            reason: reason.clone(),
        })
    }

    fn lost_or(&self, reason: &str) -> ConnectionError {
        self.lost().unwrap_or_else(|| ConnectionError::Lost {
            addr: self.addr.clone(),
            reason: reason.to_owned(),
        })
    }

    /// Queues a QoS 1 publish. Use [`Connection::acked`] / [`Connection::flush`] to learn
    /// when the broker has it.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), ConnectionError> {
        if let Some(e) = self.lost() {
            return Err(e);
        }
        self.session
            .publish(topic, payload, retain)
            .await
            .map_err(|e| self.lost_or(&e.to_string()))?;
        self.published += 1;
        Ok(())
    }

    /// Publishes queued so far.
    #[must_use]
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Publishes acknowledged by the broker so far.
    #[must_use]
    pub fn acked(&self) -> u64 {
        self.acks.borrow().published
    }

    /// Waits until the broker acknowledged `done` (counted by [`Acks`]), the link dropped, or
    /// `timeout` passed.
    async fn wait_for_acks(
        &mut self,
        what: &'static str,
        done: impl Fn(&Acks) -> bool,
        timeout: Duration,
    ) -> Result<(), ConnectionError> {
        let (acks, state) = (&mut self.acks, &mut self.state);
        let waited = tokio::time::timeout(timeout, async {
            tokio::select! {
                a = acks.wait_for(|a| done(a)) => a.is_ok(),
                _ = state.wait_for(|s| s.error.is_some() || s.closed) => false,
            }
        })
        .await;
        match waited {
            Err(_) => Err(ConnectionError::Timeout {
                addr: self.addr.clone(),
                what,
                timeout,
            }),
            Ok(true) => Ok(()),
            Ok(false) if done(&self.acks.borrow()) => Ok(()),
            Ok(false) => Err(self.lost_or("closed")),
        }
    }

    /// Waits until the broker acknowledged at least `n` publishes.
    pub async fn wait_acked(&mut self, n: u64, timeout: Duration) -> Result<(), ConnectionError> {
        self.wait_for_acks("publish", |a| a.published >= n, timeout)
            .await
    }

    /// Waits until every publish queued so far is acknowledged.
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), ConnectionError> {
        self.wait_acked(self.published, timeout).await
    }

    /// Subscribes (QoS 1) to `filters` and waits for the broker's acknowledgement.
    pub async fn subscribe(
        &mut self,
        filters: &[String],
        timeout: Duration,
    ) -> Result<(), ConnectionError> {
        if let Some(e) = self.lost() {
            return Err(e);
        }
        let fresh: Vec<String> = filters
            .iter()
            .filter(|f| !self.filters.contains(*f))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            // One request for all of them: one acknowledgement.
            self.session
                .subscribe_many(&fresh)
                .await
                .map_err(|e| self.lost_or(&e.to_string()))?;
            self.filters.extend(fresh);
            self.subscribed += 1;
        }
        let want = self.subscribed;
        self.wait_for_acks("subscribe", |a| a.subscribed >= want, timeout)
            .await
    }

    /// The next message, or `None` after `timeout` of silence. A lost connection is an error.
    pub async fn next_message(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Message>, ConnectionError> {
        match tokio::time::timeout(timeout, self.inbound.recv()).await {
            Ok(Some(m)) => Ok(Some(m)),
            Ok(None) => Err(self.lost_or("event loop ended")),
            Err(_) => match self.lost() {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }

    /// Sends DISCONNECT after every queued publish is acknowledged.
    pub async fn close(mut self, timeout: Duration) -> Result<(), ConnectionError> {
        self.flush(timeout).await?;
        let _ = self.session.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.join()).await;
        Ok(())
    }
}

/// Topic prefix of the marker [`collect_retained`] sends itself (outside `fleet/v1/`: it is
/// this tool's, not part of the protocol). An operator account needs publish and subscribe
/// rights on `fleetctl/sync/#`; without them reads fall back to a longer quiet period.
pub const SYNC_PREFIX: &str = "fleetctl/sync";
/// Without the marker, a read ends after this long without a message.
const FALLBACK_QUIET: Duration = Duration::from_secs(2);

/// Opens a connection, subscribes to `filters`, and returns the retained messages on them
/// (last one per topic wins).
///
/// The end of the retained burst is found with a marker: after the subscriptions are
/// acknowledged, the connection publishes a nonce to its own `fleetctl/sync/<client-id>`
/// topic. A broker that delivers in order (mosquitto) sends it after every retained message,
/// so the read ends `quiet` after the marker or after the last retained message that follows
/// it (that slack covers brokers that deliver subscriptions in parallel, like rumqttd; live
/// publications do not extend it). Without the marker the read ends after
/// `FALLBACK_QUIET` of silence. A slow machine therefore cannot cut the read short, which
/// matters: a missed offer would make `push` pick a sequence stations refuse.
///
/// A read is idempotent: when the broker drops the connection (rumqttd sometimes closes a
/// fresh one abruptly) it is read once more on a new connection before the error is returned.
pub async fn collect_retained(
    addr: &BrokerAddr,
    filters: &[String],
    quiet: Duration,
    max_messages: usize,
) -> Result<Vec<Message>, ConnectionError> {
    match collect_retained_once(addr, filters, quiet, max_messages).await {
        Err(e @ (ConnectionError::Connect { .. } | ConnectionError::Lost { .. })) => {
            tracing::warn!(error = %e, "broker dropped the read connection; reading again");
            collect_retained_once(addr, filters, quiet, max_messages).await
        }
        other => other,
    }
}

async fn collect_retained_once(
    addr: &BrokerAddr,
    filters: &[String],
    quiet: Duration,
    max_messages: usize,
) -> Result<Vec<Message>, ConnectionError> {
    let timeout = Duration::from_secs(10);
    let mut conn = Connection::open(addr, "fleetctl-read", timeout).await?;
    let sync_topic = format!("{SYNC_PREFIX}/{}", conn.client_id);
    let mut all = filters.to_vec();
    all.push(sync_topic.clone());
    conn.subscribe(&all, timeout).await?;
    let nonce = format!("{:016x}", rand::random::<u64>()).into_bytes();
    conn.publish(&sync_topic, nonce.clone(), false).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    // After the marker, only retained messages (the subscription's burst) extend the read:
    // live publications (retain flag clear) are kept but do not hold it open, so a busy fleet
    // cannot stretch a read to its deadline.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    let mut last: std::collections::BTreeMap<String, Message> = std::collections::BTreeMap::new();
    let mut taken = 0usize;
    while taken < max_messages {
        let now = tokio::time::Instant::now();
        let left = deadline.saturating_duration_since(now);
        let wait = match quiet_until {
            Some(q) => q.saturating_duration_since(now),
            None => FALLBACK_QUIET,
        };
        if left.is_zero() || wait.is_zero() {
            break;
        }
        match conn.next_message(wait.min(left)).await? {
            None => break,
            Some(m) if m.topic == sync_topic => {
                if m.payload == nonce && quiet_until.is_none() {
                    quiet_until = Some(tokio::time::Instant::now() + quiet);
                }
            }
            Some(m) => {
                taken += 1;
                if m.retain && quiet_until.is_some() {
                    quiet_until = Some(tokio::time::Instant::now() + quiet);
                }
                last.insert(m.topic.clone(), m);
            }
        }
    }
    conn.close(timeout).await?;
    Ok(last.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse_with_and_without_scheme_and_port() {
        let a: BrokerAddr = "mqtt://127.0.0.1:18830".parse().expect("full");
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 18830));
        let b: BrokerAddr = "broker.example".parse().expect("host only");
        assert_eq!(b.port, 1883);
        for bad in ["", "mqtt://", "host:notaport", "host:0", "http://x/y"] {
            assert!(bad.parse::<BrokerAddr>().is_err(), "{bad:?}");
        }
    }
}
