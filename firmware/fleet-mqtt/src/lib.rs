//! The MQTT session adapter: one broker connection over rumqttc, kept up for the life of a
//! daemon.
//!
//! rumqttc reconnects as soon as its event loop is polled again after an error, which hammers a
//! broker that is down and synchronises a whole fleet after a broker restart. [`Session`] wraps
//! the event loop in a driver task that waits an exponential backoff with jitter between
//! attempts ([`Backoff`]), resubscribes every topic after each (clean-session) connect, and hands
//! incoming messages to the owner through a bounded channel, so a slow owner slows the socket
//! instead of growing memory.
//!
//! Packets up to a transport ceiling ([`Limits::max_packet_bytes`]) are read whole; the owner
//! refuses what is over its own protocol limits. A packet above the ceiling cannot be skipped
//! on the wire (rumqttc drops the connection), so the driver subscribes one topic per
//! SUBSCRIBE after each connect and marks the end with an UNSUBSCRIBE: the topic acknowledged
//! last before such a drop brought it, and is skipped for a while ([`Session::skipped`],
//! [`Limits::oversize_skip`]) instead of dropping every connection. The owner is told with a
//! [`SessionEvent::TopicSkipped`] (before the [`SessionEvent::Disconnected`] of that drop), so
//! it can report the message it will never read. A connection that drops
//! within [`Backoff::STABLE_AFTER`] counts as another failure, so the backoff keeps growing.
//!
//! The transport is plain TCP or TLS with a client certificate ([`Transport`], [`TlsConfig`]);
//! credential files are read again before every connection attempt, so a renewed certificate
//! is picked up without a restart, and a file that cannot be used is reported as a
//! [`SessionEvent::Disconnected`] naming it, then retried with the same backoff.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleet_mqtt::SessionError> {
//! use fleet_mqtt::{Session, SessionConfig, SessionEvent};
//! let (session, mut events) = Session::start(SessionConfig::new("stn-1", "127.0.0.1", 1883));
//! session.subscribe("fleet/v1/devices/stn-1/offer").await?;
//! while let Some(event) = events.recv().await {
//!     if let SessionEvent::Message(m) = event {
//!         println!("{} {} bytes", m.topic, m.payload.len());
//!     }
//! }
//! # Ok(()) }
//! ```
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use bytes::Bytes;
use rand::Rng;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Request,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub mod config;
mod oneshot;
mod tls;
pub use oneshot::{Acks, ConnectError};
pub use tls::{ClientAuth, CredentialError, Credentials, ServerVerify, TlsConfig, Transport};

/// Size and depth limits of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The transport ceiling: the largest MQTT packet read or sent, in bytes (the packet's
    /// remaining length: topic, packet id and payload). [`TRANSPORT_CEILING`] by default.
    ///
    /// Keep it well above the largest limit of the protocol on top (fleet's largest is 1 MiB,
    /// a manifest or a chunk): a message somewhat over its protocol limit then still reaches
    /// the owner, who refuses it (`too-large`) and keeps the session. A packet above the
    /// ceiling cannot be skipped (rumqttc drops the connection to resynchronise): the driver
    /// skips the topic that brought it for a while ([`Limits::oversize_skip`]) and backs off
    /// exponentially while connections keep dropping ([`Backoff::STABLE_AFTER`]).
    /// Memory: up to `event_capacity` messages of this size can wait for the owner.
    pub max_packet_bytes: usize,
    /// Depth of the queue of requests (publish, subscribe) towards the event loop.
    pub request_capacity: usize,
    /// Depth of the queue of events towards the owner. When full, the driver stops reading the
    /// socket until the owner catches up (TCP back-pressure towards the broker).
    pub event_capacity: usize,
    /// Most topics one session keeps subscribed.
    pub max_subscriptions: usize,
    /// Largest credential file (CA, certificate, key, password) read, in bytes.
    pub max_credential_file_bytes: u64,
    /// A subscription whose retained message is above the transport ceiling is skipped for
    /// this long the first time, twice as long every further time in a row, up to
    /// `oversize_skip_max` ([`Session::skipped`]).
    pub oversize_skip_initial: Duration,
    pub oversize_skip_max: Duration,
}

