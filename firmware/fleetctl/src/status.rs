//! `status`: one row per station from its retained state and presence topics.
pub use crate::words::ago;
pub(crate) use crate::words::name_of;
use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use fleet_core::health::{Problem, ProblemPolicy};
use fleet_core::ids::DeviceId;
use fleet_core::update::{FallbackCause, Outcome, PhaseName};
use fleet_proto::health::Health;
use fleet_proto::payload::decode_state;
use fleet_proto::topic::{self, Topic};
use fleet_proto::{Limits, Presence, StationState};
use serde::Serialize;

use crate::clock::unix_now;
use crate::connection::{BrokerAddr, ConnectionError, Message, collect_retained};
use crate::publish::RETAINED_QUIET;

/// Most stations one status read takes in.
const MAX_STATIONS: usize = 100_000;

/// Whether a station has been heard from recently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Heard {
    /// Online, and its state is recent (or its clock is untrusted, so age cannot be judged).
    Recently,
    /// Its last will fired: the broker lost it.
    Offline,
    /// Online or unknown presence, but its state is older than the staleness limit.
    Stale,
    /// Its presence is known but it never published a readable state.
    NoState,
}

impl Heard {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Heard::Recently => "ok",
            Heard::Offline => "OFFLINE",
            Heard::Stale => "STALE",
            Heard::NoState => "NO STATE",
        }
    }
}

/// One station as `status` shows it. `state` is the station's own message, unchanged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StationRow {
    pub device_id: DeviceId,
    pub heard: Heard,
    /// `online`/`offline`, absent when no presence was retained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<&'static str>,
    /// Seconds since the state was published, when both clocks allow judging it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StationState>,
    /// Why the retained state could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// The station's retained health message (`fleet-reporterd`), unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Why the retained health message could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_error: Option<String>,
    /// Seconds since the health message was taken, when both clocks allow judging it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_age_s: Option<i64>,
    /// `fleet_core::health::decide_problems` over the health message.
    pub problems: Vec<Problem>,
}

/// Reads every station's retained state and presence.
pub async fn read(
    addr: &BrokerAddr,
    stale_after: Duration,
    limits: &Limits,
) -> Result<Vec<StationRow>, ConnectionError> {
    let filters = [
        topic::filter::ALL_STATES.to_owned(),
        topic::filter::ALL_PRESENCE.to_owned(),
        topic::filter::ALL_HEALTH.to_owned(),
    ];
    let msgs = collect_retained(addr, &filters, RETAINED_QUIET, MAX_STATIONS).await?;
    Ok(rows(&msgs, stale_after, unix_now(), limits))
}

