//! Rollouts and operator controls on the wire.
//!
//! | topic | payload | retained | QoS |
//! |---|---|---|---|
//! | `fleet/v1/rollouts/{update-id}/state` | signed [`RolloutRecord`] (kind `rollout`) | yes | 1 |
//! | `fleet/v1/control` | signed [`Control`] for the whole fleet (kind `control`) | yes | 1 |
//! | `fleet/v1/groups/{group-id}/control` | signed [`Control`] for a group | yes | 1 |
//! | `fleet/v1/devices/{device-id}/control` | signed [`Control`] for one device | yes | 1 |
//!
//! The rollout record is the operator tools' shared memory: any `fleetctl` holding the signing
//! key reads it, checks the signature, and continues the rollout. Stations never read it; they
//! obey offers and controls.
use serde::{Deserialize, Serialize};

use fleet_core::ids::{DeviceId, GroupId, UpdateId, Version};
use fleet_core::rollout::{Plan, Progress, Scope};
use fleet_core::update::BundleId;

use crate::topic::PREFIX;

pub use fleet_core::rollout::Control;

/// The bundle a rollout offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RolloutBundle {
    pub bundle_id: BundleId,
    pub bundle_size: u64,
    pub version: Version,
    pub compatible: String,
}

/// One rollout, as published (signed, retained) on `fleet/v1/rollouts/{update-id}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RolloutRecord {
    pub update_id: UpdateId,
    /// Increases with every publication of this record (a tool refuses to overwrite a newer
    /// revision than the one it read).
    pub revision: u64,
    pub plan: Plan,
    pub bundle: RolloutBundle,
    pub progress: Progress,
    /// The sequence of the newest offer this rollout published.
    pub offer_sequence: u64,
    /// What happened, newest last (bounded by [`MAX_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Most history entries a record keeps (older ones are dropped).
pub const MAX_HISTORY: usize = 64;

/// One step of a rollout's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HistoryEntry {
    pub at: i64,
    /// `started`, `advanced`, `halted`, `resumed`, `completed`.
    pub what: String,
    pub wave: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RolloutRecord {
    /// Appends to the history, dropping the oldest entries past [`MAX_HISTORY`].
    pub fn log(&mut self, at: i64, what: &str, detail: Option<String>) {
        self.history.push(HistoryEntry {
            at,
            what: what.to_owned(),
            wave: self.progress.wave,
            detail,
        });
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
    }
}

/// `fleet/v1/rollouts/{update-id}/state`.
#[must_use]
pub fn rollout_topic(id: &UpdateId) -> String {
    format!("{PREFIX}/rollouts/{id}/state")
}

/// The control topic of a scope.
#[must_use]
pub fn control_topic(scope: &Scope) -> String {
    match scope {
        Scope::Fleet => format!("{PREFIX}/control"),
        Scope::Group(g) => format!("{PREFIX}/groups/{g}/control"),
        Scope::Device(d) => format!("{PREFIX}/devices/{d}/control"),
    }
}

/// The scope a control topic names, `None` for any other topic.
#[must_use]
pub fn parse_control_topic(topic: &str) -> Option<Scope> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    if rest == "control" {
        return Some(Scope::Fleet);
    }
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        ["groups", g, "control"] => GroupId::new(*g).ok().map(Scope::Group),
        ["devices", d, "control"] => DeviceId::new(*d).ok().map(Scope::Device),
        _ => None,
    }
}

/// The update id a rollout topic names, `None` for any other topic.
#[must_use]
pub fn parse_rollout_topic(topic: &str) -> Option<UpdateId> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix("/rollouts/")?;
    let id = rest.strip_suffix("/state")?;
    UpdateId::new(id).ok()
}

/// Subscription filters.
pub mod filter {
    /// Every rollout record.
    pub const ALL_ROLLOUTS: &str = "fleet/v1/rollouts/+/state";
    /// The fleet-wide control.
    pub const FLEET_CONTROL: &str = "fleet/v1/control";
    /// Every group's control.
    pub const ALL_GROUP_CONTROLS: &str = "fleet/v1/groups/+/control";
    /// Every device's control.
    pub const ALL_DEVICE_CONTROLS: &str = "fleet/v1/devices/+/control";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_topics_round_trip_and_others_are_not_controls() {
        for s in [
            Scope::Fleet,
            Scope::Group(GroupId::new("field").expect("valid")),
            Scope::Device(DeviceId::new("stn-1").expect("valid")),
        ] {
            assert_eq!(parse_control_topic(&control_topic(&s)), Some(s));
        }
        for t in [
            "fleet/v1/devices/stn-1/offer",
            "fleet/v1/groups/+/control",
            "fleet/v1/control/x",
            "fleet/v2/control",
        ] {
            assert_eq!(parse_control_topic(t), None, "{t}");
        }
    }

    #[test]
    fn rollout_topics_round_trip() {
        let u = UpdateId::new("1-2-0-abcdef12").expect("valid");
        assert_eq!(parse_rollout_topic(&rollout_topic(&u)), Some(u));
        assert_eq!(parse_rollout_topic("fleet/v1/rollouts/+/state"), None);
    }
}
