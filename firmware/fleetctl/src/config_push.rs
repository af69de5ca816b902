//! `fleetctl config push`: a signed configuration change for one daemon (ADR 0011), checked
//! against the station-side rules before it is published, retained on its scope's topic.
use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleet_core::config_push::{ConfigPush, Daemon, PushRefused, Value, decide_config_push};
use fleet_core::ids::{DeviceId, GroupId};
use fleet_core::rollout::Scope;
use fleet_core::update::Station;
use fleet_proto::config_push::config_topic;
use fleet_proto::envelope::{self, Kind};
use fleet_proto::{Limits, TrustedKeys};

use crate::connection::{BrokerAddr, Connection, ConnectionError, collect_retained};
use crate::publish::RETAINED_QUIET;

const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a push was not published.
#[derive(Debug, thiserror::Error)]
pub enum ConfigPushError {
    /// The stations would refuse it: nothing is published.
    #[error(transparent)]
    Refused(#[from] PushRefused),
    #[error("unable to read {0:?} as key=value")]
    Assignment(String),
    #[error(transparent)]
    Broker(#[from] ConnectionError),
    #[error("unable to sign the push: {0}")]
    Sign(String),
}

/// `key=value`: the value as TOML (`true`, `12`, `52.5`, `"text"`, `["a", "b"]`), or a bare
/// word as text (`+01:00`, `never`).
pub fn parse_assignment(s: &str) -> Result<(String, Value), ConfigPushError> {
    let (key, raw) = s
        .split_once('=')
        .ok_or_else(|| ConfigPushError::Assignment(s.to_owned()))?;
    let key = key.trim().to_owned();
    let raw = raw.trim();
    let parsed: Option<toml::Value> = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    let value = match parsed {
        Some(toml::Value::Boolean(b)) => Value::Bool(b),
        Some(toml::Value::Integer(i)) => Value::Integer(i),
        Some(toml::Value::Float(f)) => Value::Float(f),
        Some(toml::Value::String(t)) => Value::Text(t),
        Some(toml::Value::Array(a)) => Value::TextList(
            a.into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(ConfigPushError::Assignment(s.to_owned())),
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(ConfigPushError::Assignment(s.to_owned())),
        None => Value::Text(raw.to_owned()),
    };
    if key.is_empty() {
        return Err(ConfigPushError::Assignment(s.to_owned()));
    }
    Ok((key, value))
}

/// A station inside `scope`, to check a push by the stations' own rule before publishing.
fn member_of(scope: &Scope) -> Station {
    let (device, groups) = match scope {
        Scope::Device(d) => (d.clone(), Vec::new()),
        Scope::Group(g) => (
            DeviceId::new("fleetctl-check").expect("a valid id"),
            vec![g.clone()],
        ),
        Scope::Fleet => (
            DeviceId::new("fleetctl-check").expect("a valid id"),
            Vec::<GroupId>::new(),
        ),
    };
    Station {
        device_id: device,
        groups,
        compatible: String::new(),
    }
}

/// Builds the push and checks it as a station in its scope would (sequence aside).
pub fn build(
    scope: Scope,
    daemon: Daemon,
    set: BTreeMap<String, Value>,
    unset: Vec<String>,
    deadline: Duration,
    sequence: u64,
) -> Result<ConfigPush, ConfigPushError> {
    let push = ConfigPush {
        scope,
        daemon,
        sequence,
        set,
        unset,
        health_deadline_secs: u32::try_from(deadline.as_secs()).unwrap_or(u32::MAX),
        issued_at: crate::rollout::unix_now(),
    };
    decide_config_push(&member_of(&push.scope), None, &push)?;
    Ok(push)
}

/// The highest sequence this key signed for `daemon` on any scope, from the retained pushes.
pub async fn last_sequence(
    addr: &BrokerAddr,
    key: &SigningKey,
    daemon: Daemon,
) -> Result<u64, ConfigPushError> {
    let d = daemon.as_str();
    let filters = vec![
        format!("fleet/v1/config/{d}"),
        format!("fleet/v1/groups/+/config/{d}"),
        format!("fleet/v1/devices/+/config/{d}"),
    ];
    let msgs = collect_retained(addr, &filters, RETAINED_QUIET, 100_000).await?;
    let trusted: TrustedKeys = [key.verifying_key()].into_iter().collect();
    Ok(msgs
        .iter()
        .filter_map(|m| {
            envelope::open_json::<ConfigPush>(&m.payload, Kind::Config, &trusted, &Limits::DEFAULT)
                .ok()
        })
        .map(|o| o.value.sequence)
        .max()
        .unwrap_or(0))
}

/// Signs `push` and publishes it, retained, on its topic. Returns the topic.
pub async fn publish(
    addr: &BrokerAddr,
    key: &SigningKey,
    push: &ConfigPush,
) -> Result<String, ConfigPushError> {
    let topic = config_topic(&push.scope, push.daemon);
    let sealed = envelope::seal_json(Kind::Config, push, key)
        .map_err(|e| ConfigPushError::Sign(e.to_string()))?;
    let mut conn = Connection::open(addr, "fleetctl-config", ACK_TIMEOUT).await?;
    conn.publish(&topic, sealed, true).await?;
    conn.close(ACK_TIMEOUT).await?;
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_take_toml_values_and_bare_words() {
        assert_eq!(
            parse_assignment("position.lat=52.5").expect("ok"),
            ("position.lat".into(), Value::Float(52.5))
        );
        assert_eq!(
            parse_assignment("utc-offset=+01:00").expect("ok").1,
            Value::Text("+01:00".into())
        );
        assert_eq!(
            parse_assignment("groups=[\"a\", \"b\"]").expect("ok").1,
            Value::TextList(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_assignment("policy.uploader=true").expect("ok").1,
            Value::Bool(true)
        );
        assert!(parse_assignment("no-equals").is_err());
    }

    #[test]
    fn a_push_the_stations_would_refuse_is_never_built() {
        let set: BTreeMap<String, Value> =
            [("data-dir".to_owned(), Value::Text("/tmp".into()))].into();
        assert!(matches!(
            build(
                Scope::Fleet,
                Daemon::Recorderd,
                set,
                Vec::new(),
                Duration::from_secs(120),
                1
            ),
            Err(ConfigPushError::Refused(PushRefused::KeyNotAllowed { .. }))
        ));
    }
}
