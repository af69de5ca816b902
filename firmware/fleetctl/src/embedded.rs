//! An MQTT broker inside this process (rumqttd) on a free loopback port, for `fleetctl demo`:
//! nothing to install. rumqttd has no shutdown call; its threads end with the process.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::connection::{BrokerAddr, MAX_PACKET_BYTES};

/// Why the embedded broker did not come up.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("unable to find a free loopback port")]
    Port(#[source] std::io::Error),
    #[error("unable to start the embedded broker thread")]
    Thread(#[source] std::io::Error),
    #[error("unable to reach the embedded broker on {0} within {1:?}")]
    NotListening(SocketAddr, Duration),
}

/// A running in-process broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: BrokerAddr,
}

impl EmbeddedBroker {
    /// Starts rumqttd on `127.0.0.1:<free port>` and waits until it accepts connections.
    pub fn start() -> Result<Self, EmbeddedError> {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(EmbeddedError::Port)?;
            l.local_addr().map_err(EmbeddedError::Port)?.port()
        };
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = config(listen);
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let mut broker = Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker stopped");
                }
            })
            .map_err(EmbeddedError::Thread)?;
        let wait = Duration::from_secs(5);
        let started = Instant::now();
        while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
            if started.elapsed() > wait {
                return Err(EmbeddedError::NotListening(listen, wait));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            addr: BrokerAddr {
                host: listen.ip().to_string(),
                port,
            },
        })
    }

    #[must_use]
    pub fn addr(&self) -> &BrokerAddr {
        &self.addr
    }
}

fn config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET_BYTES,
        // rumqttd hands a new subscription at most this many retained messages at once, so it
        // must exceed the chunk count of a demo bundle.
        max_inflight_count: 1024,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-demo".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 1024,
            max_segment_size: 4 * MAX_PACKET_BYTES,
            max_segment_count: 2,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}
