//! Resumable bundle downloads into `<data>/fleet/downloads/`.
//!
//! A download is a sparse file `<bundle-id>.part` of the bundle's final size. Chunk `i` goes to
//! offset `i * chunk-size` once its sha256 matches the manifest. Which chunks are held is not
//! stored anywhere else: on open, every chunk region of the `.part` file is hashed and compared
//! with the manifest, so after a power cut or a restart the station knows exactly what it holds
//! (a torn or never-written region simply does not match) and asks only for the rest.
//! When all chunks are held, the file is fsynced, hashed as a whole against the bundle id and
//! renamed to `<bundle-id>.bundle`: only such a file is ever handed to the installer.
//!
//! Written chunks are flushed to disk every [`SYNC_EVERY`] bytes by a background thread
//! ([`Syncer`]), so the receiving loop never waits for the disk: a power cut loses at most the
//! chunks written since the flush before last (they are fetched again), and the final
//! [`Download::sync`] waits for everything.
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::durable;

/// What to download: the parts of a (verified) manifest the store needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Lowercase hex sha256 of the whole bundle.
    pub bundle_id: String,
    pub size: u64,
    pub chunk_size: u64,
    /// sha256 of every chunk, in order.
    pub chunks: Vec<[u8; 32]>,
}

impl ChunkPlan {
    /// Length of chunk `index`.
    #[must_use]
    pub fn chunk_len(&self, index: usize) -> u64 {
        let start = index as u64 * self.chunk_size;
        self.size.saturating_sub(start).min(self.chunk_size)
    }

    /// Checks that the chunk list covers exactly `size` bytes.
    pub fn check(&self) -> Result<(), String> {
        if self.chunk_size == 0 {
            return Err("chunk size is zero".into());
        }
        let expected = self.size.div_ceil(self.chunk_size);
        if self.chunks.len() as u64 != expected {
            return Err(format!(
                "{} chunks do not cover {} bytes in chunks of {}",
                self.chunks.len(),
                self.size,
                self.chunk_size
            ));
        }
        if self.bundle_id.len() != 64
            || !self
                .bundle_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err("bundle id is not lowercase hex sha256".into());
        }
        Ok(())
    }
}

/// A failed download operation.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("unable to open download {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to write chunk {index} to {path}: {source}")]
    WriteChunk {
        path: PathBuf,
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to verify download {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to finish download {path}: {source}")]
    Finish {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to accept plan for {bundle_id}: {reason}")]
    BadPlan { bundle_id: String, reason: String },
}

impl DownloadError {
    /// I/O errors may pass (a full disk being cleaned); a bad plan never does.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(self, DownloadError::BadPlan { .. })
    }
}

/// Why a received chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkRefusal {
    OutOfRange {
        index: usize,
        chunks: usize,
    },
    WrongSize {
        index: usize,
        expected: u64,
        got: u64,
    },
    WrongHash {
        index: usize,
    },
}

impl std::fmt::Display for ChunkRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkRefusal::OutOfRange { index, chunks } => {
                write!(
                    f,
                    "chunk {index} is beyond the {chunks} chunks of the bundle"
                )
            }
            ChunkRefusal::WrongSize {
                index,
                expected,
                got,
            } => {
                write!(
                    f,
                    "chunk {index} has {got} bytes, the manifest says {expected}"
                )
            }
            ChunkRefusal::WrongHash { index } => {
                write!(f, "chunk {index} does not match its sha256 in the manifest")
            }
        }
    }
}

/// What happened to a received chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Verified and written.
    Stored,
    /// Already held: nothing written (a duplicate delivery).
    AlreadyHeld,
    Refused(ChunkRefusal),
}

/// Whole-bundle verification failed: the chunks matched the manifest but the file does not
/// match the bundle id (a manifest that lies about its own bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleMismatch {
    pub expected: String,
    pub actual: String,
}

