//! A station's facts as the kernel and systemd expose them: the clock ([`clock`]), the machine
//! ([`system`]), storage wear ([`storage`]) and the NVMe SMART log's decoder and file ([`nvme`]). Every reader takes its roots ([`Roots`]) as
//! parameters, so tests run it against a fake `/sys`, `/proc`, `/run` and `/var/lib` tree; no
//! reader chooses anything (the decisions are in `fleet_core::clock` and `fleet_core::health`).
//!
//! Readers never fail as a whole: a fact the station does not offer (no RTC, no throttling
//! file on a non-Pi board, an SD card without life-time attributes) is `None`.
#![forbid(unsafe_code)]

use std::io::Read as _;
use std::path::{Path, PathBuf};

pub mod clock;
pub mod nvme;
pub mod storage;
pub mod system;

/// Largest file a reader reads, in bytes (every file read here is a few bytes of sysfs text).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Where the readers look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// `/sys`.
    pub sys: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
    /// `/run`.
    pub run: PathBuf,
    /// `/var/lib`.
    pub var_lib: PathBuf,
}

impl Roots {
    /// The real machine's roots.
    #[must_use]
    pub fn system() -> Self {
        Self::under(Path::new("/"))
    }

    /// Every root under one directory (`<dir>/sys`, `<dir>/proc`, ...): a fake tree in tests.
    #[must_use]
    pub fn under(dir: &Path) -> Self {
        Self {
            sys: dir.join("sys"),
            proc: dir.join("proc"),
            run: dir.join("run"),
            var_lib: dir.join("var/lib"),
        }
    }
}

/// Reads a small text file, at most [`MAX_FILE_BYTES`]; `None` when it is absent or unreadable.
#[must_use]
pub fn read_small(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_FILE_BYTES).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Reads a small file and trims it; `None` when absent, unreadable or empty.
#[must_use]
pub fn read_trimmed(path: &Path) -> Option<String> {
    let s = read_small(path)?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}
