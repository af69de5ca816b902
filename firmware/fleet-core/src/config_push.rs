//! Signed configuration changes (ADR 0011): which pushes a station takes, and what its pushed
//! layer becomes.
//!
//! An operator signs a [`ConfigPush`] for one daemon and one scope (the fleet, a group, a
//! device). A station takes it only when the scope is its own, the sequence is above the last one
//! it took for that daemon, and every key is on that daemon's documented list ([`allowed`]):
//! nothing else can be set this way, in particular no path and no command. What the values mean
//! is the daemon's own checker's business: the shell validates the merged configuration with it
//! before anything is written, and restores the previous layer when the daemon is not healthy
//! within the push's deadline.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rollout::Scope;
use crate::update::Station;

/// Most keys one push sets or unsets.
pub const MAX_KEYS: usize = 32;
/// Longest text value.
pub const MAX_TEXT: usize = 256;
/// The health deadline a push may ask for, in seconds.
pub const DEADLINE_SECS: std::ops::RangeInclusive<u32> = 10..=3600;

/// The daemons whose station settings a push may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Daemon {
    Recorderd,
    Retentiond,
    Updated,
    Uploaderd,
}

impl Daemon {
    /// Every daemon a push may address.
    pub const ALL: [Daemon; 4] = [
        Daemon::Recorderd,
        Daemon::Retentiond,
        Daemon::Updated,
        Daemon::Uploaderd,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Daemon::Recorderd => "recorderd",
            Daemon::Retentiond => "retentiond",
            Daemon::Updated => "updated",
            Daemon::Uploaderd => "uploaderd",
        }
    }

    /// The daemon named `name` (`recorderd`, ...).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Daemon> {
        Daemon::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// A setting's value: TOML scalars and lists of text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    TextList(Vec<String>),
}

/// What a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    Integer,
    /// A number (an integer is accepted too).
    Float,
    /// One of the listed words.
    Word(&'static [&'static str]),
    /// An id list (`a-z 0-9 - _`, as group names).
    IdList,
    /// `+HH:MM` / `-HH:MM`.
    UtcOffset,
    /// A list of daily windows `HH:MM-HH:MM` (local time; over midnight allowed).
    TimeWindows,
}

/// The documented keys a push may set, per daemon (dotted paths; `*` is one profile name).
/// None is a path, a command or an identity: those come only from the image or provisioning.
#[must_use]
pub fn allowed(daemon: Daemon) -> &'static [(&'static str, ValueKind)] {
    match daemon {
        Daemon::Recorderd => &[
            ("utc-offset", ValueKind::UtcOffset),
            (
                "clock-trust",
                ValueKind::Word(&["system", "file", "always", "never"]),
            ),
            ("position.lat", ValueKind::Float),
            ("position.lon", ValueKind::Float),
            ("position.elevation-m", ValueKind::Float),
            ("profiles.*.gain-db", ValueKind::Float),
            ("profiles.*.segment-seconds", ValueKind::Integer),
            ("profiles.*.sync-interval-seconds", ValueKind::Integer),
        ],
        Daemon::Retentiond => &[
            ("policy.uploader", ValueKind::Bool),
            ("policy.analyser", ValueKind::Bool),
            ("policy.housekeeping-at-percent", ValueKind::Float),
            ("policy.defensive-at-percent", ValueKind::Float),
            ("policy.panic-at-percent", ValueKind::Float),
            ("policy.floor-seconds", ValueKind::Integer),
            ("policy.keep-uploaded-for-seconds", ValueKind::Integer),
            ("policy.update-reserve-mib", ValueKind::Integer),
        ],
        Daemon::Updated => &[
            ("groups", ValueKind::IdList),
            // `trusted` (skip the clock rule) is for simulations and tests: never pushed.
            ("wall-clock", ValueKind::Word(&["system", "untrusted"])),
            ("mqtt.keep-alive-secs", ValueKind::Integer),
            ("update.chunk-window", ValueKind::Integer),
            ("update.stall-timeout-secs", ValueKind::Integer),
        ],
        // What leaves when, how fast and how persistently: never the destination (endpoint,
        // bucket, host, user, remote directory), its credentials or key files, or any path.
        Daemon::Uploaderd => &[
            ("format", ValueKind::Word(&["flac", "wav"])),
            ("order", ValueKind::Word(&["oldest-first", "newest-first"])),
            ("poll-seconds", ValueKind::Float),
            ("schedule.windows", ValueKind::TimeWindows),
            ("schedule.utc-offset", ValueKind::UtcOffset),
            (
                "schedule.when-clock-untrusted",
                ValueKind::Word(&["upload", "wait"]),
            ),
            ("retry.base-seconds", ValueKind::Float),
            ("retry.max-seconds", ValueKind::Float),
            ("retry.dead-letter-after", ValueKind::Integer),
            ("retry.dead-letter-retry-seconds", ValueKind::Float),
            ("bandwidth.max-bytes-per-second", ValueKind::Integer),
            ("bandwidth.burst-bytes", ValueKind::Integer),
        ],
    }
}

