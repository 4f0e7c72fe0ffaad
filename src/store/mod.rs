//! The segment store: path -> entry, shared by every transport. No HTTP and no media format here.
//!
//! A path has at most two versions: `current`, which readers get (growing or complete), and `pending`,
//! an upload that replaces a complete version atomically when it completes. The map's lock is taken
//! once per upload, delete and lookup, never per chunk and never across an `.await`; chunks go to the
//! entry under its own lock (see [`entry`]).
//!
//! Completed entries are written through to the root folder by one background task (see [`persist`]),
//! so a slow disk never delays a reader. Garbage collection purges folders that have not been written
//! for the TTL, and memory pressure moves persisted entries out of memory.
//!
//! Nothing under the root is reached through a symbolic link (see [`root`]), and a name is never
//! both a file and a folder: `a` and `a/b` cannot both be files on disk, so neither the index nor
//! the disk may hold one while the other is accepted. Whatever is accepted can be written and is
//! found again after a restart.

pub mod entry;
mod error;
mod gc;
mod index;
pub mod path;
mod persist;
mod root;
mod upload;
mod usage;

pub use error::StoreError;
use gc::{collect_garbage, evict_for_memory, evict_idle, maintain};
use index::{Index, Slot};
pub use path::{PathError, StorePath};
pub use upload::Upload;
use upload::UploadPermit;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::time::Instant;

use entry::MemoryGauge;
pub use entry::{Entry, EntryState, ReadError, Reader};

/// How an upload takes its place among the others of its path ([`Store::begin_upload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadOptions {
    /// Its place in the server's arrival order; None: after everything so far.
    pub arrival: Option<u64>,
    /// What it does to a complete version of the path.
    pub replace: Replace,
}

impl UploadOptions {
    /// An upload that arrived at `arrival`.
    pub fn arrived(arrival: u64) -> UploadOptions {
        UploadOptions {
            arrival: Some(arrival),
            ..UploadOptions::default()
        }
    }
}

/// What a new upload of a path that holds a complete version does to that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replace {
    /// Readers keep getting the complete version until the new upload completes (manifests, and any
    /// file re-uploaded whole): a reader never sees a half-written replacement.
    #[default]
    OnComplete,
    /// The new upload becomes the version readers get at once, growing (live media segments: a
    /// restarted encoder reuses segment names, and its new segment must stream while it is
    /// uploaded, not be hidden behind the dead run's file). If it then fails, the path is gone.
    AtOnce,
}
use persist::Job;

/// What happened to a path, for those that follow the store (the live stream index, early-request
/// waiters). Sent once per upload or removal, never per chunk.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// An upload of `path` started; `entry` grows as it arrives (for a replacement, it becomes
    /// visible to readers only when it completes).
    Started {
        /// The path.
        path: StorePath,
        /// The entry being written.
        entry: Arc<Entry>,
    },
    /// `path` was deleted or purged.
    Removed {
        /// The path.
        path: StorePath,
        /// Why.
        cause: Removal,
    },
}

/// Why a path left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A `DELETE`, or the removal of an earlier run's segment.
    Deleted,
    /// Garbage collection: its folder got no upload for the TTL.
    Purged,
}

/// Limits the store enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Uploads in progress at once.
    pub max_uploads: usize,
    /// Paths stored at once.
    pub max_paths: usize,
    /// Bytes of chunk data in memory before persisted entries are moved out.
    pub max_memory: u64,
    /// Largest upload.
    pub max_upload_bytes: u64,
    /// Age after which an idle folder is purged (None: never).
    pub ttl: Option<Duration>,
    /// A complete entry already on disk that nobody has read or written for this long leaves
    /// memory (its readers go on from the file), whatever `max_memory` says; None: only memory
    /// pressure moves entries out. A DVR window keeps hours of segments: only the live edge stays.
    pub memory_idle: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uploads: 256,
            max_paths: 100_000,
            max_memory: 1 << 30,
            max_upload_bytes: 1 << 30,
            ttl: Some(Duration::from_secs(300)),
            memory_idle: None,
        }
    }
}

