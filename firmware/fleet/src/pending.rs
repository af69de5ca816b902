//! The update the updater is working on, read from its journal
//! (`<data>/fleet/updated/journal.json`, written by `fleet-updated`). Read only: the CLI never
//! writes the journal. A journal from another release may not parse as this release's types;
//! then the phase name is still shown.
use std::path::{Path, PathBuf};

use fleet_core::update::engine::{Phase, State};
use fleet_core::update::journal::{
    JOURNAL_PATH, JOURNAL_VERSION, MAX_JOURNAL_BYTES, OnDisk, Saved,
};
use fleet_core::update::{FallbackCause, Outcome};
use serde_json::Value;

/// What the journal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// No journal: the updater never ran or the data was reset.
    NoJournal,
    /// The updater's engine state.
    Known(Box<State>),
    /// A journal this release cannot fully read; its phase name, when present.
    Unreadable {
        phase: Option<String>,
        reason: String,
    },
}

/// The journal file under `data_root`.
#[must_use]
pub fn journal_path(data_root: &Path) -> PathBuf {
    data_root.join(JOURNAL_PATH)
}

/// Reads the journal; never fails (a bad journal is reported as such).
#[must_use]
pub fn read(data_root: &Path) -> Pending {
    let path = journal_path(data_root);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Pending::NoJournal,
        Err(e) => {
            return Pending::Unreadable {
                phase: None,
                reason: format!("unable to read {}: {e}", path.display()),
            };
        }
    };
    if meta.len() > MAX_JOURNAL_BYTES {
        return Pending::Unreadable {
            phase: None,
            reason: format!(
                "{} is larger than {MAX_JOURNAL_BYTES} bytes",
                path.display()
            ),
        };
    }
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            return Pending::Unreadable {
                phase: None,
                reason: format!("unable to read {}: {e}", path.display()),
            };
        }
    };
    parse(&bytes)
}

/// Parses journal bytes with the journal's one definition
/// (`fleet_core::update::journal`: `{"v":1,"state":{"engine":{...},...}}`). A journal this
/// release cannot read (another release's, or damaged) still yields its phase name when it has
/// one.
#[must_use]
pub fn parse(bytes: &[u8]) -> Pending {
    let typed = serde_json::from_slice::<OnDisk<Saved>>(bytes);
    if let Ok(disk) = &typed
        && disk.v == JOURNAL_VERSION
    {
        return Pending::Known(Box::new(disk.state.engine.clone()));
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Pending::Unreadable {
                phase: None,
                reason: format!("not json: {e}"),
            };
        }
    };
    let engine = value.get("state").and_then(|s| s.get("engine"));
    let phase = engine
        .and_then(|e| e.get("phase"))
        .and_then(|p| p.get("phase"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if value.get("v").and_then(Value::as_u64) != Some(u64::from(JOURNAL_VERSION)) {
        return Pending::Unreadable {
            phase,
            reason: "unknown journal version".into(),
        };
    }
    if engine.is_none() {
        return Pending::Unreadable {
            phase,
            reason: "no engine state".into(),
        };
    }
    Pending::Unreadable {
        phase,
        reason: typed.err().map_or_else(String::new, |e| e.to_string()),
    }
}

/// One line about the update in progress, for `fleet status`.
#[must_use]
pub fn describe_phase(state: &State) -> String {
    let job = |verb: &str, p: &Phase| -> String {
        match p.job() {
            Some(job) => format!("{verb} {} (update {})", job.version, job.update_id),
            None => verb.to_owned(),
        }
    };
    match &state.phase {
        Phase::Idle => "none pending".to_owned(),
        p @ Phase::Downloading { job: j, held_bytes } => format!(
            "{}, {} of {}",
            job("downloading", p),
            crate::text::bytes(*held_bytes),
            crate::text::bytes(j.bundle_size)
        ),
        p @ Phase::Verifying { .. } => job("verifying", p),
        p @ Phase::Installing { slot, .. } => format!("{} into slot {slot}", job("installing", p)),
        p @ (Phase::ArmingTrial { slot, attempt, .. }
        | Phase::Rebooting { slot, attempt, .. }
        | Phase::HealthChecking { slot, attempt, .. }) => format!(
            "{} on trial in slot {slot}, attempt {attempt}",
            job(phase_word(&state.phase), p)
        ),
        p @ Phase::Committing { slot, .. } => format!("{} in slot {slot}", job("committing", p)),
        p @ Phase::RollingBack { bad_slot, .. } => {
            format!("{}, giving up slot {bad_slot}", job("rolling back", p))
        }
    }
}

fn phase_word(phase: &Phase) -> &'static str {
    match phase {
        Phase::ArmingTrial { .. } => "arming",
        Phase::Rebooting { .. } => "rebooting into",
        _ => "health-checking",
    }
}

