//! MQTT topics. Every topic starts with `fleet/v1/`; ids in topic levels are validated
//! newtypes, so a topic built here can never contain `/`, `+`, `#` or anything else that would
//! escape its level.
//!
//! | topic | payload | retained | QoS |
//! |---|---|---|---|
//! | `fleet/v1/devices/{device-id}/offer` | signed offer envelope | yes | 1 |
//! | `fleet/v1/groups/{group-id}/offer` | signed offer envelope | yes | 1 |
//! | `fleet/v1/bundles/{bundle-id}/manifest` | signed manifest envelope | yes | 1 |
//! | `fleet/v1/bundles/{bundle-id}/chunks/{index}` | raw chunk bytes | yes | 1 |
//! | `fleet/v1/devices/{device-id}/state` | `StationState` JSON | yes | 1 |
//! | `fleet/v1/devices/{device-id}/events` | `StationEvent` JSON | no | 1 |
//! | `fleet/v1/devices/{device-id}/presence` | `online` / `offline` | yes | 1 |
//! | `fleet/v1/devices/{device-id}/health` | [`Health`](crate::health::Health) JSON | yes | 1 |
//! | `fleet/v1/devices/{device-id}/logs/request` | signed envelope, kind `log-request` | no | 1 |
//! | `fleet/v1/devices/{device-id}/logs/reply` | [`LogReply`](crate::logs::LogReply) JSON | no | 1 |
use std::fmt;

use fleet_core::ids::{DeviceId, GroupId};
use fleet_core::update::BundleId;

/// The prefix of every topic (no trailing slash).
pub const PREFIX: &str = "fleet/v1";

/// Longest topic [`Topic::parse`] looks at, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// The QoS every fleet topic uses (at least once; every payload is idempotent).
pub const QOS: u8 = 1;

/// A fleet topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topic {
    /// Offers to one station.
    DeviceOffer(DeviceId),
    /// Offers to a group.
    GroupOffer(GroupId),
    /// A bundle's signed manifest.
    BundleManifest(BundleId),
    /// One chunk of a bundle (`index` from 0, decimal without leading zeros).
    BundleChunk { bundle_id: BundleId, index: u32 },
    /// A station's retained state.
    DeviceState(DeviceId),
    /// A station's events.
    DeviceEvents(DeviceId),
    /// A station's presence (`offline` is its MQTT last will).
    DevicePresence(DeviceId),
    /// A station's retained health report.
    DeviceHealth(DeviceId),
    /// Signed journal requests to a station.
    DeviceLogRequest(DeviceId),
    /// A station's journal replies.
    DeviceLogReply(DeviceId),
}

/// A topic that is not a fleet topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse topic {topic:?}: {why}")]
pub struct TopicError {
    /// The topic, cut to [`MAX_TOPIC_LEN`] bytes.
    pub topic: String,
    pub why: &'static str,
}

impl Topic {
    /// Whether messages on this topic are published retained.
    #[must_use]
    pub fn is_retained(&self) -> bool {
        !matches!(
            self,
            Topic::DeviceEvents(_) | Topic::DeviceLogRequest(_) | Topic::DeviceLogReply(_)
        )
    }

    /// Parses a topic string. Refuses anything not built by [`Topic`]'s `Display`: other
    /// prefixes, wildcards, empty or extra levels, invalid ids, upper-case or short hex,
    /// leading zeros or overflow in chunk indexes, and topics over [`MAX_TOPIC_LEN`] bytes.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let err = |why| TopicError {
            topic: fleet_core::update::offer::truncate(topic, MAX_TOPIC_LEN),
            why,
        };
        if topic.len() > MAX_TOPIC_LEN {
            return Err(err("too long"));
        }
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| err("not under fleet/v1/"))?;
        let levels: Vec<&str> = rest.split('/').collect();
        let device = |s: &str| DeviceId::new(s).map_err(|_| err("invalid device id"));
        match levels.as_slice() {
            ["devices", id, "offer"] => Ok(Topic::DeviceOffer(device(id)?)),
            ["devices", id, "state"] => Ok(Topic::DeviceState(device(id)?)),
            ["devices", id, "events"] => Ok(Topic::DeviceEvents(device(id)?)),
            ["devices", id, "presence"] => Ok(Topic::DevicePresence(device(id)?)),
            ["devices", id, "health"] => Ok(Topic::DeviceHealth(device(id)?)),
            ["devices", id, "logs", "request"] => Ok(Topic::DeviceLogRequest(device(id)?)),
            ["devices", id, "logs", "reply"] => Ok(Topic::DeviceLogReply(device(id)?)),
            ["groups", id, "offer"] => Ok(Topic::GroupOffer(
                GroupId::new(*id).map_err(|_| err("invalid group id"))?,
            )),
            ["bundles", id, "manifest"] => Ok(Topic::BundleManifest(
                id.parse().map_err(|_| err("invalid bundle id"))?,
            )),
            ["bundles", id, "chunks", index] => Ok(Topic::BundleChunk {
                bundle_id: id.parse().map_err(|_| err("invalid bundle id"))?,
                index: parse_index(index).ok_or_else(|| err("invalid chunk index"))?,
            }),
            _ => Err(err("unknown topic")),
        }
    }
}