impl Limits {
    /// How long a topic is skipped after it brought a packet above the ceiling `strikes`
    /// times in a row (1 = the first time).
    #[must_use]
    pub fn oversize_skip(&self, strikes: u32) -> Duration {
        let shift = strikes.saturating_sub(1).min(20);
        self.oversize_skip_initial
            .saturating_mul(1u32 << shift)
            .min(self.oversize_skip_max)
    }
}

/// The default transport ceiling: 2 MiB and 64 KiB, twice fleet's largest protocol limit
/// (1 MiB) plus room for the topic and headers.
pub const TRANSPORT_CEILING: usize = 2 * 1024 * 1024 + 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_bytes: TRANSPORT_CEILING,
            request_capacity: 64,
            event_capacity: 64,
            max_subscriptions: 1024,
            max_credential_file_bytes: 256 * 1024,
            oversize_skip_initial: Duration::from_secs(30),
            oversize_skip_max: Duration::from_secs(3600),
        }
    }
}

/// Exponential backoff between connection attempts, with jitter so that a fleet does not
/// reconnect in lock-step after a broker restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// The delay doubles after every further failure up to this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// How long a connection must stay up before the failure count starts again from zero.
    /// A connection the broker accepts and that then drops at once (a retained packet above
    /// the transport ceiling, a broker that kicks the client after its ACL check) counts as
    /// one more failure, so the delay keeps growing instead of reconnecting many times a
    /// second.
    pub const STABLE_AFTER: Duration = Duration::from_secs(10);

    /// The consecutive failure count after a drop: `previous + 1`, or `1` when the connection
    /// that dropped had been up for at least [`Backoff::STABLE_AFTER`]. `up_for` is `None` when
    /// no connection was made (connect refused, credentials unusable).
    #[must_use]
    pub fn failures_after_drop(previous: u32, up_for: Option<Duration>) -> u32 {
        match up_for {
            Some(up) if up >= Self::STABLE_AFTER => 1,
            _ => previous.saturating_add(1),
        }
    }

    /// The nominal delay after `failures` consecutive failures (1 = first failure), before
    /// jitter.
    #[must_use]
    pub fn nominal(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.initial
            .saturating_mul(1u32 << shift)
            .min(self.max)
            .max(Duration::from_millis(1))
    }

    /// The delay to wait: uniformly drawn from `[nominal / 2, nominal]` ("equal jitter").
    /// `unit` is a random number in `[0, 1)`; passing it in keeps this function pure.
    #[must_use]
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let nominal = self.nominal(failures);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The message the broker publishes for this session when it drops without a clean disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    /// Plain TCP or TLS; `host` is the name the broker's certificate must carry.
    pub transport: Transport,
    /// A user name and password for brokers that want one (besides or instead of a client
    /// certificate).
    pub credentials: Option<Credentials>,
    pub keep_alive: Duration,
    pub will: Option<Will>,
    pub backoff: Backoff,
    pub limits: Limits,
}

impl SessionConfig {
    /// A plain-TCP configuration with default keep-alive (30 s), backoff and limits, no
    /// credentials and no will.
    #[must_use]
    pub fn new(client_id: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            client_id: client_id.into(),
            host: host.into(),
            port,
            transport: Transport::Plain,
            credentials: None,
            keep_alive: Duration::from_secs(30),
            will: None,
            backoff: Backoff::default(),
            limits: Limits::default(),
        }
    }
}

/// One message received on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// What the driver reports to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A connection is up and every subscribed topic was (re)subscribed. The owner republishes
    /// its retained state here: a clean session does not keep what was queued while down.
    Connected,
    /// The connection dropped or could not be made; the next attempt follows after `retry_in`.
    Disconnected {
        reason: String,
        retry_in: Duration,
    },
    Message(Message),
    /// Right after `topic` was subscribed, the broker sent a packet of `size` bytes above the
    /// transport ceiling (a retained message nobody can read): the connection dropped and the
    /// topic is left out for `retry_in`, `strikes` times in a row now (see [`SkippedTopic`]).
    /// Comes before the [`SessionEvent::Disconnected`] of the drop it caused.
    TopicSkipped {
        topic: String,
        size: usize,
        strikes: u32,
        retry_in: Duration,
    },
}