/// One line about how the last update ended.
#[must_use]
pub fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Committed {
            update_id,
            slot,
            version,
        } => format!("committed {version} in slot {slot} (update {update_id})"),
        Outcome::RolledBack {
            update_id,
            bad_slot,
            cause,
        } => format!(
            "rolled back from slot {bad_slot} (update {update_id}): {}",
            describe_cause(cause)
        ),
        Outcome::Failed {
            update_id,
            stage,
            detail,
        } => format!(
            "failed at {} (update {update_id}): {detail}",
            kebab(stage).unwrap_or_else(|| format!("{stage:?}"))
        ),
        Outcome::Superseded { update_id, by } => {
            format!("update {update_id} replaced by {by} before it was installed")
        }
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("result").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

/// Why a trial was given up, in words.
#[must_use]
pub fn describe_cause(cause: &FallbackCause) -> String {
    match cause {
        FallbackCause::TrialDidNotBoot { attempts } => {
            format!("the new slot did not come up in {attempts} boot attempts")
        }
        FallbackCause::HealthCheckFailed { check, attempts } => {
            format!("health check {check} failed (attempt {attempts})")
        }
        FallbackCause::InstallMismatch { detail } => format!("install mismatch: {detail}"),
        FallbackCause::BootControl { op, detail } => format!(
            "the boot flow refused {}: {detail}",
            kebab(op).unwrap_or_else(|| format!("{op:?}"))
        ),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

/// The kebab-case name serde gives a unit variant.
fn kebab<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_unknown_versions_are_unreadable_but_keep_the_phase_name() {
        assert!(matches!(
            parse(b"nope"),
            Pending::Unreadable { phase: None, .. }
        ));
        let future = br#"{"v":2,"state":{"engine":{"phase":{"phase":"teleporting"}}}}"#;
        assert_eq!(
            parse(future),
            Pending::Unreadable {
                phase: Some("teleporting".into()),
                reason: "unknown journal version".into()
            }
        );
    }

    #[test]
    fn phases_and_outcomes_read_as_one_line_each() {
        use fleet_core::ids::{DeviceId, UpdateId, Version};
        use fleet_core::slot::Slot;
        use fleet_core::update::engine::{Job, Policy};
        use fleet_core::update::offer::Station;
        use fleet_core::update::{BundleId, KeyId, Stage};

        let job = Job {
            update_id: UpdateId::new("u-9").expect("valid"),
            sequence: 1,
            bundle_id: BundleId::from_bytes([1; 32]),
            bundle_size: 10 * 1024 * 1024,
            version: Version::new(2, 1, 0),
            manifest_hash: None,
            key_id: KeyId::from_bytes([2; 8]),
        };
        let mut state = State::new(
            Station {
                device_id: DeviceId::new("stn-1").expect("valid"),
                groups: Vec::new(),
                compatible: "fleet-rpi5".into(),
            },
            Policy::default(),
            Slot::A,
            Version::new(2, 0, 0),
        );
        let table = [
            (Phase::Idle, "none pending"),
            (
                Phase::Installing {
                    job: job.clone(),
                    slot: Slot::B,
                    attempt: 1,
                },
                "installing 2.1.0 (update u-9) into slot B",
            ),
            (
                Phase::HealthChecking {
                    job: job.clone(),
                    slot: Slot::B,
                    attempt: 2,
                },
                "health-checking 2.1.0 (update u-9) on trial in slot B, attempt 2",
            ),
            (
                Phase::Rebooting {
                    job: job.clone(),
                    slot: Slot::B,
                    attempt: 1,
                },
                "rebooting into 2.1.0 (update u-9) on trial in slot B, attempt 1",
            ),
        ];
        for (phase, text) in table {
            state.phase = phase;
            assert_eq!(describe_phase(&state), text);
        }
        let rolled = Outcome::RolledBack {
            update_id: job.update_id.clone(),
            bad_slot: Slot::B,
            cause: FallbackCause::HealthCheckFailed {
                check: "recorder".into(),
                attempts: 3,
            },
        };
        assert_eq!(
            describe_outcome(&rolled),
            "rolled back from slot B (update u-9): health check recorder failed (attempt 3)"
        );
        let failed = Outcome::Failed {
            update_id: job.update_id,
            stage: Stage::Verify,
            detail: "digest mismatch".into(),
        };
        assert_eq!(
            describe_outcome(&failed),
            "failed at verify (update u-9): digest mismatch"
        );
        // The journal as the updater writes it parses back into the same state.
        let bytes = serde_json::to_vec(&serde_json::json!({
            "v": 1, "state": {"engine": state, "state-seq": 1, "event-seq": 1}
        }))
        .expect("json");
        assert!(matches!(parse(&bytes), Pending::Known(s) if *s == state));
    }

    #[test]
    fn a_missing_journal_is_no_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), Pending::NoJournal);
    }
}
