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
//! The whole-file hash is computed while the chunks arrive ([`WholeHash`]): a chunk stored in
//! order is hashed from the received bytes, chunks stored ahead of the next one (out of order,
//! or held from before a restart) are read back when their turn comes. So the file is not read
//! again at the end when the chunks came in order, which is how the broker sends them.
//!
//! Written chunks are flushed to disk in batches of [`SYNC_EVERY`] bytes by a background
//! thread ([`Syncer`]), so the receiving loop never waits for the disk. A chunk counts as held
//! durably ([`Download::durable_bytes`], what the station claims in its progress) only once a
//! flush that began after its write has finished: a power cut loses at most chunks that were
//! never claimed (they are fetched again), and the final [`Download::sync`] waits for
//! everything.
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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
    /// Bytes held when the download was opened (flushed at open).
    opened_bytes: u64,
    /// Bytes stored since the download was opened.
    written: u64,
    /// `written` when the last flush was asked for.
    flush_asked_at: u64,
    /// Flush after this many written bytes ([`SYNC_EVERY`]).
    sync_every: u64,
    whole: WholeHash,
    syncer: Syncer,
}

/// Flush the part file after this many written bytes: the batch a power cut may lose (never
/// claimed) and the granularity of the durable progress.
pub const SYNC_EVERY: u64 = 4 * 1024 * 1024;

/// The sha256 of the file's first `next` chunks.
struct WholeHash {
    hasher: Sha256,
    /// The first chunk not hashed yet.
    next: usize,
    /// Chunks hashed from a read-back instead of from received bytes (for the bench).
    read_back: usize,
}

impl std::fmt::Debug for WholeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WholeHash")
            .field("next", &self.next)
            .field("read_back", &self.read_back)
            .finish_non_exhaustive()
    }
}