/// A signed configuration change (envelope kind `config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigPush {
    pub scope: Scope,
    pub daemon: Daemon,
    /// Strictly increasing per daemon over every scope: a station takes only a sequence above
    /// the last it took for that daemon.
    pub sequence: u64,
    /// Keys to set in the pushed layer (dotted paths of [`allowed`]).
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Keys to drop from the pushed layer (back to the provisioned or image value).
    #[serde(default)]
    pub unset: Vec<String>,
    /// The daemon must be healthy this long after its restart, or the previous layer returns.
    pub health_deadline_secs: u32,
    /// Unix seconds when signed (informational).
    pub issued_at: i64,
}

/// Why a push was refused. Nothing changes on the station.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushRefused {
    #[error("unable to accept configuration: its scope is not this station")]
    NotForThisStation,
    #[error("unable to accept configuration: sequence {sequence} is not above {last}")]
    Replayed { sequence: u64, last: u64 },
    #[error("unable to accept configuration: it changes nothing")]
    Empty,
    #[error("unable to accept configuration: {0} keys is above the limit")]
    TooManyKeys(usize),
    #[error("unable to accept configuration: {daemon} has no pushable key {key:?}")]
    KeyNotAllowed { daemon: &'static str, key: String },
    #[error("unable to accept configuration: {key}: {why}")]
    BadValue { key: String, why: String },
    #[error("unable to accept configuration: health-deadline-secs must be within 10..=3600")]
    BadDeadline,
}

impl PushRefused {
    /// The reject code in reports.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            PushRefused::NotForThisStation => "not-for-this-station",
            PushRefused::Replayed { .. } => "replayed",
            PushRefused::Empty => "empty",
            PushRefused::TooManyKeys(_) => "too-many-keys",
            PushRefused::KeyNotAllowed { .. } => "key-not-allowed",
            PushRefused::BadValue { .. } => "bad-value",
            PushRefused::BadDeadline => "bad-deadline",
        }
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The kind of `key` for `daemon`, if it may be pushed.
#[must_use]
pub fn kind_of(daemon: Daemon, key: &str) -> Option<ValueKind> {
    let parts: Vec<&str> = key.split('.').collect();
    allowed(daemon).iter().find_map(|(pattern, kind)| {
        let pat: Vec<&str> = pattern.split('.').collect();
        let matches = pat.len() == parts.len()
            && pat
                .iter()
                .zip(&parts)
                .all(|(p, k)| if *p == "*" { is_id(k) } else { p == k });
        matches.then_some(*kind)
    })
}

fn is_hh_mm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && b[..2].iter().chain(&b[3..]).all(u8::is_ascii_digit)
        && s[..2] < *"24"
        && s[3..] < *"60"
}

fn is_window(s: &str) -> bool {
    s.split_once('-')
        .is_some_and(|(from, to)| is_hh_mm(from) && is_hh_mm(to))
}

