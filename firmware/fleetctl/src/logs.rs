//! `fleetctl logs STATION`: a signed log request to one station and its paged replies
//! (`docs/reference/mqtt-protocol.md`, "Remote logs").
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use fleet_core::ids::DeviceId;
use fleet_proto::envelope::{self, Kind};
use fleet_proto::logs::{LogEntry, LogOutcome, LogRefusal, LogRequest, decode_reply};
use fleet_proto::topic;

use crate::connection::{BrokerAddr, Connection, ConnectionError};

/// What to ask for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub station: DeviceId,
    pub unit: Option<String>,
    pub lines: u32,
    pub since_unix_s: Option<i64>,
    /// How long the request stays valid, and how long to wait for the last page.
    pub wait: Duration,
}

/// Why no lines came back.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("unable to ask {station} for its logs: the station refused: {reason}")]
    Refused {
        station: DeviceId,
        reason: LogRefusal,
    },
    #[error(
        "unable to ask {station} for its logs: no answer within {} s (is it online, and does fleet-reporterd run?)",
        .waited.as_secs()
    )]
    NoAnswer { station: DeviceId, waited: Duration },
    #[error("unable to sign the request: {0}")]
    Sign(String),
}

/// Signs the request, publishes it and collects every page of the answer.
pub async fn fetch(
    addr: &BrokerAddr,
    key: &SigningKey,
    ask: &Ask,
) -> Result<Vec<LogEntry>, LogsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let req = LogRequest {
        device_id: ask.station.clone(),
        sequence: now.as_millis() as u64,
        issued_at: now.as_secs() as i64,
        expires_at: now.as_secs() as i64 + ask.wait.as_secs().clamp(1, 3600) as i64,
        unit: ask.unit.clone(),
        lines: ask.lines,
        since_unix_s: ask.since_unix_s,
    };
    let sealed = envelope::seal_json(Kind::LogRequest, &req, key)
        .map_err(|e| LogsError::Sign(e.to_string()))?;
    let timeout = Duration::from_secs(10);
    let mut conn = Connection::open(addr, "fleetctl-logs", timeout).await?;
    let reply_topic = topic::device_log_reply(&ask.station);
    conn.subscribe(std::slice::from_ref(&reply_topic), timeout)
        .await?;
    conn.publish(&topic::device_log_request(&ask.station), sealed, false)
        .await?;
    let deadline = tokio::time::Instant::now() + ask.wait;
    let mut pages: Vec<(u32, Vec<LogEntry>)> = Vec::new();
    let mut last_page: Option<u32> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(LogsError::NoAnswer {
                station: ask.station.clone(),
                waited: ask.wait,
            });
        }
        let Some(m) = conn.next_message(left).await? else {
            continue;
        };
        if m.topic != reply_topic {
            continue;
        }
        // Replies to other operators' requests share the topic: keep ours.
        let Ok(reply) = decode_reply(&m.payload) else {
            continue;
        };
        if reply.sequence.is_some_and(|s| s != req.sequence) {
            continue;
        }
        match reply.outcome {
            LogOutcome::Refused { reason } => {
                return Err(LogsError::Refused {
                    station: ask.station.clone(),
                    reason,
                });
            }
            LogOutcome::Lines {
                page,
                last,
                entries,
            } => {
                if last {
                    last_page = Some(page);
                }
                if !pages.iter().any(|(p, _)| *p == page) {
                    pages.push((page, entries));
                }
            }
        }
        if let Some(l) = last_page
            && pages.len() as u64 == u64::from(l) + 1
        {
            break;
        }
    }
    pages.sort_by_key(|(p, _)| *p);
    Ok(pages.into_iter().flat_map(|(_, e)| e).collect())
}

/// One line as `journalctl` would print it: time (UTC), unit, priority mark, message.
#[must_use]
pub fn render(e: &LogEntry) -> String {
    let secs = (e.at_us / 1_000_000) as i64;
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    let mark = match e.priority {
        0..=3 => " ERR",
        4 => " WARN",
        _ => "",
    };
    format!(
        "{t} {}{mark}: {}",
        e.unit.as_deref().unwrap_or("-"),
        e.message
    )
}