/// What the store counts, for monitoring ([`Store::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Paths stored, in memory or on disk.
    pub entries: u64,
    /// Bytes of chunk data held in memory.
    pub memory_bytes: u64,
    /// Bytes of every stored path, in memory or on disk.
    pub stored_bytes: u64,
    /// Uploads in progress (an upload refused as over `--max-uploads` counts for an instant).
    pub uploads: u64,
    /// Paths purged by garbage collection since start.
    pub purged: u64,
    /// Completed uploads that could not be persisted since start.
    pub persist_errors: u64,
}

/// How a completed upload landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// The path did not exist before.
    Created,
    /// A previous complete version was replaced.
    Replaced,
}

/// How long a removal still queued for the disk may hold up the check of an upload it is in the
/// way of ([`Store::check_root`]).
const QUEUED_REMOVALS_BOUND: Duration = Duration::from_secs(2);

/// How long a delete is remembered against late uploads that arrived before it.
const TOMBSTONE_AGE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Shared {
    index: Mutex<Index>,
    limits: Limits,
    gauge: Arc<MemoryGauge>,
    uploads: AtomicUsize,
    /// Paths purged by garbage collection since start.
    purged: AtomicU64,
    /// Completed uploads that could not be written to disk since start.
    persist_errors: AtomicU64,
    root: Arc<root::RootDir>,
    jobs: mpsc::UnboundedSender<Job>,
    pressure: Arc<Notify>,
    epoch: Instant,
    events: broadcast::Sender<StoreEvent>,
}

