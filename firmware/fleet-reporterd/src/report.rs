//! The health message: assembling it from readings, deciding whether it changed enough to be
//! published before the heartbeat, and fitting it within its size limit.
use fleet_core::clock::{ClockFacts, Trust};
use fleet_core::health::{Microphone, MicrophonePolicy, RecorderState, judge_microphone};
use fleet_core::ids::{DeviceId, Version};
use fleet_core::slot::Slot;
use fleet_core::time::Now;
use fleet_facts::system::System;
use fleet_proto::health::{
    self, ClockHealth, HEALTH_VERSION, Health, HealthError, RecorderHealth, RetentionHealth,
    StorageHealth, SystemHealth, Throttling, UploaderHealth,
};

/// Everything read in one sampling round.
#[derive(Debug, Clone)]
pub struct Readings {
    pub recorder: RecorderHealth,
    pub retention: Option<RetentionHealth>,
    pub uploader: Option<UploaderHealth>,
    pub system: System,
    pub storage: Vec<StorageHealth>,
    pub clock: ClockFacts,
    pub trust: Trust,
    pub rtc_present: bool,
}

/// Builds the message; `at` carries the wall-clock time only while the clock is trusted.
#[must_use]
pub fn assemble(device_id: &DeviceId, seq: u64, monotonic_ms: u64, r: &Readings) -> Health {
    let at = if r.trust.is_trusted() {
        Now::trusted(monotonic_ms, r.clock.wall_unix_s)
    } else {
        Now::untrusted(monotonic_ms)
    };
    let (trusted_by, untrusted_because, max_offset_ms) = match r.trust {
        Trust::Trusted { by, max_offset_ms } => (Some(by), None, max_offset_ms),
        Trust::Untrusted(why) => (None, Some(why), None),
    };
    let s = &r.system;
    Health {
        v: HEALTH_VERSION,
        device_id: device_id.clone(),
        seq,
        at: at.into(),
        recorder: r.recorder.clone(),
        retention: r.retention.clone(),
        system: SystemHealth {
            uptime_s: s.uptime_s,
            boot_id: s.boot_id.clone(),
            slot: s.slot,
            version: s.version.as_deref().and_then(|v| v.parse::<Version>().ok()),
            load: s.load,
            mem_total_kib: s.mem_total_kib,
            mem_available_kib: s.mem_available_kib,
            cpu_temp_c: s.cpu_temp_c,
            throttling: s.throttling,
            storage: r
                .storage
                .iter()
                .take(health::MAX_STORAGE)
                .cloned()
                .collect(),
            watchdog_reset: s.watchdog_reset,
        },
        clock: ClockHealth {
            synchronized: r.clock.ntp_synchronized,
            rtc: r.clock.rtc_valid,
            last_sync_unix_s: r.clock.last_sync_unix_s,
            trusted: r.trust.is_trusted(),
            trusted_by,
            untrusted_because,
            max_offset_ms,
        },
        uploader: r.uploader.clone(),
    }
}

/// What must not change unnoticed until the next heartbeat: states, verdicts and flags, not
/// gauges (load, temperature, counts) that move all the time.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeKey {
    recorder: RecorderState,
    devices: Vec<(String, String, Microphone)>,
    tier: Option<String>,
    index: Option<String>,
    trusted: bool,
    throttling: Option<Throttling>,
    storage: Vec<(String, bool, Option<u8>)>,
    slot: Option<Slot>,
    version: Option<Version>,
    boot_id: String,
    /// The uploader's state and whether it parked recordings (not its queue, which moves).
    uploader: Option<(String, bool)>,
}

impl ChangeKey {
    #[must_use]
    pub fn of(h: &Health) -> Self {
        let mic = MicrophonePolicy::default();
        Self {
            recorder: h.recorder.state,
            devices: h
                .recorder
                .devices
                .iter()
                .map(|d| {
                    (
                        d.id.clone(),
                        d.state.clone(),
                        judge_microphone(d.audio.as_ref(), &mic),
                    )
                })
                .collect(),
            tier: h.retention.as_ref().map(|r| r.tier.clone()),
            index: h.retention.as_ref().map(|r| r.index.clone()),
            trusted: h.clock.trusted,
            throttling: h.system.throttling,
            storage: h
                .system
                .storage
                .iter()
                .map(|s| (s.device.clone(), s.warning, s.wear_percent))
                .collect(),
            slot: h.system.slot,
            version: h.system.version.clone(),
            boot_id: h.system.boot_id.clone(),
            uploader: h.uploader.as_ref().map(|u| (u.state.clone(), u.parked > 0)),
        }
    }
}

/// When to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Publish at least this often (default 15 minutes).
    pub heartbeat_ms: u64,
    /// Publish a change no sooner than this after the last message (default 30 s), so a
    /// flapping state costs at most one message per interval.
    pub min_interval_ms: u64,
}

