//! Which problems a station's health report shows: one rule for `fleetctl status`, its
//! `--problems` exit code, the metrics exporter and the simulator.
//!
//! The operator side reduces a health message (`fleet_proto::health::Health`) to [`Signals`]
//! and calls [`decide_problems`]; nothing else judges a report.
use serde::{Deserialize, Serialize};

pub mod gate;

/// The recorder's state as the health message names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecorderState {
    /// Every device that should record is recording and making progress.
    Recording,
    /// Outside its schedule: nothing should record now.
    Idle,
    /// A configured device is missing (unplugged, not found).
    NoDevice,
    /// A device should deliver frames and does not.
    Stalled,
    /// Recording fails (a write error, a full disk); the reason says which.
    Error,
    /// The recorder's status is missing or stale: the recorder does not run.
    NotRunning,
}

impl RecorderState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Idle => "idle",
            Self::NoDevice => "no-device",
            Self::Stalled => "stalled",
            Self::Error => "error",
            Self::NotRunning => "not-running",
        }
    }
}

/// What a microphone heard in its recent segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Microphone {
    Ok,
    /// Digital silence, a flat line or a constant DC level: a dead or unplugged microphone.
    Silent,
    /// Too many samples at full scale.
    Clipping,
    /// No segment measured yet.
    Unknown,
}

/// The facts the problem rule looks at, taken from one health message and the time it was
/// last heard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    pub recorder: RecorderState,
    pub microphone: Microphone,
    /// The retention tier is `panic`.
    pub disk_panic: bool,
    /// The clock is not trusted.
    pub clock_untrusted: bool,
    /// Under-voltage now or since boot.
    pub under_voltage: bool,
    /// Highest storage wear in percent of rated life (SD/eMMC life time, NVMe percentage used).
    pub storage_wear_percent: Option<u8>,
    /// The storage reports a pre-end-of-life or critical warning.
    pub storage_warning: bool,
    /// The uploader set recordings aside after repeated failures.
    pub uploads_parked: bool,
    /// Seconds since the station's last health message arrived (`None`: never).
    pub silent_for_s: Option<u64>,
}

/// Where the rule draws its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemPolicy {
    /// A station not heard from for this long is a problem (default 2 heartbeats + 5 min:
    /// 35 minutes).
    pub silent_after_s: u64,
    /// Storage worn this much is a problem (default 80 %).
    pub wear_percent: u8,
}

impl Default for ProblemPolicy {
    fn default() -> Self {
        Self {
            silent_after_s: 35 * 60,
            wear_percent: 80,
        }
    }
}

/// One problem, in the order `fleetctl status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// No health message for longer than the policy allows (or never).
    NotHeardFrom,
    /// The recorder should record and does not (no device, stalled, error, not running).
    NotRecording,
    /// The microphone records silence or a flat line.
    SilentMicrophone,
    /// The microphone clips.
    ClippingMicrophone,
    /// The disk is at the retention panic tier.
    DiskPanic,
    /// The clock is not synchronized.
    ClockUnsynchronized,
    /// The power supply sagged below the Pi's threshold.
    UnderVoltage,
    /// The storage is near the end of its rated life.
    StorageWearing,
    /// Recordings could not be uploaded after repeated tries and wait aside.
    UploadsParked,
}

impl Problem {
    /// The short name used in tables, metrics and JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotHeardFrom => "not-heard-from",
            Self::NotRecording => "not-recording",
            Self::SilentMicrophone => "silent-microphone",
            Self::ClippingMicrophone => "clipping-microphone",
            Self::DiskPanic => "disk-panic",
            Self::ClockUnsynchronized => "clock-unsynchronized",
            Self::UnderVoltage => "under-voltage",
            Self::StorageWearing => "storage-wearing",
            Self::UploadsParked => "uploads-parked",
        }
    }

    /// Every problem, in display order.
    pub const ALL: [Problem; 9] = [
        Problem::NotHeardFrom,
        Problem::NotRecording,
        Problem::SilentMicrophone,
        Problem::ClippingMicrophone,
        Problem::DiskPanic,
        Problem::ClockUnsynchronized,
        Problem::UnderVoltage,
        Problem::StorageWearing,
        Problem::UploadsParked,
    ];
}

/// The problems these signals show, sorted, each once.
#[must_use]
pub fn decide_problems(s: &Signals, p: &ProblemPolicy) -> Vec<Problem> {
    let mut out = Vec::new();
    if s.silent_for_s.is_none_or(|t| t > p.silent_after_s) {
        out.push(Problem::NotHeardFrom);
    }
    if matches!(
        s.recorder,
        RecorderState::NoDevice
            | RecorderState::Stalled
            | RecorderState::Error
            | RecorderState::NotRunning
    ) {
        out.push(Problem::NotRecording);
    }
    // A microphone judged while idle by schedule still tells of its last segments.
    match s.microphone {
        Microphone::Silent => out.push(Problem::SilentMicrophone),
        Microphone::Clipping => out.push(Problem::ClippingMicrophone),
        Microphone::Ok | Microphone::Unknown => {}
    }
    if s.disk_panic {
        out.push(Problem::DiskPanic);
    }
    if s.clock_untrusted {
        out.push(Problem::ClockUnsynchronized);
    }
    if s.under_voltage {
        out.push(Problem::UnderVoltage);
    }
    if s.storage_warning || s.storage_wear_percent.is_some_and(|w| w >= p.wear_percent) {
        out.push(Problem::StorageWearing);
    }
    if s.uploads_parked {
        out.push(Problem::UploadsParked);
    }
    out
}

