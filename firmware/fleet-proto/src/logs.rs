//! Remote logs: a signed request (`fleet/v1/devices/{id}/logs/request`, envelope kind
//! `log-request`) and the station's paged replies (`fleet/v1/devices/{id}/logs/reply`).
//!
//! A request names what to read, never how: an optional systemd unit (validated name), a line
//! count and a start time. The station reads its own journal with those values and nothing
//! else, so nothing in a request can run a command or read a file. [`admit`] is the rule a
//! station applies, first failure reported: signed by a trusted key (checked by the envelope),
//! for this station, sequence above the last admitted, not expired (judged only while the
//! station's clock is trusted), well formed.
use serde::{Deserialize, Serialize};

use fleet_core::ids::DeviceId;
use fleet_core::time::Now;

use crate::payload::PayloadError;

/// Most lines one request may ask for.
pub const MAX_LINES: u32 = 2000;
/// Longest validity (`expires-at - issued-at`) of a request, in seconds.
pub const MAX_VALIDITY_S: i64 = 3600;
/// Largest reply page, in bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Longest message of one entry, in bytes (longer ones are cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Longest unit name.
pub const MAX_UNIT_LEN: usize = 128;

/// What the operator asks for (the signed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogRequest {
    /// The station that should answer.
    pub device_id: DeviceId,
    /// Strictly increasing over every request to this station (`fleetctl logs` uses Unix
    /// milliseconds).
    pub sequence: u64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds, at most [`MAX_VALIDITY_S`] after `issued-at`.
    pub expires_at: i64,
    /// Only this systemd unit (`fleet-updated.service`); all units when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The newest this many lines, 1..=[`MAX_LINES`].
    pub lines: u32,
    /// Only lines at or after this Unix second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix_s: Option<i64>,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogEntry {
    /// Realtime timestamp, Unix microseconds (the station's clock, trusted or not).
    pub at_us: u64,
    /// syslog priority, 0 (emerg) ..= 7 (debug).
    pub priority: u8,
    /// `_SYSTEMD_UNIT`, or `SYSLOG_IDENTIFIER` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub message: String,
}

/// Why a station refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum LogRefusal {
    /// Not a signed envelope of kind `log-request` (an unsigned request is this).
    #[error("the request is not a signed log request: {detail}")]
    Malformed { detail: String },
    #[error("the request is signed by key {key_id}, which this station does not trust")]
    UnknownKey { key_id: String },
    #[error("the request's signature does not verify")]
    BadSignature,
    #[error("the request is for station {device_id}")]
    NotForThisStation { device_id: DeviceId },
    #[error("the request's sequence {sequence} is not above the last one answered, {last}")]
    Replayed { sequence: u64, last: u64 },
    #[error("the request expired at {expires_at} (station time {now})")]
    Expired { expires_at: i64, now: i64 },
    #[error("the request is invalid: {detail}")]
    Invalid { detail: String },
    #[error("the station could not read its journal: {detail}")]
    JournalUnreadable { detail: String },
}

/// What a reply carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum LogOutcome {
    /// One page of lines, oldest first. `last` marks the final page.
    Lines {
        page: u32,
        last: bool,
        entries: Vec<LogEntry>,
    },
    /// The request was refused; nothing was read.
    Refused { reason: LogRefusal },
}

/// One reply message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogReply {
    pub device_id: DeviceId,
    /// The request's sequence (absent when the request could not be read at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    pub outcome: LogOutcome,
}

/// A unit name systemd could have made: `[A-Za-z0-9:_.@\-]`, 1..=128 bytes, not starting
/// with `-` (so it can never read as an option).
#[must_use]
pub fn is_unit_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_UNIT_LEN
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
}

/// The admission rule (the envelope's signature was checked before). `last` is the sequence
/// of the last request this station admitted.
pub fn admit(
    req: &LogRequest,
    station: &DeviceId,
    last: Option<u64>,
    now: Now,
) -> Result<(), LogRefusal> {
    if &req.device_id != station {
        return Err(LogRefusal::NotForThisStation {
            device_id: req.device_id.clone(),
        });
    }
    if let Some(last) = last
        && req.sequence <= last
    {
        return Err(LogRefusal::Replayed {
            sequence: req.sequence,
            last,
        });
    }
    if req.expires_at <= req.issued_at || req.expires_at - req.issued_at > MAX_VALIDITY_S {
        return Err(LogRefusal::Invalid {
            detail: format!("expires-at must be 1..={MAX_VALIDITY_S} s after issued-at"),
        });
    }
    if let Some(wall) = now.wall_unix_s
        && wall >= req.expires_at
    {
        return Err(LogRefusal::Expired {
            expires_at: req.expires_at,
            now: wall,
        });
    }
    if !(1..=MAX_LINES).contains(&req.lines) {
        return Err(LogRefusal::Invalid {
            detail: format!("lines must be 1..={MAX_LINES}"),
        });
    }
    if let Some(u) = &req.unit
        && !is_unit_name(u)
    {
        return Err(LogRefusal::Invalid {
            detail: "unit is not a systemd unit name".into(),
        });
    }
    if req.since_unix_s.is_some_and(|s| s < 0) {
        return Err(LogRefusal::Invalid {
            detail: "since-unix-s is negative".into(),
        });
    }
    Ok(())
}

