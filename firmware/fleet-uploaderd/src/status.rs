//! The status file (`status-path`, JSON), read by the health message and `fleetctl status`.
//! Written atomically after every upload and every look at the queue.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the uploader is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// No destination configured: recordings stay on the station.
    Unconfigured,
    /// retentiond's index does not exist yet.
    IndexMissing,
    /// Nothing waiting.
    Idle,
    /// Sending a recording.
    Uploading,
    /// Recordings wait; `wait_reason` says why.
    Waiting,
}

/// The last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastFailure {
    pub reason: String,
    pub message: String,
    /// `None` while the clock is untrusted.
    pub at_unix_s: Option<i64>,
}

/// The status file's content (documented in `docs/reference/uploaderd.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub state: State,
    /// `outside-window`, `update-download`, `link-backoff`, `recording-backoff`.
    pub wait_reason: Option<String>,
    /// `s3://<bucket>` (endpoint omitted), or `None`.
    pub destination: Option<String>,
    pub queue_recordings: u64,
    pub queue_bytes: u64,
    /// Recordings parked after `dead-letter-after` failures.
    pub parked: u64,
    pub uploaded_total: u64,
    pub uploaded_bytes_total: u64,
    /// Bytes sent on the link (parts sent twice count twice).
    pub sent_bytes_total: u64,
    /// Recordings skipped because retention deleted them while queued.
    pub skipped_deleted_total: u64,
    pub last_success_unix_s: Option<i64>,
    pub last_success_key: Option<String>,
    pub last_failure: Option<LastFailure>,
    /// Failures since start, by reason (`connection`, `auth`, `http-503`, `checksum`, ...).
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Consecutive link failures.
    pub link_failures: u32,
    /// FLAC bytes / WAV bytes of the uploads since start, in thousandths.
    pub compression_permille: Option<u64>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            state: State::Idle,
            wait_reason: None,
            destination: None,
            queue_recordings: 0,
            queue_bytes: 0,
            parked: 0,
            uploaded_total: 0,
            uploaded_bytes_total: 0,
            sent_bytes_total: 0,
            skipped_deleted_total: 0,
            last_success_unix_s: None,
            last_success_key: None,
            last_failure: None,
            failures_by_reason: BTreeMap::new(),
            link_failures: 0,
            compression_permille: None,
        }
    }
}

/// Writes the status file, mode 0644 whatever the umask: the health reporter (another user)
/// reads it. It holds no secret.
///
/// # Errors
/// The write fails.
pub fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    fleet_durable::WriteOptions::new()
        .mode(0o644)
        .write(path, &bytes)
        .map_err(fleet_durable::Error::into_source)
}
