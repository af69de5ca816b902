//! The journal's format, defined once: what `fleet-updated` writes to
//! `<data>/fleet/updated/journal.json` and the recovery CLI (`fleet status`) reads.
//!
//! The file is `{"v": 1, "state": {"engine": {...}, "state-seq": N, "event-seq": N}}`:
//! [`OnDisk`] around a [`Saved`]. Other files the updater keeps the same way (the controls
//! file) share [`OnDisk`]. Compatibility: the journal on `/data` is read by whichever slot
//! boots, so unknown fields are ignored (see [`crate::update::State`]) and fields added later
//! must carry `#[serde(default)]`.
use serde::{Deserialize, Serialize};

use crate::update::engine::State;

/// Format version of the journal file (and of every file wrapped in [`OnDisk`]).
pub const JOURNAL_VERSION: u32 = 1;
/// Largest journal accepted on load, in bytes.
pub const MAX_JOURNAL_BYTES: u64 = 1024 * 1024;
/// Where the journal lives, relative to the data directory.
pub const JOURNAL_PATH: &str = "fleet/updated/journal.json";

/// A versioned file: `{"v": JOURNAL_VERSION, "state": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnDisk<T> {
    pub v: u32,
    pub state: T,
}

/// What the journal holds: the engine state plus the updater's publication counters (so the
/// `seq` of its state and events keeps increasing across restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Saved {
    pub engine: State,
    pub state_seq: u64,
    pub event_seq: u64,
}