/// Reads a reply (bounded by [`MAX_REPLY_BYTES`]).
pub fn decode_reply(bytes: &[u8]) -> Result<LogReply, PayloadError> {
    if bytes.len() > MAX_REPLY_BYTES {
        return Err(PayloadError::TooLarge {
            size: bytes.len(),
            limit: MAX_REPLY_BYTES,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        PayloadError::Malformed(fleet_core::update::offer::truncate(&e.to_string(), 200))
    })
}

/// Cuts `entries` into reply pages of at most [`MAX_REPLY_BYTES`] each (an entry's message is
/// first cut to [`MAX_MESSAGE_BYTES`]), oldest first; at least one page, the last marked.
#[must_use]
pub fn paginate(device_id: &DeviceId, sequence: u64, entries: Vec<LogEntry>) -> Vec<Vec<u8>> {
    // Room for the envelope of a page (ids, keys) besides its entries.
    const OVERHEAD: usize = 512;
    let mut pages: Vec<Vec<LogEntry>> = vec![Vec::new()];
    let mut size = OVERHEAD;
    for mut e in entries {
        if e.message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !e.message.is_char_boundary(end) {
                end -= 1;
            }
            e.message.truncate(end);
        }
        let n = serde_json::to_vec(&e).map_or(MAX_MESSAGE_BYTES * 6, |v| v.len()) + 1;
        if size + n > MAX_REPLY_BYTES && pages.last().is_some_and(|p| !p.is_empty()) {
            pages.push(Vec::new());
            size = OVERHEAD;
        }
        size += n;
        if let Some(p) = pages.last_mut() {
            p.push(e);
        }
    }
    let count = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, entries)| {
            crate::payload::encode(&LogReply {
                device_id: device_id.clone(),
                sequence: Some(sequence),
                outcome: LogOutcome::Lines {
                    page: i as u32,
                    last: i + 1 == count,
                    entries,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> LogRequest {
        LogRequest {
            device_id: DeviceId::new("stn-1").expect("id"),
            sequence: 10,
            issued_at: 1_790_000_000,
            expires_at: 1_790_000_600,
            unit: Some("fleet-updated.service".into()),
            lines: 100,
            since_unix_s: None,
        }
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let me = DeviceId::new("stn-1").expect("id");
        let now = Now::trusted(0, 1_790_000_100);
        assert_eq!(admit(&req(), &me, Some(9), now), Ok(()));
        assert_eq!(admit(&req(), &me, None, Now::untrusted(0)), Ok(()));
        let other = DeviceId::new("stn-2").expect("id");
        assert!(matches!(
            admit(&req(), &other, None, now),
            Err(LogRefusal::NotForThisStation { .. })
        ));
        assert_eq!(
            admit(&req(), &me, Some(10), now),
            Err(LogRefusal::Replayed {
                sequence: 10,
                last: 10
            })
        );
        assert!(matches!(
            admit(&req(), &me, None, Now::trusted(0, 1_790_000_600)),
            Err(LogRefusal::Expired { .. })
        ));
        for bad in [
            LogRequest { lines: 0, ..req() },
            LogRequest {
                lines: MAX_LINES + 1,
                ..req()
            },
            LogRequest {
                unit: Some("--directory=/etc".into()),
                ..req()
            },
            LogRequest {
                unit: Some("a b".into()),
                ..req()
            },
            LogRequest {
                expires_at: 1_790_000_000 + MAX_VALIDITY_S + 1,
                ..req()
            },
            LogRequest {
                since_unix_s: Some(-1),
                ..req()
            },
        ] {
            assert!(
                matches!(admit(&bad, &me, None, now), Err(LogRefusal::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn long_answers_are_cut_into_bounded_pages_with_the_last_marked() {
        let id = DeviceId::new("stn-1").expect("id");
        let entries: Vec<LogEntry> = (0..400)
            .map(|i| LogEntry {
                at_us: i,
                priority: 6,
                unit: Some("x.service".into()),
                message: "é".repeat(1500),
            })
            .collect();
        let pages = paginate(&id, 7, entries);
        assert!(pages.len() > 1);
        let mut seen = 0;
        for (i, p) in pages.iter().enumerate() {
            assert!(p.len() <= MAX_REPLY_BYTES);
            let r = decode_reply(p).expect("decodes");
            let LogOutcome::Lines {
                page,
                last,
                entries,
            } = r.outcome
            else {
                panic!("lines");
            };
            assert_eq!(page as usize, i);
            assert_eq!(last, i + 1 == pages.len());
            for e in entries {
                assert_eq!(e.at_us, seen);
                assert!(e.message.len() <= MAX_MESSAGE_BYTES);
                seen += 1;
            }
        }
        assert_eq!(seen, 400);
        assert_eq!(paginate(&id, 7, vec![]).len(), 1);
    }
}
