//! The retained health message (`fleet/v1/devices/{id}/health`), published by
//! `fleet-reporterd`: recorder, microphone, disk, system and clock in one bounded JSON
//! document. Readers refuse unknown keys, messages over [`MAX_HEALTH_BYTES`] and values outside
//! their ranges ([`Health::validate`]).
//!
//! Versioning: `v` is [`HEALTH_VERSION`]. Within `fleet/v1`, a later release may add optional
//! keys only after raising `v`; a reader refuses a `v` it does not know.
use serde::{Deserialize, Serialize};

use crate::payload::{PayloadError, Timestamp};
use fleet_core::clock::{TrustedBy, UntrustedBecause};
use fleet_core::health::{
    AudioFigures, Microphone, MicrophonePolicy, RecorderState, Signals, judge_microphone,
};
use fleet_core::ids::{DeviceId, Version};
use fleet_core::slot::Slot;

/// The health message format version this crate writes and reads.
pub const HEALTH_VERSION: u8 = 2;
/// The oldest version still read (version 1 had no `uploader` part).
pub const OLDEST_HEALTH_VERSION: u8 = 1;
/// Largest health message, in bytes.
pub const MAX_HEALTH_BYTES: usize = 8 * 1024;
/// Most recorder devices in one message.
pub const MAX_DEVICES: usize = 8;
/// Most storage devices in one message.
pub const MAX_STORAGE: usize = 4;
/// Longest free-text value (reasons, PCM names, device ids), in bytes.
pub const MAX_TEXT: usize = 128;
/// Most upload failure reasons in one message.
pub const MAX_FAILURE_REASONS: usize = 8;

/// One station's health at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Health {
    /// Always [`HEALTH_VERSION`].
    pub v: u8,
    pub device_id: DeviceId,
    /// Increases with every message from one reporter process.
    pub seq: u64,
    pub at: Timestamp,
    pub recorder: RecorderHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionHealth>,
    pub system: SystemHealth,
    pub clock: ClockHealth,
    /// Absent when the station runs no uploader (or it is stopped). Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<UploaderHealth>,
}

/// The uploader (`fleet-uploaderd`'s status file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UploaderHealth {
    /// `unconfigured`, `index-missing`, `idle`, `uploading` or `waiting`.
    pub state: String,
    /// Why it waits: `outside-window`, `update-download`, `link-backoff`, `recording-backoff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_reason: Option<String>,
    /// Recordings waiting to leave the station, and their bytes.
    pub queue_recordings: u64,
    pub queue_bytes: u64,
    /// Recordings set aside after repeated failures (retried later, at a slower pace).
    pub parked: u64,
    /// Last confirmed upload (Unix seconds; absent while the clock was untrusted or never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_unix_s: Option<i64>,
    /// The reason word of the last failure (`connection`, `auth`, `http-503`, `checksum`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// Failures since the uploader started, by reason (at most [`MAX_FAILURE_REASONS`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures_by_reason: std::collections::BTreeMap<String, u64>,
}

/// The recorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RecorderHealth {
    pub state: RecorderState,
    /// Why, for `error`, `stalled`, `no-device` and `not-running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceHealth>,
}

/// One capture device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceHealth {
    /// The device's id in the recorder's configuration.
    pub id: String,
    /// The recorder's own state word (`recording`, `idle`, `missing`, `failing`, ...).
    pub state: String,
    /// The ALSA PCM it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcm: Option<String>,
    /// `{rate}/{channels}/{bits}`, e.g. `384000/1/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// When the last segment was promoted (Unix seconds, by the recorder's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_segment_unix_s: Option<i64>,
    /// Segments, gaps and xruns in the last 24 h (since the recorder started when younger).
    pub segments_24h: u64,
    pub gaps_24h: u64,
    pub xruns_24h: u64,
    /// The last segment's audio figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioFigures>,
}

/// The retention daemon and the disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetentionHealth {
    /// Disk used, 0..=100.
    pub disk_used_percent: f32,
    /// `calm`, `housekeeping`, `defensive` or `panic`.
    pub tier: String,
    pub kept_count: u64,
    pub kept_bytes: u64,
    pub not_uploaded_count: u64,
    /// Deletions since retentiond started, by tier (the reporter's 24 h window is in
    /// `deleted-24h`).
    pub deleted_24h: u64,
    /// `ok`, `rebuilt`, `unusable` or `refused`.
    pub index: String,
}

