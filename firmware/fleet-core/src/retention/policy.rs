//! The inputs of the retention plan: the policy, the disk and the recordings.

/// A fraction in thousandths (700 = 70 %). Integer so plans are exact and reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permille(u16);

impl Permille {
    /// The whole (100 %).
    pub const WHOLE: Self = Self(1000);

    /// A fraction in thousandths; `None` above 1000.
    #[must_use]
    pub const fn new(value: u16) -> Option<Self> {
        if value > 1000 {
            None
        } else {
            Some(Self(value))
        }
    }

    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// `bytes * self / 1000`, rounded down, without overflow.
    #[must_use]
    pub fn of(self, bytes: u64) -> u64 {
        let scaled = u128::from(bytes) * u128::from(self.0) / 1000;
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "unable to accept thresholds: housekeeping ({housekeeping}) < defensive ({defensive}) < panic ({panic}) is required"
    )]
    ThresholdOrder {
        housekeeping: u16,
        defensive: u16,
        panic: u16,
    },
    #[error(
        "unable to accept hysteresis {hysteresis}: it must be smaller than the housekeeping threshold ({housekeeping})"
    )]
    Hysteresis { hysteresis: u16, housekeeping: u16 },
    #[error("unable to accept a batch limit of zero deletions per cycle")]
    ZeroBatch,
    #[error("unable to accept floor-target ({target} s) below floor ({floor} s)")]
    FloorTarget { floor: u64, target: u64 },
}

/// The retention policy. Thresholds are fractions of the usable capacity
/// (`used + f_bavail`), with the update reserve counted as used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Above this, delete recordings that are uploaded and analysed.
    pub housekeeping_at: Permille,
    /// Above this, delete recordings that are uploaded (analysed or not).
    pub defensive_at: Permille,
    /// Above this, delete the oldest recordings, uploaded or not.
    pub panic_at: Permille,
    /// Each tier deletes until usage is this far below its own threshold.
    pub hysteresis: Permille,
    /// The floor: when the free space is under this many seconds of the current write rate, the
    /// plan acts at the panic tier whatever the usage.
    pub floor_seconds: u64,
    /// When the floor acts, it frees until this many seconds of writing fit.
    pub floor_target_seconds: u64,
    /// At most this many deletions per plan (per cycle).
    pub max_deletions_per_cycle: usize,
    /// Whether an uploader is configured. Without one nothing is ever uploaded; see [`crate::retention::plan`]
    /// for the fallback.
    pub uploader_configured: bool,
    /// Whether an analyser is configured. Without one, "analysed" is not required.
    pub analyser_configured: bool,
    /// Below the panic tier, keep recordings younger than this locally even when uploaded.
    /// Evaluated only while the wall clock is trusted and the recording's start was trusted.
    pub keep_uploaded_for_s: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            housekeeping_at: Permille(700),
            defensive_at: Permille(800),
            panic_at: Permille(900),
            hysteresis: Permille(50),
            floor_seconds: 3600,
            floor_target_seconds: 7200,
            max_deletions_per_cycle: 500,
            uploader_configured: true,
            analyser_configured: false,
            keep_uploaded_for_s: None,
        }
    }
}

impl Policy {
    /// Checks the relations between the fields.
    ///
    /// # Errors
    /// The first relation that does not hold.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let (h, d, p) = (self.housekeeping_at, self.defensive_at, self.panic_at);
        if !(h < d && d < p) {
            return Err(PolicyError::ThresholdOrder {
                housekeeping: h.get(),
                defensive: d.get(),
                panic: p.get(),
            });
        }
        if self.hysteresis >= h {
            return Err(PolicyError::Hysteresis {
                hysteresis: self.hysteresis.get(),
                housekeeping: h.get(),
            });
        }
        if self.max_deletions_per_cycle == 0 {
            return Err(PolicyError::ZeroBatch);
        }
        if self.floor_target_seconds < self.floor_seconds {
            return Err(PolicyError::FloorTarget {
                floor: self.floor_seconds,
                target: self.floor_target_seconds,
            });
        }
        Ok(())
    }
}

/// The disk as the daemons see it (from `statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Bytes in use: `(f_blocks - f_bfree) * f_frsize`.
    pub used_bytes: u64,
    /// Bytes an unprivileged daemon can still write: `f_bavail * f_frsize` (not `f_bfree`, which
    /// counts the blocks reserved for root).
    pub available_bytes: u64,
}

impl Disk {
    /// The usable capacity: what is used plus what can still be written.
    #[must_use]
    pub fn capacity(self) -> u64 {
        self.used_bytes.saturating_add(self.available_bytes)
    }
}

/// The index's id of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordingId(pub i64);

/// One present (not yet deleted) recording, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: RecordingId,
    /// The segment sequence: the recording order, independent of the wall clock. Ties are broken
    /// by `id`.
    pub sequence: u64,
    /// Unix seconds of the first sample, only if the recorder's clock was trusted then.
    pub trusted_start_unix_s: Option<i64>,
    pub size_bytes: u64,
    pub uploaded: bool,
    pub analysed: bool,
}