fn parse_index(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::DeviceOffer(d) => write!(f, "{PREFIX}/devices/{d}/offer"),
            Topic::GroupOffer(g) => write!(f, "{PREFIX}/groups/{g}/offer"),
            Topic::BundleManifest(b) => write!(f, "{PREFIX}/bundles/{b}/manifest"),
            Topic::BundleChunk { bundle_id, index } => {
                write!(f, "{PREFIX}/bundles/{bundle_id}/chunks/{index}")
            }
            Topic::DeviceState(d) => write!(f, "{PREFIX}/devices/{d}/state"),
            Topic::DeviceEvents(d) => write!(f, "{PREFIX}/devices/{d}/events"),
            Topic::DevicePresence(d) => write!(f, "{PREFIX}/devices/{d}/presence"),
            Topic::DeviceHealth(d) => write!(f, "{PREFIX}/devices/{d}/health"),
            Topic::DeviceLogRequest(d) => write!(f, "{PREFIX}/devices/{d}/logs/request"),
            Topic::DeviceLogReply(d) => write!(f, "{PREFIX}/devices/{d}/logs/reply"),
        }
    }
}

/// `fleet/v1/devices/{id}/offer`.
#[must_use]
pub fn device_offer(id: &DeviceId) -> String {
    Topic::DeviceOffer(id.clone()).to_string()
}

/// `fleet/v1/groups/{id}/offer`.
#[must_use]
pub fn group_offer(id: &GroupId) -> String {
    Topic::GroupOffer(id.clone()).to_string()
}

/// `fleet/v1/bundles/{id}/manifest`.
#[must_use]
pub fn bundle_manifest(id: &BundleId) -> String {
    Topic::BundleManifest(*id).to_string()
}

/// `fleet/v1/bundles/{id}/chunks/{index}`.
#[must_use]
pub fn bundle_chunk(id: &BundleId, index: u32) -> String {
    Topic::BundleChunk {
        bundle_id: *id,
        index,
    }
    .to_string()
}

/// `fleet/v1/devices/{id}/state`.
#[must_use]
pub fn device_state(id: &DeviceId) -> String {
    Topic::DeviceState(id.clone()).to_string()
}

/// `fleet/v1/devices/{id}/events`.
#[must_use]
pub fn device_events(id: &DeviceId) -> String {
    Topic::DeviceEvents(id.clone()).to_string()
}

/// `fleet/v1/devices/{id}/presence`.
#[must_use]
pub fn device_presence(id: &DeviceId) -> String {
    Topic::DevicePresence(id.clone()).to_string()
}

/// `fleet/v1/devices/{id}/health`.
#[must_use]
pub fn device_health(id: &DeviceId) -> String {
    Topic::DeviceHealth(id.clone()).to_string()
}

/// `fleet/v1/devices/{id}/logs/request`.
#[must_use]
pub fn device_log_request(id: &DeviceId) -> String {
    Topic::DeviceLogRequest(id.clone()).to_string()
}

/// `fleet/v1/devices/{id}/logs/reply`.
#[must_use]
pub fn device_log_reply(id: &DeviceId) -> String {
    Topic::DeviceLogReply(id.clone()).to_string()
}

/// Subscription filters (with MQTT wildcards) for the operator side.
pub mod filter {
    use super::PREFIX;
    use fleet_core::update::BundleId;

