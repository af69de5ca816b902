//! The log responder: opens a signed log request, applies `fleet_proto::logs::admit`, reads
//! the journal with the request's validated values only (`journalctl --output=json`, bounded
//! lines, bytes and time), and returns the reply pages. The last admitted sequence is stored
//! atomically before the journal is read, so a replay is refused after a restart too.
//!
//! The trusted keys are the station's bootstrap offer-signing keys (`trusted-keys` in
//! `updated.toml`); key rotations applied by `fleet-updated` are not followed yet.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fleet_core::ids::DeviceId;
use fleet_core::time::Now;
use fleet_proto::Limits;
use fleet_proto::envelope::{self, EnvelopeError, Kind, TrustedKeys};
use fleet_proto::logs::{self, LogEntry, LogOutcome, LogRefusal, LogReply, LogRequest};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

/// How the journal is read.
#[derive(Debug, Clone)]
pub struct Journal {
    /// `journalctl`.
    pub program: PathBuf,
    /// Read the journal files in this directory instead of the system journal (tests).
    pub directory: Option<PathBuf>,
    /// A read that takes longer is abandoned.
    pub timeout: Duration,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            program: PathBuf::from("journalctl"),
            directory: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Largest output read from journalctl per requested line, in bytes (JSON of one entry with
/// its fields; the whole read is bounded by lines × this).
const MAX_BYTES_PER_LINE: usize = 16 * 1024;

/// The responder's state.
#[derive(Debug)]
pub struct Responder {
    station: DeviceId,
    trusted: TrustedKeys,
    state_file: PathBuf,
    last: Option<u64>,
    journal: Journal,
}

fn refused(station: &DeviceId, sequence: Option<u64>, reason: LogRefusal) -> Vec<Vec<u8>> {
    vec![fleet_proto::payload::encode(&LogReply {
        device_id: station.clone(),
        sequence,
        outcome: LogOutcome::Refused { reason },
    })]
}

impl Responder {
    /// Loads the last admitted sequence from `state_file` (absent: none yet).
    #[must_use]
    pub fn new(
        station: DeviceId,
        trusted: TrustedKeys,
        state_file: PathBuf,
        journal: Journal,
    ) -> Self {
        let last = std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        Self {
            station,
            trusted,
            state_file,
            last,
            journal,
        }
    }

    /// Answers one request message: the reply pages to publish, in order.
    pub async fn handle(&mut self, payload: &[u8], now: Now) -> Vec<Vec<u8>> {
        let opened = match envelope::open_json::<LogRequest>(
            payload,
            Kind::LogRequest,
            &self.trusted,
            &Limits::DEFAULT,
        ) {
            Ok(o) => o,
            Err(e) => {
                let reason = match e {
                    EnvelopeError::UnknownKey(k) | EnvelopeError::RevokedKey(k) => {
                        LogRefusal::UnknownKey {
                            key_id: k.to_string(),
                        }
                    }
                    EnvelopeError::BadSignature => LogRefusal::BadSignature,
                    other => LogRefusal::Malformed {
                        detail: other.to_string(),
                    },
                };
                tracing::warn!(reason = %reason, "log request refused");
                return refused(&self.station, None, reason);
            }
        };
        let req = opened.value;
        if let Err(reason) = logs::admit(&req, &self.station, self.last, now) {
            tracing::warn!(sequence = req.sequence, reason = %reason, "log request refused");
            return refused(&self.station, Some(req.sequence), reason);
        }
        // Persist before reading: a crash mid-answer never lets the same request in again.
        if let Err(e) = store_sequence(&self.state_file, req.sequence) {
            let reason = LogRefusal::JournalUnreadable {
                detail: format!("unable to record the request's sequence: {e}"),
            };
            return refused(&self.station, Some(req.sequence), reason);
        }
        self.last = Some(req.sequence);
        tracing::info!(
            sequence = req.sequence,
            key_id = %opened.key_id,
            unit = req.unit.as_deref().unwrap_or("*"),
            lines = req.lines,
            "answering log request"
        );
        match read_journal(&self.journal, &req).await {
            Ok(entries) => logs::paginate(&self.station, req.sequence, entries),
            Err(detail) => refused(
                &self.station,
                Some(req.sequence),
                LogRefusal::JournalUnreadable { detail },
            ),
        }
    }
}

fn store_sequence(path: &Path, seq: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    fleet_bootctl::atomic::write_atomic(
        path,
        format!("{seq}\n").as_bytes(),
        fleet_bootctl::atomic::Replace::Rename,
    )
}

/// The journalctl arguments for a request: only validated values, each as its own argument.
#[must_use]
pub fn journal_args(j: &Journal, req: &LogRequest) -> Vec<String> {
    let mut a = vec![
        "--output=json".to_string(),
        "--no-pager".into(),
        "--quiet".into(),
        format!("--lines={}", req.lines),
    ];
    if let Some(d) = &j.directory {
        a.push(format!("--directory={}", d.display()));
    }
    if let Some(u) = &req.unit {
        a.push(format!("--unit={u}"));
    }
    if let Some(s) = req.since_unix_s {
        a.push(format!("--since=@{s}"));
    }
    a
}

async fn read_journal(j: &Journal, req: &LogRequest) -> Result<Vec<LogEntry>, String> {
    let mut child = tokio::process::Command::new(&j.program)
        .args(journal_args(j, req))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("unable to start {}: {e}", j.program.display()))?;
    let limit = (req.lines as usize).saturating_mul(MAX_BYTES_PER_LINE);
    let mut out = Vec::new();
    let stdout = child.stdout.take().ok_or("journalctl has no output")?;
    let read = async {
        let mut r = stdout.take(limit as u64 + 1);
        r.read_to_end(&mut out).await
    };
    match tokio::time::timeout(j.timeout, read).await {
        Err(_) => {
            return Err(format!(
                "journalctl took longer than {} s",
                j.timeout.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("unable to read journalctl's output: {e}")),
        Ok(Ok(_)) => {}
    }
    let _ = child.kill().await;
    let entries: Vec<LogEntry> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter_map(|v| entry(&v))
        .collect();
    Ok(entries)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // Binary fields come as arrays of bytes.
        Value::Array(a) => Some(
            String::from_utf8_lossy(
                &a.iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
        ),
        _ => None,
    }
}

fn entry(v: &Value) -> Option<LogEntry> {
    let at_us = v.get("__REALTIME_TIMESTAMP").and_then(text)?.parse().ok()?;
    let priority = v
        .get("PRIORITY")
        .and_then(text)
        .and_then(|p| p.parse::<u8>().ok())
        .map_or(6, |p| p.min(7));
    let unit = v
        .get("_SYSTEMD_UNIT")
        .or_else(|| v.get("SYSLOG_IDENTIFIER"))
        .and_then(text)
        .map(|u| u.chars().take(logs::MAX_UNIT_LEN).collect());
    let message = v.get("MESSAGE").and_then(text).unwrap_or_default();
    Some(LogEntry {
        at_us,
        priority,
        unit,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_validated_values_reach_journalctl_each_as_one_argument() {
        let req = LogRequest {
            device_id: DeviceId::new("stn-1").expect("id"),
            sequence: 1,
            issued_at: 0,
            expires_at: 60,
            unit: Some("fleet-updated.service".into()),
            lines: 50,
            since_unix_s: Some(1_790_000_000),
        };
        let j = Journal::default();
        assert_eq!(
            journal_args(&j, &req),
            [
                "--output=json",
                "--no-pager",
                "--quiet",
                "--lines=50",
                "--unit=fleet-updated.service",
                "--since=@1790000000"
            ]
        );
    }

    #[test]
    fn journal_json_fields_become_entries_binary_messages_included() {
        let v: Value = serde_json::from_str(
            r#"{"__REALTIME_TIMESTAMP":"1790000000123456","PRIORITY":"3",
            "_SYSTEMD_UNIT":"fleet-updated.service","MESSAGE":[104,105]}"#,
        )
        .expect("json");
        let e = entry(&v).expect("entry");
        assert_eq!(
            e,
            LogEntry {
                at_us: 1_790_000_000_123_456,
                priority: 3,
                unit: Some("fleet-updated.service".into()),
                message: "hi".into()
            }
        );
        assert_eq!(entry(&serde_json::json!({"MESSAGE": "x"})), None);
    }
}