/// Flushes the part file (`fdatasync`) on a thread of its own, so writing the next chunks does
/// not wait for the disk. A request records the bytes written so far; the thread takes the
/// latest request when it begins a flush (so that flush covers every write before it) and,
/// when the flush finishes, publishes that count as [`Syncer::flushed`]. Requests made while a
/// flush runs merge into the next one. A failed flush is reported by the next
/// [`Download::accept`] and advances nothing.
#[derive(Debug)]
struct Syncer {
    shared: Arc<SyncShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncShared {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Bytes written before the last flush that finished.
    flushed: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncState {
    /// The bytes written when the latest flush not yet begun was asked for.
    wanted: Option<u64>,
    stop: bool,
    failed: Option<std::io::Error>,
}

impl SyncShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        // Plain fields, each written whole: a panic cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Syncer {
    fn start(file: &File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let shared = Arc::new(SyncShared::default());
        let own = shared.clone();
        let thread = std::thread::Builder::new()
            .name("download-sync".into())
            .spawn(move || {
                loop {
                    let written = {
                        let mut st = own.lock();
                        loop {
                            if let Some(w) = st.wanted.take() {
                                break w;
                            }
                            if st.stop {
                                return;
                            }
                            st = own
                                .wake
                                .wait(st)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                    };
                    match file.sync_data() {
                        Ok(()) => {
                            own.flushed.fetch_max(written, Ordering::Release);
                        }
                        Err(e) => own.lock().failed = Some(e),
                    }
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a flush of everything written so far (`written` bytes).
    fn request(&self, written: u64) {
        let mut st = self.shared.lock();
        st.wanted = Some(st.wanted.map_or(written, |w| w.max(written)));
        self.shared.wake.notify_one();
    }

    /// Bytes written before the last flush that finished.
    fn flushed(&self) -> u64 {
        self.shared.flushed.load(Ordering::Acquire)
    }

    /// Records that everything written up to `written` is flushed (by a flush of the caller).
    fn mark_flushed(&self, written: u64) {
        self.shared.flushed.fetch_max(written, Ordering::Release);
    }

    fn take_failure(&self) -> Option<std::io::Error> {
        self.shared.lock().failed.take()
    }

    /// Stops the thread after the flushes asked for so far.
    fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // A panicked flush thread has nothing left to report.
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    /// Never waits: a flush under way finishes on its own thread, which then ends.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
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
        let mut whole = WholeHash {
            hasher: Sha256::new(),
            next: 0,
            read_back: 0,
        };
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
                // The held prefix goes into the whole-file hash from this same read.
                if *h && whole.next == i {
                    whole.hasher.update(&buf[..len]);
                    whole.next += 1;
                }
            }
            // What the file held may still be in the page cache only (a process that died
            // before its flush): flush it before it counts as durably held.
            file.sync_data().map_err(open_err)?;
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
            opened_bytes: held_bytes,
            written: 0,
            flush_asked_at: 0,
            sync_every: SYNC_EVERY,
            whole,
            syncer,
        })
    }

    /// Flushes after every `bytes` written instead of [`SYNC_EVERY`] (at least one byte).
    #[must_use]
    pub fn with_sync_every(mut self, bytes: u64) -> Self {
        self.sync_every = bytes.max(1);
        self
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

    /// Bytes held so far (verified and written, maybe not flushed yet).
    #[must_use]
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Bytes held durably: of chunks flushed to disk. Only these are claimed (progress): a
    /// power cut keeps every one of them.
    #[must_use]
    pub fn durable_bytes(&self) -> u64 {
        self.opened_bytes + self.syncer.flushed().min(self.written)
    }

    /// Chunks hashed into the whole-file hash by reading them back from the file (a resumed
    /// download's held prefix is not counted: it is read once at open anyway).
    #[must_use]
    pub fn read_back_chunks(&self) -> usize {
        self.whole.read_back
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
        self.written += bytes.len() as u64;
        if self.written - self.flush_asked_at >= self.sync_every {
            self.syncer.request(self.written);
            self.flush_asked_at = self.written;
        }
        self.held[index] = true;
        self.held_count += 1;
        self.held_bytes += expected;
        self.hash_in_order(index, bytes)
            .map_err(|source| DownloadError::Read {
                path: self.part.clone(),
                source,
            })?;
        Ok(ChunkOutcome::Stored)
    }

    /// Asks for a flush of every chunk written so far, batch full or not (a transfer that
    /// paused: what it holds becomes claimable soon).
    pub fn flush_written(&mut self) {
        if self.written > self.flush_asked_at {
            self.syncer.request(self.written);
            self.flush_asked_at = self.written;
        }
    }

    /// Feeds the whole-file hash: chunk `index` (just stored, `bytes`) when it is the next
    /// one, then every held chunk after it, read back from the file.
    fn hash_in_order(&mut self, index: usize, bytes: &[u8]) -> std::io::Result<()> {
        if index != self.whole.next {
            return Ok(());
        }
        self.whole.hasher.update(bytes);
        self.whole.next += 1;
        let mut buf = Vec::new();
        while self.whole.next < self.held.len() && self.held[self.whole.next] {
            let i = self.whole.next;
            let len = self.plan.chunk_len(i) as usize;
            buf.resize(len, 0);
            self.file
                .read_exact_at(&mut buf, i as u64 * self.plan.chunk_size)?;
            self.whole.hasher.update(&buf);
            self.whole.next += 1;
            self.whole.read_back += 1;
        }
        Ok(())
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
        self.file.sync_all().map_err(fin)?;
        self.syncer.mark_flushed(self.written);
        Ok(())
    }

    /// fsyncs the file, checks its whole hash against the bundle id and, when it matches,
    /// renames it to `<bundle-id>.bundle` (and fsyncs the directory). The hash was computed
    /// while the chunks arrived ([`WholeHash`]); chunks it is missing are read back. On
    /// mismatch the part file stays where it is, for the verification step to refuse and
    /// remove (its chunks lied).
    pub fn finish(
        mut self,
        data_dir: &Path,
    ) -> Result<Result<PathBuf, BundleMismatch>, DownloadError> {
        self.sync()?;
        let fin = |source| DownloadError::Finish {
            path: self.part.clone(),
            source,
        };
        let actual = if self.whole.next == self.held.len() {
            hex::encode(std::mem::take(&mut self.whole.hasher).finalize())
        } else {
            hash_file(&self.part).map_err(|source| DownloadError::Read {
                path: self.part.clone(),
                source,
            })?
        };
        if actual != self.plan.bundle_id {
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
        // Left for the verification step, which reports the mismatch and removes it.
        assert!(!bundle_path(dir.path(), &"0".repeat(64)).exists());
        assert_eq!(used_bytes(dir.path()), 3000);
    }

    #[test]
    fn chunks_in_order_make_the_whole_hash_without_reading_the_file_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let plan = plan_for(&data, 1024);
        let mut d = Download::open(dir.path(), plan).expect("open");
        for (i, c) in data.chunks(1024).enumerate() {
            d.accept(i, c).expect("accept");
        }
        assert_eq!(d.read_back_chunks(), 0);
        let path = d.finish(dir.path()).expect("finish").expect("matches");
        assert_eq!(std::fs::read(path).expect("read"), data);
    }

    #[test]
    fn chunks_out_of_order_are_read_back_into_the_whole_hash_once_their_turn_comes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        let plan = plan_for(&data, 1024);
        let chunk = |i: usize| &data[i * 1024..((i + 1) * 1024).min(data.len())];
        let mut d = Download::open(dir.path(), plan.clone()).expect("open");
        for i in [2, 3, 0, 5] {
            d.accept(i, chunk(i)).expect("accept");
        }
        drop(d);
        // Resumed: 0 is hashed at open, 2 and 3 are read back once 1 arrives, 5 after 4.
        let mut d = Download::open(dir.path(), plan).expect("reopen");
        for i in [1, 4, 6, 7, 8, 9] {
            d.accept(i, chunk(i)).expect("accept");
        }
        assert_eq!(d.read_back_chunks(), 3);
        let path = d.finish(dir.path()).expect("finish").expect("matches");
        assert_eq!(std::fs::read(path).expect("read"), data);
    }

    /// Waits for the background flushes asked for so far to reach `bytes`.
    fn wait_durable(d: &Download, bytes: u64) {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while d.durable_bytes() < bytes {
            assert!(
                std::time::Instant::now() < give_up,
                "the flush thread stalled"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_power_cut_before_a_batch_is_flushed_refetches_only_chunks_never_claimed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..16_000u32).map(|i| (i % 239) as u8).collect();
        let plan = plan_for(&data, 1000);
        let mut d = Download::open(dir.path(), plan.clone())
            .expect("open")
            .with_sync_every(4000);
        for i in 0..10 {
            d.accept(i, &data[i * 1000..(i + 1) * 1000])
                .expect("accept");
        }
        // Flushes were asked for after 4000 and 8000 bytes; chunks 8 and 9 wait for the next
        // batch: held, never claimed.
        assert_eq!(d.held_bytes(), 10_000);
        wait_durable(&d, 8000);
        let claimed = d.durable_bytes();
        assert_eq!(claimed, 8000);
        drop(d);
        // The power cut: the worst it may do is lose every write of the unflushed batch.
        let first_lost = (claimed / 1000) as usize;
        let part = downloads_dir(dir.path()).join(format!("{}.part", plan.bundle_id));
        let f = OpenOptions::new().write(true).open(&part).expect("part");
        f.write_all_at(&vec![0u8; 10_000 - claimed as usize], claimed)
            .expect("tear");
        drop(f);
        let d = Download::open(dir.path(), plan).expect("reopen");
        assert_eq!(d.held_bytes(), claimed, "every claimed chunk survived");
        assert_eq!(d.durable_bytes(), claimed);
        assert_eq!(
            d.missing().collect::<Vec<_>>(),
            (first_lost..16).collect::<Vec<_>>(),
            "only the unclaimed chunks are fetched again"
        );
    }

    #[test]
    fn a_paused_batch_is_claimed_once_flushed_and_the_last_sync_claims_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![5u8; 3000];
        let mut d = Download::open(dir.path(), plan_for(&data, 1000)).expect("open");
        d.accept(0, &data[..1000]).expect("accept");
        d.accept(1, &data[1000..2000]).expect("accept");
        assert_eq!(d.durable_bytes(), 0, "below one batch: nothing flushed yet");
        d.flush_written();
        wait_durable(&d, 2000);
        d.accept(2, &data[2000..]).expect("accept");
        d.sync().expect("sync");
        assert_eq!(d.durable_bytes(), 3000);
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
