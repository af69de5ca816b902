//! Signed configuration pushes on the wire (ADR 0011): topics, the envelope (kind `config`) and
//! what a station reports back.
//!
//! - `fleet/v1/config/{daemon}`, `fleet/v1/groups/{group-id}/config/{daemon}` and
//!   `fleet/v1/devices/{device-id}/config/{daemon}`: a retained, signed
//!   [`ConfigPush`](fleet_core::config_push::ConfigPush), one per scope and daemon (the newest
//!   replaces the older one; a station takes it once, by its sequence);
//! - the station reports on its events topic: `config-accepted`, `config-refused` (with the
//!   rule's code) and `config-restored` (the daemon was not healthy within the deadline; with the
//!   reason), each with the daemon and the sequence.
use fleet_core::config_push::{ConfigPush, Daemon};
use fleet_core::ids::{DeviceId, GroupId};
use fleet_core::rollout::Scope;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError, Kind, Opened, TrustedKeys};
use crate::limits::Limits;
use crate::topic::PREFIX;

const DAEMONS: [Daemon; 4] = Daemon::ALL;

/// The topic of a push for `daemon` to `scope`.
#[must_use]
pub fn config_topic(scope: &Scope, daemon: Daemon) -> String {
    let d = daemon.as_str();
    match scope {
        Scope::Fleet => format!("{PREFIX}/config/{d}"),
        Scope::Group(g) => format!("{PREFIX}/groups/{g}/config/{d}"),
        Scope::Device(id) => format!("{PREFIX}/devices/{id}/config/{d}"),
    }
}

/// The scope and daemon a config topic names, `None` for any other topic.
#[must_use]
pub fn parse_config_topic(topic: &str) -> Option<(Scope, Daemon)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let levels: Vec<&str> = rest.split('/').collect();
    let daemon = |s: &str| DAEMONS.into_iter().find(|d| d.as_str() == s);
    match levels.as_slice() {
        ["config", d] => Some((Scope::Fleet, daemon(d)?)),
        ["groups", g, "config", d] => Some((Scope::Group(GroupId::new(*g).ok()?), daemon(d)?)),
        ["devices", id, "config", d] => Some((Scope::Device(DeviceId::new(*id).ok()?), daemon(d)?)),
        _ => None,
    }
}

/// The topics a station subscribes for its pushes: the fleet's, each group's and its own, for
/// every daemon.
#[must_use]
pub fn station_filters(device: &DeviceId, groups: &[GroupId]) -> Vec<String> {
    let mut out = vec![format!("{PREFIX}/config/+")];
    out.extend(
        groups
            .iter()
            .map(|g| format!("{PREFIX}/groups/{g}/config/+")),
    );
    out.push(format!("{PREFIX}/devices/{device}/config/+"));
    out
}

/// Why an envelope on a config topic is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigPushError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("unable to accept configuration: its signed scope or daemon is not its topic's")]
    TopicMismatch,
}

/// Opens a push that arrived on `topic`: signature and size first, then the signed scope and
/// daemon must be the topic's (the topic is not authoritative: the signed content is).
pub fn open_config_push(
    topic: &str,
    bytes: &[u8],
    trusted: &TrustedKeys,
    limits: &Limits,
) -> Result<Opened<ConfigPush>, ConfigPushError> {
    let opened = envelope::open_json::<ConfigPush>(bytes, Kind::Config, trusted, limits)?;
    match parse_config_topic(topic) {
        Some((scope, daemon)) if scope == opened.value.scope && daemon == opened.value.daemon => {
            Ok(opened)
        }
        _ => Err(ConfigPushError::TopicMismatch),
    }
}

/// What happened to a push, as the station reports it (events topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event", deny_unknown_fields)]
pub enum ConfigOutcome {
    /// Checked, written and the daemon restarted healthy.
    ConfigAccepted { daemon: Daemon, sequence: u64 },
    /// Refused before anything changed; `code` is the rule (`PushRefused::code`) or
    /// `rejected-by-daemon` when the daemon's own checker refused the merged configuration.
    ConfigRefused {
        daemon: Daemon,
        sequence: u64,
        code: String,
        reason: String,
    },
    /// Written, but the daemon was not healthy within the deadline: the previous layer is back.
    ConfigRestored {
        daemon: Daemon,
        sequence: u64,
        reason: String,
    },
}

/// A station's report about a push, on `fleet/v1/devices/{device-id}/events` (not retained):
/// the event envelope of [`StationEvent`](crate::payload::StationEvent) (`device-id`, `seq`
/// from the same counter, `at`) with the outcome's fields beside them, so `event` is a word
/// (`config-accepted`, ...) where an update event has an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigEvent {
    pub device_id: DeviceId,
    pub seq: u64,
    pub at: crate::payload::Timestamp,
    #[serde(flatten)]
    pub outcome: ConfigOutcome,
}