/// A failed session operation.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unable to publish to {topic}: {source}")]
    Publish {
        topic: String,
        #[source]
        source: rumqttc::ClientError,
    },
    #[error("unable to subscribe to {topic}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: rumqttc::ClientError,
    },
    #[error("unable to unsubscribe from {topic}: {source}")]
    Unsubscribe {
        topic: String,
        #[source]
        source: rumqttc::ClientError,
    },
    #[error("unable to subscribe to {topic}: already {max} subscriptions")]
    TooManySubscriptions { topic: String, max: usize },
    #[error("unable to disconnect: {0}")]
    Disconnect(#[source] rumqttc::ClientError),
}

impl SessionError {
    /// Request-queue errors mean the driver stopped: retrying does not help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Counters of one session, for reports and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Payload bytes of every message received.
    pub received_payload_bytes: AtomicU64,
    /// Messages received.
    pub received_messages: AtomicU64,
    /// Successful connects.
    pub connects: AtomicU64,
}

/// A subscribed topic the session does not subscribe for now: right after it was subscribed,
/// the broker sent a packet above the transport ceiling (a retained message nobody can read,
/// which would otherwise drop every connection at once). It is subscribed again after
/// `retry_in`; when it passes then, it is forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTopic {
    pub topic: String,
    /// The size the broker announced for the packet, in bytes.
    pub size: usize,
    /// How many times in a row the topic brought such a packet.
    pub strikes: u32,
    /// Until the topic is subscribed again.
    pub retry_in: Duration,
}

#[derive(Debug)]
struct Skip {
    size: usize,
    strikes: u32,
    until: tokio::time::Instant,
}

/// One step of a subscription burst, in the order sent: a SUBSCRIBE of one topic, and at the
/// end an UNSUBSCRIBE of [`END_OF_RETAINED`] whose UNSUBACK follows every retained message.
#[derive(Debug)]
enum Burst {
    Topic(String),
    End,
}

/// A filter the session never subscribes: unsubscribing it marks the end of a burst (the
/// broker answers in order, after the retained messages of the topics before it).
const END_OF_RETAINED: &str = "fleet-mqtt/end-of-retained";

#[derive(Debug, Default)]
struct Subscriptions {
    connected: bool,
    topics: BTreeSet<String>,
    /// What the driver subscribed since the connect and waits an acknowledgement for.
    burst: VecDeque<Burst>,
    /// The topic whose SUBACK came last in a burst: its retained messages are arriving now.
    suspect: Option<String>,
    skipped: BTreeMap<String, Skip>,
}

impl Subscriptions {
    /// A SUBACK (`sub`) or UNSUBACK arrived: advance the burst. The previous suspect brought
    /// nothing too large, so it is no longer skipped.
    fn acked(&mut self, sub: bool) {
        let next = match (self.burst.front(), sub) {
            (Some(Burst::Topic(_)), true) => match self.burst.pop_front() {
                Some(Burst::Topic(t)) => Some(t),
                _ => None,
            },
            (Some(Burst::End), false) => {
                self.burst.pop_front();
                None
            }
            // An acknowledgement of the owner's own request.
            _ => return,
        };
        if let Some(prev) = std::mem::replace(&mut self.suspect, next) {
            self.skipped.remove(&prev);
        }
    }
}

/// Subscribes `topics` one SUBSCRIBE each, in order, then marks the end (see [`Burst`]).
fn start_burst(client: &AsyncClient, subs: &Arc<Mutex<Subscriptions>>, topics: Vec<String>) {
    if topics.is_empty() {
        return;
    }
    {
        let mut s = lock(subs);
        s.burst.extend(topics.iter().cloned().map(Burst::Topic));
        s.burst.push_back(Burst::End);
    }
    // Never await the request queue from the driver: it is the one draining it.
    let client = client.clone();
    tokio::spawn(async move {
        for t in topics {
            if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                tracing::warn!(error = %e, "unable to resubscribe after connect");
                return;
            }
        }
        if let Err(e) = client.unsubscribe(END_OF_RETAINED).await {
            tracing::warn!(error = %e, "unable to mark the end of the subscriptions");
        }
    });
}