/// The machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SystemHealth {
    pub uptime_s: u64,
    /// `/proc/sys/kernel/random/boot_id` without dashes (32 hex digits).
    pub boot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// 1, 5 and 15 minute load averages.
    pub load: [f32; 3],
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_temp_c: Option<f32>,
    /// The firmware's throttling flags, when the board has them (Raspberry Pi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<StorageHealth>,
    /// The watchdog reset the machine before this boot.
    #[serde(default)]
    pub watchdog_reset: bool,
}

/// The Raspberry Pi firmware's `get_throttled` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Throttling {
    pub under_voltage_now: bool,
    pub throttled_now: bool,
    pub under_voltage_since_boot: bool,
    pub throttled_since_boot: bool,
}

impl Throttling {
    /// Reads the bit field (`vcgencmd get_throttled`): bit 0 under-voltage, 1 ARM frequency
    /// capped, 2 throttled, 3 soft temperature limit; bits 16..=19 the same since boot.
    #[must_use]
    pub fn from_bits(bits: u32) -> Self {
        Self {
            under_voltage_now: bits & 0x1 != 0,
            throttled_now: bits & 0x6 != 0,
            under_voltage_since_boot: bits & 0x1_0000 != 0,
            throttled_since_boot: bits & 0x6_0000 != 0,
        }
    }
}

/// One storage device's wear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageHealth {
    /// Kernel name: `mmcblk0`, `nvme0`.
    pub device: String,
    /// Percent of rated life used (eMMC/SD life time estimate in 10 % steps, NVMe
    /// "percentage used"; may exceed 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wear_percent: Option<u8>,
    /// eMMC/SD pre-EOL "warning"/"urgent" or an NVMe critical warning bit.
    pub warning: bool,
}

/// The clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClockHealth {
    /// The NTP client reports the clock synchronized (absent when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronized: Option<bool>,
    pub rtc: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_unix_s: Option<i64>,
    /// `fleet_core::clock::decide_trust`'s answer.
    pub trusted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_by: Option<TrustedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrusted_because: Option<UntrustedBecause>,
    /// Upper bound of the clock's error, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offset_ms: Option<u64>,
}

/// A health message that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to accept health message: {0}")]
pub struct HealthError(pub String);

impl Health {
    /// Checks version, bounds and ranges.
    pub fn validate(&self) -> Result<(), HealthError> {
        let e = |s: String| Err(HealthError(s));
        if !(OLDEST_HEALTH_VERSION..=HEALTH_VERSION).contains(&self.v) {
            return e(format!(
                "version {} is not one of {OLDEST_HEALTH_VERSION} to {HEALTH_VERSION}",
                self.v
            ));
        }
        if self.v < 2 && self.uploader.is_some() {
            return e("an uploader part needs version 2".into());
        }
        if self
            .uploader
            .as_ref()
            .is_some_and(|u| u.failures_by_reason.len() > MAX_FAILURE_REASONS)
        {
            return e(format!(
                "more than {MAX_FAILURE_REASONS} upload failure reasons"
            ));
        }
        if self.recorder.devices.len() > MAX_DEVICES {
            return e(format!("more than {MAX_DEVICES} recorder devices"));
        }
        if self.system.storage.len() > MAX_STORAGE {
            return e(format!("more than {MAX_STORAGE} storage devices"));
        }
        let texts = self
            .recorder
            .reason
            .iter()
            .chain(self.recorder.devices.iter().flat_map(|d| {
                [
                    Some(&d.id),
                    Some(&d.state),
                    d.pcm.as_ref(),
                    d.format.as_ref(),
                ]
                .into_iter()
                .flatten()
            }))
            .chain(self.system.storage.iter().map(|s| &s.device))
            .chain(std::iter::once(&self.system.boot_id))
            .chain(self.uploader.iter().flat_map(|u| {
                [
                    Some(&u.state),
                    u.wait_reason.as_ref(),
                    u.last_failure_reason.as_ref(),
                ]
                .into_iter()
                .flatten()
                .chain(u.failures_by_reason.keys())
            }));
        for t in texts {
            if t.len() > MAX_TEXT || t.chars().any(char::is_control) {
                return e(format!(
                    "a text value is longer than {MAX_TEXT} bytes or holds control characters"
                ));
            }
        }
        if let Some(r) = &self.retention
            && !(0.0..=100.0).contains(&r.disk_used_percent)
        {
            return e(format!(
                "disk-used-percent {} is outside 0..=100",
                r.disk_used_percent
            ));
        }
        for d in &self.recorder.devices {
            if let Some(a) = &d.audio {
                let ok = (-200.0..=0.5).contains(&a.rms_dbfs)
                    && (-200.0..=0.5).contains(&a.peak_dbfs)
                    && (0.0..=1.0).contains(&a.clipped_fraction)
                    && (-1.0..=1.0).contains(&a.dc_offset);
                if !ok {
                    return e(format!("device {}: audio figures out of range", d.id));
                }
            }
        }
        if self.system.load.iter().any(|l| !l.is_finite() || *l < 0.0) {
            return e("load is negative or not a number".into());
        }
        Ok(())
    }