fn check_value(key: &str, kind: ValueKind, value: &Value) -> Result<(), PushRefused> {
    let bad = |why: &str| {
        Err(PushRefused::BadValue {
            key: key.to_owned(),
            why: why.to_owned(),
        })
    };
    match (kind, value) {
        (ValueKind::Bool, Value::Bool(_)) | (ValueKind::Integer, Value::Integer(_)) => Ok(()),
        (ValueKind::Float, Value::Integer(_)) => Ok(()),
        (ValueKind::Float, Value::Float(f)) if f.is_finite() => Ok(()),
        (ValueKind::Word(words), Value::Text(t)) if words.contains(&t.as_str()) => Ok(()),
        (ValueKind::Word(words), _) => bad(&format!("must be one of {}", words.join(", "))),
        (ValueKind::IdList, Value::TextList(l))
            if l.len() <= MAX_KEYS && l.iter().all(|s| is_id(s)) =>
        {
            Ok(())
        }
        (ValueKind::TimeWindows, Value::TextList(l))
            if l.len() <= MAX_KEYS && l.iter().all(|w| is_window(w)) =>
        {
            Ok(())
        }
        (ValueKind::UtcOffset, Value::Text(t))
            if t.len() == 6
                && matches!(t.as_bytes()[0], b'+' | b'-')
                && t.as_bytes()[3] == b':'
                && t.bytes()
                    .enumerate()
                    .all(|(i, b)| matches!(i, 0 | 3) || b.is_ascii_digit()) =>
        {
            Ok(())
        }
        (ValueKind::Bool, _) => bad("must be true or false"),
        (ValueKind::Integer, _) => bad("must be an integer"),
        (ValueKind::Float, _) => bad("must be a finite number"),
        (ValueKind::IdList, _) => bad("must be a list of ids (a-z, 0-9, '-', '_')"),
        (ValueKind::UtcOffset, _) => bad("must be +HH:MM or -HH:MM"),
        (ValueKind::TimeWindows, _) => bad("must be a list of HH:MM-HH:MM windows"),
    }
}

/// Checks a (signature-verified) push against the station and the last sequence it took for the
/// push's daemon.
pub fn decide_config_push(
    station: &Station,
    last_sequence: Option<u64>,
    push: &ConfigPush,
) -> Result<(), PushRefused> {
    let ours = match &push.scope {
        Scope::Fleet => true,
        Scope::Group(g) => station.groups.contains(g),
        Scope::Device(d) => *d == station.device_id,
    };
    if !ours {
        return Err(PushRefused::NotForThisStation);
    }
    if let Some(last) = last_sequence
        && push.sequence <= last
    {
        return Err(PushRefused::Replayed {
            sequence: push.sequence,
            last,
        });
    }
    let n = push.set.len() + push.unset.len();
    if n == 0 {
        return Err(PushRefused::Empty);
    }
    if n > MAX_KEYS {
        return Err(PushRefused::TooManyKeys(n));
    }
    if !DEADLINE_SECS.contains(&push.health_deadline_secs) {
        return Err(PushRefused::BadDeadline);
    }
    let not_allowed = |key: &str| PushRefused::KeyNotAllowed {
        daemon: push.daemon.as_str(),
        key: key.chars().take(MAX_TEXT).collect(),
    };
    for (key, value) in &push.set {
        let kind = kind_of(push.daemon, key).ok_or_else(|| not_allowed(key))?;
        if let Value::Text(t) = value
            && t.len() > MAX_TEXT
        {
            return Err(PushRefused::BadValue {
                key: key.clone(),
                why: format!("longer than {MAX_TEXT} bytes"),
            });
        }
        check_value(key, kind, value)?;
    }
    for key in &push.unset {
        kind_of(push.daemon, key).ok_or_else(|| not_allowed(key))?;
    }
    Ok(())
}

/// The station's pushed layer of one daemon after an accepted push: `set` keys replace, `unset`
/// keys go.
#[must_use]
pub fn apply_push(layer: &BTreeMap<String, Value>, push: &ConfigPush) -> BTreeMap<String, Value> {
    let mut next = layer.clone();
    for key in &push.unset {
        next.remove(key);
    }
    for (k, v) in &push.set {
        next.insert(k.clone(), v.clone());
    }
    next
}

/// How a restarted daemon is judged after a push, in milliseconds since its restart was
/// asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// The push's `health-deadline-secs`, in ms.
    pub deadline_ms: u64,
    /// How long the daemon must look healthy without a break before it counts as healthy
    /// (a daemon that dies a second after its start must not pass).
    pub settle_ms: u64,
}

/// What the applier does next with a restarted daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRestart {
    /// Healthy for the settle time within the deadline: report `config-accepted`.
    Accept,
    /// Look again.
    Wait,
    /// The deadline passed first: put the previous layer back, restart, report
    /// `config-restored` with this reason.
    Restore { reason: String },
}