/// A handle to a running session. Cheap to clone; the driver task stops when every event
/// receiver is dropped, on [`Session::disconnect`] or on [`Session::abort`].
#[derive(Debug, Clone)]
pub struct Session {
    client: AsyncClient,
    subs: Arc<Mutex<Subscriptions>>,
    stats: Arc<Stats>,
    max_subscriptions: usize,
    driver: Arc<Mutex<Option<JoinHandle<()>>>>,
    acks: watch::Receiver<Acks>,
}

impl Session {
    /// Starts the driver task (on the current tokio runtime) and returns the handle and the
    /// bounded stream of events.
    #[must_use]
    pub fn start(config: SessionConfig) -> (Session, mpsc::Receiver<SessionEvent>) {
        let mut options =
            MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(
                config.limits.max_packet_bytes,
                config.limits.max_packet_bytes,
            )
            .set_request_channel_capacity(config.limits.request_capacity)
            .set_inflight(32);
        if let Some(will) = &config.will {
            options.set_last_will(LastWill::new(
                will.topic.clone(),
                will.payload.clone(),
                QoS::AtLeastOnce,
                will.retain,
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(options, config.limits.request_capacity);
        // Nagle's algorithm holds each small packet (PUBACK, SUBSCRIBE, UNSUBSCRIBE) until the
        // broker acknowledged the one before; the broker delays that acknowledgement (40 ms on
        // Linux) while it has nothing to send back. Every chunk of a download is such a round
        // trip: with Nagle on, a window of 8 chunks moved about 8 chunks per 40 ms.
        eventloop.network_options.set_tcp_nodelay(true);
        let (tx, rx) = mpsc::channel(config.limits.event_capacity);
        let subs = Arc::new(Mutex::new(Subscriptions::default()));
        let stats = Arc::new(Stats::default());
        let (acks_tx, acks) = watch::channel(Acks::default());
        let driver = Driver {
            eventloop,
            client: client.clone(),
            subs: subs.clone(),
            stats: stats.clone(),
            tx,
            backoff: config.backoff,
            transport: config.transport,
            credentials: config.credentials,
            max_credential_file_bytes: config.limits.max_credential_file_bytes,
            acks: acks_tx,
            limits: config.limits.clone(),
        };
        let handle = tokio::spawn(driver.run());
        let session = Session {
            client,
            subs,
            stats,
            max_subscriptions: config.limits.max_subscriptions,
            driver: Arc::new(Mutex::new(Some(handle))),
            acks,
        };
        (session, rx)
    }

    /// Publishes with QoS 1. Waits while the request queue is full.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), SessionError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .map_err(|source| SessionError::Publish {
                topic: topic.to_owned(),
                source,
            })
    }