/// One download in progress.
#[derive(Debug)]
pub struct Download {
    plan: ChunkPlan,
    part: PathBuf,
    file: File,
    held: Vec<bool>,
    held_count: usize,
    held_bytes: u64,
    /// Bytes written since the last flush was asked for.
    unsynced: u64,
    syncer: Syncer,
}

/// Flush the part file after this many written bytes, bounding what a power cut loses.
pub const SYNC_EVERY: u64 = 4 * 1024 * 1024;

/// Flushes the part file (`fdatasync`) on a thread of its own, so writing the next chunks does
/// not wait for the disk. At most one flush runs and one more waits: a request while both are
/// taken is dropped (the waiting flush covers it). A failed flush is reported by the next
/// [`Download::accept`].
#[derive(Debug)]
struct Syncer {
    /// Capacity 1: the flush waiting behind the running one.
    requests: Option<SyncSender<()>>,
    failed: Arc<Mutex<Option<std::io::Error>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(file: &File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let failed = Arc::new(Mutex::new(None));
        let report = failed.clone();
        let thread = std::thread::Builder::new()
            .name("download-sync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if let Err(e) = file.sync_data() {
                        *report
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    }
                }
            })?;
        Ok(Self {
            requests: Some(tx),
            failed,
            thread: Some(thread),
        })
    }

    fn request(&self) {
        if let Some(tx) = &self.requests {
            // Full: a flush already waits and covers this one. Disconnected: the thread ended
            // (it only does when stopped).
            let _ = tx.try_send(());
        }
    }

    fn take_failure(&self) -> Option<std::io::Error> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Stops the thread after the flushes asked for so far.
    fn stop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            // A panicked flush thread has nothing left to report.
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    /// Never waits: a flush under way finishes on its own thread, which then ends.
    fn drop(&mut self) {
        self.requests = None;
    }
}

/// `<data>/fleet/downloads`.
#[must_use]
pub fn downloads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet").join("downloads")
}

/// The path of a finished, verified bundle.
#[must_use]
pub fn bundle_path(data_dir: &Path, bundle_id: &str) -> PathBuf {
    downloads_dir(data_dir).join(format!("{bundle_id}.bundle"))
}

impl Download {
    /// Opens (or creates) the download of `plan` and finds which chunks it already holds.
    pub fn open(data_dir: &Path, plan: ChunkPlan) -> Result<Self, DownloadError> {
        plan.check().map_err(|reason| DownloadError::BadPlan {
            bundle_id: plan.bundle_id.clone(),
            reason,
        })?;
        let dir = downloads_dir(data_dir);
        let part = dir.join(format!("{}.part", plan.bundle_id));
        let open_err = |source| DownloadError::Open {
            path: part.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(open_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(open_err)?;
        // A file that was empty holds nothing: no need to read it back.
        let fresh = file.metadata().map_err(open_err)?.len() == 0;
        file.set_len(plan.size).map_err(open_err)?;
        durable::sync_dir(&dir).map_err(open_err)?;
        let mut held = vec![false; plan.chunks.len()];
        if !fresh {
            let mut buf = vec![0u8; plan.chunk_size as usize];
            for (i, h) in held.iter_mut().enumerate() {
                let len = plan.chunk_len(i) as usize;
                file.read_exact_at(&mut buf[..len], i as u64 * plan.chunk_size)
                    .map_err(|source| DownloadError::Read {
                        path: part.clone(),
                        source,
                    })?;
                *h = Sha256::digest(&buf[..len]).as_slice() == plan.chunks[i];
            }
        }
        let held_count = held.iter().filter(|h| **h).count();
        let held_bytes = (0..held.len())
            .filter(|i| held[*i])
            .map(|i| plan.chunk_len(i))
            .sum();
        let syncer = Syncer::start(&file).map_err(open_err)?;
        Ok(Self {
            plan,
            part,
            file,
            held,
            held_count,
            held_bytes,
            unsynced: 0,
            syncer,
        })
    }

    #[must_use]
    pub fn plan(&self) -> &ChunkPlan {
        &self.plan
    }

    /// Chunks held so far.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// Bytes held so far.
    #[must_use]
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.held_count == self.held.len()
    }

    #[must_use]
    pub fn is_held(&self, index: usize) -> bool {
        self.held.get(index).copied().unwrap_or(false)
    }

    /// Indices still missing, in order.
    pub fn missing(&self) -> impl Iterator<Item = usize> + '_ {
        self.held
            .iter()
            .enumerate()
            .filter(|(_, h)| !**h)
            .map(|(i, _)| i)
    }

