//! fleet-uploaderd's status file (`status-path` in its configuration, on the image
//! `/run/fleet-uploaderd/status.json`), read into the health message's `uploader` part. Only
//! the keys used here are read; the uploader writes more (docs/reference/uploaderd.md). The
//! file lives in the uploader's runtime directory, which systemd removes when the uploader
//! stops: no file, no `uploader` part.
use std::collections::BTreeMap;
use std::path::Path;

use fleet_proto::health::{MAX_FAILURE_REASONS, UploaderHealth};
use serde::Deserialize;

/// Largest status file read, in bytes.
pub const MAX_STATUS_BYTES: u64 = 64 * 1024;
/// Longest state or reason word kept (the uploader's words are short kebab-case).
const MAX_WORD: usize = 32;

#[derive(Debug, Deserialize)]
struct StatusFile {
    state: String,
    #[serde(default)]
    wait_reason: Option<String>,
    queue_recordings: u64,
    queue_bytes: u64,
    parked: u64,
    #[serde(default)]
    last_success_unix_s: Option<i64>,
    #[serde(default)]
    last_failure: Option<LastFailure>,
    #[serde(default)]
    failures_by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct LastFailure {
    reason: String,
}

/// A word from the file: kept when short and printable, else `unknown`.
fn word(s: String) -> String {
    if s.len() <= MAX_WORD && !s.is_empty() && !s.chars().any(char::is_control) {
        s
    } else {
        "unknown".into()
    }
}

/// Reads the status file; `None` when it is absent, too large or unreadable.
#[must_use]
pub fn read(path: &Path) -> Option<UploaderHealth> {
    if std::fs::metadata(path).ok()?.len() > MAX_STATUS_BYTES {
        return None;
    }
    let f: StatusFile = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    // The most frequent reasons when there are more than the message holds.
    let mut reasons: Vec<(String, u64)> = f
        .failures_by_reason
        .into_iter()
        .map(|(k, v)| (word(k), v))
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut failures_by_reason = BTreeMap::new();
    for (k, v) in reasons {
        if failures_by_reason.len() == MAX_FAILURE_REASONS && !failures_by_reason.contains_key(&k) {
            continue;
        }
        *failures_by_reason.entry(k).or_insert(0u64) += v;
    }
    Some(UploaderHealth {
        state: word(f.state),
        wait_reason: f.wait_reason.map(word),
        queue_recordings: f.queue_recordings,
        queue_bytes: f.queue_bytes,
        parked: f.parked,
        last_success_unix_s: f.last_success_unix_s,
        last_failure_reason: f.last_failure.map(|l| word(l.reason)),
        failures_by_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uploaders_status_file_becomes_the_uploader_part() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("status.json");
        assert_eq!(read(&p), None, "no uploader running: no part");
        // What fleet-uploaderd writes (fleet_uploaderd::status::Status), keys it does not read
        // included.
        std::fs::write(
            &p,
            r#"{"state":"waiting","wait_reason":"link-backoff","destination":"s3://rec",
            "queue_recordings":3,"queue_bytes":4096,"parked":1,"uploaded_total":9,
            "uploaded_bytes_total":1,"sent_bytes_total":1,"skipped_deleted_total":0,
            "last_success_unix_s":1790000000,"last_success_key":"k",
            "last_failure":{"reason":"http-503","message":"Service Unavailable","at_unix_s":null},
            "failures_by_reason":{"http-503":2,"connection":5},"link_failures":2,
            "compression_permille":560}"#,
        )
        .expect("write");
        let u = read(&p).expect("read");
        assert_eq!(u.state, "waiting");
        assert_eq!(u.wait_reason.as_deref(), Some("link-backoff"));
        assert_eq!((u.queue_recordings, u.queue_bytes, u.parked), (3, 4096, 1));
        assert_eq!(u.last_failure_reason.as_deref(), Some("http-503"));
        assert_eq!(u.failures_by_reason.get("connection"), Some(&5));
    }

    #[test]
    fn many_failure_reasons_keep_the_most_frequent_and_odd_words_become_unknown() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("status.json");
        let reasons: Vec<String> = (0..20).map(|i| format!("\"r{i:02}\":{i}")).collect();
        std::fs::write(
            &p,
            format!(
                r#"{{"state":"{}","queue_recordings":0,"queue_bytes":0,"parked":0,
                "failures_by_reason":{{{}}}}}"#,
                "x".repeat(200),
                reasons.join(",")
            ),
        )
        .expect("write");
        let u = read(&p).expect("read");
        assert_eq!(u.state, "unknown");
        assert_eq!(u.failures_by_reason.len(), MAX_FAILURE_REASONS);
        assert!(u.failures_by_reason.contains_key("r19"));
        assert!(!u.failures_by_reason.contains_key("r00"));
    }
}