/// The audio figures of one segment, as the recorder computes them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AudioFigures {
    /// RMS level in dBFS (full-scale sine = -3.01 dBFS; digital silence = -200).
    pub rms_dbfs: f32,
    /// Peak level in dBFS.
    pub peak_dbfs: f32,
    /// Fraction of samples at or next to full scale, 0..=1.
    pub clipped_fraction: f32,
    /// Mean sample value as a fraction of full scale, -1..=1.
    pub dc_offset: f32,
    /// Digital silence, a flat line or a constant level: the signal barely moves.
    pub flat: bool,
}

/// Lower bound written for digital silence (log of zero).
pub const SILENCE_DBFS: f32 = -200.0;

/// Where the microphone rule draws its lines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicrophonePolicy {
    /// Clipped fraction above which a segment clips (default 0.001: one sample in a thousand).
    pub clipping_fraction: f32,
}

impl Default for MicrophonePolicy {
    fn default() -> Self {
        Self {
            clipping_fraction: 0.001,
        }
    }
}

/// Judges a microphone by its last segment's figures.
#[must_use]
pub fn judge_microphone(last: Option<&AudioFigures>, p: &MicrophonePolicy) -> Microphone {
    match last {
        None => Microphone::Unknown,
        Some(a) if a.flat => Microphone::Silent,
        Some(a) if a.clipped_fraction > p.clipping_fraction => Microphone::Clipping,
        Some(_) => Microphone::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn healthy() -> Signals {
        Signals {
            recorder: RecorderState::Recording,
            microphone: Microphone::Ok,
            disk_panic: false,
            clock_untrusted: false,
            under_voltage: false,
            storage_wear_percent: Some(10),
            storage_warning: false,
            uploads_parked: false,
            silent_for_s: Some(60),
        }
    }

    #[test]
    fn each_signal_raises_its_own_problem_and_a_healthy_station_has_none() {
        let p = ProblemPolicy::default();
        assert!(decide_problems(&healthy(), &p).is_empty());
        let cases: Vec<(Signals, Vec<Problem>)> = vec![
            (
                Signals {
                    silent_for_s: None,
                    ..healthy()
                },
                vec![Problem::NotHeardFrom],
            ),
            (
                Signals {
                    silent_for_s: Some(36 * 60),
                    ..healthy()
                },
                vec![Problem::NotHeardFrom],
            ),
            (
                Signals {
                    recorder: RecorderState::NoDevice,
                    ..healthy()
                },
                vec![Problem::NotRecording],
            ),
            (
                Signals {
                    recorder: RecorderState::Idle,
                    ..healthy()
                },
                vec![],
            ),
            (
                Signals {
                    microphone: Microphone::Silent,
                    ..healthy()
                },
                vec![Problem::SilentMicrophone],
            ),
            (
                Signals {
                    microphone: Microphone::Clipping,
                    disk_panic: true,
                    ..healthy()
                },
                vec![Problem::ClippingMicrophone, Problem::DiskPanic],
            ),
            (
                Signals {
                    clock_untrusted: true,
                    under_voltage: true,
                    ..healthy()
                },
                vec![Problem::ClockUnsynchronized, Problem::UnderVoltage],
            ),
            (
                Signals {
                    storage_wear_percent: Some(80),
                    ..healthy()
                },
                vec![Problem::StorageWearing],
            ),
            (
                Signals {
                    storage_wear_percent: None,
                    storage_warning: true,
                    ..healthy()
                },
                vec![Problem::StorageWearing],
            ),
        ];
        for (s, want) in cases {
            assert_eq!(decide_problems(&s, &p), want, "{s:?}");
        }
    }

    #[test]
    fn a_flat_segment_is_a_silent_microphone_even_when_it_clips() {
        let p = MicrophonePolicy::default();
        let mut a = AudioFigures {
            rms_dbfs: -40.0,
            peak_dbfs: -20.0,
            clipped_fraction: 0.0,
            dc_offset: 0.0,
            flat: false,
        };
        assert_eq!(judge_microphone(Some(&a), &p), Microphone::Ok);
        a.clipped_fraction = 0.01;
        assert_eq!(judge_microphone(Some(&a), &p), Microphone::Clipping);
        a.flat = true;
        assert_eq!(judge_microphone(Some(&a), &p), Microphone::Silent);
        assert_eq!(judge_microphone(None, &p), Microphone::Unknown);
    }

    proptest! {
        #[test]
        fn problems_are_sorted_and_never_repeated(
            silent in proptest::option::of(0u64..10_000),
            panic in any::<bool>(), clock in any::<bool>(), uv in any::<bool>(),
            wear in proptest::option::of(0u8..=100), warn in any::<bool>(),
        ) {
            let s = Signals { disk_panic: panic, clock_untrusted: clock, under_voltage: uv,
                storage_wear_percent: wear, storage_warning: warn, silent_for_s: silent, ..healthy() };
            let got = decide_problems(&s, &ProblemPolicy::default());
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(got, sorted);
        }
    }
}
