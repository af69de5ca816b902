//! One short-lived MQTT connection for a CLI command: connect, publish (QoS 1, counted acks),
//! subscribe and read. No reconnects: a command that loses its broker fails and is re-run
//! (every publishing command is idempotent).
//!
//! The transport (plain or TLS with the operator's client certificate, `fleet_mqtt::Transport`)
//! is looked up per broker address: [`use_transport`] for one broker, [`set_default_transport`]
//! for every broker of the process (the CLI's `--ca/--cert/--key`). Credential files are read at
//! every [`Connection::open`].
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

pub use fleet_mqtt::{ClientAuth, ServerVerify, TlsConfig, Transport};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest MQTT packet this tool sends or accepts (a chunk plus topic and header).
pub const MAX_PACKET_BYTES: usize = 2 * 1024 * 1024;
/// Inbound messages buffered between the event loop and the command (bounded: the event loop
/// waits when the command is slower).
const INBOUND_CAPACITY: usize = 1024;
/// Requests buffered towards the event loop.
const REQUEST_CAPACITY: usize = 64;
/// QoS 1 publishes in flight at once (each up to one chunk).
const INFLIGHT: u16 = 16;

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

#[derive(Debug, Clone, Default)]
struct LinkState {
    connected: bool,
    pub_acks: u64,
    sub_acks: u64,
    error: Option<String>,
    closed: bool,
}

/// An open connection. Dropping it aborts the event loop.
#[derive(Debug)]
pub struct Connection {
    addr: BrokerAddr,
    client_id: String,
    client: AsyncClient,
    state: watch::Receiver<LinkState>,
    inbound: mpsc::Receiver<Message>,
    task: JoinHandle<()>,
    published: u64,
    subscribed: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
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
        let id = format!("{prefix}-{:016x}", rand::random::<u64>());
        let mut opts = MqttOptions::new(id.clone(), addr.host.clone(), addr.port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(INFLIGHT);
        if let Transport::Tls(tls) = transport_for(addr) {
            let config = tls.client_config(MAX_CREDENTIAL_FILE_BYTES).map_err(|e| {
                ConnectionError::Credentials {
                    addr: addr.clone(),
                    reason: e.to_string(),
                }
            })?;
            opts.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                config,
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
        let (state_tx, state) = watch::channel(LinkState::default());
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_CAPACITY);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        state_tx.send_modify(|s| s.connected = true);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        state_tx.send_modify(|s| s.pub_acks += 1);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        state_tx.send_modify(|s| s.sub_acks += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = Message {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        // The command may have stopped reading; that is not an error.
                        let _ = inbound_tx.send(msg).await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        state_tx.send_modify(|s| s.closed = true);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        state_tx.send_modify(|s| s.error = Some(e.to_string()));
                        break;
                    }
                }
            }
        });
        let mut conn = Self {
            addr: addr.clone(),
            client_id: id,
            client,
            state,
            inbound,
            task,
            published: 0,
            subscribed: 0,
        };
        let waited = tokio::time::timeout(timeout, async {
            conn.state
                .wait_for(|s| s.connected || s.error.is_some())
                .await
                .map(|s| s.clone())
        })
        .await;
        match waited {
            Err(_) => Err(ConnectionError::ConnectTimeout {
                addr: addr.clone(),
                timeout,
            }),
            Ok(Err(_)) => Err(ConnectionError::Connect {
                addr: addr.clone(),
                reason: "event loop ended".into(),
            }),
            Ok(Ok(s)) => match &s.error {
                Some(reason) => Err(ConnectionError::Connect {
                    addr: addr.clone(),
                    reason: reason.clone(),
                }),
                None => Ok(conn),
            },
        }
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
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
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
        self.state.borrow().pub_acks
    }

    /// Waits until the broker acknowledged at least `n` publishes.
    pub async fn wait_acked(&mut self, n: u64, timeout: Duration) -> Result<(), ConnectionError> {
        let waited = tokio::time::timeout(timeout, async {
            self.state
                .wait_for(|s| s.pub_acks >= n || s.error.is_some() || s.closed)
                .await
                .map(|s| s.clone())
        })
        .await;
        match waited {
            Err(_) => Err(ConnectionError::Timeout {
                addr: self.addr.clone(),
                what: "publish",
                timeout,
            }),
            Ok(Err(_)) => Err(self.lost_or("event loop ended")),
            Ok(Ok(s)) if s.pub_acks >= n => Ok(()),
            Ok(Ok(_)) => Err(self.lost_or("closed")),
        }
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
        for f in filters {
            self.client
                .subscribe(f.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| self.lost_or(&e.to_string()))?;
            self.subscribed += 1;
        }
        let want = self.subscribed;
        let waited = tokio::time::timeout(timeout, async {
            self.state
                .wait_for(|s| s.sub_acks >= want || s.error.is_some() || s.closed)
                .await
                .map(|s| s.clone())
        })
        .await;
        match waited {
            Err(_) => Err(ConnectionError::Timeout {
                addr: self.addr.clone(),
                what: "subscribe",
                timeout,
            }),
            Ok(Err(_)) => Err(self.lost_or("event loop ended")),
            Ok(Ok(s)) if s.sub_acks >= want => Ok(()),
            Ok(Ok(_)) => Err(self.lost_or("closed")),
        }
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
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.state.wait_for(|s| s.closed || s.error.is_some()),
        )
        .await;
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