/// A cheap-to-clone handle on the shared store.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Opens the store over `root`: creates it if needed, indexes the files already there as complete
    /// entries, and starts the persistence and maintenance tasks (so it needs a tokio runtime).
    pub fn open(root: impl Into<PathBuf>, limits: Limits) -> std::io::Result<Store> {
        let root = Arc::new(root::RootDir::create(root.into())?);
        let gauge = Arc::new(MemoryGauge::default());
        let epoch = Instant::now();
        let (jobs, rx) = mpsc::unbounded_channel();
        let index = persist::scan(&root, &gauge, epoch)?;
        let store = Store {
            shared: Arc::new(Shared {
                index: Mutex::new(index),
                limits,
                gauge,
                uploads: AtomicUsize::new(0),
                purged: AtomicU64::new(0),
                persist_errors: AtomicU64::new(0),
                root: Arc::clone(&root),
                jobs,
                pressure: Arc::new(Notify::new()),
                epoch,
                events: broadcast::channel(4096).0,
            }),
        };
        persist::spawn(root, rx, Arc::downgrade(&store.shared));
        tokio::spawn(maintain(
            Arc::downgrade(&store.shared),
            Arc::clone(&store.shared.pressure),
        ));
        Ok(store)
    }

    /// Follows uploads and removals from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.shared.events.subscribe()
    }

    /// The current version of `path`, waiting at most `bound` for an upload of it to start.
    pub async fn wait_for_upload(&self, path: &StorePath, bound: Duration) -> Option<Arc<Entry>> {
        let mut events = self.subscribe();
        if let Some(entry) = self.get(path) {
            return Some(entry);
        }
        let started = async {
            loop {
                match events.recv().await {
                    Ok(StoreEvent::Started { path: p, .. }) if p == *path => return self.get(path),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(entry) = self.get(path) {
                            return Some(entry);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(bound, started).await.ok().flatten()
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The folder completed uploads are persisted to.
    pub fn root(&self) -> &Path {
        self.shared.root.path()
    }

    /// Checks that an upload of `path` can be written to the root folder: no name on its way is a
    /// symbolic link ([`StoreError::Link`]), none of its folders is a file on disk
    /// ([`StoreError::FileInTheWay`]), and it is not a folder on disk
    /// ([`StoreError::FolderInTheWay`]). Call it before [`Store::begin_upload`], which checks the
    /// same against what is stored and in progress. It looks at the disk on a blocking thread.
    ///
    /// The disk is written behind the store (see [`persist`]): something in the way may be a
    /// removal still queued (a delete of `a` just before an upload of `a/b`), so the queue is
    /// waited for once, bounded, before refusing. A disk that cannot be read is no refusal: the
    /// upload is served from memory and its failed write counted, as with a full disk.
    ///
    /// This check words the refusal; the guarantee is the write itself, which follows no link
    /// and replaces no folder, however the root changes in between.
    pub async fn check_root(&self, path: &StorePath) -> Result<(), StoreError> {
        // What the store holds decides without the disk (and without waiting for its queue).
        if let Some(collision) = self.index().collision(path) {
            return Err(collision);
        }
        match self.probe(path).await {
            Err(StoreError::FileInTheWay { .. } | StoreError::FolderInTheWay { .. }) => {
                let _ = tokio::time::timeout(QUEUED_REMOVALS_BOUND, self.flush()).await;
                self.probe(path).await
            }
            other => other,
        }
    }

    /// Checks that no name on the way to `path` is a symbolic link in the root folder (for a
    /// delete: the file a delete would remove is reached through no link).
    pub async fn check_links(&self, path: &StorePath) -> Result<(), StoreError> {
        match self.probe(path).await {
            Err(err @ StoreError::Link { .. }) => Err(err),
            _ => Ok(()),
        }
    }

    async fn probe(&self, path: &StorePath) -> Result<(), StoreError> {
        let root = Arc::clone(&self.shared.root);
        let owned = path.to_owned();
        let probed = tokio::task::spawn_blocking(move || root.probe(&owned)).await;
        match probed.unwrap_or_else(|err| Err(StoreError::Disk(err.to_string()))) {
            Err(StoreError::Disk(reason)) => {
                tracing::debug!(%path, reason, "the root folder could not be checked; the upload goes on");
                Ok(())
            }
            other => other,
        }
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        lock_index(&self.shared)
    }

    /// Every folder that holds an entry, in no particular order.
    pub fn folders(&self) -> Vec<String> {
        self.index().folders.keys().cloned().collect()
    }

    /// The version readers get now, growing or complete.
    pub fn get(&self, path: &str) -> Option<Arc<Entry>> {
        let entry = self.index().slots.get(path).map(|slot| Arc::clone(&slot.current));
        if let Some(entry) = &entry {
            entry.touch();
        }
        entry
    }

    /// The current versions of the paths directly in `folder` ("" for the root), in no order. Takes
    /// the index lock once and walks every path: for rare events (an encoder restart), not per
    /// request.
    pub fn list(&self, folder: &str) -> Vec<Arc<Entry>> {
        self.index()
            .slots
            .iter()
            .filter(|(path, _)| path.folder() == folder)
            .map(|(_, slot)| Arc::clone(&slot.current))
            .collect()
    }

    /// Removes `path` if its current version arrived before `arrival` and no replacement is in
    /// progress; false otherwise. For dropping what an earlier run of an encoder left, without ever
    /// removing an upload of the run that replaced it.
    pub fn delete_before(&self, path: &StorePath, arrival: u64) -> bool {
        let removed = {
            let mut index = self.index();
            let older = index
                .slots
                .get(path)
                .is_some_and(|slot| slot.current.arrival() < arrival && slot.pending.is_none());
            if !older {
                return false;
            }
            let _ = self.shared.jobs.send(Job::Remove(path.clone()));
            index.remove_slot(path)
        };
        if let Some(slot) = removed {
            slot.current.abort();
        }
        let _ = self.shared.events.send(StoreEvent::Removed {
            path: path.clone(),
            cause: Removal::Deleted,
        });
        true
    }

    /// Number of stored paths.
    pub fn len(&self) -> usize {
        self.index().slots.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of chunk data held in memory.
    pub fn memory_used(&self) -> u64 {
        self.shared.gauge.used()
    }

    /// What the store counts, for monitoring (takes the index lock once, for the path count).
    pub fn stats(&self) -> StoreStats {
        let shared = &self.shared;
        StoreStats {
            entries: self.len() as u64,
            memory_bytes: self.memory_used(),
            stored_bytes: self.stored_bytes(),
            uploads: shared.uploads.load(Ordering::Relaxed) as u64,
            purged: shared.purged.load(Ordering::Relaxed),
            persist_errors: shared.persist_errors.load(Ordering::Relaxed),
        }
    }

    /// Starts an upload of `path`. A new path is readable at once; a complete one keeps serving its
    /// previous version until this upload completes (or at once, with [`Replace::AtOnce`]). A
    /// growing upload of the same path is aborted: the newest writer wins (an encoder that
    /// restarted).
    ///
    /// `options.arrival` places the upload in the server's arrival order (connection accept order,
    /// then request order within the connection). Uploads of one path on different connections can
    /// reach this point out of order (ffmpeg without persistent connections sends each manifest on
    /// a new connection and does not wait for the answer): one that arrived before the version
    /// already stored or in progress is refused as stale, so an older manifest never replaces a
    /// newer one. Without it, the upload is the newest.
    pub fn begin_upload(&self, path: &StorePath, options: UploadOptions) -> Result<Upload, StoreError> {
        let UploadOptions { arrival, replace } = options;
        let limits = &self.shared.limits;
        let active = self.shared.uploads.fetch_add(1, Ordering::AcqRel);
        let permit = UploadPermit(Arc::clone(&self.shared));
        if active >= limits.max_uploads {
            return Err(StoreError::Busy {
                limit: limits.max_uploads,
            });
        }
        if self.memory_used() > limits.max_memory {
            self.evict_for_memory();
            if self.memory_used() > limits.max_memory {
                return Err(StoreError::MemoryFull {
                    limit: limits.max_memory,
                });
            }
        }
        let path = path.clone();
        let mut index = self.index();
        if !index.slots.contains_key(&path) && index.slots.len() >= limits.max_paths {
            return Err(StoreError::TooManyPaths {
                limit: limits.max_paths,
            });
        }
        // `a` and `a/b` cannot both be files on disk: refused before anything is accepted.
        if let Some(collision) = index.collision(&path) {
            return Err(collision);
        }
        let deleted = index.tombstones.get(&path).map_or(0, |(arrival, _)| *arrival);
        let latest = index.slots.get(&path).map_or(deleted, |slot| {
            slot.current
                .arrival()
                .max(slot.pending.as_ref().map_or(0, |p| p.arrival()))
        });
        let arrival = match arrival {
            Some(arrival) if arrival < latest => return Err(StoreError::Stale),
            Some(arrival) => arrival,
            None => latest + 1,
        };
        let entry = Entry::growing(path.clone(), Arc::clone(&self.shared.gauge), self.shared.epoch, arrival);
        index.folders.insert(path.folder().to_owned(), Instant::now());
        let replaced: Vec<Arc<Entry>> = match index.slots.get_mut(&path) {
            None => Vec::new(),
            Some(slot) if slot.current.state() == EntryState::Complete && replace == Replace::OnComplete => {
                slot.pending.replace(Arc::clone(&entry)).into_iter().collect()
            }
            Some(slot) => {
                let current = std::mem::replace(&mut slot.current, Arc::clone(&entry));
                slot.pending
                    .take()
                    .into_iter()
                    .chain(std::iter::once(current))
                    .collect()
            }
        };
        if !index.slots.contains_key(&path) {
            index.insert_slot(
                path.clone(),
                Slot {
                    current: Arc::clone(&entry),
                    pending: None,
                },
            );
        }
        drop(index);
        // A complete version is not aborted (abort only ends growing entries): its readers finish.
        for old in replaced {
            old.abort();
        }
        let _ = self.shared.events.send(StoreEvent::Started {
            path,
            entry: Arc::clone(&entry),
        });
        Ok(Upload {
            store: self.clone(),
            entry,
            _permit: permit,
            done: false,
        })
    }

    /// Removes a path from memory and disk; false if it did not exist. A growing upload of it is
    /// aborted. With `arrival` (the delete's place in the arrival order, see
    /// [`Store::begin_upload`]), uploads of the path that arrived before it are refused as stale for
    /// a minute afterwards.
    pub fn delete(&self, path: &StorePath, arrival: Option<u64>) -> bool {
        let removed = {
            let mut index = self.index();
            if let Some(arrival) = arrival {
                index.tombstones.insert(path.clone(), (arrival, Instant::now()));
            }
            let removed = index.remove_slot(path);
            if removed.is_some() {
                // Queued under the index lock, so a later upload's write is always queued after it.
                let _ = self.shared.jobs.send(Job::Remove(path.clone()));
            }
            removed
        };
        let Some(slot) = removed else {
            return false;
        };
        slot.current.abort();
        if let Some(pending) = slot.pending {
            pending.abort();
        }
        let _ = self.shared.events.send(StoreEvent::Removed {
            path: path.clone(),
            cause: Removal::Deleted,
        });
        true
    }

    /// Waits until every completed upload so far is on disk (or failed to be written).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Purges every folder that has not been written for the TTL; returns the paths purged.
    pub fn collect_garbage(&self) -> usize {
        collect_garbage(&self.shared)
    }

    /// Moves persisted entries out of memory, least recently used first, until memory use is below
    /// 90% of the limit; returns the bytes freed.
    pub fn evict_for_memory(&self) -> u64 {
        evict_for_memory(&self.shared)
    }

    /// Moves complete, persisted entries nobody touched for `Limits::memory_idle` out of memory
    /// (nothing without it); returns the bytes freed.
    pub fn evict_idle(&self) -> u64 {
        evict_idle(&self.shared)
    }

    fn finish(&self, entry: &Arc<Entry>) -> Result<Landed, StoreError> {
        if !entry.complete() {
            // Replaced or deleted between the caller's check and now: the data was discarded.
            return Err(StoreError::Superseded);
        }
        let landed = {
            let mut index = self.index();
            index.folders.insert(entry.path().folder().to_owned(), Instant::now());
            match index.slots.get_mut(entry.path()) {
                Some(slot) if slot.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, entry)) => {
                    slot.current = Arc::clone(entry);
                    slot.pending = None;
                    Landed::Replaced
                }
                _ => Landed::Created,
            }
        };
        let _ = self.shared.jobs.send(Job::Write(Arc::clone(entry)));
        if self.memory_used() > self.shared.limits.max_memory {
            self.shared.pressure.notify_one();
        }
        Ok(landed)
    }

    fn abort(&self, entry: &Arc<Entry>) {
        entry.abort();
        let mut index = self.index();
        let Some(slot) = index.slots.get_mut(entry.path()) else {
            return;
        };
        if slot.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, entry)) {
            slot.pending = None;
        } else if Arc::ptr_eq(&slot.current, entry) {
            index.remove_slot(entry.path());
            // The file of a version this upload replaced at once ([`Replace::AtOnce`]) must not come
            // back after a restart. Queued under the index lock: see `delete`.
            let _ = self.shared.jobs.send(Job::Remove(entry.path().clone()));
            drop(index);
            // The path is gone: those that follow the store forget what they kept of it.
            let _ = self.shared.events.send(StoreEvent::Removed {
                path: entry.path().clone(),
                cause: Removal::Deleted,
            });
        }
    }
}

fn lock_index(shared: &Shared) -> MutexGuard<'_, Index> {
    // Every update of the index is a single map operation, so a poisoned lock holds a usable map.
    shared.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
