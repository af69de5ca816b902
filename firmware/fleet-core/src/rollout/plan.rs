//! A rollout plan: which stations take an update in which wave, and when a wave may advance or
//! must halt. Validated once ([`Plan::validate`]); every later decision trusts it.
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, GroupId};
use crate::update::RolloutPercent;

/// Most waves in one plan.
pub const MAX_WAVES: usize = 16;
/// Most canary devices in one wave.
pub const MAX_WAVE_DEVICES: usize = 256;

/// One wave: explicit canary devices, or a cumulative share of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum WaveSpec {
    /// These devices (offered one by one on their device topics): `{"devices": ["stn-1"]}`.
    Devices(Vec<DeviceId>),
    /// Every group member whose wave bucket is below this percentage (cumulative: a 50 % wave
    /// after a 10 % wave adds the stations with buckets 10..50): `{"percent": 10}`.
    Percent(RolloutPercent),
}

/// Hours of the day (UTC) in which a wave may start: `start-hour <= h < end-hour`, or across
/// midnight when `start-hour > end-hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Window {
    pub start_hour: u8,
    pub end_hour: u8,
}

impl Window {
    /// True when `unix_s` falls inside the window.
    #[must_use]
    pub fn contains(&self, unix_s: i64) -> bool {
        let h = u8::try_from(unix_s.rem_euclid(86_400) / 3_600).expect("below 24");
        if self.start_hour <= self.end_hour {
            (self.start_hour..self.end_hour).contains(&h)
        } else {
            h >= self.start_hour || h < self.end_hour
        }
    }
}

/// A rollout plan (the TOML file `fleetctl rollout start --plan` reads, kebab-case keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Plan {
    /// The group the update is for.
    pub group: GroupId,
    /// In order; canary device waves first, then strictly increasing percentages.
    pub waves: Vec<WaveSpec>,
    /// Finished stations a wave needs before its rates are judged (capped at the wave's size).
    pub min_stations: u32,
    /// Share (percent) of a wave's stations that must have committed before the next wave.
    pub success_percent: u8,
    /// Share (percent) of the wave's finished stations that failed above which it halts.
    pub failure_percent: u8,
    /// A wave that has not reached its success share after this long halts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_timeout_s: Option<u64>,
    /// Waves only start inside this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// A plan that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to accept rollout plan: {0}")]
pub struct PlanError(pub String);

impl Plan {
    /// Checks the plan's rules (see the field documentation).
    pub fn validate(&self) -> Result<(), PlanError> {
        let e = |s: &str| Err(PlanError(s.to_owned()));
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return e("waves must hold 1..=16 waves");
        }
        let mut last_percent: Option<u8> = None;
        for w in &self.waves {
            match w {
                WaveSpec::Devices(d) => {
                    if last_percent.is_some() {
                        return e("device waves (canaries) must come before percentage waves");
                    }
                    if d.is_empty() || d.len() > MAX_WAVE_DEVICES {
                        return e("a device wave must name 1..=256 devices");
                    }
                }
                WaveSpec::Percent(p) => {
                    if last_percent.is_some_and(|l| p.get() <= l) {
                        return e("wave percentages must increase strictly");
                    }
                    last_percent = Some(p.get());
                }
            }
        }
        if !(1..=100).contains(&self.success_percent) {
            return e("success-percent must be 1..=100");
        }
        if self.failure_percent > 99 {
            return e("failure-percent must be 0..=99");
        }
        if let Some(w) = self.window
            && (w.start_hour > 23 || w.end_hour > 24 || w.start_hour == w.end_hour)
        {
            return e("window hours must be 0..=23 / 0..=24 and differ");
        }
        if self.wave_timeout_s == Some(0) {
            return e("wave-timeout-s must be above 0");
        }
        Ok(())
    }

    /// The canary devices of every device wave.
    pub fn canaries(&self) -> impl Iterator<Item = &DeviceId> {
        self.waves.iter().flat_map(|w| match w {
            WaveSpec::Devices(d) => d.as_slice(),
            WaveSpec::Percent(_) => &[],
        })
    }

    /// The wave (index) `device` belongs to, given its wave bucket for the update: its device
    /// wave if it is a canary, else the first percentage wave whose percentage is above the
    /// bucket. `None`: in no wave of this plan.
    #[must_use]
    pub fn wave_of(&self, device: &DeviceId, bucket: u8) -> Option<usize> {
        for (i, w) in self.waves.iter().enumerate() {
            if let WaveSpec::Devices(d) = w
                && d.contains(device)
            {
                return Some(i);
            }
        }
        self.waves.iter().position(|w| match w {
            WaveSpec::Percent(p) => bucket < p.get(),
            WaveSpec::Devices(_) => false,
        })
    }
}