/// Reads a configuration event (bounded by `limits.max_event_bytes`); an update event is an
/// error here, and a configuration event is one for `payload::decode_event`.
pub fn decode_config_event(bytes: &[u8], limits: &Limits) -> Result<ConfigEvent, String> {
    if bytes.len() > limits.max_event_bytes {
        return Err(format!(
            "event of {} bytes is above the limit of {}",
            bytes.len(),
            limits.max_event_bytes
        ));
    }
    crate::json::parse(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use fleet_core::config_push::Value;

    fn push(scope: Scope) -> ConfigPush {
        ConfigPush {
            scope,
            daemon: Daemon::Recorderd,
            sequence: 3,
            set: [("position.lat".to_owned(), Value::Float(52.0))].into(),
            unset: Vec::new(),
            health_deadline_secs: 120,
            issued_at: 0,
        }
    }

    #[test]
    fn every_scope_and_daemon_round_trips_through_its_topic() {
        for scope in [
            Scope::Fleet,
            Scope::Group(GroupId::new("canary").expect("id")),
            Scope::Device(DeviceId::new("stn-1").expect("id")),
        ] {
            for d in DAEMONS {
                let t = config_topic(&scope, d);
                assert_eq!(parse_config_topic(&t), Some((scope.clone(), d)), "{t}");
            }
        }
        for bad in [
            "fleet/v1/config/shell",
            "fleet/v1/config",
            "fleet/v1/groups/Bad/config/recorderd",
            "fleet/v1/devices/stn-1/control",
        ] {
            assert_eq!(parse_config_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_push_on_another_scopes_topic_or_with_another_kind_is_refused() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let trusted: TrustedKeys = [key.verifying_key()].into_iter().collect();
        let p = push(Scope::Device(DeviceId::new("stn-1").expect("id")));
        let sealed = envelope::seal_json(Kind::Config, &p, &key).expect("seal");
        let own = config_topic(&p.scope, p.daemon);
        let opened = open_config_push(&own, &sealed, &trusted, &Limits::DEFAULT).expect("opens");
        assert_eq!(opened.value, p);
        // Replayed onto another station's topic.
        let other = config_topic(
            &Scope::Device(DeviceId::new("stn-2").expect("id")),
            p.daemon,
        );
        assert!(matches!(
            open_config_push(&other, &sealed, &trusted, &Limits::DEFAULT),
            Err(ConfigPushError::TopicMismatch)
        ));
        // A control signature cannot pass as a configuration.
        let as_control = envelope::seal_json(Kind::Control, &p, &key).expect("seal");
        assert!(matches!(
            open_config_push(&own, &as_control, &trusted, &Limits::DEFAULT),
            Err(ConfigPushError::Envelope(_))
        ));
        // Another key.
        let forged =
            envelope::seal_json(Kind::Config, &p, &SigningKey::from_bytes(&[8; 32])).expect("seal");
        assert!(open_config_push(&own, &forged, &trusted, &Limits::DEFAULT).is_err());
    }

    #[test]
    fn a_config_event_reads_back_and_is_no_update_event() {
        let e = ConfigEvent {
            device_id: DeviceId::new("stn-1").expect("id"),
            seq: 9,
            at: crate::payload::Timestamp {
                monotonic_ms: 5,
                wall_unix_s: None,
            },
            outcome: ConfigOutcome::ConfigRefused {
                daemon: Daemon::Uploaderd,
                sequence: 3,
                code: "replayed".into(),
                reason: "sequence 3 is not above 3".into(),
            },
        };
        let bytes = crate::payload::encode(&e);
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.contains("\"event\":\"config-refused\""), "{text}");
        assert_eq!(decode_config_event(&bytes, &Limits::DEFAULT), Ok(e));
        assert!(crate::payload::decode_event(&bytes, &Limits::DEFAULT).is_err());
    }

    #[test]
    fn outcomes_are_tagged_events() {
        let o = ConfigOutcome::ConfigRestored {
            daemon: Daemon::Recorderd,
            sequence: 4,
            reason: "fleet-recorderd.service not active after 120 s".into(),
        };
        let json = serde_json::to_string(&o).expect("json");
        assert!(json.starts_with("{\"event\":\"config-restored\""), "{json}");
        assert_eq!(
            serde_json::from_str::<ConfigOutcome>(&json).expect("back"),
            o
        );
    }
}