/// Whether to publish now: nothing published yet (or since the last connect), the heartbeat
/// is due, or the key changed and the minimum interval passed.
#[must_use]
pub fn decide_publish(
    last: Option<(u64, &ChangeKey)>,
    now_ms: u64,
    key: &ChangeKey,
    c: &Cadence,
) -> bool {
    match last {
        None => true,
        Some((at, k)) => {
            let since = now_ms.saturating_sub(at);
            since >= c.heartbeat_ms || (k != key && since >= c.min_interval_ms)
        }
    }
}

/// Encodes the message; one that does not fit loses its per-device details (PCM names and
/// formats first, then the devices), so the station still reports its state.
pub fn encode_fitting(mut h: Health) -> Result<Vec<u8>, HealthError> {
    if let Ok(b) = health::encode(&h) {
        return Ok(b);
    }
    for d in &mut h.recorder.devices {
        d.pcm = None;
        d.format = None;
    }
    if let Ok(b) = health::encode(&h) {
        return Ok(b);
    }
    h.recorder.devices.clear();
    health::encode(&h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::clock::UntrustedBecause;
    use fleet_proto::health::DeviceHealth;

    fn readings() -> Readings {
        Readings {
            recorder: RecorderHealth {
                state: RecorderState::Recording,
                reason: None,
                devices: vec![],
            },
            retention: None,
            uploader: None,
            system: System {
                uptime_s: 1,
                boot_id: "a".repeat(32),
                slot: Some(Slot::A),
                version: Some("1.2.3".into()),
                load: [0.0; 3],
                mem_total_kib: 1,
                mem_available_kib: 1,
                cpu_temp_c: Some(40.0),
                throttling: None,
                watchdog_reset: false,
            },
            storage: vec![],
            clock: ClockFacts {
                wall_unix_s: 1_790_000_000,
                ntp_synchronized: None,
                rtc_valid: false,
                last_sync_unix_s: None,
            },
            trust: Trust::Untrusted(UntrustedBecause::NeverSynchronized),
            rtc_present: false,
        }
    }

    #[test]
    fn an_untrusted_clock_leaves_the_wall_time_out_of_the_message() {
        let id = DeviceId::new("stn-1").expect("valid");
        let h = assemble(&id, 3, 77, &readings());
        assert_eq!(h.at.wall_unix_s, None);
        assert_eq!(
            h.clock.untrusted_because,
            Some(UntrustedBecause::NeverSynchronized)
        );
        assert_eq!(h.system.version, Some("1.2.3".parse().expect("version")));
        health::encode(&h).expect("valid message");
    }

    #[test]
    fn a_gauge_waits_for_the_heartbeat_but_a_state_change_goes_after_the_minimum_interval() {
        let id = DeviceId::new("stn-1").expect("valid");
        let c = Cadence {
            heartbeat_ms: 900_000,
            min_interval_ms: 30_000,
        };
        let mut r = readings();
        let k0 = ChangeKey::of(&assemble(&id, 1, 0, &r));
        assert!(decide_publish(None, 0, &k0, &c));
        r.system.load = [3.0; 3];
        let k1 = ChangeKey::of(&assemble(&id, 2, 0, &r));
        assert_eq!(k0, k1);
        assert!(!decide_publish(Some((0, &k0)), 60_000, &k1, &c));
        assert!(decide_publish(Some((0, &k0)), 900_000, &k1, &c));
        r.recorder.state = RecorderState::NoDevice;
        let k2 = ChangeKey::of(&assemble(&id, 3, 0, &r));
        assert!(!decide_publish(Some((0, &k0)), 10_000, &k2, &c));
        assert!(decide_publish(Some((0, &k0)), 30_000, &k2, &c));
    }

    #[test]
    fn a_message_at_every_bound_fits_its_size_limit_whole() {
        let id = DeviceId::new("stn-1").expect("valid");
        let mut r = readings();
        let long = |c: &str| c.repeat(health::MAX_TEXT);
        let dev = DeviceHealth {
            id: long("m"),
            state: long("s"),
            pcm: Some(long("p")),
            format: Some(long("f")),
            last_segment_unix_s: Some(i64::MAX),
            segments_24h: u64::MAX,
            gaps_24h: u64::MAX,
            xruns_24h: u64::MAX,
            audio: Some(fleet_core::health::AudioFigures {
                rms_dbfs: -199.99999,
                peak_dbfs: -199.99999,
                clipped_fraction: 0.123_456_79,
                dc_offset: -0.123_456_79,
                flat: false,
            }),
        };
        r.recorder.devices = vec![dev; health::MAX_DEVICES];
        r.recorder.reason = Some(long("r"));
        r.storage = vec![
            StorageHealth {
                device: long("d"),
                wear_percent: Some(255),
                warning: true,
            };
            health::MAX_STORAGE
        ];
        let h = assemble(&id, u64::MAX, u64::MAX, &r);
        // The bounds on counts and texts keep the largest message within the limit, so
        // encode_fitting never has to drop anything from a message the reporter builds.
        let whole = health::encode(&h).expect("the largest message fits");
        assert!(whole.len() <= health::MAX_HEALTH_BYTES);
        assert_eq!(encode_fitting(h.clone()).expect("fits"), whole);
    }
}