/// Builds the rows from retained messages (pure: `now_unix_s` is passed in).
#[must_use]
pub fn rows(
    msgs: &[Message],
    stale_after: Duration,
    now_unix_s: i64,
    limits: &Limits,
) -> Vec<StationRow> {
    #[derive(Default)]
    struct Seen {
        presence: Option<Presence>,
        state: Option<Result<StationState, String>>,
        health: Option<Result<Health, String>>,
    }
    let mut seen: BTreeMap<DeviceId, Seen> = BTreeMap::new();
    for m in msgs {
        match Topic::parse(&m.topic) {
            Ok(Topic::DeviceState(id)) => {
                let parsed = decode_state(&m.payload, limits)
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        if s.device_id == id {
                            Ok(s)
                        } else {
                            Err(format!("state names device {}", s.device_id))
                        }
                    });
                seen.entry(id).or_default().state = Some(parsed);
            }
            Ok(Topic::DevicePresence(id)) => {
                seen.entry(id).or_default().presence = Presence::parse(&m.payload);
            }
            Ok(Topic::DeviceHealth(id)) if !m.payload.is_empty() => {
                let parsed = fleet_proto::health::decode(&m.payload)
                    .map_err(|e| e.to_string())
                    .and_then(|h| {
                        if h.device_id == id {
                            Ok(h)
                        } else {
                            Err(format!("health names device {}", h.device_id))
                        }
                    });
                seen.entry(id).or_default().health = Some(parsed);
            }
            _ => {}
        }
    }
    let stale_s = i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX);
    seen.into_iter()
        .map(|(device_id, s)| {
            let (state, state_error) = match s.state {
                Some(Ok(st)) => (Some(st), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            let age_s = state
                .as_ref()
                .and_then(|st| st.updated_at.wall_unix_s)
                .map(|t| now_unix_s.saturating_sub(t));
            let heard = match (s.presence, &state, age_s) {
                (Some(Presence::Offline), _, _) => Heard::Offline,
                (_, None, _) => Heard::NoState,
                (_, Some(_), Some(age)) if age > stale_s => Heard::Stale,
                _ => Heard::Recently,
            };
            let (health, health_error) = match s.health {
                Some(Ok(h)) => (Some(h), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            let health_age_s = health
                .as_ref()
                .and_then(|h| h.at.wall_unix_s)
                .map(|t| now_unix_s.saturating_sub(t).max(0));
            // Time since the station was last heard: the health message's age by its clock;
            // with an untrusted station clock, "now" while its connection is up.
            let silent_for_s = match (&health, health_age_s, s.presence) {
                (None, _, _) => None,
                (Some(_), Some(age), _) => Some(age as u64),
                (Some(_), None, Some(Presence::Online)) => Some(0),
                (Some(_), None, _) => None,
            };
            let problems = match &health {
                Some(h) => fleet_core::health::decide_problems(
                    &h.signals(silent_for_s),
                    &ProblemPolicy::default(),
                ),
                None => vec![Problem::NotHeardFrom],
            };
            StationRow {
                device_id,
                heard,
                presence: s.presence.map(|p| match p {
                    Presence::Online => "online",
                    Presence::Offline => "offline",
                }),
                age_s,
                state,
                state_error,
                health,
                health_error,
                health_age_s,
                problems,
            }
        })
        .collect()
}

/// A short human description of how an update ended.
#[must_use]
pub fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Committed {
            update_id, version, ..
        } => format!("{update_id}: committed {version}"),
        Outcome::RolledBack {
            update_id, cause, ..
        } => format!("{update_id}: rolled back ({})", describe_cause(cause)),
        Outcome::Failed {
            update_id,
            stage,
            detail,
        } => format!(
            "{update_id}: failed in {} ({detail})",
            serde_json::to_value(stage)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        Outcome::Superseded { update_id, by } => format!("{update_id}: superseded by {by}"),
        other => format!("{other:?}"),
    }
}

/// A short human description of a fallback cause.
#[must_use]
pub fn describe_cause(c: &FallbackCause) -> String {
    match c {
        FallbackCause::TrialDidNotBoot { attempts } => {
            format!("new slot did not boot in {attempts} attempts")
        }
        FallbackCause::HealthCheckFailed { check, attempts } => {
            format!("health check failed: {check}, {attempts} attempts")
        }
        FallbackCause::InstallMismatch { detail } => format!("install mismatch: {detail}"),
        FallbackCause::BootControl { op, detail } => format!("boot control {op:?}: {detail}"),
        other => format!("{other:?}"),
    }
}

/// The station table: update columns, then health columns (`fleetctl health STATION` shows
/// the whole message). Fits 100 columns for station ids up to 12 characters; the problems of
/// each station follow the table.
#[must_use]
pub fn render_table(rows: &[StationRow]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        // Not wrapped to the terminal: a table in a log or a narrow pty stays readable.
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "station", "heard", "version", "update", "rec", "mic", "disk", "temp", "clock",
            "last seg", "upl", "!",
        ]);
    for r in rows {
        let heard = match r.age_s {
            Some(a) if r.heard != Heard::Recently => format!("{} {}", r.heard.as_str(), ago(a)),
            _ => r.heard.as_str().to_owned(),
        };
        let (version, update) = match &r.state {
            Some(s) => {
                let progress = match (&s.progress, s.attempt) {
                    (Some(p), _) if p.total_bytes > 0 => {
                        format!(" {}%", p.done_bytes.saturating_mul(100) / p.total_bytes)
                    }
                    (_, Some(a)) => format!(" #{a}"),
                    _ => String::new(),
                };
                // Idle on a slot that is not the committed one: a console install (or a
                // rollback) not yet committed, which the next reboots give up (ADR 0013).
                let update = if s.phase == PhaseName::Idle && s.booted != s.committed {
                    format!("uncommitted {}", s.booted)
                } else {
                    format!("{}{progress}", name_of(&s.phase))
                };
                (s.version.to_string(), update)
            }
            None => (
                String::new(),
                r.state_error
                    .clone()
                    .map(|_| "unreadable".into())
                    .unwrap_or_default(),
            ),
        };
        let h =
            crate::health::Columns::of(r.health.as_ref(), r.health_error.is_some(), r.health_age_s);
        let count = if r.problems.is_empty() {
            String::new()
        } else {
            r.problems.len().to_string()
        };
        t.add_row([
            r.device_id.to_string(),
            heard,
            version,
            update,
            h.rec,
            h.mic,
            h.disk,
            h.temp,
            h.clock,
            h.last_seg,
            h.upload,
            count,
        ]);
    }
    let mut out = t.to_string();
    for r in rows.iter().filter(|r| !r.problems.is_empty()) {
        out.push_str(&format!(
            "\n{}: {}",
            r.device_id,
            r.problems
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::slot::Slot;
    use fleet_proto::payload::Timestamp;

    fn state(id: &str, wall: Option<i64>) -> StationState {
        StationState {
            device_id: DeviceId::new(id).expect("id"),
            seq: 1,
            updated_at: Timestamp {
                monotonic_ms: 1,
                wall_unix_s: wall,
            },
            time_trusted: wall.is_some(),
            booted: Slot::A,
            committed: Slot::A,
            version: semver::Version::new(1, 0, 0),
            slots: vec![],
            phase: PhaseName::Idle,
            update_id: None,
            target_version: None,
            attempt: None,
            progress: None,
            last_sequence: None,
            last_outcome: None,
            install_percent: None,
            held: None,
            trust: None,
            delivery: None,
            kept_base: None,
        }
    }

    fn msg(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            retain: true,
        }
    }

    #[test]
    fn stations_not_heard_from_are_marked() {
        let now = 1_000_000;
        let enc = |s: &StationState| serde_json::to_vec(s).expect("json");
        let msgs = vec![
            msg(
                "fleet/v1/devices/fresh/state",
                &enc(&state("fresh", Some(now - 5))),
            ),
            msg("fleet/v1/devices/fresh/presence", b"online"),
            msg(
                "fleet/v1/devices/old/state",
                &enc(&state("old", Some(now - 3600))),
            ),
            msg(
                "fleet/v1/devices/gone/state",
                &enc(&state("gone", Some(now - 5))),
            ),
            msg("fleet/v1/devices/gone/presence", b"offline"),
            msg(
                "fleet/v1/devices/untrusted/state",
                &enc(&state("untrusted", None)),
            ),
            msg("fleet/v1/devices/mute/presence", b"online"),
            msg(
                "fleet/v1/devices/liar/state",
                &enc(&state("other", Some(now))),
            ),
            msg("fleet/v1/devices/junk/state", b"{not json"),
        ];
        let rows = rows(&msgs, Duration::from_secs(600), now, &Limits::DEFAULT);
        let by: BTreeMap<&str, Heard> = rows
            .iter()
            .map(|r| (r.device_id.as_str(), r.heard))
            .collect();
        assert_eq!(by["fresh"], Heard::Recently);
        assert_eq!(by["old"], Heard::Stale);
        assert_eq!(by["gone"], Heard::Offline);
        assert_eq!(by["untrusted"], Heard::Recently);
        assert_eq!(by["mute"], Heard::NoState);
        assert_eq!(by["liar"], Heard::NoState);
        assert_eq!(by["junk"], Heard::NoState);
        let table = render_table(&rows);
        assert!(
            table.contains("STALE") && table.contains("OFFLINE"),
            "{table}"
        );
        // No health message anywhere: every station is flagged as not heard from.
        assert!(rows.iter().all(|r| r.problems == [Problem::NotHeardFrom]));
    }

    #[test]
    fn a_station_idle_on_an_uncommitted_slot_says_so_in_the_update_column() {
        let now = 1_000_000;
        let mut console = state("console", Some(now));
        console.booted = Slot::B;
        let mut trial = state("trial", Some(now));
        trial.booted = Slot::B;
        trial.phase = PhaseName::HealthChecking;
        let msgs: Vec<Message> = [&console, &trial, &state("settled", Some(now))]
            .iter()
            .map(|s| {
                let topic = format!("fleet/v1/devices/{}/state", s.device_id.as_str());
                msg(&topic, &serde_json::to_vec(s).expect("json"))
            })
            .collect();
        let table = render_table(&rows(
            &msgs,
            Duration::from_secs(600),
            now,
            &Limits::DEFAULT,
        ));
        let line = |id: &str| {
            table
                .lines()
                .find(|l| l.trim_start().starts_with(id))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(line("console").contains("uncommitted B"), "{table}");
        // An update's own trial shows its phase; a committed station shows idle.
        assert!(!line("trial").contains("uncommitted"), "{table}");
        assert!(line("settled").contains("idle"), "{table}");
    }
}
