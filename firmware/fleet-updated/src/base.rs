//! The kept base (ADR 0012): the committed bundle, kept on `/data` as the base of the next
//! delta. One base at a time, under `<data>/fleet/base/`:
//! - `<bundle-id>.bundle`: the bundle's bytes, moved there from the download area when the
//!   engine commits the update (`Action::KeepBase`): renamed where the two directories are one
//!   mount; copied (temp file, fsync, rename) and the download removed where they are not, as
//!   under `fleet-updated.service`, whose `ReadWritePaths=` makes each directory a mount of its
//!   own (rename(2) between them fails with `EXDEV`);
//! - `kept.json`: `{"bundle-id": "...", "size": N}`, written with temp file, fsync, rename,
//!   fsync directory once the bytes are in place. It names the base; any other file in the
//!   directory is a leftover of an interrupted replacement and is removed.
//!
//! After a power cut at any point, `kept.json` names the old base (whose file is still there)
//! or the new one. A base whose file is missing, has another size or hashes to another id is
//! damaged: the daemon drops it and fetches the full bundle (`base-corrupt`).
//!
//! Space: the base counts against the updater's download budget (`[update]
//! download-space-bytes`, the figure retentiond keeps free as `update-reserve-mib`): a delta
//! download needs base + patch + rebuilt bundle within it, a full one base + bundle.
use std::io::Read;
use std::path::{Path, PathBuf};

use fleet_core::update::BundleId;
use fleet_core::update::delta::KeptBase;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::durable;

/// Largest `kept.json` read, in bytes.
const MAX_RECORD_BYTES: u64 = 4096;
/// The record's file name.
const RECORD: &str = "kept.json";

/// A base store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("unable to read the kept base record {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to keep {bundle_id} as the base in {path}: {source}")]
    Keep {
        bundle_id: BundleId,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to drop the kept base in {path}: {source}")]
    Drop {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `kept.json` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeptRecord {
    pub bundle_id: BundleId,
    pub size: u64,
}

impl KeptRecord {
    #[must_use]
    pub fn facts(&self) -> KeptBase {
        KeptBase {
            id: self.bundle_id,
            size: self.size,
        }
    }
}

/// What the store holds, as read (blocking: it may hash the whole base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No base is kept.
    None,
    /// A base is kept and its bytes are what the record says.
    Intact(KeptRecord),
    /// A record exists but its base is unusable: why.
    Damaged(String),
}

/// The kept base's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseStore {
    dir: PathBuf,
}

impl BaseStore {
    /// `<data>/fleet/base`.
    #[must_use]
    pub fn under(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("fleet").join("base"),
        }
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the base `id` lives.
    #[must_use]
    pub fn bundle_path(&self, id: &BundleId) -> PathBuf {
        self.dir.join(format!("{id}.bundle"))
    }