    /// Publishes with QoS 1 without waiting; fails when the request queue is full.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), SessionError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .map_err(|source| SessionError::Publish {
                topic: topic.to_owned(),
                source,
            })
    }

    /// Subscribes `topic` (QoS 1) now when connected and again after every reconnect.
    pub async fn subscribe(&self, topic: &str) -> Result<(), SessionError> {
        self.subscribe_many(&[topic.to_owned()]).await
    }

    /// Subscribes several topics in one request.
    pub async fn subscribe_many(&self, topics: &[String]) -> Result<(), SessionError> {
        let fresh: Vec<String> = {
            let mut subs = lock(&self.subs);
            let mut fresh = Vec::new();
            for t in topics {
                if subs.topics.contains(t) {
                    continue;
                }
                if subs.topics.len() >= self.max_subscriptions {
                    return Err(SessionError::TooManySubscriptions {
                        topic: t.clone(),
                        max: self.max_subscriptions,
                    });
                }
                subs.topics.insert(t.clone());
                fresh.push(t.clone());
            }
            if !subs.connected {
                // The driver subscribes every topic in the set on the next connect.
                return Ok(());
            }
            fresh
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let first = fresh[0].clone();
        self.client
            .subscribe_many(
                fresh
                    .into_iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce)),
            )
            .await
            .map_err(|source| SessionError::Subscribe {
                topic: first,
                source,
            })
    }

    /// Unsubscribes `topic` and forgets it for reconnects.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), SessionError> {
        let connected = {
            let mut subs = lock(&self.subs);
            subs.skipped.remove(topic);
            if !subs.topics.remove(topic) {
                return Ok(());
            }
            subs.connected
        };
        if connected {
            self.client
                .unsubscribe(topic)
                .await
                .map_err(|source| SessionError::Unsubscribe {
                    topic: topic.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Topics subscribed now (for tests and reports).
    #[must_use]
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.subs).topics.iter().cloned().collect()
    }

    /// Subscriptions skipped for now because the broker sent a packet above the transport
    /// ceiling right after each was subscribed (a person must clear that retained message).
    #[must_use]
    pub fn skipped(&self) -> Vec<SkippedTopic> {
        let now = tokio::time::Instant::now();
        lock(&self.subs)
            .skipped
            .iter()
            .map(|(topic, s)| SkippedTopic {
                topic: topic.clone(),
                size: s.size,
                strikes: s.strikes,
                retry_in: s.until.saturating_duration_since(now),
            })
            .collect()
    }

    /// True while a connection is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        lock(&self.subs).connected
    }

    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sends a clean MQTT disconnect (the broker does not publish the will) and stops the
    /// driver once it went out.
    pub async fn disconnect(&self) -> Result<(), SessionError> {
        self.client
            .disconnect()
            .await
            .map_err(SessionError::Disconnect)
    }

    /// Stops the driver at once and drops the socket without a disconnect, as a power cut
    /// would: the broker publishes the will.
    pub fn abort(&self) {
        if let Some(handle) = lock(&self.driver).take() {
            handle.abort();
        }
    }

    /// Waits for the driver task to end (after [`Session::disconnect`]).
    pub async fn join(&self) {
        let handle = lock(&self.driver).take();
        if let Some(handle) = handle {
            // A cancelled or panicked driver has nothing more to report.
            let _ = handle.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the set inconsistent (single inserts).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Driver {
    eventloop: EventLoop,
    client: AsyncClient,
    subs: Arc<Mutex<Subscriptions>>,
    stats: Arc<Stats>,
    tx: mpsc::Sender<SessionEvent>,
    backoff: Backoff,
    transport: Transport,
    credentials: Option<Credentials>,
    max_credential_file_bytes: u64,
    acks: watch::Sender<Acks>,
    limits: Limits,
}

impl Driver {
    /// Reads the credential files and sets them on the event loop's options; called before
    /// every connection attempt.
    fn prepare_connect(&mut self) -> Result<(), CredentialError> {
        let options = &mut self.eventloop.mqtt_options;
        match &self.transport {
            Transport::Plain => {
                options.set_transport(rumqttc::Transport::Tcp);
            }
            Transport::Tls(tls) => {
                let config = tls.client_config(self.max_credential_file_bytes)?;
                options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                    config,
                )));
            }
        }
        if let Some(creds) = &self.credentials {
            let password = creds
                .password(self.max_credential_file_bytes)?
                .unwrap_or_default();
            options.set_credentials(creds.username.clone(), password);
        }
        Ok(())
    }

    /// Counts a failure, reports it and waits the backoff. False when the owner is gone.
    /// `credentials` marks a credential file that cannot be used: a person must act (unless
    /// the file is merely missing and provisioning may still bring it).
    async fn failed(
        &mut self,
        failures: &mut u32,
        connected_at: &mut Option<tokio::time::Instant>,
        reason: String,
        credentials: Option<bool>,
    ) -> bool {
        lock(&self.subs).connected = false;
        let up_for = connected_at.take().map(|t| t.elapsed());
        *failures = Backoff::failures_after_drop(*failures, up_for);
        let unit: f64 = rand::thread_rng().r#gen();
        let retry_in = self.backoff.delay(*failures, unit);
        let retry_in_ms = retry_in.as_millis() as u64;
        match credentials {
            None => {
                tracing::warn!(error = %reason, failures = *failures, retry_in_ms, "mqtt connection lost")
            }
            Some(true) => {
                tracing::warn!(error = %reason, failures = *failures, retry_in_ms, "mqtt credentials not available yet")
            }
            Some(false) => {
                tracing::error!(error = %reason, failures = *failures, retry_in_ms, "mqtt credentials unusable")
            }
        }
        let event = SessionEvent::Disconnected { reason, retry_in };
        if self.tx.send(event).await.is_err() {
            return false;
        }
        tokio::time::sleep(retry_in).await;
        true
    }

    /// Tidies up after a dropped connection: hands out what was read before the drop, drops
    /// queued (un)subscriptions (every topic is subscribed again at the next connect), and
    /// skips the topic that brought a packet above the ceiling. False when the owner is gone.
    async fn after_drop(&mut self, e: &rumqttc::ConnectionError) -> bool {
        // Packets read in the same batch as the failing one were not handed out yet; rumqttc
        // would hand them out after the next connect, where their acknowledgements mislead.
        let stale: Vec<Event> = self.eventloop.state.events.drain(..).collect();
        for ev in stale {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => lock(&self.subs).acked(true),
                Event::Incoming(Packet::UnsubAck(_)) => lock(&self.subs).acked(false),
                Event::Incoming(Packet::Publish(p)) => {
                    let msg = Message {
                        topic: p.topic,
                        payload: p.payload,
                        retain: p.retain,
                    };
                    if self.tx.send(SessionEvent::Message(msg)).await.is_err() {
                        return false;
                    }
                }
                _ => {}
            }
        }
        // rumqttc replays unsent requests on the next connection: a replayed SUBSCRIBE of the
        // culprit would bring its packet again.
        self.eventloop
            .pending
            .retain(|r| !matches!(r, Request::Subscribe(_) | Request::Unsubscribe(_)));
        let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) = e
        else {
            return true;
        };
        let (topic, strikes, delay) = {
            let mut subs = lock(&self.subs);
            let Some(topic) = subs.suspect.take() else {
                return true;
            };
            subs.burst.clear();
            let strikes = subs.skipped.get(&topic).map_or(1, |s| s.strikes + 1);
            let delay = self.limits.oversize_skip(strikes);
            subs.skipped.insert(
                topic.clone(),
                Skip {
                    size: *size,
                    strikes,
                    until: tokio::time::Instant::now() + delay,
                },
            );
            (topic, strikes, delay)
        };
        tracing::error!(
            topic = %topic,
            size = *size,
            ceiling = self.eventloop.mqtt_options.max_packet_size(),
            strikes,
            retry_in_ms = delay.as_millis() as u64,
            "a retained message above the transport ceiling: topic skipped; clear it on the broker"
        );
        let event = SessionEvent::TopicSkipped {
            topic: topic.clone(),
            size: *size,
            strikes,
            retry_in: delay,
        };
        if self.tx.send(event).await.is_err() {
            return false;
        }
        let client = self.client.clone();
        let subs = self.subs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due = {
                let s = lock(&subs);
                s.connected
                    && s.topics.contains(&topic)
                    && s.skipped
                        .get(&topic)
                        .is_some_and(|k| k.until <= tokio::time::Instant::now())
            };
            // When not connected, the next connect subscribes it (its time is up).
            if due {
                start_burst(&client, &subs, vec![topic]);
            }
        });
        true
    }

    async fn run(mut self) {
        let mut failures: u32 = 0;
        // When the connection up now was made: a drop soon after does not reset the backoff.
        let mut connected_at: Option<tokio::time::Instant> = None;
        // rumqttc connects on the first poll and on the first poll after an error.
        let mut needs_connect = true;
        loop {
            if self.tx.is_closed() {
                // Nobody listens any more (the owner returned): drop the connection. Checked
                // at every event, so at the latest at the next keep-alive ping.
                lock(&self.subs).connected = false;
                return;
            }
            if needs_connect {
                if let Err(e) = self.prepare_connect() {
                    let retryable = e.is_retryable();
                    if !self
                        .failed(
                            &mut failures,
                            &mut connected_at,
                            e.to_string(),
                            Some(retryable),
                        )
                        .await
                    {
                        return;
                    }
                    continue;
                }
                tracing::debug!(transport = self.transport.name(), "mqtt connecting");
                needs_connect = false;
            }
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(code = ?ack.code, failures, "mqtt connected");
                    connected_at = Some(tokio::time::Instant::now());
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    let now = tokio::time::Instant::now();
                    let topics: Vec<String> = {
                        let mut subs = lock(&self.subs);
                        subs.connected = true;
                        subs.burst.clear();
                        subs.suspect = None;
                        let subs = &*subs;
                        subs.topics
                            .iter()
                            .filter(|t| subs.skipped.get(*t).is_none_or(|s| s.until <= now))
                            .cloned()
                            .collect()
                    };
                    start_burst(&self.client, &self.subs, topics);
                    if self.tx.send(SessionEvent::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.stats
                        .received_payload_bytes
                        .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    self.stats.received_messages.fetch_add(1, Ordering::Relaxed);
                    let msg = Message {
                        topic: p.topic,
                        payload: p.payload,
                        retain: p.retain,
                    };
                    if self.tx.send(SessionEvent::Message(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(ack @ Packet::SubAck(_))) => {
                    oneshot::record(&self.acks, &ack);
                    lock(&self.subs).acked(true);
                }
                Ok(Event::Incoming(ack @ Packet::PubAck(_))) => {
                    oneshot::record(&self.acks, &ack);
                }
                Ok(Event::Incoming(Packet::UnsubAck(_))) => lock(&self.subs).acked(false),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::info!("mqtt disconnected on request");
                    lock(&self.subs).connected = false;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    needs_connect = true;
                    if !self.after_drop(&e).await {
                        return;
                    }
                    let reason = describe(&e, self.eventloop.mqtt_options.max_packet_size());
                    if !self
                        .failed(&mut failures, &mut connected_at, reason, None)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// The reason reported for a dropped connection; a packet above the transport ceiling is
/// named as such (rumqttc only says "payload size limit exceeded").
fn describe(e: &rumqttc::ConnectionError, ceiling: usize) -> String {
    if let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
        rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
    )) = e
    {
        return format!(
            "the broker sent a packet of {size} bytes, above the transport ceiling of {ceiling} \
             bytes: the connection is dropped to skip it (set message_size_limit on the broker)"
        );
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.nominal(1), Duration::from_millis(100));
        assert_eq!(b.nominal(2), Duration::from_millis(200));
        assert_eq!(b.nominal(4), Duration::from_millis(800));
        assert_eq!(b.nominal(5), Duration::from_secs(1));
        assert_eq!(b.nominal(1000), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_delay() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(300));
        assert!(b.delay(3, 0.999) <= Duration::from_millis(400));
        assert_eq!(b.delay(3, 7.0), Duration::from_millis(400));
    }

    #[test]
    fn drops_right_after_connecting_keep_growing_the_backoff() {
        let soon = Some(Duration::from_millis(80));
        let mut failures = 0;
        for expected in 1..=6 {
            failures = Backoff::failures_after_drop(failures, soon);
            assert_eq!(failures, expected);
        }
        let b = Backoff::default();
        assert!(b.nominal(failures) > b.nominal(1) * 16);
        // Failed attempts that never connected count the same way.
        assert_eq!(Backoff::failures_after_drop(failures, None), 7);
    }

    #[test]
    fn a_connection_that_stayed_up_starts_the_count_again() {
        let long = Some(Backoff::STABLE_AFTER);
        assert_eq!(Backoff::failures_after_drop(9, long), 1);
        assert_eq!(Backoff::failures_after_drop(u32::MAX, None), u32::MAX);
    }

    #[test]
    fn a_zero_initial_delay_still_waits_a_little() {
        let b = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert!(b.nominal(1) > Duration::ZERO);
    }
}