    /// The facts `fleet_core::health::decide_problems` judges. `silent_for_s` is the time since
    /// this message arrived, measured by the reader.
    #[must_use]
    pub fn signals(&self, silent_for_s: Option<u64>) -> Signals {
        let mic = MicrophonePolicy::default();
        // The worst microphone decides: silent before clipping before ok before unknown.
        let rank = |m: Microphone| match m {
            Microphone::Silent => 3,
            Microphone::Clipping => 2,
            Microphone::Ok => 1,
            Microphone::Unknown => 0,
        };
        let microphone = self
            .recorder
            .devices
            .iter()
            .map(|d| judge_microphone(d.audio.as_ref(), &mic))
            .max_by_key(|m| rank(*m))
            .unwrap_or(Microphone::Unknown);
        let under_voltage = self
            .system
            .throttling
            .is_some_and(|t| t.under_voltage_now || t.under_voltage_since_boot);
        Signals {
            recorder: self.recorder.state,
            microphone,
            disk_panic: self.retention.as_ref().is_some_and(|r| r.tier == "panic"),
            clock_untrusted: !self.clock.trusted,
            under_voltage,
            storage_wear_percent: self
                .system
                .storage
                .iter()
                .filter_map(|s| s.wear_percent)
                .max(),
            storage_warning: self.system.storage.iter().any(|s| s.warning),
            uploads_parked: self.uploader.as_ref().is_some_and(|u| u.parked > 0),
            silent_for_s,
        }
    }
}

/// Reads a health message: size, JSON (unknown keys refused), then [`Health::validate`].
pub fn decode(bytes: &[u8]) -> Result<Health, PayloadError> {
    if bytes.len() > MAX_HEALTH_BYTES {
        return Err(PayloadError::TooLarge {
            size: bytes.len(),
            limit: MAX_HEALTH_BYTES,
        });
    }
    let h: Health = serde_json::from_slice(bytes).map_err(|e| {
        PayloadError::Malformed(fleet_core::update::offer::truncate(&e.to_string(), 200))
    })?;
    h.validate()
        .map_err(|e| PayloadError::Malformed(e.0.clone()))?;
    Ok(h)
}

