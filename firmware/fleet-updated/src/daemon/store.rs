//! Where the station is persisted: the journal (engine state and publication counters), the
//! controls file and the trusted keys, each written durably (temp file, fsync, rename, fsync
//! directory) when the station says so; and the version floor RAUC's install-check hook reads.
use std::path::Path;

use fleet_core::ports::{BootControl, Installer};
use fleet_core::rollout::Control;
use fleet_core::trust::TrustState;
use fleet_core::update::State;
use fleet_core::update::journal::Saved;
use serde::{Deserialize, Serialize};

use crate::daemon::{ControlsByTopic, HealthCheck, RunError, Shell};
use crate::journal::{Journal, JournalError};
use crate::trust_store::{Loaded, TrustStore};

/// Counters skipped at start: publications after the last journal write may have used them.
const SEQ_GAP: u64 = 1_000_000;

/// The operator controls in force, newest accepted per control topic
/// (`<data>/fleet/updated/controls.json`, written like the journal before they take effect).
/// A separate file, not a journal field: a release rolled back to, which knows nothing of
/// controls, still reads its journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct SavedControls {
    #[serde(default)]
    pub(super) controls: std::collections::BTreeMap<String, Control>,
}

/// The publication counters (`seq` of the retained state and of events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) state_seq: u64,
    pub(super) event_seq: u64,
}

impl Counters {
    /// Skips [`SEQ_GAP`] at start: publications after the last journal write may have used
    /// the numbers the journal holds.
    pub(super) fn skip_gap(&mut self) {
        self.state_seq += SEQ_GAP;
        self.event_seq += SEQ_GAP;
    }
}

/// The station's files under the data directory.
#[derive(Debug, Clone)]
pub(super) struct Files {
    journal: Journal,
    controls: Journal,
    trust: TrustStore,
}

impl Files {
    pub(super) fn under(data_dir: &Path) -> Self {
        Self {
            journal: Journal::under(data_dir),
            controls: Journal::named(data_dir, "controls.json"),
            trust: TrustStore::under(data_dir),
        }
    }

    /// The journal, or `None` when there is none (or it was unreadable and set aside: the
    /// station then starts from the boot flow's view).
    pub(super) async fn load_journal(&self) -> Result<Option<(State, Counters)>, RunError> {
        let j = self.journal.clone();
        let saved = tokio::task::spawn_blocking(move || match j.load::<Saved>() {
            Ok(s) => Ok(s),
            Err(e @ (JournalError::Parse { .. } | JournalError::TooLarge { .. })) => {
                tracing::error!(error = %e, "journal unreadable: set aside, starting from the boot flow");
                j.quarantine().map(|_| None)
            }
            Err(e) => Err(e),
        })
        .await??;
        Ok(saved.map(|s| {
            (
                s.engine,
                Counters {
                    state_seq: s.state_seq,
                    event_seq: s.event_seq,
                },
            )
        }))
    }

    /// The controls in force; an unreadable file is set aside (none in force until the
    /// retained controls come again).
    pub(super) async fn load_controls(&self) -> Result<ControlsByTopic, RunError> {
        let j = self.controls.clone();
        let saved = tokio::task::spawn_blocking(move || match j.load::<SavedControls>() {
            Ok(c) => Ok(c.unwrap_or_default()),
            Err(e @ (JournalError::Parse { .. } | JournalError::TooLarge { .. })) => {
                tracing::error!(error = %e, "controls file unreadable: set aside, no controls in force until they come again");
                j.quarantine().map(|_| SavedControls::default())
            }
            Err(e) => Err(e),
        })
        .await??;
        Ok(saved.controls)
    }

    /// The trusted keys: the last applied rotation's, else `bootstrap`.
    pub(super) async fn load_trust(&self, bootstrap: TrustState) -> Result<Loaded, RunError> {
        let store = self.trust.clone();
        Ok(tokio::task::spawn_blocking(move || store.load(bootstrap)).await??)
    }
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    /// Writes the journal: the station's engine state and the counters.
    pub(super) async fn persist_journal(&self) -> Result<(), RunError> {
        let j = self.files.journal.clone();
        let s = Saved {
            engine: self.station.engine().clone(),
            state_seq: self.counters.state_seq,
            event_seq: self.counters.event_seq,
        };
        tokio::task::spawn_blocking(move || j.save(&s)).await??;
        Ok(())
    }

    /// Writes the controls in force.
    pub(super) async fn persist_controls(&self) -> Result<(), RunError> {
        let j = self.files.controls.clone();
        let saved = SavedControls {
            controls: self.station.controls().clone(),
        };
        tokio::task::spawn_blocking(move || j.save(&saved)).await??;
        Ok(())
    }

    /// Writes the trusted keys and the digest of the rotation that set them.
    pub(super) async fn persist_trust(&self) -> Result<(), RunError> {
        let store = self.files.trust.clone();
        let trust = self.station.trust().clone();
        let applied = self.station.applied_rotation();
        tokio::task::spawn_blocking(move || store.save_applied(&trust, applied)).await??;
        Ok(())
    }

    /// Raises the version floor RAUC's install-check hook reads to the committed version.
    pub(super) async fn raise_floor(&mut self) {
        let version = self.station.engine().committed_version.clone();
        if self.floor.as_ref() == Some(&version) {
            return;
        }
        let path = self.cfg.version_floor_file.clone();
        let v = version.clone();
        match tokio::task::spawn_blocking(move || crate::floor::raise(&path, &v)).await {
            Ok(Ok(wrote)) => {
                if wrote {
                    tracing::info!(version = %version, "version floor raised");
                }
                self.floor = Some(version);
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %self.cfg.version_floor_file.display(), error = %e, "unable to write the version floor")
            }
            Err(e) => tracing::warn!(error = %e, "unable to write the version floor"),
        }
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::rollout::Effective;
    use fleet_core::slot::Slot;
    use fleet_core::update::{Policy, Station};

    use super::*;

    #[test]
    fn a_journal_with_fields_from_a_newer_release_still_loads() {
        // A release rolled back to reads what a newer one wrote: unknown fields are ignored.
        let station = Station {
            device_id: fleet_core::ids::DeviceId::new("stn-1").expect("id"),
            groups: vec![],
            compatible: "fleet-sim".into(),
        };
        let saved = Saved {
            engine: State::new(
                station,
                Policy::default(),
                Slot::A,
                semver::Version::new(1, 0, 0),
            ),
            state_seq: 7,
            event_seq: 9,
        };
        let mut value = serde_json::to_value(&saved).expect("serializes");
        value["field-of-a-newer-release"] = serde_json::json!({"x": 1});
        let back: Saved = serde_json::from_value(value).expect("loads");
        assert_eq!((back.state_seq, back.event_seq), (7, 9));
        assert_eq!(back.engine, saved.engine);
    }

    #[test]
    fn a_controls_file_without_controls_means_none_are_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Journal::named(dir.path(), "controls.json");
        assert_eq!(file.load::<SavedControls>().expect("loads"), None);
        std::fs::create_dir_all(file.path().parent().expect("dir")).expect("mkdir");
        std::fs::write(file.path(), br#"{"v":1,"state":{}}"#).expect("write");
        let loaded = file.load::<SavedControls>().expect("loads").expect("some");
        assert!(loaded.controls.is_empty());
        assert_eq!(
            Effective::merge(loaded.controls.values()),
            Effective::default()
        );
    }
}