    /// Verifies chunk `index` against the manifest and writes it.
    pub fn accept(&mut self, index: usize, bytes: &[u8]) -> Result<ChunkOutcome, DownloadError> {
        if index >= self.held.len() {
            return Ok(ChunkOutcome::Refused(ChunkRefusal::OutOfRange {
                index,
                chunks: self.held.len(),
            }));
        }
        if self.held[index] {
            return Ok(ChunkOutcome::AlreadyHeld);
        }
        let expected = self.plan.chunk_len(index);
        if bytes.len() as u64 != expected {
            return Ok(ChunkOutcome::Refused(ChunkRefusal::WrongSize {
                index,
                expected,
                got: bytes.len() as u64,
            }));
        }
        if Sha256::digest(bytes).as_slice() != self.plan.chunks[index] {
            return Ok(ChunkOutcome::Refused(ChunkRefusal::WrongHash { index }));
        }
        let write_err = |source| DownloadError::WriteChunk {
            path: self.part.clone(),
            index,
            source,
        };
        if let Some(e) = self.syncer.take_failure() {
            return Err(write_err(e));
        }
        self.file
            .write_all_at(bytes, index as u64 * self.plan.chunk_size)
            .map_err(write_err)?;
        self.unsynced += bytes.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.syncer.request();
            self.unsynced = 0;
        }
        self.held[index] = true;
        self.held_count += 1;
        self.held_bytes += expected;
        Ok(ChunkOutcome::Stored)
    }

    /// fsyncs the part file (before the engine hears the download is complete), after the
    /// background flushes asked for so far.
    pub fn sync(&mut self) -> Result<(), DownloadError> {
        let fin = |source| DownloadError::Finish {
            path: self.part.clone(),
            source,
        };
        self.syncer.stop();
        if let Some(e) = self.syncer.take_failure() {
            return Err(fin(e));
        }
        self.file.sync_all().map_err(fin)
    }

    /// fsyncs the file, hashes it whole against the bundle id and, when it matches, renames
    /// it to `<bundle-id>.bundle`. On mismatch the part file is deleted (its chunks lied).
    pub fn finish(
        mut self,
        data_dir: &Path,
    ) -> Result<Result<PathBuf, BundleMismatch>, DownloadError> {
        self.sync()?;
        let fin = |source| DownloadError::Finish {
            path: self.part.clone(),
            source,
        };
        let actual = hash_file(&self.part).map_err(|source| DownloadError::Read {
            path: self.part.clone(),
            source,
        })?;
        if actual != self.plan.bundle_id {
            std::fs::remove_file(&self.part).map_err(fin)?;
            return Ok(Err(BundleMismatch {
                expected: self.plan.bundle_id.clone(),
                actual,
            }));
        }
        let done = bundle_path(data_dir, &self.plan.bundle_id);
        std::fs::rename(&self.part, &done).map_err(fin)?;
        let dir = downloads_dir(data_dir);
        durable::sync_dir(&dir).map_err(fin)?;
        Ok(Ok(done))
    }
}

/// Lowercase hex sha256 of a file.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Removes every download and bundle except those of `keep` (bundle or patch ids), returning
/// the bytes freed.
pub fn remove_all_except(data_dir: &Path, keep: &[&str]) -> std::io::Result<u64> {
    let dir = downloads_dir(data_dir);
    let mut freed = 0;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if keep.iter().any(|k| name.starts_with(k)) {
            continue;
        }
        freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(entry.path())?;
    }
    durable::sync_dir(&dir)?;
    Ok(freed)
}

