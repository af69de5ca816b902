//! Filesystem events (inotify) on the recordings directory: the recorder's atomic renames into
//! it (`IN_MOVED_TO`), files written in place (`IN_CLOSE_WRITE`), new subdirectories, and
//! files removed behind our back.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::name;

/// Why the watcher failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("unable to initialise inotify")]
    Init(#[source] nix::Error),
    #[error("unable to watch {path}")]
    Add {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unable to read inotify events")]
    Read(#[source] nix::Error),
}

/// What the events asked for, bounded.
#[derive(Debug, Default)]
pub struct Changes {
    /// Relative paths that appeared (to index).
    pub added: BTreeSet<String>,
    /// Relative paths that disappeared (to mark vanished if not ours).
    pub removed: BTreeSet<String>,
    /// Events were lost (queue overflow or our bound): a catch-up scan is due.
    pub overflowed: bool,
}

/// An inotify instance watching the recordings directory and its subdirectories.
#[derive(Debug)]
pub struct Watcher {
    inotify: Inotify,
    root: PathBuf,
    dirs: HashMap<WatchDescriptor, String>,
    max_depth: usize,
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_ONLYDIR
}

impl Watcher {
    /// Watches `root` and its subdirectories down to `max_depth`.
    ///
    /// # Errors
    /// inotify cannot be set up, or `root` cannot be watched.
    pub fn new(root: &Path, max_depth: usize) -> Result<Self, WatchError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(WatchError::Init)?;
        let mut w = Self {
            inotify,
            root: root.to_owned(),
            dirs: HashMap::new(),
            max_depth,
        };
        w.add_tree("", 0)?;
        Ok(w)
    }

    fn add_tree(&mut self, rel: &str, depth: usize) -> Result<(), WatchError> {
        let path = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let wd = self
            .inotify
            .add_watch(&path, flags())
            .map_err(|source| WatchError::Add {
                path: path.clone(),
                source,
            })?;
        self.dirs.insert(wd, rel.to_owned());
        if depth < self.max_depth
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            for e in entries.flatten() {
                let (Some(name), Ok(ft)) =
                    (e.file_name().to_str().map(str::to_owned), e.file_type())
                else {
                    continue;
                };
                if ft.is_dir() && !name.starts_with('.') {
                    let child = join(rel, &name);
                    if let Err(err) = self.add_tree(&child, depth + 1) {
                        tracing::warn!(error = %err, "unable to watch a subdirectory");
                    }
                }
            }
        }
        Ok(())
    }

    /// The file descriptor to poll.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Drains the pending events into `changes`, at most `max_events`, and at most `max_paths`
    /// paths held. New subdirectories are watched, and their files reported as added.
    ///
    /// # Errors
    /// Reading the events fails for another reason than "none pending".
    pub fn drain(
        &mut self,
        changes: &mut Changes,
        max_events: usize,
        max_paths: usize,
    ) -> Result<(), WatchError> {
        let mut handled = 0;
        while handled < max_events {
            let events = match self.inotify.read_events() {
                Ok(e) => e,
                Err(nix::Error::EAGAIN) => return Ok(()),
                Err(e) => return Err(WatchError::Read(e)),
            };
            if events.is_empty() {
                return Ok(());
            }
            for ev in events {
                handled += 1;
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    changes.overflowed = true;
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.dirs.remove(&ev.wd);
                    continue;
                }
                let (Some(dir), Some(name)) = (
                    self.dirs.get(&ev.wd).cloned(),
                    ev.name.as_ref().and_then(|n| n.to_str()),
                ) else {
                    continue;
                };
                let rel = join(&dir, name);
                if ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                    let depth = dir.matches('/').count() + usize::from(!dir.is_empty());
                    if ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                        && !name.starts_with('.')
                        && depth < self.max_depth
                    {
                        if let Err(e) = self.add_tree(&rel, depth + 1) {
                            tracing::warn!(error = %e, "unable to watch a new subdirectory");
                        }
                        // Files may have landed before the watch: the catch-up lists them.
                        changes.overflowed = true;
                    }
                    continue;
                }
                if !name::is_recording(name) {
                    continue;
                }
                if changes.added.len() + changes.removed.len() >= max_paths {
                    changes.overflowed = true;
                    continue;
                }
                if ev
                    .mask
                    .intersects(AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE)
                {
                    changes.removed.remove(&rel);
                    changes.added.insert(rel);
                } else if ev
                    .mask
                    .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
                {
                    changes.added.remove(&rel);
                    changes.removed.insert(rel);
                }
            }
        }
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}