/// Judges a restarted daemon at `now_ms`: `healthy_since_ms` is when its checks (unit active
/// and, for the recorder, a fresh healthy status written after the restart) last turned good,
/// `None` while they fail; `last_failure` says why they fail. Accepts only after `settle_ms` of
/// unbroken health, and never waits past the deadline.
#[must_use]
pub fn judge_restart(
    watch: Watch,
    healthy_since_ms: Option<u64>,
    now_ms: u64,
    last_failure: &str,
) -> AfterRestart {
    let settle = watch.settle_ms.min(watch.deadline_ms);
    if let Some(since) = healthy_since_ms
        && since <= now_ms
        && now_ms - since >= settle
    {
        return AfterRestart::Accept;
    }
    if now_ms >= watch.deadline_ms {
        let why = match healthy_since_ms {
            Some(_) => "healthy too briefly before the deadline".to_owned(),
            None if last_failure.is_empty() => "not healthy".to_owned(),
            None => last_failure.chars().take(MAX_TEXT).collect(),
        };
        return AfterRestart::Restore {
            reason: format!("{why} within {} s", watch.deadline_ms / 1000),
        };
    }
    AfterRestart::Wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, GroupId};
    use proptest::prelude::*;

    fn station() -> Station {
        Station {
            device_id: DeviceId::new("stn-1").expect("id"),
            groups: vec![GroupId::new("canary").expect("id")],
            compatible: "fleet-qemuarm64".into(),
        }
    }

    fn push(scope: Scope, sequence: u64, set: &[(&str, Value)]) -> ConfigPush {
        ConfigPush {
            scope,
            daemon: Daemon::Recorderd,
            sequence,
            set: set
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            unset: Vec::new(),
            health_deadline_secs: 120,
            issued_at: 0,
        }
    }

    #[test]
    fn a_push_is_taken_for_its_scope_and_refused_for_every_other_reason_with_its_code() {
        let s = station();
        let lat = [("position.lat", Value::Float(52.1))];
        let table: Vec<(ConfigPush, Option<u64>, Option<&str>)> = vec![
            (push(Scope::Fleet, 1, &lat), None, None),
            (
                push(Scope::Group(GroupId::new("canary").expect("id")), 5, &lat),
                Some(4),
                None,
            ),
            (
                push(Scope::Device(DeviceId::new("stn-1").expect("id")), 2, &lat),
                Some(1),
                None,
            ),
            (
                push(Scope::Device(DeviceId::new("stn-2").expect("id")), 2, &lat),
                None,
                Some("not-for-this-station"),
            ),
            (
                push(Scope::Group(GroupId::new("field").expect("id")), 2, &lat),
                None,
                Some("not-for-this-station"),
            ),
            (push(Scope::Fleet, 4, &lat), Some(4), Some("replayed")),
            (push(Scope::Fleet, 5, &[]), None, Some("empty")),
            (
                push(Scope::Fleet, 5, &[("data-dir", Value::Text("/tmp".into()))]),
                None,
                Some("key-not-allowed"),
            ),
            (
                push(Scope::Fleet, 5, &[("devices", Value::TextList(vec![]))]),
                None,
                Some("key-not-allowed"),
            ),
            (
                push(
                    Scope::Fleet,
                    5,
                    &[("position.lat", Value::Text("north".into()))],
                ),
                None,
                Some("bad-value"),
            ),
            (
                push(
                    Scope::Fleet,
                    5,
                    &[("clock-trust", Value::Text("sometimes".into()))],
                ),
                None,
                Some("bad-value"),
            ),
            (
                push(
                    Scope::Fleet,
                    5,
                    &[("utc-offset", Value::Text("+1:00".into()))],
                ),
                None,
                Some("bad-value"),
            ),
            (
                push(
                    Scope::Fleet,
                    5,
                    &[("profiles.bats.gain-db", Value::Integer(12))],
                ),
                None,
                None,
            ),
            (
                push(
                    Scope::Fleet,
                    5,
                    &[("profiles.../gain-db", Value::Integer(12))],
                ),
                None,
                Some("key-not-allowed"),
            ),
        ];
        for (i, (p, last, want)) in table.iter().enumerate() {
            let got = decide_config_push(&s, *last, p).err().map(|e| e.code());
            assert_eq!(got, *want, "row {i}: {p:?}");
        }
        let mut p = push(Scope::Fleet, 9, &lat);
        p.health_deadline_secs = 5;
        assert_eq!(
            decide_config_push(&s, None, &p),
            Err(PushRefused::BadDeadline)
        );
    }

    #[test]
    fn no_pushable_key_names_a_path_a_command_or_an_identity() {
        for d in Daemon::ALL {
            for (key, _) in allowed(d) {
                for word in key.split(['.', '-']) {
                    assert!(
                        ![
                            "file",
                            "dir",
                            "path",
                            "command",
                            "argv",
                            "systemctl",
                            "id",
                            "keys",
                            "host",
                            "tls",
                            "root",
                            "devices",
                            "username",
                            "password",
                            "endpoint",
                            "bucket",
                            "region",
                            "user",
                            "prefix",
                            "credentials",
                            "destination",
                            "kind",
                            "port",
                        ]
                        .contains(&word),
                        "{}: {key} has {word:?}",
                        d.as_str()
                    );
                }
            }
        }
    }

    #[test]
    fn a_push_can_return_the_updater_to_the_clock_rule_but_never_switch_it_off() {
        let kind = kind_of(Daemon::Updated, "wall-clock").expect("pushable");
        for word in ["system", "untrusted"] {
            assert_eq!(
                check_value("wall-clock", kind, &Value::Text(word.into())),
                Ok(())
            );
        }
        assert!(matches!(
            check_value("wall-clock", kind, &Value::Text("trusted".into())),
            Err(PushRefused::BadValue { .. })
        ));
    }

    #[test]
    fn set_replaces_and_unset_returns_to_the_lower_layers() {
        let mut p = push(Scope::Fleet, 1, &[("position.lat", Value::Float(1.0))]);
        let layer = apply_push(&BTreeMap::new(), &p);
        assert_eq!(layer.get("position.lat"), Some(&Value::Float(1.0)));
        p.set.clear();
        p.unset = vec!["position.lat".into()];
        assert!(apply_push(&layer, &p).is_empty());
    }

    #[test]
    fn the_wire_form_is_kebab_case_with_plain_toml_values() {
        let json = r#"{"scope":{"group":"canary"},"daemon":"recorderd","sequence":7,
            "set":{"position.lat":52.5,"utc-offset":"+01:00"},"health-deadline-secs":120,
            "issued-at":1765000000}"#;
        let p: ConfigPush = serde_json::from_str(json).expect("parses");
        assert_eq!(p.set.get("utc-offset"), Some(&Value::Text("+01:00".into())));
        assert!(decide_config_push(&station(), Some(6), &p).is_ok());
    }

    #[test]
    fn a_restarted_daemon_is_accepted_only_after_settling_and_restored_at_the_deadline() {
        let w = Watch {
            deadline_ms: 10_000,
            settle_ms: 3_000,
        };
        let table: Vec<(Option<u64>, u64, &str)> = vec![
            (None, 0, "wait"),
            (None, 9_999, "wait"),
            (None, 10_000, "restore"),
            (Some(1_000), 3_999, "wait"),
            (Some(1_000), 4_000, "accept"),
            (Some(9_000), 10_000, "restore"),
            (Some(9_000), 12_000, "accept"),
            (Some(5_000), 4_000, "wait"),
        ];
        for (since, now, want) in table {
            let got = match judge_restart(w, since, now, "fleet-recorderd.service is failed") {
                AfterRestart::Accept => "accept",
                AfterRestart::Wait => "wait",
                AfterRestart::Restore { reason } => {
                    assert!(reason.ends_with("within 10 s"), "{reason}");
                    "restore"
                }
            };
            assert_eq!(got, want, "since {since:?} now {now}");
        }
        assert_eq!(
            judge_restart(w, None, 10_000, "fleet-recorderd.service is failed"),
            AfterRestart::Restore {
                reason: "fleet-recorderd.service is failed within 10 s".into()
            }
        );
    }

    #[test]
    fn the_uploader_takes_pacing_and_windows_but_never_its_destination() {
        let mut p = push(Scope::Fleet, 1, &[]);
        p.daemon = Daemon::Uploaderd;
        for (key, value, ok) in [
            (
                "bandwidth.max-bytes-per-second",
                Value::Integer(500_000),
                true,
            ),
            (
                "schedule.windows",
                Value::TextList(vec!["22:00-06:00".into()]),
                true,
            ),
            (
                "schedule.windows",
                Value::TextList(vec!["25:00-06:00".into()]),
                false,
            ),
            ("order", Value::Text("newest-first".into()), true),
            (
                "destination.endpoint",
                Value::Text("https://evil".into()),
                false,
            ),
            ("destination.host", Value::Text("evil".into()), false),
            ("credentials-file", Value::Text("/tmp/x".into()), false),
            ("state-dir", Value::Text("/tmp".into()), false),
        ] {
            p.set = [(key.to_owned(), value)].into();
            assert_eq!(
                decide_config_push(&station(), None, &p).is_ok(),
                ok,
                "{key}"
            );
        }
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z.*-]{1,30}",
            Just("position.lat".to_owned()),
            Just("policy.uploader".to_owned()),
            Just("groups".to_owned()),
            Just("data-dir".to_owned()),
            Just("health.command".to_owned()),
            Just("schedule.windows".to_owned()),
            Just("destination.endpoint".to_owned()),
            Just("bandwidth.max-bytes-per-second".to_owned()),
        ]
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Float),
            "[ -~]{0,12}".prop_map(Value::Text),
            proptest::collection::vec("[a-z]{1,5}", 0..3).prop_map(Value::TextList),
            proptest::collection::vec("[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}", 0..3)
                .prop_map(Value::TextList),
        ]
    }

    proptest! {
        /// Whatever the checks show and whenever it is looked at, a daemon is accepted only after
        /// settling healthy, and a judgement is never put off past the deadline.
        #[test]
        fn judging_never_accepts_an_unhealthy_daemon_and_never_waits_past_the_deadline(
            deadline_ms in 0u64..100_000,
            settle_ms in 0u64..20_000,
            since in proptest::option::of(0u64..120_000),
            now in 0u64..120_000,
        ) {
            let w = Watch { deadline_ms, settle_ms };
            match judge_restart(w, since, now, "down") {
                AfterRestart::Accept => {
                    let s = since.expect("accepted while unhealthy");
                    prop_assert!(s <= now && now - s >= settle_ms.min(deadline_ms));
                }
                AfterRestart::Wait => prop_assert!(now < deadline_ms),
                AfterRestart::Restore { .. } => prop_assert!(now >= deadline_ms),
            }
        }

        /// Whatever arrives, an accepted push is for this station, newer than the last one, and
        /// sets only documented keys with values of their kind.
        #[test]
        fn an_accepted_push_is_ours_newer_and_only_touches_documented_keys(
            daemon in proptest::sample::select(Daemon::ALL.to_vec()),
            scope in prop_oneof![
                Just(Scope::Fleet),
                Just(Scope::Group(GroupId::new("canary").expect("id"))),
                Just(Scope::Group(GroupId::new("field").expect("id"))),
                Just(Scope::Device(DeviceId::new("stn-1").expect("id"))),
                Just(Scope::Device(DeviceId::new("stn-2").expect("id"))),
            ],
            sequence in 0u64..10,
            last in proptest::option::of(0u64..10),
            set in proptest::collection::btree_map(any_key(), any_value(), 0..4),
            unset in proptest::collection::vec(any_key(), 0..2),
            deadline in 0u32..4000,
        ) {
            let p = ConfigPush { scope: scope.clone(), daemon, sequence, set, unset, health_deadline_secs: deadline, issued_at: 0 };
            if decide_config_push(&station(), last, &p).is_ok() {
                prop_assert!(last.is_none_or(|l| sequence > l));
                prop_assert!(!matches!(scope, Scope::Device(ref d) if d.as_str() != "stn-1"));
                prop_assert!(!matches!(scope, Scope::Group(ref g) if g.as_str() != "canary"));
                for (k, v) in &p.set {
                    let kind = kind_of(daemon, k);
                    prop_assert!(kind.is_some(), "{k}");
                    prop_assert!(kind.is_some_and(|kind| check_value(k, kind, v).is_ok()));
                }
                for k in &p.unset {
                    prop_assert!(kind_of(daemon, k).is_some());
                }
                prop_assert!(DEADLINE_SECS.contains(&deadline));
            }
        }
    }
}
