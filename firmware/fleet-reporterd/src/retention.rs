//! retentiond's metrics file (`metrics-path` in its configuration), read into the health
//! message's `retention` part. Only the keys used here are read.
use std::path::Path;

use fleet_proto::health::RetentionHealth;
use serde::Deserialize;

use crate::window::Window;

/// Largest metrics file read, in bytes.
pub const MAX_METRICS_BYTES: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
struct MetricsFile {
    index: String,
    tier: String,
    usage_permille: u32,
    recordings_present: u64,
    recordings_present_bytes: u64,
    recordings_not_uploaded: u64,
    #[serde(default)]
    deletions_total: std::collections::BTreeMap<String, u64>,
}

/// Reads the metrics file; `None` when it is absent, too large or unreadable.
#[must_use]
pub fn read(path: &Path, now_ms: u64, deletions: &mut Window) -> Option<RetentionHealth> {
    if std::fs::metadata(path).ok()?.len() > MAX_METRICS_BYTES {
        return None;
    }
    let m: MetricsFile = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let clip = |s: String| if s.len() > 32 { "unknown".into() } else { s };
    let total: u64 = m
        .deletions_total
        .values()
        .fold(0u64, |a, b| a.saturating_add(*b));
    Some(RetentionHealth {
        disk_used_percent: (m.usage_permille.min(1000) as f32) / 10.0,
        tier: clip(m.tier),
        kept_count: m.recordings_present,
        kept_bytes: m.recordings_present_bytes,
        not_uploaded_count: m.recordings_not_uploaded,
        deleted_24h: deletions.observe(now_ms, total),
        index: clip(m.index),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentionds_metrics_become_the_retention_part() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("metrics.json");
        assert_eq!(read(&p, 0, &mut Window::default()), None);
        std::fs::write(
            &p,
            r#"{"index":"ok","alarm":null,"healthy":true,"tier":"panic","usage_permille":975,
            "used_bytes":1,"available_bytes":1,"reserve_bytes":0,"write_rate_bytes_per_s":0,
            "floor_breached":false,"time_trusted":true,"ballast_present":true,
            "recordings_present":10,"recordings_present_bytes":2000,"recordings_not_uploaded":4,
            "pending_files":0,"deletions_total":{"panic":3,"defensive":2},"last_shortfall_bytes":0,
            "cycles":9}"#,
        )
        .expect("write");
        let r = read(&p, 0, &mut Window::default()).expect("read");
        assert_eq!(r.tier, "panic");
        assert_eq!(r.disk_used_percent, 97.5);
        assert_eq!(
            (r.kept_count, r.kept_bytes, r.not_uploaded_count),
            (10, 2000, 4)
        );
        assert_eq!(r.deleted_24h, 5);
    }
}
