//! The space reservation of a download, in fleet-retentiond's recording index: while
//! fleet-updated downloads a bundle it holds the reservation of holder
//! [`UPDATE_HOLDER`] for the bundle's size. fleet-retentiond counts it when it plans (the space
//! is kept free), and fleet-uploaderd does not upload meanwhile (the link belongs to the
//! download).
//!
//! The reservation is advisory: it never stops a download. Every reservation lapses after
//! [`RESERVATION_TTL`] (and with the boot): the daemon renews it while the download runs, so a
//! crashed or killed daemon leaves nothing that outlives it by more than that, and the daemon
//! drops any reservation of its holder when it starts.
//!
//! The index is retentiond's: it is opened, never created (no index, no reservation).
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use fleet_retentiond::index::UPDATE_HOLDER;
use fleet_retentiond::index::{Index, IndexError};

/// How long a reservation lives unless renewed.
pub const RESERVATION_TTL: Duration = Duration::from_secs(600);
/// How often a held reservation is renewed (well inside [`RESERVATION_TTL`]).
pub const RESERVATION_RENEW: Duration = Duration::from_secs(120);

/// A reservation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error("unable to reserve {bytes} bytes in {path}")]
    Reserve {
        path: PathBuf,
        bytes: u64,
        #[source]
        source: Box<IndexError>,
    },
    #[error("unable to release the reservation in {path}")]
    Release {
        path: PathBuf,
        #[source]
        source: Box<IndexError>,
    },
}

/// Where the reservation is kept, and how this boot is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservations {
    /// fleet-retentiond's index (`state-dir/index.sqlite`).
    pub index_path: PathBuf,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): a reservation lapses with the
    /// boot.
    pub boot_id_path: PathBuf,
    pub ttl: Duration,
}

impl Reservations {
    /// The station's layout under `data_dir` (the index retentiond keeps in
    /// `data_dir/fleet/retention`, beside the updater's own `data_dir/fleet/...`).
    #[must_use]
    pub fn under(data_dir: &Path) -> Self {
        Self {
            index_path: data_dir
                .join("fleet")
                .join("retention")
                .join("index.sqlite"),
            boot_id_path: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            ttl: RESERVATION_TTL,
        }
    }

    fn open(&self) -> Option<Result<Index, IndexError>> {
        // Never create retentiond's index: without one there is nothing to tell.
        self.index_path
            .exists()
            .then(|| Index::open(&self.index_path))
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string(&self.boot_id_path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    }

    /// Takes (or renews) the reservation for `bytes`, lapsing after the TTL. False when there
    /// is no index. Blocking (SQLite).
    ///
    /// # Errors
    /// The index cannot be opened or written.
    pub fn hold(&self, bytes: u64) -> Result<bool, ReservationError> {
        let err = |source| ReservationError::Reserve {
            path: self.index_path.clone(),
            bytes,
            source: Box::new(source),
        };
        let Some(index) = self.open() else {
            return Ok(false);
        };
        let index = index.map_err(err)?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = fleet_retentiond::daemon::now_boottime_ms().saturating_add(ttl_ms);
        index
            .reserve(UPDATE_HOLDER, bytes, &self.boot_id(), expires)
            .map_err(err)?;
        Ok(true)
    }

    /// Drops the reservation; true when there was one. Blocking (SQLite).
    ///
    /// # Errors
    /// The index cannot be opened or written.
    pub fn release(&self) -> Result<bool, ReservationError> {
        let err = |source| ReservationError::Release {
            path: self.index_path.clone(),
            source: Box::new(source),
        };
        let Some(index) = self.open() else {
            return Ok(false);
        };
        index.map_err(err)?.release(UPDATE_HOLDER).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservations(dir: &Path) -> Reservations {
        let r = Reservations::under(dir);
        std::fs::create_dir_all(r.index_path.parent().expect("parent")).expect("dir");
        Reservations {
            boot_id_path: dir.join("boot_id"),
            ..r
        }
    }

    #[test]
    fn without_an_index_nothing_is_reserved_and_nothing_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = reservations(dir.path());
        assert!(!r.hold(1000).expect("hold"));
        assert!(!r.release().expect("release"));
        assert!(!r.index_path.exists());
    }

    #[test]
    fn a_held_reservation_is_live_until_released_and_lapses_after_its_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = reservations(dir.path());
        std::fs::write(&r.boot_id_path, "boot-1\n").expect("boot id");
        let index = Index::open(&r.index_path).expect("index");
        assert!(r.hold(5000).expect("hold"));
        let now = fleet_retentiond::daemon::now_boottime_ms();
        assert!(
            index
                .has_reservation(UPDATE_HOLDER, "boot-1", now)
                .expect("q")
        );
        assert_eq!(index.reserved_bytes("boot-1", now).expect("q"), 5000);
        let ttl = u64::try_from(RESERVATION_TTL.as_millis()).expect("ms");
        assert!(
            !index
                .has_reservation(UPDATE_HOLDER, "boot-1", now + ttl + 1000)
                .expect("q"),
            "lapses by itself"
        );
        assert!(
            !index
                .has_reservation(UPDATE_HOLDER, "boot-2", now)
                .expect("q")
        );
        assert!(r.release().expect("release"));
        assert!(
            !index
                .has_reservation(UPDATE_HOLDER, "boot-1", now)
                .expect("q")
        );
    }
}