/// Bytes the file system holding `data_dir` still has for unprivileged writers, plus what the
/// download of `bundle_id` already occupies there (it is overwritten in place).
pub fn free_bytes_for(data_dir: &Path, bundle_id: &str) -> std::io::Result<u64> {
    let dir = downloads_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let st = nix::sys::statvfs::statvfs(&dir).map_err(std::io::Error::from)?;
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    let own = std::fs::metadata(dir.join(format!("{bundle_id}.part")))
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    Ok(free.saturating_add(own))
}

/// Bytes used by downloads under `data_dir`.
pub fn used_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(downloads_dir(data_dir))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_for(bytes: &[u8], chunk: usize) -> ChunkPlan {
        ChunkPlan {
            bundle_id: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            chunk_size: chunk as u64,
            chunks: bytes
                .chunks(chunk)
                .map(|c| Sha256::digest(c).into())
                .collect(),
        }
    }

    #[test]
    fn chunks_in_any_order_make_the_verified_bundle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let plan = plan_for(&data, 1024);
        let mut d = Download::open(dir.path(), plan.clone()).expect("open");
        assert_eq!(d.missing().count(), 10);
        for i in (0..10).rev() {
            let c = &data[i * 1024..((i + 1) * 1024).min(data.len())];
            assert_eq!(d.accept(i, c).expect("accept"), ChunkOutcome::Stored);
        }
        assert_eq!(
            d.accept(3, &data[3072..4096]).expect("dup"),
            ChunkOutcome::AlreadyHeld
        );
        assert!(d.is_complete());
        let path = d.finish(dir.path()).expect("finish").expect("matches");
        assert_eq!(std::fs::read(path).expect("read"), data);
    }

    #[test]
    fn a_reopened_download_holds_exactly_the_chunks_written_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![9u8; 5000];
        let plan = plan_for(&data, 1000);
        let mut d = Download::open(dir.path(), plan.clone()).expect("open");
        d.accept(0, &data[..1000]).expect("accept");
        d.accept(3, &data[3000..4000]).expect("accept");
        drop(d);
        let d = Download::open(dir.path(), plan).expect("reopen");
        assert_eq!(d.missing().collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(d.held_bytes(), 2000);
    }

    #[test]
    fn wrong_chunks_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![1u8; 3000];
        let plan = plan_for(&data, 1000);
        let mut d = Download::open(dir.path(), plan).expect("open");
        assert_eq!(
            d.accept(1, &[2u8; 1000]).expect("accept"),
            ChunkOutcome::Refused(ChunkRefusal::WrongHash { index: 1 })
        );
        assert!(matches!(
            d.accept(1, &[1u8; 999]).expect("accept"),
            ChunkOutcome::Refused(ChunkRefusal::WrongSize { .. })
        ));
        assert!(matches!(
            d.accept(7, &[1u8; 1000]).expect("accept"),
            ChunkOutcome::Refused(ChunkRefusal::OutOfRange { .. })
        ));
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn a_manifest_whose_chunks_do_not_make_its_bundle_id_is_refused_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![1u8; 3000];
        let mut plan = plan_for(&data, 1000);
        plan.bundle_id = "0".repeat(64);
        let mut d = Download::open(dir.path(), plan).expect("open");
        for i in 0..3 {
            d.accept(i, &data[i * 1000..(i + 1) * 1000])
                .expect("accept");
        }
        let r = d.finish(dir.path()).expect("finish");
        assert!(r.is_err());
        assert_eq!(used_bytes(dir.path()), 0);
    }

    #[test]
    fn a_plan_that_does_not_cover_its_size_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut plan = plan_for(&[1u8; 3000], 1000);
        plan.chunks.pop();
        assert!(matches!(
            Download::open(dir.path(), plan),
            Err(DownloadError::BadPlan { .. })
        ));
    }
}