    /// Every station's retained state: `fleet/v1/devices/+/state`.
    pub const ALL_STATES: &str = "fleet/v1/devices/+/state";
    /// Every station's events: `fleet/v1/devices/+/events`.
    pub const ALL_EVENTS: &str = "fleet/v1/devices/+/events";
    /// Every station's presence: `fleet/v1/devices/+/presence`.
    pub const ALL_PRESENCE: &str = "fleet/v1/devices/+/presence";
    /// Every station's retained health: `fleet/v1/devices/+/health`.
    pub const ALL_HEALTH: &str = "fleet/v1/devices/+/health";
    /// Everything under every bundle (for `fleetctl clear`): `fleet/v1/bundles/#`.
    pub const ALL_BUNDLES: &str = "fleet/v1/bundles/#";

    /// All chunks of one bundle: `fleet/v1/bundles/{id}/chunks/+`.
    #[must_use]
    pub fn bundle_chunks(id: &BundleId) -> String {
        format!("{PREFIX}/bundles/{id}/chunks/+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid() -> BundleId {
        BundleId::from_bytes([0x5a; 32])
    }

    #[test]
    fn every_topic_round_trips_through_its_string() {
        let d = DeviceId::new("stn-0042").expect("valid");
        let g = GroupId::new("canary").expect("valid");
        for t in [
            Topic::DeviceOffer(d.clone()),
            Topic::GroupOffer(g),
            Topic::BundleManifest(bid()),
            Topic::BundleChunk {
                bundle_id: bid(),
                index: 0,
            },
            Topic::BundleChunk {
                bundle_id: bid(),
                index: u32::MAX,
            },
            Topic::DeviceState(d.clone()),
            Topic::DeviceEvents(d.clone()),
            Topic::DevicePresence(d.clone()),
            Topic::DeviceHealth(d.clone()),
            Topic::DeviceLogRequest(d.clone()),
            Topic::DeviceLogReply(d),
        ] {
            let s = t.to_string();
            assert!(s.starts_with("fleet/v1/"));
            assert_eq!(Topic::parse(&s), Ok(t));
        }
    }

    #[test]
    fn only_events_are_not_retained() {
        let d = DeviceId::new("x").expect("valid");
        assert!(!Topic::DeviceEvents(d.clone()).is_retained());
        assert!(Topic::DeviceState(d.clone()).is_retained());
        assert!(Topic::DeviceOffer(d).is_retained());
    }

    #[test]
    fn malicious_and_malformed_topics_are_refused() {
        let b = bid().to_string();
        let long = format!("fleet/v1/devices/{}/state", "a".repeat(300));
        let cases: Vec<String> = vec![
            "".into(),
            "fleet/v1".into(),
            "fleet/v1/".into(),
            "fleet/v2/devices/stn-1/state".into(),
            "/fleet/v1/devices/stn-1/state".into(),
            "fleet/v1/devices/stn-1/state/".into(),
            "fleet/v1/devices//state".into(),
            "fleet/v1/devices/+/state".into(),
            "fleet/v1/devices/#".into(),
            "fleet/v1/devices/stn-1/../stn-2/state".into(),
            "fleet/v1/devices/../state".into(),
            "fleet/v1/devices/STN-1/state".into(),
            "fleet/v1/devices/stn 1/state".into(),
            "fleet/v1/devices/stn-1\0/state".into(),
            "fleet/v1/devices/stn-1/reboot".into(),
            "fleet/v1/groups/can+ary/offer".into(),
            "fleet/v1/groups/canary/state".into(),
            format!("fleet/v1/bundles/{}/manifest", b.to_uppercase()),
            format!("fleet/v1/bundles/{}/manifest", &b[..63]),
            format!("fleet/v1/bundles/{b}/chunks/"),
            format!("fleet/v1/bundles/{b}/chunks/01"),
            format!("fleet/v1/bundles/{b}/chunks/-1"),
            format!("fleet/v1/bundles/{b}/chunks/+1"),
            format!("fleet/v1/bundles/{b}/chunks/4294967296"),
            format!("fleet/v1/bundles/{b}/chunks/1e3"),
            format!("fleet/v1/bundles/{b}/chunks/0/extra"),
            format!("fleet/v1/devices/{}/state", "a".repeat(65)),
            long,
        ];
        for c in &cases {
            assert!(Topic::parse(c).is_err(), "{c:?} must be refused");
        }
    }

    #[test]
    fn filters_are_under_the_versioned_prefix() {
        assert_eq!(
            filter::bundle_chunks(&bid()),
            format!("fleet/v1/bundles/{}/chunks/+", bid())
        );
        for f in [
            filter::ALL_STATES,
            filter::ALL_EVENTS,
            filter::ALL_PRESENCE,
            filter::ALL_BUNDLES,
        ] {
            assert!(f.starts_with("fleet/v1/"));
        }
    }
}