/// Serializes a health message, refusing one that breaks a rule or exceeds
/// [`MAX_HEALTH_BYTES`] (the publisher drops device details first: see
/// `fleet-reporterd`).
pub fn encode(h: &Health) -> Result<Vec<u8>, HealthError> {
    h.validate()?;
    let bytes = serde_json::to_vec(h).map_err(|e| HealthError(e.to_string()))?;
    if bytes.len() > MAX_HEALTH_BYTES {
        return Err(HealthError(format!(
            "{} bytes is above the limit {MAX_HEALTH_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Health {
        Health {
            v: HEALTH_VERSION,
            device_id: DeviceId::new("stn-1").expect("valid"),
            seq: 1,
            at: fleet_core::time::Now::trusted(1000, 1_790_000_000).into(),
            recorder: RecorderHealth {
                state: RecorderState::Recording,
                reason: None,
                devices: vec![DeviceHealth {
                    id: "mic0".into(),
                    state: "recording".into(),
                    pcm: Some("hw:CARD=UltraMic,DEV=0".into()),
                    format: Some("384000/1/16".into()),
                    last_segment_unix_s: Some(1_789_999_940),
                    segments_24h: 288,
                    gaps_24h: 0,
                    xruns_24h: 0,
                    audio: Some(AudioFigures {
                        rms_dbfs: -200.0,
                        peak_dbfs: -200.0,
                        clipped_fraction: 0.0,
                        dc_offset: 0.0,
                        flat: true,
                    }),
                }],
            },
            retention: None,
            system: SystemHealth {
                uptime_s: 10,
                boot_id: "0".repeat(32),
                slot: Some(Slot::A),
                version: None,
                load: [0.1, 0.2, 0.3],
                mem_total_kib: 1,
                mem_available_kib: 1,
                cpu_temp_c: None,
                throttling: Some(Throttling::from_bits(0x5_0005)),
                storage: vec![],
                watchdog_reset: false,
            },
            clock: ClockHealth {
                synchronized: Some(false),
                rtc: false,
                last_sync_unix_s: None,
                trusted: false,
                trusted_by: None,
                untrusted_because: Some(UntrustedBecause::NeverSynchronized),
                max_offset_ms: None,
            },
            uploader: Some(UploaderHealth {
                state: "waiting".into(),
                wait_reason: Some("link-backoff".into()),
                queue_recordings: 12,
                queue_bytes: 345_678,
                parked: 1,
                last_success_unix_s: Some(1_789_990_000),
                last_failure_reason: Some("connection".into()),
                failures_by_reason: [("connection".to_owned(), 3)].into_iter().collect(),
            }),
        }
    }

    #[test]
    fn a_message_round_trips_and_its_signals_name_the_silent_microphone() {
        let h = sample();
        let back = decode(&encode(&h).expect("encodes")).expect("decodes");
        assert_eq!(back, h);
        let s = h.signals(Some(5));
        assert_eq!(s.microphone, Microphone::Silent);
        assert!(s.under_voltage && s.clock_untrusted && s.uploads_parked);
    }

    #[test]
    fn oversized_unknown_versioned_and_out_of_range_messages_are_refused() {
        let mut h = sample();
        h.v = HEALTH_VERSION + 1;
        assert!(encode(&h).is_err());
        let mut h = sample();
        h.v = 1;
        assert!(encode(&h).is_err(), "version 1 had no uploader part");
        h.uploader = None;
        assert!(encode(&h).is_ok(), "a version 1 message is still read");
        let mut h = sample();
        if let Some(u) = h.uploader.as_mut() {
            u.failures_by_reason = (0..=MAX_FAILURE_REASONS)
                .map(|i| (format!("r{i}"), 1))
                .collect();
        }
        assert!(encode(&h).is_err());
        let mut h = sample();
        h.recorder.reason = Some("x".repeat(MAX_TEXT + 1));
        assert!(encode(&h).is_err());
        let mut h = sample();
        h.recorder.devices = vec![h.recorder.devices[0].clone(); MAX_DEVICES + 1];
        assert!(encode(&h).is_err());
        let mut h = sample();
        h.system.load[0] = f32::NAN;
        assert!(h.validate().is_err());
        let json = String::from_utf8(encode(&sample()).expect("encodes")).expect("utf8");
        let extra = json.replacen("{", "{\"surprise\":1,", 1);
        assert!(decode(extra.as_bytes()).is_err());
        assert!(matches!(
            decode(&vec![b' '; MAX_HEALTH_BYTES + 1]),
            Err(PayloadError::TooLarge { .. })
        ));
    }

    #[test]
    fn throttling_bits_are_read_as_the_firmware_documents_them() {
        let t = Throttling::from_bits(0x50000);
        assert!(!t.under_voltage_now && t.under_voltage_since_boot && t.throttled_since_boot);
        let t = Throttling::from_bits(0x4);
        assert!(t.throttled_now && !t.under_voltage_now);
    }
}