    /// The record, without looking at the bytes. `Ok(None)`: no base kept.
    ///
    /// # Errors
    /// The record cannot be read (an unparsable record is `Ok(Some(Err(why)))`).
    pub fn record(&self) -> Result<Option<Result<KeptRecord, String>>, BaseError> {
        let path = self.dir.join(RECORD);
        let err = |source| BaseError::Read {
            path: path.clone(),
            source,
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(err)?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Ok(Some(Err(format!(
                "{} is above {MAX_RECORD_BYTES} bytes",
                path.display()
            ))));
        }
        Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            format!("{} is not a kept base record: {e}", path.display())
        })))
    }

    /// Reads the record and checks the base's size and SHA-256 against it.
    ///
    /// # Errors
    /// The record cannot be read.
    pub fn find(&self) -> Result<Found, BaseError> {
        let record = match self.record()? {
            None => return Ok(Found::None),
            Some(Err(why)) => return Ok(Found::Damaged(why)),
            Some(Ok(r)) => r,
        };
        let path = self.bundle_path(&record.bundle_id);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                return Ok(Found::Damaged(format!(
                    "unable to open {}: {e}",
                    path.display()
                )));
            }
        };
        match fleet_proto::chunk::verify_bundle(
            std::io::BufReader::with_capacity(1 << 20, file),
            &record.bundle_id,
            record.size,
        ) {
            Ok(()) => Ok(Found::Intact(record)),
            Err(f) => Ok(Found::Damaged(format!("{}: {f:?}", path.display()))),
        }
    }

    /// Keeps the bundle file `from` (`size` bytes, SHA-256 `id`) as the base, replacing the one
    /// kept before. Returns false, changing nothing, when `from` does not exist. The file is
    /// renamed into the store; where `from` is on another mount, it is copied (see
    /// [`Self::copy_in`]) and then removed.
    ///
    /// # Errors
    /// A rename, the copy, the record write or a directory sync failed (the base named before
    /// stays named, unless the copy had begun: then none is, and the next update is whole).
    pub fn keep(&self, from: &Path, id: BundleId, size: u64) -> Result<bool, BaseError> {
        let err = |source| BaseError::Keep {
            bundle_id: id,
            path: self.dir.clone(),
            source,
        };
        match std::fs::metadata(from) {
            Ok(m) if m.len() == size => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(err(e)),
        }
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let to = self.bundle_path(&id);
        match std::fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                tracing::info!(from = %from.display(), to = %to.display(), bytes = size,
                    "the download area is another mount: copying the bundle into the base store");
                self.copy_in(from, &to).map_err(err)?;
                std::fs::remove_file(from).map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
        durable::sync_dir(&self.dir).map_err(err)?;
        if let Some(parent) = from.parent() {
            durable::sync_dir(parent).map_err(err)?;
        }
        let record = KeptRecord {
            bundle_id: id,
            size,
        };
        let bytes = serde_json::to_vec(&record).expect("a record always serializes");
        durable::write_atomic(&self.dir.join(RECORD), &bytes).map_err(err)?;
        self.tidy(Some(&id)).map_err(err)?;
        Ok(true)
    }

    /// Copies `from` to `to` in the store when a rename cannot move it. The base kept before is
    /// dropped first (its record, then its bytes), so the copy needs no more room than the
    /// download budget allows for a base and a bundle; the bytes go to a temporary file beside
    /// `to`, synced, then renamed to `to`. A power cut leaves no record, or the old one without
    /// its file (read as damaged and dropped): either way the next update is whole.
    fn copy_in(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(RECORD)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.tidy(None)?;
        let tmp = self.dir.join(format!(
            ".{}.copy",
            to.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::copy(from, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to)
    }

    /// Drops the kept base: the record first (then nothing names the bytes), then every file.
    ///
    /// # Errors
    /// A file could not be removed.
    pub fn drop_all(&self) -> Result<(), BaseError> {
        let err = |source| BaseError::Drop {
            path: self.dir.clone(),
            source,
        };
        match std::fs::remove_file(self.dir.join(RECORD)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        self.tidy(None).map_err(err)
    }

    /// Removes every file but the record and the base `keep`.
    fn tidy(&self, keep: Option<&BundleId>) -> std::io::Result<()> {
        let keep = keep.map(|id| format!("{id}.bundle"));
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == RECORD || keep.as_deref() == Some(&*name) {
                continue;
            }
            std::fs::remove_file(entry.path())?;
        }
        durable::sync_dir(&self.dir)
    }

    /// Bytes the kept base occupies (0 without one).
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        match self.record() {
            Ok(Some(Ok(r))) => std::fs::metadata(self.bundle_path(&r.bundle_id))
                .map(|m| m.len())
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// SHA-256 of `bytes` as a bundle id (tests and tools).
#[must_use]
pub fn id_of(bytes: &[u8]) -> BundleId {
    BundleId::from_bytes(Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_in(dir: &Path, bytes: &[u8]) -> (PathBuf, BundleId) {
        let id = id_of(bytes);
        let p = dir.join(format!("{id}.bundle"));
        std::fs::write(&p, bytes).expect("write");
        (p, id)
    }

    /// The file names in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_bundle_replaces_the_kept_base_and_nothing_else_stays() {
        let data = tempfile::tempdir().expect("tempdir");
        let downloads = data.path().join("dl");
        std::fs::create_dir_all(&downloads).expect("dir");
        let store = BaseStore::under(data.path());
        assert_eq!(store.find().expect("find"), Found::None);
        let (p1, id1) = bundle_in(&downloads, b"version one");
        assert!(store.keep(&p1, id1, 11).expect("keep"));
        assert!(!p1.exists(), "moved, not copied");
        assert!(matches!(store.find().expect("find"), Found::Intact(r) if r.bundle_id == id1));
        let (p2, id2) = bundle_in(&downloads, b"version two!");
        assert!(store.keep(&p2, id2, 12).expect("keep"));
        assert!(matches!(store.find().expect("find"), Found::Intact(r) if r.bundle_id == id2));
        assert_eq!(
            names_in(store.dir()),
            vec![format!("{id2}.bundle"), RECORD.to_owned()]
        );
        assert_eq!(store.used_bytes(), 12);
    }

    fn device_of(p: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).expect("metadata"))
    }

    /// As under fleet-updated.service, where the download area and the store are two mounts
    /// (here a tmpfs and the temporary directory's file system).
    #[test]
    fn a_bundle_on_another_mount_is_copied_into_the_store_and_its_download_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let shm = tempfile::Builder::new()
            .prefix("fleet-base-test")
            .tempdir_in("/dev/shm")
            .expect("a directory on /dev/shm");
        assert_ne!(
            device_of(data.path()),
            device_of(shm.path()),
            "this test needs /dev/shm and the temporary directory on two file systems"
        );
        let store = BaseStore::under(data.path());
        let (p1, id1) = bundle_in(data.path(), b"the old base");
        assert!(store.keep(&p1, id1, 12).expect("keep the old base"));
        let bytes = vec![7u8; 3 << 20];
        let (p2, id2) = bundle_in(shm.path(), &bytes);
        let rename = std::fs::rename(&p2, store.bundle_path(&id2));
        assert_eq!(
            rename.expect_err("a rename across mounts fails").kind(),
            std::io::ErrorKind::CrossesDevices
        );
        assert!(
            store
                .keep(&p2, id2, bytes.len() as u64)
                .expect("keep across mounts")
        );
        assert!(
            !p2.exists(),
            "the download is removed once the copy is in place"
        );
        assert!(matches!(store.find().expect("find"), Found::Intact(r) if r.bundle_id == id2));
        assert_eq!(
            names_in(store.dir()),
            vec![format!("{id2}.bundle"), RECORD.to_owned()]
        );
    }

    #[test]
    fn a_missing_file_keeps_nothing_and_the_old_base_stays() {
        let data = tempfile::tempdir().expect("tempdir");
        let store = BaseStore::under(data.path());
        let (p1, id1) = bundle_in(data.path(), b"one");
        assert!(store.keep(&p1, id1, 3).expect("keep"));
        let gone = data.path().join("gone.bundle");
        assert!(!store.keep(&gone, id_of(b"x"), 1).expect("nothing to keep"));
        let (p3, id3) = bundle_in(data.path(), b"three");
        assert!(
            !store.keep(&p3, id3, 99).expect("wrong size"),
            "a file of another size is not the committed bundle"
        );
        assert!(matches!(store.find().expect("find"), Found::Intact(r) if r.bundle_id == id1));
    }

    #[test]
    fn a_damaged_base_is_found_by_its_hash_size_or_absence() {
        let data = tempfile::tempdir().expect("tempdir");
        let store = BaseStore::under(data.path());
        let (p, id) = bundle_in(data.path(), b"the base bytes");
        assert!(store.keep(&p, id, 14).expect("keep"));
        let kept = store.bundle_path(&id);
        std::fs::write(&kept, b"the base bytez").expect("flip");
        assert!(matches!(store.find().expect("find"), Found::Damaged(_)));
        std::fs::write(&kept, b"short").expect("truncate");
        assert!(matches!(store.find().expect("find"), Found::Damaged(_)));
        std::fs::remove_file(&kept).expect("remove");
        assert!(matches!(store.find().expect("find"), Found::Damaged(_)));
        std::fs::write(store.dir().join(RECORD), b"{garbage").expect("garbage");
        assert!(matches!(store.find().expect("find"), Found::Damaged(_)));
        store.drop_all().expect("drop");
        assert_eq!(store.find().expect("find"), Found::None);
    }

    #[test]
    fn a_leftover_of_an_interrupted_replacement_goes_with_the_next_keep() {
        let data = tempfile::tempdir().expect("tempdir");
        let store = BaseStore::under(data.path());
        let (p, id) = bundle_in(data.path(), b"first");
        assert!(store.keep(&p, id, 5).expect("keep"));
        // A power cut after the rename, before the record: an unnamed file in the directory.
        std::fs::write(store.dir().join("orphan.bundle"), b"orphan").expect("orphan");
        assert!(matches!(store.find().expect("find"), Found::Intact(r) if r.bundle_id == id));
        let (p2, id2) = bundle_in(data.path(), b"second");
        assert!(store.keep(&p2, id2, 6).expect("keep"));
        assert!(!store.dir().join("orphan.bundle").exists());
    }
}
